//! Shutdown as a value: the host runs until a future completes, so tests stop a host with a
//! channel and the binary with a signal.

use std::future::Future;

/// A future that completes on SIGINT or SIGTERM (Ctrl-C elsewhere).
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal that arrives between start-up and the first poll (say, right after "listening" is
/// logged) still shuts the host down gracefully instead of killing it.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (interrupt, terminate) => {
                    let err = interrupt.err().or(terminate.err());
                    tracing::warn!(error = ?err, "cannot watch SIGINT/SIGTERM; falling back to Ctrl-C");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
