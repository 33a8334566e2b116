//! Support for tests of the `resman` binary: a `resman serve` child process whose address is
//! read from its "listening" log line.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
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
        let mut child = resman()
            .current_dir(dir)
            .args(["--log-format", "json", "serve"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("resman starts");
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
