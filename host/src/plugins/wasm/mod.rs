//! WASM plugins: components of the `jobber` world (`sdk/wit/resman.wit`), run by wasmtime.
//!
//! One [`WasmRuntime`] per host owns the engine, the linker (WASI p2 granting nothing, plus
//! the `host` interface) and the epoch ticker. Loading a file compiles it once (or reads the
//! compiled artifact from the on-disk cache), checks it implements the world, asks it for its
//! request types, and keeps an `InstancePre`, so compile and link costs never reach the
//! request path; each instance is then a fresh `Store` plus instantiation.
//!
//! Sandbox: no preopened folders, environment, network or inherited stdio; linear memory is
//! capped per store; every call runs under an epoch deadline. The deadline interrupts guest
//! code only: a guest waiting in a host call (a WASI sleep, say) is interrupted once it is
//! back in its own code.
//!
//! Calls are async (wasmtime runs the guest on a fiber): a lane's batch runs as a task on the
//! server's runtime, the guest yields to the runtime at every epoch tick, and a waiting
//! acquire awaits instead of blocking. So a WASM call costs no thread hop, its answer wakes
//! the connection from inside the runtime, and a guest that spins holds a worker for at most
//! one tick at a time. Loading and the tests drive calls to completion with [`block_on`].
//! Reading the compiled cache is the host's one `unsafe` outside `native.rs`: wasmtime cannot
//! verify an artifact, so the cache folder must hold only what this host wrote.

use super::{
    CallOutcome, Instance, InstanceFactory, LoadError, LoadedPlugin, PluginKind, PluginRequest,
};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{
    Component, ComponentExportIndex, HasSelf, Linker, ResourceTable, TypedFunc,
};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "jobber",
        exports: { default: async },
    });
}

mod batch;
mod cache;
mod lower;
mod pools_api;

pub(crate) use batch::{Feed, Handout};

use bindings::resman::jobber::host::{self as host_api, Level};
use bindings::resman::jobber::store as store_api;
use bindings::resman::jobber::types::{self as types_api, JobError, Request};
use bindings::{Jobber, JobberPre};

/// How often the ticker advances the engine's epoch: the resolution of every deadline.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The deadline for instantiating a component and for its `handles` export at load time.
const SETUP_DEADLINE: Duration = Duration::from_secs(5);

/// Settings of the WASM runtime.
#[derive(Clone, Debug)]
pub(crate) struct WasmConfig {
    /// The most linear memory one instance may use, all its memories together; growing past
    /// it traps (default 64 MiB).
    pub(crate) memory_limit_bytes: usize,
    /// Where compiled components are cached across restarts; the folder must be private to
    /// this host, which trusts every artifact it finds there.
    pub(crate) cache_dir: Option<PathBuf>,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            memory_limit_bytes: 64 * 1024 * 1024,
            cache_dir: None,
        }
    }
}

/// The engine, linker and epoch ticker shared by every WASM plugin of the host.
pub(crate) struct WasmRuntime {
    engine: Engine,
    linker: Linker<StoreState>,
    config: WasmConfig,
    /// Names this engine's compiled artifacts in the cache, so no other engine reads them.
    compat_key: String,
    /// Shared with every factory: deadlines work as long as any plugin can run.
    ticker: Arc<EpochTicker>,
}

impl WasmRuntime {
    /// Builds the engine and linker, creates the cache folder and starts the epoch ticker.
    ///
    /// # Errors
    ///
    /// [`LoadError`] when the engine cannot be configured on this platform, the cache folder
    /// cannot be created, or the ticker thread cannot start.
    pub(crate) fn new(config: WasmConfig) -> Result<Self, LoadError> {
        let runtime_error = |reason: String| LoadError::Invalid {
            path: PathBuf::from("<wasm runtime>"),
            reason,
        };
        let engine = Engine::new(&engine_config())
            .map_err(|err| runtime_error(format!("cannot start the engine: {err:#}")))?;
        let linker = linker(&engine)
            .map_err(|err| runtime_error(format!("cannot link the host API: {err:#}")))?;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| LoadError::Io {
                path: dir.clone(),
                what: "cannot create the compiled-component cache folder",
                source,
            })?;
        }
        let ticker = EpochTicker::start(engine.clone()).map_err(|source| LoadError::Io {
            path: PathBuf::from("<wasm runtime>"),
            what: "cannot start the epoch ticker thread",
            source,
        })?;
        Ok(WasmRuntime {
            compat_key: compat_key(&engine),
            engine,
            linker,
            config,
            ticker: Arc::new(ticker),
        })
    }

    /// Loads a component: compiles it (or reads it from the cache), checks it implements the
    /// `jobber` world, and asks a fresh instance for its request types.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming `path` when the file cannot be read, is not a component of the
    /// world, traps or runs past [`SETUP_DEADLINE`] in `handles`, or declares no valid types.
    pub(crate) fn load(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let (bytes, hash) = super::read_plugin(path)?;
        let (component, from_cache) = self.compile(path, &bytes, &hash)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(JobberPre::new)
            .map_err(|err| not_a_jobber(path, &err))?;
        let mut factory = WasmFactory {
            path: path.to_owned(),
            file: file_name(path),
            serve_batch: component.get_export_index(None, batch::SERVE_BATCH),
            pre,
            types: Arc::new([]),
            memory_limit_bytes: self.config.memory_limit_bytes,
            _ticker: Arc::clone(&self.ticker),
        };
        let types = super::check_types(path, factory.declared_types()?)?;
        factory.types = types.clone().into();
        Ok(LoadedPlugin {
            path: path.to_owned(),
            kind: PluginKind::Wasm,
            types,
            hash,
            loaded_at: SystemTime::now(),
            load_time: started.elapsed(),
            from_cache,
            factory: Arc::new(factory),
        })
    }

    /// The compiled component and whether it came from the cache.
    fn compile(
        &self,
        path: &Path,
        bytes: &[u8],
        hash: &str,
    ) -> Result<(Component, bool), LoadError> {
        let Some(dir) = &self.config.cache_dir else {
            return Ok((self.compile_fresh(path, bytes)?, false));
        };
        let cached = dir.join(format!("{hash}-{}.cwasm", self.compat_key));
        if let Some(component) = self.read_cached(&cached) {
            return Ok((component, true));
        }
        let component = self.compile_fresh(path, bytes)?;
        self.write_cached(&component, &cached);
        Ok((component, false))
    }

    fn compile_fresh(&self, path: &Path, bytes: &[u8]) -> Result<Component, LoadError> {
        Component::new(&self.engine, bytes).map_err(|err| not_a_jobber(path, &err))
    }

    /// The cached artifact, if there is a readable one; an unreadable one is deleted.
    fn read_cached(&self, cached: &Path) -> Option<Component> {
        if !cached.is_file() {
            return None;
        }
        // SAFETY: deserializing trusts the file to be an artifact wasmtime produced. Every
        // file named like this in the cache folder was written by `write_cached` (the folder
        // is private to this host, see `WasmConfig::cache_dir`), and written atomically
        // (synced temporary file, then rename), so it is never seen half-written; its name
        // carries this engine's compatibility key, and wasmtime checks that key again.
        let result = unsafe { Component::deserialize_file(&self.engine, cached) };
        match result {
            Ok(component) => {
                cache::touch(cached);
                Some(component)
            }
            Err(err) => {
                tracing::warn!(cache = %cached.display(), error = %format!("{err:#}"),
                    "compiled component unreadable; deleting it and compiling again");
                let _ = std::fs::remove_file(cached);
                None
            }
        }
    }

    /// Caches `component`; a failure only costs a compile next time, so it is logged.
    fn write_cached(&self, component: &Component, cached: &Path) {
        let written = component
            .serialize()
            .map_err(|err| format!("{err:#}"))
            .and_then(|bytes| super::write_atomically(cached, &bytes).map_err(|e| e.to_string()));
        if let Err(error) = written {
            tracing::warn!(cache = %cached.display(), %error,
                "cannot cache the compiled component; it will be compiled again next time");
            return;
        }
        let Some(dir) = cached.parent() else { return };
        match cache::prune(dir, cache::BUDGET_BYTES, cached) {
            Ok(pruned) if pruned.files > 0 => tracing::info!(cache = %dir.display(),
                files = pruned.files, bytes = pruned.bytes,
                "removed the least recently used compiled components"),
            Ok(_) => {}
            Err(error) => tracing::warn!(cache = %dir.display(), %error,
                "cannot prune the compiled-component cache"),
        }
    }
}

/// Cranelift, components, async calls, epochs. Instances use on-demand allocation, not the
/// pooling allocator: each lane keeps its instance for many calls, so faster instantiation
/// would buy little, and pooling needs fixed totals (instances, memories) decided up front.
fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .strategy(wasmtime::Strategy::Cranelift);
    config
}

/// The linker every component is instantiated with: WASI p2 (async) and the host's interfaces.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // `pools` is linked by hand (see `pools_api`); `bindgen!`'s traits serve the rest.
    host_api::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |state| state)?;
    store_api::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |state| state)?;
    pools_api::add_to_linker(&mut linker)?;
    batch::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// A short key for this engine's artifact format. `DefaultHasher` is stable within one build
/// of the host; another build may miss the cache but never reads a wrong artifact, since
/// wasmtime also checks compatibility when deserializing.
fn compat_key(engine: &Engine) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn not_a_jobber(path: &Path, err: &wasmtime::Error) -> LoadError {
    LoadError::Invalid {
        path: path.to_owned(),
        reason: format!("not a WebAssembly component of the resman jobber world: {err:#}"),
    }
}

fn file_name(path: &Path) -> Arc<str> {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into()
}

/// What a trap says, without the wasm backtrace.
fn describe(err: &wasmtime::Error) -> String {
    match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    }
}

/// The data of one store: the sandboxed WASI context and what the `host` interface needs.
struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    cap: MemoryCap,
    /// The plugin's file name, for its log lines.
    file: Arc<str>,
    /// The types the plugin declared, in the order `handles` returned them (empty while
    /// loading): a request's `kind` is its position here.
    types: Arc<[String]>,
    /// The position in `types` of the request type being served, for its log lines.
    kind: u32,
    /// When the call under way must end; checked at every epoch tick. A `serve-batch`
    /// call moves it to each request's deadline as it hands the request out.
    deadline: Instant,
    /// The batch a `serve-batch` call under way serves; `None` outside one.
    feed: Option<Box<dyn Feed>>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host_api::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        use resman_sdk::native::level;
        let level = match level {
            Level::Trace => level::TRACE,
            Level::Debug => level::DEBUG,
            Level::Info => level::INFO,
            Level::Warn => level::WARN,
            Level::Error => level::ERROR,
        };
        let kind = usize::try_from(self.kind)
            .ok()
            .and_then(|at| self.types.get(at))
            .map_or("", String::as_str);
        super::log_from_plugin(level, &self.file, kind, &message);
    }

    fn now_ms(&mut self) -> u64 {
        super::now_ms()
    }
}

impl types_api::Host for StoreState {}

/// The memory cap of one store: all the linear memories of its instance together (a
/// component made of several modules has one per module), with a message that says so.
struct MemoryCap {
    limit: usize,
    /// Bytes granted so far, over all memories.
    used: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let used = self.used.saturating_sub(current) + desired;
        if used > self.limit {
            wasmtime::bail!(
                "memory cap of {} bytes reached (the guest asked for {used} in all)",
                self.limit
            );
        }
        self.used = used;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|maximum| desired <= maximum))
    }
}

/// Makes instances of one loaded component.
pub(crate) struct WasmFactory {
    path: PathBuf,
    file: Arc<str>,
    /// Linked and type-checked once at load.
    pre: JobberPre<StoreState>,
    /// The types `handles` returned, in its order (what a request's `kind` indexes).
    types: Arc<[String]>,
    /// The `serve-batch` export, when the component is of the world `jobber-batched`.
    serve_batch: Option<ComponentExportIndex>,
    memory_limit_bytes: usize,
    /// Keeps deadlines ticking while this plugin can run, even after the runtime is gone.
    _ticker: Arc<EpochTicker>,
}

impl WasmFactory {
    /// A fresh instance, for a lane's task.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming the file when the component's start traps or runs too long.
    pub(crate) async fn instantiate_async(&self) -> Result<WasmInstance, LoadError> {
        self.instance()
            .await
            .map_err(|err| self.invalid(format!("cannot instantiate: {}", describe(&err))))
    }

    async fn instance(&self) -> wasmtime::Result<WasmInstance> {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = StoreState {
            wasi,
            table: ResourceTable::new(),
            cap: MemoryCap {
                limit: self.memory_limit_bytes,
                used: 0,
            },
            file: Arc::clone(&self.file),
            types: Arc::clone(&self.types),
            kind: u32::MAX,
            deadline: Instant::now() + SETUP_DEADLINE,
            feed: None,
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.cap);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Let the worker serve others; resume at the next tick's check.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store.set_epoch_deadline(1);
        let instance = self
            .pre
            .instance_pre()
            .instantiate_async(&mut store)
            .await?;
        let jobber = Jobber::new(&mut store, &instance)?;
        // Checked against `() -> ()` here, so a wrong type fails the load (whose first
        // instance is made for `handles`), not a call.
        let serve_batch = match &self.serve_batch {
            Some(export) => Some(instance.get_typed_func::<(), ()>(&mut store, export)?),
            None => None,
        };
        let request = Request {
            kind: 0,
            query_index: 0.0,
            client_id: 0,
            attempt: 0,
            payload: String::new(),
        };
        Ok(WasmInstance {
            store,
            jobber,
            serve_batch,
            request,
        })
    }

    /// Calls `handles` once, on an instance made for the purpose.
    fn declared_types(&self) -> Result<Vec<String>, LoadError> {
        block_on(async {
            let mut instance = self.instantiate_async().await?;
            instance.store.data_mut().deadline = Instant::now() + SETUP_DEADLINE;
            instance.store.set_epoch_deadline(1);
            let store = &mut instance.store;
            instance.jobber.call_handles(store).await.map_err(|err| {
                self.invalid(match err.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => format!("`handles` ran past {SETUP_DEADLINE:?}"),
                    _ => format!("`handles` trapped: {}", describe(&err)),
                })
            })
        })
    }

    /// Whether the component serves batches: it exports `serve-batch` (the world
    /// `jobber-batched`).
    pub(crate) fn serves_batches(&self) -> bool {
        self.serve_batch.is_some()
    }

    fn invalid(&self, reason: String) -> LoadError {
        LoadError::Invalid {
            path: self.path.clone(),
            reason,
        }
    }
}

impl InstanceFactory for WasmFactory {
    fn instantiate(&self) -> Result<Box<dyn Instance>, LoadError> {
        let instance = block_on(self.instantiate_async())?;
        Ok(Box::new(instance))
    }

    fn wasm(&self) -> Option<&WasmFactory> {
        Some(self)
    }
}

/// One live component instance in its own store. After a call that trapped (deadline and
/// memory cap included) it must not be called again: the caller throws it away, as
/// [`CallOutcome::poisons_instance`] says.
pub(crate) struct WasmInstance {
    store: Store<StoreState>,
    jobber: Jobber,
    /// The `serve-batch` export of a component of the world `jobber-batched`.
    serve_batch: Option<TypedFunc<(), ()>>,
    /// The request being lowered into the guest, reused from call to call.
    request: Request,
}

impl WasmInstance {
    /// Serves one request by `due`; the guest yields to the runtime at every tick.
    pub(crate) async fn call_async(
        &mut self,
        request: &PluginRequest<'_>,
        due: Instant,
    ) -> CallOutcome {
        let state = self.store.data_mut();
        // A lane's index comes from this plugin's own list, so it needs no check by name.
        let position = match request.kind_index {
            Some(at) => usize::try_from(at)
                .ok()
                .filter(|&at| at < state.types.len()),
            None => state
                .types
                .iter()
                .position(|declared| declared == request.kind),
        };
        debug_assert!(position.is_none_or(|at| state.types[at] == request.kind));
        let Some(kind) = position.and_then(|at| u32::try_from(at).ok()) else {
            return CallOutcome::Fail(format!(
                "`{}` is not a type this plugin declared",
                request.kind
            ));
        };
        state.kind = kind;
        state.deadline = due;
        // The payload keeps its capacity from call to call: lowering copies it into the
        // guest anyway, so building it costs no allocation once warm.
        let lowered = &mut self.request;
        lowered.kind = state.kind;
        lowered.query_index = request.query_index.as_f64().unwrap_or(f64::NAN);
        lowered.payload.clear();
        lowered.payload.push_str(request.payload);
        lowered.client_id = request.client_id;
        lowered.attempt = request.attempt;
        self.store.set_epoch_deadline(1);
        match self
            .jobber
            .call_handle(&mut self.store, &self.request)
            .await
        {
            Ok(answer) => answer_outcome(answer),
            Err(err) => failed(&err),
        }
    }

    /// Serves requests of the type at position `kind` of the plugin's types, taken from
    /// `feed`, in one `serve-batch` call; `idle_due` bounds the guest's run before its first
    /// request. Answers the feed back, and how the call ended: `Err` with `Crashed` or
    /// `TimedOut` when it trapped, which ends the request still out, if any, and the
    /// instance. A component without the export answers `Ok` at once, having taken nothing.
    pub(crate) async fn serve_batch<F: Feed>(
        &mut self,
        kind: u32,
        feed: F,
        idle_due: Instant,
    ) -> (F, Result<(), CallOutcome>) {
        let Some(serve_batch) = self.serve_batch else {
            return (feed, Ok(()));
        };
        let state = self.store.data_mut();
        state.kind = kind;
        state.deadline = idle_due;
        state.feed = Some(Box::new(feed));
        self.store.set_epoch_deadline(1);
        let called = serve_batch.call_async(&mut self.store, ()).await;
        let feed: Box<dyn std::any::Any> =
            self.store.data_mut().feed.take().expect("kept by the call");
        let feed = *feed.downcast::<F>().expect("the feed put in above");
        (feed, called.map_err(|err| failed(&err)))
    }
}

/// How a call that answered ended.
fn answer_outcome(answer: Result<String, JobError>) -> CallOutcome {
    match answer {
        Ok(json) => CallOutcome::Done(json),
        Err(JobError::Retry(reason)) => CallOutcome::Retry(reason),
        Err(JobError::Fail(reason)) => CallOutcome::Fail(reason),
        Err(JobError::Reject(rejection)) => CallOutcome::Reject {
            code: rejection.code,
            message: rejection.message,
        },
    }
}

/// How a call that trapped ended: past its deadline, or crashed.
fn failed(err: &wasmtime::Error) -> CallOutcome {
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        CallOutcome::TimedOut
    } else {
        CallOutcome::Crashed(describe(err))
    }
}

impl Instance for WasmInstance {
    fn call(&mut self, request: &PluginRequest<'_>, deadline: Duration) -> CallOutcome {
        block_on(self.call_async(request, Instant::now() + deadline))
    }
}

/// Drives a WASM future to completion on this thread: for loading and tests, which run
/// outside the runtime's workers (on the runtime's blocking threads or threads of their own).
fn block_on<F: Future>(future: F) -> F::Output {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        return runtime.block_on(future);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime can be built")
        .block_on(future)
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`]; stopped and joined on
/// drop.
struct EpochTicker {
    /// Dropping it wakes the thread, which then ends; nothing is ever sent.
    stop: Option<mpsc::Sender<std::convert::Infallible>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("resman-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    use super::super::test_support::{
        assert_counts_per_instance, assert_verdicts_pass_through, plugin_file,
    };

    /// One runtime for the tests that need no cache, capped small enough for `alloc`.
    fn runtime() -> &'static WasmRuntime {
        static RUNTIME: OnceLock<WasmRuntime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            WasmRuntime::new(WasmConfig {
                memory_limit_bytes: 32 * 1024 * 1024,
                cache_dir: None,
            })
            .expect("the runtime starts")
        })
    }

    /// `misbehave.wasm`, compiled once for all tests.
    fn misbehave() -> Option<&'static LoadedPlugin> {
        static MISBEHAVE: OnceLock<LoadedPlugin> = OnceLock::new();
        let path = plugin_file("misbehave.wasm")?;
        Some(MISBEHAVE.get_or_init(|| runtime().load(&path).expect("misbehave.wasm loads")))
    }

    fn call(instance: &mut dyn Instance, kind: &str) -> CallOutcome {
        super::super::test_support::call(instance, kind, 1)
    }

    fn load_error(runtime: &WasmRuntime, path: &Path) -> String {
        runtime.load(path).expect_err("the load fails").to_string()
    }

    #[test]
    fn the_instances_linked_by_hand_name_the_wit_package_version() {
        let wit = include_str!("../../../../sdk/wit/resman.wit");
        for (linked, interface) in [(pools_api::POOLS, "pools"), (batch::BATCH, "batch")] {
            let (package, version) = linked.split_once('@').expect("a versioned name");
            let package = package.strip_suffix(&format!("/{interface}"));
            let package = package.expect("the interface's name");
            assert!(wit.contains(&format!("package {package}@{version};")));
            assert!(wit.contains(&format!("interface {interface} {{")));
        }
        assert!(wit.contains(&format!("export {}: func();", batch::SERVE_BATCH)));
    }

    /// Why a call of `kind` on a fresh `misbehave.wasm` instance crashed, as it must.
    fn crash_of(kind: &str) -> Option<String> {
        let mut instance = misbehave()?.factory.instantiate().unwrap();
        match call(instance.as_mut(), kind) {
            CallOutcome::Crashed(reason) => Some(reason),
            other => panic!("{kind} crashes: {other:?}"),
        }
    }

    #[test]
    fn counter_counts_per_instance_and_a_new_instance_starts_at_zero() {
        let Some(path) = plugin_file("counter.wasm") else {
            return;
        };
        let plugin = runtime().load(&path).unwrap();
        assert_eq!(plugin.hash.len(), 64);
        assert_counts_per_instance(&plugin, PluginKind::Wasm);
    }

    #[test]
    fn verdicts_and_answers_pass_through() {
        let Some(plugin) = misbehave() else { return };
        assert!(plugin.types.iter().any(|kind| kind == "misbehave.spin"));
        let mut instance = plugin.factory.instantiate().unwrap();
        assert_verdicts_pass_through(instance.as_mut(), 1);
    }

    #[test]
    fn a_trap_crashes_the_call_and_a_new_instance_works() {
        let Some(plugin) = misbehave() else { return };
        let mut instance = plugin.factory.instantiate().unwrap();
        let outcome = call(instance.as_mut(), "misbehave.trap");
        let CallOutcome::Crashed(reason) = &outcome else {
            panic!("a trap crashes: {outcome:?}")
        };
        assert!(reason.contains("unreachable"), "{reason}");
        assert!(outcome.poisons_instance());
        let mut fresh = plugin.factory.instantiate().unwrap();
        assert!(matches!(
            call(fresh.as_mut(), "misbehave.echo"),
            CallOutcome::Done(_)
        ));
    }

    #[test]
    fn a_type_the_plugin_did_not_declare_fails_and_keeps_the_instance() {
        let Some(plugin) = misbehave() else { return };
        let mut instance = plugin.factory.instantiate().unwrap();
        let outcome = call(instance.as_mut(), "cntResponse");
        assert_eq!(
            outcome,
            CallOutcome::Fail("`cntResponse` is not a type this plugin declared".into())
        );
        assert!(!outcome.poisons_instance());
        assert!(matches!(
            call(instance.as_mut(), "misbehave.echo"),
            CallOutcome::Done(_)
        ));
    }

    #[test]
    fn a_guest_that_spins_past_its_deadline_times_out() {
        let Some(plugin) = misbehave() else { return };
        let mut instance = plugin.factory.instantiate().unwrap();
        let spin = PluginRequest {
            kind: "misbehave.spin",
            kind_index: None,
            query_index: &serde_json::Number::from(7),
            client_id: 42,
            attempt: 1,
            payload: "null",
        };
        let outcome = instance.call(&spin, Duration::from_millis(200));
        assert_eq!(outcome, CallOutcome::TimedOut);
    }

    /// A batch of `misbehave.as-told` requests, one per payload, each due `timeout` after
    /// it is handed out; records what the guest answered.
    struct ListFeed {
        kind: u32,
        payloads: std::collections::VecDeque<&'static str>,
        timeout: Duration,
        out: Option<&'static str>,
        answers: Vec<(&'static str, CallOutcome)>,
    }

    impl Feed for ListFeed {
        fn next(&mut self, answer: Option<CallOutcome>) -> Result<Option<Handout>, String> {
            match (self.out.take(), answer) {
                (Some(payload), Some(answer)) => self.answers.push((payload, answer)),
                (None, None) => {}
                (out, answer) => panic!("the SDK skipped or made up an answer: {out:?} {answer:?}"),
            }
            let Some(payload) = self.payloads.pop_front() else {
                return Ok(None);
            };
            self.out = Some(payload);
            Ok(Some(Handout {
                kind: self.kind,
                query_index: 2.5,
                client_id: u64::MAX - 1,
                attempt: 2,
                payload: Some(payload.into()),
                due: Instant::now() + self.timeout,
            }))
        }
    }

    /// Serves `payloads` as batches until none is left, a fresh instance after each trap:
    /// what the guest answered, and how each call that trapped ended.
    fn serve_as_told(
        payloads: &[&'static str],
        timeout: Duration,
    ) -> (Vec<(&'static str, CallOutcome)>, Vec<CallOutcome>) {
        let plugin = misbehave().expect("checked by the caller");
        let factory = plugin.factory.wasm().expect("a WASM plugin");
        assert!(factory.serves_batches(), "the SDK exports `serve-batch`");
        let kind = plugin
            .types
            .iter()
            .position(|kind| kind == "misbehave.as-told");
        let mut feed = ListFeed {
            kind: u32::try_from(kind.expect("declared")).unwrap(),
            payloads: payloads.iter().copied().collect(),
            timeout,
            out: None,
            answers: Vec::new(),
        };
        block_on(async move {
            let mut traps = Vec::new();
            while !feed.payloads.is_empty() {
                let mut instance = factory.instantiate_async().await.unwrap();
                let idle_due = Instant::now() + timeout;
                let (back, ended) = instance.serve_batch(feed.kind, feed, idle_due).await;
                feed = back;
                if let Err(trapped) = ended {
                    let out = feed
                        .out
                        .take()
                        .expect("a trap ends the request that is out");
                    traps.push(trapped);
                    feed.answers
                        .push((out, CallOutcome::Fail("trapped".into())));
                }
            }
            (feed.answers, traps)
        })
    }

    fn echoed(payload: &str) -> CallOutcome {
        CallOutcome::Done(format!(r#"{{"attempt":2,"payload":"{payload}"}}"#))
    }

    #[test]
    fn a_batch_request_reaches_the_guest_field_by_field() {
        if misbehave().is_none() {
            return;
        }
        let (answers, _) = serve_as_told(&["\"request\"", "\"a\""], Duration::from_secs(5));
        let fields = r#"{"attempt":2,"clientId":18446744073709551614,"kind":"misbehave.as-told","payload":"request","queryIndex":2.5}"#;
        assert_eq!(answers[0].1, CallOutcome::Done(fields.into()));
        assert_eq!(answers[1].1, echoed("a"));
    }

    #[test]
    fn a_batch_is_served_in_one_call_and_a_trap_ends_only_the_request_that_is_out() {
        if misbehave().is_none() {
            return;
        }
        let payloads = [
            "\"a\"",
            "\"retry\"",
            "\"trap\"",
            "\"b\"",
            "\"panic\"",
            "\"c\"",
        ];
        let (answers, traps) = serve_as_told(&payloads, Duration::from_secs(5));
        let answered: Vec<_> = answers.iter().map(|(payload, _)| *payload).collect();
        assert_eq!(answered, payloads, "each request answered once, in order");
        assert_eq!(answers[0].1, echoed("a"));
        assert_eq!(answers[1].1, CallOutcome::Retry("deliberate retry".into()));
        assert_eq!(answers[3].1, echoed("b"));
        assert_eq!(answers[5].1, echoed("c"));
        assert_eq!(traps.len(), 2, "{traps:?}");
        let CallOutcome::Crashed(reason) = &traps[0] else {
            panic!("a trap crashes: {traps:?}")
        };
        assert!(reason.contains("unreachable"), "{reason}");
        assert!(matches!(traps[1], CallOutcome::Crashed(_)), "{traps:?}");
    }

    #[test]
    fn taking_a_batch_request_outside_serve_batch_crashes_the_call() {
        let Some(reason) = crash_of("misbehave.take-another") else {
            return;
        };
        assert!(reason.contains("called outside `serve-batch`"), "{reason}");
    }

    #[test]
    fn a_request_that_spins_in_a_batch_times_out_alone() {
        if misbehave().is_none() {
            return;
        }
        let payloads = ["\"a\"", "\"spin\"", "\"b\""];
        let (answers, traps) = serve_as_told(&payloads, Duration::from_millis(200));
        assert_eq!(answers[0], ("\"a\"", echoed("a")));
        assert_eq!(answers[1].0, "\"spin\"");
        assert_eq!(answers[2], ("\"b\"", echoed("b")));
        assert_eq!(traps, [CallOutcome::TimedOut]);
    }

    #[test]
    fn a_guest_that_grows_past_the_memory_cap_crashes() {
        let Some(reason) = crash_of("misbehave.alloc") else {
            return;
        };
        assert!(reason.contains("memory cap of 33554432 bytes"), "{reason}");
    }

    #[test]
    fn a_file_that_is_not_a_jobber_component_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8]); 3] = [
            ("garbage.wasm", b"this is not WebAssembly"),
            ("module.wasm", b"\0asm\x01\0\0\0"),
            ("empty-component.wasm", b"\0asm\x0d\0\x01\0"),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let message = load_error(runtime(), &path);
            assert!(message.contains(name), "{message}");
            assert!(
                message.contains("not a WebAssembly component of the resman jobber world"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let message = load_error(runtime(), Path::new("/nonexistent/gone.wasm"));
        assert!(
            message.contains("gone.wasm: cannot read the file"),
            "{message}"
        );
    }

    fn cached_runtime(cache: &Path) -> WasmRuntime {
        WasmRuntime::new(WasmConfig {
            cache_dir: Some(cache.to_owned()),
            ..WasmConfig::default()
        })
        .unwrap()
    }

    fn cache_files(cache: &Path) -> Vec<PathBuf> {
        let entries = std::fs::read_dir(cache).unwrap();
        entries.map(|entry| entry.unwrap().path()).collect()
    }

    #[test]
    fn a_second_load_comes_from_the_compiled_cache() {
        let Some(path) = plugin_file("counter.wasm") else {
            return;
        };
        let cache = tempfile::tempdir().unwrap();
        let runtime = cached_runtime(cache.path());
        let cold = runtime.load(&path).unwrap();
        assert!(!cold.from_cache);
        let files = cache_files(cache.path());
        assert_eq!(files.len(), 1, "one artifact, no temporary left: {files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&cold.hash) && name.ends_with(".cwasm"),
            "{name}"
        );

        let warm = cached_runtime(cache.path()).load(&path).unwrap();
        assert!(warm.from_cache);
        eprintln!(
            "counter.wasm: cold {:?}, cached {:?}",
            cold.load_time, warm.load_time
        );
        let mut instance = warm.factory.instantiate().unwrap();
        let expected = CallOutcome::Done(r#"{"cnt":0}"#.into());
        assert_eq!(call(instance.as_mut(), "cntResponse"), expected);
    }

    #[test]
    fn a_corrupt_cache_file_is_replaced_by_a_fresh_compile() {
        let Some(path) = plugin_file("counter.wasm") else {
            return;
        };
        let cache = tempfile::tempdir().unwrap();
        let runtime = cached_runtime(cache.path());
        runtime.load(&path).unwrap();
        let artifact = cache_files(cache.path()).remove(0);
        std::fs::write(&artifact, b"corrupt").unwrap();

        let recovered = runtime.load(&path).unwrap();
        assert!(!recovered.from_cache);
        let mut instance = recovered.factory.instantiate().unwrap();
        let expected = CallOutcome::Done(r#"{"cnt":0}"#.into());
        assert_eq!(call(instance.as_mut(), "cntResponse"), expected);
        assert!(
            runtime.load(&path).unwrap().from_cache,
            "the artifact was rewritten"
        );
    }
}
