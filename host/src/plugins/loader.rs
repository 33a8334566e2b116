//! [`Loader`]: a plugin file → a [`LoadedPlugin`], by kind. Owns what loading needs for the
//! host's whole life: the WASM runtime (engine, linker, compiled cache, epoch ticker) and the
//! private folder native libraries are copied to before they are opened.
//!
//! That folder is made when the first native plugin loads, not at start: a host that runs
//! only WASM plugins leaves nothing in the temporary folder. One killed after it loaded a
//! native plugin leaves its folder, and the next host's first native load removes it (see
//! [`NativeFolder`]).

use super::native_folder::NativeFolder;
use super::wasm::{WasmConfig, WasmRuntime};
use super::{native, LoadError, LoadedPlugin, PluginKind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

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
    /// the first native load; removed by [`close`](Self::close).
    shadow: Mutex<Shadow>,
}

/// The private folder of native plugins, over the loader's life.
enum Shadow {
    NotMade,
    Made(NativeFolder),
    /// [`Loader::close`] removed it: no native plugin loads any more.
    Closed,
}

impl Loader {
    pub(crate) fn new(config: &LoaderConfig) -> Result<Loader, LoadError> {
        let wasm = WasmRuntime::new(WasmConfig {
            memory_limit_bytes: config.memory_limit_bytes,
            cache_dir: config.cache_dir.clone(),
        })?;
        Ok(Loader {
            wasm,
            shadow: Mutex::new(Shadow::NotMade),
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
        let mut shadow = self.lock_shadow();
        if let Shadow::NotMade = *shadow {
            let folder =
                NativeFolder::create_in(&std::env::temp_dir()).map_err(|source| LoadError::Io {
                    path: path.to_owned(),
                    what: "cannot create the private folder for native plugins \
                           (under the temporary folder, TMPDIR)",
                    source,
                })?;
            *shadow = Shadow::Made(folder);
        }
        let Shadow::Made(folder) = &*shadow else {
            return Err(LoadError::Invalid {
                path: path.to_owned(),
                reason: "not loaded: the host is stopping".into(),
            });
        };
        native::load(path, folder.path())
    }

    /// Removes the private folder of native plugins, as the host stops. It is not left to
    /// the loader's drop: the watcher's threads hold the loader, and they may outlive the
    /// host's `run` (the process can end first). Native plugins still open keep working:
    /// their copies stay mapped until the process ends.
    pub(crate) fn close(&self) {
        drop(std::mem::replace(&mut *self.lock_shadow(), Shadow::Closed));
    }

    fn lock_shadow(&self) -> MutexGuard<'_, Shadow> {
        self.shadow.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::plugin_file;
    use super::*;

    fn shadow_dir(loader: &Loader) -> Option<PathBuf> {
        match &*loader.lock_shadow() {
            Shadow::Made(folder) => Some(folder.path().to_owned()),
            Shadow::NotMade | Shadow::Closed => None,
        }
    }

    #[test]
    fn the_native_folder_is_made_by_the_first_native_load_and_removed_by_close() {
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

        loader.close();
        assert!(!dir.exists(), "closing removes the folder");
        let Err(refused) = loader.load(&native) else {
            panic!("no native load after close");
        };
        assert!(refused.to_string().contains("stopping"), "{refused}");
        assert_eq!(shadow_dir(&loader), None, "and makes no new folder");
    }
}
