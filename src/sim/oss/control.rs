//! The simulator's controls for tests and the demo on the upload side: buckets, keys and STS
//! tokens, the clock, upload faults per operation or call number, and inspection of what was
//! stored (objects with bytes, CRC and ETag; multipart uploads in progress; call counts).

use std::collections::BTreeMap;

use bytes::Bytes;
use jiff::SignedDuration;
use md5::Digest as _;

use super::header_auth::RegisteredKey;
use super::reply::new_upload_id;
use super::store::{Data, ObjectType, Part, Upload};
use super::{ObjectInfo, OssSimulator};
use crate::net::secret::Secret;

/// One stored object, as [`OssSimulator::objects`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObjectSummary {
    /// The object key.
    pub key: String,
    /// ETag, CRC-64 and size.
    pub info: ObjectInfo,
    /// `Normal` (PutObject) or `Multipart` (CompleteMultipartUpload).
    pub object_type: ObjectType,
    /// The `Content-Type` it was uploaded with.
    pub content_type: String,
    /// True when the content lives in a temp file rather than in memory.
    pub on_disk: bool,
}

/// One uploaded part of a multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSummary {
    /// Part number, 1..=10000.
    pub part_number: u32,
    /// ETag (quoted MD5 hex), CRC-64 and size of the part.
    pub info: ObjectInfo,
}

/// A multipart upload in progress, as [`OssSimulator::multipart_uploads`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUploadSummary {
    /// Bucket of the upload.
    pub bucket: String,
    /// Object key being uploaded.
    pub key: String,
    /// The upload id.
    pub upload_id: String,
    /// When it was initiated (simulator clock).
    pub initiated: jiff::Timestamp,
    /// Parts uploaded so far, by part number.
    pub parts: Vec<PartSummary>,
}

/// The operations the simulator tells apart, for call counts and upload faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OssOperation {
    /// `PUT /<key>`.
    PutObject,
    /// `POST /<key>?uploads`.
    InitiateMultipartUpload,
    /// `PUT /<key>?partNumber=N&uploadId=U`.
    UploadPart,
    /// `POST /<key>?uploadId=U`.
    CompleteMultipartUpload,
    /// `DELETE /<key>?uploadId=U`.
    AbortMultipartUpload,
    /// `GET /<key>?uploadId=U`.
    ListParts,
    /// `HEAD /<key>` (presigned or header-signed).
    HeadObject,
    /// `GET /<key>` (presigned or header-signed).
    GetObject,
    /// `DELETE /<key>`.
    DeleteObject,
    /// `GET /?bucketInfo`.
    GetBucketInfo,
    /// `GET /?prefix=…` (ListObjects V1).
    ListObjects,
}

/// A fault injected into a header-signed request of one operation (after its signature is
/// accepted). Presigned GETs use [`OssFault`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFault {
    /// 500 `InternalError`; nothing is applied.
    InternalError,
    /// 503 `SlowDown`; nothing is applied.
    SlowDown,
    /// Read at least this many request-body bytes (the chunk crossing the limit is read
    /// whole; a shorter body is read to its end), then close the connection without an
    /// answer. Nothing is stored.
    DropAfterRequestBytes(u64),
    /// Apply the operation completely (a Complete assembles the object), then close the
    /// connection without answering: OSS finishes a Complete whose client went away.
    DropAfterApplying,
    /// 403 `InvalidAccessKeyId`, as for a key that was deleted.
    RefuseCredentials,
    /// 403 `AccessDenied`, as for a RAM policy that lacks the action.
    AccessDenied,
    /// Read the request body, store nothing, and never answer (the connection stays open
    /// until the client goes away): a request caught by a crash of the client.
    Stall,
}

impl OssSimulator {
    /// Adds a bucket (idempotent). Requests naming an unknown bucket get 404 `NoSuchBucket`.
    pub fn create_bucket(&self, name: &str) {
        self.shared.lock().buckets.insert(name.to_owned());
    }

    /// Accepts a long-term AccessKey in header signatures (replaces one with the same id).
    pub fn add_access_key(&self, access_key_id: &str, secret: impl Into<Secret>) {
        let key = RegisteredKey {
            secret: secret.into(),
            security_token: None,
            expires_at: None,
        };
        self.shared
            .lock()
            .credentials
            .insert(access_key_id.to_owned(), key);
    }

    /// Accepts STS credentials: requests must carry `token` as `x-oss-security-token`, and
    /// get 403 `SecurityTokenExpired` once the simulator's clock reaches `expires_at`.
    pub fn add_sts_credentials(
        &self,
        access_key_id: &str,
        secret: impl Into<Secret>,
        token: impl Into<Secret>,
        expires_at: jiff::Timestamp,
    ) {
        let key = RegisteredKey {
            secret: secret.into(),
            security_token: Some(token.into()),
            expires_at: Some(expires_at),
        };
        self.shared
            .lock()
            .credentials
            .insert(access_key_id.to_owned(), key);
    }

    /// Forgets a key: its requests get 403 `InvalidAccessKeyId`. Returns whether it existed.
    pub fn remove_access_key(&self, access_key_id: &str) -> bool {
        self.shared
            .lock()
            .credentials
            .remove(access_key_id)
            .is_some()
    }

    /// Moves the simulator's clock (wall clock + offset) used for header signatures, STS
    /// expiry and timestamps; a negative offset puts it behind. Presigned URLs keep the wall
    /// clock.
    pub fn set_clock_offset(&self, offset: SignedDuration) {
        let nanos = i64::try_from(offset.as_nanos()).expect("clock offset within ±292 years");
        self.shared
            .clock_offset_nanos
            .store(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    /// The simulator's clock: the wall clock plus the offset.
    pub fn now(&self) -> jiff::Timestamp {
        self.shared.now()
    }

    /// Queues a fault for the next header-signed call of `operation` whose signature is
    /// accepted (first in, first out).
    pub fn inject_upload_fault(&self, operation: OssOperation, fault: UploadFault) {
        self.shared
            .lock()
            .upload_faults
            .entry(operation)
            .or_default()
            .push_back(fault);
    }

    /// Sets a fault for call number `call` (1-based, counting every header-signed call of
    /// `operation` since the start, see [`OssSimulator::call_count`]). It fires only if that
    /// call's signature is accepted, and takes precedence over queued faults.
    pub fn inject_upload_fault_on_call(
        &self,
        operation: OssOperation,
        call: u64,
        fault: UploadFault,
    ) {
        self.shared
            .lock()
            .call_faults
            .insert((operation, call), fault);
    }

    /// How many header-signed calls of `operation` arrived, whatever their outcome.
    pub fn call_count(&self, operation: OssOperation) -> u64 {
        self.shared
            .lock()
            .calls
            .get(&operation)
            .copied()
            .unwrap_or(0)
    }

    /// The id the next InitiateMultipartUpload answers with (queued; random ids after).
    pub fn set_next_upload_id(&self, upload_id: &str) {
        self.shared
            .lock()
            .next_upload_ids
            .push_back(upload_id.to_owned());
    }

    /// Stores (or replaces) an object in `bucket` (created if needed), served with its CRC.
    pub fn put_object_in(&self, bucket: &str, key: &str, body: impl Into<Bytes>) -> ObjectInfo {
        self.store(bucket, key, body.into(), true)
    }

    /// What an object looks like, if it exists.
    pub fn object_info_in(&self, bucket: &str, key: &str) -> Option<ObjectInfo> {
        let id = (bucket.to_owned(), key.to_owned());
        self.shared.lock().objects.get(&id).map(|o| o.info())
    }

    /// The content of an object, if it exists (read from its temp file when spilled).
    pub fn object_bytes(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let id = (bucket.to_owned(), key.to_owned());
        let data = self.shared.lock().objects.get(&id)?.data.clone();
        Some(
            data.read_all()
                .expect("the simulator's temp file is readable"),
        )
    }

    /// Every object of `bucket`, sorted by key.
    pub fn objects(&self, bucket: &str) -> Vec<StoredObjectSummary> {
        let state = self.shared.lock();
        let mut objects: Vec<StoredObjectSummary> = state
            .objects
            .iter()
            .filter(|((b, _), _)| b == bucket)
            .map(|((_, key), object)| StoredObjectSummary {
                key: key.clone(),
                info: object.info(),
                object_type: object.object_type,
                content_type: object.content_type.clone(),
                on_disk: matches!(object.data, Data::File { .. }),
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        objects
    }

    /// Multipart uploads in progress (initiated, neither completed nor aborted), by id.
    pub fn multipart_uploads(&self) -> Vec<MultipartUploadSummary> {
        self.shared
            .lock()
            .uploads
            .iter()
            .map(|(upload_id, upload)| MultipartUploadSummary {
                bucket: upload.bucket.clone(),
                key: upload.key.clone(),
                upload_id: upload_id.clone(),
                initiated: upload.initiated,
                parts: upload
                    .parts
                    .iter()
                    .map(|(number, part)| PartSummary {
                        part_number: *number,
                        info: ObjectInfo {
                            etag: format!("\"{}\"", part.etag()),
                            crc64ecma: part.crc64,
                            len: part.data.len(),
                        },
                    })
                    .collect(),
            })
            .collect()
    }

    /// Starts a multipart upload directly (test set-up), with `upload_id` or a random id;
    /// creates the bucket if needed. Returns the id.
    pub fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: Option<&str>,
    ) -> String {
        let upload_id = upload_id.map_or_else(new_upload_id, str::to_owned);
        let upload = Upload {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            content_type: "application/octet-stream".to_owned(),
            initiated: self.now(),
            parts: BTreeMap::new(),
        };
        let mut state = self.shared.lock();
        state.buckets.insert(bucket.to_owned());
        state.uploads.insert(upload_id.clone(), upload);
        upload_id
    }

    /// Stores part `part_number` of an upload directly (test set-up); `None` if the upload
    /// does not exist.
    pub fn put_part(
        &self,
        upload_id: &str,
        part_number: u32,
        body: impl Into<Bytes>,
    ) -> Option<ObjectInfo> {
        let data: Bytes = body.into();
        let md5: [u8; 16] = md5::Md5::digest(&data).into();
        let mut crc = crc64fast::Digest::new();
        crc.write(&data);
        let part = Part {
            md5,
            crc64: crc.sum64(),
            last_modified: self.now(),
            data: Data::Memory(data),
        };
        let info = ObjectInfo {
            etag: format!("\"{}\"", part.etag()),
            crc64ecma: part.crc64,
            len: part.data.len(),
        };
        let mut state = self.shared.lock();
        state
            .uploads
            .get_mut(upload_id)?
            .parts
            .insert(part_number, part);
        Some(info)
    }
}
