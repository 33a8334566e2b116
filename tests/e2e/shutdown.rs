//! Graceful shutdown: stop accepting, answer what is queued, let what runs finish.

use crate::support::{code, within, TestHost};
use resman::{Host, Request};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

#[tokio::test]
async fn shutdown_finishes_running_requests_and_refuses_queued_ones() {
    let permits = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let gate = permits.clone();
    let builder = Host::builder().jobber("slow", move |_req: Request| {
        let (gate, started_tx) = (gate.clone(), started_tx.clone());
        async move {
            let _ = started_tx.send(());
            gate.acquire().await.expect("open").forget();
            Ok(json!("finished"))
        }
    });
    let mut host = TestHost::with(builder).await;
    let addr = host.addr;
    let mut conn = host.raw().await;
    conn.send("slow", 1, json!(null)).await;
    conn.send("slow", 2, json!(null)).await;
    within(started.recv()).await;
    host.begin_shutdown();
    let refused = conn.next().await;
    assert_eq!(
        (refused["queryIndex"].as_u64(), code(&refused)),
        (Some(2), "shutting_down")
    );
    permits.add_permits(1);
    let finished = conn.next().await;
    assert_eq!(
        (finished["queryIndex"].as_u64(), &finished["resultJob"]),
        (Some(1), &json!("finished"))
    );
    assert!(conn.closed().await, "connections close once drained");
    host.shutdown().await.expect("run returns Ok");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn an_idle_host_shuts_down_at_once() {
    let host = TestHost::with(Host::builder()).await;
    let mut conn = host.raw().await;
    conn.call("ping", 1, json!(null)).await;
    host.shutdown().await.expect("run returns Ok");
    assert!(conn.closed().await);
}
