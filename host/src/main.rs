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
            eprintln!("resman: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let threads = args.threads;
            let config = args.into_config()?;
            runtime_with(threads)?.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call(args) => runtime()?.block_on(call(args)),
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

/// Prints the answer's `resultJob`; an error answer is printed too, and exits 1.
async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    use resman_sdk::client::{Client, ClientError};
    let payload: serde_json::Value = match &args.payload {
        Some(text) => serde_json::from_str(text).context("the payload is not valid JSON")?,
        None => serde_json::Value::Null,
    };
    let builder = Client::builder().timeout(args.timeout);
    let client = match &args.addr {
        Some(addr) => builder.connect(addr.as_str()).await?,
        None => builder.connect_env().await?,
    };
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
