//! The original README's example: a `cntResponse` jobber that counts its requests.

use std::sync::atomic::{AtomicU64, Ordering};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counter = AtomicU64::new(0);
    let server = resman::Host::builder()
        .jobber("cntResponse", move |_req| {
            let cnt = counter.fetch_add(1, Ordering::Relaxed);
            async move { Ok(serde_json::json!({ "type": "cntResponse", "cnt": cnt })) }
        })
        .bind()
        .await?;
    println!("serving cntResponse on {}", server.local_addr());
    server.run(resman::shutdown::signal()).await?;
    Ok(())
}
