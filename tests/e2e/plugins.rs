//! Plugins through a running host with real plugin files: both kinds serve; drop, replace and
//! remove while serving; bad files are refused with the old version serving on; misbehaving
//! guests answer errors and the host serves on; a reload under load loses nothing.

use crate::support::{code, listed, refused, within, PluginDir, RawConn, TestHost};
use resman::Host;
use serde_json::{json, Value};
use std::time::Duration;

async fn host_on(dir: &PluginDir) -> TestHost {
    TestHost::start(Host::builder(), dir.config()).await
}

async fn counts(conn: &mut RawConn, n: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    for i in 0..n {
        let response = conn.call("cntResponse", i, json!(null)).await;
        seen.push(
            response["resultJob"]["cnt"]
                .as_u64()
                .unwrap_or_else(|| panic!("{response}")),
        );
    }
    seen
}

#[tokio::test]
async fn a_wasm_plugin_in_the_folder_at_start_serves_its_type() {
    let dir = PluginDir::new();
    dir.drop_in("counter.wasm", "counter.wasm");
    let host = host_on(&dir).await;
    let mut conn = host.raw().await;
    assert_eq!(
        counts(&mut conn, 3).await,
        vec![0, 1, 2],
        "state lives in the lane's instance"
    );
    let listing = conn.plugins().await;
    let entry = listed(&listing, "counter.wasm").expect("listed");
    assert_eq!(
        (entry["kind"].as_str(), &entry["types"]),
        (Some("wasm"), &json!(["cntResponse"]))
    );
    assert_eq!(entry["hash"].as_str().map(str::len), Some(64));
}

#[tokio::test]
async fn a_native_plugin_serves_its_type() {
    let dir = PluginDir::new();
    dir.drop_in("counter.so", "counter.so");
    let host = host_on(&dir).await;
    let mut conn = host.raw().await;
    assert_eq!(counts(&mut conn, 3).await, vec![0, 1, 2]);
    assert_eq!(
        listed(&conn.plugins().await, "counter.so").unwrap()["kind"],
        "native"
    );
}

#[tokio::test]
async fn plugins_dropped_replaced_and_removed_while_serving() {
    let dir = PluginDir::new();
    let host = host_on(&dir).await;
    let mut conn = host.raw().await;
    assert_eq!(
        code(&conn.call("cntResponse", 1, json!(null)).await),
        "unknown_type"
    );

    dir.drop_in("counter.wasm", "counter.wasm");
    conn.wait_plugins(|l| listed(l, "counter.wasm").is_some())
        .await;
    assert_eq!(counts(&mut conn, 2).await, vec![0, 1]);

    // Replaced by a file serving other types: the old type goes, the new ones come.
    dir.drop_in("counter.wasm", "misbehave.wasm");
    conn.wait_plugins(|l| {
        listed(l, "counter.wasm").is_some_and(|p| p["types"] != json!(["cntResponse"]))
    })
    .await;
    assert_eq!(
        code(&conn.call("cntResponse", 2, json!(null)).await),
        "unknown_type"
    );
    let echo = conn.call("misbehave.echo", 3, json!({"x": 1})).await;
    assert_eq!(echo["resultJob"]["payload"], json!({"x": 1}));

    dir.remove("counter.wasm");
    conn.wait_plugins(|l| l["plugins"] == json!([])).await;
    assert_eq!(
        code(&conn.call("misbehave.echo", 4, json!(null)).await),
        "unknown_type"
    );
    let _ = host;
}

#[tokio::test]
async fn bad_files_are_refused_and_the_old_version_keeps_serving() {
    let dir = PluginDir::new();
    dir.drop_in("counter.wasm", "counter.wasm");
    let host = host_on(&dir).await;
    let mut conn = host.raw().await;
    assert_eq!(counts(&mut conn, 1).await, vec![0]);

    dir.put("counter.wasm", b"\0asm but not really a component");
    let listing = conn
        .wait_plugins(|l| refused(l, "counter.wasm").is_some())
        .await;
    assert!(refused(&listing, "counter.wasm")
        .unwrap()
        .contains("counter.wasm"));
    assert_eq!(
        counts(&mut conn, 1).await,
        vec![1],
        "the old instance serves on, state and all"
    );

    dir.put("junk.so", b"not an ELF file");
    dir.drop_in("wrong-abi.so", "wrong-abi.so");
    let listing = conn
        .wait_plugins(|l| refused(l, "junk.so").is_some() && refused(l, "wrong-abi.so").is_some())
        .await;
    let abi = refused(&listing, "wrong-abi.so").unwrap();
    assert!(abi.contains("ABI version 999"), "{abi}");
    assert_eq!(listing["plugins"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_plugin_claiming_a_served_type_is_refused_naming_both_files() {
    let dir = PluginDir::new();
    dir.drop_in("a-counter.wasm", "counter.wasm");
    let host = host_on(&dir).await;
    let mut conn = host.raw().await;
    assert_eq!(counts(&mut conn, 1).await, vec![0]);
    dir.drop_in("b-counter.so", "counter.so");
    let listing = conn
        .wait_plugins(|l| refused(l, "b-counter.so").is_some())
        .await;
    let error = refused(&listing, "b-counter.so").unwrap();
    assert!(
        error.contains("b-counter.so") && error.contains("a-counter.wasm"),
        "{error}"
    );
    assert_eq!(counts(&mut conn, 1).await, vec![1]);
    assert_eq!(listed(&listing, "a-counter.wasm").unwrap()["kind"], "wasm");

    // Once its rival is gone, the refused file serves, as it would after a restart.
    dir.remove("a-counter.wasm");
    let listing = conn
        .wait_plugins(|l| listed(l, "b-counter.so").is_some())
        .await;
    assert!(refused(&listing, "b-counter.so").is_none(), "{listing}");
    assert!(listed(&listing, "a-counter.wasm").is_none(), "{listing}");
    assert_eq!(listed(&listing, "b-counter.so").unwrap()["kind"], "native");
    assert_eq!(
        counts(&mut conn, 2).await,
        vec![0, 1],
        "a fresh native counter"
    );
}

#[tokio::test]
async fn misbehaving_wasm_guests_answer_errors_and_the_host_serves_on() {
    let dir = PluginDir::new();
    dir.drop_in("misbehave.wasm", "misbehave.wasm");
    let config = resman::Config {
        jobber_timeout: Duration::from_millis(300),
        wasm_memory_limit: 16 * 1024 * 1024,
        ..dir.config()
    };
    let host = TestHost::start(Host::builder(), config).await;
    let mut conn = host.raw().await;
    for (kind, expected) in [
        ("misbehave.trap", "jobber_failed"),
        ("misbehave.spin", "timeout"),
        ("misbehave.alloc", "jobber_failed"),
        ("misbehave.fail", "jobber_failed"),
    ] {
        let response = conn.call(kind, 1, json!(null)).await;
        assert_eq!(code(&response), expected, "{kind}: {response}");
        let echo = conn.call("misbehave.echo", 2, json!(kind)).await;
        assert_eq!(
            echo["resultJob"]["payload"], kind,
            "a fresh instance serves after {kind}"
        );
        assert!(conn.call("ping", 3, json!(null)).await["resultJob"]["pong"].is_u64());
    }
    let retried = conn.call("misbehave.retry", 4, json!(null)).await;
    assert_eq!(code(&retried), "jobber_failed");
    assert!(retried["resultJob"]["err"]
        .as_str()
        .unwrap()
        .contains("5 attempts"));
}

/// A host serving `misbehave.wasm`, whose `misbehave.spin` spins until its 2 s deadline.
async fn spinning_host() -> (PluginDir, TestHost) {
    misbehave_host("misbehave.wasm", Duration::from_secs(2)).await
}

/// A host serving the `misbehave` fixture built as `file` (`misbehave.wasm` or
/// `misbehave.so`) under a jobber deadline of `timeout`.
async fn misbehave_host(file: &str, timeout: Duration) -> (PluginDir, TestHost) {
    let dir = PluginDir::new();
    dir.drop_in(file, file);
    let config = resman::Config {
        jobber_timeout: timeout,
        ..dir.config()
    };
    let host = TestHost::start(Host::builder(), config).await;
    (dir, host)
}

/// Polls `srvQueuePrint` on `conn` until the queue of type `kind` reads `expected`.
async fn queue_reaches(conn: &mut RawConn, kind: &str, expected: Value) {
    within(async {
        loop {
            let queues = conn.call("srvQueuePrint", 0, json!(null)).await;
            if queues["resultJob"]["queues"][kind] == expected {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// The host runs here on the test's one-thread runtime, and WASM calls run as tasks on it: a
/// spinning guest must yield at every epoch tick, or nothing else could be served until its
/// deadline.
#[tokio::test]
async fn a_spinning_wasm_guest_holds_its_lane_but_not_the_thread() {
    let (_dir, host) = spinning_host().await;
    let mut spinner = host.raw().await;
    let mut other = host.raw().await;
    spinner.send("misbehave.spin", 1, json!(null)).await;
    queue_reaches(
        &mut other,
        "misbehave.spin",
        json!({"queued": 0, "inFlight": 1}),
    )
    .await;
    let echo = other.call("misbehave.echo", 3, json!("meanwhile")).await;
    assert_eq!(echo["resultJob"]["payload"], "meanwhile");
    let queues = other.call("srvQueuePrint", 4, json!(null)).await;
    assert_eq!(
        queues["resultJob"]["queues"]["misbehave.spin"]["inFlight"], 1,
        "the other type of the same plugin was served while the guest spun: {queues}"
    );
    assert_eq!(code(&spinner.next().await), "timeout");
}

/// Requests queued behind a spinning one form the next batch, which the SDK's plugin serves
/// in one `serve-batch` call: a trap, a panic, a spin past the deadline, a retry and a
/// request taken without answering the one out each end only their own request, and every
/// other request of the batch is answered as if alone.
#[tokio::test]
async fn misbehaving_requests_in_one_batch_end_alone_and_the_rest_are_answered() {
    let (_dir, host) = misbehave_host("misbehave.wasm", Duration::from_millis(300)).await;
    let mut conn = host.raw().await;
    let mut watcher = host.raw().await;
    conn.send("misbehave.as-told", 0, json!("spin")).await;
    queue_reaches(
        &mut watcher,
        "misbehave.as-told",
        json!({"queued": 0, "inFlight": 1}),
    )
    .await;
    let told = [
        "a",
        "trap",
        "b",
        "panic",
        "c",
        "spin",
        "d",
        "retry",
        "e",
        "take-another",
        "f",
    ];
    for (at, payload) in (1..).zip(told) {
        conn.send("misbehave.as-told", at, json!(payload)).await;
    }
    let expected = json!({"queued": told.len(), "inFlight": 1});
    queue_reaches(&mut watcher, "misbehave.as-told", expected).await;

    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..=told.len() {
        let response = conn.next().await;
        answers.insert(response["queryIndex"].as_u64().unwrap(), response);
    }
    assert_eq!(code(&answers[&0]), "timeout", "{}", answers[&0]);
    for (at, payload) in (1..).zip(told) {
        let response = &answers[&at];
        match payload {
            "trap" | "panic" | "retry" | "take-another" => {
                assert_eq!(code(response), "jobber_failed", "{payload}: {response}")
            }
            "spin" => assert_eq!(code(response), "timeout", "{response}"),
            echoed => assert_eq!(
                response["resultJob"],
                json!({"payload": echoed, "attempt": 1}),
                "{response}"
            ),
        }
    }
    let trapped = answers[&2]["resultJob"]["err"].as_str().unwrap();
    assert!(trapped.contains("unreachable"), "{trapped}");
    let retried = answers[&8]["resultJob"]["err"].as_str().unwrap();
    assert!(retried.contains("5 attempts"), "{retried}");
    let skipped = answers[&10]["resultJob"]["err"].as_str().unwrap();
    assert!(
        skipped.contains("without the answer of the request it handed out before"),
        "{skipped}"
    );
}

#[tokio::test]
async fn a_panicking_native_plugin_answers_jobber_failed_and_the_host_serves_on() {
    let dir = PluginDir::new();
    dir.drop_in("misbehave.so", "misbehave.so");
    let host = host_on(&dir).await;
    let mut conn = host.raw().await;
    let response = conn.call("misbehave.panic", 1, json!(null)).await;
    assert_eq!(code(&response), "jobber_failed");
    assert!(response["resultJob"]["err"]
        .as_str()
        .unwrap()
        .contains("deliberate panic"));
    let echo = conn.call("misbehave.echo", 2, json!("after")).await;
    assert_eq!(echo["resultJob"]["payload"], "after");
}

/// Native code cannot be interrupted, so a native call that overruns its deadline is
/// abandoned: its client is answered `timeout` at the deadline, the type's next request is
/// served while the call still runs, the late call's answer is never sent, and the store
/// write it makes after its deadline is refused.
#[tokio::test]
async fn a_native_call_past_its_deadline_is_answered_timeout_and_its_type_is_served_on() {
    let (_dir, host) = misbehave_host("misbehave.so", Duration::from_millis(300)).await;
    let mut sleeper = host.raw().await;
    let mut other = host.raw().await;
    sleeper.send("misbehave.sleep", 1, json!(1_500)).await;
    let late = sleeper.next().await;
    assert_eq!(
        (code(&late), &late["queryIndex"]),
        ("timeout", &json!(1)),
        "{late}"
    );
    assert!(
        late["resultJob"]["err"]
            .as_str()
            .unwrap()
            .contains("abandoned"),
        "{late}"
    );
    let quick = other.call("misbehave.sleep", 2, json!(0)).await;
    assert_eq!(quick["resultJob"], json!({"stored": true}), "{quick}");
    // The abandoned request counts as pending until its call returns; then only the
    // `srvQueuePrint` asking is.
    within(async {
        while other.call("srvQueuePrint", 3, json!(null)).await["resultJob"]["pending"] != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let slept = other
        .call("misbehave.get", 4, json!("misbehave.slept.1500"))
        .await;
    assert_eq!(slept["resultJob"], json!({"value": null}), "{slept}");
    let echo = sleeper.call("misbehave.echo", 5, json!("after")).await;
    assert_eq!(echo["queryIndex"], 5, "no late answer came first: {echo}");
}

#[tokio::test]
async fn guests_reach_the_host_api() {
    let dir = PluginDir::new();
    dir.drop_in("misbehave.wasm", "misbehave.wasm");
    dir.drop_in("z-misbehave.so", "misbehave.so");
    let host = host_on(&dir).await;
    let mut conn = host.raw().await;
    let now = conn.call("misbehave.log", 1, json!(null)).await;
    assert!(
        now["resultJob"]["now"].as_u64().unwrap() > 1_600_000_000_000,
        "{now}"
    );
    // The native file (later by name) clashes with the WASM one and is refused.
    let listing = conn.plugins().await;
    assert!(refused(&listing, "z-misbehave.so").is_some(), "{listing}");
}

/// A component with a custom section appended: the same behaviour, other bytes (a new hash).
fn variant(component: &[u8], n: u32) -> Vec<u8> {
    let name = b"resman-test";
    let payload = n.to_le_bytes();
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

#[tokio::test]
async fn a_plugin_replaced_twenty_times_under_load_fails_and_loses_nothing() {
    let dir = PluginDir::new();
    let original = std::fs::read(crate::support::artifact("counter.wasm")).unwrap();
    dir.put("counter.wasm", &variant(&original, 0));
    let host = host_on(&dir).await;
    let mut control = host.raw().await;

    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let mut load = host.raw().await;
    let client = tokio::spawn(async move {
        let (mut sent, mut answered) = (0u64, 0u64);
        loop {
            for _ in 0..4 {
                load.send("cntResponse", sent, Value::Null).await;
                sent += 1;
            }
            for _ in 0..4 {
                let response = load.next().await;
                assert!(
                    response["resultJob"]["cnt"].is_u64(),
                    "failed during reload: {response}"
                );
                answered += 1;
            }
            if stopped.try_recv().is_ok() {
                return (sent, answered);
            }
        }
    });
    for n in 1..=20 {
        let bytes = variant(&original, n);
        let hash = sha256_hex(&bytes);
        dir.put("counter.wasm", &bytes);
        control
            .wait_plugins(|l| listed(l, "counter.wasm").is_some_and(|p| p["hash"] == hash))
            .await;
    }
    let _ = stop.send(());
    let (sent, answered) = within(client).await.expect("load client");
    assert_eq!(sent, answered);
    assert!(sent >= 4, "the load ran");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_restart_takes_compiled_components_from_the_cache() {
    let dir = PluginDir::new();
    dir.drop_in("counter.wasm", "counter.wasm");
    let first = host_on(&dir).await;
    let listing = first.raw().await.plugins().await;
    assert_eq!(
        listed(&listing, "counter.wasm").unwrap()["fromCache"],
        false
    );
    first.shutdown().await.unwrap();

    let second = host_on(&dir).await;
    let mut conn = second.raw().await;
    let listing = conn.plugins().await;
    assert_eq!(listed(&listing, "counter.wasm").unwrap()["fromCache"], true);
    assert_eq!(counts(&mut conn, 1).await, vec![0]);
}

#[tokio::test]
async fn requests_queued_for_a_removed_plugin_are_answered_handler_removed() {
    let (dir, host) = spinning_host().await;
    let mut conn = host.raw().await;
    conn.send("misbehave.spin", 1, json!(null)).await;
    conn.send("misbehave.spin", 2, json!(null)).await;
    let mut observer = host.raw().await;
    queue_reaches(
        &mut observer,
        "misbehave.spin",
        json!({"queued": 1, "inFlight": 1}),
    )
    .await;
    dir.remove("misbehave.wasm");
    let queued = conn.next().await;
    assert_eq!(
        (queued["queryIndex"].as_u64(), code(&queued)),
        (Some(2), "handler_removed")
    );
    let running = conn.next().await;
    assert_eq!(
        (running["queryIndex"].as_u64(), code(&running)),
        (Some(1), "timeout"),
        "the running one finishes"
    );
}
