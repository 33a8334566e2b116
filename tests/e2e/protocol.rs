//! The wire protocol's rules (PROTOCOL.md), one test each.

use crate::support::{code, test_config, TestHost};
use resman::Host;
use serde_json::{json, Value};
use std::collections::HashSet;

fn echo_host() -> resman::HostBuilder {
    Host::builder().jobber("echo", |req: resman::Request| async move {
        let payload: Value = req.payload()?;
        Ok(json!({ "echo": payload }))
    })
}

#[tokio::test]
async fn separator_and_newline_inside_json_strings_are_payload() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    let tricky = "crab 🦀 inside, a \"quote\\\" and a\nnewline";
    let response = conn.call("echo", 1, json!({ "s": tricky })).await;
    assert_eq!(response["resultJob"]["echo"]["s"], tricky);

    let mut lines = host.raw().await.newline();
    let response = lines.call("echo", 2, json!({ "s": tricky })).await;
    assert_eq!(response["resultJob"]["echo"]["s"], tricky);
}

#[tokio::test]
async fn responses_never_hold_a_raw_crab_so_blind_splitting_works() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    conn.send("echo", 1, json!("🦀🦀")).await;
    let raw = conn.next_raw().await.unwrap();
    assert!(!String::from_utf8(raw.clone()).unwrap().contains('🦀'));
    let response: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(response["resultJob"]["echo"], "🦀🦀");
}

#[tokio::test]
async fn a_message_written_one_byte_at_a_time_is_read_whole() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    let message = "{\"type\":\"echo\",\"queryIndex\":7,\"payload\":\"é🦀\"}🦀";
    for byte in message.as_bytes() {
        conn.send_bytes(&[*byte]).await;
    }
    let response = conn.next().await;
    assert_eq!(response["queryIndex"], 7);
    assert_eq!(response["resultJob"]["echo"], "é🦀");
}

#[tokio::test]
async fn partial_messages_from_two_clients_do_not_mix() {
    let host = TestHost::with(echo_host()).await;
    let (mut a, mut b) = (host.raw().await, host.raw().await);
    let msg_a = "{\"type\":\"echo\",\"queryIndex\":1,\"payload\":\"from a\"}🦀".as_bytes();
    let msg_b = "{\"type\":\"echo\",\"queryIndex\":2,\"payload\":\"from b\"}🦀".as_bytes();
    a.send_bytes(&msg_a[..20]).await;
    b.send_bytes(&msg_b[..30]).await;
    a.send_bytes(&msg_a[20..]).await;
    b.send_bytes(&msg_b[30..]).await;
    let (ra, rb) = (a.next().await, b.next().await);
    assert_eq!(
        (ra["queryIndex"].clone(), ra["resultJob"]["echo"].clone()),
        (json!(1), json!("from a"))
    );
    assert_eq!(
        (rb["queryIndex"].clone(), rb["resultJob"]["echo"].clone()),
        (json!(2), json!("from b"))
    );
}

#[tokio::test]
async fn malformed_json_is_answered_and_the_connection_keeps_serving() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    conn.send_bytes("{not json at all}🦀".as_bytes()).await;
    let error = conn.next().await;
    assert_eq!(error["type"], "errMsgFromClient");
    assert_eq!(error["queryIndex"], Value::Null);
    assert_eq!(code(&error), "bad_request");
    assert!(error["resultJob"]["err"].as_str().unwrap().contains("JSON"));
    let pong = conn.call("ping", 2, json!(null)).await;
    assert!(pong["resultJob"]["pong"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn missing_fields_are_bad_requests_that_echo_what_they_can() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    conn.send_bytes("{\"queryIndex\":5}🦀".as_bytes()).await;
    let no_type = conn.next().await;
    assert_eq!(
        (no_type["type"].as_str(), no_type["queryIndex"].as_u64()),
        (Some("errMsgFromClient"), Some(5))
    );
    assert_eq!(code(&no_type), "bad_request");
    conn.send_bytes("{\"type\":\"echo\"}🦀".as_bytes()).await;
    let no_index = conn.next().await;
    assert_eq!(no_index["queryIndex"], Value::Null);
    assert!(no_index["resultJob"]["err"]
        .as_str()
        .unwrap()
        .contains("queryIndex"));
    conn.send_bytes("{\"type\":\"echo\",\"queryIndex\":6}🦀".as_bytes())
        .await;
    let no_payload = conn.next().await;
    assert_eq!(
        no_payload["resultJob"]["echo"],
        Value::Null,
        "payload is optional"
    );
}

#[tokio::test]
async fn an_oversized_message_drops_its_client_and_no_one_else() {
    let config = resman::Config {
        max_message_bytes: 1024,
        ..test_config()
    };
    let host = TestHost::start(echo_host(), config).await;
    let mut bystander = host.raw().await;
    bystander
        .send_bytes(b"{\"type\":\"echo\",\"queryIndex\":1,\"payload\":\"")
        .await;
    let mut offender = host.raw().await;
    let huge = format!(
        "{{\"type\":\"echo\",\"queryIndex\":1,\"payload\":\"{}",
        "x".repeat(4096)
    );
    offender.send_bytes(huge.as_bytes()).await;
    let error = offender.next().await;
    assert_eq!(code(&error), "message_too_large");
    assert!(offender.closed().await, "the offender is disconnected");
    bystander.send_bytes("still here\"}🦀".as_bytes()).await;
    assert_eq!(bystander.next().await["resultJob"]["echo"], "still here");
}

#[tokio::test]
async fn a_complete_oversized_message_is_refused_too() {
    let config = resman::Config {
        max_message_bytes: 256,
        ..test_config()
    };
    let host = TestHost::start(echo_host(), config).await;
    let mut conn = host.raw().await;
    let message = format!(
        "{{\"type\":\"echo\",\"queryIndex\":1,\"payload\":\"{}\"}}🦀",
        "y".repeat(300)
    );
    conn.send_bytes(message.as_bytes()).await;
    assert_eq!(code(&conn.next().await), "message_too_large");
    assert!(conn.closed().await);
}

#[tokio::test]
async fn unknown_types_are_answered_and_leave_no_state() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    for i in 0..50 {
        let response = conn.call(&format!("random{i}"), i, json!({})).await;
        assert_eq!(response["type"], format!("random{i}"));
        assert_eq!(code(&response), "unknown_type");
        assert!(response["resultJob"]["err"]
            .as_str()
            .unwrap()
            .contains("no handler"));
    }
    let queues = conn.call("srvQueuePrint", 99, json!(null)).await;
    let types: HashSet<&str> = queues["resultJob"]["queues"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(types, HashSet::from(["echo", "ping"]));
}

/// A connection keeps the names of the types it sent lately; a type spelled with escapes is
/// the same type, and a type seen before is still itself after many others came between.
#[tokio::test]
async fn a_type_is_the_same_however_spelled_and_however_many_others_came_between() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    let spelled = "{\"type\":\"\\u0065ch\\u006f\",\"queryIndex\":1,\"payload\":1}🦀";
    conn.send_bytes(spelled.as_bytes()).await;
    let response = conn.next().await;
    assert_eq!(response["type"], "echo");
    assert_eq!(response["resultJob"]["echo"], 1);
    for i in 0..40 {
        let response = conn.call(&format!("other{i}"), i, json!({})).await;
        assert_eq!(code(&response), "unknown_type");
        let response = conn.call("echo", 100 + i, json!(i)).await;
        assert_eq!(response["resultJob"]["echo"], i);
    }
}

#[tokio::test]
async fn a_thousand_pipelined_requests_are_answered_exactly_once() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    let mut batch = Vec::new();
    for i in 0..1000u64 {
        let kind = if i % 2 == 0 { "ping" } else { "echo" };
        batch.extend(conn.framed(kind, i, json!(i)));
    }
    conn.send_bytes(&batch).await;
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let response = conn.next().await;
        let index = response["queryIndex"].as_u64().unwrap();
        if index % 2 == 1 {
            assert_eq!(response["resultJob"]["echo"], index);
        }
        assert!(seen.insert(index), "query index {index} answered twice");
    }
    assert_eq!(seen.len(), 1000);
    let last = conn.call("ping", 5000, json!(null)).await;
    assert_eq!(
        last["resultJob"]["pong"], 501,
        "ping counted each of its 500 requests once"
    );
}

/// More than a read takes at once, sent in one write: a read that fills the host's buffer
/// must be followed by another without waiting for the socket to signal again (it will not:
/// readiness is edge-triggered), or the rest would never be read.
#[tokio::test]
async fn requests_larger_together_than_a_read_are_all_answered() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    let mut burst = Vec::new();
    for i in 0..6u64 {
        let text = "x".repeat(100_000 + i as usize);
        burst.extend(conn.framed("echo", i, json!(text)));
    }
    conn.send_bytes(&burst).await;
    for i in 0..6u64 {
        let response = conn.next().await;
        assert_eq!(response["queryIndex"], i);
        let echoed = response["resultJob"]["echo"].as_str().unwrap();
        assert_eq!(echoed.len(), 100_000 + i as usize);
    }
    let last = conn.call("ping", 6, json!(null)).await;
    assert!(last["resultJob"]["pong"].is_number());
}

#[tokio::test]
async fn newline_framing_is_answered_in_newlines() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    conn.send_bytes(b"{\"type\":\"ping\",\"queryIndex\":1}\n{\"type\":\"echo\",\"queryIndex\":2,\"payload\":[1]}\n")
        .await;
    let mut conn = conn.newline();
    let (first, second) = (conn.next().await, conn.next().await);
    assert_eq!(first["resultJob"]["pong"], 1);
    assert_eq!(second["resultJob"]["echo"], json!([1]));
}

#[tokio::test]
async fn queue_print_reports_every_type() {
    let host = TestHost::with(echo_host()).await;
    let mut conn = host.raw().await;
    let response = conn.call("srvQueuePrint", 1, json!(null)).await;
    assert_eq!(response["type"], "srvQueuePrint");
    assert_eq!(
        response["resultJob"]["queues"]["echo"],
        json!({"queued": 0, "inFlight": 0})
    );
}

#[tokio::test]
async fn a_result_carrying_type_moves_it_to_the_top_level() {
    let builder = Host::builder().jobber("cntResponse", |_req| async {
        Ok(json!({ "type": "cntResponse", "cnt": 0 }))
    });
    let host = TestHost::with(builder).await;
    let response = host.raw().await.call("cntResponse", 3, json!(null)).await;
    assert_eq!(
        response,
        json!({"type": "cntResponse", "queryIndex": 3, "resultJob": {"cnt": 0}})
    );
}
