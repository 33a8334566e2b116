//! When the committer syncs: at once when no batch is running, otherwise once the batches
//! that were running when it looked have finished or [`GATHER_CAP`] has passed, whichever
//! comes first; and then, when the records it would sync are few while records are arriving
//! fast, a little later still (see [`Pace`]).
//!
//! Committing as soon as there is anything to commit keeps latency lowest when the host is
//! idle between requests, but under load it syncs a few dozen records at a time, thousands of
//! times a second, and the syscalls, disk kicks and thread wakes of each sync take CPU the
//! lanes need. While a batch runs, its records will follow within moments, and the answers a
//! commit releases would only queue behind it, so the committer waits for it, up to the cap.
//! A lane blocked in a waiting acquire counts as running, so the cap bounds what it costs.
//!
//! The committer waits only for the batches already running when it began to wait: one that
//! starts meanwhile serves requests that arrived after the commit was due, and goes into the
//! next commit. Waiting for those too, under a steady load, would gather every request the
//! clients have in flight into one commit (each batch ending while the next has started), so
//! that during its sync the lanes would have nothing left to serve and the machine would idle
//! until the answers came back as new requests. Measured against waiting for every running
//! batch, at 50 connections with 16 requests in flight each, a million requests a run, in 20
//! pairs of runs: commits were held a third less long, and held the whole cap a seventh as
//! often; there were 38% more of them, yet the host used 4% less CPU per request and served
//! 7% more requests a second (median 4%; 16 pairs of 20 won), with a 99th percentile latency
//! 7% lower. With one request in flight each (8 pairs) the two were alike.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The longest the committer holds back a sync for running batches. Measured at 50
/// connections with 16 requests in flight each, in runs of a million requests, 1 ms served
/// 2–5% more requests a second than 0.5 ms, with about 5% less CPU per request (fewer syncs,
/// each carrying more), and 2 ms fewer (answers waiting too long); in runs of 200,000 the two
/// were within the noise. With one request in flight per connection, batches end within
/// microseconds and the cap does not come into play.
pub(crate) const GATHER_CAP: Duration = Duration::from_millis(1);

/// A sync of fewer records than this is worth holding back for more while they arrive fast.
pub(crate) const LINGER_TARGET: usize = 32;

/// The longest the committer lingers for more records.
pub(crate) const LINGER_CAP: Duration = Duration::from_micros(100);

/// The committer lingers only when records have lately arrived fast enough to bring at least
/// this many more within [`LINGER_CAP`].
const LINGER_WORTH: f64 = 4.0;

/// How far back the arrival rate looks: a take this long after the previous one replaces the
/// rate with its own, a closer one moves the rate towards its own in proportion.
const RATE_MEMORY: Duration = Duration::from_millis(1);

/// The running batches, as the committer's gathering sees them.
///
/// Batches are counted by the round of gathering they started in: each
/// [`wait`](Self::wait) begins a round, and waits for the count of the one before. Two
/// counts are enough, by the parity of the round: a batch still running rounds later (a lane
/// blocked in a waiting acquire, say) is waited for again every other round, which the cap
/// bounds, as it bounded every wait for it before.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    running: [AtomicUsize; 2],
    /// The round new batches count in.
    round: AtomicUsize,
    /// The committer thread, unparked when the last batch it waits for finishes.
    committer: OnceLock<Thread>,
}

/// Which of [`Gather`]'s counts a running batch is in, for its
/// [`batch_ended`](Gather::batch_ended).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started(usize);

impl Gather {
    /// A batch started; [`batch_ended`](Self::batch_ended) must follow exactly once, with
    /// what this returns (the pools' `BatchRunning` guard pairs them).
    pub(crate) fn batch_started(&self) -> Started {
        let count = self.round.load(Ordering::Acquire) & 1;
        self.running[count].fetch_add(1, Ordering::AcqRel);
        Started(count)
    }

    /// A batch ended: wakes the committer if it was the last of those it waits for.
    pub(crate) fn batch_ended(&self, started: Started) {
        let last = self.running[started.0].fetch_sub(1, Ordering::AcqRel) == 1;
        // Only the previous round's count is waited for; a wake while the committer does not
        // wait is harmless, since it parks until its condition holds.
        let awaited = started.0 != self.round.load(Ordering::Acquire) & 1;
        if last && awaited {
            if let Some(committer) = self.committer.get() {
                committer.unpark();
            }
        }
    }

    /// Registers the calling thread as the committer.
    pub(crate) fn register_committer(&self) {
        let _ = self.committer.set(std::thread::current());
    }

    /// Waits, on the committer thread, until the batches running now have finished or `cap`
    /// has passed; returns whether some were still running at the cap. Batches that start
    /// meanwhile are not waited for.
    pub(crate) fn wait(&self, cap: Duration) -> bool {
        let count = self.round.fetch_add(1, Ordering::AcqRel) & 1;
        !park_until(Instant::now() + cap, || {
            self.running[count].load(Ordering::Acquire) == 0
        })
    }
}

/// Parks the committer thread until `done` holds or `until` has passed. `done` is asked at
/// once and again at every wake: the committer is unparked when the last running batch ends
/// (see [`Gather::batch_ended`]), which is also when records come. Returns whether `done`
/// held.
pub(crate) fn park_until(until: Instant, mut done: impl FnMut() -> bool) -> bool {
    while !done() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::park_timeout(left);
    }
    true
}

/// How fast records arrive, as the committer sees it at each take, and whether a few records
/// should wait for more.
///
/// Under a load of many clients each waiting for its answer before it sends again (50
/// connections with one request in flight each, say), a sync releases a dozen answers, their
/// clients' next requests arrive during the next sync, and syncs follow each other with a dozen
/// records each. Every sync costs the same CPU whatever it carries (its `fdatasync` kicks the
/// disk and wakes threads): measured here, 14% of the host's CPU at 15 records a sync. Holding a
/// small sync back for up to [`LINGER_CAP`] while records keep arriving doubles what it
/// carries; measured at (50,1), the host used less CPU per request and served more requests,
/// with lower latency too, since the CPU saved served the clients sooner. A host serving a
/// few clients, whose records arrive too slowly for the linger to gather any, never lingers:
/// their requests keep the latency of one sync.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// Records per microsecond, smoothed over about [`RATE_MEMORY`].
    rate: f64,
    /// When the committer last took the unwritten records.
    last_take: Option<Instant>,
}

impl Pace {
    /// How long to linger for more records when `unwritten` are ready to sync: none when they
    /// are enough, or when records arrive too slowly to be worth waiting for.
    pub(crate) fn linger(&self, unwritten: usize) -> Option<Duration> {
        let expected = self.rate * LINGER_CAP.as_secs_f64() * 1e6;
        (unwritten < LINGER_TARGET && expected >= LINGER_WORTH).then_some(LINGER_CAP)
    }

    /// The committer took `count` records to sync at `now`: they arrived since the last take.
    pub(crate) fn taken(&mut self, count: usize, now: Instant) {
        if let Some(last) = self.last_take {
            let span = now.saturating_duration_since(last).as_secs_f64();
            if span > 0.0 {
                let sample = count as f64 / (span * 1e6);
                let weight = (span / RATE_MEMORY.as_secs_f64()).min(1.0);
                self.rate += (sample - self.rate) * weight;
            }
        }
        self.last_take = Some(now);
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
        assert!(!gather.wait(Duration::from_secs(30)), "not held to the cap");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn the_committer_waits_for_the_batches_running_when_it_began_not_for_later_ones() {
        let gather = Arc::new(Gather::default());
        let first = gather.batch_started();
        let cap = Duration::from_secs(60);
        let committer = {
            let gather = Arc::clone(&gather);
            std::thread::spawn(move || {
                gather.register_committer();
                gather.wait(cap)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while gather.round.load(Ordering::Acquire) == 0 {
            assert!(
                Instant::now() < deadline,
                "the committer never began to wait"
            );
            std::thread::yield_now();
        }
        let later = gather.batch_started();
        assert!(
            !committer.is_finished(),
            "a batch running when the wait began is waited for"
        );
        gather.batch_ended(first);
        let to_cap = committer.join().unwrap();
        assert!(
            !to_cap,
            "woken when the first batch ended, not held to the cap by the later one"
        );
        gather.batch_ended(later);
        assert!(gather
            .running
            .iter()
            .all(|n| n.load(Ordering::Acquire) == 0));
    }

    #[test]
    fn a_batch_of_an_earlier_round_still_running_is_waited_for_to_the_cap() {
        let gather = Gather::default();
        let long = gather.batch_started();
        assert!(
            gather.wait(Duration::ZERO),
            "held to the cap by the running batch"
        );
        assert!(!gather.wait(Duration::ZERO), "the next round has no batch");
        assert!(
            gather.wait(Duration::ZERO),
            "two rounds on, the batch shares its count again"
        );
        gather.batch_ended(long);
        assert!(!gather.wait(Duration::from_secs(30)));
    }

    /// Takes of `count` records, `every` apart, starting at `start`; returns the last one's
    /// instant.
    fn takes(pace: &mut Pace, start: Instant, every: Duration, count: usize, n: u32) -> Instant {
        let mut at = start;
        for _ in 0..n {
            at += every;
            pace.taken(count, at);
        }
        at
    }

    #[test]
    fn records_arriving_fast_make_a_small_sync_linger_and_a_large_one_go_at_once() {
        let mut pace = Pace::default();
        // 15 records every 250 µs: 6 expected within the cap.
        takes(
            &mut pace,
            Instant::now(),
            Duration::from_micros(250),
            15,
            20,
        );
        assert_eq!(pace.linger(15), Some(LINGER_CAP));
        assert_eq!(pace.linger(LINGER_TARGET - 1), Some(LINGER_CAP));
        assert_eq!(pace.linger(LINGER_TARGET), None);
        assert_eq!(pace.linger(300), None);
    }

    #[test]
    fn records_arriving_slowly_never_linger() {
        let mut pace = Pace::default();
        assert_eq!(
            pace.linger(1),
            None,
            "nothing is known before the first take"
        );
        // One client: one record every 250 µs, under half a record within the cap.
        takes(&mut pace, Instant::now(), Duration::from_micros(250), 1, 40);
        assert_eq!(pace.linger(1), None);
    }

    #[test]
    fn a_pause_forgets_a_fast_rate_at_once() {
        let mut pace = Pace::default();
        let fast = takes(
            &mut pace,
            Instant::now(),
            Duration::from_micros(250),
            15,
            20,
        );
        assert!(pace.linger(1).is_some());
        // The first record after a pause of a second syncs at once.
        pace.taken(1, fast + Duration::from_secs(1));
        assert_eq!(pace.linger(1), None);
    }
}
