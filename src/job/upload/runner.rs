//! One ticket's upload: its archive folder to `<url>/<order_id>/<download_key_id>/`, every
//! object confirmed before the next step, `manifest.json` last (so its presence in the bucket
//! means the upload is complete).
//!
//! For each object: an object already there with the same size and checksum is not sent
//! again (the file is read for that only when the sizes match); one that fits in a part goes
//! up with PutObject and `Content-MD5`; a larger one with a multipart upload ([`super::multipart`]). Confirmation: OSS's `x-oss-hash-crc64ecma`
//! against the local CRC-64, or the ETag against the local MD5 (S3).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::digest::{FileDigest, PartDigest, digest_file, part_size_for};
use super::error::{StoreError, StoreErrorKind};
use super::multipart::{MultipartFile, abort_earlier, put_multipart};
use super::ops::RemoteObject;
use super::progress::{UploadProgress, UploadStep};
use super::store::{Answer, Body, ObjectStore};
use crate::config::{StoreKind, UploadContent, UploadSettings};
use crate::job::archive::{FILES_DIR, MANIFEST, Manifest, kept_zip_name, path_safe};
use crate::job::limit::ConcurrencyLimit;
use crate::job::pipeline::{JobEvent, JobEventKind, JobTag};
use crate::net::retry::Backoff;
use crate::telemetry::Metrics;

/// Attempts of one request within a job, for retryable failures; then the ticket's upload
/// waits for its next turn (with a longer backoff, in the watch loop).
const REQUEST_ATTEMPTS: u32 = 4;
/// Between those attempts: 1 s, 2 s, 4 s, ±20 %.
const REQUEST_BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(8),
    multiplier: 2.0,
    jitter: 0.2,
};

/// What every upload job shares. Rebuilt on reload (but `slots` is one limit for the life of
/// the process).
#[derive(Debug)]
pub struct UploadContext {
    /// The bucket.
    pub store: ObjectStore,
    /// `[upload]`.
    pub settings: UploadSettings,
    /// `upload.concurrency`: object or part uploads at once, over every ticket.
    pub slots: ConcurrencyLimit,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// One ticket to upload.
#[derive(Debug)]
pub struct UploadJob {
    /// Whose job it is.
    pub tag: JobTag,
    /// The ticket.
    pub order_id: i64,
    /// The export's key.
    pub download_key_id: String,
    /// The published archive folder.
    pub dir: PathBuf,
    /// What earlier attempts confirmed.
    pub progress: UploadProgress,
}

/// How an upload job ended.
#[derive(Debug)]
pub enum UploadOutcome {
    /// Every object is confirmed, `manifest.json` last.
    Uploaded {
        /// Objects confirmed (sent or found already there).
        objects: usize,
        /// Bytes sent.
        bytes: u64,
    },
    /// Not this time (throttling, 5xx, transport, a local read error); try again later.
    RetryLater(String),
    /// Refused for good (credentials, signature, permissions, bucket): an operator must act.
    Failed(String),
    /// Shutdown or the ticket was removed; what was confirmed is recorded.
    Cancelled,
}

/// The remote folder of a ticket as users see it (`status`, `{url}`):
/// `oss://bucket/prefix/<order_id>/<key>/`.
pub fn folder_url(settings: &UploadSettings, order_id: i64, download_key_id: &str) -> String {
    format!(
        "{}://{}/{}",
        settings.kind.scheme(),
        settings.bucket,
        folder_key(settings, order_id, download_key_id)
    )
}

/// The key prefix of a ticket's objects, ending in `/`.
pub fn folder_key(settings: &UploadSettings, order_id: i64, download_key_id: &str) -> String {
    let ticket = format!("{order_id}/{}/", path_safe(download_key_id));
    if settings.prefix.is_empty() {
        ticket
    } else {
        format!("{}/{ticket}", settings.prefix)
    }
}

/// One object to send.
#[derive(Debug, Clone)]
struct LocalObject {
    key: String,
    path: PathBuf,
    content_type: &'static str,
}

/// The objects of a ticket, `manifest.json` last. Blocking (reads the manifest).
fn plan(settings: &UploadSettings, job: &UploadJob) -> Result<Vec<LocalObject>, String> {
    let manifest_path = job.dir.join(MANIFEST);
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?,
    )
    .map_err(|e| format!("{} is not a manifest: {e}", manifest_path.display()))?;
    let folder = folder_key(settings, job.order_id, &job.download_key_id);
    let mut objects = Vec::new();
    let zip_name = kept_zip_name(&manifest.source.object);
    let zip = job.dir.join(&zip_name);
    let content = match settings.content {
        UploadContent::Zip if !zip.is_file() => {
            warn!(order_id = job.order_id, download_key_id = %job.download_key_id, zip = %zip.display(),
                  "the zip is not in the archive folder (archived before uploads were set up?); uploading the files instead");
            UploadContent::Files
        }
        content => content,
    };
    match content {
        UploadContent::Zip => objects.push(LocalObject {
            key: format!("{folder}{zip_name}"),
            path: zip,
            content_type: "application/zip",
        }),
        UploadContent::Files => {
            for file in &manifest.files {
                objects.push(LocalObject {
                    key: format!("{folder}{FILES_DIR}/{}", file.path),
                    path: job.dir.join(FILES_DIR).join(&file.path),
                    content_type: content_type_of(&file.path),
                });
            }
        }
    }
    objects.push(LocalObject {
        key: format!("{folder}{MANIFEST}"),
        path: manifest_path,
        content_type: "application/json",
    });
    Ok(objects)
}

fn content_type_of(path: &str) -> &'static str {
    if path.ends_with(".sql") || path.ends_with(".txt") {
        "text/plain; charset=utf-8"
    } else if path.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// Where a job reports its steps.
#[derive(Debug, Clone)]
pub(super) struct Reporter {
    tag: JobTag,
    events: mpsc::UnboundedSender<JobEvent>,
}

impl Reporter {
    /// Records a step; waits until it is durable when it has to be.
    pub(super) async fn step(&self, step: UploadStep) -> Result<(), String> {
        let (durable, committed) = if UploadProgress::needs_durability(&step) {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.events
            .send(JobEvent {
                tag: self.tag.clone(),
                kind: JobEventKind::Upload { step, durable },
            })
            .map_err(|_| "the watch loop is gone".to_owned())?;
        match committed {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err("the ticket was removed".to_owned())),
            None => Ok(()),
        }
    }
}

/// Runs an upload job to its end.
pub async fn run_upload(
    ctx: Arc<UploadContext>,
    job: UploadJob,
    events: mpsc::UnboundedSender<JobEvent>,
    cancel: CancellationToken,
) -> UploadOutcome {
    let reporter = Reporter {
        tag: job.tag.clone(),
        events,
    };
    let objects = {
        let settings = ctx.settings.clone();
        let job_view = UploadJob {
            tag: job.tag.clone(),
            order_id: job.order_id,
            download_key_id: job.download_key_id.clone(),
            dir: job.dir.clone(),
            progress: UploadProgress::default(),
        };
        match tokio::task::spawn_blocking(move || plan(&settings, &job_view)).await {
            Ok(Ok(objects)) => objects,
            Ok(Err(err)) => return UploadOutcome::RetryLater(err),
            Err(err) => return UploadOutcome::RetryLater(format!("planning failed: {err}")),
        }
    };
    let (manifest, others) = objects
        .split_last()
        .expect("the manifest is always planned");
    let mut bytes = 0u64;
    // Everything but the manifest, several at once (each part or object holds a slot).
    let mut running: JoinSet<Result<u64, Stop>> = JoinSet::new();
    for object in others {
        let object = object.clone();
        let (ctx, reporter, cancel) = (Arc::clone(&ctx), reporter.clone(), cancel.clone());
        let progress = job.progress.clone();
        running
            .spawn(async move { send_object(&ctx, &object, &progress, &reporter, &cancel).await });
    }
    let mut first_failure: Option<UploadOutcome> = None;
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(Ok(sent)) => bytes += sent,
            Ok(Err(stop)) => {
                if first_failure.is_none() {
                    // The others stop; what they confirmed is recorded.
                    running.abort_all();
                    first_failure = Some(stop.into());
                }
            }
            Err(err) if err.is_cancelled() => {}
            Err(err) => {
                first_failure.get_or_insert(UploadOutcome::RetryLater(format!(
                    "an upload task failed: {err}"
                )));
            }
        }
    }
    if let Some(outcome) = first_failure {
        return outcome;
    }
    // The manifest last: its presence in the bucket means every other object is there.
    match send_object(&ctx, manifest, &job.progress, &reporter, &cancel).await {
        Ok(sent) => bytes += sent,
        Err(stop) => return stop.into(),
    }
    UploadOutcome::Uploaded {
        objects: objects.len(),
        bytes,
    }
}

/// Why a step of a job stopped.
#[derive(Debug)]
pub(super) enum Stop {
    /// Shutdown or removal.
    Cancelled,
    /// A request failed for good, or ran out of attempts.
    Store(&'static str, StoreError),
    /// Anything else (a local read, the loop gone): try again later.
    Other(String),
}

impl Stop {
    pub(super) fn kind(&self) -> Option<StoreErrorKind> {
        match self {
            Self::Store(_, err) => Some(err.kind),
            _ => None,
        }
    }
}

impl From<Stop> for UploadOutcome {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Cancelled => Self::Cancelled,
            Stop::Store(what, err) if err.is_final() => Self::Failed(format!("{what}: {err}")),
            Stop::Store(what, err) => Self::RetryLater(format!("{what}: {err}")),
            Stop::Other(reason) => Self::RetryLater(reason),
        }
    }
}

/// Sends one object (or confirms it is there already); returns the bytes sent.
async fn send_object(
    ctx: &UploadContext,
    object: &LocalObject,
    progress: &UploadProgress,
    reporter: &Reporter,
    cancel: &CancellationToken,
) -> Result<u64, Stop> {
    if progress.done.contains(&object.key) {
        return Ok(0);
    }
    let size = tokio::fs::metadata(&object.path)
        .await
        .map_err(|err| Stop::Other(format!("cannot read {}: {err}", object.path.display())))?
        .len();
    let part_size = part_size_for(size, ctx.settings.part_size);
    let label = object.key.as_str();
    // An object already there with the same size and checksum is not sent again. The whole
    // file is read for that comparison only when the sizes match; otherwise each part is
    // digested just before it is sent, so reading overlaps sending.
    let remote = retrying(ctx, cancel, "HeadObject", || ctx.store.head(&object.key)).await?;
    let mut known = None;
    if let Some(remote) = remote.filter(|r| r.size == size) {
        let digest = digest_blocking(object, part_size, cancel).await?;
        if same_object(ctx.store.kind(), &remote, &digest) {
            if let Some(earlier) = progress.multipart.get(&object.key) {
                abort_earlier(ctx, &object.key, &earlier.upload_id).await;
            }
            debug!(
                key = label,
                "already in the bucket with the same size and checksum"
            );
            reporter
                .step(UploadStep::ObjectDone {
                    key: object.key.clone(),
                })
                .await
                .map_err(Stop::Other)?;
            ctx.metrics.upload_object("skipped");
            return Ok(0);
        }
        known = Some(digest);
    }
    let sent = if size <= part_size {
        // A multipart upload begun for this key before (with a smaller part size) is not
        // continued: abort it rather than leave its parts behind.
        if let Some(earlier) = progress.multipart.get(&object.key) {
            abort_earlier(ctx, &object.key, &earlier.upload_id).await;
        }
        let digest = match known {
            Some(digest) => digest,
            None => digest_blocking(object, part_size, cancel).await?,
        };
        put_single(ctx, object, &digest, cancel).await?;
        size
    } else {
        let file = MultipartFile {
            key: &object.key,
            path: &object.path,
            content_type: object.content_type,
            size,
            part_size,
            known_parts: known.map(|digest| digest.parts),
        };
        put_multipart(ctx, &file, progress, reporter, cancel).await?
    };
    reporter
        .step(UploadStep::ObjectDone {
            key: object.key.clone(),
        })
        .await
        .map_err(Stop::Other)?;
    ctx.metrics.upload_object("sent");
    Ok(sent)
}

/// The checksums of a whole file, in parts of `part_size`, on a blocking thread.
async fn digest_blocking(
    object: &LocalObject,
    part_size: u64,
    cancel: &CancellationToken,
) -> Result<FileDigest, Stop> {
    // The reading stops when this future is dropped too (a sibling object failed and the
    // upload task was aborted), not only on shutdown.
    let stop = cancel.child_token();
    let _stop_reading = stop.clone().drop_guard();
    let path = object.path.clone();
    match tokio::task::spawn_blocking(move || digest_file(&path, part_size, &stop)).await {
        Ok(Ok(digest)) => Ok(digest),
        Ok(Err(_)) if cancel.is_cancelled() => Err(Stop::Cancelled),
        Ok(Err(err)) => Err(Stop::Other(format!(
            "cannot read {}: {err}",
            object.path.display()
        ))),
        Err(err) => Err(Stop::Other(format!("digest failed: {err}"))),
    }
}

/// Whether a remote object is the local file: same size, and the CRC-64 (OSS) or the ETag an
/// upload of this file would get (S3).
pub(super) fn same_object(kind: StoreKind, remote: &RemoteObject, digest: &FileDigest) -> bool {
    if remote.size != digest.size {
        return false;
    }
    match kind {
        StoreKind::Oss => remote.crc64 == Some(digest.crc64),
        StoreKind::S3 => remote.etag.as_deref().is_some_and(|etag| {
            let expected = if digest.single() {
                digest.parts[0].etag()
            } else {
                digest.multipart_etag()
            };
            etag.eq_ignore_ascii_case(&expected)
        }),
    }
}

/// Whether an answer to a PutObject or UploadPart confirms the bytes: OSS's CRC-64 header
/// (else its ETag, the MD5); an S3 ETag equal to the MD5 (an ETag that is no MD5, as with
/// SSE-KMS, leaves the check to the service, which verified `Content-MD5`), and S3's
/// `x-amz-checksum-crc32` when answered.
pub(super) fn confirms(kind: StoreKind, answer: &Answer, part: &PartDigest) -> Result<(), String> {
    let etag = answer.etag().unwrap_or_default();
    let md5_hex = part.etag();
    if kind == StoreKind::S3
        && let Some(remote) = answer.header("x-amz-checksum-crc32")
        && remote.trim() != part.checksum_crc32()
    {
        return Err(format!(
            "x-amz-checksum-crc32 {remote} does not match the local CRC-32 {}",
            part.checksum_crc32()
        ));
    }
    match (kind, answer.crc64()) {
        (StoreKind::Oss, Some(remote)) if remote == part.crc64 => Ok(()),
        (StoreKind::Oss, Some(remote)) => Err(format!(
            "x-oss-hash-crc64ecma {remote} does not match the local CRC-64 {}",
            part.crc64
        )),
        _ if etag.eq_ignore_ascii_case(&md5_hex) => Ok(()),
        (StoreKind::S3, _) if !looks_like_md5(&etag) => Ok(()),
        _ => Err(format!(
            "the ETag {etag:?} does not match the local MD5 {md5_hex}"
        )),
    }
}

fn looks_like_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn put_single(
    ctx: &UploadContext,
    object: &LocalObject,
    digest: &FileDigest,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let part = &digest.parts[0];
    let _slot = ctx.slots.acquire().await;
    retrying(ctx, cancel, "PutObject", || async {
        let answer = ctx
            .store
            .put_object(
                &object.key,
                Body::File {
                    path: object.path.clone(),
                    offset: 0,
                    len: digest.size,
                },
                part,
                object.content_type,
            )
            .await?;
        confirms(ctx.store.kind(), &answer, part).map_err(StoreError::unconfirmed)
    })
    .await
}

/// What a part task needs of the context (owned, for a spawned task).
pub(super) struct ContextView {
    pub(super) store: ObjectStore,
    pub(super) metrics: Arc<Metrics>,
}

/// Runs one request with retries: retryable failures back off and try again (up to
/// [`REQUEST_ATTEMPTS`]), an expired STS token is refreshed once, anything else ends the job.
pub(super) async fn retrying<T, F, Fut>(
    ctx: &UploadContext,
    cancel: &CancellationToken,
    what: &'static str,
    attempt: F,
) -> Result<T, Stop>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let view = ContextView {
        store: ctx.store.clone(),
        metrics: Arc::clone(&ctx.metrics),
    };
    retrying_view(&view, cancel, what, attempt).await
}

pub(super) async fn retrying_view<T, F, Fut>(
    ctx: &ContextView,
    cancel: &CancellationToken,
    what: &'static str,
    mut attempt: F,
) -> Result<T, Stop>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut rng = fastrand::Rng::new();
    let mut refreshed = false;
    let mut tries = 0;
    loop {
        tries += 1;
        let result = tokio::select! {
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            result = attempt() => result,
        };
        let err = match result {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        if err.kind == StoreErrorKind::TokenExpired && !refreshed {
            info!(
                what,
                "the STS token expired; refreshing the credentials and retrying"
            );
            refreshed = true;
            ctx.store.refresh_credentials();
            tries -= 1;
            continue;
        }
        ctx.metrics.upload_failure(what);
        if !err.is_retryable() || tries >= REQUEST_ATTEMPTS {
            return Err(Stop::Store(what, err));
        }
        let delay = REQUEST_BACKOFF.delay(tries - 1, &mut rng);
        info!(what, attempt = tries, delay_ms = delay.as_millis() as u64, error = %err, "upload request failed; retrying");
        tokio::select! {
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
