//! The plugin's store layout, one function per kind of key:
//!
//! | key | value |
//! | --- | --- |
//! | `room/<room>` | the room, JSON: `{"capacity": 8}` or `{}` |
//! | `next-id` | the next booking id, decimal |
//! | `booking/<id>` | the booking, JSON (see `booking.rs`) |
//! | `slot/<room>/<fromMs>/<toMs>/<id>` | empty: the booking's place in its room's schedule |
//!
//! Each booking has keys of its own instead of sharing one value per room, so no value nears
//! the store's 1 MiB limit, and no two request types rewrite one value: `bookRoom` and
//! `cancelBooking` run at the same time (different types run in parallel) and the store has
//! no compare-and-set, so a shared per-room value could lose one of two concurrent updates.
//! Times in slot keys are 20-digit zero-padded, so `store::keys` lists a room's bookings in
//! order of start, and a room's schedule and clashes are read from its keys alone.

use crate::booking::Slot;

/// The key of the next booking id.
pub(crate) const NEXT_ID: &str = "next-id";

/// The key of room `room`.
pub(crate) fn room(room: &str) -> String {
    format!("room/{room}")
}

/// The key of booking `id`.
pub(crate) fn booking(id: u64) -> String {
    format!("booking/{id}")
}

/// The prefix of every slot key of `room`.
pub(crate) fn slots_of(room: &str) -> String {
    format!("slot/{room}/")
}

/// The slot key of `slot` in `room`.
pub(crate) fn slot(room: &str, slot: &Slot) -> String {
    format!(
        "slot/{room}/{:020}/{:020}/{}",
        slot.from_ms, slot.to_ms, slot.id
    )
}

/// The slot a key listed under [`slots_of`]`(room)` names; `None` for a key that is not one.
pub(crate) fn parse_slot(prefix: &str, key: &str) -> Option<Slot> {
    let mut parts = key.strip_prefix(prefix)?.split('/');
    let from_ms = parts.next()?.parse().ok()?;
    let to_ms = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some(Slot { id, from_ms, to_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_key_parses_back() {
        let slot = Slot {
            id: 17,
            from_ms: 1_000,
            to_ms: u64::MAX,
        };
        let key = super::slot("blue", &slot);
        assert_eq!(
            key,
            "slot/blue/00000000000000001000/18446744073709551615/17"
        );
        assert_eq!(parse_slot(&slots_of("blue"), &key), Some(slot));
    }

    #[test]
    fn slot_keys_sort_by_start() {
        let slot = |id, from_ms| Slot {
            id,
            from_ms,
            to_ms: from_ms + 1,
        };
        let mut keys = [
            super::slot("r", &slot(1, 900)),
            super::slot("r", &slot(2, 10_000)),
        ];
        keys.sort();
        assert!(keys[0].contains("/00000000000000000900/"), "{keys:?}");
    }

    #[test]
    fn keys_that_are_not_slots_of_the_room_do_not_parse() {
        let prefix = slots_of("blue");
        for key in [
            "slot/blue2/00000000000000000001/00000000000000000002/1",
            "slot/blue/1/2",
            "slot/blue/1/2/3/4",
            "slot/blue/x/2/3",
            "room/blue",
        ] {
            assert_eq!(parse_slot(&prefix, key), None, "{key}");
        }
    }

    #[test]
    fn the_other_keys_are_named_by_kind() {
        assert_eq!(room("blue"), "room/blue");
        assert_eq!(booking(17), "booking/17");
        assert_eq!(NEXT_ID, "next-id");
    }
}
