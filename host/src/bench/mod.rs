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
//! With `--step` (repeated) instead of `--type`, each of a connection's `--pipeline` slots
//! runs a chain: the first step's request, then, once answered, the second step's, its
//! payload filled from fields of that answer (`{{lease}}`), and so on, round and round. This
//! measures round trips that hold and give back a resource, such as `getProxy` then
//! `releaseProxy`. `--requests` counts the requests of all steps, so a run may end between
//! the steps of a chain (a resource then stays held).
//!
//! # Reading the figures
//!
//! - **requests** counts responses, error responses included; **errors** counts the responses
//!   whose `resultJob` holds `err` (for example `unknown_type` when no jobber serves the type,
//!   or `overloaded`), and, in a chain, those that lack a field the next step needs (the
//!   chain then starts over). A run with errors mostly measures the server's error path; the
//!   first error is printed so its cause can be fixed. With `--step`, **steps** splits both
//!   counts by step.
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
//!
//! # Layout
//!
//! This file owns [`run`]: the runtime, the clock and the merging of the connections'
//! results. The rest, in the order a request meets it:
//!
//! - `args`: [`BenchArgs`], their validation and the server address.
//! - `template`: the bytes of a request, built once and stamped with each `queryIndex` (and
//!   a chain step's placeholder values).
//! - `chain`: `--step`: the steps, and each pipeline slot's place in its chain.
//! - `connect`: opening the connections.
//! - `connection`: each connection's write/read loop.
//! - `flight`: a connection's requests in flight, one slot each.
//! - `response`: reading `queryIndex` and the error, if any, from a response.
//! - `watchdog`: gives up on a server that stops answering.
//! - `report`: the latency histogram and the [`Report`], as text or JSON.

mod args;
mod chain;
mod connect;
mod connection;
mod flight;
mod report;
mod response;
mod template;
#[cfg(test)]
mod test_server;
mod watchdog;

pub use args::{BenchArgs, Step};
pub use report::{FirstError, Latency, Report, StepReport};

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context as _};
use resman_sdk::protocol::Framing;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use chain::{Chain, Chains, StepCount};
use connect::connect_all;
use connection::{ConnStats, Connection, Requests, Shared};
use report::Recorder;
use template::Template;
use watchdog::watchdog;

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

/// What every connection sends, built once per run.
enum Load {
    Single(Arc<Template>),
    Chain(Arc<Chain>),
}

impl Load {
    fn new(args: &BenchArgs) -> anyhow::Result<Load> {
        if args.steps.is_empty() {
            let template = Template::new(&args.kind, args.payload.as_deref(), args.framing)
                .map_err(|e| anyhow!("--payload {e}"))?;
            Ok(Load::Single(Arc::new(template)))
        } else {
            Ok(Load::Chain(Arc::new(Chain::new(
                &args.steps,
                args.framing,
            )?)))
        }
    }

    /// A connection's requests: the shared template, or chains of its own.
    fn requests(&self, pipeline: usize) -> Requests {
        match self {
            Load::Single(template) => Requests::Single(template.clone()),
            Load::Chain(chain) => Requests::Chains(Chains::new(chain.clone(), pipeline)),
        }
    }

    /// Each step's type and counts; empty without steps.
    fn steps(&self, counts: &[StepCount]) -> Vec<StepReport> {
        let Load::Chain(chain) = self else {
            return Vec::new();
        };
        let counts = counts.iter().chain(std::iter::repeat(&StepCount::ZERO));
        chain
            .kinds()
            .zip(counts)
            .map(|(kind, count)| StepReport {
                kind: kind.to_owned(),
                requests: count.requests,
                errors: count.errors,
            })
            .collect()
    }

    /// The request type, or the steps' types joined by ` -> `.
    fn kind(&self, args: &BenchArgs) -> String {
        match self {
            Load::Single(_) => args.kind.clone(),
            Load::Chain(chain) => chain.kinds().collect::<Vec<_>>().join(" -> "),
        }
    }
}

async fn run_async(args: &BenchArgs) -> anyhow::Result<Report> {
    let addr = args.resolved_addr();
    let load = Load::new(args)?;

    let streams = connect_all(&addr, args.connections, args.timeout).await?;

    let shared = Arc::new(Shared {
        recorder: Mutex::new(Recorder::new()),
        progress: AtomicU64::new(0),
    });
    let start = Instant::now();
    let deadline = deadline(start, args)?;
    let tasks = spawn_connections(streams, &addr, args, &load, &shared, deadline);

    let totals = tokio::select! {
        result = join_all(tasks) => result?,
        error = watchdog(&shared, deadline, args.timeout) => return Err(error),
    };
    let elapsed = start.elapsed().as_secs_f64();

    let latency = shared
        .recorder
        .lock()
        .map_err(|_| anyhow!("latency recorder poisoned"))?
        .latency();
    Ok(report(args, &load, addr, totals, elapsed, latency))
}

/// When `--duration` ends, if given; an error when the end, plus `--timeout`, is out of the
/// clock's range.
fn deadline(start: Instant, args: &BenchArgs) -> anyhow::Result<Option<Instant>> {
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
    Ok(deadline)
}

/// Starts one task per stream, each with its share of the requests.
fn spawn_connections(
    streams: Vec<TcpStream>,
    addr: &str,
    args: &BenchArgs,
    load: &Load,
    shared: &Arc<Shared>,
    deadline: Option<Instant>,
) -> JoinSet<anyhow::Result<ConnStats>> {
    let mut tasks = JoinSet::new();
    for (id, stream) in streams.into_iter().enumerate() {
        let conn = Connection {
            stream,
            requests: load.requests(args.pipeline),
            shared: shared.clone(),
            framing: args.framing,
            pipeline: args.pipeline,
            budget: match deadline {
                Some(_) => u64::MAX,
                None => share(args.requests, args.connections, id),
            },
            deadline,
        };
        let addr = addr.to_owned();
        tasks.spawn(async move {
            conn.run()
                .await
                .with_context(|| format!("connection {id} to {addr}"))
        });
    }
    tasks
}

/// Waits for every connection and adds up their results; the first failure fails the run.
async fn join_all(mut tasks: JoinSet<anyhow::Result<ConnStats>>) -> anyhow::Result<ConnStats> {
    let mut totals = ConnStats::default();
    while let Some(joined) = tasks.join_next().await {
        let stats = joined.context("a connection task failed")??;
        totals.merge(stats);
    }
    Ok(totals)
}

fn report(
    args: &BenchArgs,
    load: &Load,
    addr: String,
    totals: ConnStats,
    elapsed: f64,
    latency: Latency,
) -> Report {
    Report {
        addr,
        kind: load.kind(args),
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
        steps: load.steps(&totals.steps),
    }
}

/// How many of `total` requests connection `index` of `connections` sends.
fn share(total: u64, connections: usize, index: usize) -> u64 {
    let connections = connections as u64;
    let index = index as u64;
    total / connections + u64::from(index < total % connections)
}

#[cfg(test)]
mod tests {
    use super::test_server::{args, assert_sane, server, Mode};
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

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
    fn run_works_from_inside_a_runtime() {
        let server = server(Mode::Ping);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = rt.block_on(async { run(args(&server, 1, 2, 10)) }).unwrap();
        assert_eq!(report.requests, 10);
    }

    #[test]
    fn shares_add_up() {
        for (total, conns) in [(10u64, 3usize), (3, 5), (100_000, 50), (1, 1)] {
            let shares: Vec<u64> = (0..conns).map(|i| share(total, conns, i)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }
}
