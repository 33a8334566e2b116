//! The `resman` binary: `serve`, `call` and `bench`. Thin: parse flags, install logging, hand
//! over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// mimalloc: small per-connection allocations pack tighter than in glibc's malloc (idle
/// connections cost less memory) and the request path's short-lived allocations are faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "resman", version, about = "A resource-manager microservice")]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG, default "info")
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service
    Serve(resman::ServeArgs),
    /// Send one request and print the response's resultJob
    Call(CallArgs),
    /// Load-test a server that speaks the protocol (resman or the original)
    Bench(resman::bench::BenchArgs),
    /// List the plugins a running server has loaded, and the files it refused
    Plugins(PluginsArgs),
}

#[derive(clap::Args)]
struct PluginsArgs {
    /// Server address [default: SOCKET_HOST:SOCKET_PORT from .env, else localhost:41969]
    #[arg(long)]
    addr: Option<String>,
    /// Print the server's JSON answer as it is
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CallArgs {
    /// Request type
    #[arg(value_name = "TYPE")]
    kind: String,
    /// Payload as JSON
    #[arg(value_name = "JSON")]
    payload: Option<String>,
    /// Server address [default: SOCKET_HOST:SOCKET_PORT from .env, else localhost:41969]
    #[arg(long)]
    addr: Option<String>,
    /// How long to wait for the answer, e.g. 2s
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("resman: cannot read .env: {err}");
            return ExitCode::from(2);
        }
    }
    install_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("resman: {}", describe(&err));
            ExitCode::from(2)
        }
    }
}

/// `err` and its causes on one line, each cause once: the library's errors already name
/// their cause in their own message (so that a log line of one alone says why), and
/// `{:#}` would then print it twice.
fn describe(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let threads = args.threads;
            let config = args.into_config()?;
            let runtime = runtime_with(threads)?;
            let served = runtime.block_on(serve(config));
            // A native plugin call abandoned at its deadline may still be running on a
            // blocking thread; the host does not wait for it to exit.
            runtime.shutdown_timeout(ABANDONED_CALLS_GRACE);
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call(args) => runtime()?.block_on(call(args)),
        Command::Plugins(args) => runtime()?.block_on(plugins(args)),
        Command::Bench(args) => {
            let json = args.json;
            let report = resman::bench::run(args)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                report.print_text();
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How long a stopping host waits for blocking threads still running: only a native
/// plugin call abandoned at its deadline runs then.
const ABANDONED_CALLS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

fn runtime_with(
    threads: Option<std::num::NonZeroUsize>,
) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads.get());
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve(config: resman::Config) -> anyhow::Result<()> {
    let server = resman::Host::builder().config(config).bind().await?;
    server.run(resman::shutdown::signal()).await?;
    Ok(())
}

async fn connect(
    addr: Option<&str>,
    timeout: std::time::Duration,
) -> anyhow::Result<resman_sdk::client::Client> {
    let builder = resman_sdk::client::Client::builder().timeout(timeout);
    Ok(match addr {
        Some(addr) => {
            // Resolved here so that an error names the address as given.
            let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host(addr)
                .await
                .with_context(|| format!("cannot resolve {addr}"))?
                .collect();
            builder.connect(&resolved[..]).await?
        }
        None => builder.connect_env().await?,
    })
}

/// Prints the answer's `resultJob`; an error answer is printed too, and exits 1.
async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    use resman_sdk::client::ClientError;
    let payload: serde_json::Value = match &args.payload {
        Some(text) => serde_json::from_str(text).context("the payload is not valid JSON")?,
        None => serde_json::Value::Null,
    };
    let client = connect(args.addr.as_deref(), args.timeout).await?;
    match client.request(&args.kind, payload).await {
        Ok(result) => {
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Server(reply)) => {
            println!("{}", serde_json::to_string_pretty(&reply)?);
            Ok(ExitCode::FAILURE)
        }
        Err(err) => Err(err.into()),
    }
}

/// `resman plugins`: one line per loaded plugin (file, kind, types, hash, load time), then
/// the refused files with their reasons.
async fn plugins(args: PluginsArgs) -> anyhow::Result<ExitCode> {
    let client = connect(args.addr.as_deref(), std::time::Duration::from_secs(10)).await?;
    let listing = client.request("srvPlugins", ()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    let empty = Vec::new();
    let loaded = listing["plugins"].as_array().unwrap_or(&empty);
    println!(
        "{:<28} {:<7} {:<14} {:>9}  types",
        "file", "kind", "hash", "load ms"
    );
    for plugin in loaded {
        let hash = plugin["hash"]
            .as_str()
            .unwrap_or("")
            .get(..12)
            .unwrap_or("");
        let cached = if plugin["fromCache"] == true {
            " (cached)"
        } else {
            ""
        };
        let types: Vec<&str> = plugin["types"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        println!(
            "{:<28} {:<7} {:<14} {:>9.1}  {}{cached}",
            plugin["file"].as_str().unwrap_or("?"),
            plugin["kind"].as_str().unwrap_or("?"),
            hash,
            plugin["loadMs"].as_f64().unwrap_or(0.0),
            types.join(", ")
        );
    }
    for refused in listing["refused"].as_array().unwrap_or(&empty) {
        println!(
            "refused {}: {}",
            refused["file"].as_str().unwrap_or("?"),
            refused["error"].as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn install_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;
    use anyhow::Context;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open {path}: {source}")]
    struct Naming {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_told_once() {
        let io = || std::io::Error::other("disk on fire");
        let naming: anyhow::Error = Naming {
            path: "data",
            source: io(),
        }
        .into();
        assert_eq!(describe(&naming), "cannot open data: disk on fire");
        let wrapped = Err::<(), _>(io()).context("cannot start").unwrap_err();
        assert_eq!(describe(&wrapped), "cannot start: disk on fire");
        let both = Err::<(), _>(Naming {
            path: "data",
            source: io(),
        })
        .context("start-up failed")
        .unwrap_err();
        assert_eq!(
            describe(&both),
            "start-up failed: cannot open data: disk on fire"
        );
    }
}
