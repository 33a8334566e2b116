//! [`Peer`]: what the rest of the host sees of one connection — whether it is still open, how
//! many of its requests are pending, and the outbox its answers are written into.
//!
//! Executors write answers straight into the peer's outbox and wake its connection task, so an
//! answer crosses threads once, not through the coordinator. The outbox is a byte buffer under
//! a std `Mutex`: it is held only to append or take bytes, never across an await, and an idle
//! connection then costs no more than a few empty buffers.
//!
//! An answer that depends on a pool operation not yet durable is written at once too, but
//! into the outbox's held part, marked with its seq; the [`Durability`] gate tells the peer
//! when a sync covered it, and only then does it move to the part the connection writes.

use crate::jobber::Request;
use crate::pools::durability::{Durability, Waiter};
use resman_sdk::frame::push_escaping_crabs;
use resman_sdk::json::scan;
use resman_sdk::protocol::{ErrorCode, Framing, ERR_MSG_FROM_CLIENT};
use serde_json::{Number, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
    outbox: Mutex<Outbox>,
    /// Wakes the connection task when the outbox's ready part goes from empty to not empty.
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
            outbox: Mutex::new(Outbox::default()),
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

    /// `n` pending requests were answered or dropped.
    pub(crate) fn finish(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::Relaxed);
        self.gauge.pending.fetch_sub(n, Ordering::Relaxed);
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

    /// Where a jobber's answers to this peer go: out at once, or, with `held`, held until
    /// that seq is durable.
    pub(crate) fn answers<'a>(
        self: &'a Arc<Self>,
        held: Option<(u64, &'a Durability)>,
    ) -> Answers<'a> {
        Answers { peer: self, held }
    }

    fn push(&self, kind: &str, query_index: Option<&Number>, result: Value) {
        self.push_body(kind, query_index, Body::Value(result));
    }

    fn push_body(&self, kind: &str, query_index: Option<&Number>, result: Body<'_>) {
        let framing = self.framing();
        let mut outbox = self.lock_outbox();
        let was_empty = outbox.ready.is_empty();
        write_response(&mut outbox.ready, kind, query_index, result);
        outbox.ready.extend_from_slice(framing.terminator());
        drop(outbox);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Writes the answer to `request` into the held part, to leave once `seq` is durable;
    /// into the ready part if it already is. Returns whether it was held, and so is still
    /// counted as pending until it is released.
    fn hold_body(
        self: &Arc<Self>,
        seq: u64,
        durability: &Durability,
        request: &Request,
        result: Body<'_>,
    ) -> bool {
        if seq <= durability.durable() {
            self.push_body(&request.kind, Some(&request.query_index), result);
            return false;
        }
        let framing = self.framing();
        let mut outbox = self.lock_outbox();
        write_response(
            &mut outbox.held,
            &request.kind,
            Some(&request.query_index),
            result,
        );
        outbox.held.extend_from_slice(framing.terminator());
        let seq = outbox.marks.back().map_or(seq, |last| last.seq.max(seq));
        let mark = Mark {
            end: outbox.held.len(),
            seq,
            kind: Arc::clone(&request.kind),
            query_index: request.query_index.clone(),
        };
        outbox.marks.push_back(mark);
        let watch = !std::mem::replace(&mut outbox.watched, true);
        drop(outbox);
        if watch {
            durability.watch(seq, Arc::clone(self) as Arc<dyn Waiter>);
        }
        true
    }

    /// Moves the ready answers' bytes into `into` (which must be empty), keeping both
    /// allocations.
    pub(crate) fn take_outbox(&self, into: &mut Vec<u8>) {
        std::mem::swap(&mut self.lock_outbox().ready, into);
    }

    fn lock_outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox
            .lock()
            .expect("outbox lock is never held across a panic")
    }
}

impl Waiter for Peer {
    fn reached(&self, durable: u64) -> Option<u64> {
        let mut outbox = self.lock_outbox();
        let due = outbox.marks.iter().take_while(|m| m.seq <= durable).count();
        let was_empty = outbox.ready.is_empty();
        if due > 0 {
            let end = outbox.marks[due - 1].end;
            outbox.release(end);
            outbox.marks.drain(..due);
            outbox.marks.iter_mut().for_each(|mark| mark.end -= end);
        }
        let next = outbox.marks.front().map(|mark| mark.seq);
        outbox.watched = next.is_some();
        let woken = was_empty && !outbox.ready.is_empty();
        drop(outbox);
        if woken {
            self.wake.notify_one();
        }
        self.finish(due);
        next
    }

    fn failed(&self, reason: &str) {
        let framing = self.framing();
        let err = format!("the request's effects could not be stored: {reason}");
        let mut outbox = self.lock_outbox();
        let was_empty = outbox.ready.is_empty();
        let marks = std::mem::take(&mut outbox.marks);
        outbox.held.clear();
        outbox.watched = false;
        for mark in &marks {
            let value = error_value(ErrorCode::JobberFailed, &err);
            write_response(
                &mut outbox.ready,
                &mark.kind,
                Some(&mark.query_index),
                Body::Value(value),
            );
            outbox.ready.extend_from_slice(framing.terminator());
        }
        drop(outbox);
        if was_empty && !marks.is_empty() {
            self.wake.notify_one();
        }
        self.finish(marks.len());
    }
}

/// A peer's answers: ready to be written, and held for a sync.
#[derive(Debug, Default)]
struct Outbox {
    /// What the connection may write now.
    ready: Vec<u8>,
    /// Answers waiting for their seq to be durable, in the order they were held.
    held: Vec<u8>,
    /// Where each held answer ends in `held`, with what it waits for.
    marks: VecDeque<Mark>,
    /// Whether the durability gate watches this outbox (for the first mark's seq), or is
    /// about to.
    watched: bool,
}

impl Outbox {
    /// Moves the first `end` held bytes to the ready part.
    fn release(&mut self, end: usize) {
        if self.ready.is_empty() && end == self.held.len() {
            std::mem::swap(&mut self.ready, &mut self.held);
        } else {
            self.ready.extend_from_slice(&self.held[..end]);
            self.held.drain(..end);
        }
    }
}

/// One held answer: where it ends in the held bytes, the seq that must be durable before it
/// leaves (its own or an earlier answer's, whichever is higher, so that marks only grow),
/// and whom to answer with an error if the store fails instead.
#[derive(Debug)]
struct Mark {
    end: usize,
    seq: u64,
    kind: Arc<str>,
    query_index: Number,
}

/// Where a jobber's answers to one peer go; see [`Peer::answers`].
pub(crate) struct Answers<'a> {
    peer: &'a Arc<Peer>,
    held: Option<(u64, &'a Durability)>,
}

impl Answers<'_> {
    /// Answers `request` with the jobber's result. Returns whether the answer was held.
    pub(crate) fn reply(&self, request: &Request, result: Value) -> bool {
        self.push(request, Body::Value(result))
    }

    /// Answers an error whose code a jobber chose (checked by the caller).
    pub(crate) fn reply_error_code(&self, request: &Request, code: &str, err: &str) -> bool {
        let value = serde_json::json!({ "err": err, "code": code });
        self.push(request, Body::Value(value))
    }

    /// Answers `request` with an error.
    pub(crate) fn reply_error(&self, request: &Request, code: ErrorCode, err: &str) -> bool {
        self.push(request, Body::Value(error_value(code, err)))
    }

    /// Answers `request` with a result that is JSON text (a plugin's answer), without
    /// building a `Value` for it unless it carries a `type` to move to the top level.
    /// Returns whether the answer was held.
    ///
    /// # Errors
    ///
    /// When `json` is not valid JSON; nothing is answered then.
    pub(crate) fn reply_json(
        &self,
        request: &Request,
        json: &str,
    ) -> Result<bool, serde_json::Error> {
        /// Validates an object while looking only for its `type`.
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "type")]
            kind: Option<serde::de::IgnoredAny>,
        }
        let text = json.trim_ascii();
        // Most answers are decided by the scan: valid, with no `type` to move. The rest are
        // read by serde_json, which words what is wrong with them.
        if !text.starts_with('{') {
            if scan::value(text).is_none() {
                serde_json::from_str::<&serde_json::value::RawValue>(text)?;
            }
        } else if scan::members(text, |key, _| (key != "type").then_some(())).is_none()
            && serde_json::from_str::<Probe>(text)?.kind.is_some()
        {
            return Ok(self.reply(request, serde_json::from_str(text)?));
        }
        Ok(self.push(request, Body::Text(text)))
    }

    fn push(&self, request: &Request, result: Body<'_>) -> bool {
        match self.held {
            Some((seq, durability)) => self.peer.hold_body(seq, durability, request, result),
            None => {
                let query_index = Some(&request.query_index);
                self.peer.push_body(&request.kind, query_index, result);
                false
            }
        }
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
    resman_sdk::json::push_str(out, kind);
    out.extend_from_slice(b",\"queryIndex\":");
    match query_index {
        // A whole number, as clients send, without serde_json's machinery.
        Some(index) => match index.as_u64() {
            Some(number) => resman_sdk::json::push_u64(out, number),
            None => write_json(out, index),
        },
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

    #[test]
    fn the_query_index_is_echoed_as_serde_json_writes_it() {
        let numbers = [
            Number::from(7),
            Number::from(u64::MAX),
            Number::from(-4),
            Number::from_f64(1.5).unwrap(),
        ];
        for number in numbers {
            let mut out = Vec::new();
            write_response(&mut out, "t", Some(&number), Body::Text("1"));
            let expected = format!(r#"{{"type":"t","queryIndex":{number},"resultJob":1}}"#);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

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

    fn request(query_index: u64) -> Request {
        Request {
            kind: Arc::from("getProxy"),
            query_index: Number::from(query_index),
            payload: None,
            client_id: 1,
            attempt: 1,
        }
    }

    /// The answers the connection would write now, by query index.
    fn written(peer: &Peer) -> Vec<Value> {
        let mut out = Vec::new();
        peer.take_outbox(&mut out);
        let text = String::from_utf8(out).unwrap();
        text.split(std::str::from_utf8(Framing::Crab.terminator()).unwrap())
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn indexes(answers: &[Value]) -> Vec<u64> {
        answers
            .iter()
            .map(|answer| answer["queryIndex"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_plugins_answer_text_is_checked_and_its_type_moved_however_it_is_spelled() {
        let peer = Arc::new(Peer::new(1, Arc::default()));
        // Deeper than the scan goes: serde_json reads it.
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let deep_value: Value = serde_json::from_str(&deep).unwrap();
        let answers = [
            (
                r#" {"proxy":"a:1","lease":"2"} "#,
                Some(json!({"proxy": "a:1", "lease": "2"})),
            ),
            (r#"{"type":"t2","n":1}"#, Some(json!({"n": 1}))),
            (r#"{"t\u0079pe":"t2","n":1}"#, Some(json!({"n": 1}))),
            (
                r#"{"note":"no \"type\" here"}"#,
                Some(json!({"note": "no \"type\" here"})),
            ),
            ("[1,2]", Some(json!([1, 2]))),
            (
                r#"{"a":{"type":"x"},"b":"\u00e9"}"#,
                Some(json!({"a": {"type": "x"}, "b": "é"})),
            ),
            (&deep, Some(deep_value)),
            (r#"{"proxy":"a:1""#, None),
            (r#"{"a":1} {"b":2}"#, None),
            (r#"{"s":"bad \q escape"}"#, None),
        ];
        for (index, (text, expected)) in (0..).zip(&answers) {
            let replied = peer.answers(None).reply_json(&request(index), text);
            assert_eq!(replied.is_ok(), expected.is_some(), "{text}");
        }
        let written = written(&peer);
        let valid: Vec<_> = answers
            .iter()
            .filter_map(|(_, expected)| expected.clone())
            .collect();
        assert_eq!(written.len(), valid.len());
        for (answer, expected) in written.iter().zip(valid) {
            assert_eq!(answer["resultJob"], expected, "{answer}");
        }
        assert_eq!(written[1]["type"], "t2");
        assert_eq!(
            written[2]["type"], "t2",
            "a key that spells `type` with an escape"
        );
        assert_eq!(written[0]["type"], "getProxy");
    }

    #[test]
    fn held_answers_leave_when_their_seq_is_durable_and_others_do_not_wait() {
        let peer = Arc::new(Peer::new(1, Arc::default()));
        peer.add_pending(4);
        let durability = Durability::default();
        let held = |seq| Some((seq, &durability));
        assert!(peer.answers(held(3)).reply(&request(1), json!("a")));
        assert!(peer.answers(held(2)).reply(&request(2), json!("b")));
        assert!(peer.answers(held(5)).reply(&request(3), json!("c")));
        assert!(!peer.answers(None).reply(&request(4), json!("d")));
        peer.finish(1);
        assert_eq!(
            indexes(&written(&peer)),
            [4],
            "only the answer needing no sync"
        );
        assert_eq!(peer.pending(), 3, "held answers still count as pending");

        durability.publish(3);
        assert_eq!(indexes(&written(&peer)), [1, 2]);
        assert_eq!(peer.pending(), 1);
        durability.publish(5);
        let last = written(&peer);
        assert_eq!(
            (indexes(&last), &last[0]["resultJob"]),
            (vec![3], &json!("c"))
        );
        assert_eq!(peer.pending(), 0);

        assert!(
            !peer.answers(held(4)).reply(&request(5), json!("e")),
            "already durable"
        );
        assert_eq!(indexes(&written(&peer)), [5]);
    }

    #[test]
    fn a_failed_store_turns_held_answers_into_errors() {
        let peer = Arc::new(Peer::new(1, Arc::default()));
        peer.add_pending(2);
        let durability = Durability::default();
        assert!(peer
            .answers(Some((1, &durability)))
            .reply(&request(1), json!("granted")));
        durability.fail("disk full".into());
        assert!(peer
            .answers(Some((2, &durability)))
            .reply(&request(2), json!("granted")));
        let answers = written(&peer);
        assert_eq!(indexes(&answers), [1, 2]);
        for answer in answers {
            assert_eq!(answer["type"], "getProxy");
            assert_eq!(
                answer["resultJob"]["code"],
                ErrorCode::JobberFailed.as_str()
            );
            let err = answer["resultJob"]["err"].as_str().unwrap();
            assert!(err.contains("could not be stored: disk full"), "{err}");
        }
        assert_eq!(peer.pending(), 0);
    }
}
