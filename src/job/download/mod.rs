//! Streams a presigned OSS URL into a `.part` file on the archive's filesystem, resuming with
//! `Range` when the object is unchanged, and verifies length and CRC-64 (`x-oss-hash-crc64ecma`).
//!
//! One call is one HTTP attempt; the caller (`pipeline.rs`) decides about retries, fresh URLs
//! and backoff. The URL is sent verbatim and the GET carries no `x-oss-*`, `Content-Type` or
//! `Content-MD5` header (they are part of a V1 presigned signature). Timeouts: connect and
//! per-read (a stalled body fails, a slow one does not); there is no total timeout.
//!
//! The network task hands chunks to a blocking writer thread over a small bounded channel, so
//! disk writes and hashing (CRC-64 and SHA-256 of the whole file) overlap with the network and
//! memory stays bounded whatever the object size.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, RANGE};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

mod part;

use crate::config::DownloadSettings;

use self::part::{PartMeta, PartWriter, QueuedChunk, read_meta, write_meta};
pub use self::part::{remove_part, remove_part_off_loop};
use crate::net::signed_url::SignedUrl;

/// Bytes so far and the total, shared with whoever reports progress (`status`, metrics).
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of the object on disk.
    pub bytes: AtomicU64,
    /// The object's size; 0 until known.
    pub total: AtomicU64,
}

/// Who a download is for, so its log lines name the ticket like every other line about it.
#[derive(Debug, Clone, Copy)]
pub struct TicketTag<'a> {
    /// The data-tracking ticket.
    pub order_id: i64,
    /// The export's key.
    pub download_key_id: &'a str,
    /// The config label (empty when none).
    pub label: &'a str,
}

/// A verified download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Size of the file.
    pub bytes: u64,
    /// CRC-64/XZ of the whole file.
    pub crc64: u64,
    /// SHA-256 of the whole file, lower hex.
    pub sha256: String,
    /// The object's ETag.
    pub etag: Option<String>,
    /// True when this attempt continued an earlier partial download.
    pub resumed: bool,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// OSS refused the URL (403: expired or bad signature; 404: no such object). The same URL
    /// will not work again: ask DMS for a fresh one.
    #[error("OSS refused the signed URL for {url}: HTTP {status} {code}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    UrlRefused {
        /// `host/object`, never the query.
        url: String,
        /// HTTP status.
        status: u16,
        /// OSS `Code`.
        code: String,
        /// OSS `Message`.
        message: String,
    },
    /// Worth retrying with the same URL (transport error, stall, cut body, 5xx).
    #[error("download of {url} failed: {reason}")]
    Transient {
        /// `host/object`.
        url: String,
        /// What happened.
        reason: String,
        /// Whether any bytes were added to the part file.
        progressed: bool,
    },
    /// The bytes are wrong (CRC-64 or size mismatch); the part file was deleted.
    #[error("download of {url} is corrupt: {reason}")]
    Corrupt {
        /// `host/object`.
        url: String,
        /// What did not match.
        reason: String,
    },
    /// A local file problem (disk full, permissions).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Shutdown was requested; the part file is kept for resume.
    #[error("download interrupted by shutdown")]
    Cancelled,
}

/// How often a long download logs its progress.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// Bytes buffered between the network and the writer thread. When the network outruns the
/// writer, hyper hands over chunks of hundreds of KiB, so a bound on the number of chunks
/// alone let a loopback download of a 70 MiB zip peak at 54 MiB RSS; this bounds the bytes.
const WRITER_QUEUE_BYTES: usize = 4 << 20;
/// Most chunks in that queue (many tiny chunks cost more than their bytes).
const WRITER_QUEUE_CHUNKS: usize = 64;

/// Downloads presigned URLs.
#[derive(Debug, Clone)]
pub struct Downloader {
    http: reqwest::Client,
    verify_crc64: bool,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
}

impl Downloader {
    /// A downloader with the `[download]` timeouts.
    pub fn new(
        settings: &DownloadSettings,
        metrics: Arc<crate::telemetry::metrics::Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .user_agent(crate::net::USER_AGENT)
            // OSS answers directly; a redirect would move the bearer URL to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            verify_crc64: settings.verify_crc64,
            metrics,
        })
    }

    /// One attempt: continues `part` with `Range` when its recorded ETag still matches,
    /// otherwise starts over. On success the file at `part` is complete and verified.
    pub async fn fetch(
        &self,
        url: &SignedUrl,
        part: &Path,
        progress: &Progress,
        cancel: &CancellationToken,
        tag: TicketTag<'_>,
    ) -> Result<Fetched, FetchError> {
        let shown = url.to_string();
        let (on_disk, meta) = blocking(part, |part| {
            let on_disk = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
            Ok((on_disk, read_meta(part)))
        })
        .await?;
        // Resume from the bytes on disk; when the file looks complete, re-fetch its last byte
        // anyway, to learn the current ETag and CRC from the response headers.
        let resume_from = match &meta {
            Some(PartMeta {
                etag: Some(_),
                total,
            }) if on_disk > 0 && *total > 0 => on_disk.min(total - 1),
            _ => 0,
        };
        // CRC-64 and SHA-256 cover the whole file, so the kept prefix is hashed again: on a
        // blocking thread, before the request goes out (a multi-GB prefix takes seconds; the
        // async workers, `/healthz` and the watchdog must not wait for it, and neither should
        // a server holding an open response).
        let mut resumed_writer = None;
        if resume_from > 0 {
            let stop = cancel.clone();
            match blocking(part, move |part| {
                Ok(PartWriter::open(part, resume_from, &stop))
            })
            .await?
            {
                Ok(writer) => resumed_writer = Some(writer),
                Err(FetchError::Cancelled) => return Err(FetchError::Cancelled),
                Err(err) => {
                    // An unreadable part is not worth failing over: start from scratch.
                    debug!(error = %err, "cannot re-read the partial download; starting over");
                }
            }
        }
        let resume_from = if resumed_writer.is_some() {
            resume_from
        } else {
            0
        };

        let mut request = self.http.get(url.expose());
        if resume_from > 0 {
            request = request.header(RANGE, format!("bytes={resume_from}-"));
        }
        let response = tokio::select! {
            _ = cancel.cancelled() => return Err(FetchError::Cancelled),
            result = request.send() => result.map_err(|e| FetchError::Transient {
                url: shown.clone(),
                reason: crate::net::transport_error_text(e),
                progressed: false,
            })?,
        };
        let status = response.status();
        let headers = response.headers().clone();
        let etag = headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let server_crc = headers
            .get("x-oss-hash-crc64ecma")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());

        if matches!(
            status,
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND
        ) {
            let body = crate::net::read_bounded(response, crate::net::ERROR_BODY_LIMIT)
                .await
                .unwrap_or_default();
            let (code, message) = oss_error(&body);
            return Err(FetchError::UrlRefused {
                url: shown,
                status: status.as_u16(),
                code,
                message,
            });
        }
        if status.is_redirection() {
            return Err(FetchError::Transient {
                url: shown,
                reason: crate::net::redirect_refusal(status.as_u16(), &headers),
                progressed: false,
            });
        }
        if !(status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT) {
            let body = crate::net::read_bounded(response, crate::net::ERROR_BODY_LIMIT)
                .await
                .unwrap_or_default();
            let (code, message) = oss_error(&body);
            return Err(FetchError::Transient {
                url: shown,
                reason: format!("HTTP {} {code} {message}", status.as_u16())
                    .trim()
                    .to_owned(),
                progressed: false,
            });
        }
        // OSS always sends the length of a GetObject answer. Without it nothing would bound
        // the bytes written, so such an answer is refused rather than streamed.
        let Some(length) = length else {
            return Err(FetchError::Transient {
                url: shown,
                reason: "the answer carries no Content-Length; refusing a body of unknown size"
                    .into(),
                progressed: false,
            });
        };

        // Decide where this body starts. OSS answers an unusable Range with 200 and the whole
        // object; a 206 counts only if it continues the same object exactly where we stopped.
        let (start, total) = if status == StatusCode::PARTIAL_CONTENT {
            let range = headers
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            let same_object =
                meta.as_ref().and_then(|m| m.etag.as_deref()) == etag.as_deref() && etag.is_some();
            match range {
                Some((first, last, total))
                    if first == resume_from
                        && same_object
                        && last.checked_sub(first).map(|span| span + 1) == Some(length) =>
                {
                    (first, total)
                }
                _ => {
                    debug!(url = %shown, "the object changed or the range is off; starting over");
                    blocking(part, |part| {
                        remove_part(part);
                        Ok(())
                    })
                    .await?;
                    return Err(FetchError::Transient {
                        url: shown,
                        reason: "the object changed since the partial download; starting over"
                            .into(),
                        progressed: false,
                    });
                }
            }
        } else {
            (0, length)
        };
        let writer = if start == 0 {
            let meta = PartMeta {
                etag: etag.clone(),
                total,
            };
            let stop = cancel.clone();
            blocking(part, move |part| {
                std::fs::File::create(part)?;
                write_meta(part, &meta)?;
                Ok(PartWriter::open(part, 0, &stop))
            })
            .await??
        } else {
            info!(order_id = tag.order_id, download_key_id = tag.download_key_id, label = tag.label,
                  url = %shown, offset = start, total, "resuming download with Range");
            resumed_writer.expect("a 206 continues a prepared writer")
        };
        progress.total.store(total, Ordering::Relaxed);
        progress.bytes.store(start, Ordering::Relaxed);

        let (tx, rx) = tokio::sync::mpsc::channel::<QueuedChunk>(WRITER_QUEUE_CHUNKS);
        let queue_budget = Arc::new(tokio::sync::Semaphore::new(WRITER_QUEUE_BYTES));
        let written = Arc::new(AtomicU64::new(start));
        let writer_task = {
            let written = Arc::clone(&written);
            tokio::task::spawn_blocking(move || writer.run(rx, &written, total))
        };

        let mut response = response;
        let mut received = start;
        let mut last_log = tokio::time::Instant::now();
        let mut logged_bytes = start;
        let stream_result: Result<(), FetchError> = loop {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => break Err(FetchError::Cancelled),
                chunk = response.chunk() => chunk,
            };
            match chunk {
                Ok(Some(bytes)) => {
                    received += bytes.len() as u64;
                    self.metrics.download_bytes(bytes.len() as u64);
                    // Waits while the queue holds WRITER_QUEUE_BYTES; the writer returns the
                    // permits as it writes (or drops them all if it failed, so this never hangs).
                    let permits = u32::try_from(bytes.len().min(WRITER_QUEUE_BYTES))
                        .expect("the queue budget fits in u32");
                    let permit = Arc::clone(&queue_budget)
                        .acquire_many_owned(permits)
                        .await
                        .expect("the queue budget is never closed");
                    if tx.send((bytes, permit)).await.is_err() {
                        break Ok(()); // the writer failed; its error is reported below
                    }
                    progress
                        .bytes
                        .store(written.load(Ordering::Relaxed), Ordering::Relaxed);
                    if last_log.elapsed() >= PROGRESS_LOG_INTERVAL {
                        let rate =
                            (received - logged_bytes) as f64 / last_log.elapsed().as_secs_f64();
                        info!(order_id = tag.order_id, download_key_id = tag.download_key_id, label = tag.label,
                              url = %shown, bytes = received, total, rate_bytes_per_sec = rate as u64, "download progress");
                        last_log = tokio::time::Instant::now();
                        logged_bytes = received;
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => {
                    break Err(FetchError::Transient {
                        url: shown.clone(),
                        reason: crate::net::transport_error_text(e),
                        progressed: received > start,
                    });
                }
            }
        };
        drop(tx);
        let digests = writer_task.await.expect("writer thread does not panic")?;
        progress.bytes.store(digests.bytes, Ordering::Relaxed);
        stream_result?;

        if total > 0 && digests.bytes != total {
            return Err(FetchError::Transient {
                url: shown,
                reason: format!("the body ended after {} of {total} bytes", digests.bytes),
                progressed: received > start,
            });
        }
        if let Some(expected) = server_crc
            && self.verify_crc64
            && expected != digests.crc64
        {
            blocking(part, |part| {
                remove_part(part);
                Ok(())
            })
            .await?;
            return Err(FetchError::Corrupt {
                url: shown,
                reason: format!(
                    "CRC-64 {} does not match x-oss-hash-crc64ecma {expected}",
                    digests.crc64
                ),
            });
        }
        Ok(Fetched {
            bytes: digests.bytes,
            crc64: digests.crc64,
            sha256: digests.sha256,
            etag,
            resumed: start > 0,
        })
    }
}

/// Runs blocking file work on `part` off the async workers; an I/O error names the part.
async fn blocking<T: Send + 'static>(
    part: &Path,
    work: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static,
) -> Result<T, FetchError> {
    let path = part.to_owned();
    tokio::task::spawn_blocking(move || work(&path).map_err(|source| (path, source)))
        .await
        .map_err(|e| FetchError::Io {
            op: "use",
            path: part.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|(path, source)| FetchError::Io {
            op: "write",
            path,
            source,
        })
}

/// `bytes first-last/total` → (first, last, total).
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// `Code` and `Message` of an OSS XML error body (empty when absent).
fn oss_error(body: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(body);
    (
        crate::net::xml_element(&text, "Code"),
        crate::net::xml_element(&text, "Message"),
    )
}

#[cfg(test)]
mod tests;
