//! What pool operations answer: leases and pool status as jobbers see them. They serialize
//! to the JSON of `resman_sdk::pool`'s types (the native ABI's answers) and become the WIT
//! records for WASM guests, resource data passed as the JSON text it was stored as: a lease
//! and its grants are lowered in place (`plugins::wasm::lower`), a status field by field.

use super::record::{Data, LeaseId, Name};
use super::state::State;
use serde::Serialize;
use std::sync::Arc;
use wasmtime::component::{ComponentType, Lower};

/// A lease (`resman_sdk::pool::Lease`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct LeaseView {
    #[serde(serialize_with = "as_string")]
    pub(crate) id: LeaseId,
    pub(crate) token: u64,
    pub(crate) holder: u64,
    pub(crate) expires_at_ms: Option<u64>,
    pub(crate) release_on_disconnect: bool,
    /// Shared with the lease itself: a view costs no copy of its grants.
    pub(crate) grants: Arc<[GrantView]>,
}

/// One resource of a lease (`resman_sdk::pool::Grant`); lowers into a WASM guest as the WIT
/// record `grant` in place (see `plugins::wasm::lower`).
#[derive(Clone, Debug, PartialEq, Serialize, ComponentType, Lower)]
#[component(record)]
pub(crate) struct GrantView {
    pub(crate) pool: Name,
    pub(crate) id: Name,
    pub(crate) data: Data,
}

/// A lease of one resource in brief (`resman_sdk::pool::SingleLease`); lowers into a WASM
/// guest as the WIT record `single-lease`, whose one string is the resource's id.
#[derive(Clone, Debug, PartialEq, Serialize, ComponentType, Lower)]
#[component(record)]
pub(crate) struct SingleView {
    pub(crate) lease: LeaseId,
    pub(crate) token: u64,
    #[component(name = "expires-at-ms")]
    pub(crate) expires_at_ms: Option<u64>,
    pub(crate) id: Name,
}

impl LeaseView {
    /// The lease in brief, if it holds exactly one resource (of `pool`, when given).
    pub(crate) fn single(&self, pool: Option<&str>) -> Option<SingleView> {
        match &*self.grants {
            [grant] if pool.is_none_or(|pool| &*grant.pool == pool) => Some(SingleView {
                lease: self.id,
                token: self.token,
                expires_at_ms: self.expires_at_ms,
                id: grant.id.clone(),
            }),
            _ => None,
        }
    }
}

/// How an acquire answers: made from the state, under the pools lock, for a grant made at
/// once; from the lease's view for a waiter, whose grant comes from another operation.
pub(crate) trait Shape {
    type Answer;

    /// The answer for lease `lease`, which `state` holds.
    fn of_state(&self, state: &State, lease: LeaseId) -> Self::Answer;

    /// The answer for a waiter granted `view`.
    fn of_view(&self, view: LeaseView) -> Self::Answer;
}

/// Answers the whole lease.
pub(crate) struct Whole;

impl Shape for Whole {
    type Answer = LeaseView;

    fn of_state(&self, state: &State, lease: LeaseId) -> LeaseView {
        state.view(lease).expect("a granted lease is held")
    }

    fn of_view(&self, view: LeaseView) -> LeaseView {
        view
    }
}

/// Answers the lease in brief if it holds exactly one resource (of `pool`, when given), and
/// otherwise its id. A grant made at once is briefed without building the whole view.
pub(crate) struct Brief<'a> {
    pub(crate) pool: Option<&'a str>,
}

impl Shape for Brief<'_> {
    type Answer = Result<SingleView, LeaseId>;

    fn of_state(&self, state: &State, lease: LeaseId) -> Self::Answer {
        state.single(lease, self.pool).ok_or(lease)
    }

    fn of_view(&self, view: LeaseView) -> Self::Answer {
        view.single(self.pool).ok_or(view.id)
    }
}

/// A free resource (`resman_sdk::pool::Resource`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct ResourceView {
    pub(crate) id: String,
    pub(crate) data: Data,
}

/// A held resource (`resman_sdk::pool::Held`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct HeldView {
    pub(crate) id: String,
    pub(crate) data: Data,
    #[serde(serialize_with = "as_string")]
    pub(crate) lease: LeaseId,
    pub(crate) token: u64,
    pub(crate) holder: u64,
    pub(crate) expires_at_ms: Option<u64>,
}

/// A pool's status (`resman_sdk::pool::PoolStatus`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct StatusView {
    pub(crate) pool: String,
    pub(crate) free: Vec<ResourceView>,
    pub(crate) held: Vec<HeldView>,
    pub(crate) waiting: u32,
}

fn as_string<S: serde::Serializer>(id: &LeaseId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}
