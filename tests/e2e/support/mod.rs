//! Test support: a real host on 127.0.0.1:0, raw protocol connections, and waiting on a
//! condition with a deadline instead of sleeping.

use resman::{Config, HostBuilder};
use resman_sdk::frame::Splitter;
use resman_sdk::protocol::Framing;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A config for tests: loopback, any free port.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        ..Config::default()
    }
}

/// A running host; shut down on [`TestHost::shutdown`] or when dropped.
pub struct TestHost {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), resman::Error>>>,
}

impl TestHost {
    /// Starts the host that `builder` describes, on `config` (its `listen` is used as given).
    pub async fn start(builder: HostBuilder, config: Config) -> TestHost {
        let server = builder.config(config).bind().await.expect("host binds");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestHost {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts a host with `builder` on the test config.
    pub async fn with(builder: HostBuilder) -> TestHost {
        TestHost::start(builder, test_config()).await
    }

    /// Asks the host to shut down, without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the host down and waits until `run` has returned.
    pub async fn shutdown(mut self) -> Result<(), resman::Error> {
        self.begin_shutdown();
        let task = self.task.take().expect("shut down once");
        within(task).await.expect("the host task does not panic")
    }

    /// A raw protocol connection to the host.
    pub async fn raw(&self) -> RawConn {
        RawConn::connect(self.addr).await
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// Awaits `future`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("the awaited condition did not happen within the test deadline")
}

/// A connection that speaks the wire protocol byte for byte, for tests of its rules.
pub struct RawConn {
    pub stream: TcpStream,
    splitter: Splitter,
    buf: Vec<u8>,
    framing: Framing,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        RawConn {
            stream,
            splitter: Splitter::with_framing(Framing::Crab),
            buf: Vec::new(),
            framing: Framing::Crab,
        }
    }

    /// Expects answers in newline framing from now on.
    pub fn newline(mut self) -> Self {
        self.framing = Framing::Newline;
        self.splitter = Splitter::with_framing(Framing::Newline);
        self
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("writes");
    }

    /// A request as this connection frames it, for tests that send many in one write.
    pub fn framed(&self, kind: &str, query_index: u64, payload: Value) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(&json!({
            "type": kind, "queryIndex": query_index, "payload": payload
        }))
        .expect("serialises");
        bytes.extend_from_slice(self.framing.terminator());
        bytes
    }

    /// Sends a request in this connection's framing.
    pub async fn send(&mut self, kind: &str, query_index: u64, payload: Value) {
        let bytes = self.framed(kind, query_index, payload);
        self.send_bytes(&bytes).await;
    }

    /// The next message's raw bytes, or `None` if the server closed the connection.
    pub async fn next_raw(&mut self) -> Option<Vec<u8>> {
        within(async {
            loop {
                if let Some(frame) = self.splitter.next_frame(&self.buf) {
                    let body = self.buf[..frame.body_end].to_vec();
                    self.buf.drain(..frame.consumed);
                    return Some(body);
                }
                self.buf.reserve(16 * 1024);
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
    }

    /// The next response, parsed.
    pub async fn next(&mut self) -> Value {
        let raw = self
            .next_raw()
            .await
            .expect("a response before the connection closed");
        serde_json::from_slice(&raw).expect("responses are JSON")
    }

    /// Sends a request and returns its response (no other request may be in flight).
    pub async fn call(&mut self, kind: &str, query_index: u64, payload: Value) -> Value {
        self.send(kind, query_index, payload).await;
        let response = self.next().await;
        assert_eq!(response["queryIndex"], query_index, "{response}");
        response
    }

    /// True once the server has closed the connection (after any remaining answers).
    pub async fn closed(&mut self) -> bool {
        self.next_raw().await.is_none()
    }
}

/// The `code` of an error response.
pub fn code(response: &Value) -> &str {
    response["resultJob"]["code"].as_str().unwrap_or("")
}

/// Where `scripts/build-plugins.sh` put the plugin files built from `plugins/` and
/// `tests/fixtures/`.
pub fn artifact(name: &str) -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("plugins/debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A plugins folder for one test.
pub struct PluginDir {
    pub dir: tempfile::TempDir,
}

impl PluginDir {
    pub fn new() -> PluginDir {
        PluginDir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Puts `bytes` in the folder as `name`, atomically (written beside it under a hidden
    /// name, then renamed), as an operator's deploy script would.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let staging = self.path(&format!(".{name}.partial"));
        std::fs::write(&staging, bytes).expect("write plugin");
        std::fs::rename(&staging, self.path(name)).expect("rename plugin into place");
    }

    /// Drops the built artifact `artifact_name` into the folder as `name`.
    pub fn drop_in(&self, name: &str, artifact_name: &str) {
        self.put(
            name,
            &std::fs::read(artifact(artifact_name)).expect("read artifact"),
        );
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path(name)).expect("remove plugin");
    }

    /// A host config serving this folder, with its compiled cache inside it.
    pub fn config(&self) -> Config {
        Config {
            plugins_dir: Some(self.dir.path().to_owned()),
            cache_dir: Some(self.path(".resman-cache")),
            ..test_config()
        }
    }
}

impl RawConn {
    /// `srvPlugins`' answer.
    pub async fn plugins(&mut self) -> Value {
        self.call("srvPlugins", 900_000, Value::Null).await["resultJob"].clone()
    }

    /// Waits until `condition` holds for the `srvPlugins` listing.
    pub async fn wait_plugins(&mut self, mut condition: impl FnMut(&Value) -> bool) -> Value {
        within(async {
            loop {
                let listing = self.plugins().await;
                if condition(&listing) {
                    return listing;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

/// The entry of `file` in a `srvPlugins` listing.
pub fn listed<'a>(listing: &'a Value, file: &str) -> Option<&'a Value> {
    listing["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["file"] == file)
}

/// The refusal of `file` in a `srvPlugins` listing.
pub fn refused<'a>(listing: &'a Value, file: &str) -> Option<&'a str> {
    listing["refused"]
        .as_array()?
        .iter()
        .find(|p| p["file"] == file)?["error"]
        .as_str()
}
