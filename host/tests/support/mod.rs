//! Support for tests of the `resman` binary: a `resman serve` child process whose address is
//! read from its "listening" log line.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use resman_sdk::client::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn resman() -> Command {
    Command::new(env!("CARGO_BIN_EXE_resman"))
}

/// A `resman serve` child process; killed if the test fails before stopping it.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Served {
    pub fn start(dir: &Path, args: &[&str]) -> Served {
        Served::start_with(dir, args, |_| {})
    }

    /// A host on port 0 serving `dir/plugins`, with its data in `dir/data` and its compiled
    /// plugins in `dir/cache`, rolling journals at `roll_bytes`; `configure` is applied to
    /// the command first.
    pub fn durable(dir: &Path, roll_bytes: u64, configure: impl FnOnce(&mut Command)) -> Served {
        let arg = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let (plugins, data, cache) = (arg("plugins"), arg("data"), arg("cache"));
        let roll_bytes = roll_bytes.to_string();
        let args = [
            "--port",
            "0",
            "--plugins",
            &plugins,
            "--data-dir",
            &data,
            "--cache-dir",
            &cache,
            "--journal-roll-bytes",
            &roll_bytes,
        ];
        Served::start_with(dir, &args, configure)
    }

    /// [`start`](Self::start), with `configure` applied to the command first.
    pub fn start_with(dir: &Path, args: &[&str], configure: impl FnOnce(&mut Command)) -> Served {
        let mut command = resman();
        command
            .current_dir(dir)
            .args(["--log-format", "json", "serve"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("resman starts");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(DEADLINE)
                .expect("resman logs that it listens");
            let Ok(log) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if log["fields"]["message"] == "listening" {
                let addr = log["fields"]["addr"].as_str().expect("addr field");
                break addr.parse().expect("addr is a socket address");
            }
        };
        Served { child, addr }
    }

    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.expect("kill runs").success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "resman did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Served {
    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("kill works");
        self.child.wait().expect("wait works");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plugin built by `scripts/build-plugins.sh` (debug).
pub fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("plugins/debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh",
        path.display()
    );
    path
}

/// Makes `dir/plugins` holding the `proxy-pool` plugin.
pub fn with_proxy_pool(dir: &Path) {
    std::fs::create_dir(dir.join("plugins")).expect("plugins folder");
    std::fs::copy(
        artifact("proxy-pool.wasm"),
        dir.join("plugins/proxy-pool.wasm"),
    )
    .expect("copy the plugin");
}

pub async fn connect(served: &Served) -> Client {
    Client::builder()
        .timeout(DEADLINE)
        .connect(served.addr)
        .await
        .expect("connects")
}

/// Waits until the `proxy-pool` plugin serves (it loads as the host starts).
pub async fn until_served(client: &Client) {
    until_answered(client, "proxyStatus").await;
}

/// Waits until a request of type `kind` is answered, which it is once the plugin that
/// handles it has loaded.
pub async fn until_answered(client: &Client, kind: &str) {
    let started = Instant::now();
    while let Err(err) = client.request(kind, json!({})).await {
        assert!(
            started.elapsed() < DEADLINE,
            "{kind} was never answered: {err}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
