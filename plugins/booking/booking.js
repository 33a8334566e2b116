// A resman jobber in JavaScript: validates and normalises booking requests, opens shows'
// seats as resource pools and holds a booking's seats with a lease.
//
// Built with @bytecodealliance/componentize-js against sdk/wit/ (build.mjs, run by
// scripts/build-guest-langs.sh).
//
// Request types:
// - `booking.check` {show, date, seats, name, email}: the booking, normalised (show as a
//   slug, seats as "B3" sorted, name's spaces collapsed, email lowercased), or a rejection
//   `invalid` naming the field.
// - `booking.open` {show, date, rows: "A-C", seatsPerRow}: adds the seats to the show's pool
//   (`seats/<show>/<date>`); seats already there are kept.
// - `booking.hold` {...booking, holdMs?, requestId?}: checks the booking, then holds exactly
//   its seats, all or none, for `holdMs` (default 10 minutes); the answer carries the lease
//   and its fencing token. A seat held already is `conflict`, a show not open `not_found`.
// - `booking.release` {lease}: gives a hold's seats back.
// - `booking.selfTest.throw`: throws on purpose, to show what the host does with a guest
//   that throws (answers `jobber_failed`, serves on).

import { log } from 'resman:jobber/host@0.2.0';
import { acquire, add, release } from 'resman:jobber/pools@0.2.0';

const MAX_SEATS = 8;
const DEFAULT_HOLD_MS = 10 * 60 * 1000;
const MAX_HOLD_MS = 60 * 60 * 1000;

/** A rejection: the booking is answered `code` with `message`, and not retried. */
class Rejected {
  constructor(code, message) {
    this.code = code;
    this.message = message;
  }
}

/** Something worth trying again: the request goes back to the end of its queue. */
class Retry extends Error {}

const invalid = (message) => new Rejected('invalid', message);

const handlers = {
  'booking.check': (payload) => ({ booking: normalise(payload) }),
  'booking.open': open,
  'booking.hold': hold,
  'booking.release': (payload) => ({ released: leaseOf(pools(() => release(leaseId(payload)))) }),
  'booking.selfTest.throw': () => {
    throw new TypeError('booking.selfTest.throw: a deliberate uncaught exception');
  },
};

/** The types served, in the order `handles` declares them: a request's `kind` is a position here. */
const TYPES = Object.keys(handlers);

export function handles() {
  return TYPES;
}

export function handle(request) {
  try {
    const payload = JSON.parse(request.payload);
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
      throw invalid('payload must be an object');
    }
    return JSON.stringify(handlers[TYPES[request.kind]](payload));
  } catch (err) {
    if (err instanceof SyntaxError) {
      return reject('invalid', `payload is not JSON: ${err.message}`);
    }
    if (err instanceof Rejected) {
      return reject(err.code, err.message);
    }
    if (err instanceof Retry) {
      return { tag: 'err', val: { tag: 'retry', val: err.message } };
    }
    throw err;
  }
}

function reject(code, message) {
  return { tag: 'err', val: { tag: 'reject', val: { code, message } } };
}

/** The booking in `payload`, validated and in one canonical form. */
function normalise(payload) {
  return {
    show: show(payload.show),
    date: date(payload.date),
    seats: seats(payload.seats),
    name: text('name', payload.name, 100),
    email: email(payload.email),
  };
}

function show(value) {
  const slug = text('show', value, 200)
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean)
    .join('-');
  if (!slug) throw invalid('show has no letters or digits');
  return slug;
}

function date(value) {
  const match = typeof value === 'string' && /^(\d{4})-(\d{2})-(\d{2})$/.exec(value.trim());
  const [, y, m, d] = match || [];
  const parsed = match && new Date(Date.UTC(+y, +m - 1, +d));
  if (!parsed || parsed.getUTCMonth() !== +m - 1 || parsed.getUTCDate() !== +d) {
    throw invalid('date must be a calendar date, YYYY-MM-DD');
  }
  return `${y}-${m}-${d}`;
}

/** Seats as a list or a comma-separated string ("b3, B 4, c-05") → ["B3", "B4", "C5"]. */
function seats(value) {
  const list = typeof value === 'string' ? value.split(',') : value;
  if (!Array.isArray(list) || list.length === 0 || list.length > MAX_SEATS) {
    throw invalid(`seats must list 1 to ${MAX_SEATS} seats`);
  }
  const normalised = list.map(seat).sort(bySeat);
  const twice = normalised.find((s, i) => normalised[i + 1] === s);
  if (twice) throw invalid(`seat ${twice} is listed twice`);
  return normalised;
}

function seat(value) {
  const match = typeof value === 'string' && /^\s*([a-z])\s*-?\s*0*([1-9]\d?)\s*$/i.exec(value);
  if (!match) throw invalid(`seat ${JSON.stringify(value)} is not a row letter and a number (B3)`);
  return match[1].toUpperCase() + match[2];
}

function bySeat(a, b) {
  return a[0] === b[0] ? Number(a.slice(1)) - Number(b.slice(1)) : a < b ? -1 : 1;
}

function text(field, value, maxLength) {
  const collapsed = typeof value === 'string' ? value.trim().split(/\s+/).join(' ') : '';
  if (!collapsed || collapsed.length > maxLength) {
    throw invalid(`${field} must be a non-empty string of at most ${maxLength} characters`);
  }
  return collapsed;
}

function email(value) {
  const address = text('email', value, 254).toLowerCase();
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(address)) {
    throw invalid(`email ${JSON.stringify(address)} is not an address`);
  }
  return address;
}

function poolName(show, date) {
  return `seats/${show}/${date}`;
}

function open(payload) {
  const pool = poolName(show(payload.show), date(payload.date));
  const rows = /^([A-Z])-([A-Z])$/i.exec(payload.rows ?? '');
  const perRow = payload.seatsPerRow;
  if (!rows || rows[1].toUpperCase() > rows[2].toUpperCase()) {
    throw invalid('rows must be a range of row letters, such as "A-F"');
  }
  if (!Number.isInteger(perRow) || perRow < 1 || perRow > 99) {
    throw invalid('seatsPerRow must be a whole number from 1 to 99');
  }
  const resources = [];
  for (let r = rows[1].toUpperCase().charCodeAt(0); r <= rows[2].toUpperCase().charCodeAt(0); r++) {
    for (let n = 1; n <= perRow; n++) {
      const row = String.fromCharCode(r);
      resources.push({ id: `${row}${n}`, data: JSON.stringify({ row, number: n }) });
    }
  }
  const added = pools(() => add(pool, resources));
  log('info', `opened ${pool}: ${added} new seats of ${resources.length}`);
  return { pool, added, seats: resources.length };
}

function hold(payload) {
  const booking = normalise(payload);
  const holdMs = payload.holdMs ?? DEFAULT_HOLD_MS;
  if (!Number.isInteger(holdMs) || holdMs < 1000 || holdMs > MAX_HOLD_MS) {
    throw invalid(`holdMs must be a whole number of milliseconds from 1000 to ${MAX_HOLD_MS}`);
  }
  if (payload.requestId !== undefined && typeof payload.requestId !== 'string') {
    throw invalid('requestId must be a string');
  }
  const lease = pools(() =>
    acquire({
      wants: [{ pool: poolName(booking.show, booking.date), count: 0, ids: booking.seats }],
      ttlMs: BigInt(holdMs),
      waitMs: undefined,
      requestId: payload.requestId,
      releaseOnDisconnect: false,
    }),
  );
  log('debug', `held ${booking.seats.join(' ')} of ${booking.show} on ${booking.date}`);
  return { booking, lease: leaseOf(lease) };
}

function leaseId(payload) {
  if (typeof payload.lease !== 'string' || !payload.lease) {
    throw invalid('lease must be the id of a hold');
  }
  return payload.lease;
}

/** A lease as JSON can carry it: u64s as numbers (they stay far below 2^53). */
function leaseOf(lease) {
  return {
    id: lease.id,
    token: Number(lease.token),
    expiresAtMs: lease.expiresAtMs === undefined ? null : Number(lease.expiresAtMs),
    seats: lease.grants.map((grant) => grant.id),
  };
}

/**
 * Runs a pool operation, turning its error into the booking's answer. A seat someone holds
 * is a clash with this booking (`conflict`), not a shortage (`unavailable`): the client must
 * pick other seats, not wait.
 */
function pools(operation) {
  try {
    return operation();
  } catch (err) {
    const { tag, val } = err?.payload ?? {};
    switch (tag) {
      case 'unknown-pool':
        throw new Rejected('not_found', `no seats are open: ${val}`);
      case 'unknown-lease':
      case 'unknown-resource':
        throw new Rejected('not_found', val);
      case 'unavailable':
      case 'conflict':
        throw new Rejected('conflict', `already held: ${val}`);
      case 'invalid':
        throw invalid(val);
      case 'storage':
        throw new Retry(val);
      default:
        throw err;
    }
  }
}
