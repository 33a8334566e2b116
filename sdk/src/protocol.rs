//! The wire protocol: what a request and a response look like, the stable error codes, and
//! the two framings. See `PROTOCOL.md` in the repository for the rules these types encode.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The separator the original package ends every message with: `🦀` (U+1F980).
pub const CRAB: &[u8] = "🦀".as_bytes();

/// How a crab inside a JSON string is written in responses, so that a client that splits
/// blindly on [`CRAB`] still reads every message whole.
pub const CRAB_ESCAPED: &[u8] = br"\ud83e\udd80";

/// The default TCP port, the original's `SOCKET_PORT`.
pub const DEFAULT_PORT: u16 = 41969;

/// The type of the response to a message that is not valid JSON or lacks `type`/`queryIndex`.
pub const ERR_MSG_FROM_CLIENT: &str = "errMsgFromClient";

/// How messages are delimited on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Framing {
    /// Every message ends with [`CRAB`], as in the original package.
    #[default]
    Crab,
    /// One JSON object per line.
    Newline,
}

impl Framing {
    /// The bytes that end a message in this framing.
    pub fn terminator(self) -> &'static [u8] {
        match self {
            Framing::Crab => CRAB,
            Framing::Newline => b"\n",
        }
    }
}

/// A stable, machine-readable word for what went wrong, carried as `code` in an error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No jobber handles the request's type.
    UnknownType,
    /// The message is not valid JSON, or lacks `type` or `queryIndex`.
    BadRequest,
    /// The message is larger than the server accepts; the connection is closed.
    MessageTooLarge,
    /// The jobber failed (after its retries, if it asked for them).
    JobberFailed,
    /// The jobber did not answer within its deadline.
    Timeout,
    /// The server's queues are full; try again later.
    Overloaded,
    /// The plugin that handled this type was removed while the request waited.
    HandlerRemoved,
    /// No resource is free.
    Unavailable,
    /// The thing the request names (a lease, a resource, a pool, a booking) does not exist.
    NotFound,
    /// The request's payload makes no sense to its jobber.
    Invalid,
    /// The request clashes with the current state (a seat already sold, an overlapping
    /// booking, a request id already used).
    Conflict,
    /// The server is shutting down and did not run the request.
    ShuttingDown,
    /// A code this version of the SDK does not know.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::JobberFailed => "jobber_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::HandlerRemoved => "handler_removed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Other => "other",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `resultJob` of an error response: `{"err": "...", "code": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// A human-readable explanation, as in the original package.
    pub err: String,
    /// The stable code.
    pub code: ErrorCode,
}

impl ErrorReply {
    /// An error reply with `code` and the message `err`.
    pub fn new(code: ErrorCode, err: impl Into<String>) -> Self {
        ErrorReply {
            err: err.into(),
            code,
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.err, self.code)
    }
}

/// A request as a client writes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request<P = serde_json::Value> {
    /// The request type; selects the jobber.
    #[serde(rename = "type")]
    pub kind: String,
    /// Chosen by the client, unique among its requests in flight, echoed in the response.
    #[serde(rename = "queryIndex")]
    pub query_index: u64,
    /// Passed to the jobber as is.
    #[serde(default)]
    pub payload: P,
}

/// A response as the server writes it. `result_job` holds either the jobber's result or an
/// [`ErrorReply`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response<R = serde_json::Value> {
    /// The request's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request's `queryIndex`, or `null` when it could not be read.
    #[serde(rename = "queryIndex")]
    pub query_index: Option<serde_json::Number>,
    /// The jobber's result, or `{"err", "code"}`.
    #[serde(rename = "resultJob", default)]
    pub result_job: R,
}

impl Response {
    /// The error this response carries, if its `resultJob` is `{"err": ..., "code": ...}`.
    ///
    /// A result with `err` but no known `code` (the original server's errors) reads as
    /// [`ErrorCode::Other`].
    pub fn error(&self) -> Option<ErrorReply> {
        let err = self.result_job.get("err")?.as_str()?.to_owned();
        let code = self
            .result_job
            .get("code")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or(ErrorCode::Other);
        Some(ErrorReply { err, code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_unknown_codes_read_as_other() {
        let reply = ErrorReply::new(ErrorCode::UnknownType, "no handler");
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(text, r#"{"err":"no handler","code":"unknown_type"}"#);
        let other: ErrorReply = serde_json::from_str(r#"{"err":"x","code":"brand_new"}"#).unwrap();
        assert_eq!(other.code, ErrorCode::Other);
    }

    #[test]
    fn crab_escape_decodes_to_the_crab() {
        let text = format!("\"{}\"", std::str::from_utf8(CRAB_ESCAPED).unwrap());
        let s: String = serde_json::from_str(&text).unwrap();
        assert_eq!(s.as_bytes(), CRAB);
    }
}
