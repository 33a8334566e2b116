//! The Rust client against the real host: many requests in flight on one connection, typed
//! results, server errors with their codes, and a lost connection.

use crate::support::{within, TestHost};
use resman::{Host, JobError, Request};
use resman_sdk::client::{Client, ClientError};
use resman_sdk::ErrorCode;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, Debug, PartialEq)]
struct Pong {
    pong: u64,
}

fn host() -> resman::HostBuilder {
    Host::builder()
        .jobber("double", |req: Request| async move {
            let n: u64 = req.payload()?;
            Ok(json!(n * 2))
        })
        .jobber("refuse", |_req| async {
            Err::<serde_json::Value, _>(JobError::fail("sold out"))
        })
}

#[tokio::test]
async fn many_requests_in_flight_on_one_connection_get_their_own_answers() {
    let host = TestHost::with(host()).await;
    let client = Client::connect(host.addr).await.expect("connects");
    let calls = (0..500u64).map(|n| {
        let client = client.clone();
        tokio::spawn(async move { (n, client.request("double", n).await) })
    });
    for call in calls {
        let (n, answer) = within(call).await.expect("task");
        assert_eq!(answer.expect("answered"), json!(n * 2));
    }
    let pong: Pong = client.request_as("ping", ()).await.expect("typed");
    assert!(pong.pong >= 1);
}

#[tokio::test]
async fn server_errors_surface_with_their_codes() {
    let host = TestHost::with(host()).await;
    let client = Client::connect(host.addr).await.expect("connects");
    let err = client.request("refuse", ()).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::JobberFailed));
    let err = client.request("nope", ()).await.unwrap_err();
    match err {
        ClientError::Server(reply) => {
            assert_eq!(reply.code, ErrorCode::UnknownType);
            assert!(reply.err.contains("nope"));
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_host_shutting_down_fails_the_clients_later_requests_clearly() {
    let host = TestHost::with(host()).await;
    let client = Client::connect(host.addr).await.expect("connects");
    client.request("ping", ()).await.expect("served");
    host.shutdown().await.expect("stops");
    let err = client.request("ping", ()).await.unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err:?}");
}
