//! [`State`]: the pools, leases, waiters and plugin key-value stores in memory, and the rules
//! of every operation. Pure: no I/O, no clock (the caller passes `now_ms`), no threads, so it
//! is tested against a model by property tests and replayed from the journal unchanged.
//!
//! An operation decides, then emits [`Record`]s through [`State::commit`], which applies each
//! one with [`State::apply`] — the only code that changes pools and leases — and hands it to
//! the caller's log for the journal. Replay calls `apply` on the same records, so a restarted
//! host holds exactly what the old one had told clients.
//!
//! Waiters are the one part not journaled: a waiting acquire belongs to a live request, and a
//! restart ends every request.

use super::free::FreeQueue;
use super::record::{Data, GrantRecord, LeaseId, Name, Record};
use super::view::{GrantView, HeldView, LeaseView, ResourceView, SingleView, StatusView};
use resman_sdk::pool::{AcquireRequest, PoolError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Maps and sets keyed by pool names, resource ids and lease numbers: foldhash is several
/// times faster than the default SipHash on short keys and still seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// The longest pool name, resource id, request id or store key, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 1024;

/// The longest store value, in bytes.
pub(crate) const MAX_VALUE_BYTES: usize = 1 << 20;

/// How many request ids of ended leases are remembered (so that a late repeat is refused,
/// not granted again); the oldest are forgotten first.
pub(crate) const REMEMBERED_REQUEST_IDS: usize = 100_000;

/// The most wants in one acquire.
const MAX_WANTS: usize = 64;

/// A waiting acquire's number.
pub(crate) type WaiterId = u64;

/// A waiter that has an answer: its grant, or why it will get none.
pub(crate) type Woken = (WaiterId, Result<LeaseView, PoolError>);

/// How an acquire ended.
#[derive(Debug, PartialEq)]
pub(crate) enum Acquired {
    /// Granted (or granted before, to the same request id): the lease, for the caller to
    /// view as it needs ([`State::view`], [`State::single`]).
    Granted(LeaseId),
    /// Queued; the answer comes later as a [`Woken`].
    Waiting(WaiterId),
}

/// Every pool, lease and store, and the waiters.
#[derive(Debug)]
pub(crate) struct State {
    /// Pool names and resource ids are shared ([`Name`]): a record and a view hold the
    /// state's own text, so they copy pointers, not strings. Pools are never removed, so a
    /// pool's place in this list names it for good.
    pools: Vec<Pool>,
    /// Pool name → its place in `pools`.
    pool_index: HashMap<Name, u32>,
    leases: HashMap<LeaseId, Lease>,
    /// Request id → the lease it granted, live or ended. The id is shared with its lease.
    requests: HashMap<Name, LeaseId>,
    /// Request ids of ended leases, oldest first.
    ended_requests: VecDeque<Name>,
    /// (deadline, lease), soonest first.
    expiries: BTreeSet<(u64, LeaseId)>,
    /// Client → its leases that end when its connection closes.
    on_disconnect: HashMap<u64, BTreeSet<LeaseId>>,
    /// Plugin namespace → its store. A namespace is shared with a snapshot being written,
    /// and copied by its first write while it is.
    kv: HashMap<String, Arc<BTreeMap<String, String>>>,
    next_lease: LeaseId,
    /// Fencing tokens come from one counter for all resources, so a resource's tokens grow
    /// over its whole history, through removal and re-adding too.
    next_token: u64,
    /// Orders free resources: a resource freed later is granted later.
    free_clock: u64,
    waiters: VecDeque<Waiter>,
    next_waiter: WaiterId,
}

/// A pool. Its resources live in slots that leases and the free index point at, so that a
/// grant or a release reaches its resource without a lookup by id: under load every grant
/// takes the resource freed longest ago, which is never in the cache, and a lookup by id
/// would cost a miss for the table and another for the id's text before the resource's own.
#[derive(Debug)]
struct Pool {
    name: Name,
    /// Resources by slot; a removed resource's slot is empty until an added one reuses it.
    slots: Vec<Option<Resource>>,
    /// Resource id → its slot.
    index: HashMap<Name, u32>,
    /// The free resources' slots, in grant order.
    free: FreeQueue,
    /// Empty slots, for the next resources added.
    vacant: Vec<u32>,
    /// Waiters that want this pool.
    waiting: u32,
}

#[derive(Debug)]
struct Resource {
    /// Its id, shared with its key in [`Pool::index`].
    id: Name,
    data: Data,
    held_by: Option<LeaseId>,
    /// Its place in `Pool::free` while free.
    free_key: u64,
}

/// Whether the resource at `slot` of `slots` is free with `key`: whether a [`FreeQueue`]
/// entry is live.
fn is_free(slots: &[Option<Resource>]) -> impl Fn(u64, u32) -> bool + '_ {
    move |key, slot| {
        (slots.get(slot as usize).and_then(Option::as_ref))
            .is_some_and(|resource| resource.held_by.is_none() && resource.free_key == key)
    }
}

impl Pool {
    /// The resource `id`, if the pool has it.
    fn resource(&self, id: &str) -> Option<&Resource> {
        let slot = *self.index.get(id)?;
        self.slots[slot as usize].as_ref()
    }

    /// Every resource, in slot order.
    fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.slots.iter().flatten()
    }
}

/// Where a held resource is: its pool's place in [`State::pools`] and its slot there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    pool: u32,
    slot: u32,
}

/// What a lease holds: one place (nearly every lease) without an allocation, or several.
#[derive(Debug, Clone)]
enum Places {
    One(Place),
    Many(Box<[Place]>),
}

impl Places {
    fn as_slice(&self) -> &[Place] {
        match self {
            Places::One(place) => std::slice::from_ref(place),
            Places::Many(places) => places,
        }
    }

    fn from_vec(places: Vec<Place>) -> Places {
        match places.as_slice() {
            [one] => Places::One(*one),
            _ => Places::Many(places.into_boxed_slice()),
        }
    }
}

#[derive(Debug, Clone)]
struct Lease {
    token: u64,
    holder: u64,
    expires_at_ms: Option<u64>,
    on_disconnect: bool,
    request_id: Option<Name>,
    /// What it holds; a view reads the names and data there.
    places: Places,
}

#[derive(Debug)]
struct Waiter {
    id: WaiterId,
    client: u64,
    request: AcquireRequest,
}

impl Default for State {
    fn default() -> Self {
        State {
            pools: Vec::new(),
            pool_index: HashMap::default(),
            leases: HashMap::default(),
            requests: HashMap::default(),
            ended_requests: VecDeque::new(),
            expiries: BTreeSet::new(),
            on_disconnect: HashMap::default(),
            kv: HashMap::default(),
            next_lease: 1,
            next_token: 1,
            free_clock: 0,
            waiters: VecDeque::new(),
            next_waiter: 1,
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<(), PoolError> {
    if name.is_empty() {
        return Err(PoolError::Invalid(format!("{what} must not be empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(PoolError::Invalid(format!(
            "{what} is {} bytes, more than {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

/// The record that sets (`Some`) or removes (`None`) a plugin's value.
fn kv_record(ns: &str, key: &str, value: Option<&str>) -> Record {
    let (ns, key) = (ns.to_owned(), key.to_owned());
    match value {
        Some(value) => Record::KvSet {
            ns,
            key,
            value: value.to_owned(),
        },
        None => Record::KvDelete { ns, key },
    }
}

/// Refuses a store key or value longer than the limits.
fn check_kv(key: &str, value: Option<&str>) -> Result<(), String> {
    if key.len() > MAX_NAME_BYTES {
        return Err(format!(
            "key is {} bytes, more than {MAX_NAME_BYTES}",
            key.len()
        ));
    }
    if let Some(value) = value.filter(|value| value.len() > MAX_VALUE_BYTES) {
        return Err(format!(
            "value is {} bytes, more than {MAX_VALUE_BYTES}",
            value.len()
        ));
    }
    Ok(())
}

fn unknown_lease(lease: LeaseId) -> PoolError {
    PoolError::UnknownLease(format!("no lease {lease} is held"))
}

impl State {
    /// Applies `record` and appends it to `log`: how every operation changes the state.
    fn commit(&mut self, record: Record, log: &mut Vec<Record>) {
        let applied = self.apply(&record);
        debug_assert!(
            applied.is_ok(),
            "a live operation made a bad record: {applied:?}"
        );
        log.push(record);
    }

    /// Applies one record. An error means the record does not fit the state: a corrupt
    /// journal when replaying.
    pub(crate) fn apply(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::Add { pool, resources } => {
                let place = self.pool_or_new(pool);
                let clock = &mut self.free_clock;
                let entry = &mut self.pools[place as usize];
                for (id, data) in resources {
                    if entry.index.contains_key(id) {
                        return Err(format!("resource {id} added twice to pool {pool}"));
                    }
                    *clock += 1;
                    let resource = Resource {
                        id: Arc::clone(id),
                        data: data.clone(),
                        held_by: None,
                        free_key: *clock,
                    };
                    let slot = match entry.vacant.pop() {
                        Some(slot) => {
                            entry.slots[slot as usize] = Some(resource);
                            slot
                        }
                        None => {
                            entry.slots.push(Some(resource));
                            (entry.slots.len() - 1) as u32
                        }
                    };
                    entry.free.push(*clock, slot);
                    entry.index.insert(Arc::clone(id), slot);
                }
            }
            Record::Remove { pool, id } => {
                let entry = (self.pool_index.get(pool.as_str()))
                    .map(|&place| &mut self.pools[place as usize])
                    .ok_or_else(|| format!("remove from unknown pool {pool}"))?;
                let slot = entry.index.get(id.as_str()).copied();
                let resource = slot.and_then(|slot| entry.slots[slot as usize].as_ref());
                match (slot, resource) {
                    (Some(slot), Some(resource)) if resource.held_by.is_none() => {
                        entry.index.remove(id.as_str());
                        entry.slots[slot as usize] = None;
                        entry.vacant.push(slot);
                        entry.free.taken(is_free(&entry.slots));
                    }
                    _ => return Err(format!("remove of {pool}/{id}, which is not free")),
                }
            }
            Record::Grant(grant) => {
                self.apply_grant(grant)?;
            }
            Record::Release { lease } => {
                self.apply_release(*lease)?;
            }
            Record::Renew {
                lease,
                expires_at_ms,
            } => {
                let held = self
                    .leases
                    .get_mut(lease)
                    .ok_or_else(|| format!("renew of unknown lease {lease}"))?;
                if let Some(old) = held.expires_at_ms {
                    self.expiries.remove(&(old, *lease));
                }
                held.expires_at_ms = *expires_at_ms;
                if let Some(new) = expires_at_ms {
                    self.expiries.insert((*new, *lease));
                }
            }
            Record::KvSet { ns, key, value } => {
                let space = self.kv.entry(ns.clone()).or_default();
                Arc::make_mut(space).insert(key.clone(), value.clone());
            }
            Record::KvDelete { ns, key } => {
                if let Some(space) = self.kv.get_mut(ns) {
                    Arc::make_mut(space).remove(key);
                }
            }
        }
        Ok(())
    }

    /// Applies a grant from its record: finds its resources by name (a replayed record
    /// names them), then [`apply_grant_at`](Self::apply_grant_at).
    fn apply_grant(&mut self, grant: &GrantRecord) -> Result<(), String> {
        let mut places = Vec::with_capacity(grant.resources.len());
        for (pool, id) in &grant.resources {
            let free = (self.place_of(pool, id)).filter(|&place| {
                self.resource(place).held_by.is_none() && !places.contains(&place)
            });
            let Some(place) = free else {
                return Err(format!("grant of {pool}/{id}, which is not free"));
            };
            places.push(place);
        }
        self.apply_grant_at(grant, Places::from_vec(places))
    }

    /// Where resource `id` of pool `pool` is, if there is one.
    fn place_of(&self, pool: &str, id: &str) -> Option<Place> {
        let place = *self.pool_index.get(pool)?;
        let slot = *self.pools[place as usize].index.get(id)?;
        Some(Place { pool: place, slot })
    }

    /// Applies a grant of the free resources at `places` (those `grant` names).
    fn apply_grant_at(&mut self, grant: &GrantRecord, places: Places) -> Result<(), String> {
        if self.leases.contains_key(&grant.lease) {
            return Err(format!("lease {} granted twice", grant.lease));
        }
        for &place in places.as_slice() {
            let entry = &mut self.pools[place.pool as usize];
            let resource = entry.slots[place.slot as usize]
                .as_mut()
                .expect("a place names a resource");
            resource.held_by = Some(grant.lease);
            entry.free.taken(is_free(&entry.slots));
        }
        if let Some(at) = grant.expires_at_ms {
            self.expiries.insert((at, grant.lease));
        }
        if grant.on_disconnect {
            self.on_disconnect
                .entry(grant.holder)
                .or_default()
                .insert(grant.lease);
        }
        let request_id = grant.request_id.as_deref().map(Name::from);
        if let Some(request_id) = &request_id {
            self.requests.insert(Arc::clone(request_id), grant.lease);
        }
        self.next_lease = self.next_lease.max(grant.lease + 1);
        self.next_token = self.next_token.max(grant.token + 1);
        let lease = Lease {
            token: grant.token,
            holder: grant.holder,
            expires_at_ms: grant.expires_at_ms,
            on_disconnect: grant.on_disconnect,
            request_id,
            places,
        };
        self.leases.insert(grant.lease, lease);
        Ok(())
    }

    /// Applies a release; returns the lease as it was.
    fn apply_release(&mut self, lease: LeaseId) -> Result<Lease, String> {
        let ended = self
            .leases
            .remove(&lease)
            .ok_or_else(|| format!("release of unknown lease {lease}"))?;
        for &place in ended.places.as_slice() {
            self.free_clock += 1;
            let entry = &mut self.pools[place.pool as usize];
            let resource = entry.slots[place.slot as usize]
                .as_mut()
                .expect("a lease's resources exist");
            resource.held_by = None;
            resource.free_key = self.free_clock;
            entry.free.push(self.free_clock, place.slot);
        }
        self.forget_lease_indexes(lease, &ended);
        if let Some(request_id) = &ended.request_id {
            self.ended_requests.push_back(Arc::clone(request_id));
            if self.ended_requests.len() > REMEMBERED_REQUEST_IDS {
                let oldest = self.ended_requests.pop_front().expect("not empty");
                self.requests.remove(&oldest);
            }
        }
        Ok(ended)
    }

    /// The resource at `place`, which must hold one.
    fn resource(&self, place: Place) -> &Resource {
        self.pools[place.pool as usize].slots[place.slot as usize]
            .as_ref()
            .expect("a place names a resource")
    }

    /// The place of the pool named `name`, made (empty) if there is none.
    fn pool_or_new(&mut self, name: &Name) -> u32 {
        if let Some(&place) = self.pool_index.get(name.as_ref()) {
            return place;
        }
        let place = self.pools.len() as u32;
        self.pools.push(Pool {
            name: Arc::clone(name),
            slots: Vec::new(),
            index: HashMap::default(),
            free: FreeQueue::default(),
            vacant: Vec::new(),
            waiting: 0,
        });
        self.pool_index.insert(Arc::clone(name), place);
        place
    }

    /// Lease `id` as the API shows it: its grants with their names and data.
    fn view_of(&self, id: LeaseId, lease: &Lease) -> LeaseView {
        let grants = (lease.places.as_slice().iter())
            .map(|&place| {
                let resource = self.resource(place);
                GrantView {
                    pool: Arc::clone(&self.pools[place.pool as usize].name),
                    id: Arc::clone(&resource.id),
                    data: resource.data.clone(),
                }
            })
            .collect();
        LeaseView {
            id,
            token: lease.token,
            holder: lease.holder,
            expires_at_ms: lease.expires_at_ms,
            release_on_disconnect: lease.on_disconnect,
            grants,
        }
    }

    /// Lease `id` in brief, if it holds exactly one resource (of the pool at `pool`, when
    /// given).
    fn brief_of(&self, id: LeaseId, lease: &Lease, pool: Option<u32>) -> Option<SingleView> {
        match lease.places {
            Places::One(place) if pool.is_none_or(|pool| pool == place.pool) => Some(SingleView {
                lease: id,
                token: lease.token,
                expires_at_ms: lease.expires_at_ms,
                id: Arc::clone(&self.resource(place).id),
            }),
            _ => None,
        }
    }

    fn forget_lease_indexes(&mut self, id: LeaseId, lease: &Lease) {
        if let Some(at) = lease.expires_at_ms {
            self.expiries.remove(&(at, id));
        }
        if lease.on_disconnect {
            if let Some(leases) = self.on_disconnect.get_mut(&lease.holder) {
                leases.remove(&id);
                if leases.is_empty() {
                    self.on_disconnect.remove(&lease.holder);
                }
            }
        }
    }

    // ---- pools ---------------------------------------------------------------------------

    /// Adds resources (ids already in the pool, or repeated, are skipped); returns how many
    /// were new. Waiters the new resources satisfy are woken.
    pub(crate) fn add(
        &mut self,
        pool: &str,
        resources: Vec<(String, Data)>,
        now_ms: u64,
        log: &mut Vec<Record>,
        woken: &mut Vec<Woken>,
    ) -> Result<u32, PoolError> {
        check_name("pool name", pool)?;
        for (id, _) in &resources {
            check_name("resource id", id)?;
        }
        let existing = self.pool(pool).ok();
        let mut seen = HashSet::default();
        let new: Vec<(Name, Data)> = resources
            .into_iter()
            .filter(|(id, _)| {
                existing.is_none_or(|entry| !entry.index.contains_key(id.as_str()))
                    && seen.insert(id.clone())
            })
            .map(|(id, data)| (Name::from(id), data))
            .collect();
        let added = new.len() as u32;
        if existing.is_none() || added > 0 {
            let record = Record::Add {
                pool: Name::from(pool),
                resources: new,
            };
            self.commit(record, log);
        }
        self.serve_waiters(now_ms, log, woken);
        Ok(added)
    }

    /// Removes resources, all or none; a held one only with `force`, which ends its lease.
    pub(crate) fn remove(
        &mut self,
        pool: &str,
        ids: &[String],
        force: bool,
        now_ms: u64,
        log: &mut Vec<Record>,
        woken: &mut Vec<Woken>,
    ) -> Result<u32, PoolError> {
        let entry = self.pool(pool)?;
        let mut leases = BTreeSet::new();
        let mut targets = BTreeSet::new();
        for id in ids {
            let resource = entry.resource(id).ok_or_else(|| {
                PoolError::UnknownResource(format!("pool {pool} has no resource {id}"))
            })?;
            if let Some(lease) = resource.held_by {
                if !force {
                    return Err(PoolError::Conflict(format!(
                        "resource {id} of pool {pool} is held by lease {lease}; remove it \
                         with force to end that lease"
                    )));
                }
                leases.insert(lease);
            }
            targets.insert(id.clone());
        }
        for lease in leases {
            self.commit(Record::Release { lease }, log);
        }
        for id in &targets {
            let record = Record::Remove {
                pool: pool.to_owned(),
                id: id.clone(),
            };
            self.commit(record, log);
        }
        self.fail_waiters_on_missing(woken);
        self.serve_waiters(now_ms, log, woken);
        Ok(targets.len() as u32)
    }

    fn pool(&self, pool: &str) -> Result<&Pool, PoolError> {
        self.pool_place(pool)
            .map(|place| &self.pools[place as usize])
    }

    /// The place of the pool named `pool` in [`State::pools`].
    fn pool_place(&self, pool: &str) -> Result<u32, PoolError> {
        (self.pool_index.get(pool).copied())
            .ok_or_else(|| PoolError::UnknownPool(format!("no pool named {pool}")))
    }

    /// Grants `request` to `client` now, or queues it if it asked to wait, or refuses it.
    /// A request id seen before answers its lease again, granting nothing.
    pub(crate) fn acquire(
        &mut self,
        client: u64,
        request: AcquireRequest,
        now_ms: u64,
        log: &mut Vec<Record>,
    ) -> Result<Acquired, PoolError> {
        let queue_ahead = self.validate(&request)?;
        if let Some(request_id) = &request.request_id {
            if let Some(&lease) = self.requests.get(request_id.as_str()) {
                return match self.leases.contains_key(&lease) {
                    true => Ok(Acquired::Granted(lease)),
                    false => Err(PoolError::Conflict(format!(
                        "request id {request_id} already granted lease {lease}, which has \
                         ended since"
                    ))),
                };
            }
            // Granting a twin too would give one request id two leases.
            if self
                .waiters
                .iter()
                .any(|w| w.request.request_id.as_ref() == Some(request_id))
            {
                return Err(PoolError::Conflict(format!(
                    "request id {request_id} is already waiting"
                )));
            }
        }
        if !queue_ahead {
            if let Some(picks) = self.pick(&request)? {
                return Ok(Acquired::Granted(
                    self.grant(client, &request, picks, now_ms, log),
                ));
            }
        }
        if request.wait_ms.unwrap_or(0) == 0 {
            let why = if queue_ahead {
                "earlier acquires are waiting for these resources"
            } else {
                "not enough free resources"
            };
            return Err(PoolError::Unavailable(why.into()));
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        for want in &request.wants {
            let place = self.pool_place(&want.pool).expect("validated");
            self.pools[place as usize].waiting += 1;
        }
        self.waiters.push_back(Waiter {
            id,
            client,
            request,
        });
        Ok(Acquired::Waiting(id))
    }

    /// Checks `request` against the rules; answers whether an earlier acquire is waiting on
    /// any pool it wants (then it must queue behind it, or be refused).
    fn validate(&self, request: &AcquireRequest) -> Result<bool, PoolError> {
        if request.wants.is_empty() {
            return Err(PoolError::Invalid("an acquire must want something".into()));
        }
        if request.wants.len() > MAX_WANTS {
            return Err(PoolError::Invalid(format!(
                "an acquire may span at most {MAX_WANTS} pools"
            )));
        }
        if request.ttl_ms == Some(0) {
            return Err(PoolError::Invalid("ttl_ms must be at least 1".into()));
        }
        if let Some(request_id) = &request.request_id {
            check_name("request id", request_id)?;
        }
        let mut pools = HashSet::default();
        let mut queue_ahead = false;
        for want in &request.wants {
            let entry = self.pool(&want.pool)?;
            queue_ahead |= entry.waiting > 0;
            if request.wants.len() > 1 && !pools.insert(want.pool.as_str()) {
                return Err(PoolError::Invalid(format!(
                    "pool {} is wanted twice in one acquire",
                    want.pool
                )));
            }
            if want.ids.is_empty() {
                if want.count == 0 {
                    return Err(PoolError::Invalid(format!(
                        "an acquire of 0 resources from pool {}",
                        want.pool
                    )));
                }
                continue;
            }
            if want.count != 0 && want.count as usize != want.ids.len() {
                return Err(PoolError::Invalid(format!(
                    "count {} does not match the {} ids wanted from pool {}",
                    want.count,
                    want.ids.len(),
                    want.pool
                )));
            }
            let mut ids = HashSet::default();
            for id in &want.ids {
                if !entry.index.contains_key(id.as_str()) {
                    return Err(PoolError::UnknownResource(format!(
                        "pool {} has no resource {id}",
                        want.pool
                    )));
                }
                if !ids.insert(id) {
                    return Err(PoolError::Invalid(format!("resource {id} is wanted twice")));
                }
            }
        }
        Ok(queue_ahead)
    }

    /// The resources that would satisfy `request` now, or `None` if some are not free.
    fn pick(&self, request: &AcquireRequest) -> Result<Option<Places>, PoolError> {
        if let [want] = request.wants.as_slice() {
            if want.ids.is_empty() && want.count == 1 {
                // The common case, an acquire of one resource, without an allocation.
                let pool = self.pool_place(&want.pool)?;
                let first = self.pools[pool as usize].free.first();
                return Ok(first.map(|slot| Places::One(Place { pool, slot })));
            }
        }
        let mut picks = Vec::new();
        for want in &request.wants {
            let pool = self.pool_place(&want.pool)?;
            let entry = &self.pools[pool as usize];
            if want.ids.is_empty() {
                if entry.free.len() < want.count as usize {
                    return Ok(None);
                }
                let slots = entry.free.slots(is_free(&entry.slots));
                let slots = slots.take(want.count as usize);
                picks.extend(slots.map(|slot| Place { pool, slot }));
            } else {
                for id in &want.ids {
                    let slot = *entry.index.get(id.as_str()).ok_or_else(|| {
                        PoolError::UnknownResource(format!(
                            "pool {} has no resource {id}",
                            want.pool
                        ))
                    })?;
                    if self.resource(Place { pool, slot }).held_by.is_some() {
                        return Ok(None);
                    }
                    picks.push(Place { pool, slot });
                }
            }
        }
        Ok(Some(Places::from_vec(picks)))
    }

    /// Grants the resources at `places` to `client` for `request`; returns the new lease.
    fn grant(
        &mut self,
        client: u64,
        request: &AcquireRequest,
        places: Places,
        now_ms: u64,
        log: &mut Vec<Record>,
    ) -> LeaseId {
        let lease = self.next_lease;
        let resources = self.names_at(&places);
        let record = GrantRecord {
            lease,
            token: self.next_token,
            holder: client,
            expires_at_ms: request.ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
            on_disconnect: request.release_on_disconnect,
            request_id: request.request_id.clone(),
            resources,
        };
        let applied = self.apply_grant_at(&record, places);
        applied.expect("a live grant fits the state");
        log.push(Record::Grant(record));
        lease
    }

    /// Grants every waiter that can be satisfied, strictly in arrival order per pool: once a
    /// waiter cannot be served, no later waiter on any of its pools is.
    /// A waiter is granted with the clock of the operation that freed its resources; its TTL
    /// counts from there.
    fn serve_waiters(&mut self, now_ms: u64, log: &mut Vec<Record>, woken: &mut Vec<Woken>) {
        let mut blocked: HashSet<String> = HashSet::default();
        let mut index = 0;
        while index < self.waiters.len() {
            let waiter = &self.waiters[index];
            let is_blocked = waiter
                .request
                .wants
                .iter()
                .any(|want| blocked.contains(&want.pool));
            let picked = if is_blocked {
                Ok(None)
            } else {
                self.pick(&waiter.request)
            };
            match picked {
                Ok(None) => {
                    let pools = waiter.request.wants.iter().map(|w| w.pool.clone());
                    blocked.extend(pools);
                    index += 1;
                }
                Ok(Some(picks)) => {
                    let waiter = self.dequeue(index);
                    let lease = self.grant(waiter.client, &waiter.request, picks, now_ms, log);
                    let view = self.view(lease).expect("just granted");
                    woken.push((waiter.id, Ok(view)));
                }
                Err(err) => {
                    let waiter = self.dequeue(index);
                    woken.push((waiter.id, Err(err)));
                }
            }
        }
    }

    fn dequeue(&mut self, index: usize) -> Waiter {
        let waiter = self.waiters.remove(index).expect("index in range");
        for want in &waiter.request.wants {
            if let Ok(place) = self.pool_place(&want.pool) {
                self.pools[place as usize].waiting -= 1;
            }
        }
        waiter
    }

    /// Answers waiters that want a resource removed since they queued.
    fn fail_waiters_on_missing(&mut self, woken: &mut Vec<Woken>) {
        let mut index = 0;
        while index < self.waiters.len() {
            match self.missing(&self.waiters[index].request) {
                Some(err) => {
                    let waiter = self.dequeue(index);
                    woken.push((waiter.id, Err(err)));
                }
                None => index += 1,
            }
        }
    }

    /// A resource `request` names that its pool no longer has. Not `pick`, which stops at
    /// the first want it cannot serve yet and so would miss a removal in a later one.
    fn missing(&self, request: &AcquireRequest) -> Option<PoolError> {
        request.wants.iter().find_map(|want| {
            let entry = self.pool(&want.pool).ok()?;
            let id = want
                .ids
                .iter()
                .find(|id| !entry.index.contains_key(id.as_str()))?;
            Some(PoolError::UnknownResource(format!(
                "pool {} has no resource {id}",
                want.pool
            )))
        })
    }

    /// Takes a waiter out of the queue (its wait ran out); false if it is no longer there
    /// (it was answered meanwhile). Later waiters it was blocking may be served.
    pub(crate) fn cancel_waiter(
        &mut self,
        id: WaiterId,
        now_ms: u64,
        log: &mut Vec<Record>,
        woken: &mut Vec<Woken>,
    ) -> bool {
        let Some(index) = self.waiters.iter().position(|w| w.id == id) else {
            return false;
        };
        self.dequeue(index);
        self.serve_waiters(now_ms, log, woken);
        true
    }

    /// Ends a lease, returning it as it was.
    pub(crate) fn release(
        &mut self,
        lease: LeaseId,
        now_ms: u64,
        log: &mut Vec<Record>,
        woken: &mut Vec<Woken>,
    ) -> Result<LeaseView, PoolError> {
        let ended = self.end_lease(lease, now_ms, log, woken)?;
        // Its resources are where the lease held them, whoever holds them now.
        Ok(self.view_of(lease, &ended))
    }

    /// Ends a lease and serves the waiters its resources satisfy; returns it as it was.
    fn end_lease(
        &mut self,
        lease: LeaseId,
        now_ms: u64,
        log: &mut Vec<Record>,
        woken: &mut Vec<Woken>,
    ) -> Result<Lease, PoolError> {
        let ended = self
            .apply_release(lease)
            .map_err(|_| unknown_lease(lease))?;
        log.push(Record::Release { lease });
        self.serve_waiters(now_ms, log, woken);
        Ok(ended)
    }

    /// Ends a lease only if every resource it holds is in `pool`; any other lease is
    /// `unknown_lease` here and stays as it is. A plugin ends the leases of its own pool this
    /// way in one step, rather than reading the lease first to check it.
    pub(crate) fn release_in(
        &mut self,
        pool: &str,
        lease: LeaseId,
        now_ms: u64,
        log: &mut Vec<Record>,
        woken: &mut Vec<Woken>,
    ) -> Result<LeaseView, PoolError> {
        self.lease_in(pool, lease)?;
        self.release(lease, now_ms, log, woken)
    }

    /// [`State::release_in`] of a lease of exactly one resource; a lease of several is
    /// `invalid` here and stays as it is.
    pub(crate) fn release_single(
        &mut self,
        pool: &str,
        lease: LeaseId,
        now_ms: u64,
        log: &mut Vec<Record>,
        woken: &mut Vec<Woken>,
    ) -> Result<SingleView, PoolError> {
        let held = self.lease_in(pool, lease)?;
        let Some(single) = self.brief_of(lease, held, None) else {
            let count = held.places.as_slice().len();
            return Err(PoolError::Invalid(format!(
                "lease {lease} holds {count} resources; release it with release-in"
            )));
        };
        self.end_lease(lease, now_ms, log, woken)?;
        Ok(single)
    }

    /// The held lease `lease` if every resource it holds is in `pool`; any other is
    /// `unknown_lease`.
    fn lease_in(&self, pool: &str, lease: LeaseId) -> Result<&Lease, PoolError> {
        let held = self
            .leases
            .get(&lease)
            .ok_or_else(|| unknown_lease(lease))?;
        let place = self.pool_index.get(pool).copied();
        let places = held.places.as_slice();
        if places.is_empty() || places.iter().any(|held| Some(held.pool) != place) {
            return Err(PoolError::UnknownLease(format!(
                "lease {lease} is not a lease of pool {pool}"
            )));
        }
        Ok(held)
    }

    /// Ends the lease that holds a resource.
    pub(crate) fn release_resource(
        &mut self,
        pool: &str,
        id: &str,
        now_ms: u64,
        log: &mut Vec<Record>,
        woken: &mut Vec<Woken>,
    ) -> Result<LeaseView, PoolError> {
        let resource = self.pool(pool)?.resource(id).ok_or_else(|| {
            PoolError::UnknownResource(format!("pool {pool} has no resource {id}"))
        })?;
        let lease = resource.held_by.ok_or_else(|| {
            PoolError::UnknownLease(format!("resource {id} of pool {pool} is not held"))
        })?;
        self.release(lease, now_ms, log, woken)
    }

    /// Gives a lease the deadline `now + ttl`.
    pub(crate) fn renew(
        &mut self,
        lease: LeaseId,
        ttl_ms: u64,
        now_ms: u64,
        log: &mut Vec<Record>,
    ) -> Result<LeaseView, PoolError> {
        if ttl_ms == 0 {
            return Err(PoolError::Invalid("ttl_ms must be at least 1".into()));
        }
        if !self.leases.contains_key(&lease) {
            return Err(unknown_lease(lease));
        }
        let record = Record::Renew {
            lease,
            expires_at_ms: Some(now_ms.saturating_add(ttl_ms)),
        };
        self.commit(record, log);
        Ok(self.view(lease).expect("held"))
    }

    /// Ends every lease whose deadline is at or before `now_ms`.
    pub(crate) fn expire(&mut self, now_ms: u64, log: &mut Vec<Record>, woken: &mut Vec<Woken>) {
        let due: Vec<LeaseId> = self
            .expiries
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|(_, lease)| *lease)
            .collect();
        if due.is_empty() {
            return;
        }
        for lease in due {
            self.commit(Record::Release { lease }, log);
        }
        self.serve_waiters(now_ms, log, woken);
    }

    /// The soonest lease deadline.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// A client's connection closed: its waiters leave the queue and its
    /// release-on-disconnect leases end.
    pub(crate) fn client_gone(
        &mut self,
        client: u64,
        now_ms: u64,
        log: &mut Vec<Record>,
        woken: &mut Vec<Woken>,
    ) {
        let mut index = 0;
        while index < self.waiters.len() {
            if self.waiters[index].client == client {
                let waiter = self.dequeue(index);
                let err = PoolError::Unavailable("the client disconnected".into());
                woken.push((waiter.id, Err(err)));
            } else {
                index += 1;
            }
        }
        if let Some(leases) = self.on_disconnect.get(&client).cloned() {
            for lease in leases {
                self.commit(Record::Release { lease }, log);
            }
        }
        self.serve_waiters(now_ms, log, woken);
    }

    /// After a restart: no connection of the old process survives, so every
    /// release-on-disconnect lease ends, as does every lease whose deadline passed while the
    /// host was down.
    pub(crate) fn after_restart(&mut self, now_ms: u64, log: &mut Vec<Record>) {
        let mut woken = Vec::new();
        self.expire(now_ms, log, &mut woken);
        let gone: Vec<LeaseId> = self.on_disconnect.values().flatten().copied().collect();
        for lease in gone {
            self.commit(Record::Release { lease }, log);
        }
        debug_assert!(woken.is_empty(), "no waiters survive a restart");
    }

    /// Answers every waiter with `err` (the host is shutting down).
    pub(crate) fn drop_waiters(&mut self, err: &PoolError) -> Vec<Woken> {
        let mut woken = Vec::new();
        while !self.waiters.is_empty() {
            let waiter = self.dequeue(0);
            woken.push((waiter.id, Err(err.clone())));
        }
        woken
    }

    /// A lease as the API shows it, if it is held.
    pub(crate) fn view(&self, lease: LeaseId) -> Option<LeaseView> {
        Some(self.view_of(lease, self.leases.get(&lease)?))
    }

    /// A held lease in brief, if it holds exactly one resource (of `pool`, when given).
    pub(crate) fn single(&self, lease: LeaseId, pool: Option<&str>) -> Option<SingleView> {
        let pool = match pool {
            Some(pool) => Some(self.pool_place(pool).ok()?),
            None => None,
        };
        self.brief_of(lease, self.leases.get(&lease)?, pool)
    }

    /// A held lease.
    pub(crate) fn lease(&self, lease: LeaseId) -> Result<LeaseView, PoolError> {
        self.view(lease).ok_or_else(|| unknown_lease(lease))
    }

    /// What a pool holds: free in grant order, held by resource id.
    pub(crate) fn status(&self, pool: &str) -> Result<StatusView, PoolError> {
        let entry = self.pool(pool)?;
        let free = entry
            .free
            .slots(is_free(&entry.slots))
            .map(|slot| {
                let resource = entry.slots[slot as usize]
                    .as_ref()
                    .expect("a free slot holds a resource");
                ResourceView {
                    id: resource.id.to_string(),
                    data: resource.data.clone(),
                }
            })
            .collect();
        let mut held: Vec<HeldView> = entry
            .resources()
            .filter_map(|resource| {
                let lease_id = resource.held_by?;
                let lease = &self.leases[&lease_id];
                Some(HeldView {
                    id: resource.id.to_string(),
                    data: resource.data.clone(),
                    lease: lease_id,
                    token: lease.token,
                    holder: lease.holder,
                    expires_at_ms: lease.expires_at_ms,
                })
            })
            .collect();
        held.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(StatusView {
            pool: pool.to_owned(),
            free,
            held,
            waiting: entry.waiting,
        })
    }

    // ---- store ---------------------------------------------------------------------------

    /// A plugin's value.
    pub(crate) fn kv_get(&self, ns: &str, key: &str) -> Option<String> {
        self.kv.get(ns)?.get(key).cloned()
    }

    /// Sets a plugin's value.
    pub(crate) fn kv_set(
        &mut self,
        ns: &str,
        key: &str,
        value: &str,
        log: &mut Vec<Record>,
    ) -> Result<(), String> {
        check_kv(key, Some(value))?;
        self.commit(kv_record(ns, key, Some(value)), log);
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a plugin's value if it is `expected` now (`None`: not
    /// set); whether it was.
    pub(crate) fn kv_set_if(
        &mut self,
        ns: &str,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
        log: &mut Vec<Record>,
    ) -> Result<bool, String> {
        check_kv(key, value)?;
        let current = self.kv.get(ns).and_then(|space| space.get(key));
        if current.map(String::as_str) != expected {
            return Ok(false);
        }
        // Removing a key that is not set changes nothing, and journals nothing.
        if value.is_some() || current.is_some() {
            self.commit(kv_record(ns, key, value), log);
        }
        Ok(true)
    }

    /// Removes a plugin's key; whether it was set.
    pub(crate) fn kv_delete(&mut self, ns: &str, key: &str, log: &mut Vec<Record>) -> bool {
        if !self.kv.get(ns).is_some_and(|space| space.contains_key(key)) {
            return false;
        }
        self.commit(kv_record(ns, key, None), log);
        true
    }

    /// A plugin's keys starting with `prefix`, in order.
    pub(crate) fn kv_keys(&self, ns: &str, prefix: &str) -> Vec<String> {
        let Some(space) = self.kv.get(ns) else {
            return Vec::new();
        };
        space
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect()
    }

    // ---- snapshots -----------------------------------------------------------------------

    /// Everything durable, for a snapshot file. It is taken under the pools lock, which
    /// every lane waits on, so it only copies pointers (names and data are shared; a lease
    /// takes one small list of them) and leaves the ordering a file wants to
    /// [`Snapshot::sort`], which the keeper runs after.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let pools = (self.pools.iter())
            .map(|entry| {
                let (order, resources) = (entry.resources())
                    .map(|resource| {
                        // Free ones in grant order, then the held ones.
                        let order = match resource.held_by {
                            None => resource.free_key,
                            Some(_) => u64::MAX,
                        };
                        (order, (Arc::clone(&resource.id), resource.data.clone()))
                    })
                    .unzip();
                PoolSnapshot {
                    name: Arc::clone(&entry.name),
                    resources,
                    order,
                }
            })
            .collect();
        let leases = (self.leases.iter())
            .map(|(&id, lease)| self.record_of(id, lease))
            .collect();
        let ended_requests = self
            .ended_requests
            .iter()
            .map(|id| (Arc::clone(id), self.requests[id]))
            .collect();
        let kv = self
            .kv
            .iter()
            .map(|(ns, space)| (ns.clone(), Arc::clone(space)))
            .collect();
        Snapshot {
            next_lease: self.next_lease,
            next_token: self.next_token,
            pools,
            leases,
            ended_requests,
            kv,
        }
    }

    /// The grant record that makes lease `id`.
    fn record_of(&self, id: LeaseId, lease: &Lease) -> GrantRecord {
        GrantRecord {
            lease: id,
            token: lease.token,
            holder: lease.holder,
            expires_at_ms: lease.expires_at_ms,
            on_disconnect: lease.on_disconnect,
            request_id: lease.request_id.as_deref().map(str::to_owned),
            resources: self.names_at(&lease.places),
        }
    }

    /// The (pool, id) names of the resources at `places`, as a grant record lists them.
    fn names_at(&self, places: &Places) -> Vec<(Name, Name)> {
        (places.as_slice().iter())
            .map(|&place| {
                let pool = &self.pools[place.pool as usize].name;
                (Arc::clone(pool), Arc::clone(&self.resource(place).id))
            })
            .collect()
    }

    /// The state a snapshot describes.
    pub(crate) fn restore(snapshot: Snapshot) -> Result<State, String> {
        let mut state = State::default();
        for pool in snapshot.pools {
            state.apply(&Record::Add {
                pool: pool.name,
                resources: pool.resources,
            })?;
        }
        for lease in &snapshot.leases {
            state.apply_grant(lease)?;
        }
        for (request_id, lease) in snapshot.ended_requests {
            if state.leases.contains_key(&lease) {
                return Err(format!(
                    "ended request {request_id} names live lease {lease}"
                ));
            }
            state.requests.insert(Arc::clone(&request_id), lease);
            state.ended_requests.push_back(request_id);
        }
        state.kv = snapshot.kv.into_iter().collect();
        state.next_lease = state.next_lease.max(snapshot.next_lease);
        state.next_token = state.next_token.max(snapshot.next_token);
        Ok(state)
    }

    /// Checks the invariants every operation keeps; a description of the first broken one.
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        for (place, pool) in self.pools.iter().enumerate() {
            let name = &pool.name;
            if self.pool_index.get(name.as_ref()) != Some(&(place as u32)) {
                return Err(format!("pool {name}: not at its indexed place"));
            }
            let live = pool.slots.iter().filter(|slot| slot.is_some()).count();
            if live != pool.index.len() || live + pool.vacant.len() != pool.slots.len() {
                return Err(format!("pool {name}: slots out of step with the index"));
            }
            let free = pool.resources().filter(|r| r.held_by.is_none());
            let queued: HashSet<u32> = pool.free.slots(is_free(&pool.slots)).collect();
            if free.count() != pool.free.len() || queued.len() != pool.free.len() {
                return Err(format!("pool {name}: free index out of step"));
            }
            if pool.free.first() != pool.free.slots(is_free(&pool.slots)).next() {
                return Err(format!(
                    "pool {name}: the free queue's front is not its first free"
                ));
            }
            for (slot_id, &slot) in &pool.index {
                let Some(resource) = &pool.slots[slot as usize] else {
                    return Err(format!("{name}/{slot_id}: indexed at an empty slot"));
                };
                let id = &resource.id;
                if id != slot_id {
                    return Err(format!("{name}/{id}: indexed as {slot_id}"));
                }
                let here = Place {
                    pool: place as u32,
                    slot,
                };
                if let Some(lease) = resource.held_by {
                    let holds = self
                        .leases
                        .get(&lease)
                        .is_some_and(|l| l.places.as_slice().contains(&here));
                    if !holds {
                        return Err(format!("{name}/{id} held by lease {lease} not holding it"));
                    }
                } else if !queued.contains(&slot) {
                    return Err(format!("{name}/{id} free but not in the free index"));
                }
            }
        }
        for (id, lease) in &self.leases {
            for &place in lease.places.as_slice() {
                let held_by = self.resource(place).held_by;
                if held_by != Some(*id) {
                    return Err(format!("lease {id} lists {place:?}, held by {held_by:?}"));
                }
            }
            if lease.token >= self.next_token || *id >= self.next_lease {
                return Err(format!("lease {id} is ahead of the counters"));
            }
        }
        Ok(())
    }

    /// (pool, id) → the lease holding it, for tests.
    #[cfg(test)]
    pub(crate) fn holdings(&self) -> BTreeMap<(String, String), LeaseId> {
        let mut out = BTreeMap::new();
        for pool in &self.pools {
            for resource in pool.resources() {
                if let Some(lease) = resource.held_by {
                    out.insert((pool.name.to_string(), resource.id.to_string()), lease);
                }
            }
        }
        out
    }

    /// Every (pool, id), for tests.
    #[cfg(test)]
    pub(crate) fn resources(&self) -> BTreeSet<(String, String)> {
        self.pools
            .iter()
            .flat_map(|pool| {
                let ids = pool.resources().map(|resource| &resource.id);
                ids.map(|id| (pool.name.to_string(), id.to_string()))
            })
            .collect()
    }
}

/// The durable state as a snapshot file holds it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    next_lease: LeaseId,
    next_token: u64,
    pools: Vec<PoolSnapshot>,
    leases: Vec<GrantRecord>,
    ended_requests: Vec<(Name, LeaseId)>,
    kv: BTreeMap<String, Arc<BTreeMap<String, String>>>,
}

impl Snapshot {
    /// Puts pools, held resources and leases in order, so that equal states write equal
    /// files. Free resources keep their grant order.
    pub(crate) fn sort(&mut self) {
        self.pools.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for pool in &mut self.pools {
            let order = std::mem::take(&mut pool.order);
            if order.len() != pool.resources.len() {
                continue; // read from a file: in order already
            }
            let mut keyed: Vec<_> = order.into_iter().zip(pool.resources.drain(..)).collect();
            keyed.sort_unstable_by(|(a, (a_id, _)), (b, (b_id, _))| (a, a_id).cmp(&(b, b_id)));
            pool.resources = keyed.into_iter().map(|(_, resource)| resource).collect();
        }
        self.leases.sort_unstable_by_key(|lease| lease.lease);
    }
}

/// A pool in a snapshot: free resources in grant order, then held ones.
#[derive(Debug, Serialize, Deserialize)]
struct PoolSnapshot {
    name: Name,
    resources: Vec<(Name, Data)>,
    /// Each resource's place, for [`Snapshot::sort`]: its free key, or `u64::MAX` when
    /// held (held ones go last, by id). Not in the file, which is in order already.
    #[serde(skip)]
    order: Vec<u64>,
}
