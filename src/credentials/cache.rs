//! `Refresher`: one credential source behind a cache. Long-lived keys are served as they
//! are; temporary ones are refreshed ahead of their expiry by a single request that every
//! concurrent caller shares, and a failed refresh backs off and keeps serving the old
//! credentials while they still work.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::Credentials;
use super::error::CredentialError;
use super::http::Fetched;
use super::imds::ImdsFetcher;
use super::sts::{AssumeRoleFetcher, OidcFetcher};
use super::uri::UriFetcher;

/// Refresh this long before expiry (the SDKs' "stale time")…
const REFRESH_MARGIN: Duration = Duration::from_secs(15 * 60);
/// …but when that would eat more than half of a short lifetime, refresh at 80 % of it.
const SHORT_LIFETIME_REFRESH_FRACTION: f64 = 0.8;
/// First wait after a failed refresh; doubles per failure up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between refresh attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// A future that fetches credentials; boxed because `AssumeRole` fetches its source
/// credentials through another [`Refresher`] (the types would otherwise be recursive).
pub(crate) type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Fetched, CredentialError>> + Send + 'a>>;

/// Where credentials come from.
#[derive(Debug)]
pub(crate) enum Fetcher {
    /// Keys known at start-up (static, env, a profile's AccessKey).
    Fixed(Credentials),
    /// The ECS metadata service.
    Imds(ImdsFetcher),
    /// STS `AssumeRoleWithOIDC`.
    Oidc(OidcFetcher),
    /// STS `AssumeRole`.
    AssumeRole(AssumeRoleFetcher),
    /// A credentials URI.
    Uri(UriFetcher),
}

impl Fetcher {
    fn fetch(&self) -> FetchFuture<'_> {
        match self {
            Self::Fixed(credentials) => {
                let fetched = Fetched {
                    credentials: credentials.clone(),
                };
                Box::pin(async move { Ok(fetched) })
            }
            Self::Imds(f) => Box::pin(f.fetch()),
            Self::Oidc(f) => Box::pin(f.fetch()),
            Self::AssumeRole(f) => Box::pin(f.fetch()),
            Self::Uri(f) => Box::pin(f.fetch()),
        }
    }
}

/// Cached credentials and when to act on them.
#[derive(Debug, Clone)]
struct Cached {
    credentials: Credentials,
    /// Refresh from this instant on; `None` for long-lived keys.
    refresh_at: Option<Instant>,
    /// Unusable from this instant on; `None` for long-lived keys.
    expires_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Cached>,
    /// The API rejected the current credentials: do not serve them again.
    invalidated: bool,
    /// No new attempt before this instant (after a failure).
    retry_at: Option<Instant>,
    failures: u32,
    last_error: Option<CredentialError>,
}

enum Decision {
    Serve(Credentials),
    Fail(CredentialError),
    Refresh,
}

impl State {
    /// Credentials that may still be served while a refresh is pending or failing.
    fn usable(&self, now: Instant) -> Option<&Credentials> {
        let cached = self.current.as_ref()?;
        let alive = cached.expires_at.is_none_or(|at| now < at);
        (alive && !self.invalidated).then_some(&cached.credentials)
    }

    fn decide(&self, now: Instant) -> Decision {
        if let Some(cached) = &self.current {
            let fresh = cached.refresh_at.is_none_or(|at| now < at);
            if fresh && let Some(credentials) = self.usable(now) {
                return Decision::Serve(credentials.clone());
            }
        }
        if self.retry_at.is_some_and(|at| now < at) {
            if let Some(credentials) = self.usable(now) {
                return Decision::Serve(credentials.clone());
            }
            if let Some(error) = &self.last_error {
                return Decision::Fail(error.clone());
            }
        }
        Decision::Refresh
    }
}

/// A cached credential source. See the module docs.
#[derive(Debug)]
pub(crate) struct Refresher {
    label: String,
    fetcher: Fetcher,
    state: Mutex<State>,
    /// Held for the duration of one refresh: the single flight.
    flight: tokio::sync::Mutex<()>,
}

impl Refresher {
    /// A source; `label` is what `describe()` shows (never a secret).
    pub(crate) fn new(label: impl Into<String>, fetcher: Fetcher) -> Self {
        Self {
            label: label.into(),
            fetcher,
            state: Mutex::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
        }
    }

    /// What this source is, for logs.
    pub(crate) fn describe(&self) -> String {
        match &self.fetcher {
            Fetcher::Imds(imds) => imds.describe(),
            _ => self.label.clone(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written (every update
        // is a few plain assignments), so a poisoned lock is still fine to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current credentials, refreshing them first when needed.
    pub(crate) async fn get(&self) -> Result<Credentials, CredentialError> {
        match self.state().decide(Instant::now()) {
            Decision::Serve(c) => return Ok(c),
            Decision::Fail(e) => return Err(e),
            Decision::Refresh => {}
        }
        let _flight = match self.flight.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Someone is refreshing. Credentials that still work are better than waiting.
                if let Some(c) = self.state().usable(Instant::now()) {
                    return Ok(c.clone());
                }
                self.flight.lock().await
            }
        };
        // Re-check: the refresh we waited for may have succeeded (or failed and set a backoff).
        match self.state().decide(Instant::now()) {
            Decision::Serve(c) => return Ok(c),
            Decision::Fail(e) => return Err(e),
            Decision::Refresh => {}
        }
        let result = self.fetcher.fetch().await;
        let now = Instant::now();
        let mut state = self.state();
        match result.and_then(|fetched| cache_entry(fetched, now)) {
            Ok(cached) => {
                let credentials = cached.credentials.clone();
                if let Some(expiration) = credentials.expiration {
                    tracing::info!(
                        source = %self.describe(),
                        access_key_id = %credentials.access_key_id,
                        %expiration,
                        "credentials refreshed"
                    );
                }
                *state = State {
                    current: Some(cached),
                    ..State::default()
                };
                Ok(credentials)
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let delay = retry_delay(state.failures);
                state.retry_at = Some(now + delay);
                state.last_error = Some(error.clone());
                match state.usable(now) {
                    Some(old) => {
                        tracing::warn!(
                            source = %self.describe(),
                            error = %error,
                            retry_in = ?delay,
                            "credential refresh failed; the current credentials are still valid"
                        );
                        Ok(old.clone())
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// The API rejected the credentials as expired: the next `get` refreshes. A no-op for
    /// long-lived keys (a new request would bring the same keys).
    pub(crate) fn invalidate(&self) {
        if matches!(self.fetcher, Fetcher::Fixed(_)) {
            return;
        }
        let mut state = self.state();
        if state.current.is_some() {
            state.invalidated = true;
            state.retry_at = None;
        }
    }
}

/// When to refresh and when the credentials die, as monotonic instants (so paused-time tests
/// can step over them). Wall-clock `Expiration` minus wall-clock now is the lifetime left.
fn cache_entry(fetched: Fetched, now: Instant) -> Result<Cached, CredentialError> {
    let Some(expiration) = fetched.credentials.expiration else {
        return Ok(Cached {
            credentials: fetched.credentials,
            refresh_at: None,
            expires_at: None,
        });
    };
    let left = expiration.duration_since(jiff::Timestamp::now());
    let lifetime = Duration::try_from(left).ok().filter(|d| !d.is_zero()).ok_or_else(|| CredentialError::BadResponse {
        service: "credentials",
        status: 200,
        reason: format!("the credentials expired at {expiration}, before they arrived (is the system clock right?)"),
    })?;
    Ok(Cached {
        credentials: fetched.credentials,
        refresh_at: Some(now + refresh_after(lifetime)),
        expires_at: Some(now + lifetime),
    })
}

/// How long after a fetch to refresh credentials that live `lifetime`: 15 minutes before
/// expiry, or earlier (at 80 %) for long lifetimes where 20 % is more than 15 minutes; for
/// short lifetimes, where a 15-minute margin would eat over half, at 80 %.
fn refresh_after(lifetime: Duration) -> Duration {
    let at_fraction = lifetime.mul_f64(SHORT_LIFETIME_REFRESH_FRACTION);
    if REFRESH_MARGIN > lifetime / 2 {
        return at_fraction;
    }
    at_fraction.min(lifetime - REFRESH_MARGIN)
}

/// 1 s, 2 s, 4 s, … up to a minute.
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_points() {
        let min = |m: u64| Duration::from_secs(m * 60);
        // One hour: 15 minutes before expiry.
        assert_eq!(refresh_after(min(60)), min(45));
        // Twelve hours: 80 % comes first.
        assert_eq!(refresh_after(min(720)), min(576));
        // Fifteen minutes (the STS minimum): 80 %.
        assert_eq!(refresh_after(min(15)), min(12));
        // Thirty minutes: the margin is exactly half, so 15 minutes.
        assert_eq!(refresh_after(min(30)), min(15));
    }

    #[test]
    fn retry_delays_double_up_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
