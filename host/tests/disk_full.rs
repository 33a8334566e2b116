//! A full disk pauses the pools rather than stopping them. The host runs with a file size
//! limit (`RLIMIT_FSIZE`: a write past it fails with `EFBIG`, as a write to a full disk fails
//! with `ENOSPC`) small enough that the journal cannot grow to hold what a client adds. The
//! commit that finds no room waits, its answer held, while the host goes on serving; once
//! the limit is raised (an operator freed space) every held answer arrives, and all of it is
//! on disk: a SIGKILL and a restart keep it.

mod support;

use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{connect, until_served, with_proxy_pool, Served, DEADLINE};

/// The host's file size limit: room for a few batches of proxies, not all of them.
const FILE_LIMIT: u64 = 512 << 10;
/// Batches of proxies the client adds, each journaled as one record of about 20 KiB.
const BATCHES: usize = 48;
const PER_BATCH: usize = 1000;

fn serve(dir: &std::path::Path, limited: bool) -> Served {
    // Journals grow 256 KiB at a time and are not rolled before the test ends.
    Served::durable(dir, 4 << 20, |command| {
        if limited {
            limit_file_size(command);
        }
    })
}

/// Starts the command with a soft file size limit of [`FILE_LIMIT`] (the hard limit stays,
/// so that the test may raise the soft one) and SIGXFSZ ignored, so that a write past the
/// limit fails rather than kills.
fn limit_file_size(command: &mut Command) {
    let hook = || {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: between fork and exec only async-signal-safe calls are made: getrlimit,
        // setrlimit and signal, on memory of this closure.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = FILE_LIMIT.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0
                || libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe calls (see above).
    unsafe {
        command.pre_exec(hook);
    }
}

/// Raises the host's soft file size limit to its hard limit: room on the disk again.
fn make_room(served: &Served) {
    let pid = i32::try_from(served.child.id()).expect("a pid");
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads and writes only the rlimit passed to it.
    let raised = unsafe {
        libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) == 0
        }
    };
    assert!(raised, "prlimit: {}", std::io::Error::last_os_error());
}

fn batch(n: usize) -> Value {
    let proxies: Vec<String> = (0..PER_BATCH)
        .map(|i| format!("10.{}.{}.{}:3128", n, i >> 8, i & 255))
        .collect();
    json!({ "proxies": proxies })
}

/// The host's journal report, from `srvQueuePrint`.
async fn journal(client: &resman_sdk::client::Client) -> Value {
    let report = client.request("srvQueuePrint", json!({})).await;
    report.expect("srvQueuePrint")["journal"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_wait_for_room_on_the_disk_and_go_on_once_there_is_some() {
    let dir = tempfile::tempdir().expect("temp dir");
    with_proxy_pool(dir.path());
    let host = serve(dir.path(), true);
    let admin = connect(&host).await;
    until_served(&admin).await;

    let adder = connect(&host).await;
    let adding = tokio::spawn(async move {
        for n in 0..BATCHES {
            let added = adder.request("addProxy", batch(n)).await;
            assert_eq!(added.expect("addProxy")["added"], PER_BATCH, "batch {n}");
        }
    });
    let started = Instant::now();
    while journal(&admin).await["waitingForRoom"] != true {
        assert!(!adding.is_finished(), "every batch fit: raise BATCHES");
        assert!(
            started.elapsed() < DEADLINE,
            "the journal never ran out of room"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The host goes on serving while the commit waits: this grant is made, and held.
    let getter = connect(&host).await;
    let getting = tokio::spawn(async move {
        let answer = getter.request("getProxy", json!({ "requestId": "while-full" }));
        answer.await.expect("getProxy")
    });
    assert!(
        !adding.is_finished(),
        "the batch that found no room is still waiting"
    );
    make_room(&host);
    adding.await.expect("every batch added");
    let granted = getting.await.expect("the grant");
    assert_eq!(journal(&admin).await["waitingForRoom"], false);

    host.kill();
    let host = serve(dir.path(), false);
    let client = connect(&host).await;
    until_served(&client).await;
    let status = client.request("proxyStatus", json!({})).await;
    let status = status.expect("proxyStatus");
    let free = status["free"].as_array().expect("free").len();
    let held = status["held"].as_array().expect("held");
    assert_eq!(
        free + held.len(),
        BATCHES * PER_BATCH,
        "every batch is on disk"
    );
    let again = client.request("getProxy", json!({ "requestId": "while-full" }));
    let again = again.await.expect("the repeated getProxy");
    assert_eq!(again["lease"], granted["lease"], "the grant is on disk");
    assert_eq!(held.len(), 1);
}
