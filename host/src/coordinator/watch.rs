//! [`Watch`]: the deadline of a native plugin's batch.
//!
//! Native code cannot be interrupted, so a native call that overruns its deadline is
//! abandoned instead: a watchdog task answers its client `timeout` and ends the batch, the
//! lane goes on with its next batch on a fresh instance, and the thread still in the call is
//! left to return whenever it does. Its answer is then discarded, and the host API refuses it
//! every operation meanwhile (the call is past its deadline), so a client told `timeout`
//! gets no late grant. The requests of the batch not yet started stay queued for the next
//! batch, in their order.
//!
//! The thread and the watchdog settle who answers under one lock: the call's end, or the
//! deadline, whichever takes it first. The watchdog sleeps until the due time of the call it
//! saw last and is woken early only when the batch ends, once per batch, not per request.

use super::message::Demand;
use crate::jobber::Request;
use crate::pools::BatchRunning;
use crate::server::peer::Peer;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What a native batch's thread and its watchdog share.
pub(crate) struct Watch {
    state: Mutex<Watched>,
    /// Told once, when the batch's thread ends it.
    ended: Notify,
}

struct Watched {
    /// The call under way.
    current: Option<Current>,
    /// Requests of the batch that asked to be retried, to report with the batch's end.
    retries: Vec<Demand>,
    /// Counts the batch as running for the committer until the batch ends.
    running: Option<BatchRunning>,
    /// The batch ended, by its thread or abandoned.
    over: bool,
}

/// A call under way: whose, and when it is due.
struct Current {
    peer: Arc<Peer>,
    request: Request,
    due: Instant,
}

/// A batch abandoned at its deadline: the request whose call overran and the retries to
/// report with the batch's end.
pub(crate) struct Overrun {
    pub(crate) peer: Arc<Peer>,
    pub(crate) request: Request,
    pub(crate) retries: Vec<Demand>,
}

impl Watch {
    pub(crate) fn new(running: BatchRunning) -> Self {
        Watch {
            state: Mutex::new(Watched {
                current: None,
                retries: Vec::new(),
                running: Some(running),
                over: false,
            }),
            ended: Notify::new(),
        }
    }

    /// The batch's thread starts calling for `demand`, due at `due`; the retries the batch
    /// collected so far move here, so that whoever ends the batch reports them.
    pub(crate) fn begin(&self, demand: &Demand, due: Instant, retries: &mut Vec<Demand>) {
        let mut state = self.lock();
        state.retries.append(retries);
        state.current = Some(Current {
            peer: Arc::clone(&demand.peer),
            request: demand.request.clone(),
            due,
        });
    }

    /// The call returned: true when its outcome is the thread's to answer, false when the
    /// batch was abandoned meanwhile (the thread must then stop).
    pub(crate) fn end_call(&self) -> bool {
        let mut state = self.lock();
        state.current = None;
        !state.over
    }

    /// The batch's thread ran out of requests: the retries to report with the batch's end,
    /// or `None` if the batch was abandoned and its end reported already.
    pub(crate) fn finish(&self, mut retries: Vec<Demand>) -> Option<Vec<Demand>> {
        let mut state = self.lock();
        if state.over {
            return None;
        }
        state.over = true;
        state.running = None;
        let mut all = std::mem::take(&mut state.retries);
        all.append(&mut retries);
        drop(state);
        self.ended.notify_one();
        Some(all)
    }

    /// Waits until the batch ends (`None`) or a call overruns its deadline: then abandons
    /// the batch and answers which request overran. `timeout` is the calls' deadline.
    pub(crate) async fn overrun(&self, timeout: Duration) -> Option<Overrun> {
        loop {
            let due = {
                let mut state = self.lock();
                if state.over {
                    return None;
                }
                let now = Instant::now();
                if let Some(current) = state.current.take_if(|current| current.due <= now) {
                    state.over = true;
                    state.running = None;
                    return Some(Overrun {
                        peer: current.peer,
                        request: current.request,
                        retries: std::mem::take(&mut state.retries),
                    });
                }
                // With no call under way, the next one is due no sooner than this.
                state
                    .current
                    .as_ref()
                    .map_or(now + timeout, |current| current.due)
            };
            tokio::select! {
                () = self.ended.notified() => return None,
                () = tokio::time::sleep_until(due.into()) => {}
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Watched> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pools::Pools;

    fn demand(client: u64) -> Demand {
        let request = Request {
            kind: "t".into(),
            query_index: client.into(),
            payload: None,
            client_id: client,
            attempt: 1,
        };
        Demand::new(request, Arc::new(Peer::new(client, Arc::default())))
    }

    fn watch() -> Arc<Watch> {
        Arc::new(Watch::new(Pools::in_memory().batch_running()))
    }

    #[tokio::test]
    async fn an_overrun_call_is_answered_by_the_watchdog_with_the_batch_retries() {
        let watch = watch();
        let mut retries = vec![demand(1)];
        let overrunning = demand(2);
        watch.begin(&overrunning, Instant::now(), &mut retries);
        let overrun = watch.overrun(Duration::from_secs(600)).await;
        let overrun = overrun.expect("the call is past its due time");
        assert_eq!(overrun.request.client_id, 2);
        assert_eq!(overrun.retries.len(), 1, "the retry moved to the watch");
        assert!(!watch.end_call(), "the late call's outcome is not answered");
        assert!(
            watch.finish(Vec::new()).is_none(),
            "the batch's end is reported once"
        );
    }

    #[tokio::test]
    async fn a_batch_that_ends_in_time_ends_its_watchdog() {
        let watch = watch();
        let watchdog = tokio::spawn({
            let watch = Arc::clone(&watch);
            async move { watch.overrun(Duration::from_secs(600)).await.is_none() }
        });
        let served = demand(1);
        watch.begin(
            &served,
            Instant::now() + Duration::from_secs(600),
            &mut vec![demand(2)],
        );
        assert!(
            watch.end_call(),
            "the call's outcome is the thread's to answer"
        );
        let retries = watch
            .finish(vec![demand(3)])
            .expect("the thread ends the batch");
        let clients: Vec<u64> = retries.iter().map(|d| d.request.client_id).collect();
        assert_eq!(clients, [2, 3]);
        assert!(
            watchdog.await.unwrap(),
            "the watchdog ended without an overrun"
        );
    }
}
