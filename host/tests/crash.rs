//! The crash test: clients acquire and release proxies through the `proxy-pool` WASM plugin
//! of a real `resman serve` process while it is killed with SIGKILL mid-load and started
//! again on the same data folder, cycle after cycle. After every restart the clients settle
//! the one request each had in flight (repeating an acquire with its request id, a release
//! with its lease) and the pool is audited against what they were told:
//!
//! - every lease a client was granted and did not release is held, with the same proxy and
//!   token;
//! - nothing else is held, no proxy is held twice and none is missing;
//! - every grant's token is greater than every token that proxy was granted with before.
//!
//! The host runs with journals small enough to be rolled into a snapshot every cycle or so.

mod support;

use resman_sdk::client::{Client, ClientError};
use resman_sdk::ErrorCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{connect, until_served, with_proxy_pool, Served, DEADLINE};

const CYCLES: usize = 20;
const CLIENTS: usize = 8;
const PROXIES: usize = 64;
/// Leases a client keeps before it releases its oldest.
const KEEP: usize = 4;
/// Grants per cycle before the kill.
const GRANTS_BEFORE_KILL: u64 = 150;

/// What a client believes it holds: lease → (proxy, token).
type Held = BTreeMap<String, (String, u64)>;

/// The request a client had in flight when the host died.
#[derive(Clone, Debug)]
enum InFlight {
    Acquire { request_id: String },
    Release { lease: String },
}

/// Everything clients were told, across all cycles.
#[derive(Default)]
struct Ledger {
    held: Vec<Held>,
    /// proxy → the highest token it was ever granted with.
    max_token: BTreeMap<String, u64>,
    grants: u64,
    violations: Vec<String>,
}

impl Ledger {
    /// Records a grant; a new lease must carry a token above the proxy's history.
    fn granted(&mut self, client: usize, answer: &Value) {
        let lease = answer["lease"].as_str().expect("a lease").to_owned();
        let proxy = answer["proxy"].as_str().expect("a proxy").to_owned();
        let token = answer["token"].as_u64().expect("a token");
        if self.held[client].contains_key(&lease) {
            return; // the same lease again, for a repeated request id
        }
        let max = self.max_token.entry(proxy.clone()).or_insert(0);
        if token <= *max {
            self.violations.push(format!(
                "{proxy} granted with token {token} after token {max}"
            ));
        }
        *max = token;
        self.grants += 1;
        self.held[client].insert(lease, (proxy, token));
    }
}

fn serve(dir: &Path) -> Served {
    // Small journals, so that kills land in rolls too: in the keeper's snapshot writing, its
    // creating of the next journal and its extending of the current one.
    Served::durable(dir, 65536, |_| {})
}

fn lost(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::ConnectionLost(_) | ClientError::Timeout { .. }
    )
}

/// One client's load until the connection dies: acquire, keep [`KEEP`], release the oldest.
async fn load(
    served_addr: std::net::SocketAddr,
    client: usize,
    cycle: usize,
    ledger: Arc<Mutex<Ledger>>,
    grants: Arc<AtomicU64>,
) -> Option<InFlight> {
    let Ok(conn) = Client::builder()
        .timeout(DEADLINE)
        .connect(served_addr)
        .await
    else {
        return None;
    };
    for n in 0.. {
        let request_id = format!("c{client}-y{cycle}-n{n}");
        match conn
            .request("getProxy", json!({ "requestId": request_id }))
            .await
        {
            Ok(answer) => {
                ledger.lock().unwrap().granted(client, &answer);
                grants.fetch_add(1, Ordering::Relaxed);
            }
            Err(ClientError::Server(reply)) if reply.code == ErrorCode::Unavailable => {}
            Err(err) if lost(&err) => return Some(InFlight::Acquire { request_id }),
            Err(err) => panic!("getProxy: {err}"),
        }
        let oldest = {
            let ledger = ledger.lock().unwrap();
            let held = &ledger.held[client];
            (held.len() > KEEP)
                .then(|| held.keys().next().cloned())
                .flatten()
        };
        if let Some(lease) = oldest {
            match conn
                .request("releaseProxy", json!({ "lease": lease }))
                .await
            {
                Ok(_) => {
                    ledger.lock().unwrap().held[client].remove(&lease);
                }
                Err(err) if lost(&err) => return Some(InFlight::Release { lease }),
                Err(err) => panic!("releaseProxy: {err}"),
            }
        }
    }
    None
}

/// Finishes a request whose answer the crash swallowed.
async fn settle(conn: &Client, client: usize, in_flight: InFlight, ledger: &Mutex<Ledger>) {
    match in_flight {
        InFlight::Acquire { request_id } => {
            match conn
                .request("getProxy", json!({ "requestId": request_id }))
                .await
            {
                Ok(answer) => ledger.lock().unwrap().granted(client, &answer),
                Err(ClientError::Server(reply)) if reply.code == ErrorCode::Unavailable => {}
                Err(err) => panic!("repeating getProxy {request_id}: {err}"),
            }
        }
        InFlight::Release { lease } => {
            match conn
                .request("releaseProxy", json!({ "lease": lease }))
                .await
            {
                Ok(_) => {}
                Err(ClientError::Server(reply)) if reply.code == ErrorCode::NotFound => {}
                Err(err) => panic!("repeating releaseProxy {lease}: {err}"),
            }
            ledger.lock().unwrap().held[client].remove(&lease);
        }
    }
}

/// Compares the pool with the ledger; the violations found.
fn audit(status: &Value, ledger: &Ledger) -> Vec<String> {
    let mut violations = Vec::new();
    let believed: BTreeMap<&String, &(String, u64)> =
        ledger.held.iter().flat_map(|held| held.iter()).collect();
    let mut held_proxies = BTreeSet::new();
    let mut server_leases = BTreeMap::new();
    for entry in status["held"].as_array().expect("held") {
        let proxy = entry["proxy"].as_str().expect("proxy").to_owned();
        let lease = entry["lease"].as_str().expect("lease").to_owned();
        let token = entry["token"].as_u64().expect("token");
        if !held_proxies.insert(proxy.clone()) {
            violations.push(format!("{proxy} is held twice"));
        }
        server_leases.insert(lease, (proxy, token));
    }
    for (lease, grant) in &believed {
        match server_leases.get(*lease) {
            Some(held) if held == *grant => {}
            other => violations.push(format!("lease {lease} {grant:?} is held as {other:?}")),
        }
    }
    for lease in server_leases.keys() {
        if !believed.contains_key(lease) {
            violations.push(format!(
                "lease {lease} is held but no client was granted it"
            ));
        }
    }
    let free: BTreeSet<String> = status["free"]
        .as_array()
        .expect("free")
        .iter()
        .map(|p| p.as_str().expect("proxy").to_owned())
        .collect();
    if !free.is_disjoint(&held_proxies) {
        violations.push("a proxy is both free and held".into());
    }
    if free.len() + held_proxies.len() != PROXIES {
        violations.push(format!(
            "{} free + {} held proxies, not {PROXIES}",
            free.len(),
            held_proxies.len()
        ));
    }
    violations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_survive_sigkill_mid_load_cycle_after_cycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    with_proxy_pool(dir.path());
    let ledger = Arc::new(Mutex::new(Ledger {
        held: vec![Held::new(); CLIENTS],
        ..Ledger::default()
    }));

    let served = serve(dir.path());
    let admin = connect(&served).await;
    until_served(&admin).await;
    let proxies: Vec<String> = (0..PROXIES).map(|i| format!("10.1.0.{i}:3128")).collect();
    let added = admin
        .request("addProxy", json!({ "proxies": proxies }))
        .await
        .expect("addProxy");
    assert_eq!(added["added"], PROXIES);
    drop(admin);
    let mut served = Some(served);

    for cycle in 0..CYCLES {
        let host = served.take().expect("a running host");
        let grants = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                tokio::spawn(load(
                    host.addr,
                    client,
                    cycle,
                    Arc::clone(&ledger),
                    Arc::clone(&grants),
                ))
            })
            .collect();
        let started = Instant::now();
        while grants.load(Ordering::Relaxed) < GRANTS_BEFORE_KILL {
            assert!(started.elapsed() < DEADLINE, "the load made no progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        host.kill();
        let mut in_flight = Vec::new();
        for (client, task) in clients.into_iter().enumerate() {
            in_flight.push((client, task.await.expect("a client task")));
        }

        let host = serve(dir.path());
        let conn = connect(&host).await;
        until_served(&conn).await;
        for (client, pending) in in_flight {
            if let Some(pending) = pending {
                settle(&conn, client, pending, &ledger).await;
            }
        }
        let status = conn
            .request("proxyStatus", json!({}))
            .await
            .expect("status");
        let found = audit(&status, &ledger.lock().unwrap());
        ledger.lock().unwrap().violations.extend(found);
        served = Some(host);
    }

    let ledger = ledger.lock().unwrap();
    println!(
        "crash test: {CYCLES} SIGKILL cycles, {} grants audited, {} violations",
        ledger.grants,
        ledger.violations.len()
    );
    assert!(ledger.violations.is_empty(), "{:#?}", ledger.violations);
    assert!(ledger.grants >= CYCLES as u64 * GRANTS_BEFORE_KILL);
}
