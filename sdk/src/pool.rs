//! The host's durable resource pools, as a jobber calls them: the `pools` interface of
//! `sdk/wit/resman.wit`. The host owns the pools; a jobber asks it to add, grant, release
//! and renew, and every operation is atomic and on disk before the answer of the request that
//! made it leaves the host.
//!
//! ```no_run
//! use resman_sdk::pool::{self, AcquireRequest, Resource};
//! use serde_json::json;
//!
//! pool::add("proxies", &[Resource::new("10.0.0.1:3128", json!({}))]).unwrap();
//! let lease = pool::acquire(&AcquireRequest::count("proxies", 1).ttl_ms(30_000)).unwrap();
//! println!("{} with token {}", lease.grants[0].id, lease.token);
//! pool::release(&lease.id).unwrap();
//! ```
//!
//! These types are also the host's: the native ABI carries them as JSON, and the host's pool
//! engine takes and returns them, so guest and host cannot disagree about a field.

use crate::jobber::JobError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A resource: an id, unique within its pool, and data for whoever holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Unique within the pool; not empty.
    pub id: String,
    /// Anything the holder needs (credentials, a seat's row and number, ...).
    #[serde(default)]
    pub data: Value,
}

impl Resource {
    /// A resource with `id` and `data`.
    pub fn new(id: impl Into<String>, data: Value) -> Self {
        Resource {
            id: id.into(),
            data,
        }
    }
}

/// Part of an acquire: `count` free resources of `pool`, or exactly the resources `ids`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    /// The pool.
    pub pool: String,
    /// How many; with `ids`, 0 or `ids.len()`.
    #[serde(default)]
    pub count: u32,
    /// These resources exactly, when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

impl Want {
    /// `count` free resources of `pool`.
    pub fn count(pool: impl Into<String>, count: u32) -> Self {
        Want {
            pool: pool.into(),
            count,
            ids: Vec::new(),
        }
    }

    /// The resources `ids` of `pool`.
    pub fn ids<I, S>(pool: impl Into<String>, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Want {
            pool: pool.into(),
            count: 0,
            ids: ids.into_iter().map(Into::into).collect(),
        }
    }
}

/// An acquire: every [`Want`] is granted in one atomic step, or none is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireRequest {
    /// What to take; at least one.
    pub wants: Vec<Want>,
    /// The lease expires this long after the grant. The deadline is absolute: a host restart
    /// neither resets nor forgets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Wait up to this long for the resources, in strict arrival order per pool. `None` or 0
    /// answers [`PoolError::Unavailable`] at once. Capped by the request's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// A caller-chosen id: an acquire repeated with it returns the lease it granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Release the lease when the requesting client's connection closes.
    #[serde(default)]
    pub release_on_disconnect: bool,
}

impl AcquireRequest {
    /// `count` resources of `pool`.
    pub fn count(pool: impl Into<String>, count: u32) -> Self {
        AcquireRequest::of(vec![Want::count(pool, count)])
    }

    /// Everything in `wants`, atomically.
    pub fn of(wants: Vec<Want>) -> Self {
        AcquireRequest {
            wants,
            ..AcquireRequest::default()
        }
    }

    /// With a time to live.
    #[must_use]
    pub fn ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = Some(ttl_ms);
        self
    }

    /// Waiting up to `wait_ms` for resources.
    #[must_use]
    pub fn wait_ms(mut self, wait_ms: u64) -> Self {
        self.wait_ms = Some(wait_ms);
        self
    }

    /// With a caller-chosen request id, for idempotent retries.
    #[must_use]
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Released when the client's connection closes.
    #[must_use]
    pub fn release_on_disconnect(mut self) -> Self {
        self.release_on_disconnect = true;
        self
    }
}

/// One resource of a lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Its pool.
    pub pool: String,
    /// Its id.
    pub id: String,
    /// Its data.
    pub data: Value,
}

/// Resources held together and released together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease id, for release and renew.
    pub id: String,
    /// The fencing token: greater than every token these resources were granted with
    /// before, across restarts too.
    pub token: u64,
    /// The client (connection id) whose request acquired it.
    pub holder: u64,
    /// When it expires (milliseconds since the Unix epoch), if it has a TTL.
    pub expires_at_ms: Option<u64>,
    /// Released when the holder's connection closes.
    pub release_on_disconnect: bool,
    /// What it holds.
    pub grants: Vec<Grant>,
}

/// A lease of one resource, in brief: what [`acquire_single`] and [`release_single`]
/// answer. It crosses into a WASM plugin as one string where a [`Lease`] takes five, for
/// plugins that hand out one resource at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SingleLease {
    /// The lease id as a number: the `lease` text the other functions take is its decimal
    /// digits ([`SingleLease::lease_id`]).
    pub lease: u64,
    /// The fencing token (see [`Lease::token`]).
    pub token: u64,
    /// When it expires (milliseconds since the Unix epoch), if it has a TTL.
    pub expires_at_ms: Option<u64>,
    /// The resource's id.
    pub id: String,
}

impl SingleLease {
    /// The lease id as the text [`release`], [`renew`] and the rest take.
    pub fn lease_id(&self) -> String {
        itoa::Buffer::new().format(self.lease).to_owned()
    }
}

/// A held resource in a [`PoolStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The resource's id.
    pub id: String,
    /// Its data.
    pub data: Value,
    /// The lease holding it.
    pub lease: String,
    /// That lease's token.
    pub token: u64,
    /// That lease's holder.
    pub holder: u64,
    /// That lease's expiry.
    pub expires_at_ms: Option<u64>,
}

/// What a pool holds right now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The pool.
    pub pool: String,
    /// Free resources, in the order they will be granted.
    pub free: Vec<Resource>,
    /// Held resources.
    pub held: Vec<Held>,
    /// Acquires waiting on this pool.
    pub waiting: u32,
}

/// Why a pool operation did nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum PoolError {
    /// No resources were ever added to this pool.
    UnknownPool(String),
    /// No such lease (never granted, or released or expired since).
    UnknownLease(String),
    /// No such resource in the pool.
    UnknownResource(String),
    /// The arguments make no sense (count 0, an empty id, ...).
    Invalid(String),
    /// Not enough free resources, at once or within the wait.
    Unavailable(String),
    /// The operation clashes with the pool's state.
    Conflict(String),
    /// The host could not store the operation; nothing was done.
    Storage(String),
}

impl PoolError {
    /// The message, whichever the error.
    pub fn message(&self) -> &str {
        match self {
            PoolError::UnknownPool(m)
            | PoolError::UnknownLease(m)
            | PoolError::UnknownResource(m)
            | PoolError::Invalid(m)
            | PoolError::Unavailable(m)
            | PoolError::Conflict(m)
            | PoolError::Storage(m) => m,
        }
    }

    /// The wire error code a client should see for this error: `not_found`, `invalid`,
    /// `unavailable` or `conflict` (a storage failure is `jobber_failed`).
    pub fn code(&self) -> &'static str {
        match self {
            PoolError::UnknownPool(_)
            | PoolError::UnknownLease(_)
            | PoolError::UnknownResource(_) => "not_found",
            PoolError::Invalid(_) => "invalid",
            PoolError::Unavailable(_) => "unavailable",
            PoolError::Conflict(_) => "conflict",
            PoolError::Storage(_) => "jobber_failed",
        }
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for PoolError {}

/// A failure to reach the host at all (no host call under way, a garbled answer).
impl From<String> for PoolError {
    fn from(message: String) -> Self {
        PoolError::Storage(message)
    }
}

/// A pool error answers the client with its [`code`](PoolError::code), so `?` in a jobber
/// does the right thing; a storage failure is a plain failure.
impl From<PoolError> for JobError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::Storage(message) => JobError::Fail(message),
            other => JobError::reject(other.code(), other.message()),
        }
    }
}

/// The argument objects of the native ABI's `call` (`pools.*` operations), named as the WIT
/// names the parameters. Plugin authors never see these.
#[doc(hidden)]
pub mod args {
    use super::Resource;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Add {
        pub pool: String,
        pub resources: Vec<Resource>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Remove {
        pub pool: String,
        pub ids: Vec<String>,
        pub force: bool,
    }

    #[derive(Serialize, Deserialize)]
    pub struct ByLease {
        pub lease: String,
    }

    #[derive(Serialize, Deserialize)]
    pub struct InPool {
        pub pool: String,
        pub lease: String,
    }

    #[derive(Serialize, Deserialize)]
    pub struct ByResource {
        pub pool: String,
        pub id: String,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Renew {
        pub lease: String,
        pub ttl_ms: u64,
    }

    #[derive(Serialize, Deserialize)]
    pub struct ByPool {
        pub pool: String,
    }
}

/// Adds resources to `pool` (creating it); ids already there are left as they are. Returns
/// how many were new.
///
/// # Errors
///
/// [`PoolError::Invalid`] for an empty id or pool name.
pub fn add(pool: &str, resources: &[Resource]) -> Result<u32, PoolError> {
    imp::add(pool, resources)
}

/// Removes resources from `pool`; a held one only with `force`, which ends its lease.
/// Returns how many were removed.
///
/// # Errors
///
/// [`PoolError::Conflict`] for a held resource without `force` (then nothing is removed).
pub fn remove(pool: &str, ids: &[String], force: bool) -> Result<u32, PoolError> {
    imp::remove(pool, ids, force)
}

/// Acquires resources; see [`AcquireRequest`]. Blocks while it waits, if it asked to.
///
/// # Errors
///
/// [`PoolError::Unavailable`] when not enough are free (within the wait, if any).
pub fn acquire(request: &AcquireRequest) -> Result<Lease, PoolError> {
    imp::acquire(request)
}

/// Acquires exactly one resource (`request` has one [`Want`], of count 1 or of one id) and
/// answers the lease in brief: for a plugin that needs only the resource's id, the lease
/// id and the token, a cheaper [`acquire`].
///
/// # Errors
///
/// As [`acquire`]; [`PoolError::Invalid`] for a request of anything but one resource, and
/// [`PoolError::Conflict`] when its request id already named a lease of anything but one
/// resource of the want's pool.
pub fn acquire_single(request: &AcquireRequest) -> Result<SingleLease, PoolError> {
    imp::acquire_single(request)
}

/// Releases a lease; returns it as it was.
///
/// # Errors
///
/// [`PoolError::UnknownLease`] when no such lease is held.
pub fn release(lease: &str) -> Result<Lease, PoolError> {
    imp::release(lease)
}

/// Releases lease `lease` only if every resource it holds is in `pool`; returns it as it
/// was. A plugin ends the leases of its own pool this way in one call, so it cannot end a
/// lease of another plugin's pool and needs no [`lease`] call first to check.
///
/// # Errors
///
/// [`PoolError::UnknownLease`] when no such lease is held, or it holds resources of another
/// pool (it is left as it is).
pub fn release_in(pool: &str, lease: &str) -> Result<Lease, PoolError> {
    imp::release_in(pool, lease)
}

/// [`release_in`] of a lease of exactly one resource, answered in brief.
///
/// # Errors
///
/// As [`release_in`]; [`PoolError::Invalid`] for a lease of several resources (it is left as
/// it is).
pub fn release_single(pool: &str, lease: &str) -> Result<SingleLease, PoolError> {
    imp::release_single(pool, lease)
}

/// Releases the lease that holds resource `id` of `pool`; returns it as it was.
///
/// # Errors
///
/// [`PoolError::UnknownResource`], or [`PoolError::UnknownLease`] when the resource is free.
pub fn release_resource(pool: &str, id: &str) -> Result<Lease, PoolError> {
    imp::release_resource(pool, id)
}

/// Gives a lease the deadline `ttl_ms` from now.
///
/// # Errors
///
/// [`PoolError::UnknownLease`] when no such lease is held.
pub fn renew(lease: &str, ttl_ms: u64) -> Result<Lease, PoolError> {
    imp::renew(lease, ttl_ms)
}

/// A held lease by id.
///
/// # Errors
///
/// [`PoolError::UnknownLease`] when no such lease is held.
pub fn lease(lease: &str) -> Result<Lease, PoolError> {
    imp::lease(lease)
}

/// What `pool` holds.
///
/// # Errors
///
/// [`PoolError::UnknownPool`].
pub fn status(pool: &str) -> Result<PoolStatus, PoolError> {
    imp::status(pool)
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{args, AcquireRequest, Lease, PoolError, PoolStatus, Resource, SingleLease};
    use crate::host::call;

    pub(super) fn add(pool: &str, resources: &[Resource]) -> Result<u32, PoolError> {
        let args = args::Add {
            pool: pool.to_owned(),
            resources: resources.to_vec(),
        };
        call("pools.add", &args)
    }

    pub(super) fn remove(pool: &str, ids: &[String], force: bool) -> Result<u32, PoolError> {
        let args = args::Remove {
            pool: pool.to_owned(),
            ids: ids.to_vec(),
            force,
        };
        call("pools.remove", &args)
    }

    pub(super) fn acquire(request: &AcquireRequest) -> Result<Lease, PoolError> {
        call("pools.acquire", request)
    }

    pub(super) fn acquire_single(request: &AcquireRequest) -> Result<SingleLease, PoolError> {
        call("pools.acquire-single", request)
    }

    pub(super) fn release(lease: &str) -> Result<Lease, PoolError> {
        call("pools.release", &by_lease(lease))
    }

    pub(super) fn release_in(pool: &str, lease: &str) -> Result<Lease, PoolError> {
        call("pools.release-in", &in_pool(pool, lease))
    }

    pub(super) fn release_single(pool: &str, lease: &str) -> Result<SingleLease, PoolError> {
        call("pools.release-single", &in_pool(pool, lease))
    }

    pub(super) fn release_resource(pool: &str, id: &str) -> Result<Lease, PoolError> {
        let args = args::ByResource {
            pool: pool.to_owned(),
            id: id.to_owned(),
        };
        call("pools.release-resource", &args)
    }

    pub(super) fn renew(lease: &str, ttl_ms: u64) -> Result<Lease, PoolError> {
        let args = args::Renew {
            lease: lease.to_owned(),
            ttl_ms,
        };
        call("pools.renew", &args)
    }

    pub(super) fn lease(lease: &str) -> Result<Lease, PoolError> {
        call("pools.get-lease", &by_lease(lease))
    }

    pub(super) fn status(pool: &str) -> Result<PoolStatus, PoolError> {
        let args = args::ByPool {
            pool: pool.to_owned(),
        };
        call("pools.status", &args)
    }

    fn by_lease(lease: &str) -> args::ByLease {
        args::ByLease {
            lease: lease.to_owned(),
        }
    }

    fn in_pool(pool: &str, lease: &str) -> args::InPool {
        args::InPool {
            pool: pool.to_owned(),
            lease: lease.to_owned(),
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{AcquireRequest, Grant, Held, Lease, PoolError, PoolStatus, Resource, SingleLease};
    use crate::bindings::resman::jobber::pools as wit;
    use serde_json::Value;

    fn data_text(data: &Value) -> String {
        data.to_string()
    }

    /// The host validated the JSON when the resource was added.
    fn data_value(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or(Value::Null)
    }

    fn error(err: wit::PoolError) -> PoolError {
        match err {
            wit::PoolError::UnknownPool(m) => PoolError::UnknownPool(m),
            wit::PoolError::UnknownLease(m) => PoolError::UnknownLease(m),
            wit::PoolError::UnknownResource(m) => PoolError::UnknownResource(m),
            wit::PoolError::Invalid(m) => PoolError::Invalid(m),
            wit::PoolError::Unavailable(m) => PoolError::Unavailable(m),
            wit::PoolError::Conflict(m) => PoolError::Conflict(m),
            wit::PoolError::Storage(m) => PoolError::Storage(m),
        }
    }

    fn lease_of(lease: wit::Lease) -> Lease {
        Lease {
            id: lease.id,
            token: lease.token,
            holder: lease.holder,
            expires_at_ms: lease.expires_at_ms,
            release_on_disconnect: lease.release_on_disconnect,
            grants: lease
                .grants
                .into_iter()
                .map(|grant| Grant {
                    data: data_value(&grant.data),
                    pool: grant.pool,
                    id: grant.id,
                })
                .collect(),
        }
    }

    pub(super) fn add(pool: &str, resources: &[Resource]) -> Result<u32, PoolError> {
        let resources: Vec<wit::Resource> = resources
            .iter()
            .map(|resource| wit::Resource {
                id: resource.id.clone(),
                data: data_text(&resource.data),
            })
            .collect();
        wit::add(pool, &resources).map_err(error)
    }

    pub(super) fn remove(pool: &str, ids: &[String], force: bool) -> Result<u32, PoolError> {
        wit::remove(pool, ids, force).map_err(error)
    }

    fn single_of(lease: wit::SingleLease) -> SingleLease {
        SingleLease {
            lease: lease.lease,
            token: lease.token,
            expires_at_ms: lease.expires_at_ms,
            id: lease.id,
        }
    }

    pub(super) fn acquire(request: &AcquireRequest) -> Result<Lease, PoolError> {
        wit::acquire(&wit_request(request))
            .map(lease_of)
            .map_err(error)
    }

    pub(super) fn acquire_single(request: &AcquireRequest) -> Result<SingleLease, PoolError> {
        wit::acquire_single(&wit_request(request))
            .map(single_of)
            .map_err(error)
    }

    fn wit_request(request: &AcquireRequest) -> wit::AcquireRequest {
        wit::AcquireRequest {
            wants: request
                .wants
                .iter()
                .map(|want| wit::Want {
                    pool: want.pool.clone(),
                    count: want.count,
                    ids: want.ids.clone(),
                })
                .collect(),
            ttl_ms: request.ttl_ms,
            wait_ms: request.wait_ms,
            request_id: request.request_id.clone(),
            release_on_disconnect: request.release_on_disconnect,
        }
    }

    pub(super) fn release(lease: &str) -> Result<Lease, PoolError> {
        wit::release(lease).map(lease_of).map_err(error)
    }

    pub(super) fn release_in(pool: &str, lease: &str) -> Result<Lease, PoolError> {
        wit::release_in(pool, lease).map(lease_of).map_err(error)
    }

    pub(super) fn release_single(pool: &str, lease: &str) -> Result<SingleLease, PoolError> {
        wit::release_single(pool, lease)
            .map(single_of)
            .map_err(error)
    }

    pub(super) fn release_resource(pool: &str, id: &str) -> Result<Lease, PoolError> {
        wit::release_resource(pool, id).map(lease_of).map_err(error)
    }

    pub(super) fn renew(lease: &str, ttl_ms: u64) -> Result<Lease, PoolError> {
        wit::renew(lease, ttl_ms).map(lease_of).map_err(error)
    }

    pub(super) fn lease(lease: &str) -> Result<Lease, PoolError> {
        wit::get_lease(lease).map(lease_of).map_err(error)
    }

    pub(super) fn status(pool: &str) -> Result<PoolStatus, PoolError> {
        let status = wit::status(pool).map_err(error)?;
        Ok(PoolStatus {
            pool: status.pool,
            free: status
                .free
                .into_iter()
                .map(|resource| Resource {
                    data: data_value(&resource.data),
                    id: resource.id,
                })
                .collect(),
            held: status
                .held
                .into_iter()
                .map(|held| Held {
                    data: data_value(&held.data),
                    id: held.id,
                    lease: held.lease,
                    token: held.token,
                    holder: held.holder,
                    expires_at_ms: held.expires_at_ms,
                })
                .collect(),
            waiting: status.waiting,
        })
    }
}
