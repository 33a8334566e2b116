//! [`Durability`]: holds answers back until what they depend on is on disk.
//!
//! A pool operation changes memory at once and gets a journal seq; the answer of the request
//! that made (or saw) it may leave only when the committer has synced that seq. Jobbers do not
//! wait for that: the executor hands the answer here with its seq and moves on to the next
//! request, and the committer releases every answer its sync covered. That is what lets one
//! fsync cover a whole batch of grants (group commit) without slowing the lane down.
//!
//! Released answers run on a task of the server's runtime when one is [`deliver`]ing, not on
//! the committer thread: an answer wakes its connection's writer, and a wake from inside the
//! runtime is a queue push where one from a foreign thread is a futex call per connection.
//!
//! [`deliver`]: Durability::deliver

use std::sync::{Mutex, OnceLock};
use tokio::sync::{mpsc, oneshot};

/// An answer waiting for its seq to be durable; called with `Err` (a reason) if the store
/// failed instead.
pub(crate) type Held = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The durable seq and the answers waiting for it.
#[derive(Default)]
pub(crate) struct Durability {
    gate: Mutex<Gate>,
    /// The task that runs released answers, once the server started it.
    courier: OnceLock<mpsc::UnboundedSender<Parcel>>,
}

/// What the courier task is handed.
enum Parcel {
    /// Answers to run, with how their store ended.
    Answers(Vec<Held>, Result<(), String>),
    /// Acknowledged once every parcel sent before it ran.
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Gate {
    durable: u64,
    failed: Option<String>,
    held: Vec<(u64, Held)>,
}

impl Durability {
    /// Runs `answer` once `seq` is durable: now, if it already is.
    pub(crate) fn after(&self, seq: u64, answer: Held) {
        let mut gate = self.lock();
        if let Some(reason) = &gate.failed {
            let reason = reason.clone();
            drop(gate);
            answer(Err(reason));
        } else if seq <= gate.durable {
            drop(gate);
            answer(Ok(()));
        } else {
            gate.held.push((seq, answer));
        }
    }

    /// Whether `seq` is durable.
    #[cfg(test)]
    pub(crate) fn is_durable(&self, seq: u64) -> bool {
        seq <= self.lock().durable
    }

    /// Everything up to `seq` is on disk: releases the answers that waited for it.
    pub(crate) fn publish(&self, seq: u64) {
        let due: Vec<Held> = {
            let mut gate = self.lock();
            gate.durable = gate.durable.max(seq);
            let durable = gate.durable;
            let due = gate.held.extract_if(.., |(at, _)| *at <= durable);
            due.map(|(_, answer)| answer).collect()
        };
        self.release(due, Ok(()));
    }

    /// The store failed: every waiting and later answer gets `reason` instead.
    pub(crate) fn fail(&self, reason: String) {
        let held = {
            let mut gate = self.lock();
            gate.failed = Some(reason.clone());
            std::mem::take(&mut gate.held)
        };
        let held = held.into_iter().map(|(_, answer)| answer).collect();
        self.release(held, Err(reason));
    }

    /// From now on, released answers run on a task spawned on the current tokio runtime.
    /// Call [`flushed`](Self::flushed) before telling connections to finish.
    pub(crate) fn deliver(&self) {
        let (parcels, mut inbox) = mpsc::unbounded_channel();
        if self.courier.set(parcels).is_err() {
            return;
        }
        tokio::spawn(async move {
            while let Some(parcel) = inbox.recv().await {
                match parcel {
                    Parcel::Answers(answers, stored) => run(answers, &stored),
                    Parcel::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
    }

    /// Waits until every answer released so far has run.
    pub(crate) async fn flushed(&self) {
        let Some(courier) = self.courier.get() else {
            return;
        };
        let (done, ran) = oneshot::channel();
        if courier.send(Parcel::Flush(done)).is_ok() {
            let _ = ran.await;
        }
    }

    fn release(&self, answers: Vec<Held>, stored: Result<(), String>) {
        if answers.is_empty() {
            return;
        }
        let Some(courier) = self.courier.get() else {
            return run(answers, &stored);
        };
        if let Err(mpsc::error::SendError(Parcel::Answers(answers, stored))) =
            courier.send(Parcel::Answers(answers, stored))
        {
            // The runtime is gone: answer here rather than never.
            run(answers, &stored);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn run(answers: Vec<Held>, stored: &Result<(), String>) {
    for answer in answers {
        answer(stored.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (Arc<Mutex<Vec<String>>>, impl Fn(&'static str) -> Held) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let make = {
            let seen = seen.clone();
            move |name: &'static str| -> Held {
                let seen = seen.clone();
                Box::new(move |result| {
                    let line = match result {
                        Ok(()) => name.to_owned(),
                        Err(reason) => format!("{name}: {reason}"),
                    };
                    seen.lock().unwrap().push(line);
                })
            }
        };
        (seen, make)
    }

    #[test]
    fn answers_wait_for_their_seq_and_not_longer() {
        let durability = Durability::default();
        let (seen, answer) = recorder();
        durability.after(0, answer("nothing to wait for"));
        durability.after(2, answer("two"));
        durability.after(5, answer("five"));
        durability.publish(3);
        assert_eq!(*seen.lock().unwrap(), ["nothing to wait for", "two"]);
        assert!(durability.is_durable(3) && !durability.is_durable(4));
        durability.publish(5);
        durability.after(4, answer("already durable"));
        assert_eq!(seen.lock().unwrap()[2..], ["five", "already durable"]);
    }

    #[test]
    fn a_failed_store_fails_every_waiting_and_later_answer() {
        let durability = Durability::default();
        let (seen, answer) = recorder();
        durability.after(1, answer("a"));
        durability.fail("disk full".into());
        durability.after(2, answer("b"));
        assert_eq!(*seen.lock().unwrap(), ["a: disk full", "b: disk full"]);
    }
}
