//! [`Durability`]: holds answers back until what they depend on is on disk.
//!
//! A pool operation changes memory at once and gets a journal seq; the answer of the request
//! that made (or saw) it may leave only when the committer has synced that seq. Jobbers do not
//! wait for that: the executor writes the answer into its connection's outbox, held there with
//! its seq, and moves on to the next request; the connection is [`watch`]ed here, and the
//! committer's sync releases what it covered. That is what lets one fsync cover a whole batch
//! of grants (group commit) without slowing the lane down.
//!
//! Answers are encoded while the sync is under way, so what a sync's end sets off is only a
//! wake per connection, not the encoding of every answer it covered. The committer makes
//! those wakes itself, as soon as its sync returns. Handing them to a task of the server's
//! runtime instead (a wake from inside the runtime is a queue push, where one from another
//! thread may be a futex call) was measured against this: the hand-over first has to wake a
//! runtime worker, idle while the sync ran, which cancels what it saves. In paired runs at 50
//! connections with 1 and 16 requests in flight each, the two were within the noise of each
//! other (from 3% slower to 5% faster, by run), so the simpler one was kept.
//!
//! [`watch`]: Durability::watch

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Something holding answers back until a seq is durable: a connection's outbox.
pub(crate) trait Waiter: Send + Sync {
    /// Everything up to `durable` is on disk: release what that covers. Returns the seq the
    /// waiter still waits for, if it holds anything more.
    fn reached(&self, durable: u64) -> Option<u64>;

    /// The store failed: every held answer becomes an error saying `reason`.
    fn failed(&self, reason: &str);
}

/// The durable seq and who waits for it.
#[derive(Default)]
pub(crate) struct Durability {
    /// The durable seq, readable without the lock; only written under it.
    durable: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failed: Option<String>,
    waiting: Vec<(u64, Arc<dyn Waiter>)>,
}

/// How a [`Durability::register`] went.
enum Registered {
    Waiting,
    Durable(u64),
    Failed(String),
}

impl Durability {
    /// The highest seq known durable. Lock-free: an answer whose seq is at most this needs no
    /// holding at all.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Has `waiter` told when `seq` is durable (or the store failed): at once, on this
    /// thread, if it already is. A waiter is watched once at a time: it is watched again for
    /// what it still holds when it answers [`Waiter::reached`].
    pub(crate) fn watch(&self, mut seq: u64, waiter: Arc<dyn Waiter>) {
        loop {
            match self.register(seq, &waiter) {
                Registered::Waiting => return,
                Registered::Failed(reason) => return waiter.failed(&reason),
                Registered::Durable(durable) => match waiter.reached(durable) {
                    Some(next) => seq = next,
                    None => return,
                },
            }
        }
    }

    /// Whether `seq` is durable.
    #[cfg(test)]
    pub(crate) fn is_durable(&self, seq: u64) -> bool {
        seq <= self.durable()
    }

    /// Everything up to `seq` is on disk: releases the waiters that waited for it.
    pub(crate) fn publish(&self, seq: u64) {
        let (due, durable) = {
            let mut state = self.lock();
            let durable = self.durable.load(Ordering::Relaxed).max(seq);
            self.durable.store(durable, Ordering::Release);
            let due = state.waiting.extract_if(.., |(at, _)| *at <= durable);
            (due.map(|(_, waiter)| waiter).collect::<Vec<_>>(), durable)
        };
        for waiter in due {
            if let Some(next) = waiter.reached(durable) {
                self.watch(next, waiter);
            }
        }
    }

    /// The store failed: every waiting and later held answer gets `reason` instead.
    pub(crate) fn fail(&self, reason: String) {
        let waiting = {
            let mut state = self.lock();
            state.failed = Some(reason.clone());
            std::mem::take(&mut state.waiting)
        };
        for (_, waiter) in waiting {
            waiter.failed(&reason);
        }
    }

    fn register(&self, seq: u64, waiter: &Arc<dyn Waiter>) -> Registered {
        let mut state = self.lock();
        if let Some(reason) = &state.failed {
            return Registered::Failed(reason.clone());
        }
        let durable = self.durable.load(Ordering::Relaxed);
        if seq <= durable {
            return Registered::Durable(durable);
        }
        state.waiting.push((seq, Arc::clone(waiter)));
        Registered::Waiting
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter holding answers named by their seq, in order.
    #[derive(Default)]
    struct Answers {
        held: Mutex<Vec<u64>>,
        seen: Mutex<Vec<String>>,
    }

    impl Answers {
        /// Holds an answer needing `seq`, watched as a connection's outbox would be.
        fn hold(self: &Arc<Self>, durability: &Durability, seq: u64) {
            let first = {
                let mut held = self.held.lock().unwrap();
                held.push(seq);
                held.len() == 1
            };
            if first {
                durability.watch(seq, self.clone());
            }
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl Waiter for Answers {
        fn reached(&self, durable: u64) -> Option<u64> {
            let mut held = self.held.lock().unwrap();
            let due = held.iter().take_while(|seq| **seq <= durable).count();
            let mut seen = self.seen.lock().unwrap();
            seen.extend(held.drain(..due).map(|seq| seq.to_string()));
            held.first().copied()
        }

        fn failed(&self, reason: &str) {
            let mut held = self.held.lock().unwrap();
            let mut seen = self.seen.lock().unwrap();
            seen.extend(held.drain(..).map(|seq| format!("{seq}: {reason}")));
        }
    }

    #[test]
    fn answers_wait_for_their_seq_and_not_longer() {
        let durability = Durability::default();
        let answers = Arc::new(Answers::default());
        answers.hold(&durability, 2);
        answers.hold(&durability, 5);
        durability.publish(3);
        assert_eq!(answers.seen(), ["2"]);
        assert!(durability.is_durable(3) && !durability.is_durable(4));
        durability.publish(5);
        assert_eq!(answers.seen(), ["2", "5"]);
        answers.hold(&durability, 4);
        assert_eq!(
            answers.seen(),
            ["2", "5", "4"],
            "already durable: released at once"
        );
    }

    #[test]
    fn a_failed_store_fails_every_waiting_and_later_answer() {
        let durability = Durability::default();
        let answers = Arc::new(Answers::default());
        answers.hold(&durability, 1);
        durability.fail("disk full".into());
        answers.hold(&durability, 2);
        assert_eq!(answers.seen(), ["1: disk full", "2: disk full"]);
    }
}
