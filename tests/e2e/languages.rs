//! Jobbers in other languages than Rust, through a running host: the Python plugin
//! (`plugins/ticket-price`, componentize-py) and the JavaScript one (`plugins/booking`,
//! componentize-js), as `scripts/build-guest-langs.sh` builds them.
//!
//! Compiling these components takes seconds each (they carry an interpreter), so one test
//! starts one host cold and one from its cache, and checks everything on those two: a
//! failure names its phase in the assertion message.

use crate::support::{code, listed, PluginDir, RawConn, TestHost};
use resman::Host;
use serde_json::{json, Value};

const PYTHON: &str = "ticket-price.wasm";
const JAVASCRIPT: &str = "booking.wasm";

fn result(response: &Value) -> &Value {
    &response["resultJob"]
}

/// Both files are listed, loaded (`fromCache`) as expected, with the types they declare.
async fn listed_from_cache(conn: &mut RawConn, from_cache: bool) {
    let listing = conn.plugins().await;
    for (file, types) in [
        (
            PYTHON,
            json!([
                "ticketPrice.quote",
                "ticketPrice.setBase",
                "ticketPrice.selfTest.raise"
            ]),
        ),
        (
            JAVASCRIPT,
            json!([
                "booking.check",
                "booking.open",
                "booking.hold",
                "booking.release",
                "booking.selfTest.throw"
            ]),
        ),
    ] {
        let entry = listed(&listing, file).unwrap_or_else(|| panic!("{file} loads: {listing}"));
        assert_eq!(
            (&entry["kind"], &entry["types"], &entry["fromCache"]),
            (&json!("wasm"), &types, &json!(from_cache)),
            "{file}"
        );
    }
}

/// The Python jobber prices seats, keeps base prices in its store and rejects bad input.
async fn python_prices_tickets(conn: &mut RawConn) {
    let quote = |row: &str, time: &str| json!({"show": " Hamlet ", "row": row, "time": time});
    let matinee = conn.call("ticketPrice.quote", 1, quote("b", "14:30")).await;
    assert_eq!(
        (&result(&matinee)["price"], &result(&matinee)["bands"]),
        (
            &json!("50.50"),
            &json!({"row": "premium", "time": "matinee"})
        ),
        "{matinee}"
    );
    let late = conn.call("ticketPrice.quote", 2, quote("Q", "22:15")).await;
    assert_eq!(result(&late)["cents"], 2850, "{late}");

    let unknown = json!({"show": "Macbeth", "row": "A", "time": "20:00"});
    let missing = conn.call("ticketPrice.quote", 3, unknown.clone()).await;
    assert_eq!(code(&missing), "not_found", "{missing}");
    let set = conn
        .call(
            "ticketPrice.setBase",
            4,
            json!({"show": "macbeth", "cents": 3000}),
        )
        .await;
    assert_eq!(
        result(&set),
        &json!({"show": "macbeth", "cents": 3000, "previous": null})
    );
    let priced = conn.call("ticketPrice.quote", 5, unknown).await;
    assert_eq!(result(&priced)["price"], "45.00", "{priced}");

    let bad = conn.call("ticketPrice.quote", 6, quote("A", "25:00")).await;
    assert_eq!(code(&bad), "invalid", "{bad}");
}

/// The JavaScript jobber normalises bookings and holds their seats in a pool.
async fn javascript_books_seats(conn: &mut RawConn) {
    let booking = json!({
        "show": "  The Tempest! ", "date": "2026-12-05", "seats": "c-05, b3 ,B 10",
        "name": " Ada   Lovelace ", "email": "Ada@Example.COM"
    });
    let checked = conn.call("booking.check", 1, booking.clone()).await;
    assert_eq!(
        result(&checked)["booking"],
        json!({
            "show": "the-tempest", "date": "2026-12-05", "seats": ["B3", "B10", "C5"],
            "name": "Ada Lovelace", "email": "ada@example.com"
        }),
        "{checked}"
    );
    let mut bad = booking.clone();
    bad["date"] = json!("2026-02-30");
    assert_eq!(code(&conn.call("booking.check", 2, bad).await), "invalid");

    let closed = conn.call("booking.hold", 3, booking.clone()).await;
    assert_eq!(code(&closed), "not_found", "{closed}");
    let open =
        json!({"show": "The Tempest", "date": "2026-12-05", "rows": "A-C", "seatsPerRow": 10});
    let opened = conn.call("booking.open", 4, open).await;
    assert_eq!(result(&opened)["added"], 30, "{opened}");

    let held = conn.call("booking.hold", 5, booking.clone()).await;
    let lease = &result(&held)["lease"];
    assert_eq!(lease["seats"], json!(["B3", "B10", "C5"]), "{held}");
    assert!(lease["token"].as_u64().is_some_and(|t| t > 0), "{held}");
    let again = conn.call("booking.hold", 6, booking.clone()).await;
    assert_eq!(code(&again), "conflict", "{again}");
    let released = conn
        .call("booking.release", 7, json!({"lease": lease["id"]}))
        .await;
    assert_eq!(
        result(&released)["released"]["id"],
        lease["id"],
        "{released}"
    );
    let rebooked = conn.call("booking.hold", 8, booking).await;
    assert!(result(&rebooked)["lease"]["id"].is_string(), "{rebooked}");
}

/// A guest whose code throws past its export answers `jobber_failed`; the next request of
/// that type gets a fresh instance and the other plugin never notices.
async fn throwing_guests_answer_jobber_failed(conn: &mut RawConn) {
    for (thrower, after, payload) in [
        (
            "ticketPrice.selfTest.raise",
            "ticketPrice.quote",
            json!({"show": "cats", "row": "D", "time": "19:00"}),
        ),
        (
            "booking.selfTest.throw",
            "booking.check",
            json!({"show": "cats", "date": "2026-01-31", "seats": ["A1"], "name": "B", "email": "b@c.de"}),
        ),
    ] {
        let thrown = conn.call(thrower, 10, json!({})).await;
        assert_eq!(code(&thrown), "jobber_failed", "{thrower}: {thrown}");
        let served = conn.call(after, 11, payload).await;
        assert!(
            result(&served)["err"].is_null(),
            "{after} serves after {thrower}: {served}"
        );
        assert!(conn.call("ping", 12, json!(null)).await["resultJob"]["pong"].is_u64());
    }
}

#[tokio::test]
async fn python_and_javascript_jobbers_serve_survive_throwing_and_restart_from_the_cache() {
    let dir = PluginDir::new();
    dir.drop_in(PYTHON, PYTHON);
    dir.drop_in(JAVASCRIPT, JAVASCRIPT);

    let cold = TestHost::start(Host::builder(), dir.config()).await;
    let mut conn = cold.raw().await;
    listed_from_cache(&mut conn, false).await;
    python_prices_tickets(&mut conn).await;
    javascript_books_seats(&mut conn).await;
    throwing_guests_answer_jobber_failed(&mut conn).await;
    cold.shutdown().await.expect("the first host stops cleanly");

    // The same folder and cache: both components come from the compiled cache.
    let warm = TestHost::start(Host::builder(), dir.config()).await;
    let mut conn = warm.raw().await;
    listed_from_cache(&mut conn, true).await;
    let quote = json!({"show": "hamlet", "row": "F", "time": "19:30"});
    let priced = conn.call("ticketPrice.quote", 20, quote).await;
    assert_eq!(result(&priced)["price"], "42.00", "{priced}");
    let booking = json!({"show": "cats", "date": "2026-01-31", "seats": "a1", "name": "B", "email": "b@c.de"});
    let checked = conn.call("booking.check", 21, booking).await;
    assert_eq!(
        result(&checked)["booking"]["seats"],
        json!(["A1"]),
        "{checked}"
    );
}
