//! The TCP side: the accept loop here, one [`connection::Connection`] task per client, the
//! shared [`peer::Peer`] state executors answer into, and [`parse`] for a frame's JSON.

pub(crate) mod connection;
pub(crate) mod parse;
pub(crate) mod peer;

use crate::coordinator::message::Message;
use connection::{ConnLimits, Connection};
use peer::{Gauge, Peer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accepts clients and spawns their connection tasks.
pub(crate) struct Listener {
    pub(crate) listener: TcpListener,
    pub(crate) coordinator: UnboundedSender<Message>,
    pub(crate) limits: ConnLimits,
    pub(crate) max_connections: usize,
    pub(crate) gauge: Arc<Gauge>,
    /// Cancelled when the coordinator has drained; connections then flush and close.
    pub(crate) drained: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Listener {
    /// Accepts until the future is dropped. Accept errors (out of file descriptors, say) are
    /// logged and retried with a growing pause instead of stopping the server.
    pub(crate) async fn accept_loop(&self) {
        let mut next_id = 0u64;
        let mut backoff = Duration::from_millis(5);
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, pause = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            backoff = Duration::from_millis(5);
            if self.gauge.connections() >= self.max_connections {
                tracing::warn!(peer = %addr, limit = self.max_connections, "connection limit reached; closing new connection");
                continue;
            }
            let _ = stream.set_nodelay(true);
            next_id += 1;
            tracing::debug!(conn = next_id, peer = %addr, "connection accepted");
            let peer = Arc::new(Peer::new(next_id, self.gauge.clone()));
            let connection = Connection::new(stream, peer, self.coordinator.clone(), self.limits);
            let drained = self.drained.clone();
            let counted = self.gauge.open_connection();
            self.tasks.spawn(async move {
                connection.serve(drained).await;
                drop(counted);
            });
        }
    }
}
