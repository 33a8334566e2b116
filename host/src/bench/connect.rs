//! Opening a run's connections: the address is resolved once and every connection goes to the
//! first resolved address that accepted, so that all of them load the same server; each
//! connect is bounded by `--timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::net::TcpStream;

/// Opens `count` connections, resolving `addr` once.
pub(super) async fn connect_all(
    addr: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<TcpStream>> {
    let candidates: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    let mut target = None;
    let mut last_error = None;
    for candidate in &candidates {
        match connect(*candidate, timeout).await {
            Ok(stream) => {
                target = Some((*candidate, stream));
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some((target, first)) = target else {
        return Err(last_error.unwrap_or_else(|| anyhow!("no address")))
            .with_context(|| format!("connecting to {addr}"));
    };
    let mut streams = Vec::with_capacity(count);
    streams.push(first);
    for i in 1..count {
        let stream = connect(target, timeout)
            .await
            .with_context(|| format!("opening connection {i} to {addr} ({target})"))?;
        streams.push(stream);
    }
    Ok(streams)
}

async fn connect(target: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(target))
        .await
        .map_err(|_| {
            anyhow!(
                "connect timed out after {}",
                humantime::format_duration(timeout)
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::super::{run, BenchArgs};

    #[test]
    fn a_refused_connection_fails_clearly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = run(BenchArgs {
            addr: Some(format!("127.0.0.1:{port}")),
            ..BenchArgs::default()
        })
        .unwrap_err();
        let msg = format!("{error:#}");
        assert!(
            msg.contains(&format!("connecting to 127.0.0.1:{port}")),
            "{msg}"
        );
    }
}
