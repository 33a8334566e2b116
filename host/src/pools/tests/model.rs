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
    /// Releases a lease only if it is wholly of `pool` (and, when `single`, holds exactly
    /// one resource: `release_single`).
    ReleaseIn {
        pool: usize,
        pick: Index,
        stale: bool,
        single: bool,
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
    ReleaseIn(String, LeaseId, bool),
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
            Op::ReleaseIn {
                pool,
                pick: index,
                stale,
                single,
            } => Call::ReleaseIn(
                POOLS[*pool].into(),
                pick(index, leases(), model.next_lease, *stale),
                *single,
            ),
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
                let wants = model.waiters.iter().flat_map(|w| &w.request.wants);
                let named = wants.flat_map(|want| want.ids.iter().map(|id| (&want.pool, id)));
                let named: Vec<_> = named.collect();
                match named.get(pick.index(named.len().max(1))) {
                    Some((pool, id)) => {
                        Call::Remove(pool.to_string(), vec![id.to_string()], *force)
                    }
                    // No waiter names a resource: an empty removal.
                    None => Call::Remove(POOLS[0].into(), Vec::new(), *force),
                }
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
        for grant in view.grants.iter() {
            assert_eq!(
                grant.data,
                data_of(&grant.pool, &grant.id),
                "data of {grant:?}"
            );
        }
        let resources = view.grants.iter();
        let resources = resources.map(|g| (g.pool.to_string(), g.id.to_string()));
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
            Call::ReleaseIn(pool, lease, single) => self.release_in(pool, *lease, *single, woken),
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
        let holds = |lease: &ModelLease| lease.resources.iter().any(|r| r.0 == pool && r.1 == id);
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

    fn release_in(
        &mut self,
        pool: &str,
        lease: LeaseId,
        single: bool,
        woken: &mut Answered,
    ) -> Answer {
        let Some(held) = self.leases.get(&lease) else {
            return Answer::Failed("unknown_lease");
        };
        if held.resources.iter().any(|(of, _)| of != pool) {
            return Answer::Failed("unknown_lease");
        }
        if single && held.resources.len() != 1 {
            return Answer::Failed("invalid");
        }
        self.release(lease, woken)
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
        let ends =
            |lease: &ModelLease| lease.on_disconnect && client.is_none_or(|c| c == lease.holder);
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

    fn remove(&mut self, pool: &str, ids: &[String], force: bool, woken: &mut Answered) -> Answer {
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

    fn on_state(&mut self, call: &Call, log: &mut Vec<Record>, woken: &mut Vec<Woken>) -> Answer {
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
                let acquired = acquired.map(|acquired| match acquired {
                    Acquired::Granted(lease) => Ok(state.view(lease).expect("just granted")),
                    Acquired::Waiting(id) => Err(id),
                });
                answer(acquired, |acquired| match acquired {
                    Ok(lease) => Answer::Lease(Seen::of(&lease)),
                    Err(id) => Answer::Waiting(id),
                })
            }
            Call::Cancel(waiter) => Answer::Flag(state.cancel_waiter(*waiter, now, log, woken)),
            Call::Release(lease) => answer(state.release(*lease, now, log, woken), |view| {
                Answer::Lease(Seen::of(&view))
            }),
            Call::ReleaseIn(pool, lease, single) => {
                let released = if *single {
                    let before = state.lease(*lease);
                    state
                        .release_single(pool, *lease, now, log, woken)
                        .map(|brief| {
                            let view = before.expect("a lease release_single ended was held");
                            assert_eq!(view.single(Some(pool)), Some(brief), "the lease in brief");
                            view
                        })
                } else {
                    state.release_in(pool, *lease, now, log, woken)
                };
                answer(released, |view| Answer::Lease(Seen::of(&view)))
            }
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
            for (pool, id) in &grant.resources {
                let resource = (pool.to_string(), id.to_string());
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
        let snapshot: serde_json::Value = serde_json::from_str(&replayed).expect("JSON");
        let leases = snapshot["leases"].as_array().expect("a list of leases");
        let leases: Vec<u64> = leases.iter().filter_map(|l| l["lease"].as_u64()).collect();
        let expected: Vec<u64> = self.model.leases.keys().copied().collect();
        assert_eq!(leases, expected, "the leases held after {call:?}");
        let resources =
            self.model.pools.iter().flat_map(|(name, entry)| {
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
        2 => (0..3usize, pick(), any::<bool>())
            .prop_map(|(pool, (pick, stale), single)| Op::ReleaseIn { pool, pick, stale, single }),
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
