//! The guest side of the WIT world `jobber-batched` (`sdk/wit/resman.wit`): adapts a
//! [`Jobber`] to the generated `Guest` trait, so `export_jobber!` only has to name the type.
//! The native counterpart is `native/guest.rs`.
//!
//! A component instance is one jobber instance: the host keeps it for one lane and calls it
//! one request after another (a batch of them in one `serve-batch` call), so the jobber lives in the instance's memory (a thread-local
//! the macro declares, made on first use) and keeps its state between calls. A panic is a
//! trap here; the host throws the instance away and the next call starts from
//! `Default::default()` in a fresh one.

use crate::bindings;
use crate::jobber::{JobError, Jobber, Request};
use std::cell::RefCell;

/// The `handles` export: `T::TYPES`.
pub fn handles<T: Jobber>() -> Vec<String> {
    T::TYPES.iter().map(|kind| (*kind).to_owned()).collect()
}

/// The `handle` export: serves `request` on the jobber in `slot`, making it first if needed.
///
/// # Errors
///
/// The jobber's [`JobError`], as the WIT `job-error`.
pub fn handle<T: Jobber>(
    slot: &RefCell<Option<T>>,
    request: bindings::Request,
) -> Result<String, bindings::JobError> {
    let mut slot = slot.borrow_mut();
    let jobber = slot.get_or_insert_with(T::default);
    let Some(request) = owned_request::<T>(request) else {
        return Err(bindings::JobError::Fail(
            crate::jobber::UNDECLARED_TYPE.into(),
        ));
    };
    match crate::jobber::serve(jobber, request) {
        Ok(json) => Ok(json),
        Err(JobError::Retry(reason)) => Err(bindings::JobError::Retry(reason)),
        Err(JobError::Fail(reason)) => Err(bindings::JobError::Fail(reason)),
        Err(JobError::Reject { code, message }) => Err(bindings::JobError::Reject(
            bindings::resman::jobber::types::Rejection { code, message },
        )),
    }
}

/// The `serve-batch` export: serves the requests `batch.next-request` hands out, one after
/// another, on the jobber in `slot`, giving each answer back with the next call.
pub fn serve_batch<T: Jobber>(slot: &RefCell<Option<T>>) {
    let mut answer: Option<Result<String, bindings::JobError>> = None;
    loop {
        let given = answer
            .as_ref()
            .map(|answer| answer.as_ref().map(String::as_str));
        let Some(request) = bindings::resman::jobber::batch::next_request(given) else {
            return;
        };
        answer = Some(handle(slot, request));
    }
}

/// The request a jobber gets: `kind` is a position in `T::TYPES` (what `handles` returned).
fn owned_request<T: Jobber>(request: bindings::Request) -> Option<Request> {
    Some(Request {
        kind: T::TYPES.get(usize::try_from(request.kind).ok()?)?,
        query_index: request.query_index,
        client_id: request.client_id,
        attempt: request.attempt,
        payload: request.payload,
    })
}
