//! [`Lane`]: the FIFO queue of one request type, with the one-in-flight rule. Pure, no tokio:
//! the coordinator decides when to take a batch, the lane only keeps order and exclusion.

use std::collections::VecDeque;

/// The queue of one request type. While a batch is out, no other batch is handed out, so at
/// most one request of the type runs at a time and requests run in arrival order.
#[derive(Debug)]
pub(crate) struct Lane<T> {
    queue: VecDeque<T>,
    in_flight: usize,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Lane {
            queue: VecDeque::new(),
            in_flight: 0,
        }
    }
}

impl<T> Lane<T> {
    /// Appends `item`; true when the lane was idle and empty, so it needs dispatching.
    pub(crate) fn push(&mut self, item: T) -> bool {
        self.queue.push_back(item);
        self.in_flight == 0 && self.queue.len() == 1
    }

    /// Takes up to `max` queued items as the next batch, unless a batch is already out.
    pub(crate) fn take_batch(&mut self, max: usize) -> Option<Vec<T>> {
        if self.in_flight > 0 || self.queue.is_empty() {
            return None;
        }
        let n = max.min(self.queue.len());
        self.in_flight = n;
        Some(self.queue.drain(..n).collect())
    }

    /// The batch that was out has finished; true when items are waiting for the next one.
    pub(crate) fn finish(&mut self) -> bool {
        self.in_flight = 0;
        !self.queue.is_empty()
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight > 0
    }

    /// Puts `items` back at the front, in their order (requests of a batch that had not
    /// started, moved to a new version of the jobber).
    pub(crate) fn requeue_front(&mut self, items: Vec<T>) {
        for item in items.into_iter().rev() {
            self.queue.push_front(item);
        }
    }

    /// Keeps only the queued items for which `keep` is true.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.queue.retain(keep);
    }

    /// Removes every queued item (a batch that is out stays out).
    pub(crate) fn drain_queued(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queue.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_batch_at_a_time_in_arrival_order() {
        let mut lane = Lane::default();
        assert!(lane.push(1));
        assert!(!lane.push(2));
        assert_eq!(lane.take_batch(1), Some(vec![1]));
        assert!(!lane.push(3));
        assert_eq!(lane.take_batch(10), None, "a batch is out");
        assert!(lane.finish());
        assert_eq!(lane.take_batch(10), Some(vec![2, 3]));
        assert!(!lane.finish());
        assert_eq!(lane.take_batch(10), None);
    }

    #[test]
    fn retries_go_to_the_back() {
        let mut lane = Lane::default();
        lane.push("a");
        lane.push("b");
        let batch = lane.take_batch(1).unwrap();
        lane.finish();
        for item in batch {
            lane.push(item);
        }
        assert_eq!(lane.take_batch(10), Some(vec!["b", "a"]));
    }

    #[test]
    fn requeued_items_go_first_in_their_order() {
        let mut lane = Lane::default();
        lane.push(3);
        lane.requeue_front(vec![1, 2]);
        assert_eq!(lane.take_batch(10), Some(vec![1, 2, 3]));
    }

    #[test]
    fn retain_drops_queued_items_only() {
        let mut lane = Lane::default();
        for i in 0..6 {
            lane.push(i);
        }
        let out = lane.take_batch(2).unwrap();
        lane.retain(|i| i % 2 == 0);
        assert_eq!(out, vec![0, 1]);
        assert_eq!((lane.queued(), lane.is_busy()), (2, true));
        assert_eq!(lane.drain_queued().collect::<Vec<_>>(), vec![2, 4]);
    }
}
