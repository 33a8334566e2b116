//! What each request type's payload may say, parsed and checked before the store is read;
//! a payload that does not fit is answered `invalid` naming the request type. Unknown fields
//! are refused, which catches typos such as `from` for `fromMs`.

use resman_sdk::{parse_object as parse, JobError};
use serde::Deserialize;
use std::fmt::Display;

/// The longest room name, in bytes.
const MAX_ROOM_BYTES: usize = 100;

/// The longest `who`, in bytes.
const MAX_WHO_BYTES: usize = 200;

/// An `addRoom` payload.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = r#"an object {"room": "<name>", "capacity": n}"#)]
pub(crate) struct AddRoom {
    /// The room's name.
    pub room: String,
    /// How many people it seats.
    pub capacity: Option<u32>,
}

/// A `bookRoom` payload.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[serde(expecting = r#"an object {"room": "<name>", "fromMs": n, "toMs": n}"#)]
pub(crate) struct BookRoom {
    /// The room.
    pub room: String,
    /// When the booking begins.
    pub from_ms: u64,
    /// When it ends (exclusive).
    pub to_ms: u64,
    /// Who books.
    pub who: Option<String>,
}

/// A `roomSchedule` payload, its window filled in: the whole of time when not given.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[serde(expecting = r#"an object {"room": "<name>"}"#)]
pub(crate) struct RoomSchedule {
    /// The room.
    pub room: String,
    /// Bookings ending after this.
    #[serde(default)]
    pub from_ms: u64,
    /// Bookings beginning before this.
    #[serde(default = "end_of_time")]
    pub to_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = r#"an object {"booking": "<id>"}"#)]
struct CancelBooking {
    booking: String,
}

fn end_of_time() -> u64 {
    u64::MAX
}

/// An `addRoom` payload.
///
/// # Errors
///
/// `invalid` for a bad room name or a capacity of 0.
pub(crate) fn add_room(payload: &str) -> Result<AddRoom, JobError> {
    let add: AddRoom = parse("addRoom", payload)?;
    check_room(&add.room).map_err(|why| invalid("addRoom", why))?;
    if add.capacity == Some(0) {
        return Err(invalid("addRoom", "capacity must be at least 1"));
    }
    Ok(add)
}

/// A `bookRoom` payload.
///
/// # Errors
///
/// `invalid` for a bad room name, `fromMs` not before `toMs`, or an overlong `who`.
pub(crate) fn book_room(payload: &str) -> Result<BookRoom, JobError> {
    const KIND: &str = "bookRoom";
    let book: BookRoom = parse(KIND, payload)?;
    check_room(&book.room).map_err(|why| invalid(KIND, why))?;
    check_range(book.from_ms, book.to_ms).map_err(|why| invalid(KIND, why))?;
    if book
        .who
        .as_ref()
        .is_some_and(|who| who.len() > MAX_WHO_BYTES)
    {
        return Err(invalid(
            KIND,
            format_args!("who is longer than {MAX_WHO_BYTES} bytes"),
        ));
    }
    Ok(book)
}

/// The booking id of a `cancelBooking` payload.
///
/// # Errors
///
/// `invalid` for a missing or empty `booking`; `not_found` for one that is no booking id
/// this plugin hands out (a decimal number, without leading zeros).
pub(crate) fn cancel_booking(payload: &str) -> Result<u64, JobError> {
    let CancelBooking { booking } = parse("cancelBooking", payload)?;
    if booking.is_empty() {
        return Err(invalid("cancelBooking", "booking is empty"));
    }
    match booking.parse::<u64>() {
        Ok(id) if id.to_string() == booking => Ok(id),
        _ => Err(no_booking(&booking)),
    }
}

/// A `roomSchedule` payload.
///
/// # Errors
///
/// `invalid` for a bad room name or a window whose `fromMs` is not before its `toMs`.
pub(crate) fn room_schedule(payload: &str) -> Result<RoomSchedule, JobError> {
    let ask: RoomSchedule = parse("roomSchedule", payload)?;
    check_room(&ask.room).map_err(|why| invalid("roomSchedule", why))?;
    check_range(ask.from_ms, ask.to_ms).map_err(|why| invalid("roomSchedule", why))?;
    Ok(ask)
}

/// The `not_found` answer for booking `id`.
pub(crate) fn no_booking(id: &str) -> JobError {
    JobError::reject(
        "not_found",
        format!("no booking {id:?}: never made, or cancelled already"),
    )
}

/// An `invalid` rejection of a `kind` request.
fn invalid(kind: &str, message: impl Display) -> JobError {
    JobError::invalid(format!("{kind}: {message}"))
}

/// A room name is part of store keys (`room/<name>`, `slot/<name>/...`), so it holds no `/`.
fn check_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > MAX_ROOM_BYTES {
        return Err(format!("room must be 1 to {MAX_ROOM_BYTES} bytes"));
    }
    if room.chars().any(|c| c == '/' || c.is_control()) {
        return Err(format!(
            "room {room:?} must not hold / or control characters"
        ));
    }
    Ok(())
}

fn check_range(from_ms: u64, to_ms: u64) -> Result<(), String> {
    if from_ms < to_ms {
        Ok(())
    } else {
        Err(format!("fromMs ({from_ms}) must be before toMs ({to_ms})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(err: JobError) -> (String, String) {
        match err {
            JobError::Reject { code, message } => (code, message),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn assert_invalid<T: std::fmt::Debug>(
        parse: fn(&str) -> Result<T, JobError>,
        cases: &[(&str, &str)],
    ) {
        for (payload, expected) in cases {
            let (code, message) = rejection(parse(payload).unwrap_err());
            assert_eq!(code, "invalid", "{payload}: {message}");
            assert!(message.contains(expected), "{payload}: {message}");
        }
    }

    #[test]
    fn add_room_reads_room_and_capacity() {
        let add = add_room(r#"{"room": "blue", "capacity": 8}"#).unwrap();
        assert_eq!((add.room.as_str(), add.capacity), ("blue", Some(8)));
        assert_eq!(add_room(r#"{"room": "blue"}"#).unwrap().capacity, None);
    }

    #[test]
    fn add_room_refuses_bad_names_and_capacities() {
        let long = format!(r#"{{"room": "{}"}}"#, "r".repeat(101));
        assert_invalid(
            add_room,
            &[
                (r#"{"room": ""}"#, "addRoom: room must be 1 to 100 bytes"),
                (&long, "room must be 1 to 100 bytes"),
                (r#"{"room": "a/b"}"#, "must not hold /"),
                (
                    r#"{"room": "blue", "capacity": 0}"#,
                    "capacity must be at least 1",
                ),
                (r#"{"room": "blue", "capacity": -1}"#, "bad payload"),
                (r#"{"room": "blue", "seats": 8}"#, "unknown field `seats`"),
                ("null", r#"expected an object {"room""#),
            ],
        );
    }

    #[test]
    fn book_room_reads_the_range_and_who() {
        let book = book_room(r#"{"room": "blue", "fromMs": 10, "toMs": 20, "who": "ann"}"#);
        assert_eq!(
            book.unwrap(),
            BookRoom {
                room: "blue".into(),
                from_ms: 10,
                to_ms: 20,
                who: Some("ann".into()),
            }
        );
    }

    #[test]
    fn book_room_refuses_empty_and_backward_ranges() {
        let long_who = format!(
            r#"{{"room": "b", "fromMs": 1, "toMs": 2, "who": "{}"}}"#,
            "w".repeat(201)
        );
        assert_invalid(
            book_room,
            &[
                (
                    r#"{"room": "b", "fromMs": 10, "toMs": 10}"#,
                    "bookRoom: fromMs (10) must be before toMs (10)",
                ),
                (
                    r#"{"room": "b", "fromMs": 20, "toMs": 10}"#,
                    "must be before",
                ),
                (r#"{"room": "b", "fromMs": 10}"#, "missing field `toMs`"),
                (r#"{"room": "b", "fromMs": 1.5, "toMs": 3}"#, "bad payload"),
                (
                    r#"{"room": "b", "from": 1, "toMs": 3}"#,
                    "unknown field `from`",
                ),
                (&long_who, "who is longer than 200 bytes"),
            ],
        );
    }

    #[test]
    fn cancel_booking_takes_a_decimal_id() {
        assert_eq!(cancel_booking(r#"{"booking": "17"}"#).unwrap(), 17);
        assert_invalid(
            cancel_booking,
            &[
                (r#"{"booking": ""}"#, "cancelBooking: booking is empty"),
                (r#"{"booking": 17}"#, "bad payload"),
            ],
        );
    }

    #[test]
    fn a_booking_id_that_was_never_handed_out_is_not_found() {
        for id in ["x", "+17", "017", "-1", "99999999999999999999999"] {
            let payload = format!(r#"{{"booking": "{id}"}}"#);
            let (code, message) = rejection(cancel_booking(&payload).unwrap_err());
            assert_eq!(code, "not_found", "{id}");
            assert!(
                message.contains("never made, or cancelled already"),
                "{message}"
            );
        }
    }

    #[test]
    fn room_schedule_defaults_to_the_whole_of_time() {
        let ask = room_schedule(r#"{"room": "blue"}"#).unwrap();
        assert_eq!((ask.from_ms, ask.to_ms), (0, u64::MAX));
        let ask = room_schedule(r#"{"room": "blue", "fromMs": 5, "toMs": 9}"#).unwrap();
        assert_eq!((ask.from_ms, ask.to_ms), (5, 9));
        let ask = room_schedule(r#"{"room": "blue", "fromMs": 5}"#).unwrap();
        assert_eq!((ask.from_ms, ask.to_ms), (5, u64::MAX));
    }

    #[test]
    fn room_schedule_refuses_an_empty_window() {
        assert_invalid(
            room_schedule,
            &[
                (
                    r#"{"room": "blue", "fromMs": 9, "toMs": 9}"#,
                    "must be before",
                ),
                (
                    r#"{"room": "blue", "toMs": 0}"#,
                    "fromMs (0) must be before toMs (0)",
                ),
                ("{}", "roomSchedule: bad payload: missing field `room`"),
            ],
        );
    }
}
