//! The `resman` binary as an operator uses it: `serve` (with `.env`, flags and signals),
//! `call` and `bench` against it.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use support::{resman, Served};

fn call(addr: SocketAddr, args: &[&str]) -> (bool, Value) {
    let out = resman()
        .args(["call", "--addr", &addr.to_string()])
        .args(args)
        .output()
        .expect("resman call runs");
    let printed = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "call printed JSON, got {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), printed)
}

#[test]
fn serve_answers_call_and_bench_then_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &["--port", "0"]);
    let (ok, pong) = call(served.addr, &["ping"]);
    assert!(ok && pong["pong"].as_u64().unwrap() >= 1, "{pong}");

    let (ok, refused) = call(served.addr, &["noSuchType", "{\"a\": 1}"]);
    assert!(!ok, "an error answer exits non-zero");
    assert_eq!(refused["code"], "unknown_type");

    let out = resman()
        .args(["bench", "--addr", &served.addr.to_string()])
        .args(["-c", "4", "-P", "8", "-n", "2000", "--json"])
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    assert_eq!(report["requests"], 2000);
    assert_eq!(report["errors"], 0);

    let out = resman()
        .args(["plugins", "--addr", &served.addr.to_string()])
        .output()
        .expect("resman plugins runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("file"),
        "a table header"
    );
    assert!(
        dir.path().join("plugins").is_dir(),
        "the default plugins folder is created"
    );

    let status = served.terminate();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

#[test]
fn serve_takes_its_port_from_dot_env() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    std::fs::write(dir.path().join(".env"), format!("SOCKET_PORT={port}\n")).unwrap();
    let served = Served::start(dir.path(), &[]);
    assert_eq!(served.addr.port(), port);
    assert_eq!(served.terminate().code(), Some(0));
}

#[test]
fn a_limit_that_cannot_work_is_refused_at_start() {
    let out = resman()
        .args(["serve", "--port", "0", "--max-attempts", "0"])
        .output()
        .expect("resman runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_attempts must be at least 1"),
        "{stderr}"
    );
}

/// Starts a host in `dir` with its default data folder, which must refuse to start (exit
/// 2); returns what it said.
fn refused_start(dir: &std::path::Path) -> String {
    let out = resman()
        .current_dir(dir)
        .args(["serve", "--port", "0", "--no-plugins"])
        .output()
        .expect("resman runs");
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `text` is in `stderr` exactly once: named, and not repeated by the error's causes.
fn said_once(stderr: &str, text: &str) {
    assert_eq!(
        stderr.matches(text).count(),
        1,
        "{text:?} once in: {stderr}"
    );
}

#[test]
fn corrupt_pool_data_stops_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("snapshot.json"), b"{\"format\": 1, \"seq\": ").unwrap();
    said_once(&refused_start(dir.path()), "snapshot.json is corrupt");
    let kept = std::fs::read(data.join("snapshot.json")).unwrap();
    assert_eq!(kept, b"{\"format\": 1, \"seq\": ", "never a silent reset");
}

#[test]
fn a_folder_of_a_newer_format_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &["--no-plugins"]);
    assert_eq!(served.terminate().code(), Some(0));
    let path = dir.path().join("data").join("snapshot.json");
    let mut snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    snapshot["format"] = 99.into();
    let written = snapshot.to_string();
    std::fs::write(&path, &written).unwrap();
    said_once(
        &refused_start(dir.path()),
        "snapshot.json was written by a newer resman (snapshot format 99",
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        written,
        "left as it was"
    );
}

#[test]
fn call_names_an_address_it_cannot_use() {
    let out = resman()
        .args(["call", "ping", "--addr", "no-port-here"])
        .output()
        .expect("resman runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot resolve no-port-here"),
        "names the address as given: {stderr}"
    );
}
