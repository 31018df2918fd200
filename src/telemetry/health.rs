//! Liveness and readiness, as `/healthz` and `/readyz` answer them.
//!
//! Alive: the scheduler's main loop has ticked recently (a wedged loop stops ticking).
//! Ready: the config is loaded, credentials resolved, and the API answered recently — or
//! nothing is pending, so there is nothing to answer. Restarting cannot fix revoked
//! credentials, so that is a readiness failure, never a liveness one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Shared health state.
#[derive(Debug)]
pub struct Health {
    heartbeat: Mutex<Instant>,
    api_answered: Mutex<Option<Instant>>,
    credentials_resolved: AtomicBool,
    pending: AtomicBool,
    last_reload_error: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            heartbeat: Mutex::new(Instant::now()),
            api_answered: Mutex::new(None),
            credentials_resolved: AtomicBool::new(false),
            pending: AtomicBool::new(true),
            last_reload_error: Mutex::new(None),
        }
    }
}

impl Health {
    /// The main loop is alive.
    pub fn beat(&self) {
        *self.heartbeat.lock().expect("health lock") = Instant::now();
    }

    /// A DMS call got a successful answer.
    pub fn api_answered(&self) {
        *self.api_answered.lock().expect("health lock") = Some(Instant::now());
        self.credentials_resolved.store(true, Ordering::Relaxed);
    }

    /// Credentials were resolved.
    pub fn credentials_resolved(&self) {
        self.credentials_resolved.store(true, Ordering::Relaxed);
    }

    /// Whether any ticket is still waiting for DMS or being downloaded.
    pub fn set_pending(&self, pending: bool) {
        self.pending.store(pending, Ordering::Relaxed);
    }

    /// The last reload's error (or `None` after a good reload).
    pub fn set_reload_error(&self, error: Option<String>) {
        *self.last_reload_error.lock().expect("health lock") = error;
    }

    /// `Ok` when the loop ticked within `max_silence`.
    pub fn liveness(&self, max_silence: Duration) -> Result<(), String> {
        let since = self.heartbeat.lock().expect("health lock").elapsed();
        if since <= max_silence {
            Ok(())
        } else {
            Err(format!(
                "the main loop has not ticked for {}s",
                since.as_secs()
            ))
        }
    }

    /// `Ok` when ready; else why not.
    pub fn readiness(&self, api_window: Duration) -> Result<(), String> {
        if !self.pending.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !self.credentials_resolved.load(Ordering::Relaxed) {
            return Err("credentials not resolved yet".into());
        }
        match *self.api_answered.lock().expect("health lock") {
            Some(at) if at.elapsed() <= api_window => Ok(()),
            Some(at) => Err(format!(
                "the DMS API has not answered for {}s",
                at.elapsed().as_secs()
            )),
            None => Err("the DMS API has not answered yet".into()),
        }
    }

    /// The last reload error, for `/readyz` bodies and `STATUS=`.
    pub fn reload_error(&self) -> Option<String> {
        self.last_reload_error.lock().expect("health lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn readiness_needs_a_recent_answer_while_tickets_are_pending() {
        let health = Health::default();
        assert_eq!(
            health.readiness(Duration::from_secs(60)),
            Err("credentials not resolved yet".into())
        );
        health.credentials_resolved();
        assert_eq!(
            health.readiness(Duration::from_secs(60)),
            Err("the DMS API has not answered yet".into())
        );
        health.api_answered();
        assert_eq!(health.readiness(Duration::from_secs(60)), Ok(()));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            health
                .readiness(Duration::from_secs(60))
                .unwrap_err()
                .contains("has not answered for 61s")
        );
        health.set_pending(false);
        assert_eq!(
            health.readiness(Duration::from_secs(60)),
            Ok(()),
            "nothing pending: nothing to answer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_follows_the_heartbeat() {
        let health = Health::default();
        assert!(health.liveness(Duration::from_secs(30)).is_ok());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(health.liveness(Duration::from_secs(30)).is_err());
        health.beat();
        assert!(health.liveness(Duration::from_secs(30)).is_ok());
    }
}
