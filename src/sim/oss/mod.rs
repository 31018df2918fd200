//! In-process OSS simulator on 127.0.0.1: V1 presigned-URL downloads (what DMS hands out) and
//! header-signed uploads (what dmstrack's `[upload]` sends).
//!
//! Download side (`presigned.rs`): V1 query-string signature and expiry checks done on the raw
//! query, `Range` with OSS's lenient rules, `ETag` / `x-oss-hash-crc64ecma`, and faults queued
//! per object (`OssFault`: cut connection, stall, flipped byte, wrong CRC header, 500, link
//! expired). Facts: `shared/reference/dms-api.md` §8.
//!
//! Upload side (`upload.rs`, `header_auth.rs`): V4 (`OSS4-HMAC-SHA256`) and V1 header
//! signatures against registered keys (long-term or STS with expiry, 15-minute skew rule,
//! settable clock), PutObject, the multipart calls, HeadObject, GetObject, DeleteObject,
//! GetBucketInfo and ListObjects, with OSS's validation and XML answers
//! (`shared/reference/oss-upload.md` §2), and faults per operation or call number
//! (`UploadFault`). Content is kept in memory up to 1 MiB and in temp files of the simulator's
//! own directory beyond (`store.rs`). Several buckets can exist; the configured one always does.
//!
//! Addressing: a request whose `Host` is an IP or `localhost` is path-style
//! (`/<bucket>/<key>`); any other `Host` is virtual-hosted (`<bucket>.<endpoint>` +
//! `/<key>`), which replayed requests with a real OSS host name use.
//!
//! The server runs on hyper directly (not axum) because faults need control of the
//! connection (`server.rs`, `body.rs`). It is spawned with `tokio::spawn` on the caller's
//! runtime, reads no tokio timer and never waits on the blocking pool, so it behaves
//! deterministically in paused-time tests. Presigned expiry uses the wall clock, as OSS does;
//! header signatures use the wall clock plus [`OssSimulator::set_clock_offset`].

mod body;
mod control;
mod header_auth;
mod presigned;
mod reply;
mod server;
mod store;
mod upload;

#[cfg(test)]
pub(crate) mod golden;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upload_tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use jiff::SignedDuration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use control::{
    MultipartUploadSummary, OssOperation, PartSummary, StoredObjectSummary, UploadFault,
};
pub use presigned::{
    canonicalized_oss_headers, canonicalized_resource, encode_key, oss_v1_signature,
    oss_v1_string_to_sign,
};
pub use store::ObjectType;

use crate::net::secret::Secret;
use crate::net::signer::percent_encode;
use header_auth::RegisteredKey;
use store::{StoredObject, Upload};

/// The `Content-Type` objects stored through the test accessors are served with: DMS exports
/// are zips.
const OBJECT_CONTENT_TYPE: &str = "application/zip";

/// Settings of one simulator: the bucket it serves and the credentials it starts with.
#[derive(Debug, Clone)]
pub struct OssSimConfig {
    /// Bucket name, the first path segment of every presigned URL. It always exists; more
    /// buckets can be added with [`OssSimulator::create_bucket`].
    pub bucket: String,
    /// AccessKey id the presigned URLs carry as `OSSAccessKeyId`; also accepted in header
    /// signatures.
    pub access_key_id: String,
    /// Secret the URLs are signed with (made up; not a real credential).
    pub access_key_secret: Secret,
    /// STS token: when set, URLs carry `security-token=` and it is signed as a sub-resource;
    /// header-signed requests with this key must send it as `x-oss-security-token`.
    pub security_token: Option<Secret>,
    /// The region V4 signatures must be scoped to.
    pub region: String,
}

impl Default for OssSimConfig {
    fn default() -> Self {
        Self {
            bucket: "idbsaasstore".to_owned(),
            access_key_id: "LTAI5tSimulatorOssKeyId".to_owned(),
            access_key_secret: Secret::new("SimulatorOssSecretNotARealKey0123"),
            security_token: None,
            region: "cn-hangzhou".to_owned(),
        }
    }
}

impl OssSimConfig {
    /// The default bucket and keys plus an STS security token.
    pub fn with_security_token(token: impl Into<String>) -> Self {
        Self {
            access_key_id: "STS.NSimulatorTemporaryKeyId".to_owned(),
            security_token: Some(Secret::new(token.into())),
            ..Self::default()
        }
    }
}

/// What a stored object looks like from the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The `ETag` header value, quotes included: `"<UPPER-CASE MD5 HEX>"`, or
    /// `"<HEX>-<N>"` for an object assembled from N parts.
    pub etag: String,
    /// CRC-64/XZ of the whole object (what `x-oss-hash-crc64ecma` carries, when it is sent).
    pub crc64ecma: u64,
    /// Object size in bytes.
    pub len: u64,
}

/// A fault served instead of (or inside) the normal answer to one presigned GET of an object.
///
/// Faults are queued per object key and consumed first-in first-out, one by each presigned
/// GET of that key that passes the signature checks. HEAD requests never consume one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OssFault {
    /// Send the headers and this many body bytes, then drop the connection. The client sees a
    /// body shorter than `Content-Length`. A response shorter than this completes normally.
    CutAfter(u64),
    /// Send the headers and this many body bytes, then nothing more, without closing: only the
    /// client's read timeout ends it. A response shorter than this completes normally.
    StallAfter(u64),
    /// Serve the byte at this absolute object offset XOR 0xFF (if the response covers it);
    /// `ETag` and CRC headers stay those of the true object.
    FlipByte(u64),
    /// Serve the true body with a wrong `x-oss-hash-crc64ecma` value.
    WrongCrcHeader,
    /// 500 `InternalError` XML.
    InternalError,
    /// 503 `SlowDown` XML (OSS's throttling answer).
    SlowDown,
    /// 403 "Request has expired." although the URL is valid: the link expired between requests.
    /// The body's `<Expires>` is the URL's own (future) value.
    Expired,
}

/// One request the simulator answered, for assertions.
#[derive(Clone)]
pub struct OssRequestRecord {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The raw (still percent-encoded) request path.
    pub path: String,
    /// The raw query string. It may hold a signature, hence [`Secret`].
    pub query: Secret,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Every request header, names lower-case, in arrival order. Values may hold secrets
    /// (`authorization`, `x-oss-security-token`); `Debug` leaves them out.
    pub headers: Vec<(String, String)>,
    /// The HTTP status answered; 0 when the connection was closed without an answer.
    pub status: u16,
    /// The decoded object key the request named (presigned requests: only in the
    /// configured bucket).
    pub key: Option<String>,
    /// The operation, when the request got that far.
    pub operation: Option<OssOperation>,
    /// The presigned-GET fault consumed by this request, if any.
    pub fault: Option<OssFault>,
    /// The upload fault consumed by this request, if any.
    pub upload_fault: Option<UploadFault>,
    /// The `x-oss-request-id` answered (or that would have been).
    pub request_id: String,
}

impl OssRequestRecord {
    /// The value of a request header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for OssRequestRecord {
    /// Header values are left out: a client could send credentials in them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OssRequestRecord")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("range", &self.range)
            .field("header_names", &header_names)
            .field("status", &self.status)
            .field("key", &self.key)
            .field("operation", &self.operation)
            .field("fault", &self.fault)
            .field("upload_fault", &self.upload_fault)
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// A running OSS simulator. Dropping it stops the server and every open connection; its temp
/// directory goes when the last connection is gone.
#[derive(Debug)]
pub struct OssSimulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// `None` only after [`OssSimulator::shutdown`] took it.
    server: Option<JoinHandle<()>>,
}

impl OssSimulator {
    /// Starts a simulator with the default bucket and keys on `127.0.0.1:0`.
    pub async fn start() -> io::Result<Self> {
        Self::start_with(OssSimConfig::default()).await
    }

    /// Starts a simulator with the given settings on `127.0.0.1:0`, spawned on the current
    /// tokio runtime.
    pub async fn start_with(config: OssSimConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let mut state = State::default();
        state.buckets.insert(config.bucket.clone());
        state.credentials.insert(
            config.access_key_id.clone(),
            RegisteredKey {
                secret: config.access_key_secret.clone(),
                security_token: config.security_token.clone(),
                expires_at: None,
            },
        );
        let shared = Arc::new(Shared {
            host_id: format!("{}.{addr}", config.bucket),
            config,
            files: tempfile::Builder::new()
                .prefix("dmstrack-oss-sim-")
                .tempdir()?,
            clock_offset_nanos: AtomicI64::new(0),
            state: Mutex::new(state),
        });
        let server = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        Ok(Self {
            addr,
            shared,
            server: Some(server),
        })
    }

    /// Stops the server and waits until it is gone.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // The only possible outcome is "cancelled": the accept loop never returns.
            let _ = server.await;
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: the `[upload] endpoint` to use.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The settings the simulator runs with.
    pub fn config(&self) -> &OssSimConfig {
        &self.shared.config
    }

    /// Stores (or replaces) an object in the configured bucket; it is served with an
    /// `x-oss-hash-crc64ecma` header.
    pub fn put_object(&self, key: &str, body: impl Into<Bytes>) -> ObjectInfo {
        self.store(&self.shared.config.bucket, key, body.into(), true)
    }

    /// Stores (or replaces) an object that is served without `x-oss-hash-crc64ecma`, like
    /// objects uploaded before OSS computed CRCs.
    pub fn put_object_without_crc(&self, key: &str, body: impl Into<Bytes>) -> ObjectInfo {
        self.store(&self.shared.config.bucket, key, body.into(), false)
    }

    /// Removes an object of the configured bucket; returns whether it existed.
    pub fn delete_object(&self, key: &str) -> bool {
        let id = (self.shared.config.bucket.clone(), key.to_owned());
        self.shared.lock().objects.remove(&id).is_some()
    }

    /// What an object of the configured bucket looks like, if it exists.
    pub fn object_info(&self, key: &str) -> Option<ObjectInfo> {
        self.object_info_in(&self.shared.config.bucket, key)
    }

    fn store(&self, bucket: &str, key: &str, data: Bytes, send_crc: bool) -> ObjectInfo {
        let object = StoredObject::from_bytes(data, send_crc, self.shared.now());
        let info = object.info();
        let id = (bucket.to_owned(), key.to_owned());
        let mut state = self.shared.lock();
        state.buckets.insert(bucket.to_owned());
        state.objects.insert(id, object);
        info
    }

    /// Queues a fault for the next presigned GET of `key` that passes the signature checks.
    pub fn inject(&self, key: &str, fault: OssFault) {
        self.shared
            .lock()
            .faults
            .entry(key.to_owned())
            .or_default()
            .push_back(fault);
    }

    /// How many injected faults for `key` are not consumed yet.
    pub fn pending_faults(&self, key: &str) -> usize {
        self.shared.lock().faults.get(key).map_or(0, VecDeque::len)
    }

    /// A GET URL for `key` valid for `valid_for` from now (wall clock).
    pub fn presign(&self, key: &str, valid_for: Duration) -> String {
        let valid_for = i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX / 2);
        self.presign_at(key, presigned::unix_now().saturating_add(valid_for))
    }

    /// A correctly signed GET URL for `key` whose `Expires` lies an hour in the past.
    pub fn presign_expired(&self, key: &str) -> String {
        self.presign_at(key, presigned::unix_now() - 3600)
    }

    /// A GET URL for `key` with the given `Expires` (unix seconds).
    pub fn presign_at(&self, key: &str, expires_unix: i64) -> String {
        self.presign_method("GET", key, expires_unix)
    }

    /// A URL for `key` signed for `verb` (a HEAD needs its own URL: the verb is signed).
    pub fn presign_method(&self, verb: &str, key: &str, expires_unix: i64) -> String {
        let config = &self.shared.config;
        let token = config.security_token.as_ref().map(Secret::expose);
        let resource = canonicalized_resource(&config.bucket, key, token);
        let string_to_sign =
            oss_v1_string_to_sign(verb, "", "", &expires_unix.to_string(), "", &resource);
        let signature = oss_v1_signature(config.access_key_secret.expose(), &string_to_sign);
        let mut url = format!(
            "{}/{}/{}?Expires={expires_unix}&OSSAccessKeyId={}&Signature={}",
            self.base_url(),
            config.bucket,
            encode_key(key),
            percent_encode(&config.access_key_id),
            percent_encode(&signature),
        );
        if let Some(token) = token {
            url.push_str("&security-token=");
            url.push_str(&percent_encode(token));
        }
        url
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<OssRequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// How many GET requests named `key` (whatever their outcome or bucket).
    pub fn get_count(&self, key: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == "GET" && r.key.as_deref() == Some(key))
            .count()
    }
}

impl Drop for OssSimulator {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks in a `JoinSet`, so aborting it also ends
        // stalled connections.
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// `(bucket, key)`.
type ObjectId = (String, String);

#[derive(Debug)]
struct Shared {
    config: OssSimConfig,
    host_id: String,
    /// Where content beyond the in-memory threshold is kept; removed with the simulator.
    files: tempfile::TempDir,
    /// Offset of the simulator's clock from the wall clock, in nanoseconds. Outside `state`
    /// so that reading the clock never needs (or deadlocks on) the state lock.
    clock_offset_nanos: AtomicI64,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide its own failure behind a
        // poison error in the server.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The simulator's clock: the wall clock plus the offset.
    fn now(&self) -> jiff::Timestamp {
        let offset = SignedDuration::from_nanos(self.clock_offset_nanos.load(Ordering::Relaxed));
        jiff::Timestamp::now() + offset
    }
}

#[derive(Debug, Default)]
struct State {
    buckets: BTreeSet<String>,
    objects: HashMap<ObjectId, StoredObject>,
    /// Multipart uploads in progress, by upload id.
    uploads: BTreeMap<String, Upload>,
    /// Ids the next InitiateMultipartUpload calls answer with, before random ones.
    next_upload_ids: VecDeque<String>,
    credentials: HashMap<String, RegisteredKey>,
    /// Presigned-GET faults by key.
    faults: HashMap<String, VecDeque<OssFault>>,
    /// Upload faults for the next calls of an operation.
    upload_faults: HashMap<OssOperation, VecDeque<UploadFault>>,
    /// Upload faults for one call number of an operation.
    call_faults: HashMap<(OssOperation, u64), UploadFault>,
    /// Header-signed calls per operation (whatever their outcome).
    calls: HashMap<OssOperation, u64>,
    requests: Vec<OssRequestRecord>,
}

impl State {
    fn take_upload_fault(&mut self, operation: OssOperation, call: u64) -> Option<UploadFault> {
        self.call_faults.remove(&(operation, call)).or_else(|| {
            self.upload_faults
                .get_mut(&operation)
                .and_then(VecDeque::pop_front)
        })
    }
}
