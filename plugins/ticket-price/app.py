"""A resman jobber in Python: ticket prices from the show, the row and the time of day.

Built with componentize-py against sdk/wit/ (scripts/build-guest-langs.sh):

    componentize-py -d sdk/wit -w jobber componentize app -p plugins/ticket-price -o ticket-price.wasm

Request types:
- `ticketPrice.quote` {"show", "row", "time"?}: the price of one seat; `time` is "HH:MM",
  the host's clock (UTC) when left out. Base prices come from the plugin's store, else from
  the catalogue in pricing.py.
- `ticketPrice.setBase` {"show", "cents"}: sets a show's base price, durably (the store).
- `ticketPrice.selfTest.raise`: raises an uncaught exception on purpose, to show what the
  host does with a guest that throws (answers `jobber_failed`, serves on).

Errors are answers, not exceptions: a bad payload is rejected with code `invalid`, a show
without a price with `not_found`, a store the host could not write is retried.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, store
from wit_world.imports.host import Level
from wit_world.imports.types import JobError_Reject, JobError_Retry, Rejection, Request

import pricing

# Longest show slug accepted; store keys may be up to 1 KiB.
MAX_SHOW_BYTES = 200

# The types served, in the order `handles` declares them: a request's `kind` is a position here.
TYPES = ["ticketPrice.quote", "ticketPrice.setBase", "ticketPrice.selfTest.raise"]


def reject(code, message):
    return Err(JobError_Reject(Rejection(code, message)))


class WitWorld(wit_world.WitWorld):
    """The exports of the `jobber` world; componentize-py makes one instance per component
    instance, so attributes set here last from one request to the next."""

    def handles(self):
        return TYPES

    def handle(self, request: Request) -> str:
        try:
            payload = json.loads(request.payload)
        except ValueError as err:
            raise reject("invalid", f"payload is not JSON: {err}")
        kind = TYPES[request.kind]
        if kind == "ticketPrice.selfTest.raise":
            raise RuntimeError("ticketPrice.selfTest.raise: a deliberate uncaught exception")
        if not isinstance(payload, dict):
            raise reject("invalid", "payload must be an object")
        serve = quote if kind == "ticketPrice.quote" else set_base
        try:
            answer = serve(payload)
        except pricing.Invalid as err:
            raise reject("invalid", str(err))
        return json.dumps(answer)


def show_of(payload):
    show = pricing.slug(payload.get("show"))
    if len(show.encode()) > MAX_SHOW_BYTES:
        raise pricing.Invalid(f"show is longer than {MAX_SHOW_BYTES} bytes")
    return show


def base_cents(show):
    stored = store.get(f"base/{show}")
    if stored is not None:
        return int(stored)
    if show in pricing.CATALOGUE:
        return pricing.CATALOGUE[show]
    raise reject("not_found", f"no base price for show {show}; set one with ticketPrice.setBase")


def quote(payload):
    show = show_of(payload)
    time = payload.get("time")
    if time is None:
        minute = host.now_ms() // 60_000 % (24 * 60)
    else:
        minute = pricing.minute_of_day(time)
    answer = pricing.quote(show, base_cents(show), payload.get("row"), minute)
    host.log(Level.DEBUG, f"quoted {show} row {answer['row']} at {answer['time']}: {answer['price']}")
    return answer


def set_base(payload):
    show = show_of(payload)
    cents = payload.get("cents")
    if type(cents) is not int or not 0 < cents <= 1_000_000:
        raise pricing.Invalid("cents must be a whole number from 1 to 1000000")
    previous = store.get(f"base/{show}")
    try:
        store.set(f"base/{show}", str(cents))
    except Err as err:
        raise Err(JobError_Retry(f"cannot store the base price of {show}: {err.value}"))
    host.log(Level.INFO, f"base price of {show} set to {cents} cents")
    return {"show": show, "cents": cents, "previous": None if previous is None else int(previous)}
