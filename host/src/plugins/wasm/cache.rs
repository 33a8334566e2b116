//! Keeping the compiled-component cache folder bounded. Every version of every plugin that
//! was ever loaded leaves an artifact (megabytes each, tens for the Python and JavaScript
//! components), and artifacts of an older engine are never read again; left alone, the folder
//! only grows. After each new artifact is written, the least recently used ones are removed
//! until the folder fits [`BUDGET_BYTES`]; a cache hit marks its artifact used. A removed
//! artifact costs one compile the next time its file is loaded, nothing else.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How much the cache folder's artifacts may take together.
pub(crate) const BUDGET_BYTES: u64 = 1 << 30;

/// A temporary file this old was left by a write that died (a finished write renames its
/// temporary file at once).
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Marks an artifact as just used, so that pruning keeps it longer.
pub(crate) fn touch(artifact: &Path) {
    let _ = fs::File::options()
        .write(true)
        .open(artifact)
        .and_then(|file| file.set_modified(SystemTime::now()));
}

/// What [`prune`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub(crate) files: usize,
    pub(crate) bytes: u64,
}

/// Removes the least recently used artifacts (`*.cwasm`, by modification time) until those
/// left take at most `budget` bytes, never `keep`; and temporary files of writes that died.
pub(crate) fn prune(dir: &Path, budget: u64, keep: &Path) -> io::Result<Pruned> {
    let now = SystemTime::now();
    let mut artifacts = Vec::new();
    let mut pruned = Pruned::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let modified = meta.modified().unwrap_or(now);
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".cwasm") && meta.is_file() {
            artifacts.push((modified, meta.len(), path));
        } else if name.contains(".tmp-")
            && now.duration_since(modified).unwrap_or_default() > STALE_TEMP
            && fs::remove_file(&path).is_ok()
        {
            pruned.files += 1;
            pruned.bytes += meta.len();
        }
    }
    // `keep` first, then the newest: the ones kept while the budget lasts.
    artifacts.sort_by_key(|(modified, _, _)| std::cmp::Reverse(*modified));
    let mut used: u64 = artifacts
        .iter()
        .filter(|(_, _, path)| path == keep)
        .map(|(_, len, _)| len)
        .sum();
    for (_, len, path) in artifacts {
        if path == keep {
            continue;
        }
        if used + len <= budget {
            used += len;
        } else if fs::remove_file(&path).is_ok() {
            pruned.files += 1;
            pruned.bytes += len;
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(dir: &Path, name: &str, len: usize, age_secs: u64) -> std::path::PathBuf {
        let path = dir.join(name);
        fs::write(&path, vec![0u8; len]).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
        path
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_least_recently_used_artifacts_go_until_the_rest_fit() {
        let dir = tempfile::tempdir().unwrap();
        let old = artifact(dir.path(), "old.cwasm", 400, 300);
        artifact(dir.path(), "older.cwasm", 400, 400);
        artifact(dir.path(), "recent.cwasm", 400, 100);
        let new = artifact(dir.path(), "new.cwasm", 400, 0);
        artifact(dir.path(), "a.cwasm.tmp-1-0", 10, 2 * 3600);
        artifact(dir.path(), "b.cwasm.tmp-1-1", 10, 0);
        touch(&old);
        let pruned = prune(dir.path(), 1000, &new).unwrap();
        assert_eq!(
            names(dir.path()),
            ["b.cwasm.tmp-1-1", "new.cwasm", "old.cwasm"],
            "the touched one is kept, a write under way is left alone"
        );
        assert_eq!(
            pruned,
            Pruned {
                files: 3,
                bytes: 810
            }
        );
    }

    #[test]
    fn the_artifact_just_written_stays_even_over_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let new = artifact(dir.path(), "new.cwasm", 4000, 0);
        artifact(dir.path(), "other.cwasm", 10, 0);
        prune(dir.path(), 1000, &new).unwrap();
        assert_eq!(names(dir.path()), ["new.cwasm"]);
    }
}
