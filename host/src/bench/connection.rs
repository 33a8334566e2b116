//! [`Connection`]: one connection's load loop, which writes requests, reads responses and
//! matches each response to its request. A connection is one task that polls its socket with
//! `try_read`/`try_write` rather than splitting it into reader and writer tasks, so that the
//! requests one read makes ready go out in one write and nothing is shared but the latency
//! recorder and the response count. What it sends is its [`Requests`]: one template over and
//! over, or, with `--step`, a chain per pipeline slot.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use resman_sdk::frame::Splitter;
use resman_sdk::protocol::Framing;
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::chain::{add_counts, Chains, Failure, SlotFields, StepCount};
use super::flight::InFlight;
use super::report::{FirstError, Recorder};
use super::response::{excerpt, first_error, parse_response, NoFields, Parsed};
use super::template::Template;

/// The size of each connection's read buffer; it grows when one response is larger.
const READ_BUF: usize = 256 * 1024;
/// A response larger than this aborts the run: the stream is most likely not framed as
/// expected.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// How many latencies a connection collects before adding them to the shared histogram.
const LATENCY_BATCH: usize = 256;

/// What all connections share while running.
pub(super) struct Shared {
    pub(super) recorder: Mutex<Recorder>,
    /// Responses received in all, for the stall watchdog.
    pub(super) progress: AtomicU64,
}

/// One connection's results.
#[derive(Default)]
pub(super) struct ConnStats {
    pub(super) completed: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<(Instant, FirstError)>,
    /// Per `--step`, in order; empty without steps.
    pub(super) steps: Vec<StepCount>,
}

impl ConnStats {
    /// Adds `other`'s counts; the earlier of the two first errors is kept.
    pub(super) fn merge(&mut self, other: ConnStats) {
        self.completed += other.completed;
        self.errors += other.errors;
        add_counts(&mut self.steps, &other.steps);
        if let Some((at, error)) = other.first_error {
            if self.first_error.as_ref().is_none_or(|(t, _)| at < *t) {
                self.first_error = Some((at, error));
            }
        }
    }
}

/// What a connection sends.
pub(super) enum Requests {
    /// The same request each time, but for its query index.
    Single(Arc<Template>),
    /// The next step of each slot's chain.
    Chains(Chains),
}

impl Requests {
    /// Appends the request for `slot`, with `query_index`, to `out`.
    fn push(&self, out: &mut Vec<u8>, slot: usize, query_index: u64) {
        match self {
            Requests::Single(template) => template.push(out, query_index, &[]),
            Requests::Chains(chains) => chains.push(out, slot, query_index),
        }
    }

    /// Reads an answer, handing the fields a chain needs to the chain of the slot it answers.
    fn read(&mut self, body: &[u8], flight: &InFlight) -> anyhow::Result<Parsed> {
        match self {
            Requests::Single(_) => parse_response(body, &mut NoFields),
            Requests::Chains(chains) => {
                let slot_of = |query_index| flight.slot_of(query_index);
                parse_response(body, &mut SlotFields::new(chains, slot_of))
            }
        }
    }

    /// Takes the answer to `slot`'s request, read by [`read`](Self::read); says why it
    /// counts as an error, if it does.
    fn answered(&mut self, slot: usize, answer: &Parsed) -> Option<Failure> {
        match self {
            Requests::Single(_) => answer.is_error.then_some(Failure::Response),
            Requests::Chains(chains) => chains.answered(slot, answer),
        }
    }

    fn len_hint(&self) -> usize {
        match self {
            Requests::Single(template) => template.len_hint(),
            Requests::Chains(chains) => chains.len_hint(),
        }
    }
}

/// One connection's load loop.
pub(super) struct Connection {
    pub(super) stream: TcpStream,
    pub(super) requests: Requests,
    pub(super) shared: Arc<Shared>,
    pub(super) framing: Framing,
    pub(super) pipeline: usize,
    /// Requests this connection may still send.
    pub(super) budget: u64,
    pub(super) deadline: Option<Instant>,
}

/// Requests written to `bytes` and not yet taken by the socket, from `written` on.
struct Outbox {
    bytes: Vec<u8>,
    written: usize,
}

impl Outbox {
    fn pending(&self) -> bool {
        self.written < self.bytes.len()
    }

    /// Writes what the socket takes without waiting.
    fn flush(&mut self, stream: &TcpStream) -> anyhow::Result<()> {
        if !self.pending() {
            return Ok(());
        }
        match stream.try_write(&self.bytes[self.written..]) {
            Ok(n) => {
                self.written += n;
                if self.written == self.bytes.len() {
                    self.bytes.clear();
                    self.written = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("writing to the server"),
        }
        Ok(())
    }
}

/// Bytes read and not yet taken as responses: `buf[start..filled]`.
struct Inbox {
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    splitter: Splitter,
}

impl Inbox {
    fn new(framing: Framing) -> Inbox {
        Inbox {
            buf: vec![0u8; READ_BUF],
            start: 0,
            filled: 0,
            splitter: Splitter::with_framing(framing),
        }
    }

    /// Makes room for a read when the buffer is full: moves the unread bytes to the front,
    /// or, when they fill the whole buffer, doubles it.
    fn make_room(&mut self) -> anyhow::Result<()> {
        if self.filled < self.buf.len() {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        } else if self.buf.len() >= MAX_RESPONSE {
            bail!(
                "a response is larger than {MAX_RESPONSE} bytes or never ends \
                 (is the framing right?): {}",
                excerpt(&self.buf)
            );
        } else {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        Ok(())
    }

    /// Reads what the socket has without waiting; `Ok(0)` when the server closed.
    fn read(&mut self, stream: &TcpStream) -> std::io::Result<usize> {
        let n = stream.try_read(&mut self.buf[self.filled..])?;
        self.filled += n;
        Ok(n)
    }

    /// Waits for bytes and reads what the socket has; `Ok(0)` when the server closed.
    /// Through `poll_read`, which takes a read that did not fill the buffer as the socket
    /// drained (epoll is edge-triggered): emptying the socket costs one `recv`, not a second
    /// that finds nothing. The load generator shares the machine with the server it measures.
    async fn read_waiting(&mut self, stream: &mut TcpStream) -> std::io::Result<usize> {
        let mut buf = ReadBuf::new(&mut self.buf[self.filled..]);
        std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut buf)).await?;
        let n = buf.filled().len();
        self.filled += n;
        Ok(n)
    }

    /// The body of the next whole frame, which is then taken.
    fn next_body(&mut self) -> Option<&[u8]> {
        let frame = self
            .splitter
            .next_frame(&self.buf[self.start..self.filled])?;
        let body = &self.buf[self.start..self.start + frame.body_end];
        self.start += frame.consumed;
        Some(body)
    }

    /// Starts the buffer over once everything read has been taken.
    fn reset_if_drained(&mut self) {
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        }
    }
}

impl Connection {
    /// Sends this connection's requests and reads their responses until the budget is spent
    /// (or the deadline passed) and nothing is in flight.
    pub(super) async fn run(mut self) -> anyhow::Result<ConnStats> {
        let mut stats = ConnStats::default();
        let mut flight = InFlight::new(self.pipeline);
        let mut out = Outbox {
            bytes: Vec::with_capacity(self.requests.len_hint() * self.pipeline),
            written: 0,
        };
        let mut inbox = Inbox::new(self.framing);
        let mut latencies: Vec<u64> = Vec::with_capacity(LATENCY_BATCH);

        let first = self.take_budget(self.pipeline as u64);
        let requests = &self.requests;
        flight.issue(first, Instant::now(), |slot, index| {
            requests.push(&mut out.bytes, slot, index)
        });

        loop {
            out.flush(&self.stream)?;
            if flight.len() == 0 && self.budget == 0 {
                break;
            }
            inbox.make_room()?;
            let read = if out.pending() {
                if !self.readable_or_writable().await? {
                    continue;
                }
                inbox.read(&self.stream)
            } else {
                inbox.read_waiting(&mut self.stream).await
            };
            match read {
                Ok(0) => return Err(closed_error(flight.len(), &stats)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e).context("reading from the server"),
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                self.budget = 0;
            }
            let answered =
                self.take_responses(&mut inbox, now, &mut flight, &mut stats, &mut latencies)?;
            inbox.reset_if_drained();
            self.refill(answered, &mut flight, &mut out);
        }
        self.record(&mut latencies)?;
        if let Requests::Chains(chains) = &self.requests {
            stats.steps = chains.counts().to_vec();
        }
        Ok(stats)
    }

    /// Takes up to `n` requests from the budget; returns how many it took.
    fn take_budget(&mut self, n: u64) -> u64 {
        let n = n.min(self.budget);
        self.budget -= n;
        n
    }

    /// Waits until the socket is readable or writable (requests are waiting to be written);
    /// returns whether it is readable.
    async fn readable_or_writable(&self) -> anyhow::Result<bool> {
        let ready = self
            .stream
            .ready(Interest::READABLE | Interest::WRITABLE)
            .await
            .context("waiting on the socket")?;
        Ok(ready.is_readable())
    }

    /// Takes every whole response in `inbox`, read at `now`; returns how many there were.
    fn take_responses(
        &mut self,
        inbox: &mut Inbox,
        now: Instant,
        flight: &mut InFlight,
        stats: &mut ConnStats,
        latencies: &mut Vec<u64>,
    ) -> anyhow::Result<u64> {
        let mut answered = 0u64;
        while let Some(body) = inbox.next_body() {
            if body.trim_ascii().is_empty() {
                continue;
            }
            self.take_response(body, now, flight, stats, latencies)?;
            answered += 1;
        }
        Ok(answered)
    }

    /// Matches one response to its request, and counts it and its latency.
    fn take_response(
        &mut self,
        body: &[u8],
        now: Instant,
        flight: &mut InFlight,
        stats: &mut ConnStats,
        latencies: &mut Vec<u64>,
    ) -> anyhow::Result<()> {
        let parsed = self.requests.read(body, flight)?;
        let Some((slot, sent)) = flight.complete(parsed.query_index) else {
            bail!(
                "unexpected queryIndex {} (not in flight on this connection): {}",
                parsed.query_index,
                excerpt(body)
            );
        };
        let ns = now.saturating_duration_since(sent).as_nanos();
        latencies.push(u64::try_from(ns).unwrap_or(u64::MAX));
        if latencies.len() == LATENCY_BATCH {
            self.record(latencies)?;
        }
        stats.completed += 1;
        if let Some(failure) = self.requests.answered(slot, &parsed) {
            stats.errors += 1;
            if stats.first_error.is_none() {
                let error = match failure {
                    Failure::Response => first_error(body),
                    Failure::MissingField(err) => Some(FirstError { err, code: None }),
                };
                stats.first_error = error.map(|e| (now, e));
            }
        }
        Ok(())
    }

    /// Replaces the `answered` requests with new ones, as far as the budget allows.
    fn refill(&mut self, answered: u64, flight: &mut InFlight, out: &mut Outbox) {
        if answered == 0 {
            return;
        }
        self.shared.progress.fetch_add(answered, Ordering::Relaxed);
        let more = self.take_budget(answered);
        let requests = &self.requests;
        // Stamped now, not at the read: they are written right after this.
        flight.issue(more, Instant::now(), |slot, index| {
            requests.push(&mut out.bytes, slot, index)
        });
    }

    fn record(&self, latencies: &mut Vec<u64>) -> anyhow::Result<()> {
        self.shared
            .recorder
            .lock()
            .map_err(|_| anyhow!("latency recorder poisoned"))?
            .record_all(latencies);
        latencies.clear();
        Ok(())
    }
}

/// The error for a server that closed the connection with `outstanding` responses to come.
fn closed_error(outstanding: usize, stats: &ConnStats) -> anyhow::Error {
    let mut msg =
        format!("the server closed the connection with {outstanding} responses outstanding");
    if let Some((_, e)) = &stats.first_error {
        let _ = write!(msg, " (an earlier error response: {}", e.err);
        if let Some(code) = &e.code {
            let _ = write!(msg, ", {code}");
        }
        msg.push(')');
    }
    anyhow!(msg)
}

#[cfg(test)]
mod tests {
    use super::super::run;
    use super::super::test_server::{args, failure, server, Mode};
    use std::sync::atomic::Ordering;

    #[test]
    fn out_of_order_responses_are_matched() {
        let server = server(Mode::Reverse);
        let report = run(args(&server, 2, 8, 2001)).unwrap();
        assert_eq!(report.requests, 2001);
        assert_eq!(report.errors, 0);
        assert!(server.stats.reversed_batches.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn an_unexpected_query_index_aborts() {
        let msg = failure(Mode::WrongIndex, |s| args(s, 2, 2, 100));
        assert!(msg.contains("unexpected queryIndex 100"), "{msg}");
        assert!(msg.contains("connection "), "{msg}");
    }

    #[test]
    fn an_early_close_aborts() {
        let msg = failure(Mode::CloseAfter(5), |s| args(s, 1, 4, 100));
        assert!(
            msg.contains("closed the connection")
                || msg.contains("reading from the server")
                || msg.contains("writing to the server"),
            "{msg}"
        );
    }
}
