//! One ticket's way from a signed URL to a published archive: download (resuming, verified),
//! extract (safe, parallel), write the manifest, publish with one rename.
//!
//! A job owns its retries: transport failures back off and resume with `Range`; a refused
//! URL (403 expired) makes it ask DMS for a fresh one instead of retrying the same URL; a
//! corrupt zip is downloaded again once, and fails the ticket when the same bytes come back.
//! It reports a [`JobOutcome`] and never touches ticket state itself: the scheduler does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ArchiveSettings, DownloadSettings};
use crate::dms::{DmsClient, DownloadStatus};
use crate::job::archive::{
    self, ArchiveLayout, FILES_DIR, Manifest, ManifestFile, ManifestSource, Published,
};
use crate::job::download::{
    Downloader, FetchError, Progress, TicketTag, remove_part, remove_part_off_loop,
};
use crate::job::extract::{ExtractError, ExtractOptions, extract_zip};
use crate::job::limit::ConcurrencyLimit;
use crate::net::retry::Backoff;
use crate::net::signed_url::SignedUrl;

/// Between download attempts: 1 s, 2 s, 4 s … capped at 30 s, ±20 %.
const DOWNLOAD_BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
    multiplier: 2.0,
    jitter: 0.2,
};
/// Fresh URLs tried in one job before it gives the ticket back to the poll schedule.
const MAX_URL_REFRESHES: u32 = 3;

/// What every job shares. Rebuilt on reload.
#[derive(Debug)]
pub struct PipelineContext {
    /// For fresh URLs after a 403.
    pub dms: DmsClient,
    /// The OSS downloader.
    pub downloader: Downloader,
    /// Where files go.
    pub layout: ArchiveLayout,
    /// `[archive]`.
    pub archive: ArchiveSettings,
    /// `[download]`.
    pub download: DownloadSettings,
    /// `download.concurrency`: one limit for the life of the process (resized on reload).
    pub permits: ConcurrencyLimit,
    /// With `[upload] content = "zip"` the zip is kept until its upload is confirmed.
    pub upload_zip: bool,
}

impl PipelineContext {
    /// Whether a published archive keeps the downloaded zip beside its manifest.
    pub fn keeps_zip(&self) -> bool {
        self.archive.keep_zip || self.upload_zip
    }
}

/// Which run of which ticket a job belongs to. A ticket removed and added again by two
/// reloads gets a new generation, so a late answer of the old job is never taken for the new
/// ticket's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobTag {
    /// The ticket's state id.
    pub ticket_id: String,
    /// The ticket's generation in the watch loop.
    pub generation: u64,
}

/// One ticket to fetch and archive.
#[derive(Debug)]
pub struct Job {
    /// Whose job it is.
    pub tag: JobTag,
    /// The data-tracking ticket.
    pub order_id: i64,
    /// The export's key.
    pub download_key_id: String,
    /// Tenant id.
    pub tid: Option<i64>,
    /// Config label.
    pub label: Option<String>,
    /// The URL from the last `DOWNLOAD_SUCCESS`.
    pub url: SignedUrl,
    /// `TotalCount` from that answer.
    pub total_count: Option<i64>,
    /// Bytes so far, shared with the scheduler.
    pub progress: Arc<Progress>,
}

impl Job {
    /// The fields its log lines carry.
    fn tag(&self) -> TicketTag<'_> {
        TicketTag {
            order_id: self.order_id,
            download_key_id: &self.download_key_id,
            label: self.label.as_deref().unwrap_or(""),
        }
    }
}

/// How a job ended.
#[derive(Debug)]
pub enum JobOutcome {
    /// Published at this folder (or found there already, complete with its manifest).
    Archived {
        /// The archive folder.
        dir: PathBuf,
        /// Number of files.
        files: usize,
        /// Zip size.
        bytes: u64,
        /// The archive was already there (an earlier run, another ticket with the same key):
        /// adopted, nothing downloaded.
        adopted: bool,
    },
    /// Not this time; the ticket goes back to its poll schedule with this error.
    RetryLater(String),
    /// The ticket is done for: this error is final.
    Failed(String),
    /// The credentials or signature were refused while fetching a fresh URL.
    AuthFailed(crate::dms::DmsError),
    /// Shutdown; partial downloads are kept.
    Cancelled,
}

/// The phase a job has entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// It holds a download permit and fetches the zip.
    Downloading,
    /// The zip is complete; it is being verified, extracted and published.
    Extracting,
}

/// What a job reports while it runs.
#[derive(Debug)]
pub enum JobEventKind {
    /// A download job entered a phase.
    Phase(JobPhase),
    /// An upload job took a step the ticket's state must record.
    Upload {
        /// The step.
        step: crate::job::upload::progress::UploadStep,
        /// Answered once the step is durable, when the job waits for that.
        durable: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    },
}

/// Progress a job reports while it runs.
#[derive(Debug)]
pub struct JobEvent {
    /// Whose job.
    pub tag: JobTag,
    /// What happened.
    pub kind: JobEventKind,
}

/// Runs a job to its end.
pub async fn run_job(
    ctx: Arc<PipelineContext>,
    mut job: Job,
    events: tokio::sync::mpsc::UnboundedSender<JobEvent>,
    cancel: CancellationToken,
) -> JobOutcome {
    // An archive already there is the ticket's archive: never download it again.
    if let Some(outcome) = adopt_existing(&ctx.layout, &job).await {
        return outcome;
    }
    let _permit = tokio::select! {
        _ = cancel.cancelled() => return JobOutcome::Cancelled,
        permit = ctx.permits.acquire() => permit,
    };
    let _ = events.send(JobEvent {
        tag: job.tag.clone(),
        kind: JobEventKind::Phase(JobPhase::Downloading),
    });
    let part = ctx.layout.part_path(&job.tag.ticket_id);
    let mut rng = fastrand::Rng::new();
    // Attempts that moved the download forward do not count against max_attempts: a link
    // that keeps breaking but keeps making progress is worth following to the end.
    let mut failures_without_progress = 0u32;
    let mut attempt = 0u32;
    let mut url_refreshes = 0u32;
    let mut corrupt_zip_crc: Option<u64> = None;
    let mut last_error = String::new();

    while failures_without_progress < ctx.download.max_attempts {
        attempt += 1;
        let fetched = match ctx
            .downloader
            .fetch(&job.url, &part, &job.progress, &cancel, job.tag())
            .await
        {
            Ok(fetched) => fetched,
            Err(FetchError::Cancelled) => return JobOutcome::Cancelled,
            Err(FetchError::UrlRefused { status, code, .. })
                if url_refreshes < MAX_URL_REFRESHES =>
            {
                url_refreshes += 1;
                info!(order_id = job.order_id, download_key_id = %job.download_key_id, label = job.label.as_deref().unwrap_or(""), status, code = %code,
                      "the signed URL was refused (expired?); asking DMS for a fresh one");
                let fresh = tokio::select! {
                    _ = cancel.cancelled() => return JobOutcome::Cancelled,
                    fresh = fresh_url(&ctx.dms, &job) => fresh,
                };
                match fresh {
                    Ok(url) => {
                        job.url = url;
                        continue;
                    }
                    Err(outcome) => return outcome,
                }
            }
            Err(err @ FetchError::UrlRefused { .. }) => {
                return JobOutcome::RetryLater(err.to_string());
            }
            Err(err @ FetchError::Io { .. }) => {
                // Disk full or permissions: free what we hold and let the poll schedule retry,
                // rather than latching the error.
                remove_part_off_loop(&part).await;
                return JobOutcome::RetryLater(err.to_string());
            }
            Err(err) => {
                let progressed = matches!(
                    err,
                    FetchError::Transient {
                        progressed: true,
                        ..
                    }
                );
                last_error = err.to_string();
                if !progressed {
                    failures_without_progress += 1;
                }
                if failures_without_progress >= ctx.download.max_attempts {
                    break;
                }
                let delay =
                    DOWNLOAD_BACKOFF.delay(failures_without_progress.saturating_sub(1), &mut rng);
                info!(order_id = job.order_id, download_key_id = %job.download_key_id, label = job.label.as_deref().unwrap_or(""),
                      attempt, failures_without_progress, max_attempts = ctx.download.max_attempts,
                      delay_ms = delay.as_millis() as u64, error = %last_error, "download failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return JobOutcome::Cancelled,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };

        let _ = events.send(JobEvent {
            tag: job.tag.clone(),
            kind: JobEventKind::Phase(JobPhase::Extracting),
        });
        match extract_and_publish(&ctx, &job, &part, &fetched, &cancel).await {
            Ok(outcome) => return outcome,
            Err(ExtractFailure::Corrupt(reason)) => {
                remove_part_off_loop(&part).await;
                if corrupt_zip_crc == Some(fetched.crc64) {
                    return JobOutcome::Failed(format!(
                        "the export zip is corrupt (downloaded twice, same bytes): {reason}"
                    ));
                }
                warn!(order_id = job.order_id, download_key_id = %job.download_key_id, label = job.label.as_deref().unwrap_or(""), error = %reason,
                      "the downloaded zip is corrupt; downloading it again");
                corrupt_zip_crc = Some(fetched.crc64);
                last_error = reason;
                failures_without_progress += 1;
            }
            Err(ExtractFailure::Unsafe(reason)) => {
                remove_part_off_loop(&part).await;
                return JobOutcome::Failed(reason);
            }
            Err(ExtractFailure::Local(reason)) => return JobOutcome::RetryLater(reason),
            Err(ExtractFailure::Cancelled) => return JobOutcome::Cancelled,
        }
    }
    JobOutcome::RetryLater(format!(
        "download gave up after {} attempts: {last_error}",
        ctx.download.max_attempts
    ))
}

/// Asks DMS again: a `DOWNLOAD_SUCCESS` answer carries a freshly signed URL.
async fn fresh_url(dms: &DmsClient, job: &Job) -> Result<SignedUrl, JobOutcome> {
    match dms
        .query_status(job.order_id, &job.download_key_id, job.tid)
        .await
    {
        Ok(status) => match (status.status, status.url) {
            (DownloadStatus::Success, Some(url)) => Ok(url),
            (DownloadStatus::Fail, _) => Err(JobOutcome::Failed(format!(
                "DOWNLOAD_FAIL: {}",
                status.status_desc.unwrap_or_default()
            ))),
            (other, _) => Err(JobOutcome::RetryLater(format!(
                "the signed URL was refused and DMS now reports {}",
                other.as_str()
            ))),
        },
        Err(err) if err.is_auth() => Err(JobOutcome::AuthFailed(err)),
        Err(err) => Err(JobOutcome::RetryLater(err.to_string())),
    }
}

enum ExtractFailure {
    /// A fresh download could fix it (entry CRC-32, truncated zip).
    Corrupt(String),
    /// The archive's content is refused (unsafe names, limits): final.
    Unsafe(String),
    /// A local problem (disk).
    Local(String),
    /// The job was cancelled before it published; nothing was published.
    Cancelled,
}

async fn extract_and_publish(
    ctx: &Arc<PipelineContext>,
    job: &Job,
    part: &std::path::Path,
    fetched: &crate::job::download::Fetched,
    cancel: &CancellationToken,
) -> Result<JobOutcome, ExtractFailure> {
    let layout = ctx.layout.clone();
    let ticket_id = job.tag.ticket_id.clone();
    let staging = tokio::task::spawn_blocking(move || layout.new_staging(&ticket_id))
        .await
        .map_err(|e| ExtractFailure::Local(format!("staging task failed: {e}")))?
        .map_err(|e| ExtractFailure::Local(e.to_string()))?;
    let final_dir = ctx.layout.final_dir(job.order_id, &job.download_key_id);
    let options = ExtractOptions {
        max_entries: ctx.archive.max_entries,
        max_unpacked_bytes: ctx.archive.max_unpacked_bytes,
        threads: 0,
        sync: true,
        cancel: Some(cancel.clone()),
    };
    let manifest_base = Manifest {
        order_id: job.order_id,
        download_key_id: job.download_key_id.clone(),
        tid: job.tid,
        label: job.label.clone(),
        total_count: job.total_count,
        archived_at: String::new(),
        source: ManifestSource {
            host: job.url.host().to_owned(),
            object: job.url.object(),
            bytes: fetched.bytes,
            crc64ecma: fetched.crc64.to_string(),
            sha256: fetched.sha256.clone(),
        },
        files: Vec::new(),
    };
    // With uploads of the zip, the zip stays beside the manifest until its upload is confirmed.
    let keep_zip = ctx
        .keeps_zip()
        .then(|| archive::kept_zip_name(&job.url.object()));
    let part = part.to_owned();
    let cancel = cancel.clone();
    // Extraction and publishing are blocking file work; in `spawn_blocking` they also run to
    // completion if the awaiting task is dropped, so a publish is never half-done.
    let result =
        tokio::task::spawn_blocking(move || -> Result<(PathBuf, usize, bool), ExtractFailure> {
            let cleanup = |reason: ExtractFailure| {
                let _ = std::fs::remove_dir_all(&staging);
                reason
            };
            let report = extract_zip(&part, &staging.join(FILES_DIR), &options).map_err(|e| {
                cleanup(if matches!(e, ExtractError::Cancelled) {
                    ExtractFailure::Cancelled
                } else if e.is_corrupt_download() {
                    ExtractFailure::Corrupt(e.to_string())
                } else if e.is_local_io() {
                    ExtractFailure::Local(e.to_string())
                } else {
                    ExtractFailure::Unsafe(e.to_string())
                })
            })?;
            let mut manifest = manifest_base;
            manifest.files = report
                .files
                .into_iter()
                .map(|f| ManifestFile {
                    path: f.path,
                    bytes: f.bytes,
                    sha256: f.sha256,
                })
                .collect();
            manifest.archived_at = archive::format_archived_at(jiff::Timestamp::now());
            if let Some(name) = keep_zip {
                // A second name for the part, not a move: until the publish succeeded the part
                // is the only copy, and a failed publish or a crash here must not lose it.
                let kept = staging.join(name);
                std::fs::hard_link(&part, &kept)
                    .or_else(|_| std::fs::copy(&part, &kept).map(drop))
                    .map_err(|e| cleanup(ExtractFailure::Local(format!("keep zip: {e}"))))?;
            }
            if cancel.is_cancelled() {
                return Err(cleanup(ExtractFailure::Cancelled));
            }
            let files = manifest.files.len();
            let published = archive::publish(&staging, &final_dir, &manifest)
                .map_err(|e| cleanup(ExtractFailure::Local(e.to_string())))?;
            remove_part(&part);
            Ok((final_dir, files, published == Published::Existing))
        })
        .await
        .map_err(|e| ExtractFailure::Local(format!("extraction task failed: {e}")))?;
    let (dir, files, adopted) = result?;
    Ok(JobOutcome::Archived {
        dir,
        files,
        bytes: fetched.bytes,
        adopted,
    })
}

/// The ticket's archive, when one with a manifest is already there.
async fn adopt_existing(layout: &ArchiveLayout, job: &Job) -> Option<JobOutcome> {
    let layout = layout.clone();
    let (order_id, key) = (job.order_id, job.download_key_id.clone());
    tokio::task::spawn_blocking(move || {
        layout
            .is_archived(order_id, &key)
            .then(|| JobOutcome::Archived {
                dir: layout.final_dir(order_id, &key),
                files: 0,
                bytes: 0,
                adopted: true,
            })
    })
    .await
    .ok()
    .flatten()
}
