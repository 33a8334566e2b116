//! A ticket is a lease on seats of one show: its id is the lease id, its token the lease's
//! fencing token. Here leases are read as tickets and shaped into answers; a lease of any
//! other pool is not a ticket, so this plugin cannot end a proxy's lease.

use crate::seat;
use resman_sdk::pool::Lease;
use resman_sdk::JobError;
use serde_json::{json, Value};

/// The prefix of every show's pool name.
const SHOW_POOL_PREFIX: &str = "show:";

/// The pool of `show`.
pub(crate) fn pool(show: &str) -> String {
    format!("{SHOW_POOL_PREFIX}{show}")
}

/// The show `lease` holds seats of, if it is a ticket: every grant a seat of one show.
pub(crate) fn show_of(lease: &Lease) -> Option<&str> {
    let first = lease.grants.first()?;
    let show = first.pool.strip_prefix(SHOW_POOL_PREFIX)?;
    let one_show = lease.grants.iter().all(|grant| grant.pool == first.pool);
    let all_seats = lease
        .grants
        .iter()
        .all(|grant| seat::parse(&grant.id).is_some());
    (one_show && all_seats).then_some(show)
}

/// The `buySeats` answer: `{"show", "ticket", "token", "seats"}`.
///
/// # Errors
///
/// `conflict` if `lease` is not a ticket of `show`: the pool answered a request id that
/// some other acquire used first with that acquire's lease.
pub(crate) fn bought(show: &str, lease: &Lease) -> Result<Value, JobError> {
    if show_of(lease) != Some(show) {
        let why = format!(
            "requestId already named lease {}, not a ticket of show {show}",
            lease.id
        );
        return Err(JobError::reject("conflict", why));
    }
    Ok(json!({ "show": show, "ticket": lease.id, "token": lease.token, "seats": seats(lease) }))
}

/// The `refundSeats` answer: `{"show", "refunded"}`.
pub(crate) fn refunded(show: &str, lease: &Lease) -> Value {
    json!({ "show": show, "refunded": seats(lease) })
}

/// The seat ids of `lease`, by row then number.
fn seats(lease: &Lease) -> Vec<&str> {
    let mut seats: Vec<(&str, u32, &str)> = lease
        .grants
        .iter()
        .filter_map(|grant| seat::parse(&grant.id).map(|(row, n)| (row, n, grant.id.as_str())))
        .collect();
    seats.sort_by(|a, b| seat::seat_order(&(a.0, a.1), &(b.0, b.1)));
    seats.into_iter().map(|(_, _, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use resman_sdk::pool::Grant;

    fn lease(grants: &[(&str, &str)]) -> Lease {
        Lease {
            id: "T1".into(),
            token: 9,
            holder: 3,
            expires_at_ms: None,
            release_on_disconnect: false,
            grants: grants
                .iter()
                .map(|(pool, id)| Grant {
                    pool: (*pool).into(),
                    id: (*id).into(),
                    data: json!({}),
                })
                .collect(),
        }
    }

    #[test]
    fn a_lease_on_seats_of_one_show_is_a_ticket() {
        assert_eq!(pool("hamlet"), "show:hamlet");
        let ticket = lease(&[("show:hamlet", "A-3"), ("show:hamlet", "A-4")]);
        assert_eq!(show_of(&ticket), Some("hamlet"));
    }

    #[test]
    fn other_leases_are_not_tickets() {
        for grants in [
            &[("proxies", "a:1")][..],
            &[("show:a", "A-1"), ("show:b", "A-1")],
            &[("show:a", "popcorn")],
            &[],
        ] {
            assert_eq!(show_of(&lease(grants)), None, "{grants:?}");
        }
    }

    #[test]
    fn bought_lists_the_seats_in_hall_order() {
        let ticket = lease(&[("show:s", "A-10"), ("show:s", "A-9")]);
        assert_eq!(
            bought("s", &ticket).unwrap(),
            json!({ "show": "s", "ticket": "T1", "token": 9, "seats": ["A-9", "A-10"] })
        );
    }

    #[test]
    fn bought_refuses_a_lease_of_another_show() {
        match bought("s", &lease(&[("show:t", "A-1")])) {
            Err(JobError::Reject { code, message }) => {
                assert_eq!(code, "conflict");
                assert!(message.contains("not a ticket of show s"), "{message}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn refunded_lists_the_seats() {
        let ticket = lease(&[("show:s", "B-2"), ("show:s", "B-1")]);
        assert_eq!(
            refunded("s", &ticket),
            json!({ "show": "s", "refunded": ["B-1", "B-2"] })
        );
    }
}
