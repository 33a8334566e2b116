//! Tests of the pools, from the rules inward to the files and back out to the runtime:
//!
//! - `model`: a property test of [`State`] against a model simple enough to read as the
//!   specification (pools as ordered free lists, a waiter queue as a `Vec`), over random
//!   sequences of every operation, restarts through a JSON snapshot included. After each step
//!   the state must agree with the model and with a replica built only by replaying the
//!   records the state emitted, which is what journal recovery relies on.
//! - `rules`: one test per rule of the `pools` interface in `sdk/wit/resman.wit`.
//! - `files`: the journal and snapshot on disk: what recovery keeps, drops and refuses.
//! - `runtime`: [`Pools`] itself, threads and folder included.
//!

use super::journal::{self, Folder, Sizes, StoreError};
use super::record::{Data, LeaseId, Record};
use super::state::{Acquired, Snapshot, State, WaiterId, Woken};
use super::view::LeaseView;
use super::Pools;
use resman_sdk::pool::{AcquireRequest, PoolError, Want};

/// The data every test resource carries: its own name, so a grant's data can be checked.
fn data_of(pool: &str, id: &str) -> Data {
    Data::parse(&format!("\"{pool}/{id}\"")).expect("a JSON string")
}

/// The snapshot as its file would hold it: equal text, equal state.
fn snapshot_text(state: &State) -> String {
    let mut snapshot = state.snapshot();
    snapshot.sort();
    serde_json::to_string(&snapshot).expect("a snapshot serializes")
}

/// A lease's resources as `pool/id`, in grant order.
fn grants(view: &LeaseView) -> Vec<String> {
    view.grants
        .iter()
        .map(|grant| format!("{}/{}", grant.pool, grant.id))
        .collect()
}

/// A [`State`] with the clock and the outputs of the operation under way.
struct TestState {
    state: State,
    now: u64,
    log: Vec<Record>,
    woken: Vec<Woken>,
}

impl TestState {
    fn new() -> TestState {
        TestState {
            state: State::default(),
            now: 1_000,
            log: Vec::new(),
            woken: Vec::new(),
        }
    }

    fn add(&mut self, pool: &str, ids: &[&str]) -> u32 {
        let resources = ids.iter().map(|id| (id.to_string(), data_of(pool, id)));
        let resources = resources.collect();
        let (log, woken) = (&mut self.log, &mut self.woken);
        let added = self.state.add(pool, resources, self.now, log, woken);
        added.expect("valid names")
    }

    fn acquire(&mut self, client: u64, request: AcquireRequest) -> Result<Acquired, PoolError> {
        self.state.acquire(client, request, self.now, &mut self.log)
    }

    /// Acquires what must be granted at once.
    fn grant(&mut self, client: u64, request: AcquireRequest) -> LeaseView {
        match self.acquire(client, request) {
            Ok(Acquired::Granted(lease)) => self.state.view(lease).expect("just granted"),
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    /// Acquires what must queue.
    fn wait(&mut self, client: u64, request: AcquireRequest) -> WaiterId {
        match self.acquire(client, request.wait_ms(1_000)) {
            Ok(Acquired::Waiting(id)) => id,
            other => panic!("expected to wait, got {other:?}"),
        }
    }

    fn release(&mut self, lease: LeaseId) -> Result<LeaseView, PoolError> {
        let (log, woken) = (&mut self.log, &mut self.woken);
        self.state.release(lease, self.now, log, woken)
    }

    fn cancel(&mut self, waiter: WaiterId) -> bool {
        let (log, woken) = (&mut self.log, &mut self.woken);
        self.state.cancel_waiter(waiter, self.now, log, woken)
    }

    /// The waiters answered since the last call: `(waiter, Ok(resources) | Err(kind))`.
    fn take_woken(&mut self) -> Vec<(WaiterId, Result<Vec<String>, &'static str>)> {
        let woken = self.woken.drain(..);
        let woken = woken.map(|(id, result)| (id, result.as_ref().map(grants).map_err(kind)));
        woken.collect()
    }

    /// A pool's free resources, in the order they will be granted.
    fn free(&self, pool: &str) -> Vec<String> {
        let status = self.state.status(pool).expect("the pool exists");
        status
            .free
            .into_iter()
            .map(|resource| resource.id)
            .collect()
    }
}

/// A [`PoolError`]'s variant, which is what callers branch on.
fn kind(err: &PoolError) -> &'static str {
    match err {
        PoolError::UnknownPool(_) => "unknown_pool",
        PoolError::UnknownLease(_) => "unknown_lease",
        PoolError::UnknownResource(_) => "unknown_resource",
        PoolError::Invalid(_) => "invalid",
        PoolError::Unavailable(_) => "unavailable",
        PoolError::Conflict(_) => "conflict",
        PoolError::Storage(_) => "storage",
    }
}

mod files;
mod model;
mod rules;
mod runtime;
