//! [`Pools`] with its threads and a data folder.

use super::*;
use crate::pools::view::Whole;
use std::time::{Duration, Instant};

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// Polls `condition` until it holds; fails after ten seconds.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn resources(ids: &[&str]) -> Vec<(String, String)> {
    ids.iter()
        .map(|id| (id.to_string(), format!("{{\"id\":\"{id}\"}}")))
        .collect()
}

#[test]
fn leases_survive_a_reopen_and_tokens_keep_growing() {
    let dir = tempfile::tempdir().unwrap();
    let pools = Pools::open(dir.path(), Sizes::default()).unwrap();
    assert_eq!(pools.add("p", resources(&["r0", "r1"])).unwrap().0, 2);
    let (lease, seq) = pools
        .acquire(7, AcquireRequest::count("p", 1), deadline(), Whole)
        .unwrap();
    eventually("the grant is durable", || {
        pools.durability().is_durable(seq)
    });
    assert!(matches!(
        Pools::open(dir.path(), Sizes::default()),
        Err(StoreError::Locked(_))
    ));
    pools.close();
    drop(pools);

    let pools = Pools::open(dir.path(), Sizes::default()).unwrap();
    let (held, _) = pools.lease(lease.id).unwrap();
    assert_eq!(held, lease, "same resources, token and holder");
    assert_eq!(held.grants[0].data.as_str(), r#"{"id":"r0"}"#);
    let (next, _) = pools
        .acquire(8, AcquireRequest::count("p", 1), deadline(), Whole)
        .unwrap();
    assert_eq!(grants(&next), ["p/r1"]);
    assert!(next.token > lease.token && next.id > lease.id);
    pools.close();
}

#[test]
fn a_waiting_acquire_is_woken_by_a_release() {
    let dir = tempfile::tempdir().unwrap();
    let pools = Pools::open(dir.path(), Sizes::default()).unwrap();
    pools.add("p", resources(&["r0"])).unwrap();
    let (held, _) = pools
        .acquire(1, AcquireRequest::count("p", 1), deadline(), Whole)
        .unwrap();
    let waiter = {
        let pools = pools.clone();
        let request = AcquireRequest::count("p", 1).wait_ms(15_000);
        std::thread::spawn(move || pools.acquire(2, request, deadline(), Whole))
    };
    eventually("the acquire waits", || {
        pools.status("p").unwrap().0.waiting == 1
    });
    pools.release(held.id).unwrap();
    let (granted, seq) = waiter.join().unwrap().unwrap();
    assert_eq!(
        (grants(&granted), granted.holder),
        (vec!["p/r0".to_owned()], 2)
    );
    assert!(granted.token > held.token);
    eventually("the grant is durable", || {
        pools.durability().is_durable(seq)
    });
    pools.close();
}

/// Grants and releases, a batch at a time, until the journal has taken at least `bytes` more
/// bytes of records.
fn churn(pools: &Pools, bytes: u64) {
    let journaled = || pools.commit_report().unwrap().bytes;
    let until = journaled() + bytes;
    while journaled() < until {
        let mut last = 0;
        for client in 0..50 {
            let (lease, _) = pools
                .acquire(client, AcquireRequest::count("p", 1), deadline(), Whole)
                .unwrap();
            last = pools.release(lease.id).unwrap().1;
        }
        eventually("the churn is durable", || {
            pools.durability().is_durable(last)
        });
    }
}

/// A state whose snapshot is larger than half the roll size is rolled once the journal holds
/// twice the snapshot, not at the roll size, where writing snapshots would cost more than the
/// journal they replace.
#[test]
fn a_large_state_is_rolled_at_twice_its_snapshot_not_at_the_roll_size() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = Sizes::rolling_at(Sizes::MIN_ROLL_BYTES);
    let pools = Pools::open(dir.path(), sizes).unwrap();
    let padding = "x".repeat(40);
    let ids: Vec<String> = (0..3_000).map(|i| format!("r{i:05}-{padding}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (_, added) = pools.add("p", resources(&ids)).unwrap();
    eventually("the add is durable", || {
        pools.durability().is_durable(added)
    });
    // The add alone fills the first journal past the roll size, so the commit after it
    // rolls the journal; the keeper writes the snapshot meanwhile, and commits go on until
    // it is (a commit may gather more than one churn's records, so churning once is not
    // enough to be sure a commit follows the add's).
    let report = || pools.commit_report().unwrap();
    eventually("the add is rolled into a snapshot", || {
        churn(&pools, 1);
        report().snapshots >= 2
    });
    assert_eq!(
        report().snapshots,
        2,
        "the journal is not rolled again while the roll's snapshot is written"
    );
    let snapshot = report().snapshot_bytes;
    assert!(
        snapshot > 4 * Sizes::MIN_ROLL_BYTES,
        "the state outgrows the roll size: {snapshot} bytes"
    );
    churn(&pools, 2 * Sizes::MIN_ROLL_BYTES);
    pools.close();
    assert_eq!(
        report().snapshots,
        2,
        "twice the roll size of journal is far less than twice the snapshot: no roll"
    );
    drop(pools);

    let pools = Pools::open(dir.path(), sizes).unwrap();
    let report = || pools.commit_report().unwrap();
    let snapshot = report().snapshot_bytes;
    assert_eq!(report().snapshots, 1, "the snapshot written at start");
    churn(&pools, 2 * snapshot + Sizes::MIN_ROLL_BYTES);
    eventually("twice the snapshot of journal is rolled", || {
        report().snapshots == 2
    });
    pools.close();
}

/// Small journals roll into snapshots many times under a stream of grants and releases; the
/// keeper extends, creates ahead and snapshots meanwhile, and a reopen finds every lease.
#[test]
fn rolling_journals_keep_every_lease_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = Sizes::rolling_at(Sizes::MIN_ROLL_BYTES);
    let pools = Pools::open(dir.path(), sizes).unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    pools.add("p", resources(&ids)).unwrap();
    let mut held = std::collections::VecDeque::new();
    let mut last = 0;
    for client in 0..3_000 {
        let (lease, seq) = pools
            .acquire(client, AcquireRequest::count("p", 1), deadline(), Whole)
            .unwrap();
        held.push_back(lease);
        last = seq;
        if held.len() > 20 {
            let oldest = held.pop_front().unwrap();
            last = pools.release(oldest.id).unwrap().1;
        }
        // A journal is rolled between commits, so commits are kept small: one that
        // gathered every record would leave nothing to roll before it.
        if client % 100 == 99 {
            eventually("the stream so far is durable", || {
                pools.durability().is_durable(last)
            });
        }
    }
    eventually("the last release is durable", || {
        pools.durability().is_durable(last)
    });
    let before = pools.status("p").unwrap().0;
    pools.close();
    drop(pools);

    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("snapshot.json")).unwrap()).unwrap();
    assert!(
        snapshot["seq"].as_u64().unwrap() > 1_000,
        "the journal was rolled under load: {}",
        snapshot["seq"]
    );
    let journals = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("journal-")
        })
        .count();
    assert!(
        journals <= 2,
        "rolled journals are removed, {journals} left"
    );

    let pools = Pools::open(dir.path(), sizes).unwrap();
    assert_eq!(pools.status("p").unwrap().0, before);
    for lease in &held {
        assert_eq!(&pools.lease(lease.id).unwrap().0, lease);
    }
    pools.close();
}
