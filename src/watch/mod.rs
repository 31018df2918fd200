//! The one loop that watches every ticket: a timer queue of due polls, a task set of work in
//! flight, and the ticket records it alone writes.
//!
//! A waiting ticket costs a map entry and one entry in an ordered set of due times; the loop
//! sleeps until the earliest one, so thousands of idle tickets use no CPU and no task each.
//! Polls run as small tasks (at most [`MAX_POLLS_IN_FLIGHT`] at once, and the API client's
//! rate limit paces them); downloads run as pipeline jobs gated by `download.concurrency`
//! permits inside the job, so a long download never delays a poll.
//!
//! ```text
//! pending ─export─▶ waiting ─poll…─▶ downloading ─▶ extracting ─▶ archived
//!    │                 │ DOWNLOAD_FAIL / give_up_after      │ unsafe zip
//!    └─────────────────┴──────────────▶ failed ◀─────────────┘
//! ```

pub mod state;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{PollSettings, TicketSource, TicketSpec};
use crate::dms::{DmsClient, DmsError, DownloadStatus, ExportStatus};
use crate::job::archive::ArchiveLayout;
use crate::job::download::Progress;
use crate::job::pipeline::{Job, JobEvent, JobOutcome, PipelineContext, run_job};
use crate::net::retry::Backoff;
use crate::watch::state::{DownloadProgress, HookOutcome, StateStore, TicketRecord, TicketState};

/// Status queries in flight at once; more due tickets wait their turn (the rate limit paces
/// them anyway, this only bounds memory after a restart with many due tickets).
pub const MAX_POLLS_IN_FLIGHT: usize = 32;
/// How often download progress is written to the state file while a download runs.
const PROGRESS_SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the main loop ticks to prove it is alive.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// How long shutdown waits for running jobs to reach a safe point.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Counts per state, and the last problem, for `STATUS=` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tickets per state.
    pub pending: usize,
    /// Waiting for DMS.
    pub waiting: usize,
    /// Downloading.
    pub downloading: usize,
    /// Extracting.
    pub extracting: usize,
    /// Archived.
    pub archived: usize,
    /// Failed.
    pub failed: usize,
    /// The most recent error of any ticket.
    pub last_error: Option<String>,
}

impl Summary {
    /// Counts one more (`add`) or one fewer ticket in `state`.
    fn adjust(&mut self, state: TicketState, add: bool) {
        let slot = match state {
            TicketState::Pending => &mut self.pending,
            TicketState::Waiting => &mut self.waiting,
            TicketState::Downloading => &mut self.downloading,
            TicketState::Extracting => &mut self.extracting,
            TicketState::Archived => &mut self.archived,
            TicketState::Failed => &mut self.failed,
        };
        *slot = if add {
            *slot + 1
        } else {
            slot.saturating_sub(1)
        };
    }

    /// Tickets not yet archived or failed.
    fn active(&self) -> usize {
        self.pending + self.waiting + self.downloading + self.extracting
    }

    /// One line for `STATUS=`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} waiting, {} downloading, {} archived, {} failed",
            self.pending + self.waiting,
            self.downloading + self.extracting,
            self.archived,
            self.failed
        );
        if let Some(error) = &self.last_error {
            line.push_str("; last error: ");
            line.push_str(&error.chars().take(200).collect::<String>());
        }
        line
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Tickets archived (this run or before).
    pub archived: usize,
    /// Tickets failed.
    pub failed: usize,
    /// Stopped by the shutdown token rather than by finishing (`--once`).
    pub interrupted: bool,
    /// `--once` stopped because the credentials or signature were refused.
    pub auth_failure: Option<DmsError>,
}

/// The services a scheduler uses; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct Services {
    /// The API client.
    pub dms: DmsClient,
    /// What download jobs share.
    pub pipeline: Arc<PipelineContext>,
    /// `[poll]`.
    pub poll: PollSettings,
    /// Metrics and health.
    pub telemetry: crate::telemetry::metrics::Telemetry,
    /// `[hooks]`.
    pub hooks: crate::config::HookSettings,
}

impl Services {
    fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.poll.initial_interval,
            max: self.poll.max_interval,
            multiplier: self.poll.multiplier,
            jitter: self.poll.jitter,
        }
    }
}

/// Messages into a running scheduler.
#[derive(Debug)]
pub enum Control {
    /// Apply a new, already validated config: new tickets start, removed ones stop.
    Reload {
        /// The tickets of the new config.
        tickets: Vec<TicketSpec>,
        /// The services built from it.
        services: Box<Services>,
    },
}

enum TaskResult {
    Export(Result<String, DmsError>),
    Poll(Result<ExportStatus, DmsError>),
    Job(JobOutcome),
    Hook(Option<HookOutcome>),
}

struct Ticket {
    spec: TicketSpec,
    record: TicketRecord,
    /// When `give_up_after` runs out.
    deadline: Instant,
    /// The queued poll, if any (also in `Scheduler::timers`).
    due: Option<Instant>,
    /// A task for this ticket is running.
    busy: bool,
    /// Consecutive failed export attempts, for their backoff.
    export_failures: u32,
    progress: Arc<Progress>,
    job_cancel: Option<CancellationToken>,
    saved_bytes: u64,
}

/// The scheduler. Build with [`Scheduler::new`], then [`Scheduler::run`].
pub struct Scheduler {
    services: Services,
    store: StateStore,
    layout: ArchiveLayout,
    once: bool,
    tickets: HashMap<String, Ticket>,
    order: Vec<String>,
    timers: BTreeSet<(Instant, String)>,
    /// Status queries and export requests in flight.
    polls: JoinSet<(String, TaskResult)>,
    /// Download jobs in flight.
    jobs: JoinSet<(String, TaskResult)>,
    events_tx: mpsc::UnboundedSender<JobEvent>,
    events_rx: mpsc::UnboundedReceiver<JobEvent>,
    summary: watch::Sender<Summary>,
    last_error: Option<String>,
    /// Tickets per state, kept current by every change.
    counts: Summary,
    auth_failure: Option<DmsError>,
    rng: fastrand::Rng,
    jobs_cancel: CancellationToken,
    heartbeat: Heartbeat,
}

/// What the main loop does on its regular tick, besides the health heartbeat.
struct Heartbeat {
    every: Duration,
    tick: Option<Box<dyn FnMut() + Send>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("tickets", &self.tickets.len())
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

/// `give_up_after` measured from when the ticket was first seen (wall clock), as an instant.
fn deadline_of(record: &TicketRecord, give_up_after: Duration) -> Instant {
    let elapsed = jiff::Timestamp::now()
        .duration_since(record.first_seen_at)
        .try_into()
        .unwrap_or(Duration::ZERO);
    Instant::now() + give_up_after.saturating_sub(elapsed)
}

/// A tokio instant as wall-clock time, for `next_poll_at`.
fn wall_clock(at: Instant) -> jiff::Timestamp {
    let ahead = at.saturating_duration_since(Instant::now());
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(ahead).unwrap_or(jiff::SignedDuration::ZERO))
        .unwrap_or_else(|_| jiff::Timestamp::now())
}

impl Scheduler {
    /// Loads (or creates) every ticket's record and works out where each one resumes.
    pub fn new(
        tickets: Vec<TicketSpec>,
        services: Services,
        store: StateStore,
        once: bool,
        summary: watch::Sender<Summary>,
    ) -> Self {
        let layout = services.pipeline.layout.clone();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut scheduler = Self {
            services,
            store,
            layout,
            once,
            tickets: HashMap::new(),
            order: Vec::new(),
            timers: BTreeSet::new(),
            polls: JoinSet::new(),
            jobs: JoinSet::new(),
            events_tx,
            events_rx,
            summary,
            last_error: None,
            counts: Summary::default(),
            auth_failure: None,
            rng: fastrand::Rng::new(),
            jobs_cancel: CancellationToken::new(),
            heartbeat: Heartbeat {
                every: DEFAULT_HEARTBEAT,
                tick: None,
            },
        };
        for spec in tickets {
            scheduler.add_ticket(spec);
        }
        let in_progress: HashSet<String> = scheduler
            .tickets
            .values()
            .filter(|t| !t.record.state.is_terminal())
            .map(|t| t.record.id.clone())
            .collect();
        for removed in scheduler.layout.clean_stale(&in_progress) {
            debug!(path = %removed.display(), "removed a stale staging folder or partial download");
        }
        scheduler.publish_summary();
        scheduler
    }

    /// Calls `tick` from the main loop every `every` (e.g. systemd's `WATCHDOG=1`).
    pub fn with_heartbeat(mut self, every: Duration, tick: Box<dyn FnMut() + Send>) -> Self {
        self.heartbeat = Heartbeat {
            every,
            tick: Some(tick),
        };
        self
    }

    fn add_ticket(&mut self, spec: TicketSpec) {
        let id = crate::watch::state::ticket_id(&spec);
        if self.tickets.contains_key(&id) {
            return;
        }
        let now = jiff::Timestamp::now();
        // A new ticket's record is first written at its first change (its first poll), not
        // here: with thousands of new tickets, one fsynced file each would stall the start.
        let (mut record, mut save) = match self.store.load(&id) {
            Ok(Some(record)) => (record, false),
            Ok(None) => (TicketRecord::new(&spec, now), false),
            Err(err) => {
                warn!(error = %err, "unreadable ticket state; starting this ticket afresh");
                (TicketRecord::new(&spec, now), true)
            }
        };
        if record.label != spec.label || record.tid != spec.tid {
            record.label = spec.label.clone();
            record.tid = spec.tid;
            save = true;
        }
        // The manifest is the truth: a ticket with one is archived, whatever the state says.
        if let Some(key) = record.download_key_id.clone()
            && !record.state.is_terminal()
            && self.layout.is_archived(spec.order_id, &key)
        {
            record.state = TicketState::Archived;
            record.archive = Some(self.layout.final_dir(spec.order_id, &key));
            record.next_poll_at = None;
            record.last_error = None;
            save = true;
        }
        // A download or extraction interrupted by a restart resumes from a fresh status query
        // (the signed URL is never stored); the partial download is kept for Range.
        if matches!(
            record.state,
            TicketState::Downloading | TicketState::Extracting
        ) {
            record.state = TicketState::Waiting;
            record.next_poll_at = None;
            save = true;
        }
        if record.export_requested_at.is_some() && record.download_key_id.is_none() {
            warn!(
                order_id = spec.order_id,
                label = spec.label.as_deref().unwrap_or(""),
                "a previous run was stopped while DownloadDataTrackResult was in flight; its key was never \
                   received, so the export is requested again (DMS may hold an unused export)"
            );
        }
        let deadline = deadline_of(&record, self.services.poll.give_up_after);
        let due = (!record.state.is_terminal()).then(|| {
            let wait = record
                .next_poll_at
                .and_then(|at| at.duration_since(jiff::Timestamp::now()).try_into().ok())
                .unwrap_or(Duration::ZERO);
            Instant::now() + wait
        });
        if save {
            self.persist(&record);
        }
        let ticket = Ticket {
            spec,
            record,
            deadline,
            due: None,
            busy: false,
            export_failures: 0,
            progress: Arc::new(Progress::default()),
            job_cancel: None,
            saved_bytes: 0,
        };
        self.order.push(id.clone());
        self.counts.adjust(ticket.record.state, true);
        self.tickets.insert(id.clone(), ticket);
        if let Some(at) = due {
            self.schedule(&id, at);
        }
    }

    /// The fields every log line about a ticket carries: order id, key (empty until an
    /// export ticket has one) and label.
    fn tags(&self, id: &str) -> (i64, String, String) {
        let ticket = &self.tickets[id];
        (
            ticket.spec.order_id,
            ticket.record.download_key_id.clone().unwrap_or_default(),
            ticket.spec.label.clone().unwrap_or_default(),
        )
    }

    fn persist(&self, record: &TicketRecord) {
        if let Err(err) = self.store.save(record) {
            error!(order_id = record.order_id, error = %err, "cannot save ticket state");
        }
    }

    fn schedule(&mut self, id: &str, at: Instant) {
        let Some(ticket) = self.tickets.get_mut(id) else {
            return;
        };
        if let Some(old) = ticket.due.take() {
            self.timers.remove(&(old, id.to_owned()));
        }
        ticket.due = Some(at);
        ticket.record.next_poll_at = Some(wall_clock(at));
        self.timers.insert((at, id.to_owned()));
    }

    /// Moves a ticket to `state`, logs the change once, and saves it.
    fn transition(&mut self, id: &str, state: TicketState, error: Option<String>) {
        let Some(ticket) = self.tickets.get_mut(id) else {
            return;
        };
        let record = &mut ticket.record;
        let from = record.state;
        record.state = state;
        if from != state {
            self.counts.adjust(from, false);
            self.counts.adjust(state, true);
        }
        record.updated_at = jiff::Timestamp::now();
        if let Some(error) = &error {
            record.last_error = Some(error.clone());
            self.last_error = Some(error.clone());
        }
        if state.is_terminal() {
            record.next_poll_at = None;
            if let Some(old) = ticket.due.take() {
                self.timers.remove(&(old, id.to_owned()));
            }
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
        }
        let record = record.clone();
        self.persist(&record);
        self.publish_summary();
    }

    fn publish_summary(&self) {
        // The counts are kept up to date as tickets move: walking every ticket here would make
        // each state change cost O(tickets).
        let summary = Summary {
            last_error: self.last_error.clone(),
            ..self.counts.clone()
        };
        let telemetry = &self.services.telemetry;
        telemetry.metrics.set_tickets(&summary);
        telemetry.health.set_pending(summary.active() > 0);
        self.summary.send_if_modified(|current| {
            let changed = *current != summary;
            *current = summary;
            changed
        });
    }

    fn all_terminal(&self) -> bool {
        self.counts.active() == 0
    }

    /// Starts the work of every due ticket, as far as capacity allows.
    fn start_due_work(&mut self) {
        let now = Instant::now();
        while self.polls.len() < MAX_POLLS_IN_FLIGHT {
            let Some((at, id)) = self.timers.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            self.timers.remove(&(at, id.clone()));
            let Some(ticket) = self.tickets.get_mut(&id) else {
                continue;
            };
            ticket.due = None;
            if ticket.busy || ticket.record.state.is_terminal() {
                continue;
            }
            if now >= ticket.deadline {
                let after = humantime::format_duration(self.services.poll.give_up_after);
                self.transition(
                    &id,
                    TicketState::Failed,
                    Some(format!(
                        "gave up: not archived within {after} of being first seen"
                    )),
                );
                continue;
            }
            self.start_poll_or_export(&id);
        }
    }

    fn start_poll_or_export(&mut self, id: &str) {
        let dms = self.services.dms.clone();
        let ticket = self.tickets.get_mut(id).expect("caller checked");
        ticket.busy = true;
        let (order_id, tid) = (ticket.spec.order_id, ticket.spec.tid);
        let task_id = id.to_owned();
        match (&ticket.record.download_key_id, &ticket.spec.source) {
            (Some(key), _) => {
                let key = key.clone();
                self.polls.spawn(async move {
                    let result = dms.query_status(order_id, &key, tid).await;
                    (task_id, TaskResult::Poll(result))
                });
            }
            (None, TicketSource::Export(spec)) => {
                let spec = (**spec).clone();
                // Recorded before the call, so a crash mid-call is noticed on restart.
                ticket.record.export_requested_at = Some(jiff::Timestamp::now());
                let record = ticket.record.clone();
                self.persist(&record);
                info!(
                    order_id,
                    label = record.label.as_deref().unwrap_or(""),
                    "starting the export (DownloadDataTrackResult)"
                );
                self.polls.spawn(async move {
                    let result = dms.start_export(order_id, tid, &spec).await;
                    (task_id, TaskResult::Export(result))
                });
            }
            (None, TicketSource::Existing { .. }) => {
                unreachable!("existing tickets always have a key")
            }
        }
    }

    fn next_poll_delay(&mut self, attempts: u32) -> Duration {
        self.services
            .backoff()
            .delay(attempts.saturating_sub(1), &mut self.rng)
    }

    fn handle_result(&mut self, id: String, result: TaskResult) {
        let Some(ticket) = self.tickets.get_mut(&id) else {
            return;
        };
        ticket.busy = false;
        match result {
            TaskResult::Export(result) => self.on_export(&id, result),
            TaskResult::Poll(result) => self.on_poll(&id, result),
            TaskResult::Job(outcome) => self.on_job(&id, outcome),
            TaskResult::Hook(outcome) => self.on_hook(&id, outcome),
        }
    }

    fn on_export(&mut self, id: &str, result: Result<String, DmsError>) {
        match result {
            Ok(key) => {
                let ticket = self.tickets.get_mut(id).expect("present");
                ticket.export_failures = 0;
                ticket.record.download_key_id = Some(key.clone());
                ticket.record.last_error = None;
                info!(order_id = ticket.spec.order_id, download_key_id = %key, label = ticket.spec.label.as_deref().unwrap_or(""), "export started");
                // Persisted before the first poll: a restart never asks for another export.
                let delay = self.next_poll_delay(1);
                self.schedule(id, Instant::now() + delay);
                self.transition(id, TicketState::Waiting, None);
            }
            Err(err) if err.is_auth() => self.on_auth_failure(id, err),
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

    fn on_poll(&mut self, id: &str, result: Result<ExportStatus, DmsError>) {
        let status_label = result.as_ref().map_or("error", |s| s.status.as_str());
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
                ticket.record.last_status = Some(status.status.as_str().to_owned());
                // The API answered: an earlier error (throttling, an outage) is history now.
                ticket.record.last_error = None;
                match status.status {
                    DownloadStatus::Success => {
                        let url = status
                            .url
                            .expect("client guarantees a URL with DOWNLOAD_SUCCESS");
                        ticket.record.last_error = None;
                        self.start_job(id, url, status.total_count);
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
                        self.transition(id, TicketState::Waiting, None);
                    }
                }
            }
            Err(err) if err.is_auth() => self.on_auth_failure(id, err),
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

    fn start_job(
        &mut self,
        id: &str,
        url: crate::net::signed_url::SignedUrl,
        total_count: Option<i64>,
    ) {
        let ticket = self.tickets.get_mut(id).expect("present");
        let cancel = self.jobs_cancel.child_token();
        ticket.job_cancel = Some(cancel.clone());
        ticket.busy = true;
        ticket.progress = Arc::new(Progress::default());
        let job = Job {
            ticket_id: id.to_owned(),
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
        let task_id = id.to_owned();
        self.jobs.spawn(async move {
            (
                task_id,
                TaskResult::Job(run_job(ctx, job, events, cancel).await),
            )
        });
    }

    fn on_job(&mut self, id: &str, outcome: JobOutcome) {
        let metrics = &self.services.telemetry.metrics;
        match &outcome {
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
            JobOutcome::Archived { dir, files, bytes } => {
                ticket.record.archive = Some(dir.clone());
                ticket.record.last_error = None;
                ticket.record.download = Some(DownloadProgress {
                    bytes,
                    total: Some(bytes),
                });
                info!(order_id = ticket.spec.order_id, download_key_id = ticket.record.download_key_id.as_deref().unwrap_or(""),
                      label = ticket.spec.label.as_deref().unwrap_or(""), archive = %dir.display(), files, bytes, "archived");
                self.transition(id, TicketState::Archived, None);
                self.start_hook(id, dir);
            }
            JobOutcome::Failed(error) => self.transition(id, TicketState::Failed, Some(error)),
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

    /// Runs `hooks.on_archived` for a freshly published archive, as its own task: the ticket
    /// is archived already (a failing hook never undoes that) and its download slot is free.
    fn start_hook(&mut self, id: &str, dir: PathBuf) {
        if self.services.hooks.on_archived.is_none() {
            return;
        }
        let settings = self.services.hooks.clone();
        let ticket = &self.tickets[id];
        let order_id = ticket.spec.order_id;
        let key = ticket.record.download_key_id.clone().unwrap_or_default();
        let label = ticket.spec.label.clone();
        let task_id = id.to_owned();
        self.jobs.spawn(async move {
            let outcome = crate::job::hooks::run_on_archived(
                &settings,
                &dir,
                order_id,
                &key,
                label.as_deref(),
            )
            .await;
            (task_id, TaskResult::Hook(outcome))
        });
    }

    fn on_hook(&mut self, id: &str, outcome: Option<HookOutcome>) {
        let Some(outcome) = outcome else { return };
        self.services.telemetry.metrics.hook(&outcome.result);
        let ticket = self.tickets.get_mut(id).expect("present");
        ticket.record.hook = Some(outcome);
        let record = ticket.record.clone();
        self.persist(&record);
    }

    fn on_event(&mut self, event: JobEvent) {
        if self
            .tickets
            .get(&event.ticket_id)
            .is_some_and(|t| t.job_cancel.is_some())
        {
            self.transition(&event.ticket_id, event.state, None);
        }
    }

    /// Writes download progress of running downloads to their state files.
    fn save_progress(&mut self) {
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
            let record = self.tickets[&id].record.clone();
            self.persist(&record);
        }
    }

    fn reload(&mut self, tickets: Vec<TicketSpec>, services: Services) {
        self.services = services;
        let wanted: HashMap<String, TicketSpec> = tickets
            .into_iter()
            .map(|s| (crate::watch::state::ticket_id(&s), s))
            .collect();
        let removed: Vec<String> = self
            .order
            .iter()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in &removed {
            if let Some(ticket) = self.tickets.remove(id) {
                self.counts.adjust(ticket.record.state, false);
                if let Some(at) = ticket.due {
                    self.timers.remove(&(at, id.clone()));
                }
                if let Some(cancel) = ticket.job_cancel {
                    cancel.cancel();
                }
                info!(
                    order_id = ticket.spec.order_id,
                    label = ticket.spec.label.as_deref().unwrap_or(""),
                    "ticket removed from the config; no longer watched"
                );
            }
        }
        self.order.retain(|id| wanted.contains_key(id));
        let mut added = 0;
        for (id, spec) in wanted {
            match self.tickets.get_mut(&id) {
                Some(ticket) => {
                    if ticket.spec.label != spec.label || ticket.spec.tid != spec.tid {
                        ticket.record.label = spec.label.clone();
                        ticket.record.tid = spec.tid;
                        ticket.spec = spec;
                        let record = ticket.record.clone();
                        self.persist(&record);
                    }
                }
                None => {
                    self.add_ticket(spec);
                    added += 1;
                }
            }
        }
        // Deadlines follow a changed give_up_after.
        let give_up_after = self.services.poll.give_up_after;
        for ticket in self.tickets.values_mut() {
            ticket.deadline = deadline_of(&ticket.record, give_up_after);
        }
        info!(
            added,
            removed = removed.len(),
            watched = self.tickets.len(),
            "config reloaded"
        );
        self.publish_summary();
    }

    /// Runs until `shutdown` is cancelled, or with `once` until every ticket is terminal.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        mut control: mpsc::Receiver<Control>,
    ) -> RunOutcome {
        let mut next_progress_save = Instant::now() + PROGRESS_SAVE_INTERVAL;
        let mut next_heartbeat = Instant::now();
        let interrupted = loop {
            self.start_due_work();
            if self.auth_failure.is_some() {
                break false;
            }
            if self.once && self.polls.is_empty() && self.jobs.is_empty() && self.all_terminal() {
                break false;
            }
            let next_due = if self.polls.len() < MAX_POLLS_IN_FLIGHT {
                self.timers.first().map(|(at, _)| *at)
            } else {
                None
            };
            let downloading = self.counts.downloading > 0;
            tokio::select! {
                _ = shutdown.cancelled() => break true,
                Some(joined) = self.polls.join_next(), if !self.polls.is_empty() => self.joined(joined),
                Some(joined) = self.jobs.join_next(), if !self.jobs.is_empty() => self.joined(joined),
                Some(event) = self.events_rx.recv() => self.on_event(event),
                Some(message) = control.recv() => match message {
                    Control::Reload { tickets, services } => self.reload(tickets, *services),
                },
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
                _ = tokio::time::sleep_until(next_progress_save), if downloading => {
                    self.save_progress();
                    next_progress_save = Instant::now() + PROGRESS_SAVE_INTERVAL;
                }
                // The loop proves it is alive (liveness, systemd watchdog) by ticking here: a
                // wedged loop stops ticking. One wake-up per interval is the only idle cost.
                _ = tokio::time::sleep_until(next_heartbeat) => {
                    self.services.telemetry.health.beat();
                    if let Some(tick) = &mut self.heartbeat.tick {
                        tick();
                    }
                    next_heartbeat = Instant::now() + self.heartbeat.every;
                }
            }
        };
        self.stop().await;
        let (archived, failed) =
            self.tickets
                .values()
                .fold((0, 0), |(a, f), t| match t.record.state {
                    TicketState::Archived => (a + 1, f),
                    TicketState::Failed => (a, f + 1),
                    _ => (a, f),
                });
        RunOutcome {
            archived,
            failed,
            interrupted,
            auth_failure: self.auth_failure.take(),
        }
    }

    fn joined(&mut self, joined: Result<(String, TaskResult), tokio::task::JoinError>) {
        match joined {
            Ok((id, result)) => self.handle_result(id, result),
            Err(err) if err.is_cancelled() => {}
            Err(err) => error!(error = %err, "a ticket task panicked"),
        }
    }

    /// Stops jobs at a safe point (partial downloads kept, nothing half-published), drops
    /// polls in flight (cheap to redo after a restart), saves progress.
    async fn stop(&mut self) {
        self.polls.abort_all();
        self.jobs_cancel.cancel();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            tokio::select! {
                joined = self.jobs.join_next() => match joined {
                    Some(joined) => self.joined(joined),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("shutdown grace period over; leaving unfinished work for the next start");
                    self.jobs.abort_all();
                    break;
                }
            }
        }
        self.save_progress();
    }
}
