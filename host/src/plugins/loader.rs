//! [`Loader`]: a plugin file → a [`LoadedPlugin`], by kind. Owns what loading needs for the
//! host's whole life: the WASM runtime (engine, linker, compiled cache, epoch ticker) and the
//! private folder native libraries are copied to before they are opened.

use super::wasm::{WasmConfig, WasmRuntime};
use super::{native, LoadError, LoadedPlugin, PluginKind};
use std::path::{Path, PathBuf};

/// Settings of plugin loading, from [`crate::Config`].
#[derive(Clone, Debug)]
pub(crate) struct LoaderConfig {
    /// Where compiled WASM components are cached across restarts.
    pub(crate) cache_dir: Option<PathBuf>,
    /// The most linear memory one WASM instance may use.
    pub(crate) memory_limit_bytes: usize,
}

pub(crate) struct Loader {
    wasm: WasmRuntime,
    /// Native libraries are opened from copies here, never from the watched folder.
    shadow: tempfile::TempDir,
}

impl Loader {
    pub(crate) fn new(config: &LoaderConfig) -> Result<Loader, LoadError> {
        let wasm = WasmRuntime::new(WasmConfig {
            memory_limit_bytes: config.memory_limit_bytes,
            cache_dir: config.cache_dir.clone(),
        })?;
        let shadow = tempfile::Builder::new()
            .prefix("resman-native-")
            .tempdir()
            .map_err(|source| LoadError::Io {
                path: std::env::temp_dir(),
                what: "cannot create the private folder for native plugins",
                source,
            })?;
        Ok(Loader { wasm, shadow })
    }

    /// Loads and validates `path`.
    pub(crate) fn load(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        match PluginKind::of(path) {
            Some(PluginKind::Wasm) => self.wasm.load(path),
            Some(PluginKind::Native) => native::load(path, self.shadow.path()),
            None => Err(LoadError::Invalid {
                path: path.to_owned(),
                reason: "not a plugin file (expected .wasm, .so, .dylib or .dll)".into(),
            }),
        }
    }
}
