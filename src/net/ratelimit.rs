//! One request-rate limit for the whole process (`dms.max_requests_per_second`).
//!
//! Each caller reserves the next free slot under a lock and then sleeps until it, so callers
//! are served in arrival order and no two requests start closer than `1 / rate` apart, however
//! many tasks call at once. No burst: DMS throttles per user, and polls are never urgent.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A shared limiter; wrap it in an `Arc` and hand it to every client.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter allowing `per_second` requests per second (must be > 0).
    pub fn new(per_second: f64) -> Self {
        let interval = if per_second.is_finite() && per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Self {
            interval,
            next_free: Mutex::new(None),
        }
    }

    /// Waits until this caller may send one request.
    pub async fn acquire(&self) {
        let wait = {
            let mut next = self.next_free.lock().expect("rate limiter lock poisoned");
            let now = Instant::now();
            let slot = match *next {
                Some(at) if at > now => at,
                _ => now,
            };
            *next = Some(slot + self.interval);
            (slot > now).then_some(slot)
        };
        // A free slot goes at once: a zero-length sleep would still cost a timer and a turn of
        // the runtime's driver (a wake-up of the process) on every request.
        if let Some(slot) = wait {
            tokio::time::sleep_until(slot).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn spaces_concurrent_callers_evenly() {
        let limiter = Arc::new(RateLimiter::new(10.0));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let limiter = Arc::clone(&limiter);
            tasks.spawn(async move {
                limiter.acquire().await;
                Instant::now()
            });
        }
        let mut times = tasks.join_all().await;
        times.sort();
        assert_eq!(times[0], start);
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(100),
                "{:?}",
                pair[1] - pair[0]
            );
        }
        assert_eq!(times[49] - start, Duration::from_millis(4900));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_is_not_banked_as_burst() {
        let limiter = RateLimiter::new(2.0);
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let before = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(Instant::now() - before, Duration::from_millis(500));
    }
}
