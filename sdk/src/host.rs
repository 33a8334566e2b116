//! The guest side of the host API: what a jobber may call back into the host for, the
//! `host` interface of `sdk/wit/resman.wit`. The last hop of the data path (jobber → host
//! API).
//!
//! In a WASM component these call the WIT imports. In a native plugin they call through the
//! [`HostApiV1`](crate::native::HostApiV1) table the host passed when it made the instance;
//! the adapter in `native/guest.rs` points this thread at that table for the length of each
//! call, because the host may call one instance from different threads (never two at once).
//! Outside a call from a host (a unit test calling `handle` directly), log lines go to
//! stderr and the clock is the system clock.

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Fine detail, normally off.
    Trace,
    /// Per-request detail.
    Debug,
    /// Lifecycle and noteworthy events.
    Info,
    /// Degraded but serving.
    Warn,
    /// An operator must act.
    Error,
}

impl Level {
    /// The level as a lowercase word, as the WIT spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Writes a line to the host's log, tagged by the host with the plugin's file and request
/// type.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Logs at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn now_ms() -> u64 {
    imp::now_ms()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::bindings::resman::jobber::host as wit;

    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }

    pub(super) fn now_ms() -> u64 {
        wit::now_ms()
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use imp::{call, enter};

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;
    use crate::native::{call_status, level, Bytes, HostApiV1};
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use std::cell::Cell;
    use std::ffi::c_void;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        /// The table of the instance this thread is serving a call on, if any.
        static CURRENT: Cell<Option<HostApiV1>> = const { Cell::new(None) };
    }

    /// Points this thread at an instance's host table until dropped; restores the previous
    /// one, so it is right even if a call unwinds.
    pub(crate) struct CallScope {
        previous: Option<HostApiV1>,
    }

    /// Enters a call on an instance whose host table is `host`.
    pub(crate) fn enter(host: HostApiV1) -> CallScope {
        CallScope {
            previous: CURRENT.replace(Some(host)),
        }
    }

    impl Drop for CallScope {
        fn drop(&mut self) {
            CURRENT.set(self.previous);
        }
    }

    fn raw(level: Level) -> u32 {
        match level {
            Level::Trace => level::TRACE,
            Level::Debug => level::DEBUG,
            Level::Info => level::INFO,
            Level::Warn => level::WARN,
            Level::Error => level::ERROR,
        }
    }

    pub(super) fn log(level: Level, message: &str) {
        match CURRENT.get() {
            // SAFETY: `CURRENT` is only set while the host is inside a call on the instance
            // this table was given with, and the host keeps the table valid until it drops
            // that instance; `message` is borrowed for the call, as `Bytes` requires.
            Some(host) => unsafe {
                (host.log)(host.ctx, raw(level), Bytes::new(message.as_bytes()))
            },
            None => eprintln!("[{}] {message}", level.as_str()),
        }
    }

    pub(super) fn now_ms() -> u64 {
        match CURRENT.get() {
            // SAFETY: as in `log`, the table is valid while `CURRENT` holds it.
            Some(host) => unsafe { (host.now_ms)(host.ctx) },
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
        }
    }

    /// Runs a `pools.*` / `store.*` operation through the host table's `call`: arguments
    /// and answer as JSON. Outside a host call there is no host to ask, which is an error.
    pub(crate) fn call<A, R, E>(op: &str, args: &A) -> Result<R, E>
    where
        A: Serialize,
        R: DeserializeOwned,
        E: DeserializeOwned + From<String>,
    {
        let Some(host) = CURRENT.get() else {
            return Err(E::from(format!(
                "{op}: the host API is only available while the host is calling the jobber"
            )));
        };
        let args = serde_json::to_vec(args).map_err(|err| E::from(err.to_string()))?;
        let mut answer = Vec::new();
        // SAFETY: as in `log`, the table is valid while `CURRENT` holds it; `op`, `args` and
        // `answer` outlive the call, and `sink` only appends the borrowed bytes to `answer`.
        let status = unsafe {
            (host.call)(
                host.ctx,
                Bytes::new(op.as_bytes()),
                Bytes::new(&args),
                (&mut answer as *mut Vec<u8>).cast(),
                sink,
            )
        };
        let malformed = |err: serde_json::Error| E::from(format!("{op}: bad answer: {err}"));
        if status == call_status::OK {
            serde_json::from_slice(&answer).map_err(malformed)
        } else {
            Err(serde_json::from_slice(&answer).map_err(malformed)?)
        }
    }

    /// Copies the host's answer into the `Vec<u8>` behind `sink`.
    unsafe extern "C" fn sink(sink: *mut c_void, bytes: Bytes) {
        // SAFETY: `call` passes a live `Vec<u8>` as `sink`, and `bytes` is borrowed for this
        // call.
        unsafe { (*sink.cast::<Vec<u8>>()).extend_from_slice(bytes.as_slice()) };
    }
}
