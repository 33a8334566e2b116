//! Native plugins: `cdylib`s speaking the C ABI v1 of `resman_sdk::native`, opened with
//! libloading. All the host's `unsafe` lives in this file.
//!
//! A library is opened from a private copy named by its hash, never from the watched folder,
//! so overwriting the dropped file cannot change code the process has mapped. Its entry
//! table's `abi_version` is read before any other field, so a library built for another ABI
//! is refused with a message instead of being called.
//!
//! Native plugins are trusted code: they run in the host's process with its rights, a crash
//! that is not a caught panic takes the host down, and native code cannot be interrupted: a
//! call that overruns its deadline is abandoned by its executor (`coordinator::watch`), not
//! stopped.

use super::{
    CallOutcome, Instance, InstanceFactory, LoadError, LoadedPlugin, PluginKind, PluginRequest,
};
use libloading::Library;
use resman_sdk::native::{
    call_status, Bytes, EntryFn, HostApiV1, OwnedBytes, PluginV1, Rejection, RequestV1, SinkFn,
    Status, ABI_VERSION, ENTRY_SYMBOL,
};
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Loads a native plugin: copies it to `shadow_dir`, opens the copy, checks its ABI version
/// and asks it for its request types.
///
/// # Errors
///
/// [`LoadError`] naming `path` when the file cannot be read or copied, is not a loadable
/// library, exports no `resman_jobber_v1`, speaks another ABI version, or declares no valid
/// types.
pub(crate) fn load(path: &Path, shadow_dir: &Path) -> Result<LoadedPlugin, LoadError> {
    let started = Instant::now();
    let (bytes, hash) = super::read_plugin(path)?;
    let shadow = shadow_copy(path, shadow_dir, &hash, &bytes)?;
    let library = NativeLibrary::open(path, &shadow)?;
    let types = super::check_types(path, library.declared_types(path)?)?;
    let factory = NativeFactory {
        path: path.to_owned(),
        file: file_name(path).into(),
        library: Arc::new(library),
    };
    Ok(LoadedPlugin {
        path: path.to_owned(),
        kind: PluginKind::Native,
        types,
        hash,
        loaded_at: SystemTime::now(),
        load_time: started.elapsed(),
        from_cache: false,
        factory: Arc::new(factory),
    })
}

/// Writes the bytes that were read (and hashed) to `shadow_dir/<hash>-<file name>`. An
/// existing copy has the same bytes and may be mapped already, so it is left untouched.
fn shadow_copy(
    path: &Path,
    shadow_dir: &Path,
    hash: &str,
    bytes: &[u8],
) -> Result<PathBuf, LoadError> {
    let shadow = shadow_dir.join(format!("{hash}-{}", file_name(path)));
    if !shadow.exists() {
        super::write_atomically(&shadow, bytes).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            what: "cannot copy the library to the private folder",
            source,
        })?;
    }
    Ok(shadow)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

fn invalid(path: &Path, reason: impl Into<String>) -> LoadError {
    LoadError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The functions of a plugin's [`PluginV1`] table, copied out once its version checked.
#[derive(Clone, Copy)]
struct Table {
    handles: unsafe extern "C" fn() -> OwnedBytes,
    new_instance: unsafe extern "C" fn(host: *const HostApiV1) -> *mut c_void,
    handle: unsafe extern "C" fn(*mut c_void, *const RequestV1, *mut OwnedBytes) -> u32,
    drop_instance: unsafe extern "C" fn(instance: *mut c_void),
    free: unsafe extern "C" fn(bytes: OwnedBytes),
}

/// An open library and its table; the table's functions are valid while `_library` is
/// open, which is as long as any factory or instance holds this.
struct NativeLibrary {
    table: Table,
    _library: Library,
}

impl NativeLibrary {
    fn open(path: &Path, shadow: &Path) -> Result<Self, LoadError> {
        // SAFETY: opening a library runs its initialisers, arbitrary code. Native plugins
        // are trusted code (see the module docs); the file is our private copy, so it cannot
        // change while mapped.
        let library = unsafe { Library::new(shadow) }
            .map_err(|err| invalid(path, format!("not a loadable native library: {err}")))?;
        let table = entry_table(path, &library)?;
        Ok(NativeLibrary {
            table,
            _library: library,
        })
    }

    /// Calls `handles` and parses its JSON array of strings.
    fn declared_types(&self, path: &Path) -> Result<Vec<String>, LoadError> {
        // SAFETY: `handles` has no preconditions; its output goes back through `take`.
        let output = self.take(unsafe { (self.table.handles)() });
        serde_json::from_slice(&output).map_err(|err| {
            invalid(
                path,
                format!("handles() did not return a JSON array of strings ({err}); did it panic?"),
            )
        })
    }

    /// Copies bytes the plugin handed out and gives them back to its `free`.
    fn take(&self, bytes: OwnedBytes) -> Vec<u8> {
        let copy = if bytes.ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: the plugin handed out `len` initialised bytes at `ptr` (ABI v1), not
            // freed yet; they are copied before being freed below.
            unsafe { std::slice::from_raw_parts(bytes.ptr, bytes.len) }.to_vec()
        };
        // SAFETY: `bytes` came from this library's `handles` or `handle` and is freed once,
        // here; `free` ignores a null pointer.
        unsafe { (self.table.free)(bytes) };
        copy
    }
}

/// Looks up the entry symbol, calls it and checks the ABI version before reading the rest.
fn entry_table(path: &Path, library: &Library) -> Result<Table, LoadError> {
    // SAFETY: `resman_jobber_v1` has type `EntryFn` in ABI v1 (`export_jobber!` defines it);
    // the symbol is used only while `library` is open.
    let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) }.map_err(|_| {
        invalid(
            path,
            "exports no resman_jobber_v1; was it built with export_jobber!?",
        )
    })?;
    // SAFETY: the entry function takes nothing and returns a pointer to a static table.
    let table = unsafe { entry() };
    if table.is_null() {
        return Err(invalid(path, "resman_jobber_v1 returned no table (null)"));
    }
    // SAFETY: `table` is non-null and points into the open library. `abi_version` is the
    // first field of the table in every ABI version, so reading only it is valid whatever
    // version the library speaks; no reference to the whole table is made yet.
    let version = unsafe { (&raw const (*table).abi_version).read() };
    if version != ABI_VERSION {
        return Err(invalid(
            path,
            format!(
                "ABI version {version}, this host speaks {ABI_VERSION}; \
                 rebuild the plugin against this host's resman-sdk"
            ),
        ));
    }
    // SAFETY: the version matches, so `table` points to a `PluginV1` in the library's
    // statics; its function pointers are copied out and used only while the library is open.
    let table: &PluginV1 = unsafe { &*table };
    Ok(Table {
        handles: table.handles,
        new_instance: table.new_instance,
        handle: table.handle,
        drop_instance: table.drop_instance,
        free: table.free,
    })
}

/// Makes instances of one loaded library.
struct NativeFactory {
    path: PathBuf,
    file: Arc<str>,
    library: Arc<NativeLibrary>,
}

impl InstanceFactory for NativeFactory {
    fn instantiate(&self) -> Result<Box<dyn Instance>, LoadError> {
        let context = Arc::new(HostContext {
            file: Arc::clone(&self.file),
            kind: Mutex::new(String::new()),
        });
        let host = Box::new(HostApiV1 {
            ctx: Arc::as_ptr(&context).cast(),
            log: host_log,
            now_ms: host_now_ms,
            call: host_call,
        });
        // SAFETY: `host` and the context its `ctx` points to are heap allocations the
        // instance keeps until after `drop_instance` (see `NativeInstance`).
        let raw = unsafe { (self.library.table.new_instance)(&*host) };
        let raw = NonNull::new(raw).ok_or_else(|| {
            invalid(
                &self.path,
                "new_instance returned no instance (null); did the jobber's constructor panic?",
            )
        })?;
        Ok(Box::new(NativeInstance {
            raw,
            _host: host,
            context,
            library: Arc::clone(&self.library),
        }))
    }
}

/// What the host functions of one instance need; `HostApiV1::ctx` points to it.
struct HostContext {
    /// The plugin's file name, for its log lines.
    file: Arc<str>,
    /// The request type being served, for its log lines. A mutex, not a cell: the plugin
    /// may call the host from any thread.
    kind: Mutex<String>,
}

/// `HostApiV1::log`.
///
/// # Safety
///
/// `ctx` is the [`HostContext`] of a live instance; `message` is readable for the call.
unsafe extern "C" fn host_log(ctx: *const c_void, level: u32, message: Bytes) {
    // SAFETY: per the contract above, which `NativeFactory::instantiate` sets up: `ctx` is
    // the instance's context, alive until after `drop_instance`.
    let context = unsafe { &*ctx.cast::<HostContext>() };
    // SAFETY: the plugin lends `message` for this call.
    let message = String::from_utf8_lossy(unsafe { message.as_slice() });
    let kind = context.kind.lock().unwrap_or_else(PoisonError::into_inner);
    super::log_from_plugin(level, &context.file, &kind, &message);
}

/// `HostApiV1::now_ms`.
extern "C" fn host_now_ms(_ctx: *const c_void) -> u64 {
    super::now_ms()
}

/// `HostApiV1::call`: a `pools.*` or `store.*` operation for the request being served.
///
/// # Safety
///
/// `op` and `args` are readable for the call; `write` may be called with `sink`.
unsafe extern "C" fn host_call(
    _ctx: *const c_void,
    op: Bytes,
    args: Bytes,
    sink: *mut c_void,
    write: SinkFn,
) -> u32 {
    // SAFETY: the plugin lends `op` and `args` for this call.
    let (op, args) = unsafe { (op.as_slice(), args.as_slice()) };
    // The host API never panics on bad input, but a panic must not unwind into C frames.
    let answer = std::panic::catch_unwind(|| {
        crate::pools::api::call_json(&String::from_utf8_lossy(op), args)
    })
    .unwrap_or_else(|_| crate::pools::api::JsonAnswer {
        ok: false,
        json: br#"{"kind":"storage","message":"the host failed serving this call"}"#.to_vec(),
    });
    // SAFETY: `write` and `sink` come from the plugin for exactly this; the answer is
    // borrowed for the call.
    unsafe { write(sink, Bytes::new(&answer.json)) };
    if answer.ok {
        call_status::OK
    } else {
        call_status::ERROR
    }
}

/// One live jobber instance of a native plugin.
struct NativeInstance {
    /// From the library's `new_instance`; given back to its `drop_instance` on drop.
    raw: NonNull<c_void>,
    /// The table the instance was given, kept at its address until `drop_instance`.
    _host: Box<HostApiV1>,
    context: Arc<HostContext>,
    /// Keeps the library open while the instance lives.
    library: Arc<NativeLibrary>,
}

// SAFETY: ABI v1 lets an instance be used from any thread, one call at a time, which
// `Instance::call(&mut self)` guarantees; the host table and context it points to are owned
// by the instance and `HostContext` is `Sync`.
unsafe impl Send for NativeInstance {}

impl Instance for NativeInstance {
    /// Serves one request. `_deadline` cannot be enforced here, as native code cannot be
    /// interrupted; the executor abandons a call that overruns it.
    fn call(&mut self, request: &PluginRequest<'_>, _deadline: Duration) -> CallOutcome {
        {
            let mut kind = self
                .context
                .kind
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            kind.clear();
            kind.push_str(request.kind);
        }
        let query_index = request.query_index.to_string();
        let raw_request = RequestV1 {
            kind: Bytes::new(request.kind.as_bytes()),
            query_index: Bytes::new(query_index.as_bytes()),
            client_id: request.client_id,
            attempt: request.attempt,
            payload: Bytes::new(request.payload.as_bytes()),
        };
        let mut out = OwnedBytes {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        };
        // SAFETY: `raw` is a live instance of this library used by this call only; the
        // request and the bytes it borrows outlive the call; `out` is writable.
        let status =
            unsafe { (self.library.table.handle)(self.raw.as_ptr(), &raw_request, &mut out) };
        outcome(status, self.library.take(out))
    }
}

impl Drop for NativeInstance {
    fn drop(&mut self) {
        // SAFETY: `raw` came from this library's `new_instance` and is given back once; the
        // host table and context stay alive until this returns (fields drop afterwards).
        unsafe { (self.library.table.drop_instance)(self.raw.as_ptr()) };
    }
}

/// Reads a call's status and output.
fn outcome(status: u32, output: Vec<u8>) -> CallOutcome {
    let text = |output: Vec<u8>| String::from_utf8_lossy(&output).into_owned();
    match Status::from_raw(status) {
        Some(Status::Ok) => match String::from_utf8(output) {
            Ok(json) => CallOutcome::Done(json),
            Err(_) => CallOutcome::Crashed("jobber answered bytes that are not UTF-8".into()),
        },
        Some(Status::Retry) => CallOutcome::Retry(text(output)),
        Some(Status::Fail) => CallOutcome::Fail(text(output)),
        Some(Status::Panicked) => {
            CallOutcome::Crashed(format!("jobber panicked: {}", text(output)))
        }
        Some(Status::Rejected) => match serde_json::from_slice::<Rejection>(&output) {
            Ok(Rejection { code, message }) => CallOutcome::Reject { code, message },
            Err(err) => CallOutcome::Crashed(format!("jobber's rejection is unreadable: {err}")),
        },
        None => CallOutcome::Crashed(format!("jobber returned unknown status {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support;
    use super::*;

    /// The native build of plugin `name`.
    fn plugin_file(name: &str) -> Option<PathBuf> {
        test_support::plugin_file(&format!("{name}.{}", std::env::consts::DLL_EXTENSION))
    }

    fn call(instance: &mut dyn Instance, kind: &str) -> CallOutcome {
        test_support::call(instance, kind, 2)
    }

    fn load_error(path: &Path) -> String {
        let shadow = tempfile::tempdir().unwrap();
        load(path, shadow.path())
            .expect_err("the load fails")
            .to_string()
    }

    #[test]
    fn counter_counts_per_instance_and_a_new_instance_starts_at_zero() {
        let Some(path) = plugin_file("counter") else {
            return;
        };
        let shadow = tempfile::tempdir().unwrap();
        let plugin = load(&path, shadow.path()).unwrap();
        test_support::assert_counts_per_instance(&plugin, PluginKind::Native);
    }

    #[test]
    fn the_library_runs_from_its_shadow_copy_and_outlives_the_dropped_file() {
        let Some(built) = plugin_file("counter") else {
            return;
        };
        let (dropped, shadow) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let path = dropped.path().join(built.file_name().unwrap());
        std::fs::copy(&built, &path).unwrap();
        let plugin = load(&path, shadow.path()).unwrap();
        let copies: Vec<_> = std::fs::read_dir(shadow.path()).unwrap().collect();
        assert_eq!(copies.len(), 1, "one shadow copy, no temporary left");
        let copy = copies[0].as_ref().unwrap().file_name();
        assert!(copy.to_string_lossy().starts_with(&plugin.hash), "{copy:?}");

        std::fs::write(&path, b"overwritten by the next build").unwrap();
        let mut instance = plugin.factory.instantiate().unwrap();
        let expected = CallOutcome::Done(r#"{"cnt":0}"#.into());
        assert_eq!(call(instance.as_mut(), "cntResponse"), expected);
        drop(plugin);
        assert_eq!(
            call(instance.as_mut(), "cntResponse"),
            CallOutcome::Done(r#"{"cnt":1}"#.into())
        );
    }

    #[test]
    fn verdicts_and_answers_pass_through() {
        let Some(path) = plugin_file("misbehave") else {
            return;
        };
        let shadow = tempfile::tempdir().unwrap();
        let plugin = load(&path, shadow.path()).unwrap();
        let mut instance = plugin.factory.instantiate().unwrap();
        test_support::assert_verdicts_pass_through(instance.as_mut(), 2);
    }

    #[test]
    fn a_panic_crashes_the_call_and_a_new_instance_works() {
        let Some(path) = plugin_file("misbehave") else {
            return;
        };
        let shadow = tempfile::tempdir().unwrap();
        let plugin = load(&path, shadow.path()).unwrap();
        let mut instance = plugin.factory.instantiate().unwrap();
        let outcome = call(instance.as_mut(), "misbehave.panic");
        assert_eq!(
            outcome,
            CallOutcome::Crashed("jobber panicked: deliberate panic".into())
        );
        assert!(outcome.poisons_instance());
        drop(instance);
        let mut fresh = plugin.factory.instantiate().unwrap();
        assert!(matches!(
            call(fresh.as_mut(), "misbehave.echo"),
            CallOutcome::Done(_)
        ));
    }

    #[test]
    fn a_library_of_another_abi_version_is_refused_before_use() {
        let Some(path) = plugin_file("wrong-abi") else {
            return;
        };
        let message = load_error(&path);
        assert!(message.contains("wrong-abi"), "{message}");
        assert!(
            message.contains("ABI version 999, this host speaks 1"),
            "{message}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.so");
        std::fs::write(&path, b"this is not a shared library").unwrap();
        let message = load_error(&path);
        assert!(
            message.starts_with(&format!("plugin {}: ", path.display())),
            "{message}"
        );
        assert!(
            message.contains("not a loadable native library"),
            "{message}"
        );
    }

    #[test]
    fn a_library_without_the_entry_symbol_is_refused() {
        // Any shared library without `resman_jobber_v1` will do; the maths library is there.
        let arch = std::env::consts::ARCH;
        let libm = PathBuf::from(format!("/lib/{arch}-linux-gnu/libm.so.6"));
        if !libm.is_file() {
            eprintln!("skipped: {} is missing", libm.display());
            return;
        }
        let message = load_error(&libm);
        assert!(
            message.contains("exports no resman_jobber_v1; was it built with export_jobber!?"),
            "{message}"
        );
    }

    #[test]
    fn unknown_statuses_and_bad_answers_are_crashes() {
        let crashed = |outcome| matches!(outcome, CallOutcome::Crashed(_));
        assert!(crashed(outcome(99, b"{}".to_vec())));
        assert!(crashed(outcome(Status::Ok as u32, vec![0xff, 0xfe])));
        assert_eq!(
            outcome(Status::Ok as u32, b"{}".to_vec()),
            CallOutcome::Done("{}".into())
        );
    }
}
