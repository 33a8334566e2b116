//! The figures of a run: [`Recorder`], the latency histogram all connections add to, and
//! [`Report`], what `resman bench` prints as text or, with `--json`, serialises.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The outcome of a run. Serialises to the object `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The address the generator connected to.
    pub addr: String,
    /// The request type sent; with `--step`, the steps' types joined by ` -> `.
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
    /// With `--step`, each step's counts, in order (absent from the JSON without steps).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepReport>,
}

/// How one `--step` fared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// The step's request type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Responses to this step (every request sent is answered by the end of a run).
    pub requests: u64,
    /// Error responses to this step, and responses without a field the next step needs.
    pub errors: u64,
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
        self.push_errors(&mut s);
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(
                s,
                "  step {} {}: {} requests, {} errors",
                i + 1,
                step.kind,
                step.requests,
                step.errors
            );
        }
        let _ = writeln!(s, "  {:.2} requests per second", self.requests_per_sec);
        s.push('\n');
        s.push_str("Latency in microseconds, from a request's write to its response:\n");
        self.latency_us.push_table(&mut s);
        s
    }

    /// The error count and the first error, one line.
    fn push_errors(&self, s: &mut String) {
        let _ = write!(s, "  {} error responses", self.errors);
        if let Some(first) = &self.first_error {
            let _ = write!(s, "; the first: {}", first.err);
            if let Some(code) = &first.code {
                let _ = write!(s, " ({code})");
            }
        }
        s.push('\n');
    }
}

impl Latency {
    /// One line per figure, name and value.
    fn push_table(&self, s: &mut String) {
        for (name, value) in [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p99_9),
            ("max", self.max),
            ("mean", self.mean),
        ] {
            let _ = writeln!(s, "  {name:<6}{value:>12.1}");
        }
    }
}

/// Latencies of all connections, in nanoseconds.
pub(super) struct Recorder {
    histogram: Histogram<u64>,
    sum_ns: u128,
    max_ns: u64,
}

impl Recorder {
    pub(super) fn new() -> Recorder {
        Recorder {
            histogram: Histogram::new(3).expect("3 significant digits are valid"),
            sum_ns: 0,
            max_ns: 0,
        }
    }

    /// Adds a connection's batch of latencies.
    pub(super) fn record_all(&mut self, latencies_ns: &[u64]) {
        for &ns in latencies_ns {
            if self.histogram.record(ns).is_err() {
                self.histogram.saturating_record(ns);
            }
            self.sum_ns += u128::from(ns);
            self.max_ns = self.max_ns.max(ns);
        }
    }

    /// The figures so far, in microseconds; all zero before the first latency.
    pub(super) fn latency(&self) -> Latency {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            steps: Vec::new(),
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
        assert!(!text.contains("step"), "{text}");
    }

    #[test]
    fn steps_are_reported_one_by_one() {
        let step = |kind: &str, requests, errors| StepReport {
            kind: kind.into(),
            requests,
            errors,
        };
        let report = Report {
            addr: "127.0.0.1:1".into(),
            kind: "getProxy -> releaseProxy".into(),
            framing: "crab",
            connections: 1,
            pipeline: 1,
            threads: 1,
            requests: 7,
            errors: 1,
            first_error: None,
            elapsed_secs: 1.0,
            requests_per_sec: 7.0,
            latency_us: Latency::default(),
            steps: vec![step("getProxy", 4, 1), step("releaseProxy", 3, 0)],
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["steps"],
            serde_json::json!([
                {"type": "getProxy", "requests": 4, "errors": 1},
                {"type": "releaseProxy", "requests": 3, "errors": 0}
            ])
        );
        assert_eq!(json["type"], "getProxy -> releaseProxy");
        let text = report.to_text();
        assert!(
            text.starts_with("====== getProxy -> releaseProxy ======\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\n  step 1 getProxy: 4 requests, 1 errors\n  step 2 releaseProxy: 3 requests, 0 errors\n"
            ),
            "{text}"
        );
    }
}
