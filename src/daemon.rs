//! Wires a validated config into a running scheduler: credentials, the API client, the
//! downloader, the archive layout and the state store. `cli/run.rs` adds signals on top;
//! tests call [`run`] directly with their own shutdown token.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::archive::ArchiveLayout;
use crate::config::Config;
use crate::credentials::{CredentialEnv, CredentialProvider};
use crate::dms::DmsClient;
use crate::download::Downloader;
use crate::metrics::Telemetry;
use crate::pipeline::PipelineContext;
use crate::ratelimit::RateLimiter;
use crate::scheduler::{Control, RunOutcome, Scheduler, Services, Summary};
use crate::state::StateStore;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The credentials settings are unusable (exit 78) or a source is unreachable (exit 75).
    #[error("credentials: {0}")]
    Credentials(#[from] crate::credentials::CredentialError),
    /// The state or archive directory cannot be used.
    #[error("{0}")]
    Storage(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl StartError {
    /// The exit code: 78 unless a credential source was merely unreachable.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Credentials(e) if !e.is_config() => 75,
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

/// Builds what the scheduler uses from a config. `limiter` is shared across reloads when the
/// rate does not change, so the limit holds across the swap.
pub fn build_services(
    config: &Config,
    credentials: CredentialProvider,
    limiter: Arc<RateLimiter>,
    telemetry: Telemetry,
) -> Result<Services, StartError> {
    let dms = DmsClient::new(&config.dms, credentials, limiter, telemetry.clone())
        .map_err(|e| StartError::Http(crate::net::transport_error_text(e)))?;
    let downloader = Downloader::new(&config.download, Arc::clone(&telemetry.metrics))
        .map_err(|e| StartError::Http(crate::net::transport_error_text(e)))?;
    let layout = ArchiveLayout::new(&config.archive.dir);
    let pipeline = PipelineContext {
        dms: dms.clone(),
        downloader,
        layout,
        archive: config.archive.clone(),
        download: config.download,
        permits: Arc::new(tokio::sync::Semaphore::new(config.download.concurrency)),
    };
    Ok(Services {
        dms,
        pipeline: Arc::new(pipeline),
        poll: config.poll,
        telemetry,
    })
}

/// A daemon ready to run: everything local is in place (READY=1 may be sent).
#[derive(Debug)]
pub struct Prepared {
    scheduler: Scheduler,
    /// Counts per state, updated as tickets move.
    pub summary: watch::Receiver<Summary>,
    /// Send reloads here.
    pub control: mpsc::Sender<Control>,
    control_rx: mpsc::Receiver<Control>,
}

/// Checks the directories, builds credentials and clients, and loads ticket state. Makes no
/// network call.
pub fn prepare(config: &Config, options: RunOptions) -> Result<Prepared, StartError> {
    let credentials = CredentialProvider::new(&config.credentials, CredentialEnv::from_process())?;
    prepare_with(config, options, credentials)
}

/// [`prepare`] with a given credential provider (tests).
pub fn prepare_with(
    config: &Config,
    options: RunOptions,
    credentials: CredentialProvider,
) -> Result<Prepared, StartError> {
    let store = StateStore::open(&config.state.dir)
        .map_err(|e| StartError::Storage(format!("state directory: {e}")))?;
    let layout = ArchiveLayout::new(&config.archive.dir);
    layout
        .ensure()
        .map_err(|e| StartError::Storage(format!("archive directory: {e}")))?;
    check_writable(&config.state.dir)?;
    check_writable(&config.archive.dir)?;
    let limiter = Arc::new(RateLimiter::new(config.dms.max_requests_per_second));
    let services = build_services(config, credentials, limiter, Telemetry::default())?;
    let (summary_tx, summary) = watch::channel(Summary::default());
    let scheduler = Scheduler::new(
        config.tickets.clone(),
        services,
        store,
        options.once,
        summary_tx,
    );
    let (control, control_rx) = mpsc::channel(4);
    Ok(Prepared {
        scheduler,
        summary,
        control,
        control_rx,
    })
}

fn check_writable(dir: &std::path::Path) -> Result<(), StartError> {
    tempfile::tempfile_in(dir)
        .map(drop)
        .map_err(|e| StartError::Storage(format!("{} is not writable: {e}", dir.display())))
}

impl Prepared {
    /// Runs until `shutdown`, or with `--once` until every ticket is terminal.
    pub async fn run(self, shutdown: CancellationToken) -> RunOutcome {
        self.scheduler.run(shutdown, self.control_rx).await
    }
}

/// `prepare` then `run`.
pub async fn run(
    config: &Config,
    options: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunOutcome, StartError> {
    Ok(prepare(config, options)?.run(shutdown).await)
}
