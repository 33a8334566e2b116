//! When the committer syncs: at once when no batch is running, otherwise once the running
//! batches have finished or [`GATHER_CAP`] has passed, whichever comes first.
//!
//! Committing as soon as there is anything to commit keeps latency lowest when the host is
//! idle between requests, but under load it syncs a few dozen records at a time, thousands of
//! times a second, and the syscalls, disk kicks and thread wakes of each sync take CPU the
//! lanes need. While a batch runs, its records will follow within moments, and the answers a
//! commit releases would only queue behind it, so the committer waits for it, up to the cap.
//! A lane blocked in a waiting acquire counts as running, so the cap bounds what it costs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The longest the committer holds back a sync for running batches.
pub(crate) const GATHER_CAP: Duration = Duration::from_micros(500);

/// The running batches, as the committer's gathering sees them.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    running: AtomicUsize,
    /// The committer thread, unparked when the last running batch finishes.
    committer: OnceLock<Thread>,
}

impl Gather {
    /// A batch started; [`batch_ended`](Self::batch_ended) must follow exactly once (the
    /// pools' `BatchRunning` guard pairs them).
    pub(crate) fn batch_started(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    /// A batch ended: wakes the committer if it was the last running.
    pub(crate) fn batch_ended(&self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(committer) = self.committer.get() {
                committer.unpark();
            }
        }
    }

    /// Registers the calling thread as the committer.
    pub(crate) fn register_committer(&self) {
        let _ = self.committer.set(std::thread::current());
    }

    /// Waits, on the committer thread, until no batch is running or `cap` has passed.
    pub(crate) fn wait(&self, cap: Duration) {
        let until = Instant::now() + cap;
        while self.running.load(Ordering::Acquire) > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::park_timeout(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn with_no_batch_running_the_committer_does_not_wait() {
        let gather = Gather::default();
        let started = Instant::now();
        gather.wait(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn the_committer_waits_for_the_last_running_batch() {
        let gather = Arc::new(Gather::default());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();
        let batch = {
            let gather = Arc::clone(&gather);
            std::thread::spawn(move || {
                gather.batch_started();
                started_tx.send(()).unwrap();
                finish_rx.recv().unwrap();
                gather.batch_ended();
            })
        };
        started_rx.recv().unwrap();
        let cap = Duration::from_secs(60);
        let waiter = {
            let gather = Arc::clone(&gather);
            std::thread::spawn(move || {
                gather.register_committer();
                let started = Instant::now();
                gather.wait(cap);
                started.elapsed()
            })
        };
        finish_tx.send(()).unwrap();
        batch.join().unwrap();
        let waited = waiter.join().unwrap();
        assert!(
            waited < cap,
            "woken when the batch finished, not at the cap"
        );
        assert_eq!(gather.running.load(Ordering::Acquire), 0);
    }
}
