//! [`NativeFolder`]: the private folder native plugins are copied to before they are opened,
//! and the removal of the ones left by hosts that were killed.
//!
//! A host removes its folder when it stops, but a host killed with SIGKILL (or by a crash or
//! a power cut) cannot, and the folder holds copies of every native library it loaded. So
//! each folder holds a lock file, [`LOCK_FILE`], that its host keeps locked (`flock`) for as
//! long as it runs; the system drops that lock when the process ends, however it ends. A
//! folder whose lock can be taken therefore belongs to no running host, and the next host
//! that makes a folder in the same temporary folder removes it.
//!
//! The lock file is locked under a temporary name and only then renamed to [`LOCK_FILE`], so
//! a live folder's lock file is never seen unlocked. A folder without one (its host died while
//! making it, or it was made by a version of resman before this one) is left alone: nothing
//! tells whether its host still runs.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// The names of the folders begin with this.
pub(crate) const PREFIX: &str = "resman-native-";

/// Held locked by the folder's host for as long as it runs.
pub(crate) const LOCK_FILE: &str = "owner.lock";

/// The name the lock file has until it is locked.
const LOCKING: &str = "owner.lock.new";

/// A private folder for native plugins, locked as its host's while this lives and removed
/// when it drops.
#[derive(Debug)]
pub(crate) struct NativeFolder {
    /// Declared before `dir` so that it is closed first: some systems cannot remove an open
    /// file.
    _lock: File,
    dir: tempfile::TempDir,
}

impl NativeFolder {
    /// Removes the folders in `parent` that no running host holds, then makes a new one
    /// there, locked as this host's.
    ///
    /// # Errors
    ///
    /// Making the folder or its lock file failed. Removing others' folders never fails the
    /// call: a folder that cannot be removed (another user's, say) is left as it is.
    pub(crate) fn create_in(parent: &Path) -> io::Result<NativeFolder> {
        let removed = remove_abandoned(parent);
        if removed > 0 {
            tracing::info!(
                removed,
                parent = %parent.display(),
                "removed native plugin folders left by hosts that were killed"
            );
        }
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)?;
        let locking = dir.path().join(LOCKING);
        let lock = File::create(&locking)?;
        lock.try_lock().map_err(io::Error::from)?;
        fs::rename(&locking, dir.path().join(LOCK_FILE))?;
        Ok(NativeFolder { _lock: lock, dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the folders in `parent` whose lock file no process holds; returns how many.
fn remove_abandoned(parent: &Path) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            name.to_str().is_some_and(|name| name.starts_with(PREFIX))
        })
        .filter(|entry| remove_if_abandoned(&entry.path()))
        .count()
}

fn remove_if_abandoned(dir: &Path) -> bool {
    let Ok(lock) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    // Held by a running host, or taken by another host's sweep of the same folder.
    if lock.try_lock().is_err() {
        return false;
    }
    fs::remove_dir_all(dir).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder as a host killed after making it leaves it: the lock file is there, and
    /// nobody holds it.
    fn abandoned(parent: &Path, name: &str) -> std::path::PathBuf {
        let dir = parent.join(name);
        fs::create_dir(&dir).unwrap();
        File::create(dir.join(LOCK_FILE)).unwrap();
        fs::write(dir.join("0123-counter.so"), b"a copied library").unwrap();
        dir
    }

    #[test]
    fn a_new_folder_removes_the_abandoned_ones_and_keeps_the_others() {
        let parent = tempfile::tempdir().unwrap();
        let live = NativeFolder::create_in(parent.path()).unwrap();
        let dead = [
            abandoned(parent.path(), "resman-native-dead1"),
            abandoned(parent.path(), "resman-native-dead2"),
        ];
        let unlocked = parent.path().join("resman-native-older-version");
        fs::create_dir(&unlocked).unwrap();
        let unrelated = abandoned(parent.path(), "something-else");

        let new = NativeFolder::create_in(parent.path()).unwrap();

        for dir in &dead {
            assert!(!dir.exists(), "{} is removed", dir.display());
        }
        assert!(
            live.path().join(LOCK_FILE).exists(),
            "a live host's folder stays"
        );
        assert!(unlocked.exists(), "a folder without a lock file stays");
        assert!(unrelated.exists(), "folders of other names stay");
        assert!(new.path().join(LOCK_FILE).exists());
        assert_ne!(live.path(), new.path());

        let (live_path, new_path) = (live.path().to_owned(), new.path().to_owned());
        drop((live, new));
        assert!(
            !live_path.exists() && !new_path.exists(),
            "removed when dropped"
        );
    }

    #[test]
    fn a_live_folder_is_locked_against_a_sweep() {
        let parent = tempfile::tempdir().unwrap();
        let live = NativeFolder::create_in(parent.path()).unwrap();
        assert!(!remove_if_abandoned(live.path()));
        assert!(live.path().exists());
    }
}
