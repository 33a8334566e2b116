//! The coordinator's rules: one request of a type at a time, types in parallel, disconnects,
//! retries, deadlines and back-pressure. Jobbers here block on channels the test controls, so
//! every ordering is forced, never timed.

use crate::support::{code, test_config, within, RawConn, TestHost};
use resman::{Handler, Host, JobError, Request};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Barrier, Mutex, Semaphore};

/// A jobber that reports each start and then waits for the test to let it finish.
struct Gate {
    started_tx: mpsc::UnboundedSender<u64>,
    started: Mutex<mpsc::UnboundedReceiver<u64>>,
    permits: Semaphore,
    running: AtomicUsize,
    most_running: AtomicUsize,
    calls: AtomicUsize,
}

impl Gate {
    fn new() -> Arc<Gate> {
        let (started_tx, started) = mpsc::unbounded_channel();
        Arc::new(Gate {
            started_tx,
            started: Mutex::new(started),
            permits: Semaphore::new(0),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
        })
    }

    fn handler(self: &Arc<Gate>) -> impl Handler {
        let gate = self.clone();
        move |req: Request| {
            let gate = gate.clone();
            async move {
                let now = gate.running.fetch_add(1, Ordering::SeqCst) + 1;
                gate.most_running.fetch_max(now, Ordering::SeqCst);
                gate.calls.fetch_add(1, Ordering::SeqCst);
                let index = req.query_index().as_u64().unwrap_or(0);
                let _ = gate.started_tx.send(index);
                gate.permits.acquire().await.expect("never closed").forget();
                gate.running.fetch_sub(1, Ordering::SeqCst);
                Ok(json!({ "done": index }))
            }
        }
    }

    /// Waits until the jobber has started its next request and returns its query index.
    async fn next_start(&self) -> u64 {
        within(self.started.lock().await.recv())
            .await
            .expect("gate open")
    }

    fn release(&self, n: usize) {
        self.permits.add_permits(n);
    }
}

async fn queued(conn: &mut RawConn, kind: &str) -> (u64, u64) {
    let response = conn.call("srvQueuePrint", 1_000_000, json!(null)).await;
    let lane = &response["resultJob"]["queues"][kind];
    (
        lane["queued"].as_u64().unwrap(),
        lane["inFlight"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn one_request_of_a_type_runs_at_a_time_in_arrival_order() {
    let gate = Gate::new();
    let host = TestHost::with(Host::builder().jobber("slow", gate.handler())).await;
    let mut conn = host.raw().await;
    for i in 1..=4 {
        conn.send("slow", i, json!(null)).await;
    }
    let mut order = Vec::new();
    for _ in 1..=4 {
        order.push(gate.next_start().await);
        let mut observer = host.raw().await;
        let (queued_now, in_flight) = queued(&mut observer, "slow").await;
        assert_eq!(in_flight, 1, "exactly one request of the type is in flight");
        assert_eq!(queued_now as usize, 4 - order.len());
        gate.release(1);
    }
    assert_eq!(order, vec![1, 2, 3, 4]);
    for _ in 1..=4 {
        assert!(conn.next().await["resultJob"]["done"].is_u64());
    }
    assert_eq!(gate.most_running.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn different_types_run_in_parallel() {
    // Each jobber waits for the other to have started: this only completes if both run at once.
    let barrier = Arc::new(Barrier::new(2));
    let meet = |barrier: Arc<Barrier>| {
        move |_req: Request| {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                Ok(json!("met"))
            }
        }
    };
    let builder = Host::builder()
        .jobber("left", meet(barrier.clone()))
        .jobber("right", meet(barrier.clone()));
    let host = TestHost::with(builder).await;
    let mut conn = host.raw().await;
    conn.send("left", 1, json!(null)).await;
    conn.send("right", 2, json!(null)).await;
    let (a, b) = (conn.next().await, conn.next().await);
    assert_eq!(
        (a["resultJob"].clone(), b["resultJob"].clone()),
        (json!("met"), json!("met"))
    );
}

#[tokio::test]
async fn the_queue_report_has_no_journal_in_memory() {
    let host = TestHost::with(Host::builder()).await;
    let mut conn = host.raw().await;
    let report = conn.call("srvQueuePrint", 1, json!(null)).await;
    assert_eq!(report["resultJob"]["journal"], Value::Null, "{report}");
    assert_eq!(report["resultJob"]["connections"], 1, "{report}");
}

#[tokio::test]
async fn a_slow_jobber_does_not_stall_other_types() {
    let gate = Gate::new();
    let host = TestHost::with(Host::builder().jobber("slow", gate.handler())).await;
    let mut conn = host.raw().await;
    conn.send("slow", 1, json!(null)).await;
    gate.next_start().await;
    for i in 2..50 {
        assert!(conn.call("ping", i, json!(null)).await["resultJob"]["pong"].is_u64());
    }
    gate.release(1);
    assert_eq!(conn.next().await["queryIndex"], 1);
}

#[tokio::test]
async fn a_disconnect_drops_queued_requests_and_discards_the_running_ones_result() {
    let gate = Gate::new();
    let host = TestHost::with(Host::builder().jobber("slow", gate.handler())).await;
    let mut leaving = host.raw().await;
    for i in 1..=3 {
        leaving.send("slow", i, json!(null)).await;
    }
    assert_eq!(gate.next_start().await, 1);
    drop(leaving);
    let mut observer = host.raw().await;
    within(async {
        while observer.call("srvQueuePrint", 0, json!(null)).await["resultJob"]["connections"] != 1
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    gate.release(1);
    // The lane is free again and serves others; the leaver's queued requests never ran.
    let mut staying = host.raw().await;
    staying.send("slow", 10, json!(null)).await;
    assert_eq!(gate.next_start().await, 10);
    gate.release(1);
    assert_eq!(staying.next().await["resultJob"]["done"], 10);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_retrying_jobber_is_tried_five_times_then_fails_with_its_reason() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let builder = Host::builder().jobber("flaky", move |req: Request| {
        counted.fetch_add(1, Ordering::SeqCst);
        let attempt = req.attempt();
        async move { Err::<Value, _>(JobError::retry(format!("busy on attempt {attempt}"))) }
    });
    let host = TestHost::with(builder).await;
    let response = host.raw().await.call("flaky", 1, json!(null)).await;
    assert_eq!(code(&response), "jobber_failed");
    let err = response["resultJob"]["err"].as_str().unwrap();
    assert!(err.contains("busy on attempt 5"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_retry_goes_to_the_back_of_the_lane_and_can_succeed() {
    let builder = Host::builder().jobber("third-time", |req: Request| async move {
        match req.attempt() {
            1 | 2 => Err(JobError::retry("not yet")),
            n => Ok(json!({ "attempt": n })),
        }
    });
    let host = TestHost::with(builder).await;
    let mut conn = host.raw().await;
    let response = conn.call("third-time", 1, json!(null)).await;
    assert_eq!(response["resultJob"]["attempt"], 3);
}

#[tokio::test]
async fn a_final_failure_is_not_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let builder = Host::builder().jobber("broken", move |_req: Request| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<Value, _>(JobError::fail("no such seat")) }
    });
    let host = TestHost::with(builder).await;
    let response = host.raw().await.call("broken", 1, json!(null)).await;
    assert_eq!(code(&response), "jobber_failed");
    assert_eq!(response["resultJob"]["err"], "no such seat");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_jobber_past_its_deadline_answers_timeout_and_the_lane_moves_on() {
    let config = resman::Config {
        jobber_timeout: Duration::from_millis(100),
        ..test_config()
    };
    let builder = Host::builder().jobber("stuck", |req: Request| async move {
        if req.query_index().as_u64() == Some(1) {
            std::future::pending::<()>().await;
        }
        Ok(json!("quick"))
    });
    let host = TestHost::start(builder, config).await;
    let mut conn = host.raw().await;
    conn.send("stuck", 1, json!(null)).await;
    conn.send("stuck", 2, json!(null)).await;
    let first = conn.next().await;
    assert_eq!(
        (first["queryIndex"].as_u64(), code(&first)),
        (Some(1), "timeout")
    );
    assert_eq!(conn.next().await["resultJob"], "quick");
}

#[tokio::test]
async fn a_panicking_jobber_answers_jobber_failed_and_the_host_serves_on() {
    let builder = Host::builder().jobber("boom", |req: Request| async move {
        if req.query_index().as_u64() == Some(1) {
            panic!("seat map corrupted");
        }
        Ok(json!("fine"))
    });
    let host = TestHost::with(builder).await;
    let mut conn = host.raw().await;
    let response = conn.call("boom", 1, json!(null)).await;
    assert_eq!(code(&response), "jobber_failed");
    assert!(response["resultJob"]["err"]
        .as_str()
        .unwrap()
        .contains("seat map corrupted"));
    assert_eq!(conn.call("boom", 2, json!(null)).await["resultJob"], "fine");
}

#[tokio::test]
async fn too_many_pending_requests_on_a_connection_are_answered_overloaded() {
    let gate = Gate::new();
    let config = resman::Config {
        max_pending_per_connection: 2,
        ..test_config()
    };
    let host = TestHost::start(Host::builder().jobber("slow", gate.handler()), config).await;
    let mut conn = host.raw().await;
    for i in 1..=3 {
        conn.send("slow", i, json!(null)).await;
    }
    let refused = conn.next().await;
    assert_eq!(
        (refused["queryIndex"].as_u64(), code(&refused)),
        (Some(3), "overloaded")
    );
    let mut other = host.raw().await;
    assert!(other.call("ping", 1, json!(null)).await["resultJob"]["pong"].is_u64());
    gate.release(2);
    let answered: Vec<u64> = [conn.next().await, conn.next().await]
        .iter()
        .map(|r| r["resultJob"]["done"].as_u64().unwrap())
        .collect();
    assert_eq!(answered, vec![1, 2]);
}

#[tokio::test]
async fn the_host_wide_bound_refuses_every_connection_once_full() {
    let gate = Gate::new();
    let config = resman::Config {
        max_pending_total: 2,
        ..test_config()
    };
    let host = TestHost::start(Host::builder().jobber("slow", gate.handler()), config).await;
    let mut first = host.raw().await;
    first.send("slow", 1, json!(null)).await;
    first.send("slow", 2, json!(null)).await;
    gate.next_start().await;
    let mut second = host.raw().await;
    assert_eq!(
        code(&second.call("ping", 3, json!(null)).await),
        "overloaded"
    );
    gate.release(2);
    first.next().await;
    first.next().await;
    assert!(second.call("ping", 4, json!(null)).await["resultJob"]["pong"].is_u64());
}
