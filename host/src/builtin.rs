//! Built-in request types answered by the host itself. `ping` is an ordinary in-process
//! jobber, so it travels the same path as any request and `resman bench --type ping` measures
//! the architecture; `srvQueuePrint` and `srvPlugins` are answered by the coordinator, which
//! owns the queues and the plugin registry.

use crate::jobber::{Handler, JobResult, Request};
use serde_json::json;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The request type of the liveness check.
pub const PING: &str = "ping";

/// Types no plugin or in-process jobber may claim.
pub const RESERVED: [&str; 4] = [
    PING,
    crate::coordinator::QUEUE_PRINT,
    crate::coordinator::PLUGIN_LIST,
    resman_sdk::protocol::ERR_MSG_FROM_CLIENT,
];

/// `ping`: answers `{"pong": n}` with n increasing from 1.
pub(crate) fn ping() -> Arc<dyn Handler> {
    let pongs = AtomicU64::new(0);
    Arc::new(move |_request: Request| -> Ready<JobResult> {
        let pong = pongs.fetch_add(1, Ordering::Relaxed) + 1;
        ready(Ok(json!({ "pong": pong })))
    })
}
