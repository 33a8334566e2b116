//! Hot loading: watches the plugins folder (notify, debounced) and turns what changed into
//! [`PluginEvent`]s for the coordinator. Loading happens here, on the watcher's thread, so a
//! slow compile never stalls requests; a file that fails to load is logged and leaves what was
//! serving untouched.
//!
//! The debounce lets a file that is still being written settle before it is read. A file
//! renamed into place is complete the moment it appears (a rename is atomic), so renames are
//! also watched without the debounce and loaded at once: that is the fast, safe way to deploy
//! (write beside the folder or under a hidden name, then rename). The debounced event for the
//! same file follows and finds its hash unchanged.

use super::loader::Loader;
use super::{LoadError, PluginKind};
use crate::coordinator::message::{Message, PluginEvent};
use notify::event::{ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, DebouncedEvent};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// How long a file must be quiet before it is loaded.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(50);

/// Keeps the folder watched until dropped.
pub(crate) struct Watcher {
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    /// Sees renames into the folder as they happen.
    _renames: notify::RecommendedWatcher,
    /// Closed when the watcher drops, as the host stops.
    loader: Arc<Loader>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.loader.close();
    }
}

/// What the watcher remembers between events.
struct State {
    dir: PathBuf,
    loader: Arc<Loader>,
    coordinator: UnboundedSender<Message>,
    /// Hash of each file as last loaded, so a touch without a change reloads nothing.
    hashes: Mutex<HashMap<PathBuf, String>>,
}

/// Loads every plugin in `dir` (in name order, so of two clashing files the first keeps its
/// types) and sends them to the coordinator, then watches `dir` for changes.
///
/// # Errors
///
/// When `dir` cannot be read or watched.
pub(crate) fn start(
    dir: &Path,
    loader: Arc<Loader>,
    coordinator: UnboundedSender<Message>,
) -> Result<Watcher, LoadError> {
    let io_error = |what, source| LoadError::Io {
        path: dir.to_owned(),
        what,
        source,
    };
    // Events name files by canonical path; compare against the same form.
    let dir = &std::fs::canonicalize(dir).map_err(|err| io_error("cannot open the folder", err))?;
    let state = Arc::new(State {
        dir: dir.to_owned(),
        loader,
        coordinator,
        hashes: Mutex::default(),
    });
    let handler = state.clone();
    let mut debouncer =
        new_debouncer(
            DEBOUNCE,
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => handler.changed(&events),
                Err(errors) => errors
                    .iter()
                    .for_each(|err| tracing::warn!(error = %err, "plugin folder watch error")),
            },
        )
        .map_err(|err| io_error("cannot start watching", std::io::Error::other(err)))?;
    debouncer
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|err| io_error("cannot watch", std::io::Error::other(err)))?;
    let handler = state.clone();
    let mut renames = notify::recommended_watcher(move |result: notify::Result<Event>| {
        if let Ok(event) = result {
            handler.renamed(&event);
        }
    })
    .map_err(|err| io_error("cannot start watching", std::io::Error::other(err)))?;
    renames
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|err| io_error("cannot watch", std::io::Error::other(err)))?;
    let entries = std::fs::read_dir(dir).map_err(|err| io_error("cannot read the folder", err))?;
    let files: BTreeSet<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.iter().for_each(|path| state.reconcile(path));
    Ok(Watcher {
        _debouncer: debouncer,
        _renames: renames,
        loader: Arc::clone(&state.loader),
    })
}

impl State {
    fn changed(&self, events: &[DebouncedEvent]) {
        let paths: BTreeSet<&PathBuf> = events
            .iter()
            .filter(|event| !event.kind.is_access())
            .flat_map(|event| &event.paths)
            .collect();
        paths.into_iter().for_each(|path| self.reconcile(path));
    }

    /// A file renamed into the folder is whole: reconcile it now, without the debounce.
    fn renamed(&self, event: &Event) {
        let to = match event.kind {
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first(),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.get(1),
            _ => None,
        };
        if let Some(path) = to {
            self.reconcile(path);
        }
    }

    /// Brings the coordinator in line with what `path` is now: loaded, reloaded or removed.
    /// The start-up scan and the watch thread may reconcile the same file at once; the hash
    /// table's lock, held throughout, makes them take turns so a file is never loaded twice.
    fn reconcile(&self, path: &Path) {
        if !is_plugin_file(&self.dir, path) {
            return;
        }
        let mut hashes = self.hashes();
        let hash = match super::read_plugin(path) {
            Ok((_, hash)) => hash,
            Err(LoadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                hashes.remove(path);
                return self.send(PluginEvent::Removed(path.to_owned()));
            }
            Err(err) => return self.refuse(path, err.to_string()),
        };
        if hashes.get(path) == Some(&hash) {
            return;
        }
        let _span = tracing::info_span!("plugin", file = %path.display()).entered();
        match self.loader.load(path) {
            Ok(plugin) => {
                hashes.insert(path.to_owned(), plugin.hash.clone());
                self.send(PluginEvent::Loaded(plugin));
            }
            Err(err) => self.refuse(path, err.to_string()),
        }
    }

    fn refuse(&self, path: &Path, error: String) {
        tracing::error!(file = %path.display(), error = %error, "plugin load failed; what was serving keeps serving");
        let event = PluginEvent::Refused {
            path: path.to_owned(),
            error,
        };
        self.send(event);
    }

    fn send(&self, event: PluginEvent) {
        // Fails only once the host has shut down, when nothing is served any more.
        let _ = self.coordinator.send(Message::Plugin(event));
    }

    fn hashes(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, String>> {
        self.hashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A plugin file directly in `dir`, not hidden (editors' and copiers' temporary files are).
fn is_plugin_file(dir: &Path, path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_none_or(|name| name.starts_with('.') || name.ends_with('~'));
    path.parent() == Some(dir) && !hidden && PluginKind::of(path).is_some()
}
