//! A booking: a room held for the half-open time range `[fromMs, toMs)`, so one booking may
//! end the millisecond the next begins. The stored record is also the answer; a [`Slot`] is
//! the part of it a room's slot keys carry, enough to find clashes without reading records.

use resman_sdk::JobError;
use serde::{Deserialize, Serialize};

/// The most bookings a room may hold. `bookRoom` lists a room's slot keys to find clashes,
/// so this bounds what one request reads; cancelled bookings do not count.
pub(crate) const MAX_BOOKINGS_PER_ROOM: usize = 10_000;

/// A booking as stored under `booking/<id>` and as answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Booking {
    /// Its id, the decimal number from the store's `next-id` counter.
    pub booking: String,
    /// The room.
    pub room: String,
    /// When it begins, milliseconds since the Unix epoch.
    pub from_ms: u64,
    /// When it ends (exclusive).
    pub to_ms: u64,
    /// Who booked, if the request said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
}

impl Booking {
    /// Its slot in its room's schedule.
    ///
    /// # Errors
    ///
    /// A failure if the stored id is not a number, which this plugin never writes.
    pub(crate) fn slot(&self) -> Result<Slot, JobError> {
        let id = self.booking.parse().map_err(|_| {
            JobError::fail(format!("stored booking has a bad id {:?}", self.booking))
        })?;
        Ok(Slot {
            id,
            from_ms: self.from_ms,
            to_ms: self.to_ms,
        })
    }
}

/// A booking's place in its room's schedule, as a slot key spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The booking's id.
    pub id: u64,
    /// When it begins.
    pub from_ms: u64,
    /// When it ends (exclusive).
    pub to_ms: u64,
}

impl Slot {
    /// Whether it shares a millisecond with `[from_ms, to_ms)`.
    pub(crate) fn overlaps(&self, from_ms: u64, to_ms: u64) -> bool {
        self.from_ms < to_ms && from_ms < self.to_ms
    }
}

/// Whether `room`, holding `slots`, can take a booking of `[from_ms, to_ms)`.
///
/// # Errors
///
/// `conflict` naming the first booking it overlaps; `unavailable` when the room holds
/// [`MAX_BOOKINGS_PER_ROOM`] bookings already.
pub(crate) fn check_free(
    room: &str,
    slots: &[Slot],
    from_ms: u64,
    to_ms: u64,
) -> Result<(), JobError> {
    if let Some(taken) = slots.iter().find(|slot| slot.overlaps(from_ms, to_ms)) {
        return Err(JobError::reject(
            "conflict",
            format!(
                "room {room} is booked from {} to {} by booking {}",
                taken.from_ms, taken.to_ms, taken.id
            ),
        ));
    }
    if slots.len() >= MAX_BOOKINGS_PER_ROOM {
        return Err(JobError::reject(
            "unavailable",
            format!("room {room} holds {MAX_BOOKINGS_PER_ROOM} bookings, the most a room may"),
        ));
    }
    Ok(())
}

/// The slots that share a millisecond with `[from_ms, to_ms)`, in order of start.
pub(crate) fn within(slots: &[Slot], from_ms: u64, to_ms: u64) -> Vec<Slot> {
    let mut within: Vec<Slot> = slots
        .iter()
        .filter(|slot| slot.overlaps(from_ms, to_ms))
        .copied()
        .collect();
    within.sort_by_key(|slot| (slot.from_ms, slot.id));
    within
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slot(id: u64, from_ms: u64, to_ms: u64) -> Slot {
        Slot { id, from_ms, to_ms }
    }

    fn rejection(err: JobError) -> (String, String) {
        match err {
            JobError::Reject { code, message } => (code, message),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn back_to_back_bookings_do_not_overlap() {
        let ten_to_eleven = slot(1, 10, 11);
        assert!(!ten_to_eleven.overlaps(11, 12));
        assert!(!ten_to_eleven.overlaps(9, 10));
        assert!(check_free("blue", &[ten_to_eleven], 11, 12).is_ok());
        assert!(check_free("blue", &[ten_to_eleven], 0, 10).is_ok());
    }

    #[test]
    fn any_shared_millisecond_is_a_clash() {
        let taken = slot(1, 10, 20);
        for (from, to) in [(10, 20), (5, 11), (19, 30), (12, 13), (0, 100)] {
            assert!(taken.overlaps(from, to), "[{from}, {to})");
        }
    }

    #[test]
    fn a_clash_names_the_booking_it_hits() {
        let slots = [slot(3, 0, 5), slot(7, 10, 20), slot(9, 20, 30)];
        let (code, message) = rejection(check_free("blue", &slots, 15, 25).unwrap_err());
        assert_eq!(code, "conflict");
        assert_eq!(message, "room blue is booked from 10 to 20 by booking 7");
    }

    #[test]
    fn a_full_room_is_unavailable() {
        let slots: Vec<Slot> = (0..MAX_BOOKINGS_PER_ROOM as u64)
            .map(|n| slot(n, n, n + 1))
            .collect();
        let end = MAX_BOOKINGS_PER_ROOM as u64;
        let (code, message) = rejection(check_free("blue", &slots, end, end + 1).unwrap_err());
        assert_eq!(code, "unavailable");
        assert!(message.contains("10000 bookings"), "{message}");
    }

    #[test]
    fn within_keeps_overlapping_slots_in_order_of_start() {
        let slots = [
            slot(4, 30, 40),
            slot(1, 0, 10),
            slot(2, 10, 20),
            slot(3, 20, 30),
        ];
        let ids: Vec<u64> = within(&slots, 10, 30).iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 3]);
        let all: Vec<u64> = within(&slots, 0, u64::MAX).iter().map(|s| s.id).collect();
        assert_eq!(all, [1, 2, 3, 4]);
    }

    #[test]
    fn a_booking_is_stored_and_answered_in_camel_case() {
        let booking = Booking {
            booking: "17".into(),
            room: "blue".into(),
            from_ms: 1,
            to_ms: 2,
            who: None,
        };
        let value = serde_json::to_value(&booking).unwrap();
        assert_eq!(
            value,
            json!({ "booking": "17", "room": "blue", "fromMs": 1, "toMs": 2 })
        );
        assert_eq!(serde_json::from_value::<Booking>(value).unwrap(), booking);
        assert_eq!(booking.slot().unwrap(), slot(17, 1, 2));
    }

    #[test]
    fn a_stored_booking_with_a_bad_id_is_a_failure() {
        let booking = Booking {
            booking: "x".into(),
            room: "blue".into(),
            from_ms: 1,
            to_ms: 2,
            who: Some("ann".into()),
        };
        assert!(matches!(booking.slot(), Err(JobError::Fail(_))));
    }
}
