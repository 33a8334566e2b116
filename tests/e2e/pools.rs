//! The host's durable resource pools through real plugins (`proxy-pool`, and the
//! `pool-probe` fixture for the rules no product plugin spells out) and a real data folder:
//! grants and releases, idempotent acquires, TTL expiry (across a restart too), release on
//! disconnect, waiting acquires in strict FIFO order, multi-pool all-or-nothing, and
//! everything surviving a restart with tokens that keep growing.

use crate::support::{code, within, PluginDir, RawConn, TestHost};
use resman::{Config, Host};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A plugins folder with `files` dropped in and a data folder, kept across host restarts.
struct Setup {
    plugins: PluginDir,
    data: tempfile::TempDir,
}

impl Setup {
    fn new(files: &[&str]) -> Setup {
        let plugins = PluginDir::new();
        for file in files {
            plugins.drop_in(file, file);
        }
        Setup {
            plugins,
            data: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn config(&self) -> Config {
        Config {
            data_dir: Some(self.data.path().to_owned()),
            ..self.plugins.config()
        }
    }

    async fn start(&self) -> TestHost {
        TestHost::start(Host::builder(), self.config()).await
    }
}

/// Sends one request and returns its `resultJob`.
async fn ask(conn: &mut RawConn, kind: &str, payload: Value) -> Value {
    conn.call(kind, 1, payload).await["resultJob"].clone()
}

fn error_code(result: &Value) -> &str {
    result["code"].as_str().unwrap_or("")
}

async fn add_proxies(conn: &mut RawConn, proxies: &[&str]) {
    let added = ask(conn, "addProxy", json!({ "proxies": proxies })).await;
    assert_eq!(added["added"], proxies.len(), "{added}");
}

async fn status(conn: &mut RawConn) -> Value {
    ask(conn, "proxyStatus", json!({})).await
}

/// The proxies `proxyStatus` lists as free.
async fn free(conn: &mut RawConn) -> BTreeSet<String> {
    let status = status(conn).await;
    let free = status["free"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"));
    free.iter()
        .map(|p| p.as_str().expect("a proxy").to_owned())
        .collect()
}

/// Waits until `proxy` is listed free.
async fn until_free(conn: &mut RawConn, proxy: &str) {
    within(async {
        while !free(conn).await.contains(proxy) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test]
async fn proxies_are_granted_once_each_and_come_back_on_release() {
    for file in ["proxy-pool.wasm", "proxy-pool.so"] {
        let setup = Setup::new(&[file]);
        let host = setup.start().await;
        let mut conn = host.raw().await;
        add_proxies(&mut conn, &["10.0.0.1:3128", "10.0.0.2:3128"]).await;

        let first = ask(&mut conn, "getProxy", json!({})).await;
        let second = ask(&mut conn, "getProxy", Value::Null).await;
        assert_eq!(first["proxy"], "10.0.0.1:3128", "{file}: {first}");
        assert_eq!(second["proxy"], "10.0.0.2:3128", "{file}: {second}");
        assert!(second["token"].as_u64() > first["token"].as_u64());
        let none = ask(&mut conn, "getProxy", json!({})).await;
        assert_eq!(error_code(&none), "unavailable", "{file}: {none}");

        let by_lease = ask(
            &mut conn,
            "releaseProxy",
            json!({ "lease": first["lease"] }),
        )
        .await;
        assert_eq!(by_lease["released"], "10.0.0.1:3128", "{by_lease}");
        let by_proxy = ask(
            &mut conn,
            "releaseProxy",
            json!({ "proxy": "10.0.0.2:3128" }),
        )
        .await;
        assert_eq!(by_proxy["lease"], second["lease"], "{by_proxy}");
        let again = ask(
            &mut conn,
            "releaseProxy",
            json!({ "lease": first["lease"] }),
        )
        .await;
        assert_eq!(error_code(&again), "not_found", "{again}");
        assert_eq!(free(&mut conn).await.len(), 2);

        let bad = ask(&mut conn, "addProxy", json!({ "proxies": "nope" })).await;
        assert_eq!(error_code(&bad), "invalid", "{bad}");
        host.shutdown().await.expect("clean shutdown");
    }
}

/// Free proxies are granted in turn, a released one at the back of the line, and one removed
/// and added again comes back as a new one; each answered by its own name however often the
/// plugin's instance has met it.
#[tokio::test]
async fn proxies_are_granted_in_turn_by_name_through_releases_and_removals() {
    let setup = Setup::new(&["proxy-pool.wasm"]);
    let host = setup.start().await;
    let mut conn = host.raw().await;
    let (a, b, c) = ("10.0.0.1:3128", "10.0.0.2:3128", "10.0.0.3:3128");
    add_proxies(&mut conn, &[a, b]).await;
    let mut granted = Vec::new();
    for _ in 0..6 {
        let got = ask(&mut conn, "getProxy", json!({})).await;
        let proxy = got["proxy"].as_str().unwrap_or_else(|| panic!("{got}"));
        let released = ask(&mut conn, "releaseProxy", json!({ "lease": got["lease"] })).await;
        assert_eq!(released["released"], proxy, "{released}");
        granted.push(proxy.to_owned());
    }
    // Free proxies are granted in turn, so each came three times.
    assert_eq!(granted, [a, b, a, b, a, b]);

    let removed = ask(&mut conn, "removeProxy", json!({ "proxies": [a] })).await;
    assert_eq!(removed["removed"], 1, "{removed}");
    add_proxies(&mut conn, &[c, a]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(ask(&mut conn, "getProxy", json!({})).await["proxy"].clone());
    }
    assert_eq!(held, [b, c, a]);
    host.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_queue_report_counts_the_journals_commits() {
    let setup = Setup::new(&["proxy-pool.wasm"]);
    let host = setup.start().await;
    let mut conn = host.raw().await;
    let before = conn.call("srvQueuePrint", 1, json!(null)).await["resultJob"]["journal"].clone();
    add_proxies(&mut conn, &["10.0.0.1:3128"]).await;
    let got = ask(&mut conn, "getProxy", json!({})).await;
    assert!(got["lease"].is_string(), "{got}");
    let after = conn.call("srvQueuePrint", 2, json!(null)).await["resultJob"]["journal"].clone();
    let count = |report: &Value, field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {report}"))
    };
    // Each answer left once its record was durable: the add and the grant are two commits.
    assert!(
        count(&after, "commits") >= count(&before, "commits") + 2,
        "{after}"
    );
    assert!(
        count(&after, "records") >= count(&before, "records") + 2,
        "{after}"
    );
    assert!(count(&after, "bytes") > count(&before, "bytes"), "{after}");
    assert!(
        count(&after, "maxSyncMicros") >= count(&after, "lastSyncMicros"),
        "{after}"
    );
    assert!(
        count(&after, "maxSyncMicros") >= count(&after, "meanSyncMicros"),
        "{after}"
    );
    // A commit is counted as held before its write and as a commit after it.
    count(&after, "meanHeldMicros");
    assert!(
        count(&after, "heldToCap") <= count(&after, "commits") + 1,
        "{after}"
    );
    host.shutdown().await.expect("clean shutdown");
}

/// The journal is rolled into a snapshot once it holds the roll size and twice the latest
/// snapshot, and the report says so: how many snapshots, how large, how long the copy held
/// operations up.
#[tokio::test]
async fn the_queue_report_counts_the_snapshots_the_journal_is_rolled_into() {
    let setup = Setup::new(&["proxy-pool.wasm"]);
    let config = Config {
        journal_roll_bytes: 64 << 10, // the smallest roll size
        ..setup.config()
    };
    let host = TestHost::start(Host::builder(), config).await;
    let mut conn = host.raw().await;
    let report = |reply: Value| reply["resultJob"]["journal"].clone();
    let start = report(conn.call("srvQueuePrint", 1, json!(null)).await);
    assert_eq!(
        start["snapshots"], 1,
        "the snapshot written at start: {start}"
    );
    // More than the roll size of records; the next commit after them rolls the journal.
    let proxies: Vec<String> = (0..1_500)
        .map(|i| format!("proxy-{i:05}.a-rather-long-internal-domain-name.example:3128"))
        .collect();
    let proxies: Vec<&str> = proxies.iter().map(String::as_str).collect();
    add_proxies(&mut conn, &proxies).await;
    let rolled = within(async {
        loop {
            let got = ask(&mut conn, "getProxy", json!({})).await;
            assert!(got["lease"].is_string(), "{got}");
            let journal = report(conn.call("srvQueuePrint", 2, json!(null)).await);
            if journal["snapshots"] == 2 {
                break journal;
            }
        }
    })
    .await;
    let bytes = rolled["snapshotBytes"].as_u64().expect("snapshotBytes");
    assert!(
        bytes > start["snapshotBytes"].as_u64().expect("snapshotBytes"),
        "the snapshot holds the proxies: {rolled}"
    );
    let copy = |field: &str| rolled[field].as_u64().unwrap_or_else(|| panic!("{field}"));
    assert!(
        copy("maxSnapshotCopyMicros") >= copy("lastSnapshotCopyMicros"),
        "{rolled}"
    );
    host.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn grants_survive_a_restart_and_tokens_keep_growing() {
    let setup = Setup::new(&["proxy-pool.wasm"]);
    let host = setup.start().await;
    let mut conn = host.raw().await;
    add_proxies(&mut conn, &["a:1", "b:1", "c:1"]).await;
    let held = ask(&mut conn, "getProxy", json!({})).await;
    let other = ask(&mut conn, "getProxy", json!({})).await;
    ask(
        &mut conn,
        "releaseProxy",
        json!({ "lease": other["lease"] }),
    )
    .await;
    drop(conn);
    host.shutdown().await.expect("clean shutdown");

    let host = setup.start().await;
    let mut conn = host.raw().await;
    let status = status(&mut conn).await;
    let listed = &status["held"][0];
    assert_eq!(status["held"].as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(
        (&listed["proxy"], &listed["lease"], &listed["token"]),
        (&held["proxy"], &held["lease"], &held["token"])
    );
    let next = ask(&mut conn, "getProxy", json!({})).await;
    assert!(
        next["token"].as_u64() > other["token"].as_u64(),
        "{next} after {other}"
    );
    host.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_same_lease() {
    let setup = Setup::new(&["proxy-pool.wasm"]);
    let host = setup.start().await;
    let mut conn = host.raw().await;
    add_proxies(&mut conn, &["a:1", "b:1"]).await;
    let ask_once = json!({ "requestId": "order-17" });
    let first = ask(&mut conn, "getProxy", ask_once.clone()).await;
    // A client that lost the answer asks again, even from a new connection.
    let mut reconnected = host.raw().await;
    let again = ask(&mut reconnected, "getProxy", ask_once.clone()).await;
    assert_eq!(first, again);
    assert_eq!(free(&mut conn).await, BTreeSet::from(["b:1".to_owned()]));

    ask(
        &mut conn,
        "releaseProxy",
        json!({ "lease": first["lease"] }),
    )
    .await;
    let late = ask(&mut conn, "getProxy", ask_once).await;
    assert_eq!(error_code(&late), "conflict", "{late}");
    host.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_lease_expires_at_its_deadline_and_a_restart_neither_resets_nor_forgets_it() {
    let setup = Setup::new(&["proxy-pool.wasm"]);
    let host = setup.start().await;
    let mut conn = host.raw().await;
    add_proxies(&mut conn, &["short:1", "long:1", "gone:1"]).await;

    let short = ask(&mut conn, "getProxy", json!({ "ttlMs": 200 })).await;
    assert_eq!(short["proxy"], "short:1", "{short}");
    until_free(&mut conn, "short:1").await;
    let released = ask(
        &mut conn,
        "releaseProxy",
        json!({ "lease": short["lease"] }),
    )
    .await;
    assert_eq!(error_code(&released), "not_found", "expired: {released}");

    let long = ask(&mut conn, "getProxy", json!({ "ttlMs": 3_600_000 })).await;
    let gone = ask(&mut conn, "getProxy", json!({ "ttlMs": 500 })).await;
    assert_eq!(
        (long["proxy"].as_str(), gone["proxy"].as_str()),
        (Some("long:1"), Some("gone:1")),
        "the expired proxy went to the back of the free list"
    );
    drop(conn);
    host.shutdown().await.expect("clean shutdown");

    // The host is down while the short lease's deadline passes.
    let deadline = gone["expiresAtMs"].as_u64().expect("a deadline");
    within(async {
        while now_ms() <= deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let host = setup.start().await;
    let mut conn = host.raw().await;
    let status = status(&mut conn).await;
    let held: Vec<&Value> = status["held"].as_array().expect("held").iter().collect();
    assert_eq!(held.len(), 1, "only the long lease is held: {status}");
    assert_eq!(held[0]["lease"], long["lease"]);
    assert_eq!(
        held[0]["expiresAtMs"], long["expiresAtMs"],
        "the deadline was not reset"
    );
    host.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_release_on_disconnect_lease_ends_with_its_connection() {
    let setup = Setup::new(&["proxy-pool.wasm"]);
    let host = setup.start().await;
    let mut watcher = host.raw().await;
    add_proxies(&mut watcher, &["a:1", "b:1"]).await;
    let mut client = host.raw().await;
    let tied = ask(
        &mut client,
        "getProxy",
        json!({ "releaseOnDisconnect": true }),
    )
    .await;
    let kept = ask(&mut client, "getProxy", json!({})).await;
    assert_eq!(tied["proxy"], "a:1", "{tied}");
    assert!(free(&mut watcher).await.is_empty());
    drop(client);
    until_free(&mut watcher, "a:1").await;
    let status = status(&mut watcher).await;
    assert_eq!(status["held"][0]["lease"], kept["lease"], "{status}");
    host.shutdown().await.expect("clean shutdown");
}

/// Sends a request without waiting for its answer.
async fn send(conn: &mut RawConn, kind: &str, payload: Value) {
    conn.send(kind, 1, payload).await;
}

async fn probe_status(conn: &mut RawConn, pool: &str) -> Value {
    ask(conn, "probe.status", json!({ "pool": pool })).await
}

/// Waits until `pool` has `n` waiting acquires.
async fn until_waiting(conn: &mut RawConn, pool: &str, n: u64) {
    within(async {
        while probe_status(conn, pool).await["waiting"].as_u64() != Some(n) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn want(pool: &str, count: u32) -> Value {
    json!({ "pool": pool, "count": count })
}

fn granted_ids(lease: &Value) -> Vec<String> {
    let grants = lease["grants"]
        .as_array()
        .unwrap_or_else(|| panic!("{lease}"));
    grants
        .iter()
        .map(|g| g["id"].as_str().expect("an id").to_owned())
        .collect()
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served_and_a_large_one_is_not_starved() {
    let setup = Setup::new(&["pool-probe.wasm"]);
    let host = setup.start().await;
    let mut admin = host.raw().await;
    let ids = ["r1", "r2", "r3", "r4"];
    ask(&mut admin, "probe.add", json!({ "pool": "p", "ids": ids })).await;
    let holder = ask(
        &mut admin,
        "probe.acquire",
        json!({ "wants": [want("p", 3)] }),
    )
    .await;
    assert_eq!(granted_ids(&holder).len(), 3, "{holder}");

    // A large waiter first, then a small one: one resource is free, but it is the large
    // waiter's turn, so the small one waits behind it.
    let mut large = host.raw().await;
    send(
        &mut large,
        "probe.acquire2",
        json!({ "wants": [want("p", 3)], "wait_ms": 15_000 }),
    )
    .await;
    until_waiting(&mut admin, "p", 1).await;
    let mut small = host.raw().await;
    send(
        &mut small,
        "probe.acquire3",
        json!({ "wants": [want("p", 1)], "wait_ms": 15_000 }),
    )
    .await;
    until_waiting(&mut admin, "p", 2).await;
    let jumper = ask(
        &mut admin,
        "probe.acquire",
        json!({ "wants": [want("p", 1)] }),
    )
    .await;
    assert_eq!(
        error_code(&jumper),
        "unavailable",
        "no queue jumping: {jumper}"
    );
    assert_eq!(
        probe_status(&mut admin, "p").await["free"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    ask(
        &mut admin,
        "probe.release",
        json!({ "lease": holder["id"] }),
    )
    .await;
    let large_lease = within(large.next()).await["resultJob"].clone();
    let small_lease = within(small.next()).await["resultJob"].clone();
    assert_eq!(granted_ids(&large_lease).len(), 3, "{large_lease}");
    assert_eq!(granted_ids(&small_lease).len(), 1, "{small_lease}");
    assert!(large_lease["token"].as_u64() < small_lease["token"].as_u64());
    let all: BTreeSet<String> = granted_ids(&large_lease)
        .into_iter()
        .chain(granted_ids(&small_lease))
        .collect();
    assert_eq!(all.len(), 4, "no resource granted twice");
    host.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_waiter_leaves_the_queue_when_its_client_goes_or_its_wait_ends() {
    let setup = Setup::new(&["pool-probe.wasm"]);
    let host = setup.start().await;
    let mut admin = host.raw().await;
    ask(
        &mut admin,
        "probe.add",
        json!({ "pool": "p", "ids": ["only"] }),
    )
    .await;
    let holder = ask(
        &mut admin,
        "probe.acquire",
        json!({ "wants": [want("p", 1)] }),
    )
    .await;

    let mut quitter = host.raw().await;
    send(
        &mut quitter,
        "probe.acquire2",
        json!({ "wants": [want("p", 1)], "wait_ms": 15_000 }),
    )
    .await;
    until_waiting(&mut admin, "p", 1).await;
    drop(quitter);
    until_waiting(&mut admin, "p", 0).await;

    let timed_out = ask(
        &mut admin,
        "probe.acquire3",
        json!({ "wants": [want("p", 1)], "wait_ms": 50 }),
    )
    .await;
    assert_eq!(error_code(&timed_out), "unavailable", "{timed_out}");
    assert_eq!(probe_status(&mut admin, "p").await["waiting"], 0);

    ask(
        &mut admin,
        "probe.release",
        json!({ "lease": holder["id"] }),
    )
    .await;
    let status = probe_status(&mut admin, "p").await;
    assert_eq!(
        status["free"].as_array().map(Vec::len),
        Some(1),
        "nobody took it: {status}"
    );
    host.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_multi_pool_acquire_takes_all_or_nothing() {
    let setup = Setup::new(&["pool-probe.wasm"]);
    let host = setup.start().await;
    let mut conn = host.raw().await;
    ask(
        &mut conn,
        "probe.add",
        json!({ "pool": "rooms", "ids": ["blue", "red"] }),
    )
    .await;
    ask(
        &mut conn,
        "probe.add",
        json!({ "pool": "projectors", "ids": ["p1"] }),
    )
    .await;
    let projector = ask(
        &mut conn,
        "probe.acquire",
        json!({ "wants": [want("projectors", 1)] }),
    )
    .await;

    let both = json!({ "wants": [want("rooms", 2), want("projectors", 1)] });
    let refused = ask(&mut conn, "probe.acquire", both.clone()).await;
    assert_eq!(error_code(&refused), "unavailable", "{refused}");
    let rooms = probe_status(&mut conn, "rooms").await;
    assert_eq!(
        rooms["free"].as_array().map(Vec::len),
        Some(2),
        "nothing taken: {rooms}"
    );

    ask(
        &mut conn,
        "probe.release",
        json!({ "lease": projector["id"] }),
    )
    .await;
    let lease = ask(&mut conn, "probe.acquire", both).await;
    assert_eq!(granted_ids(&lease), ["blue", "red", "p1"], "{lease}");
    let zero = ask(
        &mut conn,
        "probe.acquire",
        json!({ "wants": [want("rooms", 0)] }),
    )
    .await;
    assert_eq!(error_code(&zero), "invalid", "{zero}");
    let unknown = ask(
        &mut conn,
        "probe.acquire",
        json!({ "wants": [want("nowhere", 1)] }),
    )
    .await;
    assert_eq!(error_code(&unknown), "not_found", "{unknown}");
    host.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_plugin_store_survives_a_restart_and_is_its_own() {
    let setup = Setup::new(&["pool-probe.wasm", "counter.wasm"]);
    let host = setup.start().await;
    let mut conn = host.raw().await;
    ask(&mut conn, "probe.set", json!({ "key": "k", "value": "v1" })).await;
    drop(conn);
    host.shutdown().await.expect("clean shutdown");

    let host = setup.start().await;
    let mut conn = host.raw().await;
    assert_eq!(
        ask(&mut conn, "probe.get", json!({ "key": "k" })).await["value"],
        "v1"
    );
    let missing = ask(&mut conn, "probe.get", json!({ "key": "other" })).await;
    assert_eq!(missing["value"], Value::Null);
    let bad = conn.call("probe.acquire", 2, json!({ "wants": "x" })).await;
    assert_eq!(
        code(&bad),
        "invalid",
        "a bad payload is the client's mistake: {bad}"
    );
    host.shutdown().await.expect("clean shutdown");
}

/// Compare-and-set on a plugin's store, through both plugin kinds: a write from a stale
/// read is refused, and what was set survives a restart.
#[tokio::test]
async fn a_plugin_store_sets_a_value_only_from_the_one_expected() {
    for file in ["pool-probe.wasm", "pool-probe.so"] {
        let setup = Setup::new(&[file]);
        let host = setup.start().await;
        let mut conn = host.raw().await;
        let mut set_if = async |expected: Value, value: Value| {
            let payload = json!({ "key": "seats", "expected": expected, "value": value });
            ask(&mut conn, "probe.setIf", payload).await["done"].clone()
        };
        assert_eq!(set_if(Value::Null, json!("8")).await, true, "{file}");
        assert_eq!(set_if(Value::Null, json!("7")).await, false, "{file}");
        assert_eq!(set_if(json!("8"), json!("7")).await, true, "{file}");
        assert_eq!(set_if(json!("8"), json!("6")).await, false, "{file}: stale");
        drop(conn);
        host.shutdown().await.expect("clean shutdown");

        let host = setup.start().await;
        let mut conn = host.raw().await;
        let value = ask(&mut conn, "probe.get", json!({ "key": "seats" })).await;
        assert_eq!(value["value"], "7", "{file}");
        let removed = ask(
            &mut conn,
            "probe.setIf",
            json!({ "key": "seats", "expected": "7", "value": null }),
        )
        .await;
        assert_eq!(removed["done"], true, "{file}");
        let value = ask(&mut conn, "probe.get", json!({ "key": "seats" })).await;
        assert_eq!(value["value"], Value::Null, "{file}");
        host.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn cinema_sells_adjacent_seats_once_and_takes_refunds() {
    let setup = Setup::new(&["cinema.wasm"]);
    let host = setup.start().await;
    let mut conn = host.raw().await;
    let show = "hamlet";
    let added = ask(
        &mut conn,
        "addShow",
        json!({ "show": show, "rows": { "A": 4, "B": 4 } }),
    )
    .await;
    assert_eq!(added["seats"], 8, "{added}");

    let pair = ask(
        &mut conn,
        "buySeats",
        json!({ "show": show, "count": 2, "row": "A" }),
    )
    .await;
    assert_eq!(pair["seats"], json!(["A-1", "A-2"]), "{pair}");
    let single = ask(
        &mut conn,
        "buySeats",
        json!({ "show": show, "count": 1, "row": "A" }),
    )
    .await;
    assert_eq!(single["seats"], json!(["A-3"]), "{single}");
    // A-4 alone is left in row A: three together only fit in row B.
    let three = ask(&mut conn, "buySeats", json!({ "show": show, "count": 3 })).await;
    assert_eq!(three["seats"], json!(["B-1", "B-2", "B-3"]), "{three}");
    let none = ask(&mut conn, "buySeats", json!({ "show": show, "count": 2 })).await;
    assert_eq!(error_code(&none), "unavailable", "{none}");

    let refund = ask(
        &mut conn,
        "refundSeats",
        json!({ "ticket": pair["ticket"] }),
    )
    .await;
    assert_eq!(refund["refunded"], json!(["A-1", "A-2"]), "{refund}");
    let again = ask(&mut conn, "buySeats", json!({ "show": show, "count": 2 })).await;
    assert_eq!(again["seats"], json!(["A-1", "A-2"]), "{again}");
    assert!(again["token"].as_u64() > pair["token"].as_u64());
    host.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn rooms_are_booked_without_overlaps_and_bookings_survive_a_restart() {
    let setup = Setup::new(&["rooms.wasm"]);
    let host = setup.start().await;
    let mut conn = host.raw().await;
    ask(
        &mut conn,
        "addRoom",
        json!({ "room": "blue", "capacity": 8 }),
    )
    .await;
    let morning = json!({ "room": "blue", "fromMs": 1_000, "toMs": 2_000, "who": "ann" });
    let booked = ask(&mut conn, "bookRoom", morning).await;
    assert_eq!(booked["room"], "blue", "{booked}");
    let overlap = json!({ "room": "blue", "fromMs": 1_200, "toMs": 1_800 });
    let clash = ask(&mut conn, "bookRoom", overlap.clone()).await;
    assert_eq!(error_code(&clash), "conflict", "{clash}");
    let next = json!({ "room": "blue", "fromMs": 2_000, "toMs": 3_000 });
    let back_to_back = ask(&mut conn, "bookRoom", next).await;
    assert!(back_to_back["booking"].is_string(), "{back_to_back}");
    let unknown = ask(
        &mut conn,
        "bookRoom",
        json!({ "room": "red", "fromMs": 1, "toMs": 2 }),
    )
    .await;
    assert_eq!(error_code(&unknown), "not_found", "{unknown}");
    drop(conn);
    host.shutdown().await.expect("clean shutdown");

    let host = setup.start().await;
    let mut conn = host.raw().await;
    let schedule = ask(&mut conn, "roomSchedule", json!({ "room": "blue" })).await;
    assert_eq!(
        schedule["bookings"].as_array().map(Vec::len),
        Some(2),
        "{schedule}"
    );
    let cancelled = ask(
        &mut conn,
        "cancelBooking",
        json!({ "booking": booked["booking"] }),
    )
    .await;
    assert_eq!(cancelled["cancelled"], booked["booking"], "{cancelled}");
    let now_free = ask(&mut conn, "bookRoom", overlap).await;
    assert!(now_free["booking"].is_string(), "{now_free}");
    assert_ne!(
        now_free["booking"], booked["booking"],
        "booking ids are never reused"
    );
    host.shutdown().await.expect("clean shutdown");
}

/// A lease of another plugin's pool is not a proxy lease: `releaseProxy` answers `not_found`
/// and the lease stays held.
#[tokio::test]
async fn release_proxy_cannot_end_a_lease_of_another_pool() {
    for file in ["proxy-pool.wasm", "proxy-pool.so"] {
        let setup = Setup::new(&[file, "pool-probe.wasm"]);
        let host = setup.start().await;
        let mut conn = host.raw().await;
        add_proxies(&mut conn, &["10.0.0.1:3128"]).await;
        ask(
            &mut conn,
            "probe.add",
            json!({ "pool": "seats", "ids": ["A1"] }),
        )
        .await;
        let ticket = ask(
            &mut conn,
            "probe.acquire",
            json!({ "wants": [want("seats", 1)] }),
        )
        .await;
        let refused = ask(&mut conn, "releaseProxy", json!({ "lease": ticket["id"] })).await;
        assert_eq!(error_code(&refused), "not_found", "{file}: {refused}");
        let seats = ask(&mut conn, "probe.status", json!({ "pool": "seats" })).await;
        assert_eq!(seats["held"][0]["lease"], ticket["id"], "{file}: {seats}");
        host.shutdown().await.expect("clean shutdown");
    }
}

/// `acquire-single` and `release-single`, the brief calls, through both plugin kinds: one
/// resource only, answered as `{lease, token, expires_at_ms, id}`; anything else is refused
/// and changes nothing.
#[tokio::test]
async fn single_resource_calls_take_and_give_back_exactly_one() {
    for file in ["pool-probe.wasm", "pool-probe.so"] {
        let setup = Setup::new(&[file]);
        let host = setup.start().await;
        let mut conn = host.raw().await;
        let ids = json!({ "pool": "p", "ids": ["a", "b", "c"] });
        ask(&mut conn, "probe.add", ids).await;
        ask(
            &mut conn,
            "probe.add",
            json!({ "pool": "q", "ids": ["x", "y", "z"] }),
        )
        .await;

        let single = json!({ "wants": [want("p", 1)], "ttl_ms": 60_000 });
        let one = ask(&mut conn, "probe.acquireSingle", single).await;
        assert_eq!(one["id"], "a", "{file}: {one}");
        assert!(
            one["lease"].is_u64() && one["token"].is_u64(),
            "{file}: {one}"
        );
        assert!(
            one["expires_at_ms"].as_u64() > Some(now_ms()),
            "{file}: {one}"
        );
        let status = probe_status(&mut conn, "p").await;
        assert_eq!(
            status["held"][0]["lease"],
            one["lease"].to_string(),
            "{file}"
        );

        for many in [
            json!({ "wants": [want("p", 2)] }),
            json!({ "wants": [want("p", 1), want("q", 1)] }),
            json!({ "wants": [{ "pool": "p", "ids": ["b", "c"] }] }),
        ] {
            let refused = ask(&mut conn, "probe.acquireSingle", many).await;
            assert_eq!(error_code(&refused), "invalid", "{file}: {refused}");
        }
        let by_id = json!({ "wants": [{ "pool": "p", "ids": ["c"] }] });
        let c = ask(&mut conn, "probe.acquireSingle", by_id).await;
        assert_eq!(c["id"], "c", "{file}: {c}");

        // A request id that named a lease of two resources is no single lease.
        let two = json!({ "wants": [want("q", 1), want("p", 1)], "request_id": "r" });
        let pair = ask(&mut conn, "probe.acquire", two).await;
        let again = json!({ "wants": [want("p", 1)], "request_id": "r" });
        let clash = ask(&mut conn, "probe.acquireSingle", again).await;
        assert_eq!(error_code(&clash), "conflict", "{file}: {clash}");
        let in_p = json!({ "pool": "p", "lease": pair["id"] });
        let refused = ask(&mut conn, "probe.releaseSingle", in_p).await;
        assert_eq!(error_code(&refused), "not_found", "{file}: {refused}");
        assert_eq!(
            probe_status(&mut conn, "p").await["free"],
            json!([]),
            "{file}"
        );
        let two_in_q = ask(
            &mut conn,
            "probe.acquire",
            json!({ "wants": [want("q", 2)] }),
        )
        .await;
        let in_q = json!({ "pool": "q", "lease": two_in_q["id"] });
        let refused = ask(&mut conn, "probe.releaseSingle", in_q).await;
        assert_eq!(error_code(&refused), "invalid", "{file}: {refused}");
        assert_eq!(
            probe_status(&mut conn, "q").await["free"],
            json!([]),
            "{file}"
        );

        let lease = one["lease"].to_string();
        let in_q = json!({ "pool": "q", "lease": lease });
        let refused = ask(&mut conn, "probe.releaseSingle", in_q).await;
        assert_eq!(error_code(&refused), "not_found", "{file}: {refused}");
        let in_p = json!({ "pool": "p", "lease": lease });
        let released = ask(&mut conn, "probe.releaseSingle", in_p.clone()).await;
        assert_eq!(released, one, "{file}");
        let free = &probe_status(&mut conn, "p").await["free"];
        assert_eq!(free[0]["id"], "a", "{file}: {free}");
        let gone = ask(&mut conn, "probe.releaseSingle", in_p).await;
        assert_eq!(error_code(&gone), "not_found", "{file}: {gone}");
        host.shutdown().await.expect("clean shutdown");
    }
}

/// `releaseProxy` by lease ends a lease of several proxies whole (some other plugin's
/// acquire of the pool), and `getProxy` refuses a request id some other acquire named first.
#[tokio::test]
async fn proxy_leases_made_elsewhere_are_released_whole_and_their_request_ids_refused() {
    for file in ["proxy-pool.wasm", "proxy-pool.so"] {
        let setup = Setup::new(&[file, "pool-probe.wasm"]);
        let host = setup.start().await;
        let mut conn = host.raw().await;
        add_proxies(&mut conn, &["a:1", "b:1", "c:1"]).await;
        let both = json!({ "wants": [want("proxies", 2)], "request_id": "proxies/r" });
        let pair = ask(&mut conn, "probe.acquire", both).await;

        let clash = ask(&mut conn, "getProxy", json!({ "requestId": "r" })).await;
        assert_eq!(error_code(&clash), "conflict", "{file}: {clash}");
        assert_eq!(free(&mut conn).await.len(), 1, "{file}");

        let released = ask(&mut conn, "releaseProxy", json!({ "lease": pair["id"] })).await;
        assert_eq!(released["lease"], pair["id"], "{file}: {released}");
        assert_eq!(released["released"], "a:1", "{file}: {released}");
        assert_eq!(free(&mut conn).await.len(), 3, "{file}");
        host.shutdown().await.expect("clean shutdown");
    }
}
