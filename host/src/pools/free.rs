//! [`FreeQueue`]: a pool's free resources in grant order, the one freed longest ago first.
//!
//! Resources are freed in the order of the state's free clock, so each goes to the back of
//! the queue and grants take from the front: a push and a pop, where the ordered map this
//! replaces walked and rebalanced a tree for each (about 300 instructions per durable
//! `getProxy`/`releaseProxy` round trip, 2% of the host's). A resource taken out of turn (an
//! acquire of it by id, its removal) leaves its entry where it is; an entry whose resource
//! is no longer free under that entry's key is stale, skipped wherever the queue is read, and
//! dropped when it reaches the front or when stale entries come to outnumber live ones.
//!
//! Whether an entry is live is the pool's to say (its slots hold the resources), so the
//! functions that need it take it as `is_free(key, slot)`.

use std::collections::VecDeque;

/// The free resources of a pool, as (free key, slot) in ascending key order. Its front is
/// always live: every change that can make it stale drops stale entries from the front.
#[derive(Debug, Default)]
pub(super) struct FreeQueue {
    entries: VecDeque<(u64, u32)>,
    /// Live entries.
    live: usize,
}

impl FreeQueue {
    /// How many resources are free.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// The resource at `slot` was freed with `key`, greater than every key before it.
    pub(super) fn push(&mut self, key: u64, slot: u32) {
        debug_assert!(self.entries.back().is_none_or(|&(last, _)| last < key));
        self.entries.push_back((key, slot));
        self.live += 1;
    }

    /// The slot of the resource freed longest ago.
    pub(super) fn first(&self) -> Option<u32> {
        self.entries.front().map(|&(_, slot)| slot)
    }

    /// The free resources' slots, in grant order.
    pub(super) fn slots<'a>(
        &'a self,
        is_free: impl Fn(u64, u32) -> bool + 'a,
    ) -> impl Iterator<Item = u32> + 'a {
        (self.entries.iter())
            .filter(move |&&(key, slot)| is_free(key, slot))
            .map(|&(_, slot)| slot)
    }

    /// One free resource is free no longer (granted or removed; `is_free` already says so).
    pub(super) fn taken(&mut self, is_free: impl Fn(u64, u32) -> bool) {
        self.live -= 1;
        while let Some(&(key, slot)) = self.entries.front() {
            if is_free(key, slot) {
                break;
            }
            self.entries.pop_front();
        }
        // Resources taken out of turn leave stale entries behind the front; past this many,
        // they are swept, so the queue stays within a small multiple of the free resources.
        if self.entries.len() > 2 * self.live + 64 {
            self.entries.retain(|&(key, slot)| is_free(key, slot));
        }
    }

    /// Entries held, stale ones included, for tests of the sweeping.
    #[cfg(test)]
    pub(super) fn entries(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A queue beside the slots it orders: slot → the key it was freed with, while free.
    #[derive(Default)]
    struct Pool {
        queue: FreeQueue,
        free: BTreeMap<u32, u64>,
        clock: u64,
    }

    impl Pool {
        fn free(&mut self, slot: u32) {
            self.clock += 1;
            self.free.insert(slot, self.clock);
            self.queue.push(self.clock, slot);
        }

        fn take(&mut self, slot: u32) {
            self.free.remove(&slot).expect("free");
            let free = &self.free;
            self.queue.taken(|key, slot| free.get(&slot) == Some(&key));
        }

        fn order(&self) -> Vec<u32> {
            let free = &self.free;
            (self.queue.slots(|key, slot| free.get(&slot) == Some(&key))).collect()
        }
    }

    #[test]
    fn grants_come_from_the_front_and_frees_go_to_the_back() {
        let mut pool = Pool::default();
        for slot in 0..4 {
            pool.free(slot);
        }
        pool.take(2); // out of turn
        assert_eq!(pool.order(), [0, 1, 3]);
        assert_eq!(pool.queue.first(), Some(0));
        pool.take(0);
        pool.free(2);
        pool.free(0);
        assert_eq!(pool.order(), [1, 3, 2, 0]);
        assert_eq!((pool.queue.first(), pool.queue.len()), (Some(1), 4));
        pool.take(1);
        pool.take(3);
        assert_eq!(
            pool.queue.first(),
            Some(2),
            "the stale entries in front are gone"
        );
        pool.take(2);
        pool.take(0);
        assert_eq!((pool.queue.first(), pool.queue.len()), (None, 0));
    }

    #[test]
    fn stale_entries_are_swept_before_they_pile_up() {
        let mut pool = Pool::default();
        pool.free(0);
        // Slot 1 is taken out of turn and freed again, over and over, behind slot 0.
        for _ in 0..1_000 {
            pool.free(1);
            pool.take(1);
            assert!(pool.queue.entries() <= 2 * pool.queue.len() + 65);
        }
        assert_eq!(pool.order(), [0]);
    }
}
