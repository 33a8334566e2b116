//! The host API as plugins call it: the `pools` and `store` operations of the WIT world, for
//! the request the calling thread is serving ([`context`]). The WASM imports
//! call the typed functions; the native table's `call` goes through [`call_json`], which
//! reads the arguments and writes the answer as the JSON of `resman_sdk::pool`'s types.
//!
//! Each operation raises the call's seq to the journal seq it produced or observed, so the
//! request's answer waits until that is durable.

use super::context::{self, Call};
use super::record::LeaseId;
use super::view::{Brief, LeaseView, Shape, SingleView, StatusView, Whole};
use resman_sdk::pool::{self as sdk, AcquireRequest, PoolError};
use resman_sdk::store;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

const OUTSIDE_A_CALL: &str = "the host API is only available while the host is calling the jobber";

/// Runs `op` on the current call and records the seq it returns; outside a call, the error
/// `E` makes of [`OUTSIDE_A_CALL`].
fn in_call<T, E>(op: impl FnOnce(&Call) -> Result<(T, u64), E>) -> Result<T, E>
where
    E: From<String>,
{
    context::with(|call| {
        let (value, seq) = op(call)?;
        call.seq = call.seq.max(seq);
        Ok(value)
    })
    .unwrap_or_else(|| Err(E::from(OUTSIDE_A_CALL.to_owned())))
}

/// A pool operation in the current call (outside one: a storage error).
fn pooled<T>(op: impl FnOnce(&Call) -> Result<(T, u64), PoolError>) -> Result<T, PoolError> {
    in_call(op)
}

fn lease_id(text: &str) -> Result<LeaseId, PoolError> {
    // Trimmed only when needed: Unicode's whitespace costs a release as much as the parse.
    (text.parse().or_else(|_| text.trim().parse()))
        .map_err(|_| PoolError::UnknownLease(format!("{text:?} is not a lease id")))
}

pub(crate) fn add(pool: &str, resources: Vec<(String, String)>) -> Result<u32, PoolError> {
    pooled(|call| call.pools.add(pool, resources))
}

pub(crate) fn remove(pool: &str, ids: &[String], force: bool) -> Result<u32, PoolError> {
    pooled(|call| call.pools.remove(pool, ids, force))
}

pub(crate) fn acquire(request: AcquireRequest) -> Result<LeaseView, PoolError> {
    acquire_as(request, Whole)
}

fn acquire_as<S: Shape>(request: AcquireRequest, shape: S) -> Result<S::Answer, PoolError> {
    pooled(|call| {
        call.pools
            .acquire(call.client, request, call.deadline, shape)
    })
}

/// [`acquire`] for a call lent to a task's poll ([`context::within`]): a wait yields.
pub(crate) async fn acquire_async(request: AcquireRequest) -> Result<LeaseView, PoolError> {
    acquire_async_as(request, Whole).await
}

async fn acquire_async_as<S: Shape>(
    request: AcquireRequest,
    shape: S,
) -> Result<S::Answer, PoolError> {
    let entered = context::with(|call| (Arc::clone(&call.pools), call.client, call.deadline));
    let Some((pools, client, deadline)) = entered else {
        return Err(PoolError::from(OUTSIDE_A_CALL.to_owned()));
    };
    let (answer, seq) = pools
        .acquire_async(client, request, deadline, shape)
        .await?;
    context::with(|call| call.seq = call.seq.max(seq));
    Ok(answer)
}

/// The pool of the one resource `request` asks for; `invalid` unless it asks for exactly one.
fn single_pool(request: &AcquireRequest) -> Result<&str, PoolError> {
    let asked = match request.wants.as_slice() {
        [want] if want.ids.is_empty() => Ok((&want.pool, want.count)),
        [want] => Ok((
            &want.pool,
            u32::try_from(want.ids.len()).unwrap_or(u32::MAX),
        )),
        wants => Err(wants.len()),
    };
    match asked {
        Ok((pool, 1)) => Ok(pool),
        Ok((_, count)) => Err(PoolError::Invalid(format!(
            "acquire-single takes one resource; this request asks for {count}"
        ))),
        Err(wants) => Err(PoolError::Invalid(format!(
            "acquire-single takes one want; this request has {wants}"
        ))),
    }
}

/// [`acquire_async`] of exactly one resource, answered in brief.
pub(crate) async fn acquire_single_async(request: AcquireRequest) -> Result<SingleView, PoolError> {
    let repeat = single_acquire(&request)?;
    let answer = acquire_async_as(request, Repeat::shape(&repeat)).await?;
    brief(answer, repeat)
}

/// [`acquire`] of exactly one resource, answered in brief (the native ABI's path).
pub(crate) fn acquire_single(request: AcquireRequest) -> Result<SingleView, PoolError> {
    let repeat = single_acquire(&request)?;
    let answer = acquire_as(request, Repeat::shape(&repeat))?;
    brief(answer, repeat)
}

/// A single acquire's pool and request id, kept when it has a request id: a repeat answers
/// the lease that id named first, which may be another acquire's.
struct Repeat {
    pool: String,
    request_id: String,
}

impl Repeat {
    /// How a single acquire answers: in brief, a repeat's lease checked against its pool.
    fn shape(repeat: &Option<Repeat>) -> Brief<'_> {
        Brief {
            pool: repeat.as_ref().map(|repeat| repeat.pool.as_str()),
        }
    }
}

/// Checks that `request` asks for one resource; what its answer must be checked against.
fn single_acquire(request: &AcquireRequest) -> Result<Option<Repeat>, PoolError> {
    let pool = single_pool(request)?;
    Ok(request.request_id.as_ref().map(|request_id| Repeat {
        pool: pool.to_owned(),
        request_id: request_id.clone(),
    }))
}

/// A single acquire's answer, in brief ([`Brief`]): a fresh grant is one resource of the
/// pool asked for; a repeated request id's lease must be one too, or it is a conflict.
fn brief(
    answer: Result<SingleView, LeaseId>,
    repeat: Option<Repeat>,
) -> Result<SingleView, PoolError> {
    answer.map_err(|lease| {
        let (pool, request_id) =
            repeat.map_or_else(Default::default, |repeat| (repeat.pool, repeat.request_id));
        PoolError::Conflict(format!(
            "request id {request_id:?} already named lease {lease}, which is not one resource \
             of pool {pool}"
        ))
    })
}

pub(crate) fn release(lease: &str) -> Result<LeaseView, PoolError> {
    let lease = lease_id(lease)?;
    pooled(|call| call.pools.release(lease))
}

pub(crate) fn release_in(pool: &str, lease: &str) -> Result<LeaseView, PoolError> {
    let lease = lease_id(lease)?;
    pooled(|call| call.pools.release_in(pool, lease))
}

/// [`release_in`] of a lease of exactly one resource, answered in brief.
pub(crate) fn release_single(pool: &str, lease: &str) -> Result<SingleView, PoolError> {
    let lease = lease_id(lease)?;
    pooled(|call| call.pools.release_single(pool, lease))
}

pub(crate) fn release_resource(pool: &str, id: &str) -> Result<LeaseView, PoolError> {
    pooled(|call| call.pools.release_resource(pool, id))
}

pub(crate) fn renew(lease: &str, ttl_ms: u64) -> Result<LeaseView, PoolError> {
    let lease = lease_id(lease)?;
    pooled(|call| call.pools.renew(lease, ttl_ms))
}

pub(crate) fn lease(lease: &str) -> Result<LeaseView, PoolError> {
    let lease = lease_id(lease)?;
    pooled(|call| call.pools.lease(lease))
}

pub(crate) fn status(pool: &str) -> Result<StatusView, PoolError> {
    pooled(|call| call.pools.status(pool))
}

/// A store operation in the current call, on the plugin's namespace.
fn stored<T>(op: impl FnOnce(&Call) -> Result<(T, u64), String>) -> Result<T, String> {
    in_call(op)
}

pub(crate) fn store_get(key: &str) -> Option<String> {
    stored(|call| Ok(call.pools.kv_get(&call.namespace, key))).unwrap_or(None)
}

pub(crate) fn store_set(key: &str, value: &str) -> Result<(), String> {
    stored(|call| {
        let seq = call.pools.kv_set(&call.namespace, key, value)?;
        Ok(((), seq))
    })
}

pub(crate) fn store_set_if(
    key: &str,
    expected: Option<&str>,
    value: Option<&str>,
) -> Result<bool, String> {
    stored(|call| call.pools.kv_set_if(&call.namespace, key, expected, value))
}

pub(crate) fn store_delete(key: &str) -> Result<bool, String> {
    stored(|call| call.pools.kv_delete(&call.namespace, key))
}

pub(crate) fn store_keys(prefix: &str) -> Vec<String> {
    stored(|call| Ok(call.pools.kv_keys(&call.namespace, prefix))).unwrap_or_default()
}

/// The answer of [`call_json`]: whether the operation succeeded, and its JSON.
pub(crate) struct JsonAnswer {
    pub(crate) ok: bool,
    pub(crate) json: Vec<u8>,
}

fn answer<T: Serialize, E: Serialize>(result: Result<T, E>) -> JsonAnswer {
    let (ok, json) = match result {
        Ok(value) => (true, serde_json::to_vec(&value)),
        Err(err) => (false, serde_json::to_vec(&err)),
    };
    JsonAnswer {
        ok,
        json: json.expect("answers serialize"),
    }
}

fn parse<A: DeserializeOwned>(op: &str, args: &[u8]) -> Result<A, String> {
    serde_json::from_slice(args).map_err(|err| format!("{op}: bad arguments: {err}"))
}

/// Runs the operation `op` with JSON `args` (the native ABI's `call`).
pub(crate) fn call_json(op: &str, args: &[u8]) -> JsonAnswer {
    let pool_op = |result: Result<JsonAnswer, String>| {
        result.unwrap_or_else(|reason| answer::<(), _>(Err(PoolError::Invalid(reason))))
    };
    let store_op = |result: Result<JsonAnswer, String>| {
        result.unwrap_or_else(|reason| answer::<(), _>(Err(reason)))
    };
    // A native call cannot be interrupted: one past its deadline was answered `timeout` and
    // abandoned, so it must change nothing more (see `coordinator::watch`).
    if context::with(|call| Instant::now() >= call.deadline) == Some(true) {
        let reason = format!("{op}: refused, the call is past its deadline");
        return if op.starts_with("pools.") {
            pool_op(Err(reason))
        } else {
            store_op(Err(reason))
        };
    }
    match op {
        "pools.add" => pool_op(parse(op, args).map(|a: sdk::args::Add| {
            let resources = a
                .resources
                .into_iter()
                .map(|r| (r.id, r.data.to_string()))
                .collect();
            answer(add(&a.pool, resources))
        })),
        "pools.remove" => pool_op(
            parse(op, args).map(|a: sdk::args::Remove| answer(remove(&a.pool, &a.ids, a.force))),
        ),
        "pools.acquire" => pool_op(parse(op, args).map(|a: AcquireRequest| answer(acquire(a)))),
        "pools.acquire-single" => {
            pool_op(parse(op, args).map(|a: AcquireRequest| answer(acquire_single(a))))
        }
        "pools.release-single" => pool_op(
            parse(op, args).map(|a: sdk::args::InPool| answer(release_single(&a.pool, &a.lease))),
        ),
        "pools.release" => {
            pool_op(parse(op, args).map(|a: sdk::args::ByLease| answer(release(&a.lease))))
        }
        "pools.release-in" => pool_op(
            parse(op, args).map(|a: sdk::args::InPool| answer(release_in(&a.pool, &a.lease))),
        ),
        "pools.release-resource" => pool_op(
            parse(op, args)
                .map(|a: sdk::args::ByResource| answer(release_resource(&a.pool, &a.id))),
        ),
        "pools.renew" => {
            pool_op(parse(op, args).map(|a: sdk::args::Renew| answer(renew(&a.lease, a.ttl_ms))))
        }
        "pools.get-lease" => {
            pool_op(parse(op, args).map(|a: sdk::args::ByLease| answer(lease(&a.lease))))
        }
        "pools.status" => {
            pool_op(parse(op, args).map(|a: sdk::args::ByPool| answer(status(&a.pool))))
        }
        "store.get" => store_op(
            parse(op, args).map(|a: store::args::Key| answer::<_, String>(Ok(store_get(&a.key)))),
        ),
        "store.set" => {
            store_op(parse(op, args).map(|a: store::args::Set| answer(store_set(&a.key, &a.value))))
        }
        "store.set-if" => store_op(parse(op, args).map(|a: store::args::SetIf| {
            answer(store_set_if(
                &a.key,
                a.expected.as_deref(),
                a.value.as_deref(),
            ))
        })),
        "store.delete" => {
            store_op(parse(op, args).map(|a: store::args::Key| answer(store_delete(&a.key))))
        }
        "store.keys" => store_op(
            parse(op, args)
                .map(|a: store::args::Prefix| answer::<_, String>(Ok(store_keys(&a.prefix)))),
        ),
        other => answer::<(), _>(Err(PoolError::Invalid(format!(
            "the host has no operation {other:?}"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resman_sdk::pool::Want;

    #[test]
    fn a_single_acquire_asks_for_exactly_one_resource() {
        let one = AcquireRequest::count("p", 1);
        assert_eq!(single_pool(&one).unwrap(), "p");
        let by_id = AcquireRequest::of(vec![Want::ids("q", ["a"])]);
        assert_eq!(single_pool(&by_id).unwrap(), "q");
        for many in [
            AcquireRequest::count("p", 2),
            AcquireRequest::count("p", 0),
            AcquireRequest::of(vec![]),
            AcquireRequest::of(vec![Want::ids("p", ["a", "b"])]),
            AcquireRequest::of(vec![Want::count("p", 1), Want::count("q", 1)]),
        ] {
            let err = single_pool(&many).unwrap_err();
            assert!(matches!(err, PoolError::Invalid(_)), "{many:?}: {err:?}");
        }
    }
}
