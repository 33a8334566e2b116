//! Plugins: jobbers loaded from files in the plugins folder, as WASM components ([`wasm`]) or
//! native libraries ([`native`]). This module is the one seam the rest of the host sees: a
//! [`LoadedPlugin`] says which types it serves and makes [`Instance`]s that serve them.
//!
//! Each lane (request type) keeps one live instance and calls it one request after another,
//! so guest memory carries state between calls; an instance that trapped, hit its deadline or
//! its memory cap, or panicked is thrown away and the next call gets a fresh one.

pub(crate) mod loader;
pub(crate) mod native;
pub(crate) mod wasm;
pub(crate) mod watcher;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// JSON number text.
    pub(crate) query_index: &'a str,
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
