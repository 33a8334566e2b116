//! The journal keeper: the data folder's slow file work, on a thread of its own so that the
//! committer's path (write, fdatasync, release the answers) never waits for it:
//!
//! - extending the journal with zeros ahead of the frames (milliseconds per step);
//! - creating the next journal before the current one is full;
//! - writing the snapshot a roll starts from (tens of milliseconds for a large state).
//!
//! Measured before it existed, under load the committer stalled for the zeros about 3% of
//! the time and for about 20 ms at every roll, and every answer in flight waited with it.
//!
//! Jobs run in the order they are given. A job the keeper cannot take (its thread is gone)
//! runs on the caller's thread instead, so nothing handed over is ever lost; dropping the
//! keeper lets it finish its queue, so a roll's snapshot is written before the host exits.

use super::journal::{Folder, Journal, JournalFile, Sizes, StoreError};
use super::state::Snapshot;
use super::stats::CommitStats;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::Scope;

/// The committer's handle on the keeper thread.
pub(crate) struct Keeper<'folder> {
    folder: &'folder Folder,
    sizes: Sizes,
    /// Where written snapshots are counted.
    stats: &'folder CommitStats,
    jobs: mpsc::Sender<Job>,
    created: mpsc::Receiver<Result<Journal, StoreError>>,
    /// The journal being created ahead, not yet taken.
    creating: Option<u64>,
    /// One message per snapshot job the keeper has finished, written or not.
    snapshots_done: mpsc::Receiver<()>,
    /// Snapshot jobs handed over and not yet finished.
    snapshots_pending: usize,
}

enum Job {
    /// Extend a journal by one step, as [`Journal::wants_room`] asked.
    Extend(Arc<JournalFile>),
    /// Create a journal; it is sent back on `created`.
    Create(u64),
    /// Write a snapshot: the state at `seq`, replayed from journal `journal` on.
    Snapshot {
        state: Snapshot,
        seq: u64,
        journal: u64,
    },
}

impl<'folder> Keeper<'folder> {
    /// Starts the keeper thread in `scope`, which joins it once the keeper is dropped and its
    /// queue is done.
    pub(crate) fn start<'scope>(
        scope: &'scope Scope<'scope, '_>,
        folder: &'folder Folder,
        sizes: Sizes,
        stats: &'folder CommitStats,
    ) -> Keeper<'folder>
    where
        'folder: 'scope,
    {
        let (jobs, inbox) = mpsc::channel();
        let (done, created) = mpsc::channel();
        let (snapshot_done, snapshots_done) = mpsc::channel();
        let keeper = Keeper {
            folder,
            sizes,
            stats,
            jobs,
            created,
            creating: None,
            snapshots_done,
            snapshots_pending: 0,
        };
        std::thread::Builder::new()
            .name("resman-journal".into())
            .spawn_scoped(scope, move || {
                for job in inbox {
                    let snapshot = matches!(job, Job::Snapshot { .. });
                    if let Some(journal) = run(folder, sizes, stats, job) {
                        // The committer may have stopped waiting for it: then it is unused.
                        let _ = done.send(journal);
                    }
                    if snapshot {
                        let _ = snapshot_done.send(());
                    }
                }
            })
            .expect("spawning the journal keeper thread");
        keeper
    }

    /// Extends `file` by one step, for [`Journal::wants_room`].
    pub(crate) fn extend(&self, file: Arc<JournalFile>) {
        self.give(Job::Extend(file));
    }

    /// Creates journal `number` ahead of need, unless that is under way already.
    pub(crate) fn create_ahead(&mut self, number: u64) {
        if self.creating.is_none() {
            self.creating = Some(number);
            self.give(Job::Create(number));
        }
    }

    /// Journal `number`: the one created ahead if there is one (waiting for it if need be),
    /// else one created now.
    pub(crate) fn take_journal(&mut self, number: u64) -> Result<Journal, StoreError> {
        if self.creating.take() == Some(number) {
            if let Ok(created) = self.created.recv() {
                return created;
            }
        }
        self.folder.create_journal(number, self.sizes)
    }

    /// Writes the snapshot `state` at `seq`, replayed from journal `journal` on.
    pub(crate) fn snapshot(&mut self, state: Snapshot, seq: u64, journal: u64) {
        if self.give(Job::Snapshot {
            state,
            seq,
            journal,
        }) {
            self.snapshots_pending += 1;
        }
    }

    /// Whether a snapshot handed over is still being written. The committer does not roll
    /// the journal again until it is: the roll size grows with the snapshot, whose size is
    /// known only once it is written, and a second copy of the state queued behind the
    /// first would be written only to be replaced.
    pub(crate) fn writing_snapshot(&mut self) -> bool {
        while self.snapshots_done.try_recv().is_ok() {
            self.snapshots_pending -= 1;
        }
        self.snapshots_pending > 0
    }

    /// Hands `job` to the keeper thread; returns false if it ran here instead.
    fn give(&self, job: Job) -> bool {
        match self.jobs.send(job) {
            Ok(()) => true,
            Err(mpsc::SendError(job)) => {
                tracing::warn!(
                    "the journal keeper thread is gone; doing its work on the committer"
                );
                // A journal to create ahead is created by `take_journal` when it is needed.
                if !matches!(job, Job::Create(_)) {
                    let _ = run(self.folder, self.sizes, self.stats, job);
                }
                false
            }
        }
    }
}

/// Runs one job; a create returns its journal.
fn run(
    folder: &Folder,
    sizes: Sizes,
    stats: &CommitStats,
    job: Job,
) -> Option<Result<Journal, StoreError>> {
    match job {
        Job::Extend(file) => {
            // On failure the committer, finding no room, extends the file itself and
            // reports what fails then.
            if let Err(err) = file.extend() {
                tracing::warn!(%err, "could not extend the journal ahead of its records");
            }
            None
        }
        Job::Create(number) => Some(folder.create_journal(number, sizes)),
        Job::Snapshot {
            state,
            seq,
            journal,
        } => {
            // Recovery replays every journal from the one the snapshot on disk names, so a
            // snapshot not written leaves more to replay, never less.
            match folder.write_snapshot(state, seq, journal) {
                Ok(bytes) => stats.snapshot_written(bytes),
                Err(err) => tracing::warn!(%err, "could not roll the journal into a snapshot"),
            }
            None
        }
    }
}
