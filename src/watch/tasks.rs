//! The loop's tasks: starting polls, exports, download jobs and hooks, and taking their
//! results back. Every task is owned by one generation of one ticket; a result whose ticket
//! was removed (or removed and added again) is dropped, never applied to the wrong ticket, and
//! a task that panics is turned into an error for its ticket instead of leaving it busy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::{Id, JoinError};
use tracing::{debug, error, info};

use super::Scheduler;
use super::state::{DownloadProgress, Durability, TicketState};
use crate::config::TicketSource;
use crate::dms::{DmsError, ExportStatus};
use crate::job::download::Progress;
use crate::job::hooks::{HookKind, HookOutcome};
use crate::job::pipeline::{Job, JobEvent, JobEventKind, JobOutcome, JobPhase, JobTag, run_job};
use crate::job::upload::runner::UploadOutcome;
use crate::net::signed_url::SignedUrl;

/// How often a waiting ticket's poll also looks whether its archive appeared on disk (put
/// there by another run or by hand): such an archive is adopted, never downloaded again.
pub(super) const DISK_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What kind of work a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskKind {
    Export,
    Poll,
    Job,
    Hook(HookKind),
    Upload,
    Cleanup,
}

/// Who a task works for.
#[derive(Debug, Clone)]
pub(super) struct TaskOwner {
    pub(super) ticket: String,
    pub(super) generation: u64,
    pub(super) kind: TaskKind,
}

/// Why a step did not reach the API: the state change it depends on was not saved.
#[derive(Debug)]
pub(super) enum StepError {
    Api(DmsError),
    NotSaved(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api(err) => err.fmt(f),
            Self::NotSaved(err) => write!(f, "ticket state could not be saved: {err}"),
        }
    }
}

/// What a finished task hands back to the loop.
pub(super) enum TaskResult {
    Export(Result<String, StepError>),
    Poll(Result<ExportStatus, StepError>),
    /// The ticket's archive (with its manifest) is on disk: adopt it.
    Adopted,
    /// `give_up_after` ran out and no archive is on disk.
    GaveUp,
    Job(JobOutcome),
    Hook(HookKind, Option<HookOutcome>),
    Upload(UploadOutcome),
    Cleaned(Result<super::post::Cleaned, String>),
}

impl Scheduler {
    pub(super) fn own(&mut self, task: Id, id: &str, kind: TaskKind) {
        let generation = self.tickets[id].generation;
        self.owners.insert(
            task,
            TaskOwner {
                ticket: id.to_owned(),
                generation,
                kind,
            },
        );
    }

    /// Starts the ticket's next API step: its export while it has no key, else a status query.
    pub(super) fn start_poll_or_export(&mut self, id: &str) {
        let dms = self.services.dms.clone();
        let ticket = self.tickets.get_mut(id).expect("caller checked");
        ticket.busy = true;
        let (order_id, tid) = (ticket.spec.order_id, ticket.spec.tid);
        let (task, kind) = match (&ticket.record.download_key_id, &ticket.spec.source) {
            (Some(key), _) => {
                let key = key.clone();
                let barrier = ticket.barrier.take();
                let now = tokio::time::Instant::now();
                let look_on_disk = now >= ticket.next_disk_check;
                if look_on_disk {
                    ticket.next_disk_check = now + DISK_CHECK_EVERY;
                }
                let layout = self.layout.clone();
                let handle = self.polls.spawn(async move {
                    // The key (or whatever the previous step recorded) is durable first.
                    if let Some(barrier) = barrier
                        && let Err(err) = barrier.await
                    {
                        return TaskResult::Poll(Err(StepError::NotSaved(err)));
                    }
                    if look_on_disk && archive_on_disk(&layout, order_id, &key).await {
                        return TaskResult::Adopted;
                    }
                    let answer = dms.query_status(order_id, &key, tid).await;
                    // An archive is never turned into a failure: look before taking DMS's.
                    if answer
                        .as_ref()
                        .is_ok_and(|s| s.status == crate::dms::DownloadStatus::Fail)
                        && archive_on_disk(&layout, order_id, &key).await
                    {
                        return TaskResult::Adopted;
                    }
                    TaskResult::Poll(answer.map_err(StepError::Api))
                });
                (handle.id(), TaskKind::Poll)
            }
            (None, TicketSource::Export(spec)) => {
                let spec = (**spec).clone();
                // Durable before the call, so a crash mid-call is noticed on restart.
                ticket.record.export_requested_at = Some(jiff::Timestamp::now());
                let label = ticket.spec.label.clone().unwrap_or_default();
                let committed = self.save(id, Durability::Now);
                info!(
                    order_id,
                    label, "starting the export (DownloadDataTrackResult)"
                );
                let handle = self.polls.spawn(async move {
                    if let Err(err) = committed.await {
                        return TaskResult::Export(Err(StepError::NotSaved(err)));
                    }
                    TaskResult::Export(
                        dms.start_export(order_id, tid, &spec)
                            .await
                            .map_err(StepError::Api),
                    )
                });
                (handle.id(), TaskKind::Export)
            }
            (None, TicketSource::Existing { .. }) => {
                unreachable!("existing tickets always have a key")
            }
        };
        self.own(task, id, kind);
    }

    /// `give_up_after` ran out: the ticket fails, unless its archive is on disk after all (a
    /// last look, off the loop).
    pub(super) fn start_give_up(&mut self, id: &str) {
        let ticket = self.tickets.get_mut(id).expect("caller checked");
        let Some(key) = ticket.record.download_key_id.clone() else {
            self.give_up(id);
            return;
        };
        ticket.busy = true;
        let (order_id, layout) = (ticket.spec.order_id, self.layout.clone());
        let handle = self.polls.spawn(async move {
            if archive_on_disk(&layout, order_id, &key).await {
                TaskResult::Adopted
            } else {
                TaskResult::GaveUp
            }
        });
        self.own(handle.id(), id, TaskKind::Poll);
    }

    /// The last look found no archive: the ticket fails, unless a reload meanwhile moved its
    /// deadline (a longer `give_up_after`).
    fn gave_up(&mut self, id: &str) {
        let Some(ticket) = self.tickets.get(id) else {
            return;
        };
        if tokio::time::Instant::now() < ticket.deadline {
            self.schedule(id, tokio::time::Instant::now());
        } else {
            self.give_up(id);
        }
    }

    /// Fails a ticket whose `give_up_after` ran out.
    fn give_up(&mut self, id: &str) {
        let after = humantime::format_duration(self.services.poll.give_up_after);
        self.transition(
            id,
            TicketState::Failed,
            Some(format!(
                "gave up: not archived within {after} of being first seen"
            )),
        );
    }

    /// The ticket's archive appeared on disk (its manifest is there): it is archived.
    fn on_adopted(&mut self, id: &str) {
        let Some(ticket) = self.tickets.get_mut(id) else {
            return;
        };
        let Some(key) = ticket.record.download_key_id.clone() else {
            return;
        };
        let dir = self.layout.final_dir(ticket.spec.order_id, &key);
        info!(order_id = ticket.spec.order_id, download_key_id = %key,
              label = ticket.spec.label.as_deref().unwrap_or(""), archive = %dir.display(),
              "the archive is already on disk; adopted, not downloaded");
        ticket.record.archive = Some(dir);
        ticket.record.next_poll_at = None;
        ticket.record.last_error = None;
        self.timers.cancel(id);
        self.services.telemetry.metrics.download("adopted");
        self.transition(id, TicketState::Archived, None);
        self.queue_post_work(id, false);
        self.retention_soon();
    }

    /// Starts a download job for a `DOWNLOAD_SUCCESS` answer.
    pub(super) fn start_job(&mut self, id: &str, url: SignedUrl, total_count: Option<i64>) {
        let cancel = self.jobs_cancel.child_token();
        let ticket = self.tickets.get_mut(id).expect("present");
        ticket.job_cancel = Some(cancel.clone());
        ticket.busy = true;
        ticket.progress = Arc::new(Progress::default());
        let job = Job {
            tag: JobTag {
                ticket_id: id.to_owned(),
                generation: ticket.generation,
            },
            order_id: ticket.spec.order_id,
            download_key_id: ticket
                .record
                .download_key_id
                .clone()
                .expect("polled tickets have a key"),
            tid: ticket.spec.tid,
            label: ticket.spec.label.clone(),
            url,
            total_count,
            progress: Arc::clone(&ticket.progress),
        };
        let ctx = Arc::clone(&self.services.pipeline);
        let events = self.events_tx.clone();
        let handle = self
            .jobs
            .spawn(async move { TaskResult::Job(run_job(ctx, job, events, cancel).await) });
        self.own(handle.id(), id, TaskKind::Job);
    }

    /// A task ended: apply its result to its ticket, if that ticket is still the one it ran
    /// for.
    pub(super) fn joined(&mut self, joined: Result<(Id, TaskResult), JoinError>) {
        let (task, result) = match joined {
            Ok((task, result)) => (task, Ok(result)),
            Err(err) => (err.id(), Err(err)),
        };
        let Some(owner) = self.owners.remove(&task) else {
            return;
        };
        let current = self
            .tickets
            .get(&owner.ticket)
            .is_some_and(|t| t.generation == owner.generation);
        if !current {
            self.retired_task_ended(&owner);
            return;
        }
        match result {
            Ok(result) => self.handle_result(&owner.ticket, result),
            Err(err) if err.is_cancelled() => {
                if let Some(ticket) = self.tickets.get_mut(&owner.ticket) {
                    ticket.busy = false;
                }
            }
            Err(err) => self.task_panicked(&owner, &err),
        }
    }

    /// A task of a ticket that is gone (or came back as a new generation) ended.
    fn retired_task_ended(&mut self, owner: &TaskOwner) {
        debug!(ticket = %owner.ticket, kind = ?owner.kind, "a task of a removed ticket ended");
        if owner.kind == TaskKind::Job
            && let Some(count) = self.draining.get_mut(&owner.ticket)
        {
            *count -= 1;
            if *count == 0 {
                self.draining.remove(&owner.ticket);
                // A new generation may have been held back by this job: let it go now.
                if let Some(ticket) = self.tickets.get(&owner.ticket)
                    && !ticket.busy
                    && !ticket.record.state.is_terminal()
                {
                    let id = owner.ticket.clone();
                    self.schedule(&id, tokio::time::Instant::now());
                }
            }
        }
    }

    /// A task panicked: its ticket must not stay busy forever (and `run --once` must end).
    fn task_panicked(&mut self, owner: &TaskOwner, err: &JoinError) {
        let id = owner.ticket.as_str();
        let message = format!("internal error: a {:?} task panicked: {err}", owner.kind);
        error!(ticket = %id, error = %message, "a ticket task panicked");
        match owner.kind {
            TaskKind::Hook(kind) => self.on_hook(
                id,
                kind,
                Some(HookOutcome {
                    result: crate::job::hooks::RESULT_FAILED.to_owned(),
                    detail: message,
                    finished_at: jiff::Timestamp::now(),
                }),
            ),
            TaskKind::Upload => self.on_upload(id, UploadOutcome::RetryLater(message)),
            TaskKind::Cleanup => self.on_cleaned(id, Err(message)),
            TaskKind::Job => {
                self.handle_result(id, TaskResult::Job(JobOutcome::RetryLater(message)));
            }
            TaskKind::Poll | TaskKind::Export => {
                let ticket = self.tickets.get_mut(id).expect("current");
                ticket.busy = false;
                let attempts = ticket.record.attempts.max(1);
                let state = ticket.record.state;
                let delay = self.next_poll_delay(attempts);
                self.schedule(id, tokio::time::Instant::now() + delay);
                self.transition(id, state, Some(message));
            }
        }
    }

    fn handle_result(&mut self, id: &str, result: TaskResult) {
        if let Some(ticket) = self.tickets.get_mut(id)
            && matches!(
                result,
                TaskResult::Export(_)
                    | TaskResult::Poll(_)
                    | TaskResult::Job(_)
                    | TaskResult::Adopted
                    | TaskResult::GaveUp
            )
        {
            ticket.busy = false;
        }
        match result {
            TaskResult::Export(result) => self.on_export(id, result),
            TaskResult::Poll(result) => self.on_poll(id, result),
            TaskResult::Adopted => self.on_adopted(id),
            TaskResult::GaveUp => self.gave_up(id),
            TaskResult::Job(outcome) => self.on_job(id, outcome),
            TaskResult::Hook(kind, outcome) => self.on_hook(id, kind, outcome),
            TaskResult::Upload(outcome) => self.on_upload(id, outcome),
            TaskResult::Cleaned(result) => self.on_cleaned(id, result),
        }
    }

    /// A job reported progress.
    pub(super) fn on_event(&mut self, event: JobEvent) {
        let id = event.tag.ticket_id;
        let current = self
            .tickets
            .get(&id)
            .is_some_and(|t| t.generation == event.tag.generation);
        match event.kind {
            JobEventKind::Phase(phase) => {
                if current && self.tickets[&id].job_cancel.is_some() {
                    let state = match phase {
                        JobPhase::Downloading => TicketState::Downloading,
                        JobPhase::Extracting => TicketState::Extracting,
                    };
                    self.transition(&id, state, None);
                }
            }
            JobEventKind::Upload { step, durable } => {
                if current {
                    self.on_upload_step(&id, step, durable);
                } else if let Some(reply) = durable {
                    let _ = reply.send(Err("the ticket was removed".into()));
                }
            }
        }
    }

    /// Hands download progress of running downloads to the state writer (lazily: it is only
    /// for `status`; a resume reads the part file itself).
    pub(super) fn save_progress(&mut self) {
        let mut changed = Vec::new();
        for (id, ticket) in &mut self.tickets {
            if ticket.record.state != TicketState::Downloading {
                continue;
            }
            let bytes = ticket.progress.bytes.load(Ordering::Relaxed);
            let total = ticket.progress.total.load(Ordering::Relaxed);
            if bytes != ticket.saved_bytes {
                ticket.saved_bytes = bytes;
                ticket.record.download = Some(DownloadProgress {
                    bytes,
                    total: (total > 0).then_some(total),
                });
                changed.push(id.clone());
            }
        }
        for id in changed {
            self.save(&id, Durability::Lazy);
        }
    }
}

/// Whether the archive of `order_id`/`key` is complete on disk (its manifest is there),
/// looked at on a blocking thread.
async fn archive_on_disk(
    layout: &crate::job::archive::ArchiveLayout,
    order_id: i64,
    key: &str,
) -> bool {
    let (layout, key) = (layout.clone(), key.to_owned());
    tokio::task::spawn_blocking(move || layout.is_archived(order_id, &key))
        .await
        .unwrap_or(false)
}
