//! Runs one lane's batch off the coordinator: the requests one after another, each checked
//! for a still-open client first, each under the jobber deadline, panics and crashes caught.
//! Answers go straight to the clients; only the "batch done" (with any retries) goes back to
//! the coordinator, so a batch crosses to the coordinator once, not once per request.
//!
//! In-process jobbers and WASM plugins run as a tokio task (a WASM guest yields to the
//! runtime at every epoch tick); native plugins, whose calls block, run on a blocking
//! thread, one thread hop per batch. A WASM plugin that exports `serve-batch` serves a batch
//! of several requests in one call, taking them one at a time from a [`Serving`] feed.

use super::message::{Demand, Message};
use super::route::{call_native, call_wasm, lock, serve_wasm_batch, Jobber, Pending, PluginLane};
use super::watch::Watch;
use crate::jobber::{Handler, JobError, Request};
use crate::plugins::wasm::{Feed, Handout, WasmFactory, WasmInstance};
use crate::plugins::{CallOutcome, PluginRequest};
use crate::pools::context;
use crate::pools::durability::Durability;
use crate::pools::Pools;
use crate::server::peer::Answers;
use futures_util::FutureExt;
use resman_sdk::protocol::ErrorCode;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// The limits an executor applies to each call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) max_attempts: u32,
}

/// What executors share with the coordinator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) limits: Limits,
    /// Set at shutdown: requests of a batch not yet started are refused, not run.
    pub(crate) draining: AtomicBool,
    /// The host's resource pools, which plugin calls reach through [`context`].
    pub(crate) pools: Arc<Pools>,
}

/// How one call ended.
enum Outcome {
    Done(Value),
    /// A plugin's answer, JSON text not yet validated.
    DoneJson(String),
    Refused(JobError),
    /// A plugin's error answer with a code of its own.
    Rejected {
        code: String,
        message: String,
    },
    TimedOut,
    Crashed(String),
}

/// A batch of one lane.
pub(crate) struct Batch {
    pub(crate) kind: Arc<str>,
    pub(crate) jobber: Jobber,
    pub(crate) pending: Pending,
    pub(crate) generation: u64,
}

/// Starts the batch on the executor its jobber needs.
pub(crate) fn spawn(batch: Batch, shared: Arc<Shared>, done: UnboundedSender<Message>) {
    match batch.jobber.clone() {
        Jobber::InProcess(handler) => {
            tokio::spawn(async move {
                let _running = shared.pools.batch_running();
                let mut run = Run::new(&batch, &shared);
                while let Some(demand) = run.next() {
                    let timeout = run.shared.limits.timeout;
                    let outcome =
                        call_async(handler.as_ref(), demand.request.clone(), timeout).await;
                    run.settle(demand, outcome, 0);
                }
                run.report(batch, &done);
            });
        }
        Jobber::Plugin(lane) if lane.plugin.factory.wasm().is_some() => {
            // Boxed: this future holds a whole WASM call's state (about 2 KB), and tokio
            // moves a spawned future several times before its first poll. A box moves as a
            // pointer; unboxed, the copies were 7% of the host's instructions per request
            // when batches hold one request.
            tokio::spawn(Box::pin(run_wasm(batch, lane, shared, done)));
        }
        Jobber::Plugin(lane) => spawn_native(batch, lane, shared, done),
    }
}

/// Runs a WASM lane's batch: in `serve-batch` calls when the plugin exports it and more
/// than one request waits, otherwise (and for what those calls leave) one call per request.
async fn run_wasm(
    batch: Batch,
    lane: Arc<PluginLane>,
    shared: Arc<Shared>,
    done: UnboundedSender<Message>,
) {
    let _running = shared.pools.batch_running();
    let wasm = lane.plugin.factory.wasm().expect("a WASM lane");
    let mut run = Run::new(&batch, &shared);
    let mut call = context::Kept::new(Arc::clone(&shared.pools), Arc::clone(&lane.namespace));
    let mut instance = lane.take();
    if lock(&run.pending).len() > 1 && wasm.serves_batches() {
        let kind = lane.kind_index;
        run = serve_batches(wasm, &mut instance, &mut call, run, kind).await;
    }
    // One call per request: a batch of one, a plugin without `serve-batch`, or what its
    // `serve-batch` left.
    while let Some(demand) = run.next() {
        let due = Instant::now() + run.shared.limits.timeout;
        call.begin(demand.peer.id, due);
        let plugin_request = plugin_request(&demand.request, lane.kind_index);
        let called = call_wasm(wasm, &mut instance, &plugin_request, due);
        let outcome = outcome(context::within(&mut call, called).await);
        run.settle(demand, outcome, call.seq());
    }
    lane.keep(instance);
    run.report(batch, &done);
}

/// Runs a native lane's batch on a blocking thread, under a [`Watch`] whose watchdog task
/// answers a call that overruns its deadline and ends the batch without it.
fn spawn_native(
    batch: Batch,
    lane: Arc<PluginLane>,
    shared: Arc<Shared>,
    done: UnboundedSender<Message>,
) {
    let timeout = shared.limits.timeout;
    let watch = Arc::new(Watch::new(shared.pools.batch_running()));
    let watchdog = {
        let watch = Arc::clone(&watch);
        let lane = Arc::clone(&lane);
        let (kind, generation) = (batch.kind.clone(), batch.generation);
        let done = done.clone();
        async move {
            let Some(overrun) = watch.overrun(timeout).await else {
                return;
            };
            let request = &overrun.request;
            tracing::error!(
                r#type = %request.kind,
                plugin = %lane.plugin.path.display(),
                "a native plugin call overran its deadline; its thread is abandoned and may \
                 still be running"
            );
            let err = format!(
                "jobber did not answer within {timeout:?}; the native plugin's call was \
                 abandoned"
            );
            overrun.peer.reply_error(request, ErrorCode::Timeout, &err);
            let _ = done.send(Message::Done {
                kind,
                generation,
                retries: overrun.retries,
            });
        }
    };
    tokio::spawn(watchdog);
    tokio::task::spawn_blocking(move || {
        let mut run = Run::new(&batch, &shared);
        let call = context::enter(Arc::clone(&shared.pools), Arc::clone(&lane.namespace));
        let mut instance = lane.take_native();
        while let Some(demand) = run.next() {
            let due = Instant::now() + timeout;
            call.begin(demand.peer.id, due);
            watch.begin(&demand, due, &mut run.retries);
            let request = plugin_request(&demand.request, lane.kind_index);
            let called = call_native(&lane, &mut instance, &request, timeout);
            if !watch.end_call() {
                // Abandoned: the watchdog answered the client and ended the batch.
                return;
            }
            run.settle(demand, outcome(called), call.seq());
        }
        drop(call);
        lane.keep_native(instance);
        if let Some(retries) = watch.finish(std::mem::take(&mut run.retries)) {
            run.retries = retries;
            run.report(batch, &done);
        }
    });
}

/// The bookkeeping of one batch run, the same for every executor.
struct Run {
    pending: Pending,
    shared: Arc<Shared>,
    retries: Vec<Demand>,
}

impl Run {
    fn new(batch: &Batch, shared: &Arc<Shared>) -> Self {
        Run {
            pending: batch.pending.clone(),
            shared: Arc::clone(shared),
            retries: Vec::new(),
        }
    }

    /// The next request worth running: closed clients' requests are dropped, and at shutdown
    /// the rest are refused.
    fn next(&mut self) -> Option<Demand> {
        loop {
            let demand = lock(&self.pending).pop_front()?;
            if !demand.peer.is_open() {
                continue;
            }
            if self.shared.draining.load(Ordering::Relaxed) {
                super::refuse_shutting_down(&demand);
                continue;
            }
            return Some(demand);
        }
    }

    /// Acts on a call's outcome: a retry goes back to the lane; an answer goes to the client
    /// once the journal seq the call reached (`seq`, 0 for none) is durable.
    fn settle(&mut self, mut demand: Demand, outcome: Outcome, seq: u64) {
        if let Outcome::Refused(JobError::Retry(reason)) = &outcome {
            if demand.request.attempt < self.shared.limits.max_attempts {
                demand.request.attempt += 1;
                demand.last_error = Some(reason.clone());
                self.retries.push(demand);
                return;
            }
        }
        let timeout = self.shared.limits.timeout;
        let held = (seq != 0).then(|| (seq, self.shared.pools.durability()));
        if answer(&demand, outcome, timeout, held) {
            demand.answer_held();
        }
    }

    fn report(self, batch: Batch, done: &UnboundedSender<Message>) {
        // The coordinator outlives every executor until shutdown has drained them.
        let _ = done.send(Message::Done {
            kind: batch.kind,
            generation: batch.generation,
            retries: self.retries,
        });
    }
}

/// Serves the batch of `run` in `serve-batch` calls of the WASM lane's instance (`slot`),
/// for the type at position `kind`, until the batch is over. A call that traps ends the
/// request it had out and its instance; the next call, on a fresh instance, goes on with the
/// rest. A call that takes no request leaves the rest to one call per request.
async fn serve_batches(
    wasm: &WasmFactory,
    slot: &mut Option<WasmInstance>,
    call: &mut context::Kept,
    run: Run,
    kind: u32,
) -> Run {
    let mut serving = Serving {
        run,
        kind,
        out: None,
        handed_out: 0,
        over: false,
    };
    loop {
        serving.handed_out = 0;
        let idle_due = Instant::now() + serving.run.shared.limits.timeout;
        let served = serve_wasm_batch(wasm, slot, kind, serving, idle_due);
        let (back, ended) = context::within(call, served).await;
        serving = back;
        if let Some(demand) = serving.out.take() {
            let outcome = match ended {
                Ok(()) => Outcome::Crashed(
                    "the plugin's `serve-batch` returned without answering a request".into(),
                ),
                Err(failed) => outcome(failed),
            };
            serving.run.settle(demand, outcome, call.seq());
        }
        if serving.over || serving.handed_out == 0 {
            return serving.run;
        }
    }
}

/// A batch as a `serve-batch` call takes it, one request at a time.
struct Serving {
    run: Run,
    /// The lane's type's position in the plugin's types.
    kind: u32,
    /// The request handed out and not yet answered.
    out: Option<Demand>,
    /// How many requests the call under way has taken.
    handed_out: usize,
    /// Whether the batch is over: the feed answered that no request is left.
    over: bool,
}

impl Feed for Serving {
    fn next(&mut self, answer: Option<CallOutcome>) -> Result<Option<Handout>, String> {
        match (self.out.take(), answer) {
            (Some(demand), Some(answer)) => {
                let seq = context::with(|call| call.seq).unwrap_or(0);
                self.run.settle(demand, outcome(answer), seq);
            }
            (None, None) => {}
            (Some(demand), None) => {
                self.out = Some(demand);
                return Err("`batch.next-request` was called without the answer of the \
                            request it handed out before"
                    .into());
            }
            (None, Some(_)) => {
                return Err(
                    "`batch.next-request` was given an answer, but no request was out".into(),
                );
            }
        }
        let Some(demand) = self.run.next() else {
            self.over = true;
            return Ok(None);
        };
        let due = Instant::now() + self.run.shared.limits.timeout;
        context::with(|call| call.begin(demand.peer.id, due));
        let request = &demand.request;
        let handout = Handout {
            kind: self.kind,
            query_index: request.query_index.as_f64().unwrap_or(f64::NAN),
            client_id: request.client_id,
            attempt: request.attempt,
            payload: request.payload.clone(),
            due,
        };
        self.out = Some(demand);
        self.handed_out += 1;
        Ok(Some(handout))
    }
}

/// Answers the client how the call ended; with `held`, once that seq is durable. Returns
/// whether the answer was held.
fn answer(
    demand: &Demand,
    outcome: Outcome,
    timeout: Duration,
    held: Option<(u64, &Durability)>,
) -> bool {
    let request = &demand.request;
    let to = demand.peer.answers(held);
    match outcome {
        Outcome::Done(value) => to.reply(request, value),
        Outcome::DoneJson(json) => match to.reply_json(request, &json) {
            Ok(held) => held,
            Err(err) => fail(&to, demand, &format!("plugin answered invalid JSON: {err}")),
        },
        Outcome::Refused(verdict) => fail(&to, demand, verdict.reason()),
        Outcome::Rejected { code, message } => {
            if is_error_code(&code) {
                to.reply_error_code(request, &code, &message)
            } else {
                let err = format!(
                    "jobber rejected the request with a malformed code {code:?}: {message}"
                );
                fail(&to, demand, &err)
            }
        }
        Outcome::TimedOut => {
            let err = format!("jobber did not answer within {timeout:?}");
            to.reply_error(request, ErrorCode::Timeout, &err)
        }
        Outcome::Crashed(message) => {
            tracing::warn!(r#type = %request.kind, reason = %message, "jobber crashed");
            fail(&to, demand, &message)
        }
    }
}

/// A jobber's own error code: a lowercase word of at most 32 bytes.
fn is_error_code(code: &str) -> bool {
    (1..=32).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Answers `demand` with a jobber's failure; returns whether the answer was held.
fn fail(to: &Answers<'_>, demand: &Demand, reason: &str) -> bool {
    let attempts = demand.request.attempt;
    let err = if attempts > 1 {
        format!("{reason} (after {attempts} attempts)")
    } else {
        reason.to_owned()
    };
    to.reply_error(&demand.request, ErrorCode::JobberFailed, &err)
}

/// Calls an in-process jobber. A future that is ready at once (the common case for quick
/// jobbers) never touches the timer; only one that waits is put under the deadline.
async fn call_async(handler: &dyn Handler, request: Request, timeout: Duration) -> Outcome {
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(request)));
    let future = match started {
        Ok(future) => future,
        Err(panic) => return Outcome::Crashed(panic_message(panic)),
    };
    let mut future = AssertUnwindSafe(future).catch_unwind();
    let result = match futures_util::poll!(&mut future) {
        Poll::Ready(result) => result,
        Poll::Pending => match tokio::time::timeout(timeout, future).await {
            Ok(result) => result,
            Err(_) => return Outcome::TimedOut,
        },
    };
    match result {
        Ok(Ok(value)) => Outcome::Done(value),
        Ok(Err(JobError::Reject { code, message })) => Outcome::Rejected { code, message },
        Ok(Err(verdict)) => Outcome::Refused(verdict),
        Err(panic) => Outcome::Crashed(panic_message(panic)),
    }
}

/// `request` as a plugin receives it.
fn plugin_request(request: &Request, kind_index: u32) -> PluginRequest<'_> {
    PluginRequest {
        kind: &request.kind,
        kind_index: Some(kind_index),
        query_index: &request.query_index,
        client_id: request.client_id,
        attempt: request.attempt,
        payload: request.payload_text().unwrap_or("null"),
    }
}

/// How a plugin call ended, as the executor answers it.
fn outcome(called: CallOutcome) -> Outcome {
    match called {
        CallOutcome::Done(json) => Outcome::DoneJson(json),
        CallOutcome::Retry(reason) => Outcome::Refused(JobError::Retry(reason)),
        CallOutcome::Fail(reason) => Outcome::Refused(JobError::Fail(reason)),
        CallOutcome::Reject { code, message } => Outcome::Rejected { code, message },
        CallOutcome::Crashed(reason) => Outcome::Crashed(reason),
        CallOutcome::TimedOut => Outcome::TimedOut,
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "no message".to_owned()
    };
    format!("jobber panicked: {text}")
}
