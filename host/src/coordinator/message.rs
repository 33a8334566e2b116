//! Everything the coordinator accepts: it owns the lanes, others send it messages.

use crate::jobber::Request;
use crate::plugins::LoadedPlugin;
use crate::server::peer::Peer;
use std::path::PathBuf;
use std::sync::Arc;

/// A request on its way through the host, with the connection to answer.
///
/// Counted as pending on its peer from creation until it is dropped, so every way a request
/// can end — answered, discarded after a disconnect, refused at shutdown — releases its
/// place in the back-pressure bounds exactly once.
#[derive(Debug)]
pub(crate) struct Demand {
    pub(crate) request: Request,
    pub(crate) peer: Arc<Peer>,
    /// The reason the last attempt asked for a retry.
    pub(crate) last_error: Option<String>,
}

impl Demand {
    pub(crate) fn new(request: Request, peer: Arc<Peer>) -> Self {
        peer.add_pending(1);
        Demand {
            request,
            peer,
            last_error: None,
        }
    }
}

impl Drop for Demand {
    fn drop(&mut self) {
        self.peer.finish_one();
    }
}

/// A change in the plugins folder, already loaded and validated off the coordinator.
#[derive(Debug)]
pub(crate) enum PluginEvent {
    /// A file was added or changed and loaded.
    Loaded(LoadedPlugin),
    /// A file was removed (or renamed away).
    Removed(PathBuf),
    /// A file failed to load; what was serving keeps serving.
    Refused { path: PathBuf, error: String },
}

/// A message to the coordinator.
#[derive(Debug)]
pub(crate) enum Message {
    /// New requests from one connection, in arrival order.
    Demands(Vec<Demand>),
    /// A lane's batch finished; `retries` go to the back of the lane.
    Done {
        kind: Arc<str>,
        generation: u64,
        retries: Vec<Demand>,
    },
    /// A connection with pending requests closed: drop its queued ones.
    Disconnected(u64),
    /// The plugins folder changed.
    Plugin(PluginEvent),
    /// Stop: answer what is queued, let batches finish, then report drained.
    Shutdown,
}
