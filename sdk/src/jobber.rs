//! The jobber interface as a plugin author sees it: a [`Request`] comes in, a JSON value or a
//! [`JobError`] goes out. This is the last step of the data path (connection → coordinator →
//! lane → jobber); `export_jobber!` adapts it to the WIT world or to the native C ABI, so the
//! same `impl Jobber` builds as a `.wasm` component and as a native library.
//!
//! A retry or a failure is a verdict, not a crash: it is a value ([`JobError`]) the host acts
//! on. A panic (or a trap in WASM) is the crash path; the host throws that instance away.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// One request from a client, owned by the jobber for the duration of the call.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The request type (the wire protocol's `type`): the entry of [`Jobber::TYPES`] it is,
    /// so a jobber serving several types can `match request.kind { ... }`.
    pub kind: &'static str,
    /// The client's `queryIndex`, as a number (the response carries the client's own text).
    pub query_index: f64,
    /// Which connection sent it; stable while that connection lives.
    pub client_id: u64,
    /// 1 for the first attempt, more when an earlier attempt returned [`JobError::Retry`].
    pub attempt: u32,
    /// The request's `payload` as JSON text; `null` when the request had none.
    pub payload: String,
}

impl Request {
    /// Parses the payload into `T`; see [`parse_payload`].
    ///
    /// # Errors
    ///
    /// As [`parse_payload`].
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        parse_payload(self.kind, &self.payload)
    }
}

/// Parses the payload `payload` of a `kind` request into `T`.
///
/// # Errors
///
/// [`JobError::invalid`] naming `kind` and what is wrong, when the payload does not fit `T`:
/// the client's mistake, which sending it again would not mend.
pub fn parse_payload<T: DeserializeOwned>(kind: &str, payload: &str) -> Result<T, JobError> {
    serde_json::from_str(payload)
        .map_err(|err| JobError::invalid(format!("{kind}: bad payload: {err}")))
}

/// Like [`parse_payload`] for a payload that must be a JSON object (or `null`, for a `T`
/// whose fields are all optional): a JSON array is refused before serde sees it, since serde
/// would otherwise fill a struct's fields from it by position.
///
/// # Errors
///
/// As [`parse_payload`].
pub fn parse_object<T: DeserializeOwned>(kind: &str, payload: &str) -> Result<T, JobError> {
    if payload.trim_start().starts_with('[') {
        return Err(JobError::invalid(format!(
            "{kind}: bad payload: an array, expected an object"
        )));
    }
    parse_payload(kind, payload)
}

/// Why a request could not be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobError {
    /// Worth trying again: the request goes to the back of its type's queue.
    Retry(String),
    /// Final: the client is answered `jobber_failed` with this reason.
    Fail(String),
    /// Final: the client is answered with error code `code` (a lowercase word: `a`-`z` and
    /// `_`, at most 32 bytes, such as `unavailable` or `conflict`) and `message`. A code
    /// that breaks the rule is answered as `jobber_failed`.
    Reject {
        /// The `code` the client reads.
        code: String,
        /// The `err` the client reads.
        message: String,
    },
}

impl JobError {
    /// A retry verdict with `reason`.
    pub fn retry(reason: impl Into<String>) -> Self {
        JobError::Retry(reason.into())
    }

    /// A final failure with `reason`.
    pub fn fail(reason: impl Into<String>) -> Self {
        JobError::Fail(reason.into())
    }

    /// A final answer with error code `code` and `message`.
    pub fn reject(code: impl Into<String>, message: impl Into<String>) -> Self {
        JobError::Reject {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A final answer with code `invalid`: the request makes no sense to the jobber.
    pub fn invalid(message: impl Into<String>) -> Self {
        JobError::reject("invalid", message)
    }

    /// The reason, whichever the verdict.
    pub fn reason(&self) -> &str {
        match self {
            JobError::Retry(reason) | JobError::Fail(reason) => reason,
            JobError::Reject { message, .. } => message,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Retry(reason) => write!(f, "retry: {reason}"),
            JobError::Fail(reason) => write!(f, "fail: {reason}"),
            JobError::Reject { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

impl std::error::Error for JobError {}

/// A request handler: the code a plugin exists for. Export it with
/// [`export_jobber!`](crate::export_jobber).
///
/// One value of the type is one instance: the host makes it with [`Default`] and calls
/// [`handle`](Jobber::handle) on it one request after another, so fields carry state between
/// requests (the original's `counter++`). The host may make several instances (one per
/// request type it serves, and a fresh one after a crash), so state that must be shared or
/// must survive a restart belongs in the host, not in fields.
///
/// `Send` because a native host may move an instance between threads (never two calls at
/// once).
pub trait Jobber: Default + Send + 'static {
    /// The request types this jobber serves.
    const TYPES: &'static [&'static str];

    /// What [`handle`](Jobber::handle) answers, sent to the client as `resultJob`: a
    /// `#[derive(Serialize)]` type, or [`serde_json::Value`] for answers built with `json!`.
    /// A typed answer is written straight to JSON text; a `Value` is first built as a tree
    /// (a map per object), which costs more per request.
    type Answer: Serialize;

    /// Serves one request; `Ok` is the `resultJob` sent to the client.
    ///
    /// # Errors
    ///
    /// [`JobError::Retry`] to have the request queued again, [`JobError::Fail`] to answer the
    /// client `jobber_failed`, [`JobError::Reject`] to answer it an error code of your own.
    fn handle(&mut self, request: Request) -> Result<Self::Answer, JobError>;

    /// The JSON text of `answer`, sent as `resultJob`. The default writes it with
    /// `serde_json`. A jobber may write its hottest answers by hand with a
    /// [`json::Object`](crate::json::Object) instead, the same text at a fraction of the cost
    /// in a WASM guest (see [`json`](crate::json)).
    ///
    /// # Errors
    ///
    /// [`JobError::Fail`] when the answer does not serialize (a map with non-string keys, a
    /// `Serialize` impl that fails).
    fn answer_text(answer: Self::Answer) -> Result<String, JobError> {
        serde_text(&answer)
    }
}

/// `answer` as JSON text, written by `serde_json`: what [`Jobber::answer_text`] does unless a
/// jobber overrides it, and what an override calls for the answers it does not write by hand.
///
/// # Errors
///
/// [`JobError::Fail`] when the answer does not serialize (a map with non-string keys, a
/// `Serialize` impl that fails).
pub fn serde_text<T: Serialize + ?Sized>(answer: &T) -> Result<String, JobError> {
    // `to_string` writes straight into the string; `Value`'s `Display` (what `to_string()`
    // calls) would go through a formatter adapter per write.
    serde_json::to_string(answer)
        .map_err(|err| JobError::fail(format!("the answer does not serialize to JSON: {err}")))
}

/// The failure a guest answers for a request of a type its jobber does not declare (the host
/// never sends one; a mismatched host might).
pub(crate) const UNDECLARED_TYPE: &str = "the host asked for a type this plugin does not declare";

/// Serves `request` on `jobber` and writes its answer as JSON text, for the WASM and the
/// native export alike.
pub(crate) fn serve<T: Jobber>(jobber: &mut T, request: Request) -> Result<String, JobError> {
    T::answer_text(jobber.handle(request)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(payload: &str) -> Request {
        Request {
            kind: "t",
            query_index: 1.0,
            client_id: 7,
            attempt: 1,
            payload: payload.into(),
        }
    }

    #[test]
    fn payload_parses_into_the_asked_type() {
        let value: Vec<u32> = request("[1,2]").payload().unwrap();
        assert_eq!(value, [1, 2]);
    }

    #[test]
    fn a_payload_that_does_not_fit_is_invalid() {
        let err = request("\"x\"").payload::<u32>().unwrap_err();
        assert!(matches!(&err, JobError::Reject { code, .. } if code == "invalid"));
        assert!(err.reason().starts_with("t: bad payload"), "{err}");
    }

    #[test]
    fn an_array_does_not_fill_a_struct_by_position() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Pair {
            a: u32,
            b: u32,
        }
        let err = parse_object::<Pair>("t", "[1, 2]").unwrap_err();
        assert!(
            err.reason().contains("an array, expected an object"),
            "{err}"
        );
        assert!(parse_object::<Pair>("t", r#"{"a": 1, "b": 2}"#).is_ok());
    }

    #[test]
    fn reason_reads_either_verdict() {
        assert_eq!(JobError::retry("busy").reason(), "busy");
        assert_eq!(JobError::fail("gone").reason(), "gone");
    }
}
