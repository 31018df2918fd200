//! The due-time queue: when each waiting ticket is next polled. One ordered set over every
//! ticket, so the loop sleeps until the earliest entry and an idle ticket costs no task and no
//! timer of its own.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;

/// Keys (a ticket, or a ticket's piece of work) by the time they are due; at most one entry
/// per key.
#[derive(Debug)]
pub(super) struct TimerQueue<K = String> {
    by_time: BTreeSet<(Instant, K)>,
    by_ticket: HashMap<K, Instant>,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            by_ticket: HashMap::new(),
        }
    }
}

impl<K: Ord + std::hash::Hash + Clone> TimerQueue<K> {
    /// Puts `key` at `at`, replacing its earlier entry.
    pub(super) fn schedule_key(&mut self, key: K, at: Instant) {
        self.cancel_key(&key);
        self.by_time.insert((at, key.clone()));
        self.by_ticket.insert(key, at);
    }

    /// When `key` is due, if it is queued.
    pub(super) fn due_at(&self, key: &K) -> Option<Instant> {
        self.by_ticket.get(key).copied()
    }

    /// Removes `key`'s entry, if any.
    pub(super) fn cancel_key(&mut self, key: &K) {
        if let Some(at) = self.by_ticket.remove(key) {
            self.by_time.remove(&(at, key.clone()));
        }
    }

    /// Removes every entry whose key matches.
    pub(super) fn cancel_where(&mut self, mut matches: impl FnMut(&K) -> bool) {
        let keys: Vec<K> = self
            .by_ticket
            .keys()
            .filter(|k| matches(k))
            .cloned()
            .collect();
        for key in keys {
            self.cancel_key(&key);
        }
    }

    /// The earliest due time.
    pub(super) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Takes the earliest key due at or before `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, id) = self.by_time.pop_first()?;
        self.by_ticket.remove(&id);
        Some(id)
    }
}

impl TimerQueue<String> {
    /// Puts ticket `id` at `at`, replacing its earlier entry.
    pub(super) fn schedule(&mut self, id: &str, at: Instant) {
        self.schedule_key(id.to_owned(), at);
    }

    /// Removes ticket `id`'s entry, if any.
    pub(super) fn cancel(&mut self, id: &str) {
        self.cancel_key(&id.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn earliest_first_and_one_entry_per_ticket() {
        let now = Instant::now();
        let mut queue = TimerQueue::default();
        queue.schedule("b", now + Duration::from_secs(2));
        queue.schedule("a", now + Duration::from_secs(1));
        queue.schedule("b", now + Duration::from_secs(3));
        assert_eq!(queue.next(), Some(now + Duration::from_secs(1)));
        assert_eq!(queue.pop_due(now), None);
        assert_eq!(
            queue.pop_due(now + Duration::from_secs(5)).as_deref(),
            Some("a")
        );
        assert_eq!(queue.next(), Some(now + Duration::from_secs(3)));
        queue.cancel("b");
        assert_eq!(queue.next(), None);
        assert_eq!(queue.pop_due(now + Duration::from_secs(5)), None);
    }
}
