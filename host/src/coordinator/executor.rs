//! Runs one lane's batch off the coordinator: the requests one after another, each checked
//! for a still-open client first, each under the jobber deadline, panics caught. Answers go
//! straight to the clients; only the "batch done" (with any retries) goes back to the
//! coordinator, so a batch crosses to the coordinator once, not once per request.

use super::message::{Demand, Message};
use crate::jobber::{Handler, JobError, Request};
use futures_util::FutureExt;
use resman_sdk::protocol::ErrorCode;
use serde_json::Value;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
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
}

/// How one call ended.
enum Outcome {
    Done(Value),
    Refused(JobError),
    TimedOut,
    Panicked(String),
}

/// The requests of a batch not yet started. Shared with the coordinator, which removes a
/// disconnected client's requests from it and refuses its requests at shutdown; the executor
/// takes one at a time. The lock is held only to pop or retain, never across a call.
pub(crate) type Pending = Arc<Mutex<VecDeque<Demand>>>;

/// A batch of one lane.
pub(crate) struct Batch {
    pub(crate) kind: Arc<str>,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) pending: Pending,
}

fn next(pending: &Pending) -> Option<Demand> {
    pending
        .lock()
        .expect("batch lock is never held across a panic")
        .pop_front()
}

pub(crate) async fn execute(batch: Batch, shared: Arc<Shared>, done: UnboundedSender<Message>) {
    let Batch {
        kind,
        handler,
        pending,
    } = batch;
    let limits = shared.limits;
    let mut retries = Vec::new();
    while let Some(mut demand) = next(&pending) {
        if !demand.peer.is_open() {
            continue;
        }
        if shared.draining.load(Ordering::Relaxed) {
            super::refuse_shutting_down(&demand);
            continue;
        }
        match call(handler.as_ref(), demand.request.clone(), limits.timeout).await {
            Outcome::Done(value) => demand.peer.reply(&demand.request, value),
            Outcome::Refused(JobError::Retry(reason))
                if demand.request.attempt < limits.max_attempts =>
            {
                demand.request.attempt += 1;
                demand.last_error = Some(reason);
                retries.push(demand);
            }
            Outcome::Refused(verdict) => fail(&demand, verdict.reason(), limits),
            Outcome::TimedOut => {
                let err = format!("jobber did not answer within {:?}", limits.timeout);
                demand
                    .peer
                    .reply_error(&demand.request, ErrorCode::Timeout, &err);
            }
            Outcome::Panicked(message) => {
                tracing::warn!(r#type = %kind, panic = %message, "jobber panicked");
                fail(&demand, &format!("jobber panicked: {message}"), limits);
            }
        }
    }
    // The coordinator outlives every executor until shutdown has drained them.
    let _ = done.send(Message::Done { kind, retries });
}

fn fail(demand: &Demand, reason: &str, limits: Limits) {
    let attempts = demand.request.attempt;
    let err = if attempts > 1 || limits.max_attempts == 1 {
        format!("{reason} (after {attempts} attempts)")
    } else {
        reason.to_owned()
    };
    demand
        .peer
        .reply_error(&demand.request, ErrorCode::JobberFailed, &err);
}

/// Calls the jobber. A future that is ready at once (the common case for quick jobbers) never
/// touches the timer; only one that waits is put under the deadline.
async fn call(handler: &dyn Handler, request: Request, timeout: Duration) -> Outcome {
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(request)));
    let future = match started {
        Ok(future) => future,
        Err(panic) => return Outcome::Panicked(panic_message(panic)),
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
        Ok(Err(verdict)) => Outcome::Refused(verdict),
        Err(panic) => Outcome::Panicked(panic_message(panic)),
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic without a message".to_owned()
    }
}
