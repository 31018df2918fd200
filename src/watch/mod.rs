//! The one loop that watches every ticket, and the state it alone writes.
//!
//! A waiting ticket costs a map entry and one entry in the due-time queue ([`timers`]); the
//! loop sleeps until the earliest one, so thousands of idle tickets use no CPU and no task
//! each. Polls run as small tasks (at most [`MAX_POLLS_IN_FLIGHT`] at once, paced by the API
//! client's rate limit); downloads run as `job` tasks gated by `download.concurrency` inside
//! the job, so a long download never delays a poll. Every task is owned by one generation of
//! one ticket ([`tasks`]); results are applied by [`transitions`]; reloads by [`reload`].
//! Records go to the state writer thread ([`state::StateWriter`]): the loop never waits on
//! the disk.
//!
//! ```text
//! pending ─export─▶ waiting ─poll…─▶ downloading ─▶ extracting ─▶ archived
//!    │                 │ DOWNLOAD_FAIL / give_up_after      │ unsafe zip
//!    └─────────────────┴──────────────▶ failed ◀─────────────┘
//! ```

pub mod state;

mod post;
mod reload;
pub mod requests;
mod retention;
mod tasks;
mod tickets;
mod timers;
mod transitions;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::config::{HookSettings, PollSettings, TicketSpec};
use crate::dms::{DmsClient, DmsError};
use crate::job::archive::ArchiveLayout;
use crate::job::pipeline::{JobEvent, PipelineContext};
use crate::net::retry::Backoff;
use crate::telemetry::{Summary, Telemetry};

use self::state::{Durability, StateWriter, TicketState};
use self::tasks::{TaskOwner, TaskResult};
use self::tickets::Ticket;
use self::timers::TimerQueue;

pub use self::tickets::{LoadedTicket, load_tickets};

/// Status queries in flight at once; more due tickets wait their turn (the rate limit paces
/// them anyway, this only bounds memory after a restart with many due tickets).
pub const MAX_POLLS_IN_FLIGHT: usize = 32;
/// How often download progress is handed to the state writer while a download runs.
const PROGRESS_SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the main loop ticks to prove it is alive.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// How long shutdown waits for running jobs to reach a safe point.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    pub pipeline: std::sync::Arc<PipelineContext>,
    /// `[poll]`.
    pub poll: PollSettings,
    /// Metrics and health.
    pub telemetry: Telemetry,
    /// `[hooks]`.
    pub hooks: HookSettings,
    /// `[upload]`: the bucket and what upload jobs share.
    pub uploads: Option<std::sync::Arc<crate::job::upload::runner::UploadContext>>,
    /// `archive.retention`.
    pub retention: Option<Duration>,
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
        /// Answered once the new config is applied (added tickets loaded and watched).
        applied: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// `dmstrack retry` or `dmstrack forget`.
    Request {
        /// What is asked.
        request: requests::Request,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<requests::Outcome>,
    },
}

/// Records read for a reload's added tickets, and who waits for that reload.
type LoadResult = (
    Result<Vec<LoadedTicket>, String>,
    Option<tokio::sync::oneshot::Sender<()>>,
);

/// The scheduler. Build with [`Scheduler::new`], then [`Scheduler::run`].
pub struct Scheduler {
    services: Services,
    writer: StateWriter,
    layout: ArchiveLayout,
    once: bool,
    tickets: HashMap<String, Ticket>,
    timers: TimerQueue,
    /// Uploads and hooks due (after the archive), by ticket and kind of work.
    post_timers: TimerQueue<(String, post::PostWork)>,
    /// Tickets whose upload, hooks or clean-up are not final yet (`run --once` waits).
    post_pending: HashSet<String>,
    /// Status queries, export requests and record loads in flight.
    polls: JoinSet<TaskResult>,
    /// Download jobs and hooks in flight.
    jobs: JoinSet<TaskResult>,
    /// Records of tickets a reload added, being read (with who waits for the reload).
    loads: JoinSet<LoadResult>,
    /// The ids the config wants (the last reload's), so a late load never brings back a
    /// ticket a later reload removed.
    wanted: HashSet<String>,
    /// Which ticket generation each task in `polls` and `jobs` works for.
    owners: HashMap<tokio::task::Id, TaskOwner>,
    /// Tickets whose removed generation still has a job running: a new generation must not
    /// start a job (it would share the partial download) until that one has ended.
    draining: HashMap<String, usize>,
    next_generation: u64,
    events_tx: mpsc::UnboundedSender<JobEvent>,
    events_rx: mpsc::UnboundedReceiver<JobEvent>,
    summary: watch::Sender<Summary>,
    last_error: Option<String>,
    /// Tickets per state, kept current by every change.
    counts: Summary,
    /// Tickets whose record changed in ways nothing waits for (attempts, next poll): sent to
    /// the writer in one batch by the next flush.
    dirty: HashSet<String>,
    auth_failure: Option<DmsError>,
    /// When the next `archive.retention` check is due.
    next_retention: Instant,
    /// The retention scan running, if any.
    retention_task: Option<tokio::task::JoinHandle<Vec<std::path::PathBuf>>>,
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

impl Scheduler {
    /// A scheduler over tickets whose records were read by [`load_tickets`].
    pub fn new(
        tickets: Vec<LoadedTicket>,
        services: Services,
        writer: StateWriter,
        once: bool,
        summary: watch::Sender<Summary>,
    ) -> Self {
        let layout = services.pipeline.layout.clone();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut scheduler = Self {
            services,
            writer,
            layout,
            once,
            tickets: HashMap::new(),
            timers: TimerQueue::default(),
            post_timers: TimerQueue::default(),
            post_pending: HashSet::new(),
            polls: JoinSet::new(),
            jobs: JoinSet::new(),
            loads: JoinSet::new(),
            wanted: HashSet::new(),
            owners: HashMap::new(),
            draining: HashMap::new(),
            next_generation: 0,
            events_tx,
            events_rx,
            summary,
            last_error: None,
            counts: Summary::default(),
            dirty: HashSet::new(),
            auth_failure: None,
            next_retention: Instant::now(),
            retention_task: None,
            rng: fastrand::Rng::new(),
            jobs_cancel: CancellationToken::new(),
            heartbeat: Heartbeat {
                every: DEFAULT_HEARTBEAT,
                tick: None,
            },
        };
        for loaded in tickets {
            scheduler.wanted.insert(state::ticket_id(&loaded.spec));
            scheduler.add_ticket(loaded);
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

    /// Hands a ticket's record to the state writer.
    /// Hands a ticket's record to the state writer: at once when something depends on it;
    /// otherwise it is only marked dirty, and the next flush (every few seconds, and at
    /// shutdown) sends every dirty record in one batch, so a poll costs no message at all.
    fn save(&mut self, id: &str, durability: Durability) -> state::Committed {
        match durability {
            Durability::Now => {
                self.dirty.remove(id);
                let record = self.tickets[id].record.clone();
                self.writer.put(record, Durability::Now)
            }
            Durability::Lazy => {
                self.dirty.insert(id.to_owned());
                state::Committed::done()
            }
        }
    }

    /// Sends the dirty records to the writer (committed with its next batch).
    fn flush_dirty(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            if let Some(ticket) = self.tickets.get(&id) {
                self.writer.put(ticket.record.clone(), Durability::Lazy);
            }
        }
    }

    fn schedule(&mut self, id: &str, at: Instant) {
        let Some(ticket) = self.tickets.get_mut(id) else {
            return;
        };
        // Never past the deadline: `give_up_after` is kept to the poll, not to the next
        // backoff step after it.
        let at = at.min(ticket.deadline);
        ticket.record.next_poll_at = Some(tickets::wall_clock(at));
        self.timers.schedule(id, at);
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

    /// Starts the work of every due ticket, as far as capacity allows.
    fn start_due_work(&mut self) {
        let now = Instant::now();
        while self.polls.len() < MAX_POLLS_IN_FLIGHT {
            let Some(id) = self.timers.pop_due(now) else {
                break;
            };
            let Some(ticket) = self.tickets.get(&id) else {
                continue;
            };
            if ticket.busy || ticket.record.state.is_terminal() {
                continue;
            }
            if now >= ticket.deadline {
                self.start_give_up(&id);
                continue;
            }
            self.start_poll_or_export(&id);
        }
    }

    fn next_poll_delay(&mut self, attempts: u32) -> Duration {
        self.services
            .backoff()
            .delay(attempts.saturating_sub(1), &mut self.rng)
    }

    /// Runs until `shutdown` is cancelled, or with `once` until every ticket is terminal.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        mut control: mpsc::Receiver<Control>,
    ) -> RunOutcome {
        let mut next_progress_save = Instant::now() + PROGRESS_SAVE_INTERVAL;
        let mut next_flush = Instant::now() + state::writer::DEFAULT_FLUSH_INTERVAL;
        let mut next_heartbeat = Instant::now();
        let interrupted = loop {
            self.start_due_work();
            self.start_due_post_work();
            if self.retention_due() && self.next_retention <= Instant::now() {
                // Here rather than only from the timer below, so that `run --once` checks
                // retention (at start-up and after its publishes and uploads) before it ends.
                self.start_retention();
            }
            if self.auth_failure.is_some() {
                break false;
            }
            if self.once
                && self.polls.is_empty()
                && self.jobs.is_empty()
                && self.loads.is_empty()
                && self.counts.active() == 0
                && self.post_pending.is_empty()
                && self.retention_task.is_none()
            {
                break false;
            }
            let next_due = if self.polls.len() < MAX_POLLS_IN_FLIGHT {
                self.timers.next()
            } else {
                None
            };
            let next_due = match (next_due, self.post_timers.next()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let downloading = self.counts.downloading > 0;
            let retention_due = self.retention_due();
            tokio::select! {
                _ = shutdown.cancelled() => break true,
                Some(joined) = self.polls.join_next_with_id(), if !self.polls.is_empty() => self.joined(joined),
                Some(joined) = self.jobs.join_next_with_id(), if !self.jobs.is_empty() => self.joined(joined),
                Some(loaded) = self.loads.join_next(), if !self.loads.is_empty() => {
                    let (loaded, applied) = loaded.unwrap_or_else(|e| (Err(format!("loading task failed: {e}")), None));
                    self.loaded(loaded);
                    if let Some(applied) = applied {
                        let _ = applied.send(());
                    }
                }
                Some(event) = self.events_rx.recv() => self.on_event(event),
                _ = tokio::time::sleep_until(self.next_retention), if retention_due => self.start_retention(),
                removed = async { self.retention_task.as_mut().expect("checked").await }, if self.retention_task.is_some() => {
                    self.retention_done(removed.unwrap_or_default());
                }
                Some(message) = control.recv() => match message {
                    Control::Reload { tickets, services, applied } => self.reload(tickets, *services, applied),
                    Control::Request { request, reply } => self.on_request(request, reply),
                },
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
                _ = tokio::time::sleep_until(next_flush), if !self.dirty.is_empty() => {
                    self.flush_dirty();
                    next_flush = Instant::now() + state::writer::DEFAULT_FLUSH_INTERVAL;
                }
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
        let (archived, failed) = self.tickets.values().fold((0, 0), |(a, f), t| {
            if t.record.state == TicketState::Failed || self.post_work_failed(&t.record) {
                (a, f + 1)
            } else if t.record.state == TicketState::Archived {
                (a + 1, f)
            } else {
                (a, f)
            }
        });
        self.flush_dirty();
        let writer = self.writer.clone();
        let auth_failure = self.auth_failure.take();
        drop(self);
        writer.close().await;
        RunOutcome {
            archived,
            failed,
            interrupted,
            auth_failure,
        }
    }

    /// An upload or a hook of this archived ticket ended failed.
    fn post_work_failed(&self, record: &state::TicketRecord) -> bool {
        let upload_failed = self.services.uploads.is_some()
            && record
                .upload
                .as_ref()
                .is_some_and(|u| u.state == state::UploadState::Failed);
        let hook_failed = record.hooks.iter().any(|(kind, h)| {
            h.state == state::HookState::Failed && kind.argv(&self.services.hooks).is_some()
        });
        upload_failed || hook_failed
    }

    /// Stops jobs at a safe point (partial downloads kept, nothing half-published), drops
    /// polls in flight (cheap to redo after a restart), saves progress.
    async fn stop(&mut self) {
        self.polls.abort_all();
        self.jobs_cancel.cancel();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            tokio::select! {
                joined = self.jobs.join_next_with_id() => match joined {
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
        while let Some(joined) = self.polls.join_next_with_id().await {
            if let Err(err) = joined
                && err.is_panic()
            {
                error!(error = %err, "a ticket task panicked while stopping");
            }
        }
        // A retention scan still running removes folders: their records must say so.
        if let Some(scan) = self.retention_task.as_mut()
            && let Ok(removed) = tokio::time::timeout(SHUTDOWN_GRACE, scan).await
        {
            self.retention_done(removed.unwrap_or_default());
        }
        self.save_progress();
    }
}
