//! Wires a validated config into a running scheduler, and runs it as a daemon: credentials,
//! the API client, the downloader, the archive layout and state store; the HTTP listener;
//! systemd notifications (READY, STATUS, WATCHDOG, RELOADING, STOPPING); and config reloads.
//!
//! `cli/run.rs` turns signals into the shutdown token and the reload channel; tests call
//! [`Daemon::start`] and [`Daemon::run`] directly with their own.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::services::{Limits, build_services};
use crate::config::{Config, ConfigEnv};
use crate::credentials::{CredentialEnv, CredentialProvider};
use crate::job::archive::ArchiveLayout;
use crate::net::ratelimit::RateLimiter;
use crate::service::config_watch::{Change, WatchedPaths};
use crate::service::http::HttpState;
use crate::service::notify::Notifier;
use crate::telemetry::Summary;
use crate::telemetry::metrics::Telemetry;
use crate::watch::requests::{self, REQUESTS_DIR};
use crate::watch::state::{DirLock, StateStore, StateWriter, writer::DEFAULT_FLUSH_INTERVAL};
use crate::watch::{Control, DEFAULT_HEARTBEAT, RunOutcome, Scheduler, Services, load_tickets};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The credentials settings are unusable (exit 78) or a source is unreachable (exit 75).
    #[error("credentials: {0}")]
    Credentials(#[from] crate::credentials::CredentialError),
    /// The state or archive directory cannot be used.
    #[error("{0}")]
    Storage(String),
    /// Another daemon runs on the same state directory.
    #[error("{0}")]
    Locked(String),
    /// The HTTP client could not be built, or the listener could not bind.
    #[error("{0}")]
    Http(String),
    /// The upload target's settings or keys are unusable.
    #[error("{0}")]
    Upload(String),
}

impl StartError {
    /// The exit code: 75 when a credential source was merely unreachable, 1 when the listen
    /// address is busy (a restart may well help), 78 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Credentials(e) if !e.is_config() => 75,
            Self::Http(_) => 1,
            // The other daemon may stop; a later restart can succeed.
            Self::Locked(_) => 75,
            _ => 78,
        }
    }
}

/// Options of `dmstrack run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop when every ticket is terminal.
    pub once: bool,
}

/// The state store and the locks on the state and archive folders.
struct Storage {
    store: StateStore,
    locks: [DirLock; 2],
    layout: ArchiveLayout,
}

/// Blocking: locks the state and archive folders (in that order), opens the state database
/// (importing an earlier version's files), prepares the archive's work folders.
fn open_storage(state_dir: &Path, archive_dir: &Path) -> Result<Storage, StartError> {
    std::fs::create_dir_all(state_dir).map_err(|e| {
        StartError::Storage(format!("state directory {}: {e}", state_dir.display()))
    })?;
    // `dmstrack retry` / `forget` hold the lock for a moment when no daemon runs: wait a
    // little before concluding another daemon has it.
    let mut attempts = 0;
    let state_lock = loop {
        match DirLock::acquire(state_dir, "state") {
            Ok(lock) => break lock,
            Err(message) if attempts < 30 && message.contains("another dmstrack") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(message) => return Err(StartError::Locked(message)),
        }
    };
    let layout = ArchiveLayout::new(archive_dir);
    layout
        .ensure()
        .map_err(|e| StartError::Storage(format!("archive directory: {e}")))?;
    // Two daemons with different state folders but one archive would delete each other's
    // staging folders and partial downloads.
    let archive_lock = DirLock::acquire_file(&layout.lock_path(), archive_dir, "archive")
        .map_err(StartError::Locked)?;
    check_writable(state_dir)?;
    check_writable(archive_dir)?;
    let store = StateStore::open(state_dir)
        .map_err(|e| StartError::Storage(format!("state directory: {e}")))?;
    Ok(Storage {
        store,
        locks: [state_lock, archive_lock],
        layout,
    })
}

fn check_writable(dir: &std::path::Path) -> Result<(), StartError> {
    tempfile::tempfile_in(dir)
        .map(drop)
        .map_err(|e| StartError::Storage(format!("{} is not writable: {e}", dir.display())))
}

/// A daemon whose local set-up is done (config, state, archive, credentials, listener): the
/// moment `READY=1` is sent. Nothing here waits on the API.
#[derive(Debug)]
pub struct Daemon {
    config: Config,
    env: ConfigEnv,
    credential_env: CredentialEnv,
    telemetry: Telemetry,
    limits: Limits,
    notifier: Arc<Notifier>,
    scheduler: Scheduler,
    summary: watch::Receiver<Summary>,
    control: mpsc::Sender<Control>,
    control_rx: mpsc::Receiver<Control>,
    http_stop: CancellationToken,
    /// The state and archive folders are this process's while it runs.
    _locks: [DirLock; 2],
    /// Where the listener is bound, when `[http]` is set.
    pub http_addr: Option<std::net::SocketAddr>,
}

impl Daemon {
    /// Checks the directories, builds credentials and clients, loads ticket state and binds
    /// the listener. Makes no call to the API.
    pub async fn start(
        config: Config,
        env: ConfigEnv,
        credential_env: CredentialEnv,
        options: RunOptions,
        notifier: Notifier,
    ) -> Result<Self, StartError> {
        let credentials = CredentialProvider::new(&config.credentials, credential_env.clone())?;
        let telemetry = Telemetry::default();
        let storage = {
            let (state_dir, archive_dir) = (config.state.dir.clone(), config.archive.dir.clone());
            tokio::task::spawn_blocking(move || open_storage(&state_dir, &archive_dir))
                .await
                .map_err(|e| StartError::Storage(format!("opening the state failed: {e}")))??
        };
        let Storage {
            store,
            locks,
            layout,
        } = storage;
        telemetry
            .metrics
            .watch_filesystems(&config.state.dir, &config.archive.dir);
        let writer = StateWriter::start(
            store,
            DEFAULT_FLUSH_INTERVAL,
            Arc::clone(&telemetry.metrics),
        );
        let loaded = load_tickets(&writer, &layout, config.tickets.clone())
            .await
            .map_err(StartError::Storage)?;
        // Partial downloads of tickets still in progress are kept for Range, and so are those
        // of tickets removed from the config mid-download (their records stay until `forget`,
        // which drops the part too): added back, they resume. The rest of the work folders
        // (interrupted extractions, parts of finished tickets, parts nobody records) go.
        let mut in_progress: HashSet<String> = loaded
            .iter()
            .filter(|t| {
                !t.archived_on_disk && t.record.as_ref().is_none_or(|r| !r.state.is_terminal())
            })
            .map(|t| crate::watch::state::ticket_id(&t.spec))
            .collect();
        let configured: HashSet<String> = loaded
            .iter()
            .map(|t| crate::watch::state::ticket_id(&t.spec))
            .collect();
        let recorded = writer.load_all().await.map_err(StartError::Storage)?;
        in_progress.extend(
            recorded
                .into_iter()
                .filter(|r| !configured.contains(&r.id) && !r.state.is_terminal())
                .map(|r| r.id),
        );
        {
            let layout = layout.clone();
            let removed = tokio::task::spawn_blocking(move || layout.clean_stale(&in_progress))
                .await
                .unwrap_or_default();
            for path in removed {
                debug!(path = %path.display(), "removed a stale staging folder or partial download");
            }
        }
        let limits = Limits::new(&config);
        let services = {
            let (config, credential_env, limits, telemetry) = (
                config.clone(),
                credential_env.clone(),
                limits.clone(),
                telemetry.clone(),
            );
            // Reads secret files: off the async workers.
            tokio::task::spawn_blocking(move || {
                build_services(&config, credentials, &credential_env, &limits, telemetry)
            })
            .await
            .map_err(|e| StartError::Storage(format!("building the clients failed: {e}")))??
        };
        let (summary_tx, summary) = watch::channel(Summary::default());
        let notifier = Arc::new(notifier);
        // The loop's tick doubles as the systemd watchdog ping, at half WATCHDOG_USEC.
        let every = notifier
            .watchdog_interval()
            .map_or(DEFAULT_HEARTBEAT, |w| w.min(DEFAULT_HEARTBEAT));
        let ping = Arc::clone(&notifier);
        let scheduler = Scheduler::new(loaded, services, writer, options.once, summary_tx)
            .with_heartbeat(every, Box::new(move || ping.watchdog()));
        let http_stop = CancellationToken::new();
        let http_addr = match config.http {
            Some(http) => {
                let state = HttpState {
                    metrics: Arc::clone(&telemetry.metrics),
                    health: Arc::clone(&telemetry.health),
                    max_loop_silence: every * 3 + Duration::from_secs(30),
                    api_window: readiness_window(&config),
                };
                let addr = crate::service::http::serve(http.listen, state, http_stop.clone())
                    .await
                    .map_err(|e| {
                        StartError::Http(format!("cannot listen on {}: {e}", http.listen))
                    })?;
                info!(listen = %addr, "serving /metrics, /healthz and /readyz");
                Some(addr)
            }
            None => None,
        };
        let (control, control_rx) = mpsc::channel(4);
        Ok(Self {
            config,
            env,
            credential_env,
            telemetry,
            limits,
            notifier,
            scheduler,
            summary,
            control,
            control_rx,
            http_stop,
            _locks: locks,
            http_addr,
        })
    }

    /// The metrics and health this daemon reports.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Runs until `shutdown`, or with `--once` until every ticket is terminal. Each message on
    /// `reloads` re-reads the config file: a valid one is applied, a bad one is reported and
    /// the running config stays.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        mut reloads: mpsc::Receiver<()>,
    ) -> RunOutcome {
        let Self {
            config,
            env,
            credential_env,
            telemetry,
            limits,
            notifier,
            scheduler,
            mut summary,
            control,
            control_rx,
            http_stop,
            _locks,
            ..
        } = self;
        notifier.ready();
        // Marks the current summary seen, so the loop does not send the same line again.
        notifier.status(&summary.borrow_and_update().line());
        let (changes_tx, mut changes) = mpsc::channel(4);
        let mut watcher = FileWatcher {
            changes: changes_tx,
            parent: shutdown.clone(),
            stop: CancellationToken::new(),
        };
        watcher.start(&config, config.fingerprint);
        let mut running = Running {
            watcher,
            attempted: config.fingerprint,
            config,
            env,
            credential_env,
            telemetry,
            limits,
            notifier,
            control,
            reload_error: None,
        };
        running.report_ticket_files();
        let mut scheduler = tokio::spawn(scheduler.run(shutdown.clone(), control_rx));
        let mut stopping_sent = false;
        let outcome = loop {
            tokio::select! {
                joined = &mut scheduler => break joined.expect("the scheduler does not panic"),
                Ok(()) = summary.changed() => {
                    running.notifier.status(&running.status_line(&summary.borrow()));
                }
                Some(()) = reloads.recv() => running.reload(&summary).await,
                Some(change) = changes.recv() => match change {
                    // Already tried (a SIGHUP got there first, or it failed the same way).
                    Change::Config(seen) if seen == running.attempted => {}
                    Change::Config(_) => {
                        info!("the config or the tickets folder changed; reloading");
                        running.reload(&summary).await;
                    }
                    Change::Requests => running.serve_requests().await,
                },
                _ = shutdown.cancelled(), if !stopping_sent => {}
            }
            if shutdown.is_cancelled() && !stopping_sent {
                running.notifier.stopping();
                stopping_sent = true;
            }
        };
        running.watcher.stop.cancel();
        // The scheduler may finish stopping before this loop saw the token (both are woken
        // by the same cancel, and `select!` picks at random), and `--once` ends without one:
        // either way the manager still hears that the service is going down.
        if !stopping_sent {
            running.notifier.stopping();
        }
        http_stop.cancel();
        outcome
    }
}

/// The watcher of the config file, the tickets folder and the requests folder.
struct FileWatcher {
    changes: mpsc::Sender<Change>,
    parent: CancellationToken,
    stop: CancellationToken,
}

impl FileWatcher {
    /// Watches the paths `config` names (stopping the watcher of the paths before).
    fn start(&mut self, config: &Config, loaded: [u8; 32]) {
        self.stop.cancel();
        self.stop = self.parent.child_token();
        crate::service::config_watch::spawn(
            WatchedPaths {
                config: config.source.clone(),
                tickets_dir: config.watch.tickets_dir.clone(),
                requests_dir: config.state.dir.join(REQUESTS_DIR),
            },
            loaded,
            self.changes.clone(),
            self.stop.clone(),
        );
    }
}

/// The daemon's side of a running scheduler: the config in force, reloads and requests.
struct Running {
    watcher: FileWatcher,
    config: Config,
    env: ConfigEnv,
    credential_env: CredentialEnv,
    telemetry: Telemetry,
    limits: Limits,
    notifier: Arc<Notifier>,
    control: mpsc::Sender<Control>,
    reload_error: Option<String>,
    /// The contents the last reload read (or tried to), so the watcher does not reload the
    /// same contents again.
    attempted: [u8; 32],
}

impl Running {
    /// Re-reads the config (and the tickets folder): a valid one is applied (the difference
    /// only), a bad one is reported and the running config stays. SIGHUP and the watcher
    /// both end up here.
    async fn reload(&mut self, summary: &watch::Receiver<Summary>) {
        self.notifier.reloading();
        self.attempted = {
            let (config, tickets) = (
                self.config.source.clone(),
                self.config.watch.tickets_dir.clone(),
            );
            tokio::task::spawn_blocking(move || {
                crate::config::fingerprint_on_disk(&config, &tickets)
            })
            .await
            .unwrap_or([0; 32])
        };
        let prepared = {
            let (config, env, credential_env) = (
                self.config.clone(),
                self.env.clone(),
                self.credential_env.clone(),
            );
            let (telemetry, limits) = (self.telemetry.clone(), self.limits.clone());
            // Reading the files and the credential files is blocking work.
            tokio::task::spawn_blocking(move || {
                reload(&config, &env, &credential_env, &telemetry, &limits)
            })
            .await
            .unwrap_or_else(|e| Err(format!("reload task failed: {e}")))
        };
        match prepared {
            Ok((new_config, new_limits, services)) => {
                let tickets = new_config.tickets.clone();
                let (applied, done) = tokio::sync::oneshot::channel();
                let sent = self
                    .control
                    .send(Control::Reload {
                        tickets,
                        services: Box::new(services),
                        applied: Some(applied),
                    })
                    .await;
                if sent.is_ok() {
                    // READY=1 means the new config is in force, added tickets included.
                    let _ = done.await;
                    new_limits.downloads.resize(new_config.download.concurrency);
                    if let Some(upload) = &new_config.upload {
                        new_limits.uploads.resize(upload.concurrency);
                    }
                    if new_config.watch.tickets_dir != self.config.watch.tickets_dir {
                        // Another tickets folder: watch that one from now on.
                        info!(tickets_dir = %new_config.watch.tickets_dir.display(), "watching the new tickets folder");
                        self.attempted = new_config.fingerprint;
                        self.watcher.start(&new_config, new_config.fingerprint);
                    }
                    self.config = new_config;
                    self.limits = new_limits;
                    self.reload_error = None;
                    info!(config = %self.config.source.display(), tickets = self.config.tickets.len(), "config reloaded");
                    self.report_ticket_files();
                }
            }
            Err(message) => {
                error!(error = %message, "config reload failed; keeping the running config");
                self.reload_error = Some(message);
            }
        }
        self.telemetry
            .health
            .set_reload_error(self.reload_error.clone());
        self.notifier.status(&self.status_line(&summary.borrow()));
        self.notifier.ready();
    }

    /// Logs every tickets file that was skipped, and counts them.
    fn report_ticket_files(&self) {
        let mut bad = 0;
        for file in self.config.bad_ticket_files() {
            bad += 1;
            error!(file = %file.path.display(), problem = file.problem.as_deref().unwrap_or(""),
                   "a tickets file is invalid and skipped; the other tickets go on");
        }
        self.telemetry
            .metrics
            .set_ticket_files(self.config.ticket_files.len() - bad, bad);
    }

    /// `STATUS=`: the summary, then a failed reload or skipped tickets files.
    fn status_line(&self, summary: &Summary) -> String {
        let mut line = summary.line();
        if let Some(error) = &self.reload_error {
            line.push_str("; config reload failed: ");
            line.push_str(error);
        }
        let bad: Vec<String> = self
            .config
            .bad_ticket_files()
            .map(|f| f.path.display().to_string())
            .collect();
        if !bad.is_empty() {
            line.push_str(&format!(
                "; invalid tickets file(s) skipped: {}",
                bad.join(", ")
            ));
        }
        line
    }

    /// Applies the waiting `retry` / `forget` requests, oldest first, and answers each.
    async fn serve_requests(&self) {
        let state_dir = self.config.state.dir.clone();
        let pending = tokio::task::spawn_blocking(move || {
            requests::pending(&state_dir)
                .into_iter()
                .map(|path| {
                    let request = requests::read(&path);
                    (path, request)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (path, request) in pending {
            let outcome = match request {
                Ok(request) => {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    if self
                        .control
                        .send(Control::Request { request, reply })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    match answer.await {
                        Ok(outcome) => outcome,
                        Err(_) => return,
                    }
                }
                Err(problem) => requests::Outcome {
                    code: 1,
                    message: format!("unreadable request: {problem}"),
                },
            };
            info!(request = %path.display(), code = outcome.code, message = %outcome.message, "request served");
            let _ = tokio::task::spawn_blocking(move || requests::answer(&path, &outcome)).await;
        }
    }
}

/// How long `/readyz` tolerates API silence while tickets are pending: a few poll intervals.
fn readiness_window(config: &Config) -> Duration {
    (config.poll.max_interval * 3).max(Duration::from_secs(300))
}

/// Reads and validates the config again and builds its services. Settings that cannot change
/// in a running process (directories, listener) keep their running values, with a warning.
fn reload(
    current: &Config,
    env: &ConfigEnv,
    credential_env: &CredentialEnv,
    telemetry: &Telemetry,
    limits: &Limits,
) -> Result<(Config, Limits, Services), String> {
    let mut new = Config::load(&current.source, env).map_err(|e| e.to_string())?;
    for (name, changed) in [
        ("state.dir", new.state.dir != current.state.dir),
        ("archive.dir", new.archive.dir != current.archive.dir),
        ("http.listen", new.http != current.http),
    ] {
        if changed {
            warn!(
                setting = name,
                "a changed {name} takes effect at the next restart"
            );
        }
    }
    new.state = current.state.clone();
    new.archive.dir = current.archive.dir.clone();
    new.http = current.http;
    let credentials = CredentialProvider::new(&new.credentials, credential_env.clone())
        .map_err(|e| format!("credentials: {e}"))?;
    // The rate limit holds across the swap unless the rate itself changed.
    let mut limits = limits.clone();
    if new.dms.max_requests_per_second != current.dms.max_requests_per_second {
        limits.rate = Arc::new(RateLimiter::new(new.dms.max_requests_per_second));
    }
    let services = build_services(
        &new,
        credentials,
        credential_env,
        &limits,
        telemetry.clone(),
    )
    .map_err(|e| e.to_string())?;
    Ok((new, limits, services))
}
