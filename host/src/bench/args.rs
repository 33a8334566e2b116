//! [`BenchArgs`]: the options of `resman bench`, the checks clap cannot make, and the server
//! address they resolve to. The defaults are written twice, in the clap attributes and in
//! [`Default`] (for callers that build options in code, such as the tests): change both
//! together.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::builder::TypedValueParser as _;
use resman_sdk::protocol::{Framing, DEFAULT_PORT};

use super::chain::Chain;
use super::template::Template;

/// The largest `--pipeline`. Query indexes grow `pipeline` times faster than the request
/// count, and the original server reads them as doubles, exact below 2^53.
const MAX_PIPELINE: usize = 1 << 20;

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

    /// A step of a request chain, instead of --type and --payload; repeat for each step
    ///
    /// Each of a connection's --pipeline slots runs its own chain: it sends the first step,
    /// awaits the answer, sends the second, and so on, then starts again at the first. An
    /// error answer, or one without a field the next step needs, counts as an error and
    /// restarts that chain at the first step. --requests counts the requests of every step.
    ///
    /// In a later step's payload, {{NAME}} is replaced by the JSON value of field NAME of
    /// the previous step's resultJob. A placeholder stands for a whole JSON value, unquoted:
    /// a string is inserted with its quotes, a number as a number. For example:
    ///
    /// --step getProxy='{}' --step 'releaseProxy={"lease":{{lease}}}'
    #[arg(
        long = "step",
        value_name = "TYPE[=JSON]",
        conflicts_with_all = ["kind", "payload"]
    )]
    pub steps: Vec<Step>,

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
            steps: Vec::new(),
            framing: Framing::Crab,
            threads: 1,
            timeout: Duration::from_secs(10),
            json: false,
        }
    }
}

/// One `--step`: a request type, and its payload as JSON text whose `{{NAME}}` placeholders
/// the previous step's answer fills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The request type.
    pub kind: String,
    /// The payload [default: no payload field].
    pub payload: Option<String>,
}

impl FromStr for Step {
    type Err = String;

    /// Reads `TYPE` or `TYPE=PAYLOAD`; the type ends at the first `=`.
    fn from_str(text: &str) -> Result<Step, String> {
        let (kind, payload) = match text.split_once('=') {
            Some((kind, payload)) => (kind, Some(payload)),
            None => (text, None),
        };
        if kind.is_empty() {
            return Err("the request type before = is empty".to_owned());
        }
        if payload.is_some_and(|p| p.trim().is_empty()) {
            return Err(format!(
                "the payload after {kind}= is empty; leave out = for no payload"
            ));
        }
        Ok(Step {
            kind: kind.to_owned(),
            payload: payload.map(str::to_owned),
        })
    }
}

impl BenchArgs {
    /// Checks the options that clap cannot: counts of zero and the payloads' JSON.
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
            let template = Template::new(&self.kind, Some(payload), self.framing)
                .map_err(|e| anyhow!("--payload {e}"))?;
            if let Some(field) = template.fields().first() {
                bail!(
                    "--payload uses {{{{{field}}}}}, but only a later --step has a previous \
                     answer to take it from"
                );
            }
        }
        if !self.steps.is_empty() {
            if self.payload.is_some() {
                bail!("--payload and --step exclude each other; give each step its payload");
            }
            Chain::new(&self.steps, self.framing)?;
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

#[cfg(test)]
mod tests {
    use super::super::run;
    use super::*;
    use clap::Parser;

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
    fn steps_parse_and_exclude_type_and_payload() {
        let parse = |args: &[&str]| {
            let argv = ["bench"].iter().chain(args).copied();
            Cli::try_parse_from(argv).map(|cli| cli.bench)
        };
        let b = parse(&[
            "--step",
            "getProxy={}",
            "--step",
            r#"releaseProxy={"lease": {{lease}}}"#,
            "--step",
            "ping",
            "--step",
            "x=a=1",
        ])
        .unwrap();
        let step = |kind: &str, payload: Option<&str>| Step {
            kind: kind.into(),
            payload: payload.map(Into::into),
        };
        assert_eq!(
            b.steps,
            [
                step("getProxy", Some("{}")),
                step("releaseProxy", Some(r#"{"lease": {{lease}}}"#)),
                step("ping", None),
                step("x", Some("a=1")),
            ]
        );
        assert!(b
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--step 4 (x) is not valid JSON"));
        assert!(parse(&["--step", "a", "-t", "b"]).is_err());
        assert!(parse(&["--step", "a", "--payload", "{}"]).is_err());
        let empty = parse(&["--step", "getProxy="]).err().unwrap().to_string();
        assert!(
            empty.contains("the payload after getProxy= is empty"),
            "{empty}"
        );
        assert!(parse(&["--step", "={}"]).is_err());
        assert!(parse(&[]).unwrap().steps.is_empty());
    }

    #[test]
    fn placeholders_need_a_previous_step() {
        let check = |args: BenchArgs, expected: &str| {
            let msg = args.validate().unwrap_err().to_string();
            assert!(msg.starts_with(expected), "{msg}");
        };
        let steps = |texts: &[&str]| texts.iter().map(|t| t.parse().unwrap()).collect();
        check(
            BenchArgs {
                payload: Some(r#"{"lease":{{lease}}}"#.into()),
                ..BenchArgs::default()
            },
            "--payload uses {{lease}}, but only a later --step has a previous answer",
        );
        check(
            BenchArgs {
                steps: steps(&[r#"a={"x":{{x}}}"#]),
                ..BenchArgs::default()
            },
            "--step 1 (a) uses {{x}}, but the first step has no previous answer",
        );
        check(
            BenchArgs {
                steps: steps(&["a", r#"b={"lease":"{{lease}}"}"#]),
                ..BenchArgs::default()
            },
            "--step 2 (b) puts {{lease}} inside a string",
        );
        check(
            BenchArgs {
                steps: steps(&["a"]),
                payload: Some("{}".into()),
                ..BenchArgs::default()
            },
            "--payload and --step exclude each other",
        );
        BenchArgs {
            steps: steps(&["a={}", r#"b={"lease":{{lease}}}"#]),
            ..BenchArgs::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn the_address_comes_from_the_environment_or_the_default() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(addr_from_env(None, None), "127.0.0.1:41969");
        assert_eq!(addr_from_env(s("localhost"), s("4000")), "localhost:4000");
        assert_eq!(addr_from_env(s(""), s(" 4000 ")), "127.0.0.1:4000");
        assert_eq!(addr_from_env(s("::1"), None), "[::1]:41969");
    }
}
