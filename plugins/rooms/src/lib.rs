//! Meeting rooms booked by time range, on the plugin's durable key-value store (namespace:
//! the plugin file's name, `rooms`). Bookings are ranges of time rather than things held,
//! so rooms live in the store, not in a pool; a booking is refused when it shares a
//! millisecond with another booking of its room, and ranges are half-open, so back-to-back
//! bookings fit.
//!
//! Booking ids come from a counter in the store (`next-id`), so they stay unique across
//! restarts and reloads; a cancelled booking's id is never handed out again.
//!
//! # Layout
//!
//! - `payload.rs`: each request type's payload, parsed and checked (`invalid` otherwise).
//! - `key.rs`: the store layout, and why each booking has keys of its own.
//! - `booking.rs`: bookings, their slots, clashes and schedule windows.
//! - `room.rs`: the room record and the answers about a room.
//! - here: the jobber, one thin handler per request type, and the store calls.

mod booking;
mod key;
mod payload;
mod room;

use booking::{Booking, Slot};
use resman_sdk::{export_jobber, store, JobError, Jobber, Request};
use room::Room;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Serves the meeting rooms' request types; stateless, the rooms live in the store.
#[derive(Default)]
struct Rooms;

impl Jobber for Rooms {
    const TYPES: &'static [&'static str] =
        &["addRoom", "bookRoom", "cancelBooking", "roomSchedule"];

    type Answer = Value;

    fn handle(&mut self, request: Request) -> Result<Self::Answer, JobError> {
        let payload = request.payload.as_str();
        match request.kind {
            "addRoom" => add_room(payload),
            "bookRoom" => book_room(payload),
            "cancelBooking" => cancel_booking(payload),
            "roomSchedule" => room_schedule(payload),
            other => Err(JobError::fail(format!("rooms does not serve {other}"))),
        }
    }
}

fn add_room(payload: &str) -> Result<Value, JobError> {
    let add = payload::add_room(payload)?;
    let key = key::room(&add.room);
    let existing: Option<Room> = read(&key)?;
    let created = existing.is_none();
    let room = existing.unwrap_or_default().updated(add.capacity);
    write(&key, &room)?;
    Ok(room::added(&add.room, &room, created))
}

/// Writes the booking's record before its slot, so a crash in between leaves a record no
/// schedule shows and `cancelBooking` can still remove, never a slot without a record.
fn book_room(payload: &str) -> Result<Value, JobError> {
    let book = payload::book_room(payload)?;
    existing_room(&book.room)?;
    booking::check_free(&book.room, &slots(&book.room), book.from_ms, book.to_ms)?;
    let id = take_next_id()?;
    let booking = Booking {
        booking: id.to_string(),
        room: book.room,
        from_ms: book.from_ms,
        to_ms: book.to_ms,
        who: book.who,
    };
    write(&key::booking(id), &booking)?;
    stored(store::set(&key::slot(&booking.room, &booking.slot()?), ""))?;
    to_answer(&booking)
}

/// Deletes the slot before the record: the reverse of `book_room`.
fn cancel_booking(payload: &str) -> Result<Value, JobError> {
    let id = payload::cancel_booking(payload)?;
    let key = key::booking(id);
    let booking: Booking = read(&key)?.ok_or_else(|| payload::no_booking(&id.to_string()))?;
    stored(store::delete(&key::slot(&booking.room, &booking.slot()?)))?;
    stored(store::delete(&key))?;
    Ok(json!({
        "cancelled": booking.booking,
        "room": booking.room,
        "fromMs": booking.from_ms,
        "toMs": booking.to_ms,
    }))
}

/// A slot whose record is gone was cancelled while this ran; it is left out.
fn room_schedule(payload: &str) -> Result<Value, JobError> {
    let ask = payload::room_schedule(payload)?;
    let room = existing_room(&ask.room)?;
    let mut bookings = Vec::new();
    for slot in booking::within(&slots(&ask.room), ask.from_ms, ask.to_ms) {
        if let Some(booking) = read::<Booking>(&key::booking(slot.id))? {
            bookings.push(booking);
        }
    }
    Ok(room::schedule(&ask.room, &room, &bookings))
}

/// Room `name`, or `not_found`.
fn existing_room(name: &str) -> Result<Room, JobError> {
    read(&key::room(name))?.ok_or_else(|| JobError::reject("not_found", format!("no room {name}")))
}

/// The slots of `room`'s bookings, from its slot keys.
fn slots(room: &str) -> Vec<Slot> {
    let prefix = key::slots_of(room);
    store::keys(&prefix)
        .iter()
        .filter_map(|key| key::parse_slot(&prefix, key))
        .collect()
}

/// The next booking id, counted up in the store before it is used, so no id is handed out
/// twice even if the request fails after this.
fn take_next_id() -> Result<u64, JobError> {
    let id: u64 = match store::get(key::NEXT_ID) {
        None => 1,
        Some(text) => text
            .parse()
            .map_err(|_| JobError::fail(format!("stored {} is not a number", key::NEXT_ID)))?,
    };
    let next = id
        .checked_add(1)
        .ok_or_else(|| JobError::fail("booking ids ran out"))?;
    stored(store::set(key::NEXT_ID, &next.to_string()))?;
    Ok(id)
}

/// The JSON value of `key`, if set.
fn read<T: DeserializeOwned>(key: &str) -> Result<Option<T>, JobError> {
    let Some(text) = store::get(key) else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| JobError::fail(format!("stored {key} is not what this plugin wrote: {err}")))
}

/// Sets `key` to `value` as JSON.
fn write<T: Serialize>(key: &str, value: &T) -> Result<(), JobError> {
    let text = serde_json::to_string(value).map_err(|err| JobError::fail(err.to_string()))?;
    stored(store::set(key, &text))
}

fn to_answer<T: Serialize>(value: &T) -> Result<Value, JobError> {
    serde_json::to_value(value).map_err(|err| JobError::fail(err.to_string()))
}

/// A store write that failed is the host's failure, not the client's: `jobber_failed`.
fn stored<T>(result: Result<T, String>) -> Result<T, JobError> {
    result.map_err(|err| JobError::fail(format!("the store refused a write: {err}")))
}

export_jobber!(Rooms);

/// The SDK's allocator: every key and value the store hands back is a short string in guest
/// memory, which its size classes serve faster than the target's dlmalloc.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: resman_sdk::alloc::GuestAllocator = resman_sdk::alloc::GuestAllocator::new();
