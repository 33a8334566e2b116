//! The plugin side of the native C ABI v1: generic functions that fill a [`PluginV1`] for any
//! [`Jobber`], so `export_jobber!` only has to name the type. The WASM counterpart is
//! `wasm.rs`.
//!
//! Every function catches panics here, at the boundary: unwinding into the host's C frames
//! would abort the whole process, while a caught panic is reported as [`Status::Panicked`]
//! (or a null instance) and costs only the instance. An instance that panicked stays
//! poisoned: later calls answer `Panicked` without touching the jobber, whose state may be
//! half-updated.

use super::{Bytes, HostApiV1, OwnedBytes, PluginV1, RequestV1, Status, ABI_VERSION};
use crate::host;
use crate::jobber::{JobError, Jobber, Request};
use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The table for jobber `T`; `export_jobber!` puts it in a `static`.
pub const fn plugin<T: Jobber>() -> PluginV1 {
    PluginV1 {
        abi_version: ABI_VERSION,
        handles: handles::<T>,
        new_instance: new_instance::<T>,
        handle: handle::<T>,
        drop_instance: drop_instance::<T>,
        free,
    }
}

/// One instance as the host holds it: the jobber and the host table it may call.
struct Instance<T> {
    jobber: T,
    /// Copied from the host at creation; its `ctx` stays valid until the instance is dropped.
    host: HostApiV1,
    /// Set when a call panicked; the jobber is not called again.
    poisoned: bool,
}

/// [`PluginV1::handles`]: `T::TYPES` as a JSON array of strings (empty output if that
/// panicked, which the host reads as a broken plugin).
pub extern "C" fn handles<T: Jobber>() -> OwnedBytes {
    let json = catch_unwind(|| serde_json::to_vec(T::TYPES).unwrap_or_default());
    OwnedBytes::from_vec(json.unwrap_or_default())
}

/// [`PluginV1::new_instance`]: a fresh `T::default()`; null if `host` is null or the
/// constructor panicked.
///
/// # Safety
///
/// `host` is null or points to a table that, with its `ctx`, stays valid until the instance
/// is passed to [`drop_instance`].
pub unsafe extern "C" fn new_instance<T: Jobber>(host: *const HostApiV1) -> *mut c_void {
    // SAFETY: per the contract, `host` is null or valid to read.
    let Some(&host_api) = (unsafe { host.as_ref() }) else {
        return std::ptr::null_mut();
    };
    let _scope = host::enter(host_api);
    match catch_unwind(T::default) {
        Ok(jobber) => Box::into_raw(Box::new(Instance {
            jobber,
            host: host_api,
            poisoned: false,
        }))
        .cast(),
        Err(_) => std::ptr::null_mut(),
    }
}

/// [`PluginV1::handle`]: serves `request` on `instance`, writes the output to `out` and
/// returns a [`Status`] as `u32`.
///
/// # Safety
///
/// `instance` came from [`new_instance::<T>`] of this library, is not dropped, and no other
/// call on it runs at the same time; `request` and the bytes it points to are readable for
/// the call; `out` is writable (it need not be initialised).
pub unsafe extern "C" fn handle<T: Jobber>(
    instance: *mut c_void,
    request: *const RequestV1,
    out: *mut OwnedBytes,
) -> u32 {
    // SAFETY: per the contract, `instance` is a live `Instance<T>` nobody else is using.
    let instance = unsafe { &mut *instance.cast::<Instance<T>>() };
    // SAFETY: per the contract, `request` and its bytes are readable for this call.
    let request = unsafe { &*request };
    let (status, output) = serve(instance, request);
    // SAFETY: per the contract, `out` is writable; `write` does not read the old value.
    unsafe { out.write(OwnedBytes::from_vec(output.into_bytes())) };
    status as u32
}

fn serve<T: Jobber>(instance: &mut Instance<T>, request: &RequestV1) -> (Status, String) {
    if instance.poisoned {
        return (
            Status::Panicked,
            "instance poisoned by an earlier panic".into(),
        );
    }
    let _scope = host::enter(instance.host);
    let jobber = &mut instance.jobber;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `request`'s bytes are readable for this call, per `handle`'s contract.
        let Some(request) = (unsafe { owned_request::<T>(request) }) else {
            return (Status::Fail, crate::jobber::UNDECLARED_TYPE.to_owned());
        };
        match crate::jobber::serve(jobber, request) {
            Ok(json) => (Status::Ok, json),
            Err(JobError::Retry(reason)) => (Status::Retry, reason),
            Err(JobError::Fail(reason)) => (Status::Fail, reason),
            Err(JobError::Reject { code, message }) => (
                Status::Rejected,
                serde_json::to_string(&super::Rejection { code, message }).unwrap_or_default(),
            ),
        }
    }));
    outcome.unwrap_or_else(|payload| {
        instance.poisoned = true;
        (Status::Panicked, panic_message(payload.as_ref()))
    })
}

/// Copies a borrowed request into the owned one a jobber gets; `None` when its type is not
/// one of `T::TYPES`.
///
/// # Safety
///
/// The request's byte ranges are readable.
unsafe fn owned_request<T: Jobber>(request: &RequestV1) -> Option<Request> {
    // SAFETY: per the contract, each range is readable for the duration of this function.
    let bytes = |bytes: Bytes| unsafe { bytes.as_slice() };
    let kind = bytes(request.kind);
    Some(Request {
        kind: T::TYPES
            .iter()
            .find(|declared| declared.as_bytes() == kind)?,
        query_index: std::str::from_utf8(bytes(request.query_index))
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(f64::NAN),
        client_id: request.client_id,
        attempt: request.attempt,
        payload: String::from_utf8_lossy(bytes(request.payload)).into_owned(),
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// [`PluginV1::drop_instance`]: drops the jobber (a panic in its `Drop` is swallowed: there
/// is no one left to tell). Null is ignored.
///
/// # Safety
///
/// `instance` is null or came from [`new_instance::<T>`] of this library and is not used
/// again.
pub unsafe extern "C" fn drop_instance<T: Jobber>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: per the contract, `instance` is a `Box<Instance<T>>` given up by the host.
    let instance = unsafe { Box::from_raw(instance.cast::<Instance<T>>()) };
    let _scope = host::enter(instance.host);
    let _ = catch_unwind(AssertUnwindSafe(move || drop(instance)));
}

/// [`PluginV1::free`]: frees bytes this library handed out. A null pointer is ignored.
///
/// # Safety
///
/// `bytes` came from this library's [`handles`] or [`handle`] and is freed once.
pub unsafe extern "C" fn free(bytes: OwnedBytes) {
    if bytes.ptr.is_null() {
        return;
    }
    // SAFETY: per the contract, the parts come from `OwnedBytes::from_vec` here, once.
    drop(unsafe { bytes.into_vec() });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host;
    use serde_json::{json, Value};
    use std::sync::Mutex;

    /// Counts its calls and answers per request type.
    #[derive(Default)]
    struct Probe {
        calls: u64,
    }

    impl Jobber for Probe {
        const TYPES: &'static [&'static str] = &["t.ok", "t.retry", "t.fail", "t.panic"];

        type Answer = Value;

        fn handle(&mut self, request: Request) -> Result<Self::Answer, JobError> {
            self.calls += 1;
            host::info(&format!("call {} of {}", self.calls, request.kind));
            match request.kind {
                "t.ok" => Ok(
                    json!({ "calls": self.calls, "payload": request.payload::<Value>()?, "at": host::now_ms() }),
                ),
                "t.retry" => Err(JobError::retry("busy")),
                "t.fail" => Err(JobError::fail("no such thing")),
                _ => panic!("deliberate panic"),
            }
        }
    }

    /// A jobber whose constructor panics.
    struct Broken;

    impl Default for Broken {
        fn default() -> Self {
            panic!("cannot build")
        }
    }

    impl Jobber for Broken {
        const TYPES: &'static [&'static str] = &["t.broken"];

        type Answer = Value;

        fn handle(&mut self, _request: Request) -> Result<Self::Answer, JobError> {
            Ok(Value::Null)
        }
    }

    static PROBE: PluginV1 = plugin::<Probe>();

    /// The host side of a test: collects log lines, answers a fixed clock.
    #[derive(Default)]
    struct TestHost {
        lines: Mutex<Vec<(u32, String)>>,
    }

    unsafe extern "C" fn log(ctx: *const c_void, level: u32, message: Bytes) {
        // SAFETY: `ctx` is the `TestHost` the test passed, alive for the whole test, and
        // `message` is borrowed for this call.
        let (host, message) = unsafe { (&*ctx.cast::<TestHost>(), message.as_slice()) };
        let message = String::from_utf8(message.to_vec()).unwrap();
        host.lines.lock().unwrap().push((level, message));
    }

    unsafe extern "C" fn now_ms(_ctx: *const c_void) -> u64 {
        1_700_000_000_000
    }

    /// Answers every operation with its own name and arguments, as an error.
    unsafe extern "C" fn echo_call(
        _ctx: *const c_void,
        op: Bytes,
        args: Bytes,
        sink: *mut c_void,
        write: crate::native::SinkFn,
    ) -> u32 {
        // SAFETY: `op` and `args` are borrowed for this call; `write` takes `sink` back.
        unsafe {
            let text = format!(
                "\"{} {}\"",
                String::from_utf8_lossy(op.as_slice()),
                String::from_utf8_lossy(args.as_slice()).replace('"', "'")
            );
            write(sink, Bytes::new(text.as_bytes()));
        }
        crate::native::call_status::ERROR
    }

    impl TestHost {
        fn api(&self) -> HostApiV1 {
            HostApiV1 {
                ctx: (self as *const TestHost).cast(),
                log,
                now_ms,
                call: echo_call,
            }
        }

        fn lines(&self) -> Vec<(u32, String)> {
            self.lines.lock().unwrap().clone()
        }
    }

    /// Takes bytes the plugin handed out, returning them through its `free`.
    fn take(plugin: &PluginV1, bytes: OwnedBytes) -> String {
        // SAFETY: `bytes` is a live handout of `plugin`, read before it is freed once.
        unsafe {
            let text = String::from_utf8(
                Bytes {
                    ptr: bytes.ptr,
                    len: bytes.len,
                }
                .as_slice()
                .to_vec(),
            );
            (plugin.free)(bytes);
            text.unwrap()
        }
    }

    /// Calls `handle` as the host would.
    fn call(
        plugin: &PluginV1,
        instance: *mut c_void,
        kind: &str,
        payload: &str,
    ) -> (Status, String) {
        let request = RequestV1 {
            kind: Bytes::new(kind.as_bytes()),
            query_index: Bytes::new(b"1"),
            client_id: 9,
            attempt: 1,
            payload: Bytes::new(payload.as_bytes()),
        };
        let mut out = std::mem::MaybeUninit::<OwnedBytes>::uninit();
        // SAFETY: `instance` is live and used by one thread; `request` outlives the call.
        let status = unsafe { (plugin.handle)(instance, &request, out.as_mut_ptr()) };
        // SAFETY: `handle` always writes `out`.
        let output = take(plugin, unsafe { out.assume_init() });
        (Status::from_raw(status).expect("a known status"), output)
    }

    fn new_instance_of(plugin: &PluginV1, host: &HostApiV1) -> *mut c_void {
        // SAFETY: `host` outlives every instance made in these tests.
        unsafe { (plugin.new_instance)(host) }
    }

    #[test]
    fn the_table_speaks_this_abi_and_lists_the_types() {
        assert_eq!(PROBE.abi_version, ABI_VERSION);
        // SAFETY: `handles` has no preconditions.
        let types = take(&PROBE, unsafe { (PROBE.handles)() });
        assert_eq!(types, r#"["t.ok","t.retry","t.fail","t.panic"]"#);
    }

    #[test]
    fn verdicts_map_to_statuses_and_state_persists_across_calls() {
        let host = TestHost::default();
        let api = host.api();
        let instance = new_instance_of(&PROBE, &api);
        assert!(!instance.is_null());

        let (status, output) = call(&PROBE, instance, "t.ok", r#"{"a":1}"#);
        assert_eq!(status, Status::Ok);
        let output: Value = serde_json::from_str(&output).unwrap();
        assert_eq!(
            output,
            json!({ "calls": 1, "payload": { "a": 1 }, "at": 1_700_000_000_000u64 })
        );
        assert_eq!(
            call(&PROBE, instance, "t.retry", "null"),
            (Status::Retry, "busy".into())
        );
        assert_eq!(
            call(&PROBE, instance, "t.fail", "null"),
            (Status::Fail, "no such thing".into())
        );
        let (status, output) = call(&PROBE, instance, "t.ok", "null");
        assert_eq!(status, Status::Ok);
        assert_eq!(serde_json::from_str::<Value>(&output).unwrap()["calls"], 4);

        // SAFETY: made above, not used again.
        unsafe { (PROBE.drop_instance)(instance) };
        let info = crate::native::level::INFO;
        assert_eq!(host.lines()[3], (info, "call 4 of t.ok".to_owned()));
    }

    #[test]
    fn a_panic_is_reported_and_poisons_the_instance() {
        let host = TestHost::default();
        let api = host.api();
        let instance = new_instance_of(&PROBE, &api);
        assert_eq!(
            call(&PROBE, instance, "t.panic", "null"),
            (Status::Panicked, "deliberate panic".into())
        );
        let (status, output) = call(&PROBE, instance, "t.ok", "null");
        assert_eq!(status, Status::Panicked);
        assert!(output.contains("poisoned"), "{output}");
        assert_eq!(
            host.lines().len(),
            1,
            "the poisoned jobber was not called again"
        );
        // SAFETY: made above, not used again.
        unsafe { (PROBE.drop_instance)(instance) };
    }

    #[test]
    fn a_bad_payload_is_rejected_as_invalid() {
        let host = TestHost::default();
        let api = host.api();
        let instance = new_instance_of(&PROBE, &api);
        let (status, output) = call(&PROBE, instance, "t.ok", "{not json");
        assert_eq!(status, Status::Rejected);
        let rejection: crate::native::Rejection = serde_json::from_str(&output).unwrap();
        assert_eq!(rejection.code, "invalid");
        assert!(
            rejection.message.starts_with("t.ok: bad payload"),
            "{output}"
        );
        // SAFETY: made above, not used again.
        unsafe { (PROBE.drop_instance)(instance) };
    }

    #[test]
    fn a_type_the_jobber_does_not_declare_fails_without_calling_it() {
        let host = TestHost::default();
        let api = host.api();
        let instance = new_instance_of(&PROBE, &api);
        let (status, output) = call(&PROBE, instance, "t.other", "null");
        assert_eq!(status, Status::Fail);
        assert!(output.contains("does not declare"), "{output}");
        let (_, output) = call(&PROBE, instance, "t.ok", "null");
        let output: Value = serde_json::from_str(&output).unwrap();
        assert_eq!(output["calls"], 1);
        // SAFETY: made above, not used again.
        unsafe { (PROBE.drop_instance)(instance) };
    }

    #[test]
    fn a_constructor_that_panics_gives_a_null_instance() {
        let broken = plugin::<Broken>();
        let host = TestHost::default();
        assert!(new_instance_of(&broken, &host.api()).is_null());
        // SAFETY: a null host is allowed and yields a null instance.
        assert!(unsafe { (PROBE.new_instance)(std::ptr::null()) }.is_null());
    }

    #[test]
    fn instances_keep_their_own_state_and_host_across_threads() {
        struct Shared(*mut c_void);
        // SAFETY: the instance is used by one thread at a time: the test joins the thread first.
        unsafe impl Send for Shared {}

        let (first_host, second_host) = (TestHost::default(), TestHost::default());
        let (first_api, second_api) = (first_host.api(), second_host.api());
        let first = Shared(new_instance_of(&PROBE, &first_api));
        let second = new_instance_of(&PROBE, &second_api);
        call(&PROBE, first.0, "t.ok", "null");
        call(&PROBE, second, "t.ok", "null");
        let first = std::thread::spawn(move || {
            let first = first;
            call(&PROBE, first.0, "t.ok", "null");
            first
        })
        .join()
        .unwrap();
        let (_, output) = call(&PROBE, first.0, "t.ok", "null");
        assert_eq!(serde_json::from_str::<Value>(&output).unwrap()["calls"], 3);
        assert_eq!(first_host.lines().len(), 3);
        assert_eq!(second_host.lines().len(), 1);
        // SAFETY: made above, not used again.
        unsafe {
            (PROBE.drop_instance)(first.0);
            (PROBE.drop_instance)(second);
        }
    }

    #[test]
    fn host_operations_travel_as_json_through_the_table() {
        let host = TestHost::default();
        let _scope = host::enter(host.api());
        assert_eq!(
            crate::store::delete("k"),
            Err("store.delete {'key':'k'}".to_owned())
        );
        // Not a pool error's JSON shape: reported as a garbled answer, not a panic.
        let err = crate::pool::release("7").unwrap_err();
        assert!(
            err.message().contains("pools.release {'lease':'7'}"),
            "{err}"
        );
    }

    #[test]
    fn outside_a_host_call_the_host_api_is_an_error() {
        let err = crate::pool::status("p").unwrap_err();
        assert!(err.message().contains("only available"), "{err}");
        assert_eq!(crate::store::get("k"), None);
    }

    #[test]
    fn outside_a_host_call_the_clock_is_the_system_clock() {
        assert!(host::now_ms() > 1_600_000_000_000);
    }
}
