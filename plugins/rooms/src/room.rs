//! A room as stored under `room/<name>` (its bookings live under keys of their own, see
//! `key.rs`), and the answers that describe a room.

use crate::booking::Booking;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A room's stored record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Room {
    /// How many people it seats, if known; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

impl Room {
    /// The room after an `addRoom` that gave `capacity`: a given capacity replaces the old
    /// one, an omitted one keeps it.
    pub(crate) fn updated(self, capacity: Option<u32>) -> Room {
        Room {
            capacity: capacity.or(self.capacity),
        }
    }
}

/// The `addRoom` answer: `{"room", "capacity"?, "created"}`.
pub(crate) fn added(name: &str, room: &Room, created: bool) -> Value {
    let mut answer = json!({ "room": name, "created": created });
    if let Some(capacity) = room.capacity {
        answer["capacity"] = capacity.into();
    }
    answer
}

/// The `roomSchedule` answer: `{"room", "capacity"?, "bookings"}`, bookings in order of
/// start.
pub(crate) fn schedule(name: &str, room: &Room, bookings: &[Booking]) -> Value {
    let mut answer = json!({ "room": name, "bookings": bookings });
    if let Some(capacity) = room.capacity {
        answer["capacity"] = capacity.into();
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_capacity_replaces_an_omitted_one_keeps() {
        let eight = Room { capacity: Some(8) };
        assert_eq!(eight.clone().updated(None), eight);
        assert_eq!(eight.updated(Some(4)).capacity, Some(4));
        assert_eq!(Room::default().updated(None).capacity, None);
    }

    #[test]
    fn a_room_is_stored_without_an_unknown_capacity() {
        assert_eq!(serde_json::to_string(&Room::default()).unwrap(), "{}");
        let eight: Room = serde_json::from_str(r#"{"capacity": 8}"#).unwrap();
        assert_eq!(eight.capacity, Some(8));
    }

    #[test]
    fn added_says_whether_the_room_is_new() {
        assert_eq!(
            added("blue", &Room { capacity: Some(8) }, true),
            json!({ "room": "blue", "capacity": 8, "created": true })
        );
        assert_eq!(
            added("blue", &Room::default(), false),
            json!({ "room": "blue", "created": false })
        );
    }

    #[test]
    fn schedule_lists_the_bookings() {
        let booking = Booking {
            booking: "3".into(),
            room: "blue".into(),
            from_ms: 10,
            to_ms: 20,
            who: Some("ann".into()),
        };
        assert_eq!(
            schedule("blue", &Room::default(), &[booking]),
            json!({
                "room": "blue",
                "bookings": [
                    { "booking": "3", "room": "blue", "fromMs": 10, "toMs": 20, "who": "ann" },
                ],
            })
        );
    }
}
