//! How results move tickets: an export answered, a status polled, a job ended, a hook ran.
//! Every change of state goes through [`Scheduler::transition`], which logs it once, keeps
//! the counts, and hands the record to the state writer: durable at once when the state or
//! the error changed, batched when only poll bookkeeping did.

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::Scheduler;
use super::state::{Committed, DownloadProgress, Durability, TicketState};
use super::tasks::StepError;
use crate::dms::{DmsError, DownloadStatus, ExportStatus};
use crate::job::pipeline::JobOutcome;

impl Scheduler {
    /// Moves a ticket to `state` (with `error` as its last problem, when given), logs a change
    /// once, and saves the record. Returns when the saved record will be durable.
    pub(super) fn transition(
        &mut self,
        id: &str,
        state: TicketState,
        error: Option<String>,
    ) -> Committed {
        let Some(ticket) = self.tickets.get_mut(id) else {
            return Committed::done();
        };
        let record = &mut ticket.record;
        let from = record.state;
        record.state = state;
        record.updated_at = jiff::Timestamp::now();
        let new_error = error.is_some() && record.last_error != error;
        if let Some(error) = &error {
            record.last_error = Some(error.clone());
            self.last_error = Some(error.clone());
        }
        if state.is_terminal() {
            record.next_poll_at = None;
            self.timers.cancel(id);
        }
        if from != state {
            let key = record.download_key_id.as_deref().unwrap_or("");
            let label = record.label.as_deref().unwrap_or("");
            match (state, &error) {
                (TicketState::Failed, Some(e)) => {
                    warn!(order_id = record.order_id, download_key_id = key, label, from = from.as_str(), to = state.as_str(), error = %e, "ticket failed")
                }
                _ => info!(
                    order_id = record.order_id,
                    download_key_id = key,
                    label,
                    from = from.as_str(),
                    to = state.as_str(),
                    "ticket state changed"
                ),
            }
            self.count(from, false);
            self.count(state, true);
        }
        let changed = from != state || new_error;
        let committed = self.save(
            id,
            if changed {
                Durability::Now
            } else {
                Durability::Lazy
            },
        );
        // The counts and the last error are all a summary shows: unchanged, nothing to tell.
        if changed {
            self.publish_summary();
        }
        committed
    }

    pub(super) fn on_export(&mut self, id: &str, result: Result<String, StepError>) {
        match result {
            Ok(key) => {
                let ticket = self.tickets.get_mut(id).expect("present");
                ticket.export_failures = 0;
                ticket.record.download_key_id = Some(key.clone());
                ticket.record.last_error = None;
                info!(order_id = ticket.spec.order_id, download_key_id = %key, label = ticket.spec.label.as_deref().unwrap_or(""), "export started");
                let delay = self.next_poll_delay(1);
                self.schedule(id, Instant::now() + delay);
                // Durable before the first poll: a restart never asks for another export.
                let committed = self.transition(id, TicketState::Waiting, None);
                self.tickets.get_mut(id).expect("present").barrier = Some(committed);
            }
            Err(StepError::Api(err)) if err.is_auth() => self.on_auth_failure(id, err),
            Err(err) => {
                let ticket = self.tickets.get_mut(id).expect("present");
                ticket.export_failures += 1;
                let failures = ticket.export_failures;
                let delay = self.next_poll_delay(failures);
                let (order_id, key, label) = self.tags(id);
                info!(order_id, download_key_id = %key, label = %label, attempt = failures, error = %err,
                      retry_in_ms = delay.as_millis() as u64, "export request failed; will retry");
                self.schedule(id, Instant::now() + delay);
                self.transition(id, TicketState::Pending, Some(err.to_string()));
            }
        }
    }

    pub(super) fn on_poll(&mut self, id: &str, result: Result<ExportStatus, StepError>) {
        let status_label = result.as_ref().map_or("error", |s| s.status.metric_label());
        self.services.telemetry.metrics.poll(status_label);
        let ticket = self.tickets.get_mut(id).expect("present");
        ticket.record.attempts += 1;
        let attempts = ticket.record.attempts;
        match result {
            Ok(status) => {
                debug!(
                    order_id = ticket.spec.order_id,
                    status = status.status.as_str(),
                    attempts,
                    "polled"
                );
                let status_changed =
                    ticket.record.last_status.as_deref() != Some(status.status.as_str());
                ticket.record.last_status = Some(status.status.as_str().to_owned());
                // The API answered: an earlier error (throttling, an outage) is history now.
                let cleared_error = ticket.record.last_error.take().is_some();
                match status.status {
                    DownloadStatus::Success if self.draining.contains_key(id) => {
                        // The job of this ticket's removed generation still runs on the same
                        // partial download: wait for it to end (it reschedules this ticket).
                        let delay = self.next_poll_delay(1);
                        self.schedule(id, Instant::now() + delay);
                        self.transition(id, TicketState::Waiting, None);
                    }
                    DownloadStatus::Success => {
                        let url = status
                            .url
                            .expect("client guarantees a URL with DOWNLOAD_SUCCESS");
                        self.start_job(id, url, status.total_count);
                        if status_changed || cleared_error {
                            self.save(id, Durability::Now);
                        }
                    }
                    DownloadStatus::Fail => {
                        let desc = status.status_desc.unwrap_or_default();
                        self.transition(
                            id,
                            TicketState::Failed,
                            Some(
                                format!("DOWNLOAD_FAIL: {desc}")
                                    .trim_end_matches(": ")
                                    .to_owned(),
                            ),
                        );
                    }
                    _ => {
                        let delay = self.next_poll_delay(attempts);
                        self.schedule(id, Instant::now() + delay);
                        let committed = self.transition(id, TicketState::Waiting, None);
                        if status_changed || cleared_error {
                            // A new status or a cleared error is news for `status`.
                            drop(committed);
                            self.save(id, Durability::Now);
                        }
                    }
                }
            }
            Err(StepError::Api(err)) if err.is_auth() => self.on_auth_failure(id, err),
            Err(err) => {
                let delay = self.next_poll_delay(attempts);
                let (order_id, key, label) = self.tags(id);
                info!(order_id, download_key_id = %key, label = %label, attempt = attempts, error = %err,
                      retry_in_ms = delay.as_millis() as u64, "status query failed; will retry");
                self.schedule(id, Instant::now() + delay);
                let state = if self.tickets[id].record.download_key_id.is_some() {
                    TicketState::Waiting
                } else {
                    TicketState::Pending
                };
                self.transition(id, state, Some(err.to_string()));
            }
        }
    }

    /// Refused credentials: `--once` stops (exit 78); the daemon keeps the ticket on its
    /// schedule (the credentials may be fixed and reloaded) and says so.
    fn on_auth_failure(&mut self, id: &str, err: DmsError) {
        error!(error = %err, "the API refused the credentials or signature");
        if self.once {
            self.transition(id, self.tickets[id].record.state, Some(err.to_string()));
            self.auth_failure = Some(err);
            return;
        }
        let attempts = self.tickets[id].record.attempts.max(1);
        let delay = self.next_poll_delay(attempts);
        self.schedule(id, Instant::now() + delay);
        let state = self.tickets[id].record.state;
        let state =
            if state == TicketState::Pending || self.tickets[id].record.download_key_id.is_none() {
                TicketState::Pending
            } else {
                TicketState::Waiting
            };
        self.transition(id, state, Some(err.to_string()));
    }

    pub(super) fn on_job(&mut self, id: &str, outcome: JobOutcome) {
        let metrics = &self.services.telemetry.metrics;
        match &outcome {
            JobOutcome::Archived { adopted: true, .. } => metrics.download("adopted"),
            JobOutcome::Archived { .. } => {
                metrics.download("archived");
                metrics.archived_now();
            }
            JobOutcome::RetryLater(_) => metrics.download("retry"),
            JobOutcome::Failed(_) | JobOutcome::AuthFailed(_) => metrics.download("failed"),
            JobOutcome::Cancelled => metrics.download("cancelled"),
        }
        let ticket = self.tickets.get_mut(id).expect("present");
        ticket.job_cancel = None;
        ticket.saved_bytes = 0;
        match outcome {
            JobOutcome::Archived {
                dir,
                files,
                bytes,
                adopted,
            } => {
                ticket.record.archive = Some(dir.clone());
                ticket.record.last_error = None;
                let (order_id, key, label) = self.tags(id);
                if adopted {
                    info!(order_id, download_key_id = %key, label = %label, archive = %dir.display(),
                          "the archive is already there (with its manifest); adopted, not downloaded again");
                    self.transition(id, TicketState::Archived, None);
                    self.queue_post_work(id, false);
                } else {
                    let ticket = self.tickets.get_mut(id).expect("present");
                    ticket.record.download = Some(DownloadProgress {
                        bytes,
                        total: Some(bytes),
                    });
                    info!(order_id, download_key_id = %key, label = %label, archive = %dir.display(), files, bytes, "archived");
                    self.transition(id, TicketState::Archived, None);
                    self.queue_post_work(id, true);
                    self.retention_soon();
                }
            }
            JobOutcome::Failed(error) => {
                self.transition(id, TicketState::Failed, Some(error));
            }
            JobOutcome::RetryLater(error) => {
                let attempts = ticket.record.attempts;
                let delay = self.next_poll_delay(attempts);
                self.schedule(id, Instant::now() + delay);
                self.transition(id, TicketState::Waiting, Some(error));
            }
            JobOutcome::AuthFailed(err) => self.on_auth_failure(id, err),
            JobOutcome::Cancelled => {}
        }
    }
}
