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
                let handle = self.polls.spawn(async move {
                    // The key (or whatever the previous step recorded) is durable first.
                    if let Some(barrier) = barrier
                        && let Err(err) = barrier.await
                    {
                        return TaskResult::Poll(Err(StepError::NotSaved(err)));
                    }
                    TaskResult::Poll(
                        dms.query_status(order_id, &key, tid)
                            .await
                            .map_err(StepError::Api),
                    )
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
                TaskResult::Export(_) | TaskResult::Poll(_) | TaskResult::Job(_)
            )
        {
            ticket.busy = false;
        }
        match result {
            TaskResult::Export(result) => self.on_export(id, result),
            TaskResult::Poll(result) => self.on_poll(id, result),
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
