//! Connects to a resman server, sends `ping` and `cntResponse`, and prints the results.
//!
//! ```sh
//! cargo run -p resman-examples --example client              # SOCKET_HOST/SOCKET_PORT from .env
//! cargo run -p resman-examples --example client -- 127.0.0.1:41969
//! ```

use anyhow::Context;
use resman_sdk::client::Client;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = match std::env::args().nth(1) {
        Some(addr) => Client::connect(addr.as_str()).await,
        None => Client::connect_env().await,
    }
    .context("connecting to the resman server")?;

    let pong = client.request("ping", ()).await.context("ping")?;
    println!("ping        -> {pong}");

    // Both in flight at once on the one connection.
    let (a, b) = tokio::join!(
        client.request("cntResponse", json!({})),
        client.request("cntResponse", json!({})),
    );
    println!("cntResponse -> {}", a.context("cntResponse")?);
    println!("cntResponse -> {}", b.context("cntResponse")?);
    Ok(())
}
