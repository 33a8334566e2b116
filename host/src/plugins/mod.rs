//! Plugins: jobbers loaded from files in the plugins folder, as WASM components ([`wasm`]) or
//! native libraries ([`native`]). This module is the one seam the rest of the host sees: a
//! [`LoadedPlugin`] says which types it serves and makes [`Instance`]s that serve them.
//!
//! Each lane (request type) keeps one live instance and calls it one request after another,
//! so guest memory carries state between calls; an instance that trapped, hit its deadline or
//! its memory cap, or panicked is thrown away and the next call gets a fresh one.

pub(crate) mod loader;
pub(crate) mod native;
pub(crate) mod native_folder;
pub(crate) mod wasm;
pub(crate) mod watcher;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The two kinds of plugin file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PluginKind {
    /// A `*.wasm` component of the `jobber` world in `sdk/wit/`.
    Wasm,
    /// A `*.so` / `*.dylib` / `*.dll` exporting `resman_jobber_v1`.
    Native,
}

impl PluginKind {
    /// The kind a file's name says it is, if any.
    pub(crate) fn of(path: &Path) -> Option<PluginKind> {
        match path.extension()?.to_str()? {
            "wasm" => Some(PluginKind::Wasm),
            "so" | "dylib" | "dll" => Some(PluginKind::Native),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PluginKind::Wasm => "wasm",
            PluginKind::Native => "native",
        }
    }
}

/// One request as a plugin receives it.
#[derive(Clone, Debug)]
pub(crate) struct PluginRequest<'a> {
    pub(crate) kind: &'a str,
    /// `kind`'s position in the plugin's declared types, which a WASM guest receives instead
    /// of the name. A lane knows it from the start; `None` leaves the instance to look it up.
    pub(crate) kind_index: Option<u32>,
    pub(crate) query_index: &'a serde_json::Number,
    pub(crate) client_id: u64,
    pub(crate) attempt: u32,
    /// JSON text; `null` when the request had none.
    pub(crate) payload: &'a str,
}

/// How one call into a plugin ended.
#[derive(Debug, PartialEq)]
pub(crate) enum CallOutcome {
    /// The `resultJob`, as JSON text (not yet validated).
    Done(String),
    /// The jobber asked for a retry.
    Retry(String),
    /// The jobber failed for good.
    Fail(String),
    /// The jobber answered an error code of its own.
    Reject { code: String, message: String },
    /// The call trapped, hit the memory cap, or panicked; the instance is unusable.
    Crashed(String),
    /// The call ran past its deadline; the instance is unusable.
    TimedOut,
}

impl CallOutcome {
    /// Whether the instance that gave this outcome must be thrown away.
    pub(crate) fn poisons_instance(&self) -> bool {
        matches!(self, CallOutcome::Crashed(_) | CallOutcome::TimedOut)
    }
}

/// A live instance of a plugin: its own memory, called one request at a time.
pub(crate) trait Instance: Send {
    /// Serves one request within `deadline`.
    fn call(&mut self, request: &PluginRequest<'_>, deadline: Duration) -> CallOutcome;
}

/// Makes instances of a loaded plugin.
pub(crate) trait InstanceFactory: Send + Sync {
    /// A fresh instance.
    ///
    /// # Errors
    ///
    /// [`LoadError`] when the plugin cannot be instantiated (its start traps, say).
    fn instantiate(&self) -> Result<Box<dyn Instance>, LoadError>;

    /// The WASM factory, whose instances lanes call as tasks; `None` for a native plugin,
    /// whose calls block and so run on a blocking thread.
    fn wasm(&self) -> Option<&wasm::WasmFactory> {
        None
    }
}

/// A plugin file that loaded: what it serves and how to run it.
#[derive(Clone)]
pub(crate) struct LoadedPlugin {
    pub(crate) path: PathBuf,
    pub(crate) kind: PluginKind,
    /// The request types it declared.
    pub(crate) types: Vec<String>,
    /// SHA-256 of the file's bytes, hex.
    pub(crate) hash: String,
    pub(crate) loaded_at: SystemTime,
    /// How long loading took (compiling, or reading the compiled cache).
    pub(crate) load_time: Duration,
    /// True when a WASM component came from the on-disk compiled cache.
    pub(crate) from_cache: bool,
    pub(crate) factory: Arc<dyn InstanceFactory>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("types", &self.types)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Why a plugin file was not loaded. Always names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The file could not be read or copied.
    #[error("plugin {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The file is not a plugin of its kind (garbage, wrong world, missing exports, wrong ABI).
    #[error("plugin {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

// What both loaders share: reading a file, checking declared types, writing private copies,
// and the `host` interface of the WIT world (log, now-ms).

/// Reads a plugin file and hashes its bytes (SHA-256, hex); the loaders use these bytes, so
/// the hash describes exactly what runs even if the file changes meanwhile.
pub(crate) fn read_plugin(path: &Path) -> Result<(Vec<u8>, String), LoadError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        what: "cannot read the file",
        source,
    })?;
    let hash = Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok((bytes, hash))
}

/// Refuses a plugin that declares no types, an empty type, or one type twice.
pub(crate) fn check_types(path: &Path, types: Vec<String>) -> Result<Vec<String>, LoadError> {
    let invalid = |reason: String| LoadError::Invalid {
        path: path.to_owned(),
        reason,
    };
    if types.is_empty() {
        return Err(invalid(
            "declares no request types; did you call export_jobber!?".into(),
        ));
    }
    for (at, kind) in types.iter().enumerate() {
        if kind.is_empty() {
            return Err(invalid("declares an empty request type".into()));
        }
        if types[..at].contains(kind) {
            return Err(invalid(format!("declares request type `{kind}` twice")));
        }
    }
    Ok(types)
}

/// Writes `bytes` to `path` so that no reader ever sees a partial file: a synced temporary
/// file in the same folder, then a rename over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let temp = path.with_extension(format!("tmp-{}-{unique}", std::process::id()));
    let written = std::fs::File::create(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    renamed
}

/// Writes a line a plugin logged through the host API (`level` in the WIT's order, as
/// `resman_sdk::native::level`; an unknown level logs as error), tagged with the plugin's
/// file and the request type being served.
pub(crate) fn log_from_plugin(level: u32, file: &str, kind: &str, message: &str) {
    use resman_sdk::native::level::{DEBUG, INFO, TRACE, WARN};
    match level {
        TRACE => tracing::trace!(plugin = file, r#type = kind, "{message}"),
        DEBUG => tracing::debug!(plugin = file, r#type = kind, "{message}"),
        INFO => tracing::info!(plugin = file, r#type = kind, "{message}"),
        WARN => tracing::warn!(plugin = file, r#type = kind, "{message}"),
        _ => tracing::error!(plugin = file, r#type = kind, "{message}"),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub(crate) fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// What the loaders' unit tests share: the plugin files `scripts/build-plugins.sh` built, and
/// a request to call them with.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{CallOutcome, Instance, LoadedPlugin, PluginKind, PluginRequest};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// A built plugin file, or `None` (with a note) when it has not been built, so that a bare
    /// `cargo test` runs without the plugins. Under `RESMAN_REQUIRE_PLUGINS` (which
    /// `scripts/test.sh` sets after building them) a missing file fails the test instead.
    pub(crate) fn plugin_file(file_name: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("RESMAN_TEST_PLUGINS").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/debug"),
            PathBuf::from,
        );
        let path = dir.join(file_name);
        if path.is_file() {
            return Some(path);
        }
        let missing = format!(
            "{} is missing; run scripts/build-plugins.sh",
            path.display()
        );
        if std::env::var_os("RESMAN_REQUIRE_PLUGINS").is_some() {
            panic!("{missing}");
        }
        eprintln!("skipped: {missing}");
        None
    }

    /// Calls `kind` with payload `{"n":1}` as attempt `attempt`, under a 5 s deadline.
    pub(crate) fn call(instance: &mut dyn Instance, kind: &str, attempt: u32) -> CallOutcome {
        let request = PluginRequest {
            kind,
            kind_index: None,
            query_index: &serde_json::Number::from(7),
            client_id: 42,
            attempt,
            payload: r#"{"n":1}"#,
        };
        instance.call(&request, Duration::from_secs(5))
    }

    /// Asserts that the `misbehave` fixture's verdicts and answers pass through `instance`
    /// unchanged, calling as attempt `attempt`.
    pub(crate) fn assert_verdicts_pass_through(instance: &mut dyn Instance, attempt: u32) {
        let failed = CallOutcome::Fail("deliberate failure".into());
        assert_eq!(call(instance, "misbehave.fail", attempt), failed);
        let retry = CallOutcome::Retry("deliberate retry".into());
        assert_eq!(call(instance, "misbehave.retry", attempt), retry);
        let echo = format!(r#"{{"attempt":{attempt},"payload":{{"n":1}}}}"#);
        assert_eq!(
            call(instance, "misbehave.echo", attempt),
            CallOutcome::Done(echo)
        );
        let CallOutcome::Done(logged) = call(instance, "misbehave.log", attempt) else {
            panic!("misbehave.log answers")
        };
        let now: serde_json::Value = serde_json::from_str(&logged).unwrap();
        assert!(now["now"].as_u64().unwrap() > 1_600_000_000_000, "{logged}");
    }

    /// Asserts that a loaded counter plugin of `kind` serves `cntResponse`, counting per
    /// instance: 0, 1, 2 on one instance, 0 again on a fresh one.
    pub(crate) fn assert_counts_per_instance(plugin: &LoadedPlugin, kind: PluginKind) {
        assert_eq!(plugin.types, ["cntResponse"]);
        assert_eq!(plugin.kind, kind);
        let mut first = plugin.factory.instantiate().unwrap();
        for n in 0..3 {
            let expected = CallOutcome::Done(format!(r#"{{"cnt":{n}}}"#));
            assert_eq!(call(first.as_mut(), "cntResponse", 1), expected);
        }
        let mut second = plugin.factory.instantiate().unwrap();
        let expected = CallOutcome::Done(r#"{"cnt":0}"#.into());
        assert_eq!(call(second.as_mut(), "cntResponse", 1), expected);
    }
}
