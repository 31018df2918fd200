//! One object's multipart upload: its id durable before any part is sent, each part digested
//! (MD5, CRC-64) on a blocking thread just before it is sent so reading overlaps sending,
//! parts a restart finds already listed left alone, and a Complete whose answer got lost
//! settled by HeadObject.

use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::digest::{FileDigest, PartDigest, digest_part, part_ranges};
use super::error::{StoreError, StoreErrorKind};
use super::progress::{UploadProgress, UploadStep};
use super::runner::{
    ContextView, Reporter, Stop, UploadContext, confirms, retrying, retrying_view, same_object,
};
use super::store::{Answer, Body};
use crate::config::StoreKind;

/// The file a multipart upload sends.
#[derive(Debug)]
pub(super) struct MultipartFile<'a> {
    pub(super) key: &'a str,
    pub(super) path: &'a Path,
    pub(super) content_type: &'static str,
    pub(super) size: u64,
    /// Already adjusted to the services' 10,000-part limit.
    pub(super) part_size: u64,
    /// The parts' digests when the whole file was read already (to compare it with a
    /// same-size object in the bucket), so that no part is read twice for its checksums.
    pub(super) known_parts: Option<Vec<PartDigest>>,
}

/// Sends `file` in parts (resuming a multipart upload this ticket began); returns the bytes
/// sent.
pub(super) async fn put_multipart(
    ctx: &UploadContext,
    file: &MultipartFile<'_>,
    progress: &UploadProgress,
    reporter: &Reporter,
    cancel: &CancellationToken,
) -> Result<u64, Stop> {
    let key = file.key;
    let part_size = file.part_size;
    // Resume a multipart upload this ticket began (with the same part size), if the service
    // still has it: the parts listed with the right size and MD5 are not sent again.
    let mut resumed = None;
    let checksum = ctx.store.multipart_checksum();
    if let Some(earlier) = progress.multipart.get(key) {
        if earlier.resumable_with(part_size, checksum) {
            match retrying(ctx, cancel, "ListParts", || {
                ctx.store.list_parts(key, &earlier.upload_id)
            })
            .await
            {
                Ok(listed) => resumed = Some((earlier.upload_id.clone(), listed)),
                Err(stop) if stop.kind() == Some(StoreErrorKind::NoSuchUpload) => {}
                Err(stop) => return Err(stop),
            }
        } else {
            // Begun with another part size or checksum type (parts of another type would be
            // refused): abort it and begin again.
            abort_earlier(ctx, key, &earlier.upload_id).await;
        }
        if resumed.is_none() {
            reporter
                .step(UploadStep::MultipartGone {
                    key: key.to_owned(),
                })
                .await
                .map_err(Stop::Other)?;
        }
    }
    let (upload_id, listed) = match resumed {
        Some(resumed) => resumed,
        None => {
            let upload_id = retrying(ctx, cancel, "InitiateMultipartUpload", || {
                ctx.store.initiate(key, file.content_type)
            })
            .await?;
            // Durable before any part is sent: a crash now resumes this upload, it does not
            // leave it behind in the bucket.
            reporter
                .step(UploadStep::MultipartStarted {
                    key: key.to_owned(),
                    upload_id: upload_id.clone(),
                    part_size,
                    checksum: checksum.map(str::to_owned),
                })
                .await
                .map_err(Stop::Other)?;
            (upload_id, Vec::new())
        }
    };
    let ranges = part_ranges(file.size, part_size);
    info!(key, upload_id = %upload_id, parts = ranges.len(), resumed = !listed.is_empty(), "multipart upload");

    // Part tasks stop reading when a sibling fails, not only on shutdown.
    let parts_cancel = cancel.child_token();
    let _stop_parts = parts_cancel.clone().drop_guard();
    let listed = Arc::new(listed);
    let mut running = JoinSet::new();
    for (index, (offset, len)) in ranges.iter().copied().enumerate() {
        let number = index as u32 + 1;
        let task = PartTask {
            ctx: ContextView {
                store: ctx.store.clone(),
                metrics: Arc::clone(&ctx.metrics),
            },
            kind: ctx.store.kind(),
            key: key.to_owned(),
            upload_id: upload_id.clone(),
            path: file.path.to_owned(),
            number,
            offset,
            len,
            listed: Arc::clone(&listed),
            known: file
                .known_parts
                .as_ref()
                .and_then(|parts| parts.get(index))
                .filter(|part| part.offset == offset && part.len == len)
                .cloned(),
            reporter: reporter.clone(),
            cancel: parts_cancel.clone(),
        };
        let slots = ctx.slots.clone();
        running.spawn(async move {
            // The slot covers the digest too: reading is bounded like sending.
            let _slot = slots.acquire().await;
            task.run().await
        });
    }
    let mut digests: Vec<Option<PartDigest>> = vec![None; ranges.len()];
    let mut sent = 0u64;
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(Ok((number, digest, bytes))) => {
                sent += bytes;
                digests[number as usize - 1] = Some(digest);
            }
            Ok(Err(stop)) => {
                parts_cancel.cancel();
                running.abort_all();
                return Err(stop);
            }
            Err(err) if err.is_cancelled() => {}
            Err(err) => {
                parts_cancel.cancel();
                running.abort_all();
                return Err(Stop::Other(format!("a part task failed: {err}")));
            }
        }
    }
    if cancel.is_cancelled() {
        return Err(Stop::Cancelled);
    }
    let Some(parts) = digests.into_iter().collect::<Option<Vec<_>>>() else {
        return Err(Stop::Other("a part task ended without its digest".into()));
    };
    let digest = FileDigest::from_parts(file.size, parts);
    complete(ctx, key, &upload_id, &digest, reporter, cancel).await?;
    Ok(sent)
}

/// Aborts a multipart upload this ticket began and no longer continues (a changed part size or
/// checksum type, or the object goes up in one PUT now), so its parts do not stay in the bucket.
/// Best effort: a failure is logged, and the bucket's lifecycle rule for incomplete uploads is
/// the safety net.
pub(super) async fn abort_earlier(ctx: &UploadContext, key: &str, upload_id: &str) {
    match ctx.store.abort(key, upload_id).await {
        Ok(()) => debug!(key, upload_id, "aborted an earlier multipart upload"),
        Err(err) => {
            warn!(key, upload_id, error = %err, "could not abort an earlier multipart upload; it stays in the bucket until its lifecycle rule removes it")
        }
    }
}

/// One part: digested, then sent unless the service already lists it with that MD5.
struct PartTask {
    ctx: ContextView,
    kind: StoreKind,
    key: String,
    upload_id: String,
    path: std::path::PathBuf,
    number: u32,
    offset: u64,
    len: u64,
    listed: Arc<Vec<super::ops::RemotePart>>,
    /// The part's digest, when the file was digested already.
    known: Option<PartDigest>,
    reporter: Reporter,
    cancel: CancellationToken,
}

impl PartTask {
    /// Returns the part's number, digest and the bytes sent (0 when it was there already).
    async fn run(self) -> Result<(u32, PartDigest, u64), Stop> {
        let part = match &self.known {
            Some(part) => part.clone(),
            None => self.digest().await?,
        };
        let etag = part.etag();
        let number = self.number;
        let already = self.listed.iter().any(|p| {
            p.number == number && p.size == part.len && p.etag.eq_ignore_ascii_case(&etag)
        });
        if already {
            return Ok((number, part, 0));
        }
        retrying_view(&self.ctx, &self.cancel, "UploadPart", || async {
            let answer = self
                .ctx
                .store
                .upload_part(
                    &self.key,
                    &self.upload_id,
                    number,
                    Body::File {
                        path: self.path.clone(),
                        offset: part.offset,
                        len: part.len,
                    },
                    &part,
                )
                .await?;
            confirms(self.kind, &answer, &part).map_err(StoreError::unconfirmed)
        })
        .await?;
        self.reporter
            .step(UploadStep::PartDone {
                key: self.key.clone(),
                number,
                etag,
            })
            .await
            .map_err(Stop::Other)?;
        Ok((number, part, self.len))
    }

    async fn digest(&self) -> Result<PartDigest, Stop> {
        let (path, offset, len, stop) = (
            self.path.clone(),
            self.offset,
            self.len,
            self.cancel.clone(),
        );
        match tokio::task::spawn_blocking(move || digest_part(&path, offset, len, &stop)).await {
            Ok(Ok(part)) => Ok(part),
            Ok(Err(_)) if self.cancel.is_cancelled() => Err(Stop::Cancelled),
            Ok(Err(err)) => Err(Stop::Other(format!(
                "cannot read {}: {err}",
                self.path.display()
            ))),
            Err(err) => Err(Stop::Other(format!("digest failed: {err}"))),
        }
    }
}

/// CompleteMultipartUpload, confirmed by its answer or, when that got lost, by HeadObject.
async fn complete(
    ctx: &UploadContext,
    key: &str,
    upload_id: &str,
    digest: &FileDigest,
    reporter: &Reporter,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let completed = retrying(ctx, cancel, "CompleteMultipartUpload", || async {
        let answer = ctx.store.complete(key, upload_id, &digest.parts).await?;
        confirm_complete(ctx.store.kind(), &answer, digest)
    })
    .await;
    match completed {
        Ok(()) => Ok(()),
        Err(Stop::Cancelled) => Err(Stop::Cancelled),
        Err(stop) => {
            // The service finishes a Complete whose answer got lost (and answers NoSuchUpload
            // to a second one): what is in the bucket decides.
            match ctx.store.head(key).await {
                Ok(Some(remote)) if same_object(ctx.store.kind(), &remote, digest) => Ok(()),
                _ => {
                    if stop.kind() == Some(StoreErrorKind::NoSuchUpload) {
                        reporter
                            .step(UploadStep::MultipartGone {
                                key: key.to_owned(),
                            })
                            .await
                            .map_err(Stop::Other)?;
                    }
                    Err(stop)
                }
            }
        }
    }
}

/// Whether a CompleteMultipartUpload answer confirms the whole object.
fn confirm_complete(
    kind: StoreKind,
    answer: &Answer,
    digest: &FileDigest,
) -> Result<(), StoreError> {
    match (kind, answer.crc64()) {
        (StoreKind::Oss, Some(crc)) if crc == digest.crc64 => Ok(()),
        (StoreKind::Oss, Some(crc)) => Err(StoreError::unconfirmed(format!(
            "the completed object's x-oss-hash-crc64ecma {crc} does not match the local CRC-64 {}",
            digest.crc64
        ))),
        _ => {
            let body = String::from_utf8_lossy(&answer.body);
            let etag = crate::net::xml_element(&body, "ETag")
                .trim_matches('"')
                .to_owned();
            let etag = if etag.is_empty() {
                answer.etag().unwrap_or_default()
            } else {
                etag
            };
            let expected = digest.multipart_etag();
            // A composite CRC-32 (`<base64>-<parts>`) answered must be ours, and when it is,
            // it confirms the object by itself: the service checked every part's CRC-32
            // against its bytes, and this is the CRC of those, in order. That holds whatever
            // the ETag is (with SSE-KMS it is no MD5). A full-object one (no suffix) is the
            // service's own computation and not compared.
            let crc32 = crate::net::xml_element(&body, "ChecksumCRC32");
            if kind == StoreKind::S3 && crc32.contains('-') {
                return if crc32 == digest.composite_crc32() {
                    Ok(())
                } else {
                    Err(StoreError::unconfirmed(format!(
                        "the completed object's ChecksumCRC32 {crc32} is not {}",
                        digest.composite_crc32()
                    )))
                };
            }
            if kind == StoreKind::S3 && etag.eq_ignore_ascii_case(&expected) {
                Ok(())
            } else if kind == StoreKind::Oss || etag.is_empty() {
                // No CRC header (OSS) or no ETag: the object's HeadObject decides.
                Err(StoreError::unconfirmed(
                    "the answer carries no checksum of the object".into(),
                ))
            } else {
                Err(StoreError::unconfirmed(format!(
                    "the completed object's ETag {etag:?} is not {expected:?}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::upload::digest::digest_part;

    fn digest_of(data: &[u8], part: usize) -> FileDigest {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, data).unwrap();
        let cancel = CancellationToken::new();
        let parts = part_ranges(data.len() as u64, part as u64)
            .into_iter()
            .map(|(offset, len)| digest_part(&path, offset, len, &cancel).unwrap())
            .collect();
        FileDigest::from_parts(data.len() as u64, parts)
    }

    fn answer(body: &str) -> Answer {
        Answer {
            headers: Default::default(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn an_s3_complete_is_confirmed_by_its_etag_or_its_composite_crc32() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let digest = digest_of(&data, 4096);
        let etag = digest.multipart_etag();
        let crc = digest.composite_crc32();
        let result = |body: String| confirm_complete(StoreKind::S3, &answer(&body), &digest);
        assert!(result(format!("<R><ETag>\"{etag}\"</ETag></R>")).is_ok());
        // SSE-KMS: the ETag is no MD5, the composite CRC-32 decides.
        let kms = "\"6b4f1c0c2bbf4e4a9c1d3e5f7a9b0c1d-3\"";
        assert!(
            result(format!(
                "<R><ETag>{kms}</ETag><ChecksumCRC32>{crc}</ChecksumCRC32></R>"
            ))
            .is_ok()
        );
        assert!(result(format!("<R><ETag>{kms}</ETag></R>")).is_err());
        // A composite that is not ours fails even with the right ETag.
        assert!(
            result(format!(
                "<R><ETag>\"{etag}\"</ETag><ChecksumCRC32>AAAAAA==-3</ChecksumCRC32></R>"
            ))
            .is_err()
        );
    }
}
