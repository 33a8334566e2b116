//! `resman bench`: a load generator for any server that speaks resman's wire protocol
//! (`PROTOCOL.md`), in the spirit of `redis-benchmark`.
//!
//! It opens `--connections` TCP connections, connects them all, then starts the clock. Each
//! connection keeps `--pipeline` requests of one `--type` in flight: it writes the first
//! `--pipeline` requests at once, and for every response it reads it sends one new request.
//! The requests a single read makes ready go out in a single write. The run ends after
//! `--requests` responses in all (each connection gets an equal share), or, with `--duration`,
//! once the time is up and the requests still in flight have been answered.
//!
//! # Reading the figures
//!
//! - **requests** counts responses, error responses included; **errors** counts the responses
//!   whose `resultJob` holds `err` (for example `unknown_type` when no jobber serves the type,
//!   or `overloaded`). A run with errors mostly measures the server's error path; the first
//!   error is printed so its cause can be fixed.
//! - **requests per second** is `requests` divided by the time from the start (all connections
//!   already open) until the last response arrived.
//! - **latency** is measured per request, from the write that sent it to the read that brought
//!   its response, in microseconds. It therefore includes time the request spent queued in
//!   the server and in both sockets' buffers, and with pipelining it grows roughly with
//!   `--pipeline`: each request waits behind the others of its connection. Percentiles come
//!   from an HDR histogram with three significant digits; mean and max are exact.
//! - This is a closed-loop generator: a connection sends a new request only when an answer
//!   arrives, so while the server stalls nothing is sent, and the stall shows up as a few
//!   slow requests rather than as the many a constant-rate client would have suffered.
//! - The generator itself costs CPU: it runs on one thread by default, as `redis-benchmark`
//!   does. When that thread is saturated the rate is the generator's limit, not the server's;
//!   compare with more `--threads` or several generator processes before drawing conclusions.
//!
//! Any error that means the figures would be wrong aborts the run with a message: a response
//! with a `queryIndex` that is not in flight, a response that is not JSON, a connection that
//! closes early, or no response at all for `--timeout`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::builder::TypedValueParser as _;
use hdrhistogram::Histogram;
use resman_sdk::frame::{push_escaping_crabs, Splitter};
use resman_sdk::protocol::{Framing, DEFAULT_PORT};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The size of each connection's read buffer; it grows when one response is larger.
const READ_BUF: usize = 256 * 1024;
/// A response larger than this aborts the run: the stream is most likely not framed as
/// expected.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// The largest `--pipeline`. Query indexes grow `pipeline` times faster than the request
/// count, and the original server reads them as doubles, exact below 2^53.
const MAX_PIPELINE: usize = 1 << 20;
/// How many latencies a connection collects before adding them to the shared histogram.
const LATENCY_BATCH: usize = 256;

/// Options of `resman bench`: load a server with pipelined requests and report throughput and
/// latency.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Server address [default: $SOCKET_HOST:$SOCKET_PORT, else 127.0.0.1:41969]
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,

    /// Number of connections
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,

    /// Requests in flight per connection
    #[arg(short = 'P', long, default_value_t = 1)]
    pub pipeline: usize,

    /// Total number of requests (ignored with --duration)
    #[arg(short = 'n', long, default_value_t = 100_000)]
    pub requests: u64,

    /// Run for this long instead of a number of requests, e.g. "10s"
    #[arg(short = 'd', long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Request type to send
    #[arg(
        short = 't',
        long = "type",
        value_name = "TYPE",
        default_value = "ping"
    )]
    pub kind: String,

    /// Request payload, as JSON text [default: no payload field]
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,

    /// Message framing
    #[arg(
        long,
        default_value = "crab",
        value_parser = clap::builder::PossibleValuesParser::new(["crab", "newline"])
            .map(|s| if s == "newline" { Framing::Newline } else { Framing::Crab }),
    )]
    pub framing: Framing,

    /// Tokio worker threads of the generator (1: a single-threaded runtime)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Give up when no response arrives for this long, or when responses are still
    /// outstanding this long after --duration ended; also bounds each connect
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            addr: None,
            connections: 50,
            pipeline: 1,
            requests: 100_000,
            duration: None,
            kind: "ping".to_owned(),
            payload: None,
            framing: Framing::Crab,
            threads: 1,
            timeout: Duration::from_secs(10),
            json: false,
        }
    }
}

impl BenchArgs {
    /// Checks the options that clap cannot: counts of zero and the payload's JSON.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.pipeline == 0 {
            bail!("--pipeline must be at least 1");
        }
        if self.pipeline > MAX_PIPELINE {
            bail!("--pipeline must be at most {MAX_PIPELINE}");
        }
        if self.duration.is_none() && self.requests == 0 {
            bail!("--requests must be at least 1");
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            bail!("--duration must be longer than zero");
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if self.timeout.is_zero() {
            bail!("--timeout must be longer than zero");
        }
        if let Some(payload) = &self.payload {
            serde_json::from_str::<&RawValue>(payload)
                .map_err(|e| anyhow!("--payload is not valid JSON: {e}"))?;
        }
        Ok(())
    }

    /// The address to connect to: `--addr`, else `SOCKET_HOST`/`SOCKET_PORT` from the
    /// environment, else `127.0.0.1:41969`.
    pub fn resolved_addr(&self) -> String {
        match &self.addr {
            Some(addr) => addr.clone(),
            None => addr_from_env(
                std::env::var("SOCKET_HOST").ok(),
                std::env::var("SOCKET_PORT").ok(),
            ),
        }
    }
}

fn addr_from_env(host: Option<String>, port: Option<String>) -> String {
    let host = host
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = port
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PORT.to_string());
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The outcome of a run. Serialises to the object `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The address the generator connected to.
    pub addr: String,
    /// The request type sent.
    #[serde(rename = "type")]
    pub kind: String,
    /// `"crab"` or `"newline"`.
    pub framing: &'static str,
    /// Number of connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Generator threads.
    pub threads: usize,
    /// Responses received, error responses included.
    pub requests: u64,
    /// Responses whose `resultJob` holds `err`.
    pub errors: u64,
    /// The first error response, if any.
    pub first_error: Option<FirstError>,
    /// Seconds from the start (all connections open) to the last response.
    pub elapsed_secs: f64,
    /// `requests / elapsed_secs`.
    pub requests_per_sec: f64,
    /// Latency from a request's write to its response, in microseconds.
    pub latency_us: Latency,
}

/// An error response's `err` and `code` (`code` is absent in the original server's errors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirstError {
    /// The `err` text (a non-string `err` is shown as its JSON).
    pub err: String,
    /// The stable code, if the server sent one.
    pub code: Option<String>,
}

/// Latency figures in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest latency seen (exact).
    pub max: f64,
    /// Mean latency (exact).
    pub mean: f64,
}

impl Report {
    /// Prints the report as text, in the manner of `redis-benchmark`.
    pub fn print_text(&self) {
        print!("{}", self.to_text());
    }

    /// The text that [`Report::print_text`] prints.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "====== {} ======", self.kind);
        let _ = writeln!(
            s,
            "  {} requests completed in {:.3} seconds",
            self.requests, self.elapsed_secs
        );
        let _ = writeln!(
            s,
            "  {} connections, pipeline {}, {} framing, {} generator thread{}, {}",
            self.connections,
            self.pipeline,
            self.framing,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.addr
        );
        let _ = write!(s, "  {} error responses", self.errors);
        if let Some(first) = &self.first_error {
            let _ = write!(s, "; the first: {}", first.err);
            if let Some(code) = &first.code {
                let _ = write!(s, " ({code})");
            }
        }
        s.push('\n');
        let _ = writeln!(s, "  {:.2} requests per second", self.requests_per_sec);
        s.push('\n');
        s.push_str("Latency in microseconds, from a request's write to its response:\n");
        let l = &self.latency_us;
        for (name, value) in [
            ("p50", l.p50),
            ("p90", l.p90),
            ("p99", l.p99),
            ("p99.9", l.p99_9),
            ("max", l.max),
            ("mean", l.mean),
        ] {
            let _ = writeln!(s, "  {name:<6}{value:>12.1}");
        }
        s
    }
}

/// Runs the load described by `args` and reports on it.
///
/// Builds its own tokio runtime (`--threads` workers; one means a current-thread runtime).
/// Called from inside a tokio runtime, it runs on a fresh OS thread and blocks the caller.
pub fn run(args: BenchArgs) -> anyhow::Result<Report> {
    args.validate()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return std::thread::scope(|scope| {
            scope
                .spawn(|| run_blocking(&args))
                .join()
                .map_err(|_| anyhow!("the load generator thread panicked"))?
        });
    }
    run_blocking(&args)
}

fn run_blocking(args: &BenchArgs) -> anyhow::Result<Report> {
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("building the generator's tokio runtime")?;
    runtime.block_on(run_async(args))
}

/// The bytes of a request, but for its `queryIndex`.
struct Template {
    /// `{"type":"ping","queryIndex":`
    head: Vec<u8>,
    /// `,"payload":...}🦀` or `}🦀`
    tail: Vec<u8>,
}

impl Template {
    fn new(kind: &str, payload: Option<&str>, framing: Framing) -> anyhow::Result<Template> {
        let mut head = br#"{"type":"#.to_vec();
        push_escaping_crabs(&mut head, serde_json::to_string(kind)?.as_bytes());
        head.extend_from_slice(br#","queryIndex":"#);
        let mut tail = Vec::new();
        if let Some(payload) = payload {
            serde_json::from_str::<&RawValue>(payload)
                .map_err(|e| anyhow!("--payload is not valid JSON: {e}"))?;
            tail.extend_from_slice(br#","payload":"#);
            // Compact, so that newline framing holds; crabs escaped, so that a server that
            // splits blindly on the crab (the original) reads the request whole.
            push_escaping_crabs(&mut tail, minify_json(payload).as_bytes());
        }
        tail.push(b'}');
        tail.extend_from_slice(framing.terminator());
        Ok(Template { head, tail })
    }

    fn push(&self, out: &mut Vec<u8>, query_index: u64) {
        out.extend_from_slice(&self.head);
        push_u64(out, query_index);
        out.extend_from_slice(&self.tail);
    }
}

/// Removes the whitespace outside strings from valid JSON text.
fn minify_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    out
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// How many of `total` requests connection `index` of `connections` sends.
fn share(total: u64, connections: usize, index: usize) -> u64 {
    let connections = connections as u64;
    let index = index as u64;
    total / connections + u64::from(index < total % connections)
}

/// What the generator needs from a response.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    query_index: u64,
    is_error: bool,
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    #[serde(rename = "queryIndex")]
    query_index: Option<u64>,
    #[serde(rename = "resultJob", borrow)]
    result_job: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorProbe<'a> {
    #[serde(borrow)]
    err: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<&'a RawValue>,
}

/// Reads `queryIndex` and whether `resultJob` is an error, without building a JSON tree.
fn parse_response(body: &[u8]) -> anyhow::Result<Parsed> {
    let response: WireResponse = serde_json::from_slice(body)
        .map_err(|e| anyhow!("malformed response ({e}): {}", excerpt(body)))?;
    let is_error = match response.result_job {
        Some(job) => probe_error(job)?.is_some(),
        None => false,
    };
    match response.query_index {
        Some(query_index) => Ok(Parsed {
            query_index,
            is_error,
        }),
        None => bail!(
            "response without a queryIndex (the server could not read a request?): {}",
            excerpt(body)
        ),
    }
}

/// The `err` and `code` of a `resultJob`, if it is an object holding a non-null `err`.
fn probe_error(job: &RawValue) -> anyhow::Result<Option<ErrorProbe<'_>>> {
    if !job.get().starts_with('{') {
        return Ok(None);
    }
    let probe: ErrorProbe = serde_json::from_str(job.get()).map_err(|e| {
        anyhow!(
            "malformed resultJob ({e}): {}",
            excerpt(job.get().as_bytes())
        )
    })?;
    Ok(probe.err.is_some().then_some(probe))
}

/// The error of a response already known to be one, for the report.
fn first_error(body: &[u8]) -> Option<FirstError> {
    let response: WireResponse = serde_json::from_slice(body).ok()?;
    let probe = probe_error(response.result_job?).ok()??;
    let text = |raw: &RawValue| {
        serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned())
    };
    Some(FirstError {
        err: probe.err.map(text).unwrap_or_default(),
        code: probe.code.map(text),
    })
}

fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    if body.len() > MAX {
        format!("{text}...")
    } else {
        text.into_owned()
    }
}

/// Latencies of all connections, in nanoseconds.
struct Recorder {
    histogram: Histogram<u64>,
    sum_ns: u128,
    max_ns: u64,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            histogram: Histogram::new(3).expect("3 significant digits are valid"),
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn record_all(&mut self, latencies_ns: &[u64]) {
        for &ns in latencies_ns {
            if self.histogram.record(ns).is_err() {
                self.histogram.saturating_record(ns);
            }
            self.sum_ns += u128::from(ns);
            self.max_ns = self.max_ns.max(ns);
        }
    }

    fn latency(&self) -> Latency {
        let count = self.histogram.len();
        if count == 0 {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        let at = |q: f64| us(self.histogram.value_at_quantile(q));
        Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p99_9: at(0.999),
            max: us(self.max_ns),
            mean: self.sum_ns as f64 / count as f64 / 1000.0,
        }
    }
}

/// What all connections share while running.
struct Shared {
    recorder: Mutex<Recorder>,
    /// Responses received in all, for the stall watchdog.
    progress: AtomicU64,
}

/// One connection's results.
#[derive(Default)]
struct ConnStats {
    completed: u64,
    errors: u64,
    first_error: Option<(Instant, FirstError)>,
}

async fn run_async(args: &BenchArgs) -> anyhow::Result<Report> {
    let addr = args.resolved_addr();
    let template = Arc::new(Template::new(
        &args.kind,
        args.payload.as_deref(),
        args.framing,
    )?);

    let streams = connect_all(&addr, args.connections, args.timeout).await?;

    let shared = Arc::new(Shared {
        recorder: Mutex::new(Recorder::new()),
        progress: AtomicU64::new(0),
    });
    let start = Instant::now();
    let deadline = match args.duration {
        Some(d) => Some(
            start
                .checked_add(d)
                .and_then(|end| end.checked_add(args.timeout))
                .map(|_| start + d)
                .ok_or_else(|| anyhow!("--duration is too long"))?,
        ),
        None => None,
    };
    let mut tasks = JoinSet::new();
    for (id, stream) in streams.into_iter().enumerate() {
        let conn = Connection {
            stream,
            template: template.clone(),
            shared: shared.clone(),
            framing: args.framing,
            pipeline: args.pipeline,
            budget: match deadline {
                Some(_) => u64::MAX,
                None => share(args.requests, args.connections, id),
            },
            deadline,
        };
        let addr = addr.clone();
        tasks.spawn(async move {
            conn.run()
                .await
                .with_context(|| format!("connection {id} to {addr}"))
        });
    }

    let mut totals = ConnStats::default();
    let joined = async {
        while let Some(joined) = tasks.join_next().await {
            let stats = joined.context("a connection task failed")??;
            totals.completed += stats.completed;
            totals.errors += stats.errors;
            if let Some((at, error)) = stats.first_error {
                if totals.first_error.as_ref().is_none_or(|(t, _)| at < *t) {
                    totals.first_error = Some((at, error));
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        result = joined => result?,
        error = watchdog(&shared, deadline, args.timeout) => return Err(error),
    }
    let elapsed = start.elapsed().as_secs_f64();

    let latency = shared
        .recorder
        .lock()
        .map_err(|_| anyhow!("latency recorder poisoned"))?
        .latency();
    Ok(Report {
        addr,
        kind: args.kind.clone(),
        framing: match args.framing {
            Framing::Crab => "crab",
            Framing::Newline => "newline",
        },
        connections: args.connections,
        pipeline: args.pipeline,
        threads: args.threads,
        requests: totals.completed,
        errors: totals.errors,
        first_error: totals.first_error.map(|(_, e)| e),
        elapsed_secs: elapsed,
        requests_per_sec: if elapsed > 0.0 {
            totals.completed as f64 / elapsed
        } else {
            0.0
        },
        latency_us: latency,
    })
}

/// Opens `count` connections, resolving `addr` once.
async fn connect_all(
    addr: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<TcpStream>> {
    let candidates: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    let mut target = None;
    let mut last_error = None;
    for candidate in &candidates {
        match connect(*candidate, timeout).await {
            Ok(stream) => {
                target = Some((*candidate, stream));
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some((target, first)) = target else {
        return Err(last_error.unwrap_or_else(|| anyhow!("no address")))
            .with_context(|| format!("connecting to {addr}"));
    };
    let mut streams = Vec::with_capacity(count);
    streams.push(first);
    for i in 1..count {
        let stream = connect(target, timeout)
            .await
            .with_context(|| format!("opening connection {i} to {addr} ({target})"))?;
        streams.push(stream);
    }
    Ok(streams)
}

async fn connect(target: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(target))
        .await
        .map_err(|_| {
            anyhow!(
                "connect timed out after {}",
                humantime::format_duration(timeout)
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Fails when no response has arrived for `timeout`, or when responses are still
/// outstanding `timeout` after the deadline. Never returns otherwise.
async fn watchdog(shared: &Shared, deadline: Option<Instant>, timeout: Duration) -> anyhow::Error {
    let tick = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut seen = shared.progress.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let progress = shared.progress.load(Ordering::Relaxed);
        if progress != seen {
            seen = progress;
            since = now;
        } else if now - since >= timeout {
            return anyhow!(
                "no response from the server for {} ({progress} responses received); giving up",
                humantime::format_duration(timeout)
            );
        }
        if let Some(deadline) = deadline {
            if now >= deadline + timeout {
                return anyhow!(
                    "responses still outstanding {} after the end of the run; giving up",
                    humantime::format_duration(timeout)
                );
            }
        }
    }
}

/// One connection's load loop.
struct Connection {
    stream: TcpStream,
    template: Arc<Template>,
    shared: Arc<Shared>,
    framing: Framing,
    pipeline: usize,
    /// Requests this connection may still send.
    budget: u64,
    deadline: Option<Instant>,
}

/// The requests of one connection that await their response.
///
/// Each request in flight has a slot, found again from its query index alone: request number
/// `k` of the connection, put in slot `s`, gets query index `k * pipeline + s`. The indexes
/// increase and are never reused, and answers may come in any order: a new request takes
/// whichever slot is free, not slot `k % pipeline` (which may still be waiting when an
/// earlier request's answer is late).
struct InFlight {
    /// The query index each slot waits for, or [`FREE`].
    index: Vec<u64>,
    /// When each slot's request was written.
    sent: Vec<Instant>,
    free: Vec<usize>,
    /// Requests issued so far.
    issued: u64,
}

/// Marks a free slot in [`InFlight`].
const FREE: u64 = u64::MAX;

impl InFlight {
    fn new(pipeline: usize) -> InFlight {
        InFlight {
            index: vec![FREE; pipeline],
            sent: vec![Instant::now(); pipeline],
            free: (0..pipeline).rev().collect(),
            issued: 0,
        }
    }

    /// Requests in flight.
    fn len(&self) -> usize {
        self.index.len() - self.free.len()
    }

    /// Appends `n` new requests, sent `now`, to `out`. `n` must not exceed the free slots.
    fn issue(&mut self, n: u64, now: Instant, template: &Template, out: &mut Vec<u8>) {
        let pipeline = self.index.len() as u64;
        for _ in 0..n {
            let slot = self
                .free
                .pop()
                .expect("more requests than the pipeline allows");
            let query_index = self.issued * pipeline + slot as u64;
            template.push(out, query_index);
            self.index[slot] = query_index;
            self.sent[slot] = now;
            self.issued += 1;
        }
    }

    /// Frees the slot of `query_index` and returns when its request was sent, or `None` when
    /// no such request is in flight.
    fn complete(&mut self, query_index: u64) -> Option<Instant> {
        let slot = (query_index % self.index.len() as u64) as usize;
        if query_index == FREE || self.index[slot] != query_index {
            return None;
        }
        self.index[slot] = FREE;
        self.free.push(slot);
        Some(self.sent[slot])
    }
}

impl Connection {
    async fn run(mut self) -> anyhow::Result<ConnStats> {
        let mut stats = ConnStats::default();
        let mut flight = InFlight::new(self.pipeline);
        let mut out: Vec<u8> = Vec::with_capacity(
            (self.template.head.len() + self.template.tail.len() + 20) * self.pipeline,
        );
        let mut out_pos = 0usize;
        let mut buf = vec![0u8; READ_BUF];
        let (mut start, mut filled) = (0usize, 0usize);
        let mut splitter = Splitter::with_framing(self.framing);
        let mut latencies: Vec<u64> = Vec::with_capacity(LATENCY_BATCH);

        let first = self.budget.min(self.pipeline as u64);
        self.budget -= first;
        flight.issue(first, Instant::now(), &self.template, &mut out);

        loop {
            if out_pos < out.len() {
                match self.stream.try_write(&out[out_pos..]) {
                    Ok(n) => {
                        out_pos += n;
                        if out_pos == out.len() {
                            out.clear();
                            out_pos = 0;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e).context("writing to the server"),
                }
            }
            if flight.len() == 0 && self.budget == 0 {
                break;
            }
            let interest = if out_pos < out.len() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let ready = self
                .stream
                .ready(interest)
                .await
                .context("waiting on the socket")?;
            if !ready.is_readable() {
                continue;
            }

            if filled == buf.len() {
                if start > 0 {
                    buf.copy_within(start..filled, 0);
                    filled -= start;
                    start = 0;
                } else if buf.len() >= MAX_RESPONSE {
                    bail!(
                        "a response is larger than {MAX_RESPONSE} bytes or never ends \
                         (is the framing right?): {}",
                        excerpt(&buf)
                    );
                } else {
                    buf.resize(buf.len() * 2, 0);
                }
            }
            let n = match self.stream.try_read(&mut buf[filled..]) {
                Ok(0) => {
                    let mut msg = format!(
                        "the server closed the connection with {} responses outstanding",
                        flight.len()
                    );
                    if let Some((_, e)) = &stats.first_error {
                        let _ = write!(msg, " (an earlier error response: {}", e.err);
                        if let Some(code) = &e.code {
                            let _ = write!(msg, ", {code}");
                        }
                        msg.push(')');
                    }
                    bail!(msg);
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e).context("reading from the server"),
            };
            filled += n;
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                self.budget = 0;
            }

            let mut answered = 0u64;
            while let Some(frame) = splitter.next_frame(&buf[start..filled]) {
                let body = &buf[start..start + frame.body_end];
                start += frame.consumed;
                if body.trim_ascii().is_empty() {
                    continue;
                }
                let parsed = parse_response(body)?;
                let Some(sent) = flight.complete(parsed.query_index) else {
                    bail!(
                        "unexpected queryIndex {} (not in flight on this connection): {}",
                        parsed.query_index,
                        excerpt(body)
                    );
                };
                answered += 1;
                let ns = now.saturating_duration_since(sent).as_nanos();
                latencies.push(u64::try_from(ns).unwrap_or(u64::MAX));
                if latencies.len() == LATENCY_BATCH {
                    self.record(&mut latencies)?;
                }
                stats.completed += 1;
                if parsed.is_error {
                    stats.errors += 1;
                    if stats.first_error.is_none() {
                        stats.first_error = first_error(body).map(|e| (now, e));
                    }
                }
            }
            if start == filled {
                start = 0;
                filled = 0;
            }
            if answered > 0 {
                self.shared.progress.fetch_add(answered, Ordering::Relaxed);
                let more = answered.min(self.budget);
                self.budget -= more;
                // Stamped now, not at the read: they are written right after this.
                flight.issue(more, Instant::now(), &self.template, &mut out);
            }
        }
        self.record(&mut latencies)?;
        Ok(stats)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use resman_sdk::protocol::Request;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// How the test server answers.
    #[derive(Clone, Copy, Debug)]
    enum Mode {
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
    }

    #[derive(Default)]
    struct ServerStats {
        reversed_batches: AtomicUsize,
        newline_connections: AtomicUsize,
        first_request: Mutex<Option<String>>,
    }

    struct TestServer {
        addr: String,
        stats: Arc<ServerStats>,
        _runtime: tokio::runtime::Runtime,
    }

    fn server(mode: Mode) -> TestServer {
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

    async fn serve(mut socket: TcpStream, mode: Mode, stats: Arc<ServerStats>) {
        socket.set_nodelay(true).unwrap();
        let mut splitter = Splitter::new();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut held: Vec<Request> = Vec::new();
        let mut answered = 0usize;
        let mut pong = 0u64;
        loop {
            let read = if held.is_empty() {
                socket.read(&mut chunk).await
            } else {
                match tokio::time::timeout(Duration::from_millis(20), socket.read(&mut chunk)).await
                {
                    Ok(read) => read,
                    Err(_) => Ok(usize::MAX),
                }
            };
            let n = match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let timed_out = n == usize::MAX;
            if !timed_out {
                buf.extend_from_slice(&chunk[..n]);
            }
            let mut new = Vec::new();
            while let Some(frame) = splitter.next_frame(&buf) {
                let body = buf[..frame.body_end].to_vec();
                buf.drain(..frame.consumed);
                let mut first = stats.first_request.lock().unwrap();
                if first.is_none() {
                    *first = Some(String::from_utf8(body.clone()).unwrap());
                    if splitter.framing() == Some(Framing::Newline) {
                        stats.newline_connections.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(first);
                new.push(serde_json::from_slice::<Request>(&body).unwrap());
            }
            let terminator = splitter.framing().unwrap_or_default().terminator();
            let batch = match mode {
                Mode::Reverse => {
                    held.extend(new);
                    if held.len() < 2 && !timed_out {
                        continue;
                    }
                    if held.len() >= 2 {
                        stats.reversed_batches.fetch_add(1, Ordering::Relaxed);
                    }
                    held.drain(..).rev().collect()
                }
                _ => new,
            };
            let mut out = Vec::new();
            let reversed = matches!(mode, Mode::Reverse) && batch.len() >= 2;
            for (i, request) in batch.into_iter().enumerate() {
                if reversed && i == 1 {
                    // The latest request's answer goes alone, so that the client sends a
                    // new request while the earlier ones still wait.
                    if socket.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if let Mode::CloseAfter(limit) = mode {
                    if answered == limit {
                        return;
                    }
                }
                let index = request.query_index;
                let response = match mode {
                    Mode::Silent => continue,
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
                    _ => {
                        pong += 1;
                        serde_json::to_vec(&serde_json::json!({
                            "type": request.kind, "queryIndex": index,
                            "resultJob": {"pong": pong}
                        }))
                        .unwrap()
                    }
                };
                out.extend_from_slice(&response);
                out.extend_from_slice(terminator);
                answered += 1;
            }
            if socket.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    fn args(server: &TestServer, connections: usize, pipeline: usize, requests: u64) -> BenchArgs {
        BenchArgs {
            addr: Some(server.addr.clone()),
            connections,
            pipeline,
            requests,
            ..BenchArgs::default()
        }
    }

    fn assert_sane(report: &Report) {
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

    #[test]
    fn count_mode_sends_exactly_the_requested_number() {
        let server = server(Mode::Ping);
        let report = run(args(&server, 3, 4, 1000)).unwrap();
        assert_eq!(report.requests, 1000);
        assert_eq!(report.errors, 0);
        assert_eq!(report.first_error, None);
        assert_eq!((report.connections, report.pipeline), (3, 4));
        assert_sane(&report);
    }

    #[test]
    fn more_connections_than_requests() {
        let server = server(Mode::Ping);
        let report = run(args(&server, 5, 8, 3)).unwrap();
        assert_eq!(report.requests, 3);
    }

    #[test]
    fn newline_framing_on_several_threads() {
        let server = server(Mode::Ping);
        let report = run(BenchArgs {
            framing: Framing::Newline,
            threads: 2,
            ..args(&server, 4, 3, 500)
        })
        .unwrap();
        assert_eq!(report.requests, 500);
        assert_eq!(report.framing, "newline");
        assert!(server.stats.newline_connections.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn duration_mode_stops_at_the_deadline_and_drains() {
        let server = server(Mode::Ping);
        let report = run(BenchArgs {
            duration: Some(Duration::from_millis(300)),
            ..args(&server, 2, 4, 1)
        })
        .unwrap();
        assert!(report.requests > 1, "{report:?}");
        assert!(report.elapsed_secs >= 0.3, "{report:?}");
        assert_sane(&report);
    }

    #[test]
    fn out_of_order_responses_are_matched() {
        let server = server(Mode::Reverse);
        let report = run(args(&server, 2, 8, 2001)).unwrap();
        assert_eq!(report.requests, 2001);
        assert_eq!(report.errors, 0);
        assert!(server.stats.reversed_batches.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn error_responses_are_counted_and_the_first_is_kept() {
        let server = server(Mode::Errors);
        let report = run(BenchArgs {
            kind: "getTicket".into(),
            ..args(&server, 2, 4, 300)
        })
        .unwrap();
        assert_eq!(report.requests, 300);
        // Each connection sends indexes 0..150, a third of them multiples of 3.
        assert_eq!(report.errors, 100);
        assert_eq!(
            report.first_error,
            Some(FirstError {
                err: "no handler for request type 'getTicket'".into(),
                code: Some("unknown_type".into()),
            })
        );
        assert!(report.to_text().contains("(unknown_type)"));
    }

    #[test]
    fn the_payload_is_sent_compact_with_crabs_escaped() {
        let server = server(Mode::Ping);
        let payload = "{ \"a\" : [1, 2],\n  \"s\": \"🦀 \\\" x\" }";
        run(BenchArgs {
            payload: Some(payload.into()),
            framing: Framing::Newline,
            ..args(&server, 1, 1, 1)
        })
        .unwrap();
        let first = server.stats.first_request.lock().unwrap().clone().unwrap();
        assert_eq!(
            first,
            r#"{"type":"ping","queryIndex":0,"payload":{"a":[1,2],"s":"\ud83e\udd80 \" x"}}"#
        );
        let sent: Request = serde_json::from_str(&first).unwrap();
        assert_eq!(
            sent.payload,
            serde_json::from_str::<serde_json::Value>(payload).unwrap()
        );
    }

    fn failure(mode: Mode, args_for: impl FnOnce(&TestServer) -> BenchArgs) -> String {
        let server = server(mode);
        let error = run(args_for(&server)).unwrap_err();
        format!("{error:#}")
    }

    #[test]
    fn an_unexpected_query_index_aborts() {
        let msg = failure(Mode::WrongIndex, |s| args(s, 2, 2, 100));
        assert!(msg.contains("unexpected queryIndex 100"), "{msg}");
        assert!(msg.contains("connection "), "{msg}");
    }

    #[test]
    fn a_malformed_response_aborts() {
        let msg = failure(Mode::Malformed, |s| args(s, 1, 1, 10));
        assert!(msg.contains("malformed response"), "{msg}");
        assert!(msg.contains("this is not json"), "{msg}");
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

    #[test]
    fn a_silent_server_times_out() {
        let msg = failure(Mode::Silent, |s| BenchArgs {
            timeout: Duration::from_millis(300),
            ..args(s, 2, 2, 100)
        });
        assert!(msg.contains("no response from the server"), "{msg}");
    }

    #[test]
    fn a_silent_server_times_out_in_duration_mode() {
        let msg = failure(Mode::Silent, |s| BenchArgs {
            timeout: Duration::from_millis(300),
            duration: Some(Duration::from_millis(100)),
            ..args(s, 2, 2, 100)
        });
        assert!(msg.contains("giving up"), "{msg}");
    }

    #[test]
    fn a_refused_connection_fails_clearly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = run(BenchArgs {
            addr: Some(format!("127.0.0.1:{port}")),
            ..BenchArgs::default()
        })
        .unwrap_err();
        let msg = format!("{error:#}");
        assert!(
            msg.contains(&format!("connecting to 127.0.0.1:{port}")),
            "{msg}"
        );
    }

    #[test]
    fn run_works_from_inside_a_runtime() {
        let server = server(Mode::Ping);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = rt.block_on(async { run(args(&server, 1, 2, 10)) }).unwrap();
        assert_eq!(report.requests, 10);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "bench",
            "--addr",
            "h:1",
            "-c",
            "2",
            "-P",
            "16",
            "-n",
            "7",
            "-d",
            "1m 5s",
            "-t",
            "getProxy",
            "--payload",
            "{\"region\":\"eu\"}",
            "--framing",
            "newline",
            "--threads",
            "3",
            "--json",
        ])
        .unwrap();
        let b = cli.bench;
        assert_eq!(b.addr.as_deref(), Some("h:1"));
        assert_eq!(
            (b.connections, b.pipeline, b.requests, b.threads),
            (2, 16, 7, 3)
        );
        assert_eq!(b.duration, Some(Duration::from_secs(65)));
        assert_eq!(b.kind, "getProxy");
        assert_eq!(b.framing, Framing::Newline);
        assert!(b.json);
        b.validate().unwrap();

        let d = Cli::try_parse_from(["bench"]).unwrap().bench;
        assert_eq!(
            (d.connections, d.pipeline, d.requests, d.threads),
            (50, 1, 100_000, 1)
        );
        assert_eq!((d.kind.as_str(), d.framing), ("ping", Framing::Crab));
        assert_eq!(
            (d.duration, d.payload, d.addr, d.json),
            (None, None, None, false)
        );
        assert_eq!(d.timeout, Duration::from_secs(10));

        assert!(Cli::try_parse_from(["bench", "--framing", "xml"]).is_err());
        assert!(Cli::try_parse_from(["bench", "-d", "soon"]).is_err());
    }

    #[test]
    fn bad_options_are_rejected_clearly() {
        let check = |args: BenchArgs, expected: &str| {
            let msg = run(args).unwrap_err().to_string();
            assert!(msg.contains(expected), "{msg}");
        };
        let base = BenchArgs::default;
        check(
            BenchArgs {
                connections: 0,
                ..base()
            },
            "--connections must be at least 1",
        );
        check(
            BenchArgs {
                pipeline: MAX_PIPELINE + 1,
                ..base()
            },
            "--pipeline must be at most 1048576",
        );
        check(
            BenchArgs {
                pipeline: 0,
                ..base()
            },
            "--pipeline must be at least 1",
        );
        check(
            BenchArgs {
                requests: 0,
                ..base()
            },
            "--requests must be at least 1",
        );
        check(
            BenchArgs {
                threads: 0,
                ..base()
            },
            "--threads must be at least 1",
        );
        check(
            BenchArgs {
                duration: Some(Duration::ZERO),
                ..base()
            },
            "--duration must be longer than zero",
        );
        check(
            BenchArgs {
                payload: Some("{\"a\":".into()),
                ..base()
            },
            "--payload is not valid JSON",
        );
    }

    #[test]
    fn the_address_comes_from_the_environment_or_the_default() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(addr_from_env(None, None), "127.0.0.1:41969");
        assert_eq!(addr_from_env(s("localhost"), s("4000")), "localhost:4000");
        assert_eq!(addr_from_env(s(""), s(" 4000 ")), "127.0.0.1:4000");
        assert_eq!(addr_from_env(s("::1"), None), "[::1]:41969");
    }

    #[test]
    fn requests_are_built_from_the_template() {
        let t = Template::new("getProxy", Some(" {\"r\": \"eu\"} "), Framing::Crab).unwrap();
        let mut out = Vec::new();
        t.push(&mut out, 0);
        t.push(&mut out, 18_446_744_073_709_551_614);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"type\":\"getProxy\",\"queryIndex\":0,\"payload\":{\"r\":\"eu\"}}🦀\
             {\"type\":\"getProxy\",\"queryIndex\":18446744073709551614,\"payload\":{\"r\":\"eu\"}}🦀"
        );
        let t = Template::new("a\"🦀", None, Framing::Newline).unwrap();
        let mut out = Vec::new();
        t.push(&mut out, 42);
        assert_eq!(
            out,
            br#"{"type":"a\"\ud83e\udd80","queryIndex":42}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn minify_keeps_strings_intact() {
        assert_eq!(
            minify_json(" { \"a b\" : [ 1 ,\t2 ] ,\r\n \"c\\\" d\" : \"\\\\\" } "),
            "{\"a b\":[1,2],\"c\\\" d\":\"\\\\\"}"
        );
    }

    #[test]
    fn responses_are_parsed_cheaply_and_strictly() {
        let ok = |s: &str| parse_response(s.as_bytes()).unwrap();
        assert_eq!(
            ok(r#"{"type":"ping","queryIndex":7,"resultJob":{"pong":1}}"#),
            Parsed {
                query_index: 7,
                is_error: false
            }
        );
        assert_eq!(
            ok(r#" {"resultJob":{"err":"x","code":"timeout"},"queryIndex":8,"type":"t"} "#),
            Parsed {
                query_index: 8,
                is_error: true
            }
        );
        // The original server's errors have no code; a null err is no error; nor is a
        // result that is not an object, or a missing one.
        assert!(ok(r#"{"queryIndex":1,"resultJob":{"err":{"m":1}}}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":{"err":null,"e":"err"}}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":"err"}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1,"resultJob":null}"#).is_error);
        assert!(!ok(r#"{"queryIndex":1}"#).is_error);

        let bad = |s: &str| format!("{:#}", parse_response(s.as_bytes()).unwrap_err());
        assert!(bad("nope").contains("malformed response"));
        assert!(bad(r#"{"queryIndex":-1}"#).contains("malformed response"));
        assert!(bad(r#"{"queryIndex":"1"}"#).contains("malformed response"));
        assert!(
            bad(r#"{"type":"errMsgFromClient","queryIndex":null,"resultJob":{"err":"bad"}}"#)
                .contains("without a queryIndex")
        );
    }

    #[test]
    fn the_first_error_reads_err_and_code() {
        let e = |s: &str| first_error(s.as_bytes());
        assert_eq!(
            e(r#"{"queryIndex":1,"resultJob":{"err":"no \"x\"","code":"unknown_type"}}"#),
            Some(FirstError {
                err: "no \"x\"".into(),
                code: Some("unknown_type".into())
            })
        );
        assert_eq!(
            e(r#"{"queryIndex":1,"resultJob":{"err":{"m":1}}}"#),
            Some(FirstError {
                err: r#"{"m":1}"#.into(),
                code: None
            })
        );
        assert_eq!(e(r#"{"queryIndex":1,"resultJob":{"pong":1}}"#), None);
    }

    #[test]
    fn in_flight_slots_reject_unknown_and_repeated_indexes() {
        let t = Template::new("ping", None, Framing::Crab).unwrap();
        let mut f = InFlight::new(4);
        let mut out = Vec::new();
        let t0 = Instant::now();
        f.issue(4, t0, &t, &mut out);
        assert_eq!(f.len(), 4);
        // Request k in slot s has query index k * 4 + s.
        assert_eq!(f.complete(10), Some(t0));
        assert_eq!(f.complete(10), None, "answered twice");
        assert_eq!(f.complete(2), None, "never sent");
        assert_eq!(f.complete(20), None, "not sent yet");
        assert_eq!(f.complete(FREE), None);
        assert_eq!(f.complete(0), Some(t0));
        // Requests 1 and 3 (slots 1 and 3) are still in flight; the next two take the free
        // slots 0 and 2.
        let t1 = Instant::now();
        f.issue(2, t1, &t, &mut out);
        assert_eq!(f.len(), 4);
        let text = String::from_utf8(out).unwrap();
        let indexes: Vec<u64> = text
            .split("🦀")
            .filter(|m| !m.is_empty())
            .map(|m| serde_json::from_str::<Request>(m).unwrap().query_index)
            .collect();
        assert_eq!(indexes, [0, 5, 10, 15, 4 * 4, 5 * 4 + 2]);
        assert_eq!(f.complete(0), None, "slot 0 now waits for 16");
        assert_eq!(f.complete(16), Some(t1));
        assert_eq!(f.complete(22), Some(t1));
        assert_eq!(f.complete(5), Some(t0));
        assert_eq!(f.complete(15), Some(t0));
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn shares_add_up() {
        for (total, conns) in [(10u64, 3usize), (3, 5), (100_000, 50), (1, 1)] {
            let shares: Vec<u64> = (0..conns).map(|i| share(total, conns, i)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn latency_figures_come_from_the_histogram() {
        let mut r = Recorder::new();
        assert_eq!(r.latency(), Latency::default());
        // 1 us .. 1000 us, in nanoseconds.
        let values: Vec<u64> = (1..=1000).map(|us| us * 1000).collect();
        r.record_all(&values);
        let l = r.latency();
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(near(l.p50, 500.0), "{l:?}");
        assert!(near(l.p90, 900.0), "{l:?}");
        assert!(near(l.p99, 990.0), "{l:?}");
        assert!(near(l.p99_9, 999.0), "{l:?}");
        assert_eq!(l.max, 1000.0);
        assert!(near(l.mean, 500.5), "{l:?}");
        // Huge values do not fail.
        r.record_all(&[u64::MAX / 2]);
        assert!(r.latency().max > 1e12);
    }

    #[test]
    fn the_report_serialises_with_the_documented_names() {
        let report = Report {
            addr: "127.0.0.1:1".into(),
            kind: "ping".into(),
            framing: "crab",
            connections: 50,
            pipeline: 16,
            threads: 1,
            requests: 1000,
            errors: 1,
            first_error: Some(FirstError {
                err: "boom".into(),
                code: None,
            }),
            elapsed_secs: 0.5,
            requests_per_sec: 2000.0,
            latency_us: Latency {
                p50: 1.5,
                p90: 2.0,
                p99: 3.0,
                p99_9: 4.0,
                max: 5.0,
                mean: 1.75,
            },
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "addr": "127.0.0.1:1", "type": "ping", "framing": "crab",
                "connections": 50, "pipeline": 16, "threads": 1,
                "requests": 1000, "errors": 1,
                "first_error": {"err": "boom", "code": null},
                "elapsed_secs": 0.5, "requests_per_sec": 2000.0,
                "latency_us": {"p50": 1.5, "p90": 2.0, "p99": 3.0, "p99_9": 4.0,
                               "max": 5.0, "mean": 1.75}
            })
        );
        let text = report.to_text();
        assert!(
            text.contains("1000 requests completed in 0.500 seconds"),
            "{text}"
        );
        assert!(text.contains("2000.00 requests per second"), "{text}");
        assert!(
            text.contains("1 error responses; the first: boom\n"),
            "{text}"
        );
        assert!(text.contains("\n  p99.9          4.0\n"), "{text}");
    }
}
