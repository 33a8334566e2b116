//! The original package's headline example on the host's durable pools: a pool of proxy
//! servers (`host:port`) that clients take one at a time and give back. The pool is the
//! host's pool `proxies`, so what is held survives a host restart and is shared by every
//! instance of this plugin; the jobber itself keeps no state.
//!
//! `getProxy` is the hot path (benchmarked through WASM): one payload parse into a small
//! struct, one `pool::acquire_single`, one typed answer built from the brief lease it
//! returns and written to JSON text by hand (`answer_text`). `releaseProxy` by lease is
//! `pool::release_single`, as brief.
//!
//! # Layout
//!
//! - `payload.rs`: each request type's payload, parsed and checked (`invalid` otherwise).
//! - `proxy.rs`: `host:port`, the proxy's resource id, in one canonical spelling.
//! - `answer.rs`: leases and pool status shaped into answers.
//! - here: the jobber, one thin handler per request type: parse, ask the pool, shape.

mod answer;
mod payload;
mod proxy;

use answer::Answer;
use payload::Release;
use resman_sdk::pool::{self, Lease, PoolError, Resource};
use resman_sdk::{export_jobber, JobError, Jobber, Request};
use serde_json::{json, Value};

/// The host pool every request type of this plugin works on.
const POOL: &str = "proxies";

/// Serves the proxy pool's request types; stateless, the pool lives in the host.
#[derive(Default)]
struct ProxyPool;

impl Jobber for ProxyPool {
    const TYPES: &'static [&'static str] = &[
        "addProxy",
        "getProxy",
        "releaseProxy",
        "renewProxy",
        "removeProxy",
        "proxyStatus",
    ];

    type Answer = Answer;

    fn answer_text(answer: Answer) -> Result<String, JobError> {
        answer.text()
    }

    fn handle(&mut self, request: Request) -> Result<Self::Answer, JobError> {
        let payload = request.payload.as_str();
        match request.kind {
            "getProxy" => get_proxy(payload).map(Answer::Got),
            "addProxy" => add_proxy(payload).map(Answer::from),
            "releaseProxy" => release_proxy(payload).map(Answer::Released),
            "renewProxy" => renew_proxy(payload).map(Answer::from),
            "removeProxy" => remove_proxy(payload).map(Answer::from),
            "proxyStatus" => proxy_status(payload).map(Answer::from),
            other => Err(JobError::fail(format!("proxy-pool does not serve {other}"))),
        }
    }
}

fn get_proxy(payload: &str) -> Result<answer::Got, JobError> {
    let acquire = payload::get_proxy(payload)?.into_acquire(POOL);
    let lease = pool::acquire_single(&acquire).map_err(|err| match err {
        PoolError::UnknownPool(_) => JobError::reject("unavailable", "no proxies were added"),
        // Also a request id that some other acquire used first, for another lease.
        other => other.into(),
    })?;
    Ok(answer::got(lease))
}

fn add_proxy(payload: &str) -> Result<Value, JobError> {
    let resources: Vec<Resource> = payload::add_proxy(payload)?
        .into_iter()
        .map(|proxy| Resource::new(proxy, json!({})))
        .collect();
    let added = pool::add(POOL, &resources)?;
    Ok(json!({ "added": added }))
}

fn release_proxy(payload: &str) -> Result<answer::Released, JobError> {
    let lease = match payload::release_proxy(payload)? {
        Release::Proxy(proxy) => pool::release_resource(POOL, &proxy)?,
        // The host refuses a lease of another pool (a cinema ticket, say) as not held. A
        // lease of several proxies (some other plugin's acquire) is ended whole.
        Release::Lease(lease) => match pool::release_single(POOL, &lease) {
            Ok(single) => return Ok(answer::released_single(single)),
            Err(PoolError::Invalid(_)) => pool::release_in(POOL, &lease)?,
            Err(err) => return Err(err.into()),
        },
    };
    Ok(answer::released(lease, POOL))
}

fn renew_proxy(payload: &str) -> Result<Value, JobError> {
    let renew = payload::renew_proxy(payload)?;
    proxy_lease(&renew.lease)?;
    let lease = pool::renew(&renew.lease, renew.ttl_ms)?;
    Ok(answer::renewed(&lease))
}

fn remove_proxy(payload: &str) -> Result<Value, JobError> {
    let remove = payload::remove_proxy(payload)?;
    let removed = pool::remove(POOL, &remove.proxies, remove.force)?;
    Ok(json!({ "removed": removed }))
}

fn proxy_status(payload: &str) -> Result<Value, JobError> {
    payload::proxy_status(payload)?;
    let status = match pool::status(POOL) {
        Err(PoolError::UnknownPool(_)) => answer::empty_status(POOL),
        status => status?,
    };
    Ok(answer::status(status))
}

/// The held lease `id`, if it is a proxy lease: a lease of another pool (a cinema ticket,
/// say) is `not_found` here, so this plugin cannot end it.
fn proxy_lease(id: &str) -> Result<Lease, JobError> {
    let lease = pool::lease(id)?;
    if answer::is_proxy_lease(&lease, POOL) {
        Ok(lease)
    } else {
        Err(JobError::reject(
            "not_found",
            format!("{id} is not a proxy lease"),
        ))
    }
}

export_jobber!(ProxyPool);

/// The guest's allocator: the SDK's size classes rather than the target's dlmalloc. Every
/// string the host hands the guest (the payload, the proxy of a lease) it allocates in guest
/// memory, so the allocator is on the hot path.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: resman_sdk::alloc::GuestAllocator = resman_sdk::alloc::GuestAllocator::new();
