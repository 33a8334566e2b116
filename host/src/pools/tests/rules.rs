//! The rules of the `pools` interface, one at a time.

use super::*;
use crate::pools::state::{MAX_NAME_BYTES, MAX_VALUE_BYTES};

fn with_pool(ids: &[&str]) -> TestState {
    let mut t = TestState::new();
    t.add("p", ids);
    t
}

#[test]
fn a_repeated_request_id_returns_the_same_lease_and_grants_nothing() {
    let mut t = with_pool(&["r0", "r1", "r2"]);
    let first = t.grant(1, AcquireRequest::count("p", 1).request_id("job-7"));
    let records = t.log.len();
    let again = t.grant(1, AcquireRequest::count("p", 2).request_id("job-7"));
    assert_eq!(again, first, "same id, token and resources");
    assert_eq!(t.log.len(), records, "nothing new was journaled");
    assert_eq!(t.free("p"), ["r1", "r2"]);
}

#[test]
fn a_request_id_repeated_after_its_lease_ended_is_a_conflict() {
    let mut t = with_pool(&["r0"]);
    let lease = t.grant(1, AcquireRequest::count("p", 1).request_id("job-7"));
    t.release(lease.id).unwrap();
    let again = t.acquire(1, AcquireRequest::count("p", 1).request_id("job-7"));
    assert!(matches!(again, Err(PoolError::Conflict(_))), "{again:?}");
    assert_eq!(t.free("p"), ["r0"]);
}

#[test]
fn a_request_id_that_is_still_waiting_is_not_granted_twice() {
    let mut t = with_pool(&["r0"]);
    let holder = t.grant(1, AcquireRequest::count("p", 1));
    t.wait(2, AcquireRequest::count("p", 1).request_id("job-7"));
    let twin = t.acquire(
        3,
        AcquireRequest::count("p", 1)
            .request_id("job-7")
            .wait_ms(1_000),
    );
    assert!(matches!(twin, Err(PoolError::Conflict(_))), "{twin:?}");
    t.release(holder.id).unwrap();
    t.add("p", &["r1"]);
    let woken = t.take_woken();
    let [(_, Ok(granted))] = &woken[..] else {
        panic!("one grant, got {woken:?}")
    };
    assert_eq!(granted, &["p/r0"]);
    let again = t.grant(3, AcquireRequest::count("p", 1).request_id("job-7"));
    assert_eq!(
        grants(&again),
        ["p/r0"],
        "the repeat answers the waiter's lease"
    );
    assert_eq!(t.free("p"), ["r1"]);
    t.release(again.id).unwrap();
    let restored = State::restore(t.state.snapshot());
    assert!(restored.is_ok(), "{:?}", restored.err());
}

#[test]
fn bad_acquires_are_refused_with_the_matching_error_and_change_nothing() {
    let mut t = with_pool(&["r0", "r1"]);
    t.add("q", &["s0"]);
    let cases = [
        (AcquireRequest::count("p", 0), "invalid"),
        (AcquireRequest::of(Vec::new()), "invalid"),
        (AcquireRequest::count("nowhere", 1), "unknown_pool"),
        (
            AcquireRequest::of(vec![Want::ids("p", ["r9"])]),
            "unknown_resource",
        ),
        (
            AcquireRequest::of(vec![Want::ids("p", ["r0", "r0"])]),
            "invalid",
        ),
        (
            AcquireRequest::of(vec![Want::count("p", 1), Want::count("p", 1)]),
            "invalid",
        ),
        (AcquireRequest::count("p", 1).ttl_ms(0), "invalid"),
        (AcquireRequest::count("p", 3), "unavailable"),
        (AcquireRequest::count("p", 1).request_id(""), "invalid"),
    ];
    let mut mismatched = Want::ids("p", ["r0"]);
    mismatched.count = 2;
    let cases = cases
        .into_iter()
        .chain([(AcquireRequest::of(vec![mismatched]), "invalid")]);
    for (request, expected) in cases {
        let refused = t.acquire(1, request.clone());
        assert_eq!(
            refused.as_ref().map_err(kind).err(),
            Some(expected),
            "{request:?}"
        );
    }
    assert!(
        t.log.len() == 2 && t.state.holdings().is_empty(),
        "only the adds were made"
    );
    assert_eq!(kind(&t.release(42).unwrap_err()), "unknown_lease");
    let renewed = t.state.renew(42, 0, t.now, &mut t.log).unwrap_err();
    assert_eq!(kind(&renewed), "invalid");
    let free = t
        .state
        .release_resource("p", "r0", t.now, &mut t.log, &mut t.woken);
    assert_eq!(kind(&free.unwrap_err()), "unknown_lease");
    let unknown = t
        .state
        .release_resource("p", "r9", t.now, &mut t.log, &mut t.woken);
    assert_eq!(kind(&unknown.unwrap_err()), "unknown_resource");
}

#[test]
fn adding_skips_ids_already_present_and_refuses_bad_names() {
    let mut t = with_pool(&["r0", "r1"]);
    assert_eq!(t.add("p", &["r1", "r2", "r2"]), 1);
    assert_eq!(t.free("p"), ["r0", "r1", "r2"]);
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    for (pool, id) in [
        ("", "r"),
        ("p", ""),
        (long.as_str(), "r"),
        ("p", long.as_str()),
    ] {
        let resources = vec![(id.to_owned(), Data::null())];
        let added = t
            .state
            .add(pool, resources, t.now, &mut t.log, &mut t.woken);
        assert_eq!(
            added.map_err(|err| kind(&err)),
            Err("invalid"),
            "{pool:.8}/{id:.8}"
        );
    }
}

#[test]
fn a_multi_pool_acquire_is_all_or_nothing() {
    let mut t = with_pool(&["r0", "r1"]);
    t.add("q", &["s0"]);
    let both = || AcquireRequest::of(vec![Want::count("p", 2), Want::count("q", 2)]);
    let short = t.acquire(1, both());
    assert!(matches!(short, Err(PoolError::Unavailable(_))), "{short:?}");
    assert!(t.state.holdings().is_empty(), "nothing of p was taken");
    assert_eq!(t.free("p"), ["r0", "r1"]);
    t.add("q", &["s1"]);
    assert_eq!(
        grants(&t.grant(1, both())),
        ["p/r0", "p/r1", "q/s0", "q/s1"]
    );
}

#[test]
fn free_resources_are_granted_in_the_order_they_were_freed() {
    let mut t = with_pool(&["r0", "r1", "r2"]);
    let first = t.grant(1, AcquireRequest::count("p", 1));
    let second = t.grant(1, AcquireRequest::count("p", 1));
    t.release(second.id).unwrap();
    t.release(first.id).unwrap();
    assert_eq!(t.free("p"), ["r2", "r1", "r0"]);
    let next = t.grant(1, AcquireRequest::count("p", 2));
    assert_eq!(grants(&next), ["p/r2", "p/r1"]);
    assert!(next.token > second.token, "tokens only grow");
}

/// A wants 3 with 1 free; nothing later overtakes it, waiting or not, and it is not
/// starved by small requests.
#[test]
fn a_waiter_keeps_its_place_against_later_acquires() {
    let mut t = with_pool(&["r0", "r1", "r2", "r3"]);
    let two = t.grant(1, AcquireRequest::count("p", 2));
    let one = t.grant(1, AcquireRequest::count("p", 1));
    let a = t.wait(2, AcquireRequest::count("p", 3));
    let later = t.acquire(3, AcquireRequest::count("p", 1));
    assert!(
        matches!(later, Err(PoolError::Unavailable(_))),
        "r3 is free but A is first"
    );
    let b = t.wait(3, AcquireRequest::count("p", 1));
    assert_eq!(t.state.status("p").unwrap().waiting, 2);
    t.release(two.id).unwrap();
    assert_eq!(
        t.take_woken(),
        [(a, Ok(vec!["p/r3".into(), "p/r0".into(), "p/r1".into()]))]
    );
    t.release(one.id).unwrap();
    assert_eq!(t.take_woken(), [(b, Ok(vec!["p/r2".into()]))]);
    assert_eq!(t.state.status("p").unwrap().waiting, 0);
}

#[test]
fn a_waiter_on_two_pools_holds_back_later_waiters_on_either() {
    let mut t = with_pool(&["r0"]);
    t.add("q", &["s0"]);
    let held = t.grant(1, AcquireRequest::count("p", 1));
    let both = t.wait(
        2,
        AcquireRequest::of(vec![Want::count("p", 1), Want::count("q", 1)]),
    );
    let q_only = t.wait(3, AcquireRequest::count("q", 1));
    t.add("z", &["z0"]);
    assert!(
        t.take_woken().is_empty(),
        "q is free, but the earlier waiter wants it too"
    );
    t.release(held.id).unwrap();
    assert_eq!(
        t.take_woken(),
        [(both, Ok(vec!["p/r0".into(), "q/s0".into()]))]
    );
    t.add("q", &["s1"]);
    assert_eq!(t.take_woken(), [(q_only, Ok(vec!["q/s1".into()]))]);
}

#[test]
fn cancelling_a_waiter_lets_the_one_behind_it_through() {
    let mut t = with_pool(&["r0", "r1"]);
    t.grant(1, AcquireRequest::count("p", 1));
    let a = t.wait(2, AcquireRequest::count("p", 2));
    let b = t.wait(3, AcquireRequest::count("p", 1));
    assert!(t.cancel(a));
    assert_eq!(t.take_woken(), [(b, Ok(vec!["p/r1".into()]))]);
    assert!(!t.cancel(a), "already gone");
    assert!(!t.cancel(b), "already answered");
}

#[test]
fn removing_a_resource_answers_the_waiters_that_want_it() {
    let mut t = with_pool(&["r0", "r1"]);
    t.add("q", &["s0", "s1"]);
    t.grant(1, AcquireRequest::count("p", 1));
    let doomed = AcquireRequest::of(vec![Want::count("p", 2), Want::ids("q", ["s0"])]);
    let doomed = t.wait(2, doomed);
    let behind = t.wait(3, AcquireRequest::count("q", 1));
    let removed = t
        .state
        .remove("q", &["s0".into()], false, t.now, &mut t.log, &mut t.woken);
    assert_eq!(removed, Ok(1));
    let woken = t.take_woken();
    assert_eq!(
        woken,
        [
            (doomed, Err("unknown_resource")),
            (behind, Ok(vec!["q/s1".into()]))
        ]
    );
}

#[test]
fn removing_a_held_resource_needs_force_which_ends_its_lease() {
    let mut t = with_pool(&["r0", "r1", "r2"]);
    let lease = t.grant(1, AcquireRequest::count("p", 2));
    let ids = ["r2".to_owned(), "r0".to_owned()];
    let refused = t
        .state
        .remove("p", &ids, false, t.now, &mut t.log, &mut t.woken);
    assert!(
        matches!(refused, Err(PoolError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(t.free("p"), ["r2"], "nothing was removed");
    let forced = t
        .state
        .remove("p", &ids, true, t.now, &mut t.log, &mut t.woken);
    assert_eq!(forced, Ok(2));
    assert_eq!(kind(&t.state.lease(lease.id).unwrap_err()), "unknown_lease");
    assert_eq!(
        t.free("p"),
        ["r1"],
        "the lease's other resource is free again"
    );
}

#[test]
fn client_gone_ends_its_waiters_and_release_on_disconnect_leases_only() {
    let mut t = with_pool(&["r0", "r1", "r2"]);
    let fleeting = t.grant(1, AcquireRequest::count("p", 1).release_on_disconnect());
    let kept = t.grant(1, AcquireRequest::count("p", 1));
    let other = t.grant(2, AcquireRequest::count("p", 1).release_on_disconnect());
    let mine = t.wait(1, AcquireRequest::count("p", 2));
    let theirs = t.wait(2, AcquireRequest::count("p", 1));
    t.state.client_gone(1, t.now, &mut t.log, &mut t.woken);
    assert_eq!(
        t.take_woken(),
        [
            (mine, Err("unavailable")),
            (theirs, Ok(vec!["p/r0".into()]))
        ]
    );
    assert!(t.state.lease(fleeting.id).is_err());
    assert!(t.state.lease(kept.id).is_ok() && t.state.lease(other.id).is_ok());
}

#[test]
fn a_lease_expires_at_exactly_its_deadline() {
    let mut t = with_pool(&["r0"]);
    let lease = t.grant(1, AcquireRequest::count("p", 1).ttl_ms(100));
    assert_eq!(lease.expires_at_ms, Some(1_100));
    assert_eq!(t.state.next_expiry(), Some(1_100));
    t.log.clear();
    t.state.expire(1_099, &mut t.log, &mut t.woken);
    assert!(t.log.is_empty() && t.state.lease(lease.id).is_ok());
    t.state.expire(1_100, &mut t.log, &mut t.woken);
    assert_eq!(t.log, [Record::Release { lease: lease.id }]);
    assert_eq!(t.state.next_expiry(), None);
}

#[test]
fn renewing_moves_the_deadline_from_now() {
    let mut t = with_pool(&["r0"]);
    let lease = t.grant(1, AcquireRequest::count("p", 1).ttl_ms(100));
    let renewed = t.state.renew(lease.id, 500, 1_050, &mut t.log).unwrap();
    assert_eq!(renewed.expires_at_ms, Some(1_550));
    t.state.expire(1_100, &mut t.log, &mut t.woken);
    assert!(t.state.lease(lease.id).is_ok(), "the old deadline is gone");
    t.state.expire(1_550, &mut t.log, &mut t.woken);
    assert!(t.state.lease(lease.id).is_err());
}

#[test]
fn a_restart_ends_expired_and_release_on_disconnect_leases_and_keeps_the_others() {
    let mut t = with_pool(&["r0", "r1", "r2", "r3"]);
    let expired = t.grant(
        1,
        AcquireRequest::count("p", 1).ttl_ms(100).request_id("old"),
    );
    let fleeting = t.grant(2, AcquireRequest::count("p", 1).release_on_disconnect());
    let timed = t.grant(3, AcquireRequest::count("p", 1).ttl_ms(10_000));
    let plain = t.grant(4, AcquireRequest::count("p", 1));
    let text = snapshot_text(&t.state);
    let mut state = State::restore(serde_json::from_str(&text).unwrap()).unwrap();
    let mut log = Vec::new();
    state.after_restart(2_000, &mut log);
    let ended = [
        Record::Release { lease: expired.id },
        Record::Release { lease: fleeting.id },
    ];
    assert_eq!(log, ended);
    assert_eq!(state.lease(timed.id).unwrap(), timed);
    assert_eq!(state.lease(plain.id).unwrap(), plain);
    let repeat = state.acquire(
        1,
        AcquireRequest::count("p", 1).request_id("old"),
        2_000,
        &mut log,
    );
    assert!(matches!(repeat, Err(PoolError::Conflict(_))), "{repeat:?}");
    let next = state.acquire(5, AcquireRequest::count("p", 1), 2_000, &mut log);
    let Ok(Acquired::Granted(next)) = next else {
        panic!("{next:?}")
    };
    let next = state.view(next).unwrap();
    assert!(next.token > plain.token && next.id > plain.id);
}

#[test]
fn store_set_if_changes_a_value_only_from_the_expected_one() {
    let mut t = TestState::new();
    let set_if = |t: &mut TestState, expected: Option<&str>, value: Option<&str>| {
        let before = t.log.len();
        let done = t
            .state
            .kv_set_if("ns", "k", expected, value, &mut t.log)
            .unwrap();
        assert_eq!(
            t.log.len() - before,
            usize::from(done),
            "journaled only if done"
        );
        done
    };
    assert!(!set_if(&mut t, Some("v0"), Some("v1")), "not set is not v0");
    assert!(set_if(&mut t, None, Some("v1")), "created when not set");
    assert!(!set_if(&mut t, None, Some("v2")), "set is not 'not set'");
    assert!(!set_if(&mut t, Some("v0"), Some("v2")));
    assert_eq!(t.state.kv_get("ns", "k").as_deref(), Some("v1"));
    assert!(set_if(&mut t, Some("v1"), Some("v2")));
    assert!(set_if(&mut t, Some("v2"), None), "removed");
    assert_eq!(t.state.kv_get("ns", "k"), None);
    assert_eq!(t.state.kv_get("other", "k"), None, "namespaces stay apart");
    let long = "x".repeat(MAX_VALUE_BYTES + 1);
    let refused = t.state.kv_set_if("ns", "k", None, Some(&long), &mut t.log);
    assert!(refused.unwrap_err().contains("more than"));
}

#[test]
fn store_keys_come_in_order_by_prefix_and_namespace() {
    let mut t = TestState::new();
    for key in ["b", "a2", "a1", "a10", "ab", ""] {
        t.state.kv_set("one", key, key, &mut t.log).unwrap();
    }
    t.state.kv_set("two", "a0", "x", &mut t.log).unwrap();
    assert_eq!(t.state.kv_keys("one", "a"), ["a1", "a10", "a2", "ab"]);
    assert_eq!(
        t.state.kv_keys("one", ""),
        ["", "a1", "a10", "a2", "ab", "b"]
    );
    assert_eq!(t.state.kv_keys("two", "a"), ["a0"]);
    assert!(t.state.kv_keys("three", "").is_empty());
    assert!(t.state.kv_delete("one", "a1", &mut t.log));
    assert!(!t.state.kv_delete("one", "a1", &mut t.log));
    assert_eq!(t.state.kv_get("one", "a1"), None);
    assert_eq!(t.state.kv_get("one", "a2").as_deref(), Some("a2"));
}

#[test]
fn store_keys_and_values_have_size_limits() {
    let mut t = TestState::new();
    let key = "k".repeat(MAX_NAME_BYTES);
    let value = "v".repeat(MAX_VALUE_BYTES);
    assert!(t.state.kv_set("ns", &key, &value, &mut t.log).is_ok());
    let long_key = "k".repeat(MAX_NAME_BYTES + 1);
    assert!(t.state.kv_set("ns", &long_key, "v", &mut t.log).is_err());
    let long_value = "v".repeat(MAX_VALUE_BYTES + 1);
    assert!(t.state.kv_set("ns", "k", &long_value, &mut t.log).is_err());
    assert_eq!(t.log.len(), 1, "refused writes are not journaled");
    assert_eq!(t.state.kv_keys("ns", ""), [key]);
}

#[test]
fn release_in_ends_only_leases_wholly_of_its_pool() {
    let mut t = with_pool(&["r0"]);
    t.add("q", &["s0"]);
    let mine = t.grant(1, AcquireRequest::count("p", 1));
    let theirs = t.grant(1, AcquireRequest::count("q", 1));
    let both = AcquireRequest::of(vec![Want::count("p", 1), Want::count("q", 1)]);
    t.add("p", &["r1"]);
    t.add("q", &["s1"]);
    let mixed = t.grant(1, both);
    let records = t.log.len();
    for lease in [theirs.id, mixed.id, 42] {
        let refused = t
            .state
            .release_in("p", lease, t.now, &mut t.log, &mut t.woken);
        assert_eq!(
            kind(&refused.unwrap_err()),
            "unknown_lease",
            "lease {lease}"
        );
    }
    assert_eq!(t.log.len(), records, "nothing was released");
    let released = t
        .state
        .release_in("p", mine.id, t.now, &mut t.log, &mut t.woken)
        .unwrap();
    assert_eq!(released, mine);
    assert_eq!(t.free("p"), ["r0"]);
    assert_eq!(
        t.state.holdings().len(),
        3,
        "the other leases hold their three"
    );
}

#[test]
fn release_single_ends_only_a_lease_of_one_resource_of_its_pool() {
    let mut t = with_pool(&["r0", "r1", "r2"]);
    let pair = t.grant(1, AcquireRequest::count("p", 2));
    let one = t.grant(1, AcquireRequest::count("p", 1));
    let records = t.log.len();
    let refused = t
        .state
        .release_single("p", pair.id, t.now, &mut t.log, &mut t.woken);
    assert_eq!(kind(&refused.unwrap_err()), "invalid");
    let refused = t
        .state
        .release_single("q", one.id, t.now, &mut t.log, &mut t.woken);
    assert_eq!(kind(&refused.unwrap_err()), "unknown_lease");
    assert_eq!(t.log.len(), records, "nothing was released");
    let released = t
        .state
        .release_single("p", one.id, t.now, &mut t.log, &mut t.woken)
        .unwrap();
    assert_eq!(t.free("p"), ["r2"]);
    assert_eq!((released.lease, released.token), (one.id, one.token));
    assert_eq!(&*released.id, "r2");
    assert_eq!(Some(released), one.single(Some("p")), "the lease in brief");
    assert_eq!(pair.single(Some("p")), None, "two resources are not single");
    assert_eq!(one.single(Some("q")), None, "nor one of another pool");
}
