"""Ticket prices: pure functions, no host calls, so they run (and can be tried) under any
Python as well as inside the component.

A price is the show's base price times a row band and a time-of-day band, rounded to the
nearest 50 cents. Prices are integer cents throughout: no float ever reaches the answer.
"""

# Base prices in cents for the shows that ship with the plugin; `ticketPrice.setBase`
# overrides or adds one through the plugin's store.
CATALOGUE = {
    "hamlet": 4200,
    "cats": 3800,
    "the-tempest": 3500,
}

# (name, first row, last row, percent of the base price).
ROW_BANDS = (
    ("premium", "A", "C", 150),
    ("stalls", "D", "L", 100),
    ("rear", "M", "Z", 75),
)

# (name, from minute of day, percent): the band is the last one whose start has passed.
TIME_BANDS = (
    ("matinee", 0, 80),
    ("evening", 17 * 60, 100),
    ("late", 22 * 60, 90),
)

ROUND_TO_CENTS = 50


class Invalid(ValueError):
    """The payload makes no sense; the message says which field and why."""


def slug(show):
    """A show's name as the catalogue and the store key it: lowercase words joined by `-`."""
    if not isinstance(show, str) or not show.strip():
        raise Invalid("show must be a non-empty string")
    words = "".join(c if c.isalnum() else " " for c in show.lower()).split()
    if not words:
        raise Invalid(f"show {show!r} has no letters or digits")
    return "-".join(words)


def row_band(row):
    """The row's letter and its band: (row, band name, percent)."""
    if not isinstance(row, str) or len(row.strip()) != 1 or not row.strip().isalpha():
        raise Invalid("row must be one letter, A to Z")
    letter = row.strip().upper()
    for name, first, last, percent in ROW_BANDS:
        if first <= letter <= last:
            return letter, name, percent
    raise Invalid(f"row {row!r} is not a row of the house (A to Z)")


def minute_of_day(time):
    """`"HH:MM"` (24-hour clock) as minutes since midnight."""
    parts = time.split(":") if isinstance(time, str) else []
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise Invalid('time must be "HH:MM" on a 24-hour clock')
    hours, minutes = int(parts[0]), int(parts[1])
    if hours > 23 or minutes > 59:
        raise Invalid(f"time {time!r} is not a time of day")
    return hours * 60 + minutes


def time_band(minute):
    """The time-of-day band of a minute of the day: (band name, percent)."""
    band = TIME_BANDS[0]
    for candidate in TIME_BANDS:
        if minute >= candidate[1]:
            band = candidate
    return band[0], band[2]


def quote(show, base_cents, row, minute):
    """The priced ticket, as the jobber answers it."""
    letter, row_name, row_percent = row_band(row)
    time_name, time_percent = time_band(minute)
    # base × row% × time% / 100², rounded half up to a multiple of ROUND_TO_CENTS.
    unit = 10_000 * ROUND_TO_CENTS
    cents = (base_cents * row_percent * time_percent + unit // 2) // unit * ROUND_TO_CENTS
    return {
        "show": show,
        "row": letter,
        "time": f"{minute // 60:02d}:{minute % 60:02d}",
        "bands": {"row": row_name, "time": time_name},
        "baseCents": base_cents,
        "cents": cents,
        "price": f"{cents // 100}.{cents % 100:02d}",
        "currency": "EUR",
    }
