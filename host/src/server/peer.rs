//! [`Peer`]: what the rest of the host sees of one connection — whether it is still open, how
//! many of its requests are pending, and the outbox its answers are written into.
//!
//! Executors write answers straight into the peer's outbox and wake its connection task, so an
//! answer crosses threads once, not through the coordinator. The outbox is a byte buffer under
//! a std `Mutex`: it is held only to append or take bytes, never across an await, and an idle
//! connection then costs no more than an empty `Vec`.

use crate::jobber::Request;
use resman_sdk::frame::push_escaping_crabs;
use resman_sdk::protocol::{ErrorCode, Framing, ERR_MSG_FROM_CLIENT};
use serde_json::{Number, Value};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Requests pending in the whole host, for the global back-pressure bound.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    pending: AtomicUsize,
    connections: AtomicUsize,
}

impl Gauge {
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a connection as open until the returned guard drops.
    pub(crate) fn open_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }
}

/// Holds one place in the connection count.
pub(crate) struct ConnectionGuard(Arc<Gauge>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection's shared state.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Unique per host run; jobbers see it as the client id.
    pub(crate) id: u64,
    open: AtomicBool,
    /// Requests handed to the coordinator and not yet answered or dropped.
    pending: AtomicUsize,
    /// 0 until the first message ends, then 1 + the framing's index.
    framing: AtomicU8,
    outbox: Mutex<Vec<u8>>,
    /// Wakes the connection task when the outbox goes from empty to not empty.
    pub(crate) wake: Notify,
    gauge: Arc<Gauge>,
}

impl Peer {
    pub(crate) fn new(id: u64, gauge: Arc<Gauge>) -> Self {
        Peer {
            id,
            open: AtomicBool::new(true),
            pending: AtomicUsize::new(0),
            framing: AtomicU8::new(0),
            outbox: Mutex::new(Vec::new()),
            wake: Notify::new(),
            gauge,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.open.store(false, Ordering::Release);
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub(crate) fn gauge(&self) -> &Gauge {
        &self.gauge
    }

    /// Counts `n` requests as pending, here and in the host's gauge.
    pub(crate) fn add_pending(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::Relaxed);
        self.gauge.pending.fetch_add(n, Ordering::Relaxed);
    }

    /// One pending request was answered or dropped.
    pub(crate) fn finish_one(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        self.gauge.pending.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn set_framing(&self, framing: Framing) {
        let code = match framing {
            Framing::Crab => 1,
            Framing::Newline => 2,
        };
        self.framing.store(code, Ordering::Relaxed);
    }

    fn framing(&self) -> Framing {
        match self.framing.load(Ordering::Relaxed) {
            2 => Framing::Newline,
            _ => Framing::Crab,
        }
    }

    /// Answers `request` with the jobber's result.
    pub(crate) fn reply(&self, request: &Request, result: Value) {
        self.push(&request.kind, Some(&request.query_index), result);
    }

    /// Answers `request` with an error.
    /// Answers an error whose code a jobber chose (checked by the caller).
    pub(crate) fn reply_error_code(&self, request: &Request, code: &str, err: &str) {
        let value = serde_json::json!({ "err": err, "code": code });
        self.push(&request.kind, Some(&request.query_index), value);
    }

    pub(crate) fn reply_error(&self, request: &Request, code: ErrorCode, err: &str) {
        self.push(
            &request.kind,
            Some(&request.query_index),
            error_value(code, err),
        );
    }

    /// Answers a message that never became a request (`errMsgFromClient`).
    pub(crate) fn reply_bad_message(
        &self,
        query_index: Option<&Number>,
        code: ErrorCode,
        err: &str,
    ) {
        self.push(ERR_MSG_FROM_CLIENT, query_index, error_value(code, err));
    }

    /// Answers a request that the connection refused before it reached the coordinator.
    pub(crate) fn reply_refused(
        &self,
        kind: &str,
        query_index: &Number,
        code: ErrorCode,
        err: &str,
    ) {
        self.push(kind, Some(query_index), error_value(code, err));
    }

    /// Answers `request` with a result that is JSON text (a plugin's answer), without
    /// building a `Value` for it unless it carries a `type` to move to the top level.
    ///
    /// # Errors
    ///
    /// When `json` is not valid JSON; nothing is answered then.
    pub(crate) fn reply_json(
        &self,
        request: &Request,
        json: &str,
    ) -> Result<(), serde_json::Error> {
        /// Validates an object while looking only for its `type`.
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "type")]
            kind: Option<serde::de::IgnoredAny>,
        }
        let text = json.trim_ascii();
        if text.starts_with('{') {
            if serde_json::from_str::<Probe>(text)?.kind.is_some() {
                self.reply(request, serde_json::from_str(text)?);
                return Ok(());
            }
        } else {
            serde_json::from_str::<&serde_json::value::RawValue>(text)?;
        }
        self.push_body(&request.kind, Some(&request.query_index), Body::Text(text));
        Ok(())
    }

    fn push(&self, kind: &str, query_index: Option<&Number>, result: Value) {
        self.push_body(kind, query_index, Body::Value(result));
    }

    fn push_body(&self, kind: &str, query_index: Option<&Number>, result: Body<'_>) {
        let framing = self.framing();
        let mut outbox = self
            .outbox
            .lock()
            .expect("outbox lock is never held across a panic");
        let was_empty = outbox.is_empty();
        write_response(&mut outbox, kind, query_index, result);
        outbox.extend_from_slice(framing.terminator());
        drop(outbox);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Moves the outbox's bytes into `into` (which must be empty), keeping both allocations.
    pub(crate) fn take_outbox(&self, into: &mut Vec<u8>) {
        let mut outbox = self
            .outbox
            .lock()
            .expect("outbox lock is never held across a panic");
        std::mem::swap(&mut *outbox, into);
    }
}

fn error_value(code: ErrorCode, err: &str) -> Value {
    let mut map = serde_json::Map::with_capacity(2);
    map.insert("err".into(), Value::String(err.to_owned()));
    map.insert("code".into(), Value::String(code.as_str().to_owned()));
    Value::Object(map)
}

/// A response's `resultJob`.
enum Body<'a> {
    Value(Value),
    /// Valid JSON text with no top-level `type` to move.
    Text(&'a str),
}

/// Serialises one response. A string `type` in the result moves to the top level, as the
/// original does; every `🦀` in a string is written escaped.
fn write_response(out: &mut Vec<u8>, kind: &str, query_index: Option<&Number>, result: Body<'_>) {
    let mut result = match result {
        Body::Value(value) => value,
        Body::Text(text) => return write_envelope(out, kind, query_index, text.as_bytes()),
    };
    let moved_type = match &mut result {
        Value::Object(map) if matches!(map.get("type"), Some(Value::String(_))) => {
            map.remove("type")
        }
        _ => None,
    };
    let kind = match &moved_type {
        Some(Value::String(moved)) => moved.as_str(),
        _ => kind,
    };
    let start = begin_envelope(out, kind, query_index);
    write_json(out, &result);
    end_envelope(out, start);
}

fn write_envelope(out: &mut Vec<u8>, kind: &str, query_index: Option<&Number>, result: &[u8]) {
    let start = begin_envelope(out, kind, query_index);
    out.extend_from_slice(result);
    end_envelope(out, start);
}

/// Writes everything before the `resultJob` value; returns where the response starts.
fn begin_envelope(out: &mut Vec<u8>, kind: &str, query_index: Option<&Number>) -> usize {
    let start = out.len();
    out.extend_from_slice(b"{\"type\":");
    crate::json_text::push_str(out, kind);
    out.extend_from_slice(b",\"queryIndex\":");
    match query_index {
        Some(index) => write_json(out, index),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"resultJob\":");
    start
}

/// Closes the response that starts at `start`, escaping any crab in it. Most responses have
/// no byte that starts a crab at all, which one `memchr` tells more cheaply than a `memmem`;
/// one that has is rewritten, which copies it as it is when that byte starts no crab.
fn end_envelope(out: &mut Vec<u8>, start: usize) {
    out.push(b'}');
    if memchr::memchr(resman_sdk::protocol::CRAB[0], &out[start..]).is_some() {
        let raw = out.split_off(start);
        push_escaping_crabs(out, &raw);
    }
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value)
        .expect("serialising JSON values into a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(kind: &str, result: Value) -> String {
        let mut out = Vec::new();
        write_response(&mut out, kind, Some(&Number::from(7)), Body::Value(result));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn type_in_the_result_moves_to_the_top_level() {
        let text = response("cntResponse", json!({"type": "cntResponse", "cnt": 3}));
        assert_eq!(
            text,
            r#"{"type":"cntResponse","queryIndex":7,"resultJob":{"cnt":3}}"#
        );
    }

    #[test]
    fn crabs_in_results_are_escaped() {
        let text = response("x🦀", json!({"s": "a🦀b"}));
        assert!(!text.contains('🦀'), "{text}");
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["type"], "x🦀");
        assert_eq!(back["resultJob"]["s"], "a🦀b");
    }

    #[test]
    fn a_type_is_written_as_a_json_string_whatever_it_holds() {
        for kind in [
            "getProxy",
            "",
            "a\"b",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "é ✓",
        ] {
            let text = response(kind, json!(1));
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back["type"], kind, "{text}");
        }
        assert!(response("getProxy", json!(1)).starts_with(r#"{"type":"getProxy","#));
    }
}
