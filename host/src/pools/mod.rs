//! Durable resource pools: the host's half of "nothing is granted twice or lost".
//!
//! The data path of a pool operation:
//!
//! 1. A jobber calls the host API (a WASM import or the native table's `call`); `api` finds
//!    the request it serves in [`context`] and calls [`Pools`].
//! 2. [`Pools`] runs the operation on the [`state::State`] under one lock: the state decides,
//!    applies the resulting [`record::Record`]s, and the records are encoded, with the next
//!    seqs, into the frames of the commit being gathered. Waiters the operation satisfied are
//!    handed their grants.
//! 3. The committer thread takes the gathered frames, a buffer swap, and writes them with one
//!    write and one fdatasync (group commit: whatever arrived during the previous sync goes
//!    in the next), then tells [`durability::Durability`] the seq that is now durable.
//! 4. The executor wrote the request's answer into its connection's outbox, held there with
//!    the highest seq the call touched and watched by `Durability`, so the answer leaves only
//!    once that seq is on disk; meanwhile the lane has moved on to its next request.
//!
//! An expiry thread ends leases at their deadlines. Without a data folder the pools live in
//! memory only and answers never wait.

pub(crate) mod api;
pub(crate) mod context;
pub(crate) mod durability;
mod free;
pub(crate) mod gather;
mod journal;
mod keeper;
pub(crate) mod record;
pub(crate) mod state;
pub(crate) mod stats;
#[cfg(test)]
mod tests;
pub(crate) mod view;

pub(crate) use journal::Sizes;
pub use journal::StoreError;

use durability::Durability;
use journal::{Commit, CommitError, Folder, Journal};
use keeper::Keeper;
use record::{Data, LeaseId, Record};
use resman_sdk::pool::{AcquireRequest, PoolError};
use state::{Acquired, State, WaiterId, Woken};
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use view::{LeaseView, Shape, SingleView, StatusView};

/// How much of a call's deadline a waiting acquire leaves for the jobber to answer.
const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// How long the committer first waits before it tries again a commit the disk had no room
/// for; the wait doubles each time, up to [`NO_ROOM_RETRY_MAX`].
const NO_ROOM_RETRY_FIRST: Duration = Duration::from_millis(50);
const NO_ROOM_RETRY_MAX: Duration = Duration::from_secs(2);

/// A batch counted as running for the committer's gathering until this drops (the batch
/// finished, its task ended some other way, or it was abandoned at its deadline); the last
/// of those the committer waits for wakes it. It owns its handle on the pools, so that a
/// batch's end may be declared by another task than the one running it.
#[must_use = "the batch counts as running until this drops"]
pub(crate) struct BatchRunning(Arc<Pools>, gather::Started);

impl Drop for BatchRunning {
    fn drop(&mut self) {
        self.0.gather.batch_ended(self.1);
    }
}

/// The pools of one host.
pub(crate) struct Pools {
    inner: Mutex<Inner>,
    /// Wakes the committer: records to write, or stopping.
    work: Condvar,
    /// Wakes the expiry thread: a sooner deadline, or stopping.
    clock: Condvar,
    durability: Durability,
    /// The running batches the committer waits for before a sync.
    gather: gather::Gather,
    /// Whether there is a journal (a data folder).
    persistent: bool,
    /// What the committer has done, for `srvQueuePrint`.
    stats: stats::CommitStats,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    state: State,
    /// The frames of the records not yet handed to the committer, encoded by the operations
    /// that made them.
    unwritten: Commit,
    /// The last seq given to a record.
    seq: u64,
    /// Scratch: the records of the operation under way.
    log: Vec<Record>,
    /// Scratch: the waiters the operation under way answered.
    woken: Vec<Woken>,
    /// Where each waiting acquire's answer goes.
    waiters: HashMap<WaiterId, Answer>,
    /// Set when the journal could not be written: every later operation is refused.
    failed: Option<String>,
    stopping: bool,
    /// The committer sleeps on `work` and no one has woken it yet; only then is it woken (a
    /// notify is a syscall even with no one waiting, and one wake is enough).
    committer_idle: bool,
}

/// A wake the committer is owed by an operation, sent once the operation has released the
/// pools lock: woken under the lock, the committer would only block again on the lock its
/// waker still holds (a second sleep and wake per commit).
#[must_use = "send it once the lock is released"]
struct WakeCommitter(bool);

impl WakeCommitter {
    fn send(self, pools: &Pools) {
        if self.0 {
            pools.work.notify_one();
        }
    }
}

impl Pools {
    /// Pools in memory only: lost at exit, answers never wait for a disk.
    pub(crate) fn in_memory() -> Arc<Pools> {
        let pools = Arc::new(Pools::new(State::default(), 0, false));
        pools.spawn("resman-expiry", Pools::expiry_loop);
        pools
    }

    /// Opens the data folder: recovers what it holds, ends the leases that cannot have
    /// survived the restart, writes a fresh snapshot and starts journaling.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the folder is in use, unreadable or corrupt.
    pub(crate) fn open(path: &Path, sizes: Sizes) -> Result<Arc<Pools>, StoreError> {
        let folder = Folder::open(path)?;
        let recovered = folder.recover()?;
        let mut state = recovered.state;
        let mut ended = Vec::new();
        state.after_restart(crate::plugins::now_ms(), &mut ended);
        let journal = folder.create_journal(recovered.next_journal, sizes)?;
        let snapshot_bytes =
            folder.write_snapshot(state.snapshot(), recovered.seq, journal.number)?;
        tracing::info!(
            folder = %folder.path().display(),
            replayed = recovered.replayed,
            torn_tail_bytes = recovered.torn_bytes,
            leases_ended_by_restart = ended.len(),
            "pools restored"
        );
        let pools = Arc::new(Pools::new(state, recovered.seq, true));
        pools.stats.snapshot_written(snapshot_bytes);
        pools.durability.publish(recovered.seq);
        pools.spawn("resman-expiry", Pools::expiry_loop);
        let committer = pools.clone();
        let handle = std::thread::Builder::new()
            .name("resman-commit".into())
            .spawn(move || committer.commit_loop(&folder, journal, sizes))
            .expect("spawning the committer thread");
        pools.lock_threads().push(handle);
        Ok(pools)
    }

    fn new(state: State, seq: u64, persistent: bool) -> Pools {
        Pools {
            inner: Mutex::new(Inner {
                state,
                unwritten: Commit::default(),
                seq,
                log: Vec::new(),
                woken: Vec::new(),
                waiters: HashMap::new(),
                failed: None,
                stopping: false,
                committer_idle: false,
            }),
            work: Condvar::new(),
            clock: Condvar::new(),
            durability: Durability::default(),
            gather: gather::Gather::default(),
            persistent,
            stats: stats::CommitStats::default(),
            threads: Mutex::new(Vec::new()),
        }
    }

    fn spawn(self: &Arc<Self>, name: &str, body: fn(Arc<Pools>)) {
        let pools = self.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(pools))
            .expect("spawning a pools thread");
        self.lock_threads().push(handle);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_threads(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where answers wait for their seq.
    pub(crate) fn durability(&self) -> &Durability {
        &self.durability
    }

    /// What the committer has done since start; `None` for pools in memory.
    pub(crate) fn commit_report(&self) -> Option<stats::CommitReport> {
        self.persistent.then(|| self.stats.report())
    }

    /// Counts a lane's batch as running while the guard lives, so that the committer
    /// gathers its records into one sync (see [`gather`]).
    pub(crate) fn batch_running(self: &Arc<Self>) -> BatchRunning {
        let started = self.gather.batch_started();
        BatchRunning(Arc::clone(self), started)
    }

    /// Runs one operation under the lock, journals its records and answers the waiters it
    /// served; returns its result and the seq its answer must wait for.
    fn run<T>(
        &self,
        op: impl FnOnce(&mut State, u64, &mut Vec<Record>, &mut Vec<Woken>) -> Result<T, PoolError>,
    ) -> Result<(T, u64), PoolError> {
        // Read before the lock, to keep the time other lanes wait for it short.
        let now = crate::plugins::now_ms();
        let mut inner = self.lock();
        if let Some(reason) = &inner.failed {
            return Err(PoolError::Storage(reason.clone()));
        }
        let before = inner.state.next_expiry();
        let Inner {
            state, log, woken, ..
        } = &mut *inner;
        let result = op(state, now, log, woken);
        let seq = self.finish(inner, before);
        result.map(|value| (value, seq))
    }

    /// [`settle`](Self::settle)s an operation, releases the lock, then wakes the committer if
    /// it is owed a wake; returns the seq the operation's answer must wait for.
    fn finish(&self, mut inner: MutexGuard<'_, Inner>, expiry_before: Option<u64>) -> u64 {
        let wake = self.settle(&mut inner, expiry_before);
        let seq = inner.seq;
        drop(inner);
        wake.send(self);
        seq
    }

    /// After an operation: its records to the journal buffer, its woken waiters answered,
    /// the expiry thread told of a sooner deadline. Returns the committer's wake, for the
    /// caller to send once it has released the lock.
    fn settle(&self, inner: &mut Inner, expiry_before: Option<u64>) -> WakeCommitter {
        let mut wake = WakeCommitter(false);
        if !inner.log.is_empty() {
            if self.persistent {
                let Inner {
                    log,
                    unwritten,
                    seq,
                    ..
                } = inner;
                for record in log.drain(..) {
                    *seq += 1;
                    unwritten.push(*seq, &record);
                }
                if inner.committer_idle {
                    // One wake per sleep: the operations that follow until the committer runs
                    // find it already woken.
                    inner.committer_idle = false;
                    wake = WakeCommitter(true);
                }
            } else {
                inner.log.clear();
            }
        }
        let Inner { woken, waiters, .. } = inner;
        for (id, result) in woken.drain(..) {
            if let Some(answer) = waiters.remove(&id) {
                answer.send(result);
            }
        }
        let after = inner.state.next_expiry();
        if after.is_some() && (expiry_before.is_none() || after < expiry_before) {
            self.clock.notify_one();
        }
        wake
    }

    /// Adds resources (`(id, data JSON text)`).
    pub(crate) fn add(
        &self,
        pool: &str,
        resources: Vec<(String, String)>,
    ) -> Result<(u32, u64), PoolError> {
        let resources = resources
            .into_iter()
            .map(|(id, data)| {
                let data = if data.trim().is_empty() {
                    Data::null()
                } else {
                    Data::parse(&data).map_err(|err| {
                        PoolError::Invalid(format!("data of resource {id} is not JSON: {err}"))
                    })?
                };
                Ok((id, data))
            })
            .collect::<Result<Vec<_>, PoolError>>()?;
        self.run(|state, now, log, woken| state.add(pool, resources, now, log, woken))
    }

    pub(crate) fn remove(
        &self,
        pool: &str,
        ids: &[String],
        force: bool,
    ) -> Result<(u32, u64), PoolError> {
        self.run(|state, now, log, woken| state.remove(pool, ids, force, now, log, woken))
    }

    /// Acquires for `client`; blocks the thread while it waits, never past `deadline` less a
    /// margin for the jobber to answer. For callers on a blocking thread (native plugins).
    pub(crate) fn acquire<S: Shape>(
        &self,
        client: u64,
        request: AcquireRequest,
        deadline: Instant,
        shape: S,
    ) -> Result<(S::Answer, u64), PoolError> {
        let channel = || {
            let (answer, answered) = mpsc::sync_channel(1);
            (Answer::Blocking(answer), answered)
        };
        let (id, wait, answered) =
            match self.begin_acquire(client, request, deadline, channel, &shape)? {
                (Begun::Granted(answer), seq) => return Ok((answer, seq)),
                (Begun::Waiting { id, wait, answered }, _) => (id, wait, answered),
            };
        let result = match answered.recv_timeout(wait) {
            Ok(result) => result,
            Err(_) => self.give_up(id, wait, || answered.try_recv().ok()),
        };
        self.seen(result.map(|view| shape.of_view(view)))
    }

    /// [`acquire`](Self::acquire) for callers on the runtime (WASM plugins): waiting yields
    /// the thread instead of blocking it.
    pub(crate) async fn acquire_async<S: Shape>(
        &self,
        client: u64,
        request: AcquireRequest,
        deadline: Instant,
        shape: S,
    ) -> Result<(S::Answer, u64), PoolError> {
        let channel = || {
            let (answer, answered) = oneshot::channel();
            (Answer::Task(answer), answered)
        };
        let (id, wait, mut answered) =
            match self.begin_acquire(client, request, deadline, channel, &shape)? {
                (Begun::Granted(answer), seq) => return Ok((answer, seq)),
                (Begun::Waiting { id, wait, answered }, _) => (id, wait, answered),
            };
        let result = match tokio::time::timeout(wait, &mut answered).await {
            Ok(Ok(result)) => result,
            _ => self.give_up(id, wait, || answered.try_recv().ok()),
        };
        self.seen(result.map(|view| shape.of_view(view)))
    }

    /// The first half of an acquire: granted at once, or queued as a waiter whose answer
    /// goes to the channel `channel` makes; with the seq a grant's answer must wait for.
    fn begin_acquire<S: Shape, Rx>(
        &self,
        client: u64,
        mut request: AcquireRequest,
        deadline: Instant,
        channel: impl FnOnce() -> (Answer, Rx),
        shape: &S,
    ) -> Result<(Begun<S::Answer, Rx>, u64), PoolError> {
        if let Some(wait) = request.wait_ms {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(ANSWER_MARGIN);
            request.wait_ms = Some(wait.min(left.as_millis() as u64));
        }
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0));
        let now = crate::plugins::now_ms();
        let mut inner = self.lock();
        if let Some(reason) = &inner.failed {
            return Err(PoolError::Storage(reason.clone()));
        }
        let before = inner.state.next_expiry();
        let Inner {
            state,
            log,
            waiters,
            ..
        } = &mut *inner;
        // The answer channel is registered under the same lock that queued the waiter, so no
        // release can serve it before there is somewhere to send the grant.
        let begun = match state.acquire(client, request, now, log) {
            Ok(Acquired::Granted(lease)) => Ok(Begun::Granted(shape.of_state(state, lease))),
            Ok(Acquired::Waiting(id)) => {
                let (answer, answered) = channel();
                waiters.insert(id, answer);
                Ok(Begun::Waiting { id, wait, answered })
            }
            Err(err) => Err(err),
        };
        let seq = self.finish(inner, before);
        begun.map(|begun| (begun, seq))
    }

    /// A wait ran out: leaves the queue, unless a grant came first (`late` reads it).
    fn give_up(
        &self,
        id: WaiterId,
        wait: Duration,
        late: impl FnOnce() -> Option<Result<LeaseView, PoolError>>,
    ) -> Result<LeaseView, PoolError> {
        let cancelled =
            self.run(|state, now, log, woken| Ok(state.cancel_waiter(id, now, log, woken)));
        self.lock().waiters.remove(&id);
        match cancelled {
            Ok((true, _)) => Err(PoolError::Unavailable(format!(
                "not enough resources were freed within {} ms",
                wait.as_millis()
            ))),
            _ => late()
                .unwrap_or_else(|| Err(PoolError::Unavailable("the wait ended unanswered".into()))),
        }
    }

    /// A waiter's result with the seq its answer must wait for: the grant was journaled
    /// by whichever operation served it, at or before the current seq.
    fn seen<A>(&self, result: Result<A, PoolError>) -> Result<(A, u64), PoolError> {
        let seq = self.lock().seq;
        result.map(|lease| (lease, seq))
    }

    pub(crate) fn release(&self, lease: LeaseId) -> Result<(LeaseView, u64), PoolError> {
        self.run(|state, now, log, woken| state.release(lease, now, log, woken))
    }

    pub(crate) fn release_in(
        &self,
        pool: &str,
        lease: LeaseId,
    ) -> Result<(LeaseView, u64), PoolError> {
        self.run(|state, now, log, woken| state.release_in(pool, lease, now, log, woken))
    }

    pub(crate) fn release_single(
        &self,
        pool: &str,
        lease: LeaseId,
    ) -> Result<(SingleView, u64), PoolError> {
        self.run(|state, now, log, woken| state.release_single(pool, lease, now, log, woken))
    }

    pub(crate) fn release_resource(
        &self,
        pool: &str,
        id: &str,
    ) -> Result<(LeaseView, u64), PoolError> {
        self.run(|state, now, log, woken| state.release_resource(pool, id, now, log, woken))
    }

    pub(crate) fn renew(&self, lease: LeaseId, ttl_ms: u64) -> Result<(LeaseView, u64), PoolError> {
        self.run(|state, now, log, _| state.renew(lease, ttl_ms, now, log))
    }

    pub(crate) fn lease(&self, lease: LeaseId) -> Result<(LeaseView, u64), PoolError> {
        self.run(|state, _, _, _| state.lease(lease))
    }

    pub(crate) fn status(&self, pool: &str) -> Result<(StatusView, u64), PoolError> {
        self.run(|state, _, _, _| state.status(pool))
    }

    pub(crate) fn kv_get(&self, ns: &str, key: &str) -> (Option<String>, u64) {
        let inner = self.lock();
        (inner.state.kv_get(ns, key), inner.seq)
    }

    pub(crate) fn kv_keys(&self, ns: &str, prefix: &str) -> (Vec<String>, u64) {
        let inner = self.lock();
        (inner.state.kv_keys(ns, prefix), inner.seq)
    }

    pub(crate) fn kv_set(&self, ns: &str, key: &str, value: &str) -> Result<u64, String> {
        let stored = self.run(|state, _, log, _| {
            state
                .kv_set(ns, key, value, log)
                .map_err(PoolError::Invalid)
        });
        stored
            .map(|((), seq)| seq)
            .map_err(|err| err.message().to_owned())
    }

    pub(crate) fn kv_set_if(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<(bool, u64), String> {
        self.run(|state, _, log, _| {
            state
                .kv_set_if(ns, key, expected, value, log)
                .map_err(PoolError::Invalid)
        })
        .map_err(|err| err.message().to_owned())
    }

    pub(crate) fn kv_delete(&self, ns: &str, key: &str) -> Result<(bool, u64), String> {
        self.run(|state, _, log, _| Ok(state.kv_delete(ns, key, log)))
            .map_err(|err| err.message().to_owned())
    }

    /// A client's connection closed.
    pub(crate) fn client_gone(&self, client: u64) {
        let _ = self.run(|state, now, log, woken| {
            state.client_gone(client, now, log, woken);
            Ok(())
        });
    }

    /// Answers every waiting acquire `unavailable`: the host is shutting down.
    pub(crate) fn end_waits(&self) {
        let mut inner = self.lock();
        let err = PoolError::Unavailable("the host is shutting down".into());
        inner.woken = inner.state.drop_waiters(&err);
        self.finish(inner, None);
    }

    /// Ends every wait, writes what is buffered, and stops the threads. Answers held for
    /// durability are released by the last commit.
    pub(crate) fn close(&self) {
        self.end_waits();
        self.lock().stopping = true;
        self.work.notify_all();
        self.clock.notify_all();
        let threads = std::mem::take(&mut *self.lock_threads());
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Ends leases at their deadlines.
    fn expiry_loop(self: Arc<Self>) {
        let mut inner = self.lock();
        loop {
            if inner.stopping {
                return;
            }
            let now = crate::plugins::now_ms();
            let before = inner.state.next_expiry();
            {
                let Inner {
                    state, log, woken, ..
                } = &mut *inner;
                state.expire(now, log, woken);
            }
            // The lock is kept for the wait below; a rare wake under it costs little here.
            self.settle(&mut inner, before).send(&self);
            let sleep = inner
                .state
                .next_expiry()
                .map_or(Duration::from_secs(3600), |at| {
                    Duration::from_millis(at.saturating_sub(now).max(1))
                });
            inner = self
                .clock
                .wait_timeout(inner, sleep)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Writes and syncs what operations buffered, one batch per sync, and rolls the journal
    /// into a snapshot when it grows large; the slow file work goes to the [`keeper`].
    ///
    /// One thread both gathers a commit and syncs it, so the next commit's gathering waits for
    /// this one's sync. Two committer threads taking turns, one gathering while the other
    /// wrote and synced (a commit still written only once the one before was synced, as
    /// recovery's torn-tail rule needs), were measured against this at 50 connections with 16
    /// requests in flight each, in 10 pairs of runs of a million requests: 12% more commits,
    /// each carrying fewer records, took 6% more CPU per request, and the host served 2% fewer
    /// requests a second (3 pairs of 10 won). The host is short of CPU there, not of disk.
    fn commit_loop(self: Arc<Self>, folder: &Folder, journal: Journal, sizes: Sizes) {
        std::thread::scope(|scope| {
            let keeper = Keeper::start(scope, folder, sizes, &self.stats);
            self.commit_batches(keeper, journal, sizes);
        });
    }

    fn commit_batches(&self, mut keeper: Keeper<'_>, mut journal: Journal, sizes: Sizes) {
        let mut commit = Commit::default();
        let mut pace = gather::Pace::default();
        self.gather.register_committer();
        loop {
            let (seq, snapshot, roll_at) = {
                let mut inner = self.lock();
                while inner.unwritten.is_empty() && !inner.stopping {
                    inner.committer_idle = true;
                    inner = self
                        .work
                        .wait(inner)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if inner.unwritten.is_empty() {
                    return;
                }
                if !inner.stopping {
                    drop(inner);
                    let held = Instant::now();
                    let to_cap = self.gather.wait(gather::GATHER_CAP);
                    inner = self.lock();
                    if let Some(linger) = pace.linger(inner.unwritten.records()) {
                        drop(inner);
                        gather::park_until(Instant::now() + linger, || {
                            let inner = self.lock();
                            inner.unwritten.records() >= gather::LINGER_TARGET || inner.stopping
                        });
                        inner = self.lock();
                    }
                    self.stats.held(held.elapsed(), to_cap);
                }
                pace.taken(inner.unwritten.records(), Instant::now());
                std::mem::swap(&mut commit, &mut inner.unwritten);
                // The snapshot must be of the state these records leave, so it is taken
                // now, under the lock, once the journal has reached its roll size (which
                // grows with the snapshot, see `Sizes::roll_at`) and the previous roll's
                // snapshot is written; the records go to this journal, which overshoots by
                // at most one commit, or by what comes while a snapshot is written.
                let roll_at = sizes.roll_at(self.stats.snapshot_bytes());
                let full = journal.len >= roll_at && !keeper.writing_snapshot();
                let snapshot = full.then(|| {
                    let started = Instant::now();
                    let snapshot = inner.state.snapshot();
                    self.stats.snapshot_copied(started.elapsed());
                    snapshot
                });
                (inner.seq, snapshot, roll_at)
            };
            match self.commit_when_room(&mut journal, &commit) {
                Ok(took) => self
                    .stats
                    .commit(commit.records(), commit.record_bytes(), took),
                Err(err) => {
                    self.fail(&err);
                    return;
                }
            }
            commit.clear();
            self.durability.publish(seq);
            if let Some(file) = journal.wants_room() {
                keeper.extend(file);
            }
            if journal.len >= roll_at / 2 {
                keeper.create_ahead(journal.number + 1);
            }
            if let Some(snapshot) = snapshot {
                // Once the next journal exists it takes the records, snapshot or not: a
                // snapshot that failed after its rename already names it, and recovery
                // replays every journal from the one the snapshot on disk names.
                match keeper.take_journal(journal.number + 1) {
                    Ok(next) => {
                        journal = next;
                        keeper.snapshot(snapshot, seq, journal.number);
                    }
                    Err(err) => {
                        tracing::warn!(%err, "could not roll the journal into a snapshot");
                    }
                }
            }
        }
    }

    /// Commits `commit`. When the disk has no room for it (none of them was written), the
    /// pools do not stop: the commit is tried again, with growing waits, until there is room
    /// (an operator freed space) or the host stops. Meanwhile operations go on in memory and
    /// their answers stay held, as they would behind a slow sync. Any other failure is
    /// final: after a failed write or `fdatasync` what reached the disk is unknown. Returns
    /// how long the commit that succeeded took.
    fn commit_when_room(
        &self,
        journal: &mut Journal,
        commit: &Commit,
    ) -> Result<Duration, StoreError> {
        let mut wait = NO_ROOM_RETRY_FIRST;
        let took = loop {
            let started = Instant::now();
            let err = match journal.commit(commit) {
                Ok(()) => break started.elapsed(),
                Err(CommitError::Failed(err)) => return Err(err),
                Err(CommitError::NoRoom(err)) => err,
            };
            if !self.stats.waiting_for_room(true) {
                tracing::error!(%err, "no room for the journal: commits wait, answers are held");
            }
            let inner = self.lock();
            if inner.stopping {
                return Err(err);
            }
            drop(self.work.wait_timeout(inner, wait));
            wait = (wait * 2).min(NO_ROOM_RETRY_MAX);
        };
        if self.stats.waiting_for_room(false) {
            tracing::info!("the journal has room again: commits go on");
        }
        Ok(took)
    }

    /// The journal cannot be written: nothing more is granted and held answers fail.
    fn fail(&self, err: &StoreError) {
        let reason = format!("the pools' journal cannot be written: {err}");
        tracing::error!(%reason, "pools stopped");
        self.lock().failed = Some(reason.clone());
        self.durability.fail(reason);
    }
}

/// Where a waiting acquire's grant (or why it ended) goes.
enum Answer {
    /// To a thread blocked in [`Pools::acquire`].
    Blocking(SyncSender<Result<LeaseView, PoolError>>),
    /// To a task awaiting in [`Pools::acquire_async`].
    Task(oneshot::Sender<Result<LeaseView, PoolError>>),
}

impl Answer {
    fn send(self, result: Result<LeaseView, PoolError>) {
        // A waiter that already gave up has dropped its end; its grant was cancelled.
        match self {
            // The channel has room for its one answer.
            Answer::Blocking(answer) => drop(answer.try_send(result)),
            Answer::Task(answer) => drop(answer.send(result)),
        }
    }
}

/// How an acquire began.
enum Begun<A, Rx> {
    Granted(A),
    Waiting {
        id: WaiterId,
        wait: Duration,
        answered: Rx,
    },
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("persistent", &self.persistent)
            .finish_non_exhaustive()
    }
}
