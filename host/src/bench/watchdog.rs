//! The stall watchdog: a connection waits on its socket without a timeout of its own, so one
//! task for the whole run watches the shared response count and gives up on a server that
//! stops answering, or that still owes responses long after `--duration` ended.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::connection::Shared;

/// Fails when no response has arrived for `timeout`, or when responses are still
/// outstanding `timeout` after the deadline. Never returns otherwise.
pub(super) async fn watchdog(
    shared: &Shared,
    deadline: Option<Instant>,
    timeout: Duration,
) -> anyhow::Error {
    let tick = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut seen = shared.progress.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let progress = shared.progress.load(Ordering::Relaxed);
        if progress != seen {
            seen = progress;
            since = now;
        } else if now - since >= timeout {
            return anyhow!(
                "no response from the server for {} ({progress} responses received); giving up",
                humantime::format_duration(timeout)
            );
        }
        if let Some(deadline) = deadline {
            if now >= deadline + timeout {
                return anyhow!(
                    "responses still outstanding {} after the end of the run; giving up",
                    humantime::format_duration(timeout)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_server::{args, failure, Mode};
    use super::super::BenchArgs;
    use super::*;

    #[test]
    fn a_silent_server_times_out() {
        let msg = failure(Mode::Silent, |s| BenchArgs {
            timeout: Duration::from_millis(300),
            ..args(s, 2, 2, 100)
        });
        assert!(msg.contains("no response from the server"), "{msg}");
    }

    #[test]
    fn a_silent_server_times_out_in_duration_mode() {
        let msg = failure(Mode::Silent, |s| BenchArgs {
            timeout: Duration::from_millis(300),
            duration: Some(Duration::from_millis(100)),
            ..args(s, 2, 2, 100)
        });
        assert!(msg.contains("giving up"), "{msg}");
    }
}
