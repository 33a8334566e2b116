//! [`Loader`]: a plugin file → a [`LoadedPlugin`], by kind. Owns what loading needs for the
//! host's whole life: the WASM runtime (engine, linker, compiled cache, epoch ticker) and the
//! private folder native libraries are copied to before they are opened.
//!
//! That folder is made when the first native plugin loads, not at start: a host that runs
//! only WASM plugins leaves nothing in the temporary folder, even when it is killed and so
//! cannot remove what it made.

use super::wasm::{WasmConfig, WasmRuntime};
use super::{native, LoadError, LoadedPlugin, PluginKind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    /// Native libraries are opened from copies here, never from the watched folder. Made by
    /// the first native load; removed when the host stops.
    shadow: Mutex<Option<tempfile::TempDir>>,
}

impl Loader {
    pub(crate) fn new(config: &LoaderConfig) -> Result<Loader, LoadError> {
        let wasm = WasmRuntime::new(WasmConfig {
            memory_limit_bytes: config.memory_limit_bytes,
            cache_dir: config.cache_dir.clone(),
        })?;
        Ok(Loader {
            wasm,
            shadow: Mutex::new(None),
        })
    }

    /// Loads and validates `path`.
    pub(crate) fn load(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        match PluginKind::of(path) {
            Some(PluginKind::Wasm) => self.wasm.load(path),
            Some(PluginKind::Native) => self.load_native(path),
            None => Err(LoadError::Invalid {
                path: path.to_owned(),
                reason: "not a plugin file (expected .wasm, .so, .dylib or .dll)".into(),
            }),
        }
    }

    /// Loads a native library from a copy in the private folder, which it makes if need be.
    fn load_native(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let mut shadow = self.shadow.lock().unwrap_or_else(|e| e.into_inner());
        let dir = match &mut *shadow {
            Some(dir) => dir,
            empty => empty.insert(
                tempfile::Builder::new()
                    .prefix("resman-native-")
                    .tempdir()
                    .map_err(|source| LoadError::Io {
                        path: path.to_owned(),
                        what: "cannot create the private folder for native plugins \
                               (under the temporary folder, TMPDIR)",
                        source,
                    })?,
            ),
        };
        native::load(path, dir.path())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::plugin_file;
    use super::*;

    fn shadow_dir(loader: &Loader) -> Option<PathBuf> {
        let shadow = loader.shadow.lock().unwrap();
        shadow.as_ref().map(|dir| dir.path().to_owned())
    }

    #[test]
    fn the_native_folder_is_made_by_the_first_native_load_and_removed_with_the_loader() {
        let native = format!("counter.{}", std::env::consts::DLL_EXTENSION);
        let (Some(wasm), Some(native)) = (plugin_file("counter.wasm"), plugin_file(&native)) else {
            return;
        };
        let loader = Loader::new(&LoaderConfig {
            cache_dir: None,
            memory_limit_bytes: 64 << 20,
        })
        .unwrap();
        loader.load(&wasm).unwrap();
        assert_eq!(shadow_dir(&loader), None, "a WASM load makes no folder");

        loader.load(&native).unwrap();
        let dir = shadow_dir(&loader).expect("the native load made the folder");
        assert!(dir.is_dir());
        loader.load(&native).unwrap();
        assert_eq!(
            shadow_dir(&loader),
            Some(dir.clone()),
            "one folder for all loads"
        );

        drop(loader);
        assert!(!dir.exists(), "the folder goes with the loader");
    }
}
