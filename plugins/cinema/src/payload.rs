//! What each request type's payload may say, parsed and checked before the pool is asked
//! anything; a payload that does not fit is answered `invalid` naming the request type.
//! Unknown fields are refused, which catches typos such as `seats` for `count`.

use crate::seat::{self, MAX_SEATS_PER_ROW};
use resman_sdk::{parse_object as parse, JobError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Display;

/// The longest show name, in bytes.
const MAX_SHOW_BYTES: usize = 200;

/// The most rows one `addShow` may add.
const MAX_ROWS: usize = 100;

/// The most seats one `addShow` may add.
const MAX_SEATS_PER_ADD: u32 = 10_000;

/// The longest `requestId`, in bytes.
const MAX_REQUEST_ID_BYTES: usize = 256;

/// An `addShow` payload.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = r#"an object {"show": "<name>", "rows": {"A": 12, ...}}"#)]
pub(crate) struct AddShow {
    /// The show's name.
    pub show: String,
    /// Row name → number of seats, numbered from 1.
    pub rows: BTreeMap<String, u32>,
}

/// A `buySeats` payload.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[serde(expecting = r#"an object {"show": "<name>", "count": n}"#)]
pub(crate) struct BuySeats {
    /// The show's name.
    pub show: String,
    /// How many adjacent seats.
    pub count: u32,
    /// Only this row; any row when `None`.
    pub row: Option<String>,
    /// Repeating a `buySeats` of this show with it returns the ticket it sold.
    pub request_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = r#"an object {"ticket": "<id>"}"#)]
struct Ticket {
    ticket: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = r#"an object {"show": "<name>"}"#)]
struct Show {
    show: String,
}

/// An `addShow` payload.
///
/// # Errors
///
/// `invalid` for a bad show name, no rows, a bad row name, a row of 0 or more than 1000
/// seats, or more than 100 rows or 10,000 seats in all.
pub(crate) fn add_show(payload: &str) -> Result<AddShow, JobError> {
    const KIND: &str = "addShow";
    let add: AddShow = parse(KIND, payload)?;
    check_show(&add.show).map_err(|why| invalid(KIND, why))?;
    if add.rows.is_empty() || add.rows.len() > MAX_ROWS {
        return Err(invalid(KIND, format_args!("give 1 to {MAX_ROWS} rows")));
    }
    for (row, &seats) in &add.rows {
        seat::check_row(row).map_err(|why| invalid(KIND, why))?;
        if !(1..=MAX_SEATS_PER_ROW).contains(&seats) {
            let why = format!("row {row} must have 1 to {MAX_SEATS_PER_ROW} seats, not {seats}");
            return Err(invalid(KIND, why));
        }
    }
    if add.rows.values().sum::<u32>() > MAX_SEATS_PER_ADD {
        let why = format!("at most {MAX_SEATS_PER_ADD} seats may be added at once");
        return Err(invalid(KIND, why));
    }
    Ok(add)
}

/// A `buySeats` payload.
///
/// # Errors
///
/// `invalid` for a bad show or row name, a `count` of 0 or more than a row may have, or an
/// empty or overlong `requestId`.
pub(crate) fn buy_seats(payload: &str) -> Result<BuySeats, JobError> {
    const KIND: &str = "buySeats";
    let buy: BuySeats = parse(KIND, payload)?;
    check_show(&buy.show).map_err(|why| invalid(KIND, why))?;
    if !(1..=MAX_SEATS_PER_ROW).contains(&buy.count) {
        let why = format!("count must be 1 to {MAX_SEATS_PER_ROW}, not {}", buy.count);
        return Err(invalid(KIND, why));
    }
    if let Some(row) = &buy.row {
        seat::check_row(row).map_err(|why| invalid(KIND, why))?;
    }
    match &buy.request_id {
        Some(id) if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES => Err(invalid(
            KIND,
            format_args!("requestId must be 1 to {MAX_REQUEST_ID_BYTES} bytes"),
        )),
        _ => Ok(buy),
    }
}

/// The ticket of a `refundSeats` payload.
///
/// # Errors
///
/// `invalid` for a missing or empty `ticket`.
pub(crate) fn refund_seats(payload: &str) -> Result<String, JobError> {
    let Ticket { ticket } = parse("refundSeats", payload)?;
    if ticket.is_empty() {
        return Err(invalid("refundSeats", "ticket is empty"));
    }
    Ok(ticket)
}

/// The show of a `showSeats` payload.
///
/// # Errors
///
/// `invalid` for a missing or bad show name.
pub(crate) fn show_seats(payload: &str) -> Result<String, JobError> {
    let Show { show } = parse("showSeats", payload)?;
    check_show(&show).map_err(|why| invalid("showSeats", why))?;
    Ok(show)
}

/// An `invalid` rejection of a `kind` request.
fn invalid(kind: &str, message: impl Display) -> JobError {
    JobError::invalid(format!("{kind}: {message}"))
}

/// A show name is its pool's name after `show:` and scopes request ids as
/// `show:<name>/<requestId>`, so it holds no `/` (`a/b` + `c` and `a` + `b/c` would meet).
fn check_show(show: &str) -> Result<(), String> {
    if show.is_empty() || show.len() > MAX_SHOW_BYTES {
        return Err(format!("show must be 1 to {MAX_SHOW_BYTES} bytes"));
    }
    if show.chars().any(|c| c == '/' || c.is_control()) {
        return Err(format!(
            "show {show:?} must not hold / or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_message(err: JobError) -> String {
        match err {
            JobError::Reject { code, message } if code == "invalid" => message,
            other => panic!("expected an invalid rejection, got {other:?}"),
        }
    }

    fn assert_invalid<T: std::fmt::Debug>(
        parse: fn(&str) -> Result<T, JobError>,
        cases: &[(&str, &str)],
    ) {
        for (payload, expected) in cases {
            let message = invalid_message(parse(payload).unwrap_err());
            assert!(message.contains(expected), "{payload}: {message}");
        }
    }

    #[test]
    fn add_show_reads_the_rows() {
        let add =
            add_show(r#"{"show": "hamlet-2026-12-01-19:00", "rows": {"A": 12, "B": 14}}"#).unwrap();
        assert_eq!(add.show, "hamlet-2026-12-01-19:00");
        assert_eq!(
            add.rows,
            BTreeMap::from([("A".into(), 12), ("B".into(), 14)])
        );
    }

    #[test]
    fn add_show_refuses_bad_shows_and_rows() {
        let many_rows: Vec<String> = (0..101).map(|n| format!(r#""R{n}": 1"#)).collect();
        let many_rows = format!(r#"{{"show": "s", "rows": {{{}}}}}"#, many_rows.join(","));
        assert_invalid(
            add_show,
            &[
                (
                    r#"{"show": "", "rows": {"A": 1}}"#,
                    "addShow: show must be 1 to 200 bytes",
                ),
                (r#"{"show": "a/b", "rows": {"A": 1}}"#, "must not hold /"),
                (r#"{"show": "s", "rows": {}}"#, "give 1 to 100 rows"),
                (&many_rows, "give 1 to 100 rows"),
                (
                    r#"{"show": "s", "rows": {"A-1": 3}}"#,
                    "ASCII letters or digits",
                ),
                (
                    r#"{"show": "s", "rows": {"A": 0}}"#,
                    "row A must have 1 to 1000 seats, not 0",
                ),
                (r#"{"show": "s", "rows": {"A": 1001}}"#, "not 1001"),
                (r#"{"show": "s", "rows": {"A": -1}}"#, "bad payload"),
                (r#"{"show": "s", "rows": ["A"]}"#, "bad payload"),
                (r#"{"show": "s"}"#, "missing field `rows`"),
                (
                    r#"{"show": "s", "rows": {"A": 1}, "at": 1}"#,
                    "unknown field `at`",
                ),
                ("null", r#"expected an object {"show""#),
            ],
        );
    }

    #[test]
    fn add_show_caps_the_seats_added_at_once() {
        let rows: Vec<String> = (0..11).map(|n| format!(r#""R{n}": 1000"#)).collect();
        let payload = format!(r#"{{"show": "s", "rows": {{{}}}}}"#, rows.join(","));
        assert_invalid(add_show, &[(&payload, "at most 10000 seats")]);
    }

    #[test]
    fn buy_seats_reads_count_row_and_request_id() {
        let buy = buy_seats(r#"{"show": "s", "count": 2, "row": "A", "requestId": "r1"}"#).unwrap();
        assert_eq!(
            buy,
            BuySeats {
                show: "s".into(),
                count: 2,
                row: Some("A".into()),
                request_id: Some("r1".into()),
            }
        );
        let any_row = buy_seats(r#"{"show": "s", "count": 1}"#).unwrap();
        assert_eq!((any_row.row, any_row.request_id), (None, None));
    }

    #[test]
    fn buy_seats_refuses_bad_counts_rows_and_ids() {
        let long_id = format!(
            r#"{{"show": "s", "count": 1, "requestId": "{}"}}"#,
            "r".repeat(257)
        );
        assert_invalid(
            buy_seats,
            &[
                (
                    r#"{"show": "s", "count": 0}"#,
                    "buySeats: count must be 1 to 1000, not 0",
                ),
                (r#"{"show": "s", "count": 1001}"#, "not 1001"),
                (r#"{"show": "s"}"#, "missing field `count`"),
                (
                    r#"{"show": "s", "count": 1, "row": ""}"#,
                    "ASCII letters or digits",
                ),
                (
                    r#"{"show": "s", "count": 1, "requestId": ""}"#,
                    "requestId must be 1 to 256",
                ),
                (&long_id, "requestId must be 1 to 256"),
                (r#"{"show": "s", "seats": 2}"#, "unknown field `seats`"),
                (r#"["s", 2]"#, "an array, expected an object"),
            ],
        );
    }

    #[test]
    fn refund_seats_needs_a_ticket() {
        assert_eq!(refund_seats(r#"{"ticket": "T1"}"#).unwrap(), "T1");
        assert_invalid(
            refund_seats,
            &[
                (r#"{"ticket": ""}"#, "refundSeats: ticket is empty"),
                ("{}", "missing field `ticket`"),
                (r#"{"ticket": 7}"#, "bad payload"),
            ],
        );
    }

    #[test]
    fn show_seats_needs_a_show() {
        assert_eq!(show_seats(r#"{"show": "s"}"#).unwrap(), "s");
        assert_invalid(
            show_seats,
            &[
                ("{}", "showSeats: bad payload: missing field `show`"),
                (r#"{"show": "a\nb"}"#, "control characters"),
            ],
        );
    }
}
