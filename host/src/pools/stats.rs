//! [`CommitStats`]: what the committer has done since start, for operators (`srvQueuePrint`)
//! and for tuning the gather: how many syncs, how many records each carried, how long the
//! write and `fdatasync` took, and the snapshots the journal was rolled into. Relaxed atomics,
//! each written by one thread (the committer, or the journal keeper for snapshots).

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Counters of the journal's commits.
#[derive(Debug, Default)]
pub(crate) struct CommitStats {
    commits: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    sync_micros: AtomicU64,
    max_sync_micros: AtomicU64,
    last_sync_micros: AtomicU64,
    held_micros: AtomicU64,
    held_to_cap: AtomicU64,
    waiting_for_room: AtomicBool,
    snapshots: AtomicU64,
    snapshot_bytes: AtomicU64,
    last_copy_micros: AtomicU64,
    max_copy_micros: AtomicU64,
}

/// A reading of [`CommitStats`], as `srvQueuePrint` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommitReport {
    /// Commits (one write and one `fdatasync` each) since the host started.
    pub(crate) commits: u64,
    /// Records they made durable.
    pub(crate) records: u64,
    /// Bytes of the records they wrote (each commit also writes a small marker frame).
    pub(crate) bytes: u64,
    /// Mean, longest and latest time of a commit's write and `fdatasync`, in microseconds.
    pub(crate) mean_sync_micros: u64,
    pub(crate) max_sync_micros: u64,
    pub(crate) last_sync_micros: u64,
    /// The mean time a commit was held back before its write, for running batches and for
    /// more records (see `gather`), in microseconds; and how many commits were held for the
    /// whole gather cap because the batches it waited for kept running. Beside the sync
    /// times, where the committer's time goes: under a steady load, a cycle of hold, sync and
    /// wait for records.
    pub(crate) mean_held_micros: u64,
    pub(crate) held_to_cap: u64,
    /// The disk had no room for the latest commit: it is being tried again, and the
    /// answers it carries are held until it succeeds.
    pub(crate) waiting_for_room: bool,
    /// Snapshots written since the host started, the one written at start included.
    pub(crate) snapshots: u64,
    /// The size of the latest snapshot. The journal is rolled into the next one once it holds
    /// the roll size (`--journal-roll-bytes`) and at least twice this much.
    pub(crate) snapshot_bytes: u64,
    /// The longest and latest time a roll held operations up while it copied the state for
    /// its snapshot, in microseconds (0 before the first roll).
    pub(crate) max_snapshot_copy_micros: u64,
    pub(crate) last_snapshot_copy_micros: u64,
}

impl CommitStats {
    /// Counts one commit of `records` records in `bytes` bytes that took `took`.
    pub(crate) fn commit(&self, records: usize, bytes: usize, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let micros = timed(&self.max_sync_micros, &self.last_sync_micros, took);
        self.sync_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a commit held back for `took` before its write, `to_cap` when it was held for
    /// the whole gather cap.
    pub(crate) fn held(&self, took: Duration, to_cap: bool) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.held_micros.fetch_add(micros, Ordering::Relaxed);
        self.held_to_cap
            .fetch_add(u64::from(to_cap), Ordering::Relaxed);
    }

    /// Sets whether the committer waits for room on the disk; returns what it was.
    pub(crate) fn waiting_for_room(&self, waiting: bool) -> bool {
        self.waiting_for_room.swap(waiting, Ordering::Relaxed)
    }

    /// Counts a snapshot of `bytes` bytes written.
    pub(crate) fn snapshot_written(&self, bytes: u64) {
        self.snapshots.fetch_add(1, Ordering::Relaxed);
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Counts a roll's copy of the state, which took `took` under the pools lock.
    pub(crate) fn snapshot_copied(&self, took: Duration) {
        timed(&self.max_copy_micros, &self.last_copy_micros, took);
    }

    /// The size of the latest snapshot written (0 before the first).
    pub(crate) fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn report(&self) -> CommitReport {
        let commits = self.commits.load(Ordering::Relaxed);
        CommitReport {
            commits,
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            mean_sync_micros: self.sync_micros.load(Ordering::Relaxed) / commits.max(1),
            max_sync_micros: self.max_sync_micros.load(Ordering::Relaxed),
            last_sync_micros: self.last_sync_micros.load(Ordering::Relaxed),
            mean_held_micros: self.held_micros.load(Ordering::Relaxed) / commits.max(1),
            held_to_cap: self.held_to_cap.load(Ordering::Relaxed),
            waiting_for_room: self.waiting_for_room.load(Ordering::Relaxed),
            snapshots: self.snapshots.load(Ordering::Relaxed),
            snapshot_bytes: self.snapshot_bytes(),
            max_snapshot_copy_micros: self.max_copy_micros.load(Ordering::Relaxed),
            last_snapshot_copy_micros: self.last_copy_micros.load(Ordering::Relaxed),
        }
    }
}

/// Keeps `took` as the latest time and, if longer, the longest, in microseconds; returns it.
fn timed(longest: &AtomicU64, latest: &AtomicU64, took: Duration) -> u64 {
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    longest.fetch_max(micros, Ordering::Relaxed);
    latest.store(micros, Ordering::Relaxed);
    micros
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_sums_counts_and_keeps_the_longest_and_latest_times() {
        let stats = CommitStats::default();
        assert_eq!(stats.report().mean_sync_micros, 0);
        stats.commit(3, 300, Duration::from_micros(100));
        stats.commit(1, 50, Duration::from_micros(40));
        let report = stats.report();
        assert_eq!((report.commits, report.records, report.bytes), (2, 4, 350));
        assert_eq!(report.mean_sync_micros, 70);
        assert_eq!(report.max_sync_micros, 100);
        assert_eq!(report.last_sync_micros, 40);
        assert_eq!((report.mean_held_micros, report.held_to_cap), (0, 0));
        stats.held(Duration::from_micros(1_000), true);
        stats.held(Duration::from_micros(200), false);
        let report = stats.report();
        assert_eq!((report.mean_held_micros, report.held_to_cap), (600, 1));
        assert!(!report.waiting_for_room);
        assert_eq!((report.snapshots, report.snapshot_bytes), (0, 0));
        stats.snapshot_written(4_000);
        stats.snapshot_written(1_500);
        let report = stats.report();
        assert_eq!((report.snapshots, report.snapshot_bytes), (2, 1_500));
        stats.snapshot_copied(Duration::from_micros(900));
        stats.snapshot_copied(Duration::from_micros(300));
        let report = stats.report();
        assert_eq!(
            (
                report.max_snapshot_copy_micros,
                report.last_snapshot_copy_micros
            ),
            (900, 300)
        );
    }

    #[test]
    fn waiting_for_room_is_reported_and_says_what_it_was() {
        let stats = CommitStats::default();
        assert!(!stats.waiting_for_room(true), "not waiting at first");
        assert!(
            stats.waiting_for_room(true),
            "the second no-room commit finds it set"
        );
        assert!(stats.report().waiting_for_room);
        assert!(stats.waiting_for_room(false));
        assert!(!stats.report().waiting_for_room);
    }
}
