//! Configuration: `.env` and command-line flags → a validated [`Config`].
//!
//! Every limit of the host is a field here, named, defaulted and checked once, so that no
//! other module reads the environment and every knob shows up in `resman serve --help`.

use clap::Args;
use resman_sdk::protocol::DEFAULT_PORT;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The default cache of compiled components: `$XDG_CACHE_HOME/resman/components`, else
/// `$HOME/.cache/resman/components`, else a folder under the system's temporary folder. Kept
/// out of the plugins folder, which may be a source tree or read-only.
fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("resman").join("components")
}

/// Everything the host needs to serve, validated by [`Config::validate`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The largest message a client may send, in bytes; a client that sends a larger one gets
    /// `message_too_large` and is disconnected.
    pub max_message_bytes: usize,
    /// Requests one connection may have waiting or running before it is answered `overloaded`.
    pub max_pending_per_connection: usize,
    /// Requests all connections together may have waiting or running before `overloaded`.
    pub max_pending_total: usize,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// How long one jobber call may run before the client is answered `timeout`.
    pub jobber_timeout: Duration,
    /// Attempts of a request whose jobber answers `retry`, the first one included.
    pub max_attempts: u32,
    /// Requests of one type handed to its executor in one batch.
    pub batch_size: usize,
    /// When set, the queue lengths per type are logged at this interval (the original's
    /// `startQueTimer`).
    pub queue_report: Option<Duration>,
    /// The folder plugins are loaded from and watched in; `None` serves no plugins.
    pub plugins_dir: Option<PathBuf>,
    /// Where compiled WASM components are kept across restarts; `None` compiles at every
    /// start. `resman serve` defaults it to the user's cache folder.
    pub cache_dir: Option<PathBuf>,
    /// The most linear memory one WASM jobber instance may use, in bytes.
    pub wasm_memory_limit: usize,
    /// Where the resource pools and plugin stores are kept durable (journal and snapshot);
    /// `None` keeps them in memory only, lost at exit. `resman serve` defaults it to `data`.
    pub data_dir: Option<PathBuf>,
    /// The journal in `data_dir` is rolled into a fresh snapshot once it holds this many
    /// bytes, and at least twice the latest snapshot: larger means fewer snapshots, smaller
    /// means a faster restart.
    pub journal_roll_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
            max_message_bytes: 1024 * 1024,
            max_pending_per_connection: 10_000,
            max_pending_total: 200_000,
            max_connections: 100_000,
            jobber_timeout: Duration::from_secs(10),
            max_attempts: 5,
            batch_size: 256,
            queue_report: None,
            plugins_dir: None,
            cache_dir: None,
            wasm_memory_limit: 64 * 1024 * 1024,
            data_dir: None,
            journal_roll_bytes: 64 << 20,
        }
    }
}

/// A configuration value that cannot be served with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit that must be positive is zero.
    #[error("{name} must be at least 1")]
    Zero {
        /// The setting's name.
        name: &'static str,
    },
    /// `max_message_bytes` is too small to hold a request.
    #[error("max message size {0} is below the minimum of 64 bytes")]
    MessageTooSmall(usize),
    /// `journal_roll_bytes` is too small to hold a commit's worth of records.
    #[error("journal roll size {0} is below the minimum of {min} bytes", min = crate::pools::Sizes::MIN_ROLL_BYTES)]
    JournalTooSmall(u64),
    /// `SOCKET_PORT` holds no port number.
    #[error("SOCKET_PORT={0:?} is not a port number (0-65535)")]
    BadPort(String),
}

impl Config {
    /// Checks the limits once, before anything is bound.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "max_pending_per_connection",
                self.max_pending_per_connection,
            ),
            ("max_pending_total", self.max_pending_total),
            ("max_connections", self.max_connections),
            ("max_attempts", self.max_attempts as usize),
            ("batch_size", self.batch_size),
            (
                "jobber_timeout (ms)",
                self.jobber_timeout.as_millis() as usize,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero { name });
        }
        if self.max_message_bytes < 64 {
            return Err(ConfigError::MessageTooSmall(self.max_message_bytes));
        }
        if self.journal_roll_bytes < crate::pools::Sizes::MIN_ROLL_BYTES {
            return Err(ConfigError::JournalTooSmall(self.journal_roll_bytes));
        }
        Ok(())
    }
}

/// The flags of `resman serve`. `SOCKET_PORT` (from the environment or `.env`) sets the port
/// when `--port` is not given.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TCP port [default: SOCKET_PORT from .env, else 41969]
    #[arg(long)]
    pub port: Option<u16>,
    /// Interface to listen on; serving others than loopback is an explicit choice
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Largest accepted message, in bytes
    #[arg(long, default_value_t = Config::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// Requests one connection may have queued or running before `overloaded`
    #[arg(long, default_value_t = Config::default().max_pending_per_connection)]
    pub max_pending_per_connection: usize,
    /// Requests all connections may have queued or running before `overloaded`
    #[arg(long, default_value_t = Config::default().max_pending_total)]
    pub max_pending: usize,
    /// Connections served at once
    #[arg(long, default_value_t = Config::default().max_connections)]
    pub max_connections: usize,
    /// Deadline of one jobber call, e.g. 500ms or 10s
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub jobber_timeout: Duration,
    /// Attempts of a request whose jobber answers `retry`, the first included
    #[arg(long, default_value_t = Config::default().max_attempts)]
    pub max_attempts: u32,
    /// Log the queue length per type at this interval, e.g. 5s
    #[arg(long, value_parser = humantime::parse_duration)]
    pub queue_report: Option<Duration>,
    /// Folder of plugin files (*.wasm, *.so), watched for changes; created when missing
    #[arg(long, default_value = "plugins")]
    pub plugins: PathBuf,
    /// Serve no plugins and watch no folder
    #[arg(long, conflicts_with = "plugins")]
    pub no_plugins: bool,
    /// Cache of compiled WASM components [default: $XDG_CACHE_HOME/resman/components or
    /// ~/.cache/resman/components]
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Most linear memory one WASM jobber instance may use, in bytes
    #[arg(long, default_value_t = Config::default().wasm_memory_limit)]
    pub wasm_memory_limit: usize,
    /// Folder of the durable resource pools and plugin stores (journal + snapshot); created
    /// when missing, locked while the host runs
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Keep pools and plugin stores in memory only: lost at exit, answers never wait for
    /// the disk
    #[arg(long, conflicts_with = "data_dir")]
    pub in_memory: bool,
    /// Roll the journal into a fresh snapshot once it holds this many bytes (at least 65536)
    /// and twice the latest snapshot
    #[arg(long, default_value_t = Config::default().journal_roll_bytes)]
    pub journal_roll_bytes: u64,
    /// Worker threads of the async runtime [default: one per core]
    #[arg(long)]
    pub threads: Option<std::num::NonZeroUsize>,
}

impl ServeArgs {
    /// Resolves the flags against the environment (`SOCKET_PORT`) into a validated config.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `SOCKET_PORT` is not a port or a limit cannot work.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let port = match self.port {
            Some(port) => port,
            None => port_from_env(std::env::var("SOCKET_PORT").ok())?,
        };
        let config = Config {
            listen: SocketAddr::new(self.bind, port),
            max_message_bytes: self.max_message_bytes,
            max_pending_per_connection: self.max_pending_per_connection,
            max_pending_total: self.max_pending,
            max_connections: self.max_connections,
            jobber_timeout: self.jobber_timeout,
            max_attempts: self.max_attempts,
            queue_report: self.queue_report,
            cache_dir: Some(self.cache_dir.unwrap_or_else(default_cache_dir)),
            plugins_dir: (!self.no_plugins).then_some(self.plugins),
            wasm_memory_limit: self.wasm_memory_limit,
            data_dir: (!self.in_memory).then_some(self.data_dir),
            journal_roll_bytes: self.journal_roll_bytes,
            ..Config::default()
        };
        config.validate()?;
        Ok(config)
    }
}

fn port_from_env(value: Option<String>) -> Result<u16, ConfigError> {
    match value {
        None => Ok(DEFAULT_PORT),
        Some(text) => text.trim().parse().map_err(|_| ConfigError::BadPort(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_comes_from_env_or_defaults() {
        assert_eq!(port_from_env(None).unwrap(), DEFAULT_PORT);
        assert_eq!(port_from_env(Some(" 5000 ".into())).unwrap(), 5000);
        assert!(matches!(
            port_from_env(Some("http".into())),
            Err(ConfigError::BadPort(_))
        ));
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        let config = Config {
            max_attempts: 0,
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("max_attempts"), "{err}");
        let config = Config {
            journal_roll_bytes: 4096,
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("journal roll size 4096"), "{err}");
        assert!(Config::default().validate().is_ok());
    }
}
