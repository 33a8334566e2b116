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
//! One file, as the layout asks; each part is a module so that it reads on its own.

use super::journal::{self, Folder, StoreError};
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
    serde_json::to_string(&state.snapshot()).expect("a snapshot serializes")
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
            Ok(Acquired::Granted(lease)) => lease,
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

mod model {
    //! `State` against a model, over random sequences of operations.

    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use std::collections::{BTreeMap, BTreeSet};

    const POOLS: [&str; 3] = ["a", "b", "c"];
    const NS: &str = "plugin";

    fn rid(index: usize) -> String {
        format!("r{index}")
    }

    #[derive(Clone, Debug)]
    enum WantSpec {
        Count {
            pool: usize,
            count: u32,
        },
        /// `exact` sets `count` to the number of ids rather than 0.
        Ids {
            pool: usize,
            ids: Vec<usize>,
            exact: bool,
        },
    }

    #[derive(Clone, Debug)]
    struct AcquireSpec {
        client: u64,
        wants: Vec<WantSpec>,
        ttl: Option<u64>,
        wait: bool,
        on_disconnect: bool,
        request: Option<usize>,
    }

    impl AcquireSpec {
        fn request(&self) -> AcquireRequest {
            let wants = self.wants.iter().map(|want| match want {
                WantSpec::Count { pool, count } => Want::count(POOLS[*pool], *count),
                WantSpec::Ids { pool, ids, exact } => {
                    let mut want = Want::ids(POOLS[*pool], ids.iter().map(|&i| rid(i)));
                    want.count = if *exact { ids.len() as u32 } else { 0 };
                    want
                }
            });
            AcquireRequest {
                wants: wants.collect(),
                ttl_ms: self.ttl,
                wait_ms: self.wait.then_some(1_000),
                request_id: self.request.map(|r| format!("req-{r}")),
                release_on_disconnect: self.on_disconnect,
            }
        }
    }

    /// An operation as generated: leases and waiters are picked among those the model knows
    /// (`stale` picks among every id ever given, ended ones included).
    #[derive(Clone, Debug)]
    enum Op {
        Add {
            pool: usize,
            ids: Vec<usize>,
        },
        Acquire(AcquireSpec),
        Cancel {
            pick: Index,
            stale: bool,
        },
        Release {
            pick: Index,
            stale: bool,
        },
        ReleaseResource {
            pool: usize,
            id: usize,
        },
        Renew {
            pick: Index,
            ttl: u64,
        },
        /// The clock moves on and due leases expire.
        Advance(u64),
        ClientGone(u64),
        Remove {
            pool: usize,
            ids: Vec<usize>,
            force: bool,
        },
        /// Removes a resource that a queued waiter names, if any does.
        RemoveWanted {
            pick: Index,
            force: bool,
        },
        /// Snapshot to JSON, restore, and `after_restart` after `downtime` ms.
        Restart {
            downtime: u64,
        },
        KvSet {
            key: usize,
            value: usize,
        },
        KvDelete {
            key: usize,
        },
    }

    /// An operation with its picks resolved against the model.
    #[derive(Clone, Debug)]
    enum Call {
        Add(String, Vec<String>),
        Acquire(AcquireSpec),
        Cancel(WaiterId),
        Release(LeaseId),
        ReleaseResource(String, String),
        Renew(LeaseId, u64),
        Advance(u64),
        ClientGone(u64),
        Remove(String, Vec<String>, bool),
        Restart(u64),
        KvSet(String, String),
        KvDelete(String),
    }

    impl Op {
        fn resolve(&self, model: &Model) -> Call {
            let pick = |index: &Index, known: Vec<u64>, next: u64, stale: bool| {
                if stale || known.is_empty() {
                    1 + index.index(next as usize) as u64
                } else {
                    known[index.index(known.len())]
                }
            };
            let leases = || model.leases.keys().copied().collect::<Vec<_>>();
            let ids = |ids: &[usize]| ids.iter().map(|&i| rid(i)).collect();
            match self {
                Op::Add { pool, ids: list } => Call::Add(POOLS[*pool].into(), ids(list)),
                Op::Acquire(spec) => Call::Acquire(spec.clone()),
                Op::Cancel { pick: index, stale } => {
                    let waiting = model.waiters.iter().map(|w| w.id).collect();
                    Call::Cancel(pick(index, waiting, model.next_waiter, *stale))
                }
                Op::Release { pick: index, stale } => {
                    Call::Release(pick(index, leases(), model.next_lease, *stale))
                }
                Op::ReleaseResource { pool, id } => {
                    Call::ReleaseResource(POOLS[*pool].into(), rid(*id))
                }
                Op::Renew { pick: index, ttl } => {
                    Call::Renew(pick(index, leases(), model.next_lease, false), *ttl)
                }
                Op::Advance(ms) => Call::Advance(*ms),
                Op::ClientGone(client) => Call::ClientGone(*client),
                Op::Remove {
                    pool,
                    ids: list,
                    force,
                } => Call::Remove(POOLS[*pool].into(), ids(list), *force),
                Op::RemoveWanted { pick, force } => {
                    let named = model.waiters.iter().flat_map(|w| &w.request.wants);
                    let named = named.flat_map(|want| want.ids.iter().map(|id| (&want.pool, id)));
                    let named: Vec<_> = named.collect();
                    let (pool, id) = named.get(pick.index(named.len().max(1))).copied().unzip();
                    let pool = pool.map_or(POOLS[0], String::as_str);
                    Call::Remove(pool.into(), id.into_iter().cloned().collect(), *force)
                }
                Op::Restart { downtime } => Call::Restart(*downtime),
                Op::KvSet { key, value } => Call::KvSet(format!("k{key}"), format!("v{value}")),
                Op::KvDelete { key } => Call::KvDelete(format!("k{key}")),
            }
        }
    }

    /// A lease as the tests compare it.
    #[derive(Clone, Debug, PartialEq)]
    struct Seen {
        id: LeaseId,
        token: u64,
        holder: u64,
        expires_at_ms: Option<u64>,
        on_disconnect: bool,
        resources: Vec<(String, String)>,
    }

    impl Seen {
        fn of(view: &LeaseView) -> Seen {
            for grant in &view.grants {
                assert_eq!(
                    grant.data,
                    data_of(&grant.pool, &grant.id),
                    "data of {grant:?}"
                );
            }
            let resources = view.grants.iter().map(|g| (g.pool.clone(), g.id.clone()));
            Seen {
                id: view.id,
                token: view.token,
                holder: view.holder,
                expires_at_ms: view.expires_at_ms,
                on_disconnect: view.release_on_disconnect,
                resources: resources.collect(),
            }
        }
    }

    /// What an operation answered.
    #[derive(Debug, PartialEq)]
    enum Answer {
        Lease(Seen),
        Waiting(WaiterId),
        Count(u32),
        Flag(bool),
        Done,
        Failed(&'static str),
    }

    fn answer<T>(result: Result<T, PoolError>, ok: impl FnOnce(T) -> Answer) -> Answer {
        result.map_or_else(|err| Answer::Failed(kind(&err)), ok)
    }

    type Answered = Vec<(WaiterId, Result<Seen, &'static str>)>;

    fn answered(woken: Vec<Woken>) -> Answered {
        let woken = woken.into_iter();
        let woken = woken.map(|(id, result)| (id, result.as_ref().map(Seen::of).map_err(kind)));
        woken.collect()
    }

    #[derive(Clone, Debug)]
    struct ModelLease {
        token: u64,
        holder: u64,
        expires_at_ms: Option<u64>,
        on_disconnect: bool,
        resources: Vec<(String, String)>,
    }

    #[derive(Clone, Debug, Default)]
    struct ModelPool {
        ids: BTreeSet<String>,
        /// In the order they will be granted: freed later, granted later.
        free: Vec<String>,
    }

    #[derive(Clone, Debug)]
    struct ModelWaiter {
        id: WaiterId,
        client: u64,
        request: AcquireRequest,
    }

    /// The specification, written for reading rather than speed.
    #[derive(Clone, Debug)]
    struct Model {
        now: u64,
        pools: BTreeMap<String, ModelPool>,
        leases: BTreeMap<LeaseId, ModelLease>,
        /// Every request id that was granted, and its lease (live or ended).
        requests: BTreeMap<String, LeaseId>,
        /// In arrival order.
        waiters: Vec<ModelWaiter>,
        next_lease: LeaseId,
        next_token: u64,
        next_waiter: WaiterId,
        kv: BTreeMap<String, String>,
        /// Set by a restart: per pool, the length of the free list whose order the model
        /// knows; the order of the rest (leases of several clients ended at once) is not
        /// specified.
        unordered_from: BTreeMap<String, usize>,
    }

    impl Model {
        fn new(now: u64) -> Model {
            Model {
                now,
                pools: BTreeMap::new(),
                leases: BTreeMap::new(),
                requests: BTreeMap::new(),
                waiters: Vec::new(),
                next_lease: 1,
                next_token: 1,
                next_waiter: 1,
                kv: BTreeMap::new(),
                unordered_from: BTreeMap::new(),
            }
        }

        fn on(&mut self, call: &Call, woken: &mut Answered) -> Answer {
            match call {
                Call::Add(pool, ids) => self.add(pool, ids, woken),
                Call::Acquire(spec) => self.acquire(spec),
                Call::Cancel(waiter) => self.cancel(*waiter, woken),
                Call::Release(lease) => self.release(*lease, woken),
                Call::ReleaseResource(pool, id) => self.release_resource(pool, id, woken),
                Call::Renew(lease, ttl) => self.renew(*lease, *ttl),
                Call::Advance(ms) => {
                    self.now += ms;
                    self.expire(woken);
                    Answer::Done
                }
                Call::ClientGone(client) => self.client_gone(*client, woken),
                Call::Remove(pool, ids, force) => self.remove(pool, ids, *force, woken),
                Call::Restart(downtime) => self.restart(*downtime),
                Call::KvSet(key, value) => {
                    self.kv.insert(key.clone(), value.clone());
                    Answer::Done
                }
                Call::KvDelete(key) => Answer::Flag(self.kv.remove(key).is_some()),
            }
        }

        fn seen(&self, lease: LeaseId) -> Option<Seen> {
            let held = self.leases.get(&lease)?;
            Some(Seen {
                id: lease,
                token: held.token,
                holder: held.holder,
                expires_at_ms: held.expires_at_ms,
                on_disconnect: held.on_disconnect,
                resources: held.resources.clone(),
            })
        }

        fn holder_of(&self, pool: &str, id: &str) -> Option<LeaseId> {
            let mut leases = self.leases.iter();
            let holds =
                |lease: &ModelLease| lease.resources.iter().any(|r| r.0 == pool && r.1 == id);
            leases.find(|(_, lease)| holds(lease)).map(|(&id, _)| id)
        }

        fn add(&mut self, pool: &str, ids: &[String], woken: &mut Answered) -> Answer {
            let entry = self.pools.entry(pool.to_owned()).or_default();
            let mut added = 0;
            for id in ids {
                if entry.ids.insert(id.clone()) {
                    entry.free.push(id.clone());
                    added += 1;
                }
            }
            self.serve(woken);
            Answer::Count(added)
        }

        /// The checks of an acquire, in the order the errors are reported.
        fn validate(&self, request: &AcquireRequest) -> Result<(), &'static str> {
            if request.ttl_ms == Some(0) {
                return Err("invalid");
            }
            let mut pools = BTreeSet::new();
            for want in &request.wants {
                let entry = self.pools.get(&want.pool).ok_or("unknown_pool")?;
                if !pools.insert(&want.pool) {
                    return Err("invalid");
                }
                if want.ids.is_empty() {
                    if want.count == 0 {
                        return Err("invalid");
                    }
                    continue;
                }
                if want.count != 0 && want.count as usize != want.ids.len() {
                    return Err("invalid");
                }
                let mut ids = BTreeSet::new();
                for id in &want.ids {
                    if !entry.ids.contains(id) {
                        return Err("unknown_resource");
                    }
                    if !ids.insert(id) {
                        return Err("invalid");
                    }
                }
            }
            Ok(())
        }

        fn acquire(&mut self, spec: &AcquireSpec) -> Answer {
            let request = spec.request();
            if let Err(kind) = self.validate(&request) {
                return Answer::Failed(kind);
            }
            if let Some(request_id) = &request.request_id {
                if let Some(&lease) = self.requests.get(request_id) {
                    return self
                        .seen(lease)
                        .map_or(Answer::Failed("conflict"), Answer::Lease);
                }
                let waiting = self.waiters.iter().map(|w| &w.request.request_id);
                if waiting.flatten().any(|id| id == request_id) {
                    return Answer::Failed("conflict");
                }
            }
            let queued = |pool: &str| self.waiters.iter().any(|w| wants(&w.request, pool));
            let queue_ahead = request.wants.iter().any(|want| queued(&want.pool));
            if !queue_ahead {
                if let Some(picks) = self.pick(&request) {
                    return Answer::Lease(self.grant(spec.client, &request, picks));
                }
            }
            if !spec.wait {
                return Answer::Failed("unavailable");
            }
            let id = self.next_waiter;
            self.next_waiter += 1;
            let waiter = ModelWaiter {
                id,
                client: spec.client,
                request,
            };
            self.waiters.push(waiter);
            Answer::Waiting(id)
        }

        /// What would satisfy `request` now: counts take the head of the free list.
        fn pick(&self, request: &AcquireRequest) -> Option<Vec<(String, String)>> {
            let mut picks = Vec::new();
            for want in &request.wants {
                let entry = &self.pools[&want.pool];
                let ids: Vec<&String> = if want.ids.is_empty() {
                    entry.free.iter().take(want.count as usize).collect()
                } else {
                    want.ids.iter().collect()
                };
                let count = want.ids.len().max(want.count as usize);
                if ids.len() < count || ids.iter().any(|id| !entry.free.contains(id)) {
                    return None;
                }
                picks.extend(ids.into_iter().map(|id| (want.pool.clone(), id.clone())));
            }
            Some(picks)
        }

        fn grant(
            &mut self,
            client: u64,
            request: &AcquireRequest,
            resources: Vec<(String, String)>,
        ) -> Seen {
            let (id, token) = (self.next_lease, self.next_token);
            self.next_lease += 1;
            self.next_token += 1;
            for (pool, rid) in &resources {
                let entry = self.pools.get_mut(pool).expect("picked from it");
                entry.free.retain(|free| free != rid);
            }
            if let Some(request_id) = &request.request_id {
                self.requests.insert(request_id.clone(), id);
            }
            let lease = ModelLease {
                token,
                holder: client,
                expires_at_ms: request.ttl_ms.map(|ttl| self.now + ttl),
                on_disconnect: request.release_on_disconnect,
                resources,
            };
            self.leases.insert(id, lease);
            self.seen(id).expect("just granted")
        }

        /// Ends a lease: its resources join the end of their free lists, in lease order.
        fn end(&mut self, lease: LeaseId) {
            let ended = self.leases.remove(&lease).expect("a held lease");
            for (pool, id) in ended.resources {
                self.pools.get_mut(&pool).expect("exists").free.push(id);
            }
        }

        /// Strict arrival order per pool: a waiter that cannot be served holds back every
        /// later waiter on any of its pools.
        fn serve(&mut self, woken: &mut Answered) {
            let mut blocked = BTreeSet::new();
            let mut index = 0;
            while index < self.waiters.len() {
                let waiter = self.waiters[index].clone();
                let pools: Vec<String> = waiter
                    .request
                    .wants
                    .iter()
                    .map(|w| w.pool.clone())
                    .collect();
                let held_back = pools.iter().any(|pool| blocked.contains(pool));
                match self.pick(&waiter.request).filter(|_| !held_back) {
                    None => {
                        blocked.extend(pools);
                        index += 1;
                    }
                    Some(picks) => {
                        self.waiters.remove(index);
                        let lease = self.grant(waiter.client, &waiter.request, picks);
                        woken.push((waiter.id, Ok(lease)));
                    }
                }
            }
        }

        fn cancel(&mut self, waiter: WaiterId, woken: &mut Answered) -> Answer {
            let Some(index) = self.waiters.iter().position(|w| w.id == waiter) else {
                return Answer::Flag(false);
            };
            self.waiters.remove(index);
            self.serve(woken);
            Answer::Flag(true)
        }

        fn release(&mut self, lease: LeaseId, woken: &mut Answered) -> Answer {
            let Some(seen) = self.seen(lease) else {
                return Answer::Failed("unknown_lease");
            };
            self.end(lease);
            self.serve(woken);
            Answer::Lease(seen)
        }

        fn release_resource(&mut self, pool: &str, id: &str, woken: &mut Answered) -> Answer {
            let Some(entry) = self.pools.get(pool) else {
                return Answer::Failed("unknown_pool");
            };
            if !entry.ids.contains(id) {
                return Answer::Failed("unknown_resource");
            }
            match self.holder_of(pool, id) {
                Some(lease) => self.release(lease, woken),
                None => Answer::Failed("unknown_lease"),
            }
        }

        fn renew(&mut self, lease: LeaseId, ttl: u64) -> Answer {
            if ttl == 0 {
                return Answer::Failed("invalid");
            }
            let Some(held) = self.leases.get_mut(&lease) else {
                return Answer::Failed("unknown_lease");
            };
            held.expires_at_ms = Some(self.now + ttl);
            Answer::Lease(self.seen(lease).expect("held"))
        }

        /// Ends the leases due at `now` (a deadline equal to `now` is due), soonest first.
        fn expire(&mut self, woken: &mut Answered) {
            let mut due: Vec<(u64, LeaseId)> = self
                .leases
                .iter()
                .filter_map(|(&id, lease)| Some((lease.expires_at_ms?, id)))
                .filter(|&(at, _)| at <= self.now)
                .collect();
            due.sort_unstable();
            for &(_, lease) in &due {
                self.end(lease);
            }
            if !due.is_empty() {
                self.serve(woken);
            }
        }

        fn on_disconnect_of(&self, client: Option<u64>) -> Vec<LeaseId> {
            let ends = |lease: &ModelLease| {
                lease.on_disconnect && client.is_none_or(|c| c == lease.holder)
            };
            self.leases
                .iter()
                .filter(|(_, lease)| ends(lease))
                .map(|(&id, _)| id)
                .collect()
        }

        fn client_gone(&mut self, client: u64, woken: &mut Answered) -> Answer {
            for waiter in self.waiters.iter().filter(|w| w.client == client) {
                woken.push((waiter.id, Err("unavailable")));
            }
            self.waiters.retain(|w| w.client != client);
            for lease in self.on_disconnect_of(Some(client)) {
                self.end(lease);
            }
            self.serve(woken);
            Answer::Done
        }

        fn remove(
            &mut self,
            pool: &str,
            ids: &[String],
            force: bool,
            woken: &mut Answered,
        ) -> Answer {
            let Some(entry) = self.pools.get(pool) else {
                return Answer::Failed("unknown_pool");
            };
            let (mut leases, mut targets) = (BTreeSet::new(), BTreeSet::new());
            for id in ids {
                if !entry.ids.contains(id) {
                    return Answer::Failed("unknown_resource");
                }
                if let Some(lease) = self.holder_of(pool, id) {
                    if !force {
                        return Answer::Failed("conflict");
                    }
                    leases.insert(lease);
                }
                targets.insert(id.clone());
            }
            for lease in leases {
                self.end(lease);
            }
            let entry = self.pools.get_mut(pool).expect("checked above");
            entry.ids.retain(|id| !targets.contains(id));
            entry.free.retain(|id| !targets.contains(id));
            // A waiter that wants a removed resource can never be served: it is answered now.
            let doomed = |w: &ModelWaiter| {
                w.request
                    .wants
                    .iter()
                    .any(|want| want.pool == pool && want.ids.iter().any(|id| targets.contains(id)))
            };
            for waiter in self.waiters.iter().filter(|w| doomed(w)) {
                woken.push((waiter.id, Err("unknown_resource")));
            }
            self.waiters.retain(|w| !doomed(w));
            self.serve(woken);
            Answer::Count(targets.len() as u32)
        }

        /// Every request died with the old process; leases past their deadline and
        /// release-on-disconnect leases end.
        fn restart(&mut self, downtime: u64) -> Answer {
            self.waiters.clear();
            self.next_waiter = 1;
            self.now += downtime;
            self.expire(&mut Vec::new());
            self.unordered_from = self
                .pools
                .iter()
                .map(|(name, entry)| (name.clone(), entry.free.len()))
                .collect();
            for lease in self.on_disconnect_of(None) {
                self.end(lease);
            }
            Answer::Done
        }
    }

    /// Whether `request` wants anything of `pool`.
    fn wants(request: &AcquireRequest, pool: &str) -> bool {
        request.wants.iter().any(|want| want.pool == pool)
    }

    /// The state under test, the model, and a replica fed only the emitted records.
    struct Run {
        state: State,
        replica: State,
        model: Model,
        /// The highest token each resource was ever granted with, across restarts.
        tokens: BTreeMap<(String, String), u64>,
    }

    impl Run {
        fn new() -> Run {
            Run {
                state: State::default(),
                replica: State::default(),
                model: Model::new(1_000_000),
                tokens: BTreeMap::new(),
            }
        }

        fn step(&mut self, op: &Op) {
            let call = op.resolve(&self.model);
            let (mut log, mut woken) = (Vec::new(), Vec::new());
            let actual = self.on_state(&call, &mut log, &mut woken);
            let mut expected_woken = Vec::new();
            let expected = self.model.on(&call, &mut expected_woken);
            assert_eq!(actual, expected, "the answer to {call:?}");
            let woken = answered(woken);
            assert_eq!(woken, expected_woken, "the waiters {call:?} answered");
            self.replay(&log);
            self.check_tokens(&log);
            self.adopt_unordered_free();
            self.check_fifo(&actual, &woken, &log);
            self.check_agreement(&call);
        }

        fn on_state(
            &mut self,
            call: &Call,
            log: &mut Vec<Record>,
            woken: &mut Vec<Woken>,
        ) -> Answer {
            let now = self.model.now;
            let state = &mut self.state;
            match call {
                Call::Add(pool, ids) => {
                    let resources = ids
                        .iter()
                        .map(|id| (id.clone(), data_of(pool, id)))
                        .collect();
                    answer(state.add(pool, resources, now, log, woken), Answer::Count)
                }
                Call::Acquire(spec) => {
                    let acquired = state.acquire(spec.client, spec.request(), now, log);
                    answer(acquired, |acquired| match acquired {
                        Acquired::Granted(lease) => Answer::Lease(Seen::of(&lease)),
                        Acquired::Waiting(id) => Answer::Waiting(id),
                    })
                }
                Call::Cancel(waiter) => Answer::Flag(state.cancel_waiter(*waiter, now, log, woken)),
                Call::Release(lease) => answer(state.release(*lease, now, log, woken), |view| {
                    Answer::Lease(Seen::of(&view))
                }),
                Call::ReleaseResource(pool, id) => {
                    let released = state.release_resource(pool, id, now, log, woken);
                    answer(released, |view| Answer::Lease(Seen::of(&view)))
                }
                Call::Renew(lease, ttl) => answer(state.renew(*lease, *ttl, now, log), |view| {
                    Answer::Lease(Seen::of(&view))
                }),
                Call::Advance(ms) => {
                    state.expire(now + ms, log, woken);
                    Answer::Done
                }
                Call::ClientGone(client) => {
                    state.client_gone(*client, now, log, woken);
                    Answer::Done
                }
                Call::Remove(pool, ids, force) => answer(
                    state.remove(pool, ids, *force, now, log, woken),
                    Answer::Count,
                ),
                Call::Restart(downtime) => {
                    self.restart(now + downtime, log);
                    Answer::Done
                }
                Call::KvSet(key, value) => {
                    state
                        .kv_set(NS, key, value, log)
                        .expect("within the limits");
                    Answer::Done
                }
                Call::KvDelete(key) => Answer::Flag(state.kv_delete(NS, key, log)),
            }
        }

        /// What a host restart does to the state: through the snapshot file's JSON.
        fn restart(&mut self, now: u64, log: &mut Vec<Record>) {
            let text = snapshot_text(&self.state);
            let snapshot: Snapshot = serde_json::from_str(&text).expect("a snapshot parses");
            let mut restored = State::restore(snapshot).expect("a snapshot restores");
            assert_eq!(
                snapshot_text(&restored),
                text,
                "restore rebuilds the snapshot exactly"
            );
            restored.after_restart(now, log);
            self.state = restored;
        }

        /// The journal's view: every emitted record applies to the replica.
        fn replay(&mut self, log: &[Record]) {
            for record in log {
                if let Err(err) = self.replica.apply(record) {
                    panic!("replaying {record:?}: {err}");
                }
            }
        }

        /// Fencing: a grant's token is above every token its resources had before.
        fn check_tokens(&mut self, log: &[Record]) {
            for record in log {
                let Record::Grant(grant) = record else {
                    continue;
                };
                for resource in &grant.resources {
                    let before = self.tokens.insert(resource.clone(), grant.token);
                    assert!(
                        before.is_none_or(|before| before < grant.token),
                        "{resource:?} granted with token {} after {before:?}",
                        grant.token
                    );
                }
            }
        }

        /// After a restart, leases of several clients end in an unspecified order: the
        /// state's order of those is taken once it holds the same resources.
        fn adopt_unordered_free(&mut self) {
            for (pool, known) in std::mem::take(&mut self.model.unordered_from) {
                let actual = free_of(&self.state, &pool);
                let expected = &mut self.model.pools.get_mut(&pool).expect("exists").free;
                assert_eq!(
                    actual[..known],
                    expected[..known],
                    "free order of {pool} kept"
                );
                let sorted = |list: &[String]| list.iter().cloned().collect::<BTreeSet<_>>();
                assert_eq!(
                    sorted(&actual),
                    sorted(expected),
                    "free resources of {pool}"
                );
                *expected = actual;
            }
        }

        /// Nothing overtakes an earlier waiter on any of its pools, and no waiter is left
        /// queued that could be served now.
        fn check_fifo(&self, answer: &Answer, woken: &Answered, log: &[Record]) {
            let waiters = &self.model.waiters;
            let shares = |lease: &Seen, waiter: &ModelWaiter| {
                lease
                    .resources
                    .iter()
                    .any(|(pool, _)| wants(&waiter.request, pool))
            };
            for (id, result) in woken {
                let Ok(lease) = result else { continue };
                let earlier = waiters.iter().find(|w| w.id < *id && shares(lease, w));
                assert!(earlier.is_none(), "waiter {id} overtook {earlier:?}");
            }
            let fresh = |lease: &Seen| {
                log.iter()
                    .any(|r| matches!(r, Record::Grant(g) if g.lease == lease.id))
            };
            if let Answer::Lease(lease) = answer {
                if fresh(lease) {
                    let queued = waiters.iter().find(|w| shares(lease, w));
                    assert!(queued.is_none(), "lease {} overtook {queued:?}", lease.id);
                }
            }
            let mut idle = self.model.clone();
            let mut served = Vec::new();
            idle.serve(&mut served);
            assert!(
                served.is_empty(),
                "waiters left that could be served: {served:?}"
            );
        }

        fn check_agreement(&self, call: &Call) {
            let state = &self.state;
            if let Err(err) = state.check().and_then(|()| self.replica.check()) {
                panic!("invariant broken after {call:?}: {err}");
            }
            let replayed = snapshot_text(&self.replica);
            assert_eq!(
                snapshot_text(state),
                replayed,
                "replaying the records after {call:?}"
            );
            let resources = self.model.pools.iter().flat_map(|(name, entry)| {
                entry.ids.iter().map(move |id| (name.clone(), id.clone()))
            });
            assert_eq!(
                state.resources(),
                resources.collect(),
                "resources after {call:?}"
            );
            self.check_leases(call);
            self.check_pools(call);
            let keys: Vec<String> = self.model.kv.keys().cloned().collect();
            assert_eq!(state.kv_keys(NS, ""), keys, "store keys after {call:?}");
            for (key, value) in &self.model.kv {
                assert_eq!(
                    state.kv_get(NS, key).as_ref(),
                    Some(value),
                    "store key {key}"
                );
            }
        }

        /// Which lease holds what, and every lease as the model has it; no resource in two.
        fn check_leases(&self, call: &Call) {
            let mut holdings = BTreeMap::new();
            for (&id, lease) in &self.model.leases {
                let seen = self.state.lease(id).map(|view| Seen::of(&view));
                assert_eq!(
                    seen,
                    Ok(self.model.seen(id).expect("held")),
                    "lease {id} after {call:?}"
                );
                for resource in &lease.resources {
                    let twice = holdings.insert(resource.clone(), id);
                    assert!(twice.is_none(), "{resource:?} in leases {twice:?} and {id}");
                }
            }
            assert_eq!(self.state.holdings(), holdings, "holdings after {call:?}");
        }

        /// Free order and waiting counts per pool.
        fn check_pools(&self, call: &Call) {
            for (name, entry) in &self.model.pools {
                assert_eq!(
                    free_of(&self.state, name),
                    entry.free,
                    "free {name} after {call:?}"
                );
                let waiting = self
                    .model
                    .waiters
                    .iter()
                    .filter(|w| wants(&w.request, name));
                let status = self.state.status(name).expect("the pool exists");
                assert_eq!(
                    status.waiting as usize,
                    waiting.count(),
                    "waiting on {name}"
                );
            }
        }
    }

    fn free_of(state: &State, pool: &str) -> Vec<String> {
        let status = state.status(pool).expect("the pool exists");
        status
            .free
            .into_iter()
            .map(|resource| resource.id)
            .collect()
    }

    /// Resource ids run `r0..r5`; the pools start with 4, 3 and 2 of them, so requests
    /// contend, queue, and sometimes name ids that are not there.
    const IDS: usize = 6;

    fn want() -> impl Strategy<Value = WantSpec> {
        let count = prop_oneof![1 => Just(0u32), 15 => 1..4u32];
        let counted = (0..3usize, count).prop_map(|(pool, count)| WantSpec::Count { pool, count });
        let ids = (
            0..3usize,
            prop::collection::vec(0..IDS, 1..3),
            prop::bool::weighted(0.3),
        );
        let named = ids.prop_map(|(pool, ids, exact)| WantSpec::Ids { pool, ids, exact });
        prop_oneof![3 => counted, 2 => named]
    }

    fn acquire() -> impl Strategy<Value = AcquireSpec> {
        let wants = prop_oneof![
            2 => prop::collection::vec(want(), 1),
            1 => prop::collection::vec(want(), 2),
        ];
        let ttl = prop::option::weighted(0.4, prop_oneof![1 => Just(0u64), 15 => 1..80u64]);
        let flags = (prop::bool::weighted(0.6), prop::bool::weighted(0.3));
        let request = prop::option::weighted(0.4, 0..4usize);
        (1..4u64, wants, ttl, flags, request).prop_map(
            |(client, wants, ttl, (wait, on_disconnect), request)| AcquireSpec {
                client,
                wants,
                ttl,
                wait,
                on_disconnect,
                request,
            },
        )
    }

    fn op() -> impl Strategy<Value = Op> {
        let ids = |max| prop::collection::vec(0..IDS, 0..max);
        let pick = || (any::<Index>(), prop::bool::weighted(0.1));
        prop_oneof![
            2 => (0..3usize, ids(4)).prop_map(|(pool, ids)| Op::Add { pool, ids }),
            10 => acquire().prop_map(Op::Acquire),
            1 => pick().prop_map(|(pick, stale)| Op::Cancel { pick, stale }),
            5 => pick().prop_map(|(pick, stale)| Op::Release { pick, stale }),
            1 => (0..3usize, 0..4usize).prop_map(|(pool, id)| Op::ReleaseResource { pool, id }),
            1 => (any::<Index>(), 0..60u64).prop_map(|(pick, ttl)| Op::Renew { pick, ttl }),
            3 => (0..40u64).prop_map(Op::Advance),
            1 => (1..4u64).prop_map(Op::ClientGone),
            2 => (0..3usize, ids(3), any::<bool>())
                .prop_map(|(pool, ids, force)| Op::Remove { pool, ids, force }),
            1 => (any::<Index>(), any::<bool>())
                .prop_map(|(pick, force)| Op::RemoveWanted { pick, force }),
            1 => (0..60u64).prop_map(|downtime| Op::Restart { downtime }),
            1 => (0..4usize, 0..3usize).prop_map(|(key, value)| Op::KvSet { key, value }),
            1 => (0..4usize).prop_map(|key| Op::KvDelete { key }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn state_agrees_with_the_model_and_with_its_replayed_records(
            ops in prop::collection::vec(op(), 1..60)
        ) {
            let mut run = Run::new();
            for (pool, size) in [(0, 4), (1, 3), (2, 2)] {
                run.step(&Op::Add { pool, ids: (0..size).collect() });
            }
            for op in &ops {
                run.step(op);
            }
        }
    }
}

mod rules {
    //! The rules of the `pools` interface, one at a time.

    use super::*;
    use crate::pools::state::{MAX_NAME_BYTES, MAX_VALUE_BYTES};

    fn with_pool(ids: &[&str]) -> TestState {
        let mut t = TestState::new();
        t.add("p", ids);
        t
    }

    #[test]
    fn a_repeated_request_id_returns_the_same_lease_and_grants_nothing() {
        let mut t = with_pool(&["r0", "r1", "r2"]);
        let first = t.grant(1, AcquireRequest::count("p", 1).request_id("job-7"));
        let records = t.log.len();
        let again = t.grant(1, AcquireRequest::count("p", 2).request_id("job-7"));
        assert_eq!(again, first, "same id, token and resources");
        assert_eq!(t.log.len(), records, "nothing new was journaled");
        assert_eq!(t.free("p"), ["r1", "r2"]);
    }

    #[test]
    fn a_request_id_repeated_after_its_lease_ended_is_a_conflict() {
        let mut t = with_pool(&["r0"]);
        let lease = t.grant(1, AcquireRequest::count("p", 1).request_id("job-7"));
        t.release(lease.id).unwrap();
        let again = t.acquire(1, AcquireRequest::count("p", 1).request_id("job-7"));
        assert!(matches!(again, Err(PoolError::Conflict(_))), "{again:?}");
        assert_eq!(t.free("p"), ["r0"]);
    }

    #[test]
    fn a_request_id_that_is_still_waiting_is_not_granted_twice() {
        let mut t = with_pool(&["r0"]);
        let holder = t.grant(1, AcquireRequest::count("p", 1));
        t.wait(2, AcquireRequest::count("p", 1).request_id("job-7"));
        let twin = t.acquire(
            3,
            AcquireRequest::count("p", 1)
                .request_id("job-7")
                .wait_ms(1_000),
        );
        assert!(matches!(twin, Err(PoolError::Conflict(_))), "{twin:?}");
        t.release(holder.id).unwrap();
        t.add("p", &["r1"]);
        let woken = t.take_woken();
        let [(_, Ok(granted))] = &woken[..] else {
            panic!("one grant, got {woken:?}")
        };
        assert_eq!(granted, &["p/r0"]);
        let again = t.grant(3, AcquireRequest::count("p", 1).request_id("job-7"));
        assert_eq!(
            grants(&again),
            ["p/r0"],
            "the repeat answers the waiter's lease"
        );
        assert_eq!(t.free("p"), ["r1"]);
        t.release(again.id).unwrap();
        let restored = State::restore(t.state.snapshot());
        assert!(restored.is_ok(), "{:?}", restored.err());
    }

    #[test]
    fn bad_acquires_are_refused_with_the_matching_error_and_change_nothing() {
        let mut t = with_pool(&["r0", "r1"]);
        t.add("q", &["s0"]);
        let cases = [
            (AcquireRequest::count("p", 0), "invalid"),
            (AcquireRequest::of(Vec::new()), "invalid"),
            (AcquireRequest::count("nowhere", 1), "unknown_pool"),
            (
                AcquireRequest::of(vec![Want::ids("p", ["r9"])]),
                "unknown_resource",
            ),
            (
                AcquireRequest::of(vec![Want::ids("p", ["r0", "r0"])]),
                "invalid",
            ),
            (
                AcquireRequest::of(vec![Want::count("p", 1), Want::count("p", 1)]),
                "invalid",
            ),
            (AcquireRequest::count("p", 1).ttl_ms(0), "invalid"),
            (AcquireRequest::count("p", 3), "unavailable"),
            (AcquireRequest::count("p", 1).request_id(""), "invalid"),
        ];
        let mut mismatched = Want::ids("p", ["r0"]);
        mismatched.count = 2;
        let cases = cases
            .into_iter()
            .chain([(AcquireRequest::of(vec![mismatched]), "invalid")]);
        for (request, expected) in cases {
            let refused = t.acquire(1, request.clone());
            assert_eq!(
                refused.as_ref().map_err(kind).err(),
                Some(expected),
                "{request:?}"
            );
        }
        assert!(
            t.log.len() == 2 && t.state.holdings().is_empty(),
            "only the adds were made"
        );
        assert_eq!(kind(&t.release(42).unwrap_err()), "unknown_lease");
        let renewed = t.state.renew(42, 0, t.now, &mut t.log).unwrap_err();
        assert_eq!(kind(&renewed), "invalid");
        let free = t
            .state
            .release_resource("p", "r0", t.now, &mut t.log, &mut t.woken);
        assert_eq!(kind(&free.unwrap_err()), "unknown_lease");
        let unknown = t
            .state
            .release_resource("p", "r9", t.now, &mut t.log, &mut t.woken);
        assert_eq!(kind(&unknown.unwrap_err()), "unknown_resource");
    }

    #[test]
    fn adding_skips_ids_already_present_and_refuses_bad_names() {
        let mut t = with_pool(&["r0", "r1"]);
        assert_eq!(t.add("p", &["r1", "r2", "r2"]), 1);
        assert_eq!(t.free("p"), ["r0", "r1", "r2"]);
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        for (pool, id) in [
            ("", "r"),
            ("p", ""),
            (long.as_str(), "r"),
            ("p", long.as_str()),
        ] {
            let resources = vec![(id.to_owned(), Data::null())];
            let added = t
                .state
                .add(pool, resources, t.now, &mut t.log, &mut t.woken);
            assert_eq!(
                added.map_err(|err| kind(&err)),
                Err("invalid"),
                "{pool:.8}/{id:.8}"
            );
        }
    }

    #[test]
    fn a_multi_pool_acquire_is_all_or_nothing() {
        let mut t = with_pool(&["r0", "r1"]);
        t.add("q", &["s0"]);
        let both = || AcquireRequest::of(vec![Want::count("p", 2), Want::count("q", 2)]);
        let short = t.acquire(1, both());
        assert!(matches!(short, Err(PoolError::Unavailable(_))), "{short:?}");
        assert!(t.state.holdings().is_empty(), "nothing of p was taken");
        assert_eq!(t.free("p"), ["r0", "r1"]);
        t.add("q", &["s1"]);
        assert_eq!(
            grants(&t.grant(1, both())),
            ["p/r0", "p/r1", "q/s0", "q/s1"]
        );
    }

    #[test]
    fn free_resources_are_granted_in_the_order_they_were_freed() {
        let mut t = with_pool(&["r0", "r1", "r2"]);
        let first = t.grant(1, AcquireRequest::count("p", 1));
        let second = t.grant(1, AcquireRequest::count("p", 1));
        t.release(second.id).unwrap();
        t.release(first.id).unwrap();
        assert_eq!(t.free("p"), ["r2", "r1", "r0"]);
        let next = t.grant(1, AcquireRequest::count("p", 2));
        assert_eq!(grants(&next), ["p/r2", "p/r1"]);
        assert!(next.token > second.token, "tokens only grow");
    }

    /// A wants 3 with 1 free; nothing later overtakes it, waiting or not, and it is not
    /// starved by small requests.
    #[test]
    fn a_waiter_keeps_its_place_against_later_acquires() {
        let mut t = with_pool(&["r0", "r1", "r2", "r3"]);
        let two = t.grant(1, AcquireRequest::count("p", 2));
        let one = t.grant(1, AcquireRequest::count("p", 1));
        let a = t.wait(2, AcquireRequest::count("p", 3));
        let later = t.acquire(3, AcquireRequest::count("p", 1));
        assert!(
            matches!(later, Err(PoolError::Unavailable(_))),
            "r3 is free but A is first"
        );
        let b = t.wait(3, AcquireRequest::count("p", 1));
        assert_eq!(t.state.status("p").unwrap().waiting, 2);
        t.release(two.id).unwrap();
        assert_eq!(
            t.take_woken(),
            [(a, Ok(vec!["p/r3".into(), "p/r0".into(), "p/r1".into()]))]
        );
        t.release(one.id).unwrap();
        assert_eq!(t.take_woken(), [(b, Ok(vec!["p/r2".into()]))]);
        assert_eq!(t.state.status("p").unwrap().waiting, 0);
    }

    #[test]
    fn a_waiter_on_two_pools_holds_back_later_waiters_on_either() {
        let mut t = with_pool(&["r0"]);
        t.add("q", &["s0"]);
        let held = t.grant(1, AcquireRequest::count("p", 1));
        let both = t.wait(
            2,
            AcquireRequest::of(vec![Want::count("p", 1), Want::count("q", 1)]),
        );
        let q_only = t.wait(3, AcquireRequest::count("q", 1));
        t.add("z", &["z0"]);
        assert!(
            t.take_woken().is_empty(),
            "q is free, but the earlier waiter wants it too"
        );
        t.release(held.id).unwrap();
        assert_eq!(
            t.take_woken(),
            [(both, Ok(vec!["p/r0".into(), "q/s0".into()]))]
        );
        t.add("q", &["s1"]);
        assert_eq!(t.take_woken(), [(q_only, Ok(vec!["q/s1".into()]))]);
    }

    #[test]
    fn cancelling_a_waiter_lets_the_one_behind_it_through() {
        let mut t = with_pool(&["r0", "r1"]);
        t.grant(1, AcquireRequest::count("p", 1));
        let a = t.wait(2, AcquireRequest::count("p", 2));
        let b = t.wait(3, AcquireRequest::count("p", 1));
        assert!(t.cancel(a));
        assert_eq!(t.take_woken(), [(b, Ok(vec!["p/r1".into()]))]);
        assert!(!t.cancel(a), "already gone");
        assert!(!t.cancel(b), "already answered");
    }

    #[test]
    fn removing_a_resource_answers_the_waiters_that_want_it() {
        let mut t = with_pool(&["r0", "r1"]);
        t.add("q", &["s0", "s1"]);
        t.grant(1, AcquireRequest::count("p", 1));
        let doomed = AcquireRequest::of(vec![Want::count("p", 2), Want::ids("q", ["s0"])]);
        let doomed = t.wait(2, doomed);
        let behind = t.wait(3, AcquireRequest::count("q", 1));
        let removed = t
            .state
            .remove("q", &["s0".into()], false, t.now, &mut t.log, &mut t.woken);
        assert_eq!(removed, Ok(1));
        let woken = t.take_woken();
        assert_eq!(
            woken,
            [
                (doomed, Err("unknown_resource")),
                (behind, Ok(vec!["q/s1".into()]))
            ]
        );
    }

    #[test]
    fn removing_a_held_resource_needs_force_which_ends_its_lease() {
        let mut t = with_pool(&["r0", "r1", "r2"]);
        let lease = t.grant(1, AcquireRequest::count("p", 2));
        let ids = ["r2".to_owned(), "r0".to_owned()];
        let refused = t
            .state
            .remove("p", &ids, false, t.now, &mut t.log, &mut t.woken);
        assert!(
            matches!(refused, Err(PoolError::Conflict(_))),
            "{refused:?}"
        );
        assert_eq!(t.free("p"), ["r2"], "nothing was removed");
        let forced = t
            .state
            .remove("p", &ids, true, t.now, &mut t.log, &mut t.woken);
        assert_eq!(forced, Ok(2));
        assert_eq!(kind(&t.state.lease(lease.id).unwrap_err()), "unknown_lease");
        assert_eq!(
            t.free("p"),
            ["r1"],
            "the lease's other resource is free again"
        );
    }

    #[test]
    fn client_gone_ends_its_waiters_and_release_on_disconnect_leases_only() {
        let mut t = with_pool(&["r0", "r1", "r2"]);
        let fleeting = t.grant(1, AcquireRequest::count("p", 1).release_on_disconnect());
        let kept = t.grant(1, AcquireRequest::count("p", 1));
        let other = t.grant(2, AcquireRequest::count("p", 1).release_on_disconnect());
        let mine = t.wait(1, AcquireRequest::count("p", 2));
        let theirs = t.wait(2, AcquireRequest::count("p", 1));
        t.state.client_gone(1, t.now, &mut t.log, &mut t.woken);
        assert_eq!(
            t.take_woken(),
            [
                (mine, Err("unavailable")),
                (theirs, Ok(vec!["p/r0".into()]))
            ]
        );
        assert!(t.state.lease(fleeting.id).is_err());
        assert!(t.state.lease(kept.id).is_ok() && t.state.lease(other.id).is_ok());
    }

    #[test]
    fn a_lease_expires_at_exactly_its_deadline() {
        let mut t = with_pool(&["r0"]);
        let lease = t.grant(1, AcquireRequest::count("p", 1).ttl_ms(100));
        assert_eq!(lease.expires_at_ms, Some(1_100));
        assert_eq!(t.state.next_expiry(), Some(1_100));
        t.log.clear();
        t.state.expire(1_099, &mut t.log, &mut t.woken);
        assert!(t.log.is_empty() && t.state.lease(lease.id).is_ok());
        t.state.expire(1_100, &mut t.log, &mut t.woken);
        assert_eq!(t.log, [Record::Release { lease: lease.id }]);
        assert_eq!(t.state.next_expiry(), None);
    }

    #[test]
    fn renewing_moves_the_deadline_from_now() {
        let mut t = with_pool(&["r0"]);
        let lease = t.grant(1, AcquireRequest::count("p", 1).ttl_ms(100));
        let renewed = t.state.renew(lease.id, 500, 1_050, &mut t.log).unwrap();
        assert_eq!(renewed.expires_at_ms, Some(1_550));
        t.state.expire(1_100, &mut t.log, &mut t.woken);
        assert!(t.state.lease(lease.id).is_ok(), "the old deadline is gone");
        t.state.expire(1_550, &mut t.log, &mut t.woken);
        assert!(t.state.lease(lease.id).is_err());
    }

    #[test]
    fn a_restart_ends_expired_and_release_on_disconnect_leases_and_keeps_the_others() {
        let mut t = with_pool(&["r0", "r1", "r2", "r3"]);
        let expired = t.grant(
            1,
            AcquireRequest::count("p", 1).ttl_ms(100).request_id("old"),
        );
        let fleeting = t.grant(2, AcquireRequest::count("p", 1).release_on_disconnect());
        let timed = t.grant(3, AcquireRequest::count("p", 1).ttl_ms(10_000));
        let plain = t.grant(4, AcquireRequest::count("p", 1));
        let text = snapshot_text(&t.state);
        let mut state = State::restore(serde_json::from_str(&text).unwrap()).unwrap();
        let mut log = Vec::new();
        state.after_restart(2_000, &mut log);
        let ended = [
            Record::Release { lease: expired.id },
            Record::Release { lease: fleeting.id },
        ];
        assert_eq!(log, ended);
        assert_eq!(state.lease(timed.id).unwrap(), timed);
        assert_eq!(state.lease(plain.id).unwrap(), plain);
        let repeat = state.acquire(
            1,
            AcquireRequest::count("p", 1).request_id("old"),
            2_000,
            &mut log,
        );
        assert!(matches!(repeat, Err(PoolError::Conflict(_))), "{repeat:?}");
        let next = state.acquire(5, AcquireRequest::count("p", 1), 2_000, &mut log);
        let Ok(Acquired::Granted(next)) = next else {
            panic!("{next:?}")
        };
        assert!(next.token > plain.token && next.id > plain.id);
    }

    #[test]
    fn store_keys_come_in_order_by_prefix_and_namespace() {
        let mut t = TestState::new();
        for key in ["b", "a2", "a1", "a10", "ab", ""] {
            t.state.kv_set("one", key, key, &mut t.log).unwrap();
        }
        t.state.kv_set("two", "a0", "x", &mut t.log).unwrap();
        assert_eq!(t.state.kv_keys("one", "a"), ["a1", "a10", "a2", "ab"]);
        assert_eq!(
            t.state.kv_keys("one", ""),
            ["", "a1", "a10", "a2", "ab", "b"]
        );
        assert_eq!(t.state.kv_keys("two", "a"), ["a0"]);
        assert!(t.state.kv_keys("three", "").is_empty());
        assert!(t.state.kv_delete("one", "a1", &mut t.log));
        assert!(!t.state.kv_delete("one", "a1", &mut t.log));
        assert_eq!(t.state.kv_get("one", "a1"), None);
        assert_eq!(t.state.kv_get("one", "a2").as_deref(), Some("a2"));
    }

    #[test]
    fn store_keys_and_values_have_size_limits() {
        let mut t = TestState::new();
        let key = "k".repeat(MAX_NAME_BYTES);
        let value = "v".repeat(MAX_VALUE_BYTES);
        assert!(t.state.kv_set("ns", &key, &value, &mut t.log).is_ok());
        let long_key = "k".repeat(MAX_NAME_BYTES + 1);
        assert!(t.state.kv_set("ns", &long_key, "v", &mut t.log).is_err());
        let long_value = "v".repeat(MAX_VALUE_BYTES + 1);
        assert!(t.state.kv_set("ns", "k", &long_value, &mut t.log).is_err());
        assert_eq!(t.log.len(), 1, "refused writes are not journaled");
        assert_eq!(t.state.kv_keys("ns", ""), [key]);
    }
}

mod files {
    //! The journal and snapshot files: what recovery keeps, drops and refuses.

    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};

    fn journal_path(folder: &Folder, number: u64) -> PathBuf {
        folder.path().join(format!("journal-{number:08}.log"))
    }

    /// The records of a little of everything, and the state they build.
    fn workload() -> (State, Vec<Record>) {
        let mut t = TestState::new();
        t.add("p", &["r0", "r1", "r2", "r3"]);
        let first = t.grant(1, AcquireRequest::count("p", 2).ttl_ms(60_000));
        let once = t.grant(2, AcquireRequest::count("p", 1).request_id("once"));
        t.state.kv_set("plugin", "k", "v", &mut t.log).unwrap();
        t.release(first.id).unwrap();
        t.state.renew(once.id, 5_000, t.now, &mut t.log).unwrap();
        t.add("q", &["s0"]);
        let both = AcquireRequest::of(vec![Want::count("p", 1), Want::ids("q", ["s0"])]);
        t.grant(3, both.release_on_disconnect());
        t.release(once.id).unwrap();
        assert!(t.log.len() >= 8);
        (t.state, t.log)
    }

    /// Frames for `records` numbered from `first_seq`, and where each frame starts.
    fn frames(records: &[Record], first_seq: u64) -> (Vec<u8>, Vec<usize>) {
        let (mut bytes, mut starts) = (Vec::new(), Vec::new());
        for (seq, record) in (first_seq..).zip(records) {
            starts.push(bytes.len());
            journal::encode(seq, record, &mut bytes);
        }
        (bytes, starts)
    }

    fn replayed(records: &[Record]) -> State {
        let mut state = State::default();
        for record in records {
            state.apply(record).expect("records of a live run apply");
        }
        state
    }

    fn write_journal(folder: &Folder, number: u64, bytes: &[u8]) {
        let mut journal = folder.create_journal(number).unwrap();
        journal.commit(bytes).unwrap();
        assert_eq!(journal.len, bytes.len() as u64);
    }

    /// A folder with one journal holding `records`.
    fn folder_with(dir: &Path, records: &[Record]) -> (Folder, Vec<u8>, Vec<usize>) {
        let folder = Folder::open(dir).unwrap();
        let (bytes, starts) = frames(records, 1);
        write_journal(&folder, 0, &bytes);
        (folder, bytes, starts)
    }

    fn corrupt_at(err: StoreError) -> (PathBuf, u64) {
        match err {
            StoreError::Corrupt { path, offset, .. } => (path, offset),
            other => panic!("expected corruption, got {other}"),
        }
    }

    #[test]
    fn a_journal_recovers_the_state_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let (state, records) = workload();
        let (folder, _, _) = folder_with(dir.path(), &records);
        let recovered = folder.recover().unwrap();
        assert_eq!(snapshot_text(&recovered.state), snapshot_text(&state));
        assert_eq!(recovered.seq, records.len() as u64);
        assert_eq!(
            (recovered.replayed, recovered.torn_bytes),
            (records.len() as u64, 0)
        );
        assert_eq!(recovered.next_journal, 1);
        assert!(recovered.state.check().is_ok());
    }

    /// A journal's file as it can be found: the frames alone, or followed by the zeros the
    /// journal was extended with ahead of them.
    fn layouts(bytes: &[u8]) -> [Vec<u8>; 2] {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len() + 4096, 0);
        [bytes.to_vec(), padded]
    }

    #[test]
    fn a_last_frame_cut_anywhere_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = workload();
        let (folder, bytes, starts) = folder_with(dir.path(), &records);
        let kept = &records[..records.len() - 1];
        let expected = snapshot_text(&replayed(kept));
        let last = *starts.last().unwrap();
        for cut in last..bytes.len() {
            for file in layouts(&bytes[..cut]) {
                let what = format!("cut at {cut} of a {}-byte file", file.len());
                fs::write(journal_path(&folder, 0), &file).unwrap();
                let recovered = folder
                    .recover()
                    .unwrap_or_else(|err| panic!("{what}: {err}"));
                assert_eq!(recovered.seq, kept.len() as u64, "{what}");
                assert!(recovered.torn_bytes <= (cut - last) as u64, "{what}");
                assert_eq!(snapshot_text(&recovered.state), expected, "{what}");
            }
        }
    }

    #[test]
    fn a_last_frame_with_a_flipped_bit_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = workload();
        let (folder, bytes, starts) = folder_with(dir.path(), &records);
        let last = *starts.last().unwrap();
        // The seq, then the first, a middle and the last byte of the record.
        for at in [
            last + 8,
            last + 16,
            (last + bytes.len()) / 2,
            bytes.len() - 1,
        ] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            for file in layouts(&damaged) {
                let what = format!("flip at {at} of a {}-byte file", file.len());
                fs::write(journal_path(&folder, 0), &file).unwrap();
                let recovered = folder
                    .recover()
                    .unwrap_or_else(|err| panic!("{what}: {err}"));
                assert_eq!(recovered.seq, records.len() as u64 - 1, "{what}");
                assert_eq!(recovered.torn_bytes, (bytes.len() - last) as u64, "{what}");
            }
        }
    }

    /// Zeros after the frames are the room a journal is extended with, or a crash's hole.
    #[test]
    fn zeros_after_the_frames_end_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (state, records) = workload();
        let (folder, bytes, _) = folder_with(dir.path(), &records);
        for zeros in [1, 15, 16, 4096] {
            let mut padded = bytes.clone();
            padded.resize(bytes.len() + zeros, 0);
            fs::write(journal_path(&folder, 0), &padded).unwrap();
            let recovered = folder.recover().unwrap();
            assert_eq!(recovered.seq, records.len() as u64, "{zeros} zeros");
            assert_eq!(recovered.torn_bytes, 0, "{zeros} zeros are no torn write");
            assert_eq!(snapshot_text(&recovered.state), snapshot_text(&state));
        }
    }

    #[test]
    fn a_damaged_frame_before_the_last_is_corruption_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = workload();
        let (folder, bytes, starts) = folder_with(dir.path(), &records);
        let mut damaged = bytes.clone();
        damaged[starts[2] + 20] ^= 0x01;
        fs::write(journal_path(&folder, 0), &damaged).unwrap();
        let err = folder.recover().unwrap_err();
        assert!(err.to_string().contains("journal-00000000.log"), "{err}");
        assert_eq!(
            corrupt_at(err),
            (journal_path(&folder, 0), starts[2] as u64)
        );
    }

    #[test]
    fn a_damaged_tail_of_a_journal_before_the_last_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = workload();
        let folder = Folder::open(dir.path()).unwrap();
        let split = records.len() / 2;
        let (older, starts) = frames(&records[..split], 1);
        write_journal(&folder, 0, &older);
        write_journal(&folder, 1, &frames(&records[split..], split as u64 + 1).0);
        assert_eq!(folder.recover().unwrap().seq, records.len() as u64);
        let mut flipped = older.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        let cut = older[..older.len() - 1].to_vec();
        let last = *starts.last().unwrap() as u64;
        for file in [flipped, cut].iter().flat_map(|damaged| layouts(damaged)) {
            fs::write(journal_path(&folder, 0), &file).unwrap();
            let err = folder.recover().unwrap_err();
            assert_eq!(corrupt_at(err), (journal_path(&folder, 0), last));
        }
    }

    /// What `Pools::open` leaves when it stops between creating its journal and writing
    /// the snapshot: the torn tail is still the last thing ever written.
    #[test]
    fn a_torn_tail_followed_only_by_an_empty_journal_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = workload();
        let (folder, bytes, _) = folder_with(dir.path(), &records);
        fs::write(journal_path(&folder, 0), &bytes[..bytes.len() - 3]).unwrap();
        folder.create_journal(1).unwrap();
        let recovered = folder.recover().unwrap();
        assert_eq!(recovered.seq, records.len() as u64 - 1);
        assert_eq!(recovered.next_journal, 2);
    }

    #[test]
    fn a_record_that_does_not_fit_the_state_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (folder, _, _) = folder_with(dir.path(), &[Record::Release { lease: 42 }]);
        let (path, offset) = corrupt_at(folder.recover().unwrap_err());
        assert_eq!((path, offset), (journal_path(&folder, 0), 0));
    }

    #[test]
    fn a_gap_in_the_seqs_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = workload();
        let folder = Folder::open(dir.path()).unwrap();
        let (mut bytes, _) = frames(&records[..1], 1);
        let gap = bytes.len() as u64;
        journal::encode(3, &records[1], &mut bytes);
        write_journal(&folder, 0, &bytes);
        assert_eq!(
            corrupt_at(folder.recover().unwrap_err()),
            (journal_path(&folder, 0), gap)
        );
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (state, records) = workload();
        let folder = Folder::open(dir.path()).unwrap();
        folder
            .write_snapshot(state.snapshot(), records.len() as u64, 0)
            .unwrap();
        let path = folder.path().join("snapshot.json");
        let good: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let mut foreign = good.clone();
        foreign["format"] = 99.into();
        let mut impossible = good.clone();
        impossible["state"]["leases"][0]["resources"][0][1] = "nowhere".into();
        let texts = [
            b"{\"format\": 1, \"seq\"".to_vec(),
            foreign.to_string().into(),
            impossible.to_string().into(),
        ];
        for text in texts {
            fs::write(&path, &text).unwrap();
            assert_eq!(corrupt_at(folder.recover().unwrap_err()).0, path);
        }
    }

    #[test]
    fn a_locked_folder_cannot_be_opened_twice() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        let second = Folder::open(dir.path()).unwrap_err();
        assert!(
            matches!(&second, StoreError::Locked(path) if path == dir.path()),
            "{second}"
        );
        drop(folder);
        assert!(
            Folder::open(dir.path()).is_ok(),
            "the lock goes with the folder"
        );
    }

    #[test]
    fn a_snapshot_and_the_journals_after_it_recover() {
        let dir = tempfile::tempdir().unwrap();
        let (state, records) = workload();
        let split = records.len() / 2;
        let (folder, _, _) = folder_with(dir.path(), &records[..split]);
        let snapshot = replayed(&records[..split]).snapshot();
        folder.write_snapshot(snapshot, split as u64, 1).unwrap();
        assert!(
            !journal_path(&folder, 0).exists(),
            "the snapshot replaces journal 0"
        );
        write_journal(&folder, 1, &frames(&records[split..], split as u64 + 1).0);
        let recovered = folder.recover().unwrap();
        assert_eq!(snapshot_text(&recovered.state), snapshot_text(&state));
        assert_eq!(recovered.seq, records.len() as u64);
        assert_eq!(
            (recovered.replayed, recovered.next_journal),
            ((records.len() - split) as u64, 2)
        );
    }

    /// A crash between writing a snapshot and removing the journal it covers.
    #[test]
    fn records_the_snapshot_covers_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (state, records) = workload();
        let (folder, _, _) = folder_with(dir.path(), &records);
        let split = 3;
        let snapshot = replayed(&records[..split]).snapshot();
        folder.write_snapshot(snapshot, split as u64, 0).unwrap();
        let recovered = folder.recover().unwrap();
        assert_eq!(snapshot_text(&recovered.state), snapshot_text(&state));
        assert_eq!(recovered.replayed, (records.len() - split) as u64);
    }
}

mod runtime {
    //! [`Pools`] with its threads and a data folder.

    use super::*;
    use std::time::{Duration, Instant};

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(20)
    }

    /// Polls `condition` until it holds; fails after ten seconds.
    fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < give_up, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn resources(ids: &[&str]) -> Vec<(String, String)> {
        ids.iter()
            .map(|id| (id.to_string(), format!("{{\"id\":\"{id}\"}}")))
            .collect()
    }

    #[test]
    fn leases_survive_a_reopen_and_tokens_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let pools = Pools::open(dir.path()).unwrap();
        assert_eq!(pools.add("p", resources(&["r0", "r1"])).unwrap().0, 2);
        let (lease, seq) = pools
            .acquire(7, AcquireRequest::count("p", 1), deadline())
            .unwrap();
        eventually("the grant is durable", || {
            pools.durability().is_durable(seq)
        });
        assert!(matches!(
            Pools::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
        pools.close();
        drop(pools);

        let pools = Pools::open(dir.path()).unwrap();
        let (held, _) = pools.lease(lease.id).unwrap();
        assert_eq!(held, lease, "same resources, token and holder");
        assert_eq!(held.grants[0].data.as_str(), r#"{"id":"r0"}"#);
        let (next, _) = pools
            .acquire(8, AcquireRequest::count("p", 1), deadline())
            .unwrap();
        assert_eq!(grants(&next), ["p/r1"]);
        assert!(next.token > lease.token && next.id > lease.id);
        pools.close();
    }

    #[test]
    fn a_waiting_acquire_is_woken_by_a_release() {
        let dir = tempfile::tempdir().unwrap();
        let pools = Pools::open(dir.path()).unwrap();
        pools.add("p", resources(&["r0"])).unwrap();
        let (held, _) = pools
            .acquire(1, AcquireRequest::count("p", 1), deadline())
            .unwrap();
        let waiter = {
            let pools = pools.clone();
            let request = AcquireRequest::count("p", 1).wait_ms(15_000);
            std::thread::spawn(move || pools.acquire(2, request, deadline()))
        };
        eventually("the acquire waits", || {
            pools.status("p").unwrap().0.waiting == 1
        });
        pools.release(held.id).unwrap();
        let (granted, seq) = waiter.join().unwrap().unwrap();
        assert_eq!(
            (grants(&granted), granted.holder),
            (vec!["p/r0".to_owned()], 2)
        );
        assert!(granted.token > held.token);
        eventually("the grant is durable", || {
            pools.durability().is_durable(seq)
        });
        pools.close();
    }
}
