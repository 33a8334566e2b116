//! The coordinator: the one task that owns every lane and the type → jobber routes.
//!
//! Connections send it [`Message::Demands`]; it answers unknown types and `srvQueuePrint`
//! itself, queues the rest in their type's [`Lane`], and hands each idle lane's queued
//! requests to an executor task as a batch. Executors answer clients directly and report
//! `Done`, which frees the lane for its next batch. Owning all queues in one task is what
//! makes "one request of a type in flight" a plain field instead of a lock.

mod executor;
pub(crate) mod message;

use crate::jobber::Handler;
use crate::queue::Lane;
use crate::server::peer::{Gauge, Peer};
use executor::{Batch, Limits, Pending, Shared};
use message::{Demand, Message};
use resman_sdk::protocol::ErrorCode;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

/// The built-in type that reports the queues.
pub(crate) const QUEUE_PRINT: &str = "srvQueuePrint";

/// A request type's jobber and queue.
struct Route {
    kind: Arc<str>,
    handler: Arc<dyn Handler>,
    lane: Lane<Demand>,
    /// The not yet started requests of the batch that is out.
    batch: Pending,
}

impl Route {
    /// (waiting, running): the batch's requests not yet started count as waiting.
    fn counts(&self) -> (usize, usize) {
        let in_batch = self.batch().len();
        (
            self.lane.queued() + in_batch,
            usize::from(self.lane.is_busy()),
        )
    }

    fn batch(&self) -> std::sync::MutexGuard<'_, VecDeque<Demand>> {
        self.batch
            .lock()
            .expect("batch lock is never held across a panic")
    }
}

pub(crate) struct Coordinator {
    inbox: UnboundedReceiver<Message>,
    /// Cloned into executors, which report on it.
    outbox: UnboundedSender<Message>,
    routes: HashMap<Arc<str>, Route>,
    /// Lanes that may have a batch to hand out.
    ready: Vec<Arc<str>>,
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
        config: &crate::Config,
    ) -> Self {
        let routes = handlers
            .into_iter()
            .map(|(kind, handler)| {
                let route = Route {
                    kind: kind.clone(),
                    handler,
                    lane: Lane::default(),
                    batch: Pending::default(),
                };
                (kind, route)
            })
            .collect();
        Coordinator {
            inbox,
            outbox,
            routes,
            ready: Vec::new(),
            shared: Arc::new(Shared {
                limits: Limits {
                    timeout: config.jobber_timeout,
                    max_attempts: config.max_attempts,
                },
                draining: AtomicBool::new(false),
            }),
            gauge,
            batch_size: config.batch_size,
            queue_report: config.queue_report,
            draining: false,
            busy_lanes: 0,
        }
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
        drained.cancel();
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Demands(demands) => demands.into_iter().for_each(|d| self.admit(d)),
            Message::Done { kind, retries } => self.finish(kind, retries),
            Message::Disconnected(peer) => self.forget(peer),
            Message::Shutdown => self.drain(),
        }
    }

    fn admit(&mut self, demand: Demand) {
        let request = &demand.request;
        if request.kind.as_ref() == QUEUE_PRINT {
            let queues = self.queue_snapshot();
            tracing::info!(queues = %queues, "queue print requested");
            let status = json!({
                "queues": queues,
                "connections": self.gauge.connections(),
                "pending": self.gauge.pending(),
            });
            return demand.peer.reply(request, status);
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

    fn finish(&mut self, kind: Arc<str>, retries: Vec<Demand>) {
        self.busy_lanes -= 1;
        let Some(route) = self.routes.get_mut(&kind) else {
            return;
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
            route.batch().extend(batch);
            let batch = Batch {
                kind,
                handler: route.handler.clone(),
                pending: route.batch.clone(),
            };
            tokio::spawn(executor::execute(
                batch,
                self.shared.clone(),
                self.outbox.clone(),
            ));
        }
    }

    fn forget(&mut self, peer: u64) {
        for route in self.routes.values_mut() {
            route.lane.retain(|demand| demand.peer.id != peer);
            route.batch().retain(|demand| demand.peer.id != peer);
        }
    }

    fn drain(&mut self) {
        self.draining = true;
        self.shared.draining.store(true, Ordering::Relaxed);
        self.ready.clear();
        for route in self.routes.values_mut() {
            route
                .lane
                .drain_queued()
                .for_each(|d| refuse_shutting_down(&d));
            route
                .batch()
                .drain(..)
                .for_each(|d| refuse_shutting_down(&d));
        }
    }

    fn queue_snapshot(&self) -> Value {
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
        Value::Object(
            sorted
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Map<_, _>>(),
        )
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

/// Tells the coordinator that `peer` closed with requests still pending.
pub(crate) fn disconnected(coordinator: &UnboundedSender<Message>, peer: &Peer) {
    let _ = coordinator.send(Message::Disconnected(peer.id));
}
