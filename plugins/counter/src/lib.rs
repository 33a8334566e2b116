//! The original package's example jobber, as a plugin: request type `cntResponse`, answered
//! `{"cnt": n}` with n = 0, 1, 2, ... The count lives in the jobber, so it is per instance:
//! the host keeps one instance per request type, and a fresh instance (after a reload or a
//! crash) starts again at 0, like the original's `counter++` closure after a restart.

use resman_sdk::{export_jobber, JobError, Jobber, Request};
use serde::Serialize;

/// Counts the `cntResponse` requests this instance has served.
#[derive(Default)]
struct Counter {
    /// The number the next request gets.
    next: u64,
}

/// The answer, `{"cnt": n}`.
#[derive(Serialize)]
struct Count {
    cnt: u64,
}

impl Jobber for Counter {
    const TYPES: &'static [&'static str] = &["cntResponse"];

    type Answer = Count;

    fn handle(&mut self, _request: Request) -> Result<Self::Answer, JobError> {
        let cnt = self.next;
        self.next += 1;
        Ok(Count { cnt })
    }
}

export_jobber!(Counter);
