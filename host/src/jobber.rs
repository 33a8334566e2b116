//! The jobber interface the coordinator calls: a request in, a result or a verdict out.
//!
//! In-process jobbers are closures registered with [`crate::HostBuilder::jobber`]; plugins are
//! adapted to the same [`Handler`] trait, so the coordinator has one way to run a request.

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Number, Value};
use std::future::Future;
use std::sync::Arc;

/// One request as a jobber sees it. Cheap to clone: the payload is shared.
#[derive(Clone, Debug)]
pub struct Request {
    pub(crate) kind: Arc<str>,
    pub(crate) query_index: Number,
    /// The payload's JSON text, exactly as sent (the parser checked that it is JSON).
    pub(crate) payload: Option<Arc<str>>,
    pub(crate) client_id: u64,
    pub(crate) attempt: u32,
}

impl Request {
    /// The request type.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The client's `queryIndex`.
    pub fn query_index(&self) -> &Number {
        &self.query_index
    }

    /// The connection the request came on; stable while the connection lives.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Which attempt this is, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The payload's JSON text as sent, or `None` when the request had none.
    pub fn payload_text(&self) -> Option<&str> {
        self.payload.as_deref()
    }

    /// The payload decoded as `T`; a missing payload decodes as JSON `null`.
    ///
    /// # Errors
    ///
    /// A [`JobError::invalid`] saying why the payload does not fit `T`, ready to return.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        let text = self.payload_text().unwrap_or("null");
        resman_sdk::parse_payload(&self.kind, text)
    }
}

/// A jobber's verdict on a request it could not serve: the SDK's, so in-process jobbers and
/// plugins speak the same `retry` / `fail`.
pub use resman_sdk::jobber::JobError;

/// What a jobber returns: the `resultJob` object, or a verdict.
pub type JobResult = Result<Value, JobError>;

/// Serves the requests of one or more types. At most one call per type runs at a time.
///
/// Implemented for every `Fn(Request) -> impl Future<Output = JobResult>`, so a closure is a
/// jobber:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let counter = AtomicU64::new(0);
/// let host = resman::Host::builder().jobber("cntResponse", move |_req| {
///     let cnt = counter.fetch_add(1, Ordering::Relaxed);
///     async move { Ok(serde_json::json!({ "cnt": cnt })) }
/// });
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Serves one request.
    fn call(&self, request: Request) -> BoxFuture<'static, JobResult>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobResult> + Send + 'static,
{
    fn call(&self, request: Request) -> BoxFuture<'static, JobResult> {
        Box::pin(self(request))
    }
}
