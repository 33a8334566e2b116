//! A scripted server for the tests: it speaks the wire protocol just enough to answer the
//! generator in the ways a real server can go wrong (late, out of order, with errors, with
//! garbage, not at all), and counts what it saw. Each [`TestServer`] runs on its own runtime,
//! apart from the one the generator builds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resman_sdk::frame::Splitter;
use resman_sdk::protocol::{Framing, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{run, BenchArgs, Report};

/// How the test server answers.
#[derive(Clone, Copy, Debug)]
pub(super) enum Mode {
    /// Answers every request at once, in order, `{"pong": n}`.
    Ping,
    /// Holds requests until two are waiting (or 20 ms pass) and answers them in reverse.
    Reverse,
    /// Answers every request whose queryIndex is a multiple of 3 with an error.
    Errors,
    /// Answers with a queryIndex that was never sent.
    WrongIndex,
    /// Answers with text that is not JSON.
    Malformed,
    /// Closes the connection after this many responses.
    CloseAfter(usize),
    /// Reads requests and never answers.
    Silent,
    /// Hands out leases, per connection, to request chains: `getLease` answers
    /// `{"lease": "L<n>", "proxy": ...}`, but every fifth one `unavailable`; `releaseLease`
    /// checks that its payload's `lease` is one it handed out and not yet got back (else
    /// answers `not_found`); any other type is answered as [`Mode::Ping`] does.
    Leases,
}

#[derive(Default)]
pub(super) struct ServerStats {
    pub(super) reversed_batches: AtomicUsize,
    pub(super) newline_connections: AtomicUsize,
    pub(super) first_request: Mutex<Option<String>>,
    /// [`Mode::Leases`]: `getLease` answered with an error.
    pub(super) leases_refused: AtomicUsize,
    /// [`Mode::Leases`]: leases given back.
    pub(super) released: AtomicUsize,
    /// [`Mode::Leases`]: `releaseLease` with a lease not handed out, or already back.
    pub(super) bad_releases: AtomicUsize,
}

pub(super) struct TestServer {
    addr: String,
    pub(super) stats: Arc<ServerStats>,
    _runtime: tokio::runtime::Runtime,
}

pub(super) fn server(mode: Mode) -> TestServer {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stats = Arc::new(ServerStats::default());
    let server_stats = stats.clone();
    runtime.spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(socket, mode, server_stats.clone()));
        }
    });
    TestServer {
        addr,
        stats,
        _runtime: runtime,
    }
}

async fn serve(socket: TcpStream, mode: Mode, stats: Arc<ServerStats>) {
    socket.set_nodelay(true).unwrap();
    let mut session = Session {
        socket,
        mode,
        stats,
        splitter: Splitter::new(),
        buf: Vec::new(),
        chunk: vec![0u8; 64 * 1024],
        held: Vec::new(),
        answered: 0,
        pong: 0,
        leases: HashSet::new(),
        lease_requests: 0,
    };
    session.run().await;
}

/// One client connection of the test server.
struct Session {
    socket: TcpStream,
    mode: Mode,
    stats: Arc<ServerStats>,
    splitter: Splitter,
    /// Bytes read and not yet split into requests.
    buf: Vec<u8>,
    chunk: Vec<u8>,
    /// Requests [`Mode::Reverse`] holds back.
    held: Vec<Request>,
    /// Responses sent, for [`Mode::CloseAfter`].
    answered: usize,
    pong: u64,
    /// [`Mode::Leases`]: the leases handed out and not yet back.
    leases: HashSet<String>,
    /// [`Mode::Leases`]: `getLease` requests so far.
    lease_requests: u64,
}

impl Session {
    async fn run(&mut self) {
        loop {
            let Some(timed_out) = self.read().await else {
                return;
            };
            let new = self.take_requests();
            let Some(batch) = self.batch(new, timed_out) else {
                continue;
            };
            if !self.answer(batch).await {
                return;
            }
        }
    }

    /// Reads more bytes. `Some(true)` when held requests waited 20 ms for more, `None` when
    /// the client is gone.
    async fn read(&mut self) -> Option<bool> {
        let read = if self.held.is_empty() {
            self.socket.read(&mut self.chunk).await
        } else {
            match tokio::time::timeout(Duration::from_millis(20), self.socket.read(&mut self.chunk))
                .await
            {
                Ok(read) => read,
                Err(_) => Ok(usize::MAX),
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let timed_out = n == usize::MAX;
        if !timed_out {
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
        Some(timed_out)
    }

    /// The whole requests read so far.
    fn take_requests(&mut self) -> Vec<Request> {
        let mut new = Vec::new();
        while let Some(frame) = self.splitter.next_frame(&self.buf) {
            let body = self.buf[..frame.body_end].to_vec();
            self.buf.drain(..frame.consumed);
            self.note_first(&body);
            new.push(serde_json::from_slice::<Request>(&body).unwrap());
        }
        new
    }

    /// Keeps the server's first request, and notes whether it came newline-framed.
    fn note_first(&self, body: &[u8]) {
        let mut first = self.stats.first_request.lock().unwrap();
        if first.is_none() {
            *first = Some(String::from_utf8(body.to_vec()).unwrap());
            if self.splitter.framing() == Some(Framing::Newline) {
                self.stats
                    .newline_connections
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The requests to answer now, or `None` while [`Mode::Reverse`] waits for more.
    fn batch(&mut self, new: Vec<Request>, timed_out: bool) -> Option<Vec<Request>> {
        if !matches!(self.mode, Mode::Reverse) {
            return Some(new);
        }
        self.held.extend(new);
        if self.held.len() < 2 && !timed_out {
            return None;
        }
        if self.held.len() >= 2 {
            self.stats.reversed_batches.fetch_add(1, Ordering::Relaxed);
        }
        Some(self.held.drain(..).rev().collect())
    }

    /// Answers `batch`; false when the connection is to close.
    async fn answer(&mut self, batch: Vec<Request>) -> bool {
        let terminator = self.splitter.framing().unwrap_or_default().terminator();
        let mut out = Vec::new();
        let reversed = matches!(self.mode, Mode::Reverse) && batch.len() >= 2;
        for (i, request) in batch.into_iter().enumerate() {
            if reversed && i == 1 {
                // The latest request's answer goes alone, so that the client sends a
                // new request while the earlier ones still wait.
                if self.socket.write_all(&out).await.is_err() {
                    return false;
                }
                out.clear();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if let Mode::CloseAfter(limit) = self.mode {
                if self.answered == limit {
                    return false;
                }
            }
            let Some(response) = self.response(&request) else {
                continue;
            };
            out.extend_from_slice(&response);
            out.extend_from_slice(terminator);
            self.answered += 1;
        }
        self.socket.write_all(&out).await.is_ok()
    }

    /// The response to `request`, or `None` for [`Mode::Silent`].
    fn response(&mut self, request: &Request) -> Option<Vec<u8>> {
        let index = request.query_index;
        let response = match self.mode {
            Mode::Silent => return None,
            Mode::Malformed => b"this is not json".to_vec(),
            Mode::WrongIndex => serde_json::to_vec(&serde_json::json!({
                "type": request.kind, "queryIndex": index + 1000, "resultJob": {}
            }))
            .unwrap(),
            Mode::Errors if index % 3 == 0 => serde_json::to_vec(&serde_json::json!({
                "type": request.kind, "queryIndex": index,
                "resultJob": {
                    "err": format!("no handler for request type '{}'", request.kind),
                    "code": "unknown_type"
                }
            }))
            .unwrap(),
            Mode::Leases if matches!(request.kind.as_str(), "getLease" | "releaseLease") => {
                let result_job = self.lease_answer(request);
                serde_json::to_vec(&serde_json::json!({
                    "type": request.kind, "queryIndex": index, "resultJob": result_job
                }))
                .unwrap()
            }
            _ => {
                self.pong += 1;
                serde_json::to_vec(&serde_json::json!({
                    "type": request.kind, "queryIndex": index,
                    "resultJob": {"pong": self.pong}
                }))
                .unwrap()
            }
        };
        Some(response)
    }

    /// The `resultJob` of a [`Mode::Leases`] request.
    fn lease_answer(&mut self, request: &Request) -> serde_json::Value {
        let error = |err: &str, code: &str| serde_json::json!({"err": err, "code": code});
        if request.kind == "getLease" {
            self.lease_requests += 1;
            if self.lease_requests.is_multiple_of(5) {
                self.stats.leases_refused.fetch_add(1, Ordering::Relaxed);
                return error("no lease free", "unavailable");
            }
            let lease = format!("L{}", self.lease_requests);
            self.leases.insert(lease.clone());
            return serde_json::json!({"proxy": "10.0.0.1:3128", "lease": lease});
        }
        let lease = request.payload["lease"].as_str().unwrap_or_default();
        if self.leases.remove(lease) {
            self.stats.released.fetch_add(1, Ordering::Relaxed);
            serde_json::json!({"released": true})
        } else {
            self.stats.bad_releases.fetch_add(1, Ordering::Relaxed);
            error(&format!("unknown lease {}", request.payload), "not_found")
        }
    }
}

/// Options for a count-mode run against `server`.
pub(super) fn args(
    server: &TestServer,
    connections: usize,
    pipeline: usize,
    requests: u64,
) -> BenchArgs {
    BenchArgs {
        addr: Some(server.addr.clone()),
        connections,
        pipeline,
        requests,
        ..BenchArgs::default()
    }
}

/// Checks that the figures of a successful run hang together.
pub(super) fn assert_sane(report: &Report) {
    let l = report.latency_us;
    assert!(l.p50 > 0.0, "{report:?}");
    assert!(
        l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9,
        "{report:?}"
    );
    // The percentiles are rounded up to the histogram's precision; max is exact.
    assert!(l.p99_9 <= l.max * 1.001 + 0.001, "{report:?}");
    assert!(l.mean > 0.0 && l.mean <= l.max, "{report:?}");
    assert!(report.elapsed_secs > 0.0 && report.requests_per_sec > 0.0);
}

/// The message of a run against a server in `mode` that must fail.
pub(super) fn failure(mode: Mode, args_for: impl FnOnce(&TestServer) -> BenchArgs) -> String {
    let server = server(mode);
    let error = run(args_for(&server)).unwrap_err();
    format!("{error:#}")
}
