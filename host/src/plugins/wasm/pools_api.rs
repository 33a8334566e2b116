//! The `pools` and `store` imports of the WIT world for WASM guests: each reads its
//! arguments, calls [`crate::pools::api`], which serves the request the calling thread is
//! on, and answers the WIT records. Resource data crosses as the JSON text it is stored as,
//! never re-parsed. `store` is `bindgen!`'s `Host` trait; `pools`, the hot path, is linked by
//! hand ([`add_to_linker`]) so that a lease is lowered from the pool's own view.

use super::bindings::resman::jobber::pools as wit;
use super::bindings::resman::jobber::store as wit_store;
use super::lower::{Lease, SingleAnswer};
use super::StoreState;
use crate::pools::api;
use crate::pools::view::{LeaseView, StatusView};
use resman_sdk::pool::{AcquireRequest, PoolError, Want};
use wasmtime::component::{Linker, WasmStr};

fn error(err: PoolError) -> wit::PoolError {
    match err {
        PoolError::UnknownPool(m) => wit::PoolError::UnknownPool(m),
        PoolError::UnknownLease(m) => wit::PoolError::UnknownLease(m),
        PoolError::UnknownResource(m) => wit::PoolError::UnknownResource(m),
        PoolError::Invalid(m) => wit::PoolError::Invalid(m),
        PoolError::Unavailable(m) => wit::PoolError::Unavailable(m),
        PoolError::Conflict(m) => wit::PoolError::Conflict(m),
        PoolError::Storage(m) => wit::PoolError::Storage(m),
    }
}

fn status(view: StatusView) -> wit::PoolStatus {
    wit::PoolStatus {
        pool: view.pool,
        free: view
            .free
            .into_iter()
            .map(|free| wit::Resource {
                id: free.id,
                data: free.data.as_str().to_owned(),
            })
            .collect(),
        held: view
            .held
            .into_iter()
            .map(|held| wit::Held {
                id: held.id,
                data: held.data.as_str().to_owned(),
                lease: held.lease.to_string(),
                token: held.token,
                holder: held.holder,
                expires_at_ms: held.expires_at_ms,
            })
            .collect(),
        waiting: view.waiting,
    }
}

type Answer<T> = Result<T, wit::PoolError>;

/// The WIT instance the `pools` functions are linked into: the interface's name with the
/// package version of `sdk/wit/resman.wit`, which it must follow (a plugin importing a
/// version the host does not define fails to load, so every plugin test catches a mismatch).
pub(super) const POOLS: &str = "resman:jobber/pools@0.2.0";

/// Links the `pools` interface by hand rather than through `bindgen!`'s `Host` trait, which
/// would have every lease answered as an owned copy (see [`Lease`]), and every name a guest
/// passes lifted into a `String`: here names are read where they lie in guest memory.
pub(super) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    let mut pools = linker.instance(POOLS)?;
    pools.func_wrap(
        "add",
        |store, (pool, resources): (WasmStr, Vec<wit::Resource>)| {
            let resources = resources.into_iter().map(|r| (r.id, r.data)).collect();
            Ok((api::add(&pool.to_str(&store)?, resources).map_err(error),))
        },
    )?;
    pools.func_wrap(
        "remove",
        |store, (pool, ids, force): (WasmStr, Vec<String>, bool)| {
            Ok((api::remove(&pool.to_str(&store)?, &ids, force).map_err(error),))
        },
    )?;
    pools.func_wrap_async("acquire", |_, (request,): (wit::AcquireRequest,)| {
        Box::new(async move { Ok((acquire(request).await,)) })
    })?;
    pools.func_wrap_async("acquire-single", |_, (request,): (wit::AcquireRequest,)| {
        Box::new(async move {
            let request = acquire_request(request);
            let answer = api::acquire_single_async(request).await.map_err(error);
            Ok((SingleAnswer(answer),))
        })
    })?;
    pools.func_wrap("release", |store, (id,): (WasmStr,)| {
        Ok((answer(api::release(&id.to_str(&store)?)),))
    })?;
    pools.func_wrap("release-in", |store, (pool, id): (WasmStr, WasmStr)| {
        let (pool, id) = (pool.to_str(&store)?, id.to_str(&store)?);
        Ok((answer(api::release_in(&pool, &id)),))
    })?;
    pools.func_wrap("release-single", |store, (pool, id): (WasmStr, WasmStr)| {
        let (pool, id) = (pool.to_str(&store)?, id.to_str(&store)?);
        Ok((SingleAnswer(api::release_single(&pool, &id).map_err(error)),))
    })?;
    pools.func_wrap(
        "release-resource",
        |store, (pool, id): (WasmStr, WasmStr)| {
            let (pool, id) = (pool.to_str(&store)?, id.to_str(&store)?);
            Ok((answer(api::release_resource(&pool, &id)),))
        },
    )?;
    pools.func_wrap("renew", |store, (id, ttl_ms): (WasmStr, u64)| {
        Ok((answer(api::renew(&id.to_str(&store)?, ttl_ms)),))
    })?;
    pools.func_wrap("get-lease", |store, (id,): (WasmStr,)| {
        Ok((answer(api::lease(&id.to_str(&store)?)),))
    })?;
    pools.func_wrap("status", |store, (pool,): (WasmStr,)| {
        let status = api::status(&pool.to_str(&store)?);
        Ok((status.map(self::status).map_err(error),))
    })?;
    Ok(())
}

/// A lease, or why there is none, as the guest receives it.
fn answer(result: Result<LeaseView, PoolError>) -> Answer<Lease> {
    result.map(Lease::from).map_err(error)
}

async fn acquire(request: wit::AcquireRequest) -> Answer<Lease> {
    answer(api::acquire_async(acquire_request(request)).await)
}

fn acquire_request(request: wit::AcquireRequest) -> AcquireRequest {
    AcquireRequest {
        wants: request
            .wants
            .into_iter()
            .map(|want| Want {
                pool: want.pool,
                count: want.count,
                ids: want.ids,
            })
            .collect(),
        ttl_ms: request.ttl_ms,
        wait_ms: request.wait_ms,
        request_id: request.request_id,
        release_on_disconnect: request.release_on_disconnect,
    }
}

impl wit_store::Host for StoreState {
    fn get(&mut self, key: String) -> Option<String> {
        api::store_get(&key)
    }

    fn set(&mut self, key: String, value: String) -> Result<(), String> {
        api::store_set(&key, &value)
    }

    fn set_if(
        &mut self,
        key: String,
        expected: Option<String>,
        value: Option<String>,
    ) -> Result<bool, String> {
        api::store_set_if(&key, expected.as_deref(), value.as_deref())
    }

    fn delete(&mut self, key: String) -> Result<bool, String> {
        api::store_delete(&key)
    }

    fn keys(&mut self, prefix: String) -> Vec<String> {
        api::store_keys(&prefix)
    }
}
