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
/// place in the back-pressure bounds exactly once. An answer held for a sync keeps the place
/// until the peer releases it (see [`Demand::answer_held`]).
#[derive(Debug)]
pub(crate) struct Demand {
    pub(crate) request: Request,
    pub(crate) peer: Arc<Peer>,
    /// The reason the last attempt asked for a retry.
    pub(crate) last_error: Option<String>,
    /// Whether the request still counts as pending on its peer when dropped.
    counted: bool,
}

impl Demand {
    pub(crate) fn new(request: Request, peer: Arc<Peer>) -> Self {
        peer.add_pending(1);
        Demand {
            request,
            peer,
            last_error: None,
            counted: true,
        }
    }

    /// The answer was held in the peer's outbox for a sync: the peer counts the request as
    /// pending until it releases the answer.
    pub(crate) fn answer_held(mut self) {
        self.counted = false;
    }
}

impl Drop for Demand {
    fn drop(&mut self) {
        if self.counted {
            self.peer.finish(1);
        }
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
