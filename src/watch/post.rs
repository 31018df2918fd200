//! What follows an archive: the upload (with `[upload]`), the hooks (at least once, up to
//! `hooks.max_attempts`), and the local clean-up once the upload is confirmed (the zip removed
//! unless `keep_zip`, the folder with `keep_local = false`). All of it is recorded in the
//! ticket's state before it runs, so a stop or a crash at any point resumes it after a
//! restart; `run --once` waits for it.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Scheduler;
use super::state::{
    Durability, HookKind, HookRecord, HookState, TicketState, UploadRecord, UploadState,
};
use super::tasks::{TaskKind, TaskResult};
use crate::job::hooks::{HookContext, HookOutcome};
use crate::job::pipeline::JobTag;
use crate::job::upload::progress::{UploadProgress, UploadStep};
use crate::job::upload::runner::{UploadJob, UploadOutcome, folder_url, run_upload};
use crate::net::retry::Backoff;

/// Between runs of a failed hook: 5 s, 10 s, 20 s … capped at 5 minutes.
const HOOK_BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(5),
    max: Duration::from_secs(300),
    multiplier: 2.0,
    jitter: 0.2,
};
/// Between upload attempts: 5 s, 10 s … capped at 10 minutes (until `give_up_after`).
const UPLOAD_BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(5),
    max: Duration::from_secs(600),
    multiplier: 2.0,
    jitter: 0.2,
};

/// A piece of work after the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum PostWork {
    Upload,
    Hook(HookKind),
}

/// What a clean-up did.
#[derive(Debug)]
pub(super) struct Cleaned {
    pub(super) folder_removed: bool,
}

impl Scheduler {
    /// An archived ticket (now, or in an earlier run): records what follows, as pending, and
    /// queues it. Returns whether the record changed.
    pub(super) fn queue_post_work(&mut self, id: &str, fresh_archive: bool) -> bool {
        let now = jiff::Timestamp::now();
        let hooks = self.services.hooks.clone();
        let upload = self.services.uploads.clone();
        let ticket = self.tickets.get_mut(id).expect("present");
        let record = &mut ticket.record;
        if record.state != TicketState::Archived {
            return false;
        }
        let mut changed = false;
        if fresh_archive && hooks.on_archived.is_some() {
            record
                .hooks
                .insert(HookKind::Archived, HookRecord::pending());
            changed = true;
        }
        if let Some(upload) = &upload
            && record.upload.is_none()
            && record.archive.is_some()
        {
            let key = record.download_key_id.clone().unwrap_or_default();
            record.upload = Some(UploadRecord::pending(
                folder_url(&upload.settings, record.order_id, &key),
                now,
            ));
            changed = true;
        }
        if let Some(upload) = &mut record.upload
            && upload.state == UploadState::Uploading
        {
            // Interrupted by a stop or crash: it resumes from what was confirmed.
            upload.state = UploadState::Pending;
            changed = true;
        }
        let mut due = Vec::new();
        if upload.is_some()
            && let Some(u) = &record.upload
            && u.state == UploadState::Pending
        {
            due.push(PostWork::Upload);
        }
        for (kind, hook) in &record.hooks {
            if hook.state == HookState::Pending && kind.argv(&hooks).is_some() {
                due.push(PostWork::Hook(*kind));
            }
        }
        let now = Instant::now();
        for work in due {
            self.post_timers.schedule_key((id.to_owned(), work), now);
        }
        if changed {
            self.save(id, Durability::Now);
        }
        self.refresh_post(id);
        self.maybe_cleanup(id);
        changed
    }

    /// Keeps `post_pending` (what `run --once` waits for) and the upload queue gauge current.
    pub(super) fn refresh_post(&mut self, id: &str) {
        let uploads = self.services.uploads.is_some();
        let hooks = &self.services.hooks;
        let pending = self.tickets.get(id).is_some_and(|t| {
            let record = &t.record;
            let upload_open = uploads
                && record.upload.as_ref().is_some_and(|u| {
                    matches!(u.state, UploadState::Pending | UploadState::Uploading)
                        || (u.state == UploadState::Uploaded && !u.cleaned && !t.cleanup_failed)
                });
            let hook_open = record
                .hooks
                .iter()
                .any(|(kind, h)| h.state == HookState::Pending && kind.argv(hooks).is_some());
            record.state == TicketState::Archived && (upload_open || hook_open)
        });
        if pending {
            self.post_pending.insert(id.to_owned());
        } else {
            self.post_pending.remove(id);
        }
        let queue = self
            .post_pending
            .iter()
            .filter(|id| {
                self.tickets[*id].record.upload.as_ref().is_some_and(|u| {
                    matches!(u.state, UploadState::Pending | UploadState::Uploading)
                })
            })
            .count();
        self.services.telemetry.metrics.set_upload_queue(queue);
    }

    /// Starts the post-archive work that is due.
    pub(super) fn start_due_post_work(&mut self) {
        let now = Instant::now();
        while let Some((id, work)) = self.post_timers.pop_due(now) {
            if !self.tickets.contains_key(&id) {
                continue;
            }
            match work {
                PostWork::Upload => self.start_upload(&id),
                PostWork::Hook(kind) => self.start_hook(&id, kind),
            }
        }
    }

    fn start_upload(&mut self, id: &str) {
        let Some(ctx) = self.services.uploads.clone() else {
            return;
        };
        let writer = self.writer.clone();
        let ticket = self.tickets.get_mut(id).expect("present");
        if ticket.upload_cancel.is_some() {
            return;
        }
        let Some(upload) = ticket.record.upload.as_mut() else {
            return;
        };
        if upload.state != UploadState::Pending {
            return;
        }
        let Some(dir) = ticket.record.archive.clone() else {
            upload.state = UploadState::Failed;
            upload.last_error = Some("the local archive folder is gone; nothing to upload".into());
            self.save(id, Durability::Now);
            self.refresh_post(id);
            return;
        };
        upload.state = UploadState::Uploading;
        upload.next_attempt_at = None;
        let job = UploadJob {
            tag: JobTag {
                ticket_id: id.to_owned(),
                generation: ticket.generation,
            },
            order_id: ticket.spec.order_id,
            download_key_id: ticket.record.download_key_id.clone().unwrap_or_default(),
            dir,
            progress: upload.progress.clone(),
        };
        let cancel = self.jobs_cancel.child_token();
        ticket.upload_cancel = Some(cancel.clone());
        self.save(id, Durability::Lazy);
        let events = self.events_tx.clone();
        let handle = self.jobs.spawn(async move {
            // The archive (and the pending upload) are durable before anything is sent.
            if let Err(err) = writer.flush().await {
                return TaskResult::Upload(UploadOutcome::RetryLater(format!(
                    "ticket state could not be saved: {err}"
                )));
            }
            TaskResult::Upload(run_upload(ctx, job, events, cancel).await)
        });
        self.own(handle.id(), id, TaskKind::Upload);
    }

    /// Runs a hook for a ticket, once its pending record is durable.
    fn start_hook(&mut self, id: &str, kind: HookKind) {
        let settings = self.services.hooks.clone();
        let writer = self.writer.clone();
        let ticket = self.tickets.get_mut(id).expect("present");
        if ticket.hooks_running.contains(&kind)
            || ticket
                .record
                .hooks
                .get(&kind)
                .is_none_or(|h| h.state != HookState::Pending)
        {
            return;
        }
        ticket.hooks_running.push(kind);
        let dir = ticket.record.archive.clone().unwrap_or_else(|| {
            let key = ticket.record.download_key_id.clone().unwrap_or_default();
            self.layout.final_dir(ticket.spec.order_id, &key)
        });
        let order_id = ticket.spec.order_id;
        let key = ticket.record.download_key_id.clone().unwrap_or_default();
        let label = ticket.spec.label.clone();
        let url = ticket.record.upload.as_ref().map(|u| u.url.clone());
        let handle = self.jobs.spawn(async move {
            if let Err(err) = writer.flush().await {
                warn!(order_id, error = %err, "the ticket's state was not saved; the hook waits");
                return TaskResult::Hook(kind, None);
            }
            let context = HookContext {
                dir: &dir,
                order_id,
                download_key_id: &key,
                label: label.as_deref(),
                url: url.as_deref(),
            };
            TaskResult::Hook(
                kind,
                crate::job::hooks::run_hook(kind, &settings, &context).await,
            )
        });
        self.own(handle.id(), id, TaskKind::Hook(kind));
    }

    /// A hook run ended (`None`: it did not run; it stays pending for the next start).
    pub(super) fn on_hook(&mut self, id: &str, kind: HookKind, outcome: Option<HookOutcome>) {
        let max_attempts = self.services.hooks.max_attempts;
        let ticket = self.tickets.get_mut(id).expect("present");
        ticket.hooks_running.retain(|k| *k != kind);
        let Some(outcome) = outcome else {
            return;
        };
        self.services
            .telemetry
            .metrics
            .hook(kind.name(), &outcome.result);
        if kind == HookKind::Archived {
            ticket.record.hook = Some(outcome.clone());
        }
        let hook = ticket
            .record
            .hooks
            .entry(kind)
            .or_insert_with(HookRecord::pending);
        hook.attempts += 1;
        let attempts = hook.attempts;
        let ok = outcome.result == crate::job::hooks::RESULT_OK;
        hook.last = Some(outcome);
        if ok {
            hook.state = HookState::Ok;
        } else if attempts >= max_attempts {
            hook.state = HookState::Failed;
            warn!(
                order_id = ticket.spec.order_id,
                hook = kind.name(),
                attempts,
                "the hook failed every attempt; giving up on it"
            );
        } else {
            let delay = HOOK_BACKOFF.delay(attempts - 1, &mut self.rng);
            info!(
                order_id = ticket.spec.order_id,
                hook = kind.name(),
                attempts,
                retry_in_ms = delay.as_millis() as u64,
                "the hook failed; it runs again later"
            );
            self.post_timers.schedule_key(
                (id.to_owned(), PostWork::Hook(kind)),
                Instant::now() + delay,
            );
        }
        self.save(id, Durability::Now);
        self.refresh_post(id);
        self.maybe_cleanup(id);
    }

    /// An upload job took a step: record it (durably, before the job goes on, when it asks).
    pub(super) fn on_upload_step(
        &mut self,
        id: &str,
        step: UploadStep,
        durable: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    ) {
        let Some(upload) = self
            .tickets
            .get_mut(id)
            .and_then(|t| t.record.upload.as_mut())
        else {
            return;
        };
        upload.progress.apply(&step);
        let durability = if durable.is_some() || UploadProgress::needs_durability(&step) {
            Durability::Now
        } else {
            Durability::Lazy
        };
        let committed = self.save(id, durability);
        if let Some(reply) = durable {
            tokio::spawn(async move {
                let _ = reply.send(committed.await);
            });
        }
    }

    /// An upload job ended.
    pub(super) fn on_upload(&mut self, id: &str, outcome: UploadOutcome) {
        let give_up_after = self.services.poll.give_up_after;
        let on_uploaded = self.services.hooks.on_uploaded.is_some();
        let metrics = std::sync::Arc::clone(&self.services.telemetry.metrics);
        let ticket = self.tickets.get_mut(id).expect("present");
        ticket.upload_cancel = None;
        let (order_id, key) = (
            ticket.spec.order_id,
            ticket.record.download_key_id.clone().unwrap_or_default(),
        );
        let Some(upload) = ticket.record.upload.as_mut() else {
            return;
        };
        let now = jiff::Timestamp::now();
        match outcome {
            UploadOutcome::Uploaded { objects, bytes } => {
                metrics.upload("uploaded");
                let took = now
                    .duration_since(upload.pending_since)
                    .as_secs_f64()
                    .max(0.0);
                metrics.upload_took(took);
                upload.attempts += 1;
                upload.state = UploadState::Uploaded;
                upload.last_error = None;
                upload.uploaded_at = Some(now);
                upload.next_attempt_at = None;
                info!(order_id, download_key_id = %key, url = %upload.url, objects, bytes, "uploaded");
                if on_uploaded {
                    ticket
                        .record
                        .hooks
                        .insert(HookKind::Uploaded, HookRecord::pending());
                    self.post_timers.schedule_key(
                        (id.to_owned(), PostWork::Hook(HookKind::Uploaded)),
                        Instant::now(),
                    );
                }
            }
            UploadOutcome::RetryLater(error) => {
                metrics.upload("retry");
                upload.attempts += 1;
                let pending_for: Duration = now
                    .duration_since(upload.pending_since)
                    .try_into()
                    .unwrap_or(Duration::ZERO);
                if pending_for >= give_up_after {
                    upload.state = UploadState::Failed;
                    upload.last_error = Some(format!(
                        "gave up: not uploaded within {}; last error: {error}",
                        humantime::format_duration(give_up_after)
                    ));
                    warn!(order_id, download_key_id = %key, error = %error, "upload failed for good");
                } else {
                    let delay = UPLOAD_BACKOFF.delay(upload.attempts - 1, &mut self.rng);
                    upload.state = UploadState::Pending;
                    upload.next_attempt_at =
                        Some(super::tickets::wall_clock(Instant::now() + delay));
                    info!(order_id, download_key_id = %key, attempt = upload.attempts, error = %error,
                          retry_in_ms = delay.as_millis() as u64, "upload failed; will retry");
                    upload.last_error = Some(error);
                    self.post_timers
                        .schedule_key((id.to_owned(), PostWork::Upload), Instant::now() + delay);
                }
            }
            UploadOutcome::Failed(error) => {
                metrics.upload("failed");
                upload.attempts += 1;
                upload.state = UploadState::Failed;
                warn!(order_id, download_key_id = %key, error = %error, "upload refused; it is not retried until `dmstrack retry`");
                upload.last_error = Some(error);
            }
            UploadOutcome::Cancelled => {
                metrics.upload("cancelled");
                upload.state = UploadState::Pending;
            }
        }
        if let Some(error) = self.tickets[id]
            .record
            .upload
            .as_ref()
            .and_then(|u| u.last_error.clone())
        {
            self.last_error = Some(error);
        }
        self.save(id, Durability::Now);
        self.refresh_post(id);
        self.maybe_cleanup(id);
        self.publish_summary();
    }

    /// After a confirmed upload and once no hook still needs the folder: removes the zip
    /// (unless `keep_zip`) and, with `keep_local = false`, the whole folder (renamed away
    /// first, so a reader never sees it half removed).
    pub(super) fn maybe_cleanup(&mut self, id: &str) {
        let Some(ctx) = self.services.uploads.clone() else {
            return;
        };
        let keep_zip = self.services.pipeline.archive.keep_zip;
        let ticket = self.tickets.get_mut(id).expect("present");
        let ready = ticket
            .record
            .upload
            .as_ref()
            .is_some_and(|u| u.state == UploadState::Uploaded && !u.cleaned)
            && ticket.hooks_running.is_empty()
            && !ticket.cleaning
            && !ticket.cleanup_failed
            && !ticket
                .record
                .hooks
                .values()
                .any(|h| h.state == HookState::Pending);
        if !ready {
            return;
        }
        let Some(dir) = ticket.record.archive.clone() else {
            // Nothing local is left (retention got there first).
            if let Some(upload) = ticket.record.upload.as_mut() {
                upload.cleaned = true;
            }
            self.save(id, Durability::Now);
            self.refresh_post(id);
            return;
        };
        ticket.cleaning = true;
        let keep_local = ctx.settings.keep_local;
        let layout = self.layout.clone();
        let id_owned = id.to_owned();
        let handle = self.jobs.spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                clean_local(&layout, &id_owned, &dir, keep_zip, keep_local)
            })
            .await
            .unwrap_or_else(|e| Err(format!("clean-up failed: {e}")));
            TaskResult::Cleaned(result)
        });
        self.own(handle.id(), id, TaskKind::Cleanup);
    }

    /// The clean-up ended.
    pub(super) fn on_cleaned(&mut self, id: &str, result: Result<Cleaned, String>) {
        self.retention_soon();
        let ticket = self.tickets.get_mut(id).expect("present");
        ticket.cleaning = false;
        match result {
            Ok(cleaned) => {
                if let Some(upload) = ticket.record.upload.as_mut() {
                    upload.cleaned = true;
                }
                if cleaned.folder_removed {
                    info!(
                        order_id = ticket.spec.order_id,
                        "uploaded; the local archive folder is removed (keep_local = false)"
                    );
                    ticket.record.archive = None;
                }
                self.save(id, Durability::Now);
            }
            Err(err) => {
                ticket.cleanup_failed = true;
                warn!(order_id = ticket.spec.order_id, error = %err, "local clean-up after the upload failed; it is tried again at the next start");
            }
        }
        self.refresh_post(id);
    }
}

/// Blocking: the local clean-up after a confirmed upload.
fn clean_local(
    layout: &crate::job::archive::ArchiveLayout,
    id: &str,
    dir: &std::path::Path,
    keep_zip: bool,
    keep_local: bool,
) -> Result<Cleaned, String> {
    if !keep_local {
        layout
            .remove_atomically(dir, id)
            .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
        return Ok(Cleaned {
            folder_removed: true,
        });
    }
    if !keep_zip {
        let manifest: Option<crate::job::archive::Manifest> =
            std::fs::read(dir.join(crate::job::archive::MANIFEST))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(manifest) = manifest {
            let zip = dir.join(crate::job::archive::kept_zip_name(&manifest.source.object));
            match std::fs::remove_file(&zip) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", zip.display())),
            }
        }
    }
    Ok(Cleaned {
        folder_removed: false,
    })
}

/// Cancels a removed ticket's upload (it keeps what it confirmed).
pub(super) fn cancel_upload(cancel: Option<CancellationToken>) {
    if let Some(cancel) = cancel {
        cancel.cancel();
    }
}
