//! The due-time queue: when each waiting ticket is next polled. One ordered set over every
//! ticket, so the loop sleeps until the earliest entry and an idle ticket costs no task and no
//! timer of its own.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;

/// Tickets by the time their next poll is due; at most one entry per ticket.
#[derive(Debug, Default)]
pub(super) struct TimerQueue {
    by_time: BTreeSet<(Instant, String)>,
    by_ticket: HashMap<String, Instant>,
}

impl TimerQueue {
    /// Puts `id` at `at`, replacing its earlier entry.
    pub(super) fn schedule(&mut self, id: &str, at: Instant) {
        self.cancel(id);
        self.by_time.insert((at, id.to_owned()));
        self.by_ticket.insert(id.to_owned(), at);
    }

    /// Removes `id`'s entry, if any.
    pub(super) fn cancel(&mut self, id: &str) {
        if let Some(at) = self.by_ticket.remove(id) {
            self.by_time.remove(&(at, id.to_owned()));
        }
    }

    /// The earliest due time.
    pub(super) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Takes the earliest ticket due at or before `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<String> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, id) = self.by_time.pop_first()?;
        self.by_ticket.remove(&id);
        Some(id)
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
