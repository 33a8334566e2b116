//! The coordinator: the one task that owns every lane and the type → jobber routes.
//!
//! Connections send it [`Message::Demands`]; it answers unknown types, `srvQueuePrint` and
//! `srvPlugins` itself, queues the rest in their type's lane, and hands each idle lane's
//! queued requests to an executor as a batch. Executors answer clients directly and report
//! `Done`, which frees the lane for its next batch. Owning all queues in one task is what
//! makes "one request of a type in flight" a plain field instead of a lock. Plugin changes
//! arrive as messages too ([`plugins`]), so a reload happens between two batches.

mod executor;
pub(crate) mod message;
mod plugins;
mod route;
mod watch;

use crate::jobber::Handler;
use crate::server::peer::{Gauge, Peer};
use executor::{Batch, Limits, Shared};
use message::{Demand, Message};
use resman_sdk::protocol::ErrorCode;
use route::{lock, Jobber, Route};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

/// The built-in type that reports the queues.
pub(crate) const QUEUE_PRINT: &str = "srvQueuePrint";

/// The built-in type that lists the loaded plugins.
pub(crate) const PLUGIN_LIST: &str = "srvPlugins";

pub(crate) struct Coordinator {
    inbox: UnboundedReceiver<Message>,
    /// Cloned into executors, which report on it.
    outbox: UnboundedSender<Message>,
    /// Looked up for every request, so hashed with foldhash rather than SipHash. Clients'
    /// type names are only looked up, never inserted, so they cannot crowd a bucket.
    routes: HashMap<Arc<str>, Route, foldhash::fast::RandomState>,
    /// The loaded plugin files.
    plugins: BTreeMap<PathBuf, crate::plugins::LoadedPlugin>,
    /// Files that failed to load or clashed, with why; until they load or go away.
    refused: BTreeMap<PathBuf, String>,
    /// The refused files that loaded but declare a type another file serves, kept loaded so
    /// that they serve as soon as the clash is gone, as they would after a restart.
    clashing: BTreeMap<PathBuf, crate::plugins::LoadedPlugin>,
    /// Lanes that may have a batch to hand out.
    ready: Vec<Arc<str>>,
    next_generation: u64,
    shared: Arc<Shared>,
    gauge: Arc<Gauge>,
    batch_size: usize,
    queue_report: Option<Duration>,
    draining: bool,
    busy_lanes: usize,
}

impl Coordinator {
    pub(crate) fn new(
        inbox: UnboundedReceiver<Message>,
        outbox: UnboundedSender<Message>,
        handlers: Vec<(Arc<str>, Arc<dyn Handler>)>,
        gauge: Arc<Gauge>,
        pools: Arc<crate::pools::Pools>,
        config: &crate::Config,
    ) -> Self {
        let mut coordinator = Coordinator {
            inbox,
            outbox,
            routes: HashMap::default(),
            plugins: BTreeMap::new(),
            refused: BTreeMap::new(),
            clashing: BTreeMap::new(),
            ready: Vec::new(),
            next_generation: 0,
            shared: Arc::new(Shared {
                limits: Limits {
                    timeout: config.jobber_timeout,
                    max_attempts: config.max_attempts,
                },
                draining: AtomicBool::new(false),
                pools,
            }),
            gauge,
            batch_size: config.batch_size,
            queue_report: config.queue_report,
            draining: false,
            busy_lanes: 0,
        };
        for (kind, handler) in handlers {
            coordinator.add_route(kind, Jobber::InProcess(handler));
        }
        coordinator
    }

    /// Runs until shutdown has drained every lane, then cancels `drained`.
    pub(crate) async fn run(mut self, drained: CancellationToken) {
        let mut messages = Vec::with_capacity(64);
        let mut report = self.queue_report.map(tokio::time::interval);
        loop {
            tokio::select! {
                received = self.inbox.recv_many(&mut messages, 64) => {
                    if received == 0 {
                        break;
                    }
                    for message in messages.drain(..) {
                        self.handle(message);
                    }
                    self.dispatch();
                }
                _ = tick(&mut report) => self.log_queues(),
            }
            if self.draining && self.busy_lanes == 0 {
                break;
            }
        }
        tracing::debug!("coordinator drained");
        // The last answers may still wait for their commit: flush it before the connections
        // are told to finish.
        let pools = Arc::clone(&self.shared.pools);
        if tokio::task::spawn_blocking(move || pools.close())
            .await
            .is_err()
        {
            tracing::error!("closing the pools panicked");
        }
        drained.cancel();
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Demands(demands) => demands.into_iter().for_each(|d| self.admit(d)),
            Message::Done {
                kind,
                generation,
                retries,
            } => self.finish(kind, generation, retries),
            Message::Disconnected(peer) => {
                self.routes.values_mut().for_each(|r| r.forget(peer));
                self.shared.pools.client_gone(peer);
            }
            Message::Plugin(event) => self.plugin_event(event),
            Message::Shutdown => self.drain(),
        }
    }

    fn admit(&mut self, demand: Demand) {
        let request = &demand.request;
        match request.kind.as_ref() {
            QUEUE_PRINT => return self.answer_queue_print(&demand),
            PLUGIN_LIST => return demand.peer.reply(request, self.plugin_list()),
            _ => {}
        }
        if self.draining {
            return refuse_shutting_down(&demand);
        }
        let Some(route) = self.routes.get_mut(request.kind.as_ref()) else {
            let err = format!("no handler for request type '{}'", request.kind);
            return demand
                .peer
                .reply_error(request, ErrorCode::UnknownType, &err);
        };
        if route.lane.push(demand) {
            self.ready.push(route.kind.clone());
        }
    }

    fn finish(&mut self, kind: Arc<str>, generation: u64, retries: Vec<Demand>) {
        self.busy_lanes -= 1;
        let route = self
            .routes
            .get_mut(&kind)
            .filter(|route| route.generation == generation);
        let Some(route) = route else {
            // The type was removed while the batch ran.
            return retries.iter().for_each(refuse_removed);
        };
        let mut waiting = route.lane.finish();
        for demand in retries {
            if self.draining {
                refuse_shutting_down(&demand);
            } else {
                route.lane.push(demand);
                waiting = true;
            }
        }
        if waiting && !self.draining {
            self.ready.push(kind);
        }
    }

    /// Hands every ready lane's next batch to an executor.
    fn dispatch(&mut self) {
        for kind in std::mem::take(&mut self.ready) {
            let Some(route) = self.routes.get_mut(&kind) else {
                continue;
            };
            let Some(batch) = route.lane.take_batch(self.batch_size) else {
                continue;
            };
            self.busy_lanes += 1;
            lock(&route.batch).extend(batch);
            let batch = Batch {
                kind,
                jobber: route.jobber.clone(),
                pending: route.batch.clone(),
                generation: route.generation,
            };
            executor::spawn(batch, self.shared.clone(), self.outbox.clone());
        }
    }

    fn add_route(&mut self, kind: Arc<str>, jobber: Jobber) {
        self.next_generation += 1;
        let route = Route::new(kind.clone(), jobber, self.next_generation);
        self.routes.insert(kind, route);
    }

    /// Unregisters `kind`; its waiting requests are answered `handler_removed`, a running
    /// one finishes.
    fn remove_route(&mut self, kind: &str) {
        if let Some(mut route) = self.routes.remove(kind) {
            route.take_waiting().iter().for_each(refuse_removed);
        }
    }

    fn drain(&mut self) {
        self.draining = true;
        self.shared.draining.store(true, Ordering::Relaxed);
        // A waiting acquire would hold its lane (and so the shutdown) until its wait ends.
        self.shared.pools.end_waits();
        self.ready.clear();
        for route in self.routes.values_mut() {
            route.take_waiting().iter().for_each(refuse_shutting_down);
        }
    }

    fn answer_queue_print(&self, demand: &Demand) {
        let sorted: BTreeMap<&str, Value> = self
            .routes
            .iter()
            .map(|(kind, route)| {
                let (queued, running) = route.counts();
                (
                    kind.as_ref(),
                    json!({ "queued": queued, "inFlight": running }),
                )
            })
            .collect();
        let queues: Map<String, Value> =
            sorted.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let logged = Value::Object(queues.clone());
        tracing::info!(queues = %logged, "queue print requested");
        let status = json!({
            "queues": queues,
            "connections": self.gauge.connections(),
            "pending": self.gauge.pending(),
            "journal": self.shared.pools.commit_report(),
        });
        demand.peer.reply(&demand.request, status);
    }

    fn log_queues(&self) {
        for (kind, route) in &self.routes {
            let (queued, running) = route.counts();
            if queued + running > 0 {
                tracing::info!(r#type = %kind, queued, in_flight = running, "queue");
            }
        }
    }
}

pub(crate) fn refuse_shutting_down(demand: &Demand) {
    let err = "the server is shutting down; the request was not run";
    demand
        .peer
        .reply_error(&demand.request, ErrorCode::ShuttingDown, err);
}

fn refuse_removed(demand: &Demand) {
    let err = format!(
        "the plugin serving '{}' was removed before the request ran",
        demand.request.kind
    );
    demand
        .peer
        .reply_error(&demand.request, ErrorCode::HandlerRemoved, &err);
}

async fn tick(report: &mut Option<tokio::time::Interval>) {
    match report {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sends `peer`'s requests to the coordinator (used by connections).
pub(crate) fn submit(coordinator: &UnboundedSender<Message>, demands: Vec<Demand>) {
    // Only fails after shutdown drained the coordinator; the demands then drop unanswered,
    // as the connection is about to close.
    let _ = coordinator.send(Message::Demands(demands));
}

/// Tells the coordinator that `peer` closed: its queued requests are dropped, its waiting
/// acquires and release-on-disconnect leases end.
pub(crate) fn disconnected(coordinator: &UnboundedSender<Message>, peer: &Peer) {
    let _ = coordinator.send(Message::Disconnected(peer.id));
}
