//! Batched calls: a component of the world `jobber-batched` serves a lane's whole batch in
//! one `serve-batch` call, taking each request and giving back each answer through the
//! import `batch.next-request`.
//!
//! Entering the guest costs wasmtime about a quarter of a small request's whole cost (the
//! export's function reference, lowering, the async fiber); a host call from inside the
//! guest costs a fraction of that. So a batch enters once and crosses per request by host
//! call. The executor stays in charge of every request: it hands them out one at a time
//! through a [`Feed`], so a request whose client left is still dropped when its turn comes,
//! each answer leaves at once, and each request's deadline starts when it is handed out.

use super::lower::{copy_utf8, lower_as_string, lower_by_hand, Fields};
use super::types_api::JobError;
use super::{answer_outcome, StoreState};
use crate::plugins::CallOutcome;
use std::any::Any;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::__internal::LowerContext;
use wasmtime::component::{ComponentType, Linker, Lower};

/// The WIT instance `next-request` is linked into (see `pools_api::POOLS` on the version).
pub(super) const BATCH: &str = "resman:jobber/batch@0.2.0";

/// The export a component of the world `jobber-batched` serves batches with.
pub(super) const SERVE_BATCH: &str = "serve-batch";

/// What a `serve-batch` call takes its requests from and gives its answers to: the
/// executor's batch. It lives in the store for the call ([`super::WasmInstance::serve_batch`])
/// and is handed back after it.
pub(crate) trait Feed: Any + Send {
    /// Settles the request handed out last with `answer`, then hands out the next request,
    /// or `None` when the batch is over. `answer` is `None` exactly when nothing is out.
    ///
    /// # Errors
    ///
    /// What the guest did wrong, when `answer` skips the request that is out or answers
    /// when nothing is; the guest traps with it and the request that is out stays out.
    fn next(&mut self, answer: Option<CallOutcome>) -> Result<Option<Handout>, String>;
}

/// A request handed out to the guest.
pub(crate) struct Handout {
    /// Its position in the plugin's declared types.
    pub(crate) kind: u32,
    pub(crate) query_index: f64,
    pub(crate) client_id: u64,
    pub(crate) attempt: u32,
    /// The payload's JSON text as sent; `None` when the request had none.
    pub(crate) payload: Option<Arc<str>>,
    /// When the request's deadline passes.
    pub(crate) due: Instant,
}

/// The WIT record `request`, lowered with the payload shared, not copied first.
#[derive(ComponentType, Lower)]
#[component(record)]
struct RequestView {
    kind: u32,
    #[component(name = "query-index")]
    query_index: f64,
    #[component(name = "client-id")]
    client_id: u64,
    attempt: u32,
    payload: Payload,
}

/// A request's payload, which the guest sees as JSON text: `null` when there was none.
struct Payload(Option<Arc<str>>);

fn payload_text<'a>(payload: &'a Payload, _: &mut itoa::Buffer) -> &'a str {
    payload.0.as_deref().unwrap_or("null")
}

lower_as_string!(Payload, payload_text);

/// What `next-request` answers, `option<request>`: lowered as wasmtime's derives lower it,
/// except a request into memory (where the answer goes, being more than one value), written
/// by hand (see `lower.rs`).
struct NextRequest(Option<RequestView>);

lower_by_hand!(NextRequest, Option<RequestView>, write_request);

/// Writes a request at `offset`, as `option`'s `some`; `false` for none.
fn write_request<T>(
    next: &Option<RequestView>,
    cx: &mut LowerContext<'_, T>,
    offset: usize,
) -> wasmtime::Result<bool> {
    let Some(request) = next else {
        return Ok(false);
    };
    let payload = payload_text(&request.payload, &mut itoa::Buffer::new());
    let Some(payload) = copy_utf8(cx, payload)? else {
        return Ok(false);
    };
    let abi = <NextRequest as ComponentType>::ABI;
    Fields::after_tag(cx.as_slice_mut(), offset, 1, abi)
        .put::<u32>(&request.kind.to_le_bytes())
        .put::<f64>(&request.query_index.to_le_bytes())
        .put::<u64>(&request.client_id.to_le_bytes())
        .put::<u32>(&request.attempt.to_le_bytes())
        .put_string(payload);
    Ok(true)
}

/// Links `batch.next-request`, which serves the feed of the `serve-batch` call under way.
pub(super) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    let mut batch = linker.instance(BATCH)?;
    batch.func_wrap(
        "next-request",
        |mut store, (answer,): (Option<Result<String, JobError>>,)| {
            let state = store.data_mut();
            let Some(feed) = state.feed.as_mut() else {
                wasmtime::bail!("`batch.next-request` was called outside `serve-batch`");
            };
            let handout = feed
                .next(answer.map(answer_outcome))
                .map_err(wasmtime::Error::msg)?;
            let Some(handout) = handout else {
                return Ok((NextRequest(None),));
            };
            state.deadline = handout.due;
            Ok((NextRequest(Some(RequestView {
                kind: handout.kind,
                query_index: handout.query_index,
                client_id: handout.client_id,
                attempt: handout.attempt,
                payload: Payload(handout.payload),
            })),))
        },
    )
}
