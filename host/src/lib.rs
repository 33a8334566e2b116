//! # resman
//!
//! A resource-manager microservice: clients keep TCP connections open and send small JSON
//! requests; jobbers serve them one request of a type at a time, types in parallel.
//!
//! # Layout
//!
//! The modules follow a request's path through the host:
//!
//! - [`config`]: `.env` and flags → a validated [`Config`].
//! - `server`: the accept loop; `server::connection` (one task per client: frames in, answers
//!   out), `server::parse` (a frame → a [`Request`]), `server::peer` (a connection's outbox).
//! - `coordinator`: the single task that owns the lanes and the plugin registry;
//!   `coordinator::route` (a type's jobber, lane and batch), `coordinator::executor` (runs a
//!   lane's batch off the coordinator and answers the clients), `coordinator::plugins`
//!   (registering, swapping and removing a plugin's types).
//! - `queue`: `Lane`, one FIFO per type with the one-in-flight rule.
//! - [`jobber`]: the [`Handler`] interface of in-process jobbers.
//! - `plugins`: jobbers from files — `wasm` (wasmtime components), `native` (libloading, all
//!   the `unsafe`), `loader`, `watcher` (notify, hot loading).
//! - `pools`: the durable resource pools and plugin stores behind the host API: `state`
//!   (the rules, pure), `journal` (files, recovery), the committer and expiry threads.
//! - [`builtin`]: `ping` and `srvQueuePrint`.
//! - [`bench`](mod@bench): the load generator behind `resman bench`.
//! - [`shutdown`]: SIGINT/SIGTERM as a future.
//!
//! ```no_run
//! # async fn example() -> Result<(), resman::Error> {
//! let server = resman::Host::builder()
//!     .jobber("hello", |_req| async { Ok(serde_json::json!({ "hi": true })) })
//!     .bind()
//!     .await?;
//! server.run(resman::shutdown::signal()).await
//! # }
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod builtin;
pub mod config;
mod coordinator;
mod error;
pub mod jobber;
mod plugins;
mod pools;
mod queue;
mod server;
pub mod shutdown;

pub use config::{Config, ServeArgs};
pub use error::Error;
pub use jobber::{Handler, JobError, JobResult, Request};
pub use pools::StoreError;

use coordinator::{message::Message, Coordinator};
use server::connection::ConnLimits;
use server::Listener;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long connections get at shutdown to write their last answers to clients that are slow
/// to read them, once every running request has finished.
const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The entry point: `Host::builder()`.
#[derive(Debug)]
pub struct Host;

impl Host {
    /// A builder with the default [`Config`] and only the built-in types.
    pub fn builder() -> HostBuilder {
        HostBuilder {
            config: Config::default(),
            jobbers: Vec::new(),
        }
    }
}

/// Collects the configuration and the in-process jobbers, then binds.
pub struct HostBuilder {
    config: Config,
    jobbers: Vec<(Arc<str>, Arc<dyn Handler>)>,
}

impl HostBuilder {
    /// Serves with `config` instead of the defaults.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Registers `handler` as the jobber of request type `kind`.
    pub fn jobber(mut self, kind: impl Into<String>, handler: impl Handler) -> Self {
        let kind: String = kind.into();
        self.jobbers.push((Arc::from(kind), Arc::new(handler)));
        self
    }

    /// Validates the configuration and binds the listening socket.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a limit that cannot work, [`Error::DuplicateType`] for a type
    /// registered twice or a built-in type claimed, [`Error::Bind`] when the address is taken.
    pub async fn bind(self) -> Result<Server, Error> {
        self.config.validate()?;
        let mut jobbers = self.jobbers;
        for (i, (kind, _)) in jobbers.iter().enumerate() {
            let claimed_before = jobbers[..i].iter().any(|(other, _)| other == kind);
            if claimed_before || builtin::RESERVED.contains(&kind.as_ref()) {
                return Err(Error::DuplicateType(kind.to_string()));
            }
        }
        jobbers.push((Arc::from(builtin::PING), builtin::ping()));
        let addr = self.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let pools = open_pools(&self.config).await?;
        let (to_coordinator, inbox) = tokio::sync::mpsc::unbounded_channel();
        let watcher = match self.config.plugins_dir.clone() {
            Some(dir) => Some(start_plugins(dir, &self.config, to_coordinator.clone()).await?),
            None => None,
        };
        Ok(Server {
            listener,
            pools,
            config: self.config,
            jobbers,
            to_coordinator,
            inbox,
            _watcher: watcher,
        })
    }
}

/// Loads the plugins folder (creating it when missing) before the host serves, then watches
/// it. Loading compiles, so it runs on a blocking thread.
async fn start_plugins(
    dir: std::path::PathBuf,
    config: &Config,
    coordinator: tokio::sync::mpsc::UnboundedSender<Message>,
) -> Result<plugins::watcher::Watcher, Error> {
    let loader_config = plugins::loader::LoaderConfig {
        cache_dir: config.cache_dir.clone(),
        memory_limit_bytes: config.wasm_memory_limit,
    };
    let started = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        let loader = plugins::loader::Loader::new(&loader_config).map_err(|err| err.to_string())?;
        plugins::watcher::start(&dir, Arc::new(loader), coordinator).map_err(|err| err.to_string())
    });
    started
        .await
        .map_err(|err| Error::Plugins(format!("plugin start-up panicked: {err}")))?
        .map_err(Error::Plugins)
}

/// Opens the pools' data folder (recovering what it holds), or pools in memory without one.
async fn open_pools(config: &Config) -> Result<Arc<pools::Pools>, Error> {
    let Some(dir) = config.data_dir.clone() else {
        return Ok(pools::Pools::in_memory());
    };
    let sizes = pools::Sizes::rolling_at(config.journal_roll_bytes);
    tokio::task::spawn_blocking(move || pools::Pools::open(&dir, sizes))
        .await
        .expect("opening the data folder does not panic")
        .map_err(Error::Store)
}

/// A bound host, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    pools: Arc<pools::Pools>,
    config: Config,
    jobbers: Vec<(Arc<str>, Arc<dyn Handler>)>,
    to_coordinator: tokio::sync::mpsc::UnboundedSender<Message>,
    /// Holds the plugins found at start-up, ahead of any request.
    inbox: tokio::sync::mpsc::UnboundedReceiver<Message>,
    /// Watches the plugins folder while the server lives.
    _watcher: Option<plugins::watcher::Watcher>,
}

impl Server {
    /// The address the host listens on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops accepting,
    /// answers queued requests `shutting_down`, lets running jobbers finish and their answers
    /// reach the clients, closes the connections, and returns.
    ///
    /// # Errors
    ///
    /// None at present; the signature leaves room for fatal serving errors.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let addr = self.local_addr();
        let config = self.config;
        let (to_coordinator, inbox) = (self.to_coordinator, self.inbox);
        let drained = CancellationToken::new();
        let gauge = Arc::<server::peer::Gauge>::default();
        let coordinator = Coordinator::new(
            inbox,
            to_coordinator.clone(),
            self.jobbers,
            gauge.clone(),
            self.pools,
            &config,
        );
        let coordinator = tokio::spawn(coordinator.run(drained.clone()));
        let listener = Listener {
            listener: self.listener,
            coordinator: to_coordinator.clone(),
            limits: ConnLimits {
                max_message_bytes: config.max_message_bytes,
                max_pending_per_connection: config.max_pending_per_connection,
                max_pending_total: config.max_pending_total,
            },
            max_connections: config.max_connections,
            gauge,
            drained,
            tasks: TaskTracker::new(),
        };
        tracing::info!(%addr, "listening");
        tokio::select! {
            _ = listener.accept_loop() => {}
            _ = shutdown => {}
        }
        tracing::info!("shutdown begun: no new connections; finishing running requests");
        let tasks = listener.tasks.clone();
        drop(listener);
        let _ = to_coordinator.send(Message::Shutdown);
        if coordinator.await.is_err() {
            tracing::error!("the coordinator panicked during shutdown");
        }
        tasks.close();
        if tokio::time::timeout(FLUSH_GRACE, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?FLUSH_GRACE, "some clients did not read their answers; closing them");
        }
        drop(self._watcher);
        tracing::info!("shutdown finished");
        Ok(())
    }
}
