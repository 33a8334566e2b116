//! Seats of shows on the host's durable pools. A show is the pool `show:<name>`, each seat a
//! resource `<row>-<number>` (`A-7`) with data `{"row": "A", "seat": 7}`, and a ticket is a
//! lease on seats of one show, so a sale survives a host restart and no seat is sold twice.
//!
//! `buySeats` sells adjacent seats: it reads the show's status, picks the first run of free
//! seats in a row, and acquires exactly those ids in one atomic step. Requests of one type
//! run one at a time, so no other sale can take the seats between the two steps; a refund
//! freeing seats in between only frees more.
//!
//! # Layout
//!
//! - `payload.rs`: each request type's payload, parsed and checked (`invalid` otherwise).
//! - `seat.rs`: seat ids, row names and hall order.
//! - `seating.rs`: a show's free and sold seats; finding adjacent ones.
//! - `ticket.rs`: leases as tickets, shaped into answers.
//! - here: the jobber, one thin handler per request type: parse, ask the pool, shape.

mod payload;
mod seat;
mod seating;
mod ticket;

use resman_sdk::pool::{self, AcquireRequest, Lease, PoolError, PoolStatus, Want};
use resman_sdk::{export_jobber, JobError, Jobber, Request};
use seating::Seating;
use serde_json::{json, Value};

/// Serves the cinema's request types; stateless, the shows live in the host's pools.
#[derive(Default)]
struct Cinema;

impl Jobber for Cinema {
    const TYPES: &'static [&'static str] = &["addShow", "buySeats", "refundSeats", "showSeats"];

    type Answer = Value;

    fn handle(&mut self, request: Request) -> Result<Self::Answer, JobError> {
        let payload = request.payload.as_str();
        match request.kind {
            "addShow" => add_show(payload),
            "buySeats" => buy_seats(payload),
            "refundSeats" => refund_seats(payload),
            "showSeats" => show_seats(payload),
            other => Err(JobError::fail(format!("cinema does not serve {other}"))),
        }
    }
}

fn add_show(payload: &str) -> Result<Value, JobError> {
    let add = payload::add_show(payload)?;
    let added = pool::add(&ticket::pool(&add.show), &seat::resources(&add.rows))?;
    Ok(json!({ "show": add.show, "seats": added }))
}

fn buy_seats(payload: &str) -> Result<Value, JobError> {
    let buy = payload::buy_seats(payload)?;
    let pool = ticket::pool(&buy.show);
    let seating = Seating::of(&buy.show, &show_status(&buy.show, &pool)?);
    let row = buy.row.as_deref();
    let seats = match (seating.adjacent(buy.count, row), &buy.request_id) {
        (Ok(seats), _) => seats,
        // A repeat of a sale whose seats are now sold: name any seats with its request id,
        // and the pool answers the ticket it sold then (or `unavailable` if it sold none).
        (Err(err), Some(_)) => seating.any_block(buy.count, row).ok_or(err)?,
        (Err(err), None) => return Err(err),
    };
    let mut acquire = AcquireRequest::of(vec![Want::ids(pool.as_str(), seats)]);
    acquire.request_id = buy.request_id.map(|id| format!("{pool}/{id}"));
    let lease = pool::acquire(&acquire)?;
    ticket::bought(&buy.show, &lease)
}

fn refund_seats(payload: &str) -> Result<Value, JobError> {
    let id = payload::refund_seats(payload)?;
    let lease = pool::lease(&id).map_err(|err| no_ticket(err, &id))?;
    let Some(show) = ticket::show_of(&lease) else {
        return Err(no_ticket(PoolError::UnknownLease(id.clone()), &id));
    };
    let refunded: Lease = pool::release(&id).map_err(|err| no_ticket(err, &id))?;
    Ok(ticket::refunded(show, &refunded))
}

fn show_seats(payload: &str) -> Result<Value, JobError> {
    let show = payload::show_seats(payload)?;
    let status = show_status(&show, &ticket::pool(&show))?;
    Ok(Seating::of(&show, &status).answer())
}

/// The status of `show`'s pool; an unknown pool is an unknown show.
fn show_status(show: &str, pool: &str) -> Result<PoolStatus, JobError> {
    pool::status(pool).map_err(|err| match err {
        PoolError::UnknownPool(_) => JobError::reject("not_found", format!("no show {show}")),
        other => other.into(),
    })
}

/// An unknown lease, or a lease that is no ticket, is an unknown ticket.
fn no_ticket(err: PoolError, id: &str) -> JobError {
    match err {
        PoolError::UnknownLease(_) => JobError::reject(
            "not_found",
            format!("no ticket {id}: never sold, or refunded already"),
        ),
        other => other.into(),
    }
}

export_jobber!(Cinema);

/// The SDK's allocator: each lease the host hands back is a few short strings in guest
/// memory, which its size classes serve faster than the target's dlmalloc.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: resman_sdk::alloc::GuestAllocator = resman_sdk::alloc::GuestAllocator::new();
