//! [`Route`]: what the coordinator keeps per request type — the jobber that serves it, its
//! [`Lane`], and the batch that is out. A jobber is in-process (an async [`Handler`]) or a
//! plugin's [`PluginLane`], which owns the one live instance that serves this type.

use super::message::Demand;
use crate::jobber::Handler;
use crate::plugins::wasm::{Feed, WasmFactory, WasmInstance};
use crate::plugins::{CallOutcome, Instance, LoadedPlugin, PluginRequest};
use crate::queue::Lane;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The requests of a batch not yet started. Shared between the coordinator, which removes a
/// disconnected client's requests from it, refuses them at shutdown and moves them to a new
/// plugin version on reload, and the executor, which takes one at a time. The lock is held
/// only to pop or retain, never across a call.
pub(crate) type Pending = Arc<Mutex<VecDeque<Demand>>>;

pub(crate) fn lock(pending: &Pending) -> MutexGuard<'_, VecDeque<Demand>> {
    pending
        .lock()
        .expect("batch lock is never held across a panic")
}

/// How a type is served.
#[derive(Clone)]
pub(crate) enum Jobber {
    /// Registered with `HostBuilder::jobber`, or built in.
    InProcess(Arc<dyn Handler>),
    /// A plugin file's jobber for this type.
    Plugin(Arc<PluginLane>),
}

impl Jobber {
    /// The plugin file that serves the type, if a plugin does.
    pub(crate) fn plugin_path(&self) -> Option<&Path> {
        match self {
            Jobber::InProcess(_) => None,
            Jobber::Plugin(lane) => Some(&lane.plugin.path),
        }
    }
}

/// A plugin serving one type: the plugin and the lane's live instance, made on first use and
/// replaced after a crash or deadline.
pub(crate) struct PluginLane {
    pub(crate) plugin: LoadedPlugin,
    /// The plugin's store namespace: its file name without the extension, so the WASM and
    /// the native build of one plugin share their state.
    pub(crate) namespace: Arc<str>,
    /// The lane's type's position in the plugin's declared types.
    pub(crate) kind_index: u32,
    /// A native lane's instance, between its batches: each batch's thread takes it for its
    /// run.
    instance: Mutex<Option<Box<dyn Instance>>>,
    /// A WASM lane's instance, between its batches: each batch's task takes it for its run.
    wasm_instance: Mutex<Option<WasmInstance>>,
}

impl PluginLane {
    /// The lane of `plugin` for its declared type at position `kind_index`.
    pub(crate) fn new(plugin: LoadedPlugin, kind_index: u32) -> Self {
        let namespace = plugin
            .path
            .file_stem()
            .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
        PluginLane {
            plugin,
            namespace: namespace.into(),
            kind_index,
            instance: Mutex::new(None),
            wasm_instance: Mutex::new(None),
        }
    }

    /// The WASM lane's instance, for a batch's task to call ([`call_wasm`]) and then
    /// [`keep`](Self::keep) for the next batch.
    pub(crate) fn take(&self) -> Option<WasmInstance> {
        lock_slot(&self.wasm_instance).take()
    }

    pub(crate) fn keep(&self, instance: Option<WasmInstance>) {
        *lock_slot(&self.wasm_instance) = instance;
    }

    /// A native lane's instance, for a batch's thread to call ([`call_native`]) and then
    /// [`keep_native`](Self::keep_native) for the next batch. A batch abandoned at its
    /// deadline never gives it back, so the next batch makes a fresh one.
    pub(crate) fn take_native(&self) -> Option<Box<dyn Instance>> {
        lock_slot(&self.instance).take()
    }

    pub(crate) fn keep_native(&self, instance: Option<Box<dyn Instance>>) {
        *lock_slot(&self.instance) = instance;
    }
}

/// Calls a native lane's instance (`slot`), making one first if there is none, and throws
/// it away if the call left it unusable.
pub(crate) fn call_native(
    lane: &PluginLane,
    slot: &mut Option<Box<dyn Instance>>,
    request: &PluginRequest<'_>,
    deadline: Duration,
) -> CallOutcome {
    let instance = match slot {
        Some(instance) => instance,
        None => match lane.plugin.factory.instantiate() {
            Ok(made) => slot.insert(made),
            Err(err) => return CallOutcome::Crashed(err.to_string()),
        },
    };
    let outcome = instance.call(request, deadline);
    if outcome.poisons_instance() {
        *slot = None;
    }
    outcome
}

/// Calls a WASM lane's instance (`slot`), making one first if there is none, and throws it
/// away if the call left it unusable.
pub(crate) async fn call_wasm(
    factory: &WasmFactory,
    slot: &mut Option<WasmInstance>,
    request: &PluginRequest<'_>,
    due: Instant,
) -> CallOutcome {
    let instance = match instance_in(factory, slot).await {
        Ok(instance) => instance,
        Err(failed) => return failed,
    };
    let outcome = instance.call_async(request, due).await;
    if outcome.poisons_instance() {
        *slot = None;
    }
    outcome
}

/// Serves a batch from `feed` in one `serve-batch` call of a WASM lane's instance (`slot`),
/// making one first if there is none, and throws it away if the call trapped.
pub(crate) async fn serve_wasm_batch<F: Feed>(
    factory: &WasmFactory,
    slot: &mut Option<WasmInstance>,
    kind: u32,
    feed: F,
    idle_due: Instant,
) -> (F, Result<(), CallOutcome>) {
    let instance = match instance_in(factory, slot).await {
        Ok(instance) => instance,
        Err(failed) => return (feed, Err(failed)),
    };
    let (feed, ended) = instance.serve_batch(kind, feed, idle_due).await;
    if ended.is_err() {
        *slot = None;
    }
    (feed, ended)
}

/// The WASM lane's instance in `slot`, made first if there is none; a failure to make one
/// is the call's crash.
async fn instance_in<'a>(
    factory: &WasmFactory,
    slot: &'a mut Option<WasmInstance>,
) -> Result<&'a mut WasmInstance, CallOutcome> {
    match slot {
        Some(instance) => Ok(instance),
        None => {
            let made = factory.instantiate_async().await;
            Ok(slot.insert(made.map_err(|err| CallOutcome::Crashed(err.to_string()))?))
        }
    }
}

fn lock_slot<T>(slot: &Mutex<T>) -> MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A request type's jobber and queue.
pub(crate) struct Route {
    pub(crate) kind: Arc<str>,
    pub(crate) jobber: Jobber,
    pub(crate) lane: Lane<Demand>,
    /// The not yet started requests of the batch that is out.
    pub(crate) batch: Pending,
    /// Tells this route's batches from those of an earlier route of the same type (removed
    /// and added again), whose "done" must not free this lane.
    pub(crate) generation: u64,
}

impl Route {
    pub(crate) fn new(kind: Arc<str>, jobber: Jobber, generation: u64) -> Self {
        Route {
            kind,
            jobber,
            lane: Lane::default(),
            batch: Pending::default(),
            generation,
        }
    }

    /// (waiting, running): the batch's requests not yet started count as waiting.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let in_batch = lock(&self.batch).len();
        (
            self.lane.queued() + in_batch,
            usize::from(self.lane.is_busy()),
        )
    }

    /// Every request not yet started, batch first, in order; the lane stays busy if a batch
    /// is out.
    pub(crate) fn take_waiting(&mut self) -> Vec<Demand> {
        let mut waiting: Vec<Demand> = lock(&self.batch).drain(..).collect();
        waiting.extend(self.lane.drain_queued());
        waiting
    }

    /// Drops the queued requests of a closed connection.
    pub(crate) fn forget(&mut self, peer: u64) {
        self.lane.retain(|demand| demand.peer.id != peer);
        lock(&self.batch).retain(|demand| demand.peer.id != peer);
    }
}
