//! [`InFlight`]: one connection's requests awaiting their response, a slot each, so that a
//! response finds its request (and its send time) from its `queryIndex` alone, in constant
//! time and without a map.

use std::time::Instant;

/// The requests of one connection that await their response.
///
/// Each request in flight has a slot, found again from its query index alone: request number
/// `k` of the connection, put in slot `s`, gets query index `k * pipeline + s`. The indexes
/// increase and are never reused, and answers may come in any order: a new request takes
/// whichever slot is free, not slot `k % pipeline` (which may still be waiting when an
/// earlier request's answer is late).
///
/// With `--step`, slot `s` is also chain `s` (see `chain`): whichever free slot a new request
/// takes, it sends that slot's chain's next step.
pub(super) struct InFlight {
    /// The query index each slot waits for, or [`FREE`].
    index: Vec<u64>,
    /// When each slot's request was written.
    sent: Vec<Instant>,
    free: Vec<usize>,
    /// Requests issued so far.
    issued: u64,
}

/// Marks a free slot in [`InFlight`].
const FREE: u64 = u64::MAX;

impl InFlight {
    pub(super) fn new(pipeline: usize) -> InFlight {
        InFlight {
            index: vec![FREE; pipeline],
            sent: vec![Instant::now(); pipeline],
            free: (0..pipeline).rev().collect(),
            issued: 0,
        }
    }

    /// Requests in flight.
    pub(super) fn len(&self) -> usize {
        self.index.len() - self.free.len()
    }

    /// Issues `n` new requests, sent `now`: `write(slot, query_index)` writes each. `n` must
    /// not exceed the free slots.
    pub(super) fn issue(&mut self, n: u64, now: Instant, mut write: impl FnMut(usize, u64)) {
        let pipeline = self.index.len() as u64;
        for _ in 0..n {
            let slot = self
                .free
                .pop()
                .expect("more requests than the pipeline allows");
            let query_index = self.issued * pipeline + slot as u64;
            write(slot, query_index);
            self.index[slot] = query_index;
            self.sent[slot] = now;
            self.issued += 1;
        }
    }

    /// The slot of the request with `query_index`, if it is in flight.
    pub(super) fn slot_of(&self, query_index: u64) -> Option<usize> {
        let slot = (query_index % self.index.len() as u64) as usize;
        (query_index != FREE && self.index[slot] == query_index).then_some(slot)
    }

    /// Frees the slot of `query_index` and returns it with the time its request was sent, or
    /// `None` when no such request is in flight.
    pub(super) fn complete(&mut self, query_index: u64) -> Option<(usize, Instant)> {
        let slot = self.slot_of(query_index)?;
        self.index[slot] = FREE;
        self.free.push(slot);
        Some((slot, self.sent[slot]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::template::Template;
    use super::*;
    use resman_sdk::protocol::{Framing, Request};

    #[test]
    fn in_flight_slots_reject_unknown_and_repeated_indexes() {
        let t = Template::new("ping", None, Framing::Crab).unwrap();
        let mut f = InFlight::new(4);
        let mut out = Vec::new();
        let t0 = Instant::now();
        f.issue(4, t0, |_, index| t.push(&mut out, index, &[]));
        assert_eq!(f.len(), 4);
        // Request k in slot s has query index k * 4 + s.
        assert_eq!(f.complete(10), Some((2, t0)));
        assert_eq!(f.complete(10), None, "answered twice");
        assert_eq!(f.complete(2), None, "never sent");
        assert_eq!(f.complete(20), None, "not sent yet");
        assert_eq!(f.complete(FREE), None);
        assert_eq!(f.complete(0), Some((0, t0)));
        // Requests 1 and 3 (slots 1 and 3) are still in flight; the next two take the free
        // slots 0 and 2.
        let t1 = Instant::now();
        let mut slots = Vec::new();
        f.issue(2, t1, |slot, index| {
            slots.push(slot);
            t.push(&mut out, index, &[]);
        });
        assert_eq!(slots, [0, 2]);
        assert_eq!(f.len(), 4);
        let text = String::from_utf8(out).unwrap();
        let indexes: Vec<u64> = text
            .split("🦀")
            .filter(|m| !m.is_empty())
            .map(|m| serde_json::from_str::<Request>(m).unwrap().query_index)
            .collect();
        assert_eq!(indexes, [0, 5, 10, 15, 4 * 4, 5 * 4 + 2]);
        assert_eq!(f.complete(0), None, "slot 0 now waits for 16");
        assert_eq!(f.complete(16), Some((0, t1)));
        assert_eq!(f.complete(22), Some((2, t1)));
        assert_eq!(f.complete(5), Some((1, t0)));
        assert_eq!(f.complete(15), Some((3, t0)));
        assert_eq!(f.len(), 0);
    }
}
