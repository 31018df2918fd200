//! Jittered exponential backoff and server retry hints, shared by the API client (in-request
//! retries), the downloader and the per-ticket poll schedule.
//!
//! One small policy instead of a crate: `backoff` is unmaintained (RUSTSEC-2025-0012) and the
//! poll schedule needs plain data it can persist and a seeded RNG for tests.

use std::time::{Duration, SystemTime};

/// `delay(n) = min(initial × multiplier^n, max)`, then spread uniformly by ±`jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay (attempt 0), before jitter.
    pub initial: Duration,
    /// The cap, before jitter.
    pub max: Duration,
    /// Growth per attempt (≥ 1).
    pub multiplier: f64,
    /// Fraction in [0, 1): each delay is multiplied by a factor drawn from [1 − j, 1 + j].
    pub jitter: f64,
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let spread = self.jitter.clamp(0.0, 0.999);
        let factor = 1.0 - spread + 2.0 * spread * rng.f64();
        Duration::from_secs_f64(base * factor)
    }

    /// The delay before jitter: the schedule's centre line.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let grown =
            self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(attempt.min(1024) as i32);
        Duration::from_secs_f64(grown.min(self.max.as_secs_f64()).max(0.0))
    }
}

/// The longest server hint honoured; a larger one is capped (aliyun-cli caps at 60 s too).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A wait the server asked for: `x-acs-retry-after` (milliseconds, Alibaba's throttling hint),
/// else `Retry-After` (delta-seconds or an HTTP date). Capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let hint = if let Some(ms) = text("x-acs-retry-after").and_then(|v| v.parse::<u64>().ok()) {
        Some(Duration::from_millis(ms))
    } else if let Some(value) = text("retry-after") {
        parse_retry_after(value, now)
    } else {
        None
    };
    hint.map(|d| d.min(MAX_RETRY_AFTER))
}

fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let now = jiff::Timestamp::try_from(now).ok()?;
    let wait = now.until(at).ok()?.total(jiff::Unit::Millisecond).ok()?;
    Some(Duration::from_millis(wait.max(0.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn policy() -> Backoff {
        Backoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }

    #[test]
    fn grows_geometrically_and_caps() {
        let p = policy();
        let secs: Vec<u64> = (0..10).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
        assert_eq!(p.base_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<f64> = (0..1000)
            .map(|_| p.delay(2, &mut rng).as_secs_f64())
            .collect();
        assert!(
            delays.iter().all(|d| (16.0..=24.0).contains(d)),
            "{delays:?}"
        );
        let min = delays.iter().cloned().fold(f64::MAX, f64::min);
        let max = delays.iter().cloned().fold(0.0, f64::max);
        assert!(
            min < 16.5 && max > 23.5,
            "jitter must use the whole ±20 % band: {min}..{max}"
        );
        let no_jitter = Backoff { jitter: 0.0, ..p };
        assert_eq!(no_jitter.delay(1, &mut rng), Duration::from_secs(10));
    }

    #[test]
    fn same_seed_same_schedule() {
        let p = policy();
        let a: Vec<_> = {
            let mut r = fastrand::Rng::with_seed(1);
            (0..5).map(|n| p.delay(n, &mut r)).collect()
        };
        let b: Vec<_> = {
            let mut r = fastrand::Rng::with_seed(1);
            (0..5).map(|n| p.delay(n, &mut r)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn retry_after_prefers_the_alibaba_header_in_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert("x-acs-retry-after", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
        h.insert("x-acs-retry-after", HeaderValue::from_static("3600000"));
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn retry_after_http_date() {
        // 2023-11-14T22:13:20Z is 1_700_000_000.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Tue, 14 Nov 2023 22:13:30 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(10)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Tue, 14 Nov 2023 22:13:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }
}
