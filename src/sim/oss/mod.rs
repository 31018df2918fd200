//! In-process OSS simulator for V1 presigned-URL downloads, on 127.0.0.1.
//!
//! It owns what a downloader sees from Alibaba Cloud OSS when it follows a signed URL that DMS
//! returned: V1 query-string signature and expiry checks (done on the raw query, so a client
//! that re-encodes the URL or adds signed headers fails as it would against OSS), `Range`
//! handling with OSS's lenient rules, the `ETag` / `x-oss-hash-crc64ecma` headers, OSS-shaped
//! XML errors, a streamed body, and faults injected per object (cut connection, stall, flipped
//! byte, wrong CRC header, 500, link expired). Facts: `shared/reference/dms-api.md` §8.
//!
//! It does not do uploads, listing, V2/V4 signatures, sub-resources other than
//! `security-token`, or virtual-host addressing: URLs are path-style
//! (`http://127.0.0.1:PORT/<bucket>/<key>`), because 127.0.0.1 has no virtual hosts.
//!
//! The server runs on hyper directly (not axum) because the `CutAfter` fault needs control of
//! the connection: the body stops at the cut point, and the socket wrapper turns hyper's next
//! flush into an error, so exactly the promised bytes reach the client before the connection
//! drops. It is spawned with `tokio::spawn` on the caller's runtime and reads no tokio timer,
//! so it behaves deterministically in paused-time tests. Expiry uses the wall clock, as OSS does.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use md5::Digest as _;
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::dms::signer::percent_encode;
use crate::secret::Secret;

/// Size of the slices a body is streamed in.
const BODY_CHUNK: usize = 64 * 1024;

/// The `Content-Type` every object is served with: DMS exports are zips.
const OBJECT_CONTENT_TYPE: &str = "application/zip";

/// Settings of one simulator: the bucket it serves and the only credentials it accepts.
#[derive(Debug, Clone)]
pub struct OssSimConfig {
    /// Bucket name, the first path segment of every URL.
    pub bucket: String,
    /// AccessKey id the presigned URLs carry as `OSSAccessKeyId`.
    pub access_key_id: String,
    /// Secret the URLs are signed with (made up; not a real credential).
    pub access_key_secret: Secret,
    /// STS token: when set, URLs carry `security-token=` and it is signed as a sub-resource.
    pub security_token: Option<Secret>,
}

impl Default for OssSimConfig {
    fn default() -> Self {
        Self {
            bucket: "idbsaasstore".to_owned(),
            access_key_id: "LTAI5tSimulatorOssKeyId".to_owned(),
            access_key_secret: Secret::new("SimulatorOssSecretNotARealKey0123"),
            security_token: None,
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
    /// The `ETag` header value, quotes included: `"<UPPER-CASE MD5 HEX>"`.
    pub etag: String,
    /// CRC-64/XZ of the whole object (what `x-oss-hash-crc64ecma` carries, when it is sent).
    pub crc64ecma: u64,
    /// Object size in bytes.
    pub len: u64,
}

/// A fault served instead of (or inside) the normal answer to one GET of an object.
///
/// Faults are queued per object key and consumed first-in first-out, one by each GET of that
/// key that passes the signature checks. HEAD requests never consume one.
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
    /// The raw query string. It holds the signature, hence [`Secret`].
    pub query: Secret,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Every request header, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The HTTP status answered.
    pub status: u16,
    /// The decoded object key when the path named this simulator's bucket.
    pub key: Option<String>,
    /// The fault consumed by this request, if any.
    pub fault: Option<OssFault>,
    /// The `x-oss-request-id` answered.
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
            .field("fault", &self.fault)
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// A running OSS simulator. Dropping it stops the server and every open connection.
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
        let shared = Arc::new(Shared {
            host_id: format!("{}.{addr}", config.bucket),
            config,
            state: Mutex::new(State::default()),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&shared)));
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

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The settings the simulator runs with.
    pub fn config(&self) -> &OssSimConfig {
        &self.shared.config
    }

    /// Stores (or replaces) an object; it is served with an `x-oss-hash-crc64ecma` header.
    pub fn put_object(&self, key: &str, body: impl Into<Bytes>) -> ObjectInfo {
        self.store(key, body.into(), true)
    }

    /// Stores (or replaces) an object that is served without `x-oss-hash-crc64ecma`, like
    /// objects uploaded before OSS computed CRCs.
    pub fn put_object_without_crc(&self, key: &str, body: impl Into<Bytes>) -> ObjectInfo {
        self.store(key, body.into(), false)
    }

    /// Removes an object; returns whether it existed.
    pub fn delete_object(&self, key: &str) -> bool {
        self.shared.lock().objects.remove(key).is_some()
    }

    /// What a stored object looks like, if it exists.
    pub fn object_info(&self, key: &str) -> Option<ObjectInfo> {
        self.shared.lock().objects.get(key).map(StoredObject::info)
    }

    fn store(&self, key: &str, data: Bytes, send_crc: bool) -> ObjectInfo {
        let object = StoredObject::new(data, send_crc);
        let info = object.info();
        self.shared.lock().objects.insert(key.to_owned(), object);
        info
    }

    /// Queues a fault for the next GET of `key` that passes the signature checks.
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
        self.presign_at(key, unix_now().saturating_add(valid_for))
    }

    /// A correctly signed GET URL for `key` whose `Expires` lies an hour in the past.
    pub fn presign_expired(&self, key: &str) -> String {
        self.presign_at(key, unix_now() - 3600)
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

    /// How many GET requests named `key` (whatever their outcome).
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

/// The V1 string to sign:
/// `VERB\nContent-MD5\nContent-Type\nExpires\n{CanonicalizedOSSHeaders}{CanonicalizedResource}`.
///
/// `canonicalized_oss_headers` is already in its final form (`name:value\n` per header, see
/// [`canonicalized_oss_headers`]).
pub fn oss_v1_string_to_sign(
    verb: &str,
    content_md5: &str,
    content_type: &str,
    expires: &str,
    canonicalized_oss_headers: &str,
    canonicalized_resource: &str,
) -> String {
    format!(
        "{verb}\n{content_md5}\n{content_type}\n{expires}\n{canonicalized_oss_headers}{canonicalized_resource}"
    )
}

/// V1 signature: `Base64(HMAC-SHA1(secret, string_to_sign))` (no `&` appended to the key,
/// unlike the RPC V1 signature).
pub fn oss_v1_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Every `x-oss-*` header, name lower-case and value trimmed, sorted by name, as
/// `name:value\n` lines. Repeated headers are joined with `,`.
pub fn canonicalized_oss_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut oss: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if !name.starts_with("x-oss-") {
            continue;
        }
        match oss.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(value.trim());
            }
            None => oss.push((name, value.trim().to_owned())),
        }
    }
    oss.sort();
    oss.iter().map(|(n, v)| format!("{n}:{v}\n")).collect()
}

/// `/bucket/key` with the decoded key, plus `?security-token=<token>` when one is used.
pub fn canonicalized_resource(bucket: &str, key: &str, security_token: Option<&str>) -> String {
    match security_token {
        Some(token) => format!("/{bucket}/{key}?security-token={token}"),
        None => format!("/{bucket}/{key}"),
    }
}

/// Percent-encodes each `/`-separated segment of a key (RFC 3986), keeping the slashes.
pub fn encode_key(key: &str) -> String {
    key.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Wall-clock unix seconds: OSS checks `Expires` against real time, not tokio's clock.
fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[derive(Debug)]
struct Shared {
    config: OssSimConfig,
    host_id: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide its own failure behind a
        // poison error in the server.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
struct State {
    objects: HashMap<String, StoredObject>,
    faults: HashMap<String, VecDeque<OssFault>>,
    requests: Vec<OssRequestRecord>,
}

#[derive(Clone)]
struct StoredObject {
    data: Bytes,
    md5_hex: String,
    crc64: u64,
    send_crc: bool,
    last_modified: jiff::Timestamp,
}

impl fmt::Debug for StoredObject {
    /// The content is left out: objects can be tens of MiB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredObject")
            .field("len", &self.data.len())
            .field("md5_hex", &self.md5_hex)
            .field("crc64", &self.crc64)
            .field("send_crc", &self.send_crc)
            .field("last_modified", &self.last_modified)
            .finish()
    }
}

impl StoredObject {
    fn new(data: Bytes, send_crc: bool) -> Self {
        let md5_hex = md5::Md5::digest(&data)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let mut crc = crc64fast::Digest::new();
        crc.write(&data);
        Self {
            md5_hex,
            crc64: crc.sum64(),
            send_crc,
            last_modified: jiff::Timestamp::now(),
            data,
        }
    }

    fn info(&self) -> ObjectInfo {
        ObjectInfo {
            etag: format!("\"{}\"", self.md5_hex),
            crc64ecma: self.crc64,
            len: self.data.len() as u64,
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // An accept error (e.g. too many open files) concerns one connection only.
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let cut = Arc::new(AtomicBool::new(false));
    let io = hyper_util::rt::TokioIo::new(CuttableStream {
        inner: stream,
        cut: Arc::clone(&cut),
    });
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = handle(&shared, &request, &cut);
        std::future::ready(Ok::<_, Infallible>(response))
    });
    // Errors here are the client going away or a `CutAfter` fault; both end the connection.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// A TCP stream whose next flush fails once `cut` is set.
///
/// hyper calls `poll_flush` on the socket only after its own write buffer is empty, so when
/// the body has armed `cut` and hyper flushes, every byte promised to the client is in the
/// kernel; the error then makes hyper drop the connection.
#[derive(Debug)]
struct CuttableStream {
    inner: TcpStream,
    cut: Arc<AtomicBool>,
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        if self.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "simulated connection cut",
            )));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where a body stops early, and how.
#[derive(Debug, Clone, Copy)]
enum BodyStop {
    Cut(u64),
    Stall(u64),
}

/// A response body: empty, a small XML document, or an object (range) streamed in slices.
#[derive(Debug)]
struct SimBody {
    remaining: Bytes,
    total: u64,
    sent: u64,
    /// Offset inside the response body of the byte to XOR with 0xFF.
    flip_at: Option<u64>,
    stop: Option<BodyStop>,
    cut: Arc<AtomicBool>,
}

impl SimBody {
    fn full(data: Bytes, cut: &Arc<AtomicBool>) -> Self {
        Self {
            total: data.len() as u64,
            remaining: data,
            sent: 0,
            flip_at: None,
            stop: None,
            cut: Arc::clone(cut),
        }
    }

    fn empty(cut: &Arc<AtomicBool>) -> Self {
        Self::full(Bytes::new(), cut)
    }
}

impl http_body::Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining.is_empty() {
            return Poll::Ready(None);
        }
        let mut len = this.remaining.len().min(BODY_CHUNK);
        if let Some(BodyStop::Cut(at) | BodyStop::Stall(at)) = this.stop {
            if this.sent >= at {
                if let Some(BodyStop::Cut(_)) = this.stop {
                    this.cut.store(true, Ordering::Release);
                }
                // Never woken: a stall lasts until the client gives up or the server stops,
                // and a cut ends at hyper's next flush.
                return Poll::Pending;
            }
            len = len.min(usize::try_from(at - this.sent).unwrap_or(usize::MAX));
        }
        let mut chunk = this.remaining.split_to(len);
        if let Some(flip) = this.flip_at
            && (this.sent..this.sent + len as u64).contains(&flip)
        {
            let mut owned = chunk.to_vec();
            owned[(flip - this.sent) as usize] ^= 0xFF;
            chunk = Bytes::from(owned);
        }
        this.sent += len as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}

/// An answer being built, plus what the log should say about it.
struct Outcome {
    response: Response<SimBody>,
    key: Option<String>,
    fault: Option<OssFault>,
}

fn handle(
    shared: &Shared,
    request: &Request<Incoming>,
    cut: &Arc<AtomicBool>,
) -> Response<SimBody> {
    let request_id = new_request_id();
    let raw_path = request.uri().path().to_owned();
    let raw_query = request.uri().query().unwrap_or("").to_owned();
    let mut outcome = answer(shared, request, &raw_path, &raw_query, &request_id, cut);
    let response = &mut outcome.response;
    let headers = response.headers_mut();
    headers.insert("x-oss-request-id", header_value(&request_id));
    headers.insert("server", HeaderValue::from_static("AliyunOSS"));
    if request.method() == Method::HEAD {
        // OSS answers HEAD errors with the status and headers only.
        if response.status().is_client_error() || response.status().is_server_error() {
            *response.body_mut() = SimBody::empty(cut);
            response.headers_mut().remove("content-length");
        }
    }
    let record = OssRequestRecord {
        method: request.method().as_str().to_owned(),
        path: raw_path,
        query: Secret::new(raw_query),
        range: request
            .headers()
            .get("range")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        status: outcome.response.status().as_u16(),
        key: outcome.key,
        fault: outcome.fault,
        request_id,
    };
    shared.lock().requests.push(record);
    outcome.response
}

fn answer(
    shared: &Shared,
    request: &Request<Incoming>,
    raw_path: &str,
    raw_query: &str,
    request_id: &str,
    cut: &Arc<AtomicBool>,
) -> Outcome {
    let err = |status: StatusCode, code: &str, message: &str, extra: &[(&str, String)]| {
        error_response(
            status,
            code,
            message,
            extra,
            request_id,
            &shared.host_id,
            cut,
        )
    };
    let outcome = |response: Response<SimBody>, key: Option<&str>| Outcome {
        response,
        key: key.map(str::to_owned),
        fault: None,
    };
    let config = &shared.config;

    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let response = err(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
            &[("Method", method.as_str().to_owned())],
        );
        return outcome(response, None);
    }

    let Ok(path) = percent_decode_str(raw_path).decode_utf8() else {
        let response = err(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "The request path is not valid UTF-8 after percent-decoding.",
            &[],
        );
        return outcome(response, None);
    };
    let path = path.strip_prefix('/').unwrap_or(&path);
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if bucket != config.bucket {
        let response = err(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
            &[("BucketName", bucket.to_owned())],
        );
        return outcome(response, None);
    }
    let key = key.to_owned();
    let key_ref = Some(key.as_str());

    let query = parse_query(raw_query);
    let param = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (access_key_id, signature) = (param("OSSAccessKeyId"), param("Signature"));
    if access_key_id.is_none() && signature.is_none() {
        let response = err(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "You have no right to access this object because of bucket acl.",
            &[],
        );
        return outcome(response, key_ref);
    }
    let expires_text = match param("Expires") {
        None => {
            let response = err(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Expires is required in a signed URL.",
                &[],
            );
            return outcome(response, key_ref);
        }
        Some("") => {
            let response = err(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Expires must not be empty.",
                &[],
            );
            return outcome(response, key_ref);
        }
        Some(text) => text,
    };
    let Ok(expires) = expires_text.parse::<i64>() else {
        let response = err(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Expires must be a Unix time in seconds.",
            &[("Expires", expires_text.to_owned())],
        );
        return outcome(response, key_ref);
    };

    let sent_token = param("security-token");
    let known_key = access_key_id == Some(config.access_key_id.as_str());
    // An STS AccessKey id exists only together with its token.
    let key_usable = known_key && (config.security_token.is_none() || sent_token.is_some());
    if !key_usable {
        let response = err(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The OSS Access Key Id you provided does not exist in our records.",
            &[("OSSAccessKeyId", access_key_id.unwrap_or("").to_owned())],
        );
        return outcome(response, key_ref);
    }

    let now = unix_now();
    if now > expires {
        return outcome(
            expired_response(expires, request_id, &shared.host_id, cut),
            key_ref,
        );
    }

    if sent_token != config.security_token.as_ref().map(Secret::expose) {
        let response = err(
            StatusCode::FORBIDDEN,
            "InvalidSecurityToken",
            "The security token you provided is invalid.",
            &[],
        );
        return outcome(response, key_ref);
    }

    let header_text = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .unwrap_or_default()
    };
    let oss_headers = canonicalized_oss_headers(
        request
            .headers()
            .iter()
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))),
    );
    let string_to_sign = oss_v1_string_to_sign(
        method.as_str(),
        &header_text("content-md5"),
        &header_text("content-type"),
        expires_text,
        &oss_headers,
        &canonicalized_resource(bucket, &key, sent_token),
    );
    let expected = oss_v1_signature(config.access_key_secret.expose(), &string_to_sign);
    if signature != Some(expected.as_str()) {
        let response = err(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method.",
            &[("OSSAccessKeyId", config.access_key_id.clone())],
        );
        return outcome(response, key_ref);
    }

    let (fault, object) = {
        let mut state = shared.lock();
        let fault = if method == Method::GET {
            state.faults.get_mut(&key).and_then(VecDeque::pop_front)
        } else {
            None
        };
        (fault, state.objects.get(&key).cloned())
    };
    let with_fault = |response: Response<SimBody>| Outcome {
        response,
        key: Some(key.clone()),
        fault,
    };
    match fault {
        Some(OssFault::Expired) => {
            return with_fault(expired_response(expires, request_id, &shared.host_id, cut));
        }
        Some(OssFault::InternalError) => {
            return with_fault(err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
                &[],
            ));
        }
        Some(OssFault::SlowDown) => {
            return with_fault(err(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
                &[],
            ));
        }
        _ => {}
    }
    let Some(object) = object else {
        return with_fault(err(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            &[("Key", key.clone())],
        ));
    };
    with_fault(object_response(
        &object,
        method == Method::HEAD,
        request.headers(),
        fault,
        cut,
    ))
}

fn object_response(
    object: &StoredObject,
    head: bool,
    request_headers: &HeaderMap,
    fault: Option<OssFault>,
    cut: &Arc<AtomicBool>,
) -> Response<SimBody> {
    let size = object.data.len() as u64;
    let range = request_headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, size));
    let (status, start, end) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", OBJECT_CONTENT_TYPE)
        .header("content-length", end - start)
        .header("accept-ranges", "bytes")
        .header("etag", format!("\"{}\"", object.md5_hex))
        .header("last-modified", http_date(object.last_modified))
        .header("x-oss-object-type", "Normal")
        .header("x-oss-storage-class", "Standard");
    if object.send_crc {
        let crc = match fault {
            // Any value but the true one; flipping the low bit keeps it plausible-looking.
            Some(OssFault::WrongCrcHeader) => object.crc64 ^ 1,
            _ => object.crc64,
        };
        builder = builder.header("x-oss-hash-crc64ecma", crc);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header("content-range", format!("bytes {start}-{}/{size}", end - 1));
    }
    let body = if head {
        SimBody::empty(cut)
    } else {
        let mut body = SimBody::full(object.data.slice(start as usize..end as usize), cut);
        match fault {
            Some(OssFault::CutAfter(n)) => body.stop = Some(BodyStop::Cut(n)),
            Some(OssFault::StallAfter(n)) => body.stop = Some(BodyStop::Stall(n)),
            Some(OssFault::FlipByte(offset)) if (start..end).contains(&offset) => {
                body.flip_at = Some(offset - start);
            }
            _ => {}
        }
        body
    };
    builder
        .body(body)
        .expect("static header names and numeric or ASCII values are valid")
}

/// Parses a single byte range the way OSS does without `x-oss-range-behavior: standard`:
/// returns the half-open `[start, end)` to serve with 206, or `None` for "ignore the header
/// and send the whole object with 200" (malformed, several ranges, start or end outside the
/// object, start after end, an empty object).
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (first.is_empty(), last.is_empty()) {
        // `bytes=-n`: the last n bytes.
        (true, false) if digits(last) => {
            let n: u64 = last.parse().ok()?;
            (n > 0 && n <= size).then(|| (size - n, size))
        }
        // `bytes=a-`: from a to the end.
        (false, true) if digits(first) => {
            let start: u64 = first.parse().ok()?;
            (start < size).then_some((start, size))
        }
        // `bytes=a-b`: both inclusive.
        (false, false) if digits(first) && digits(last) => {
            let start: u64 = first.parse().ok()?;
            let last: u64 = last.parse().ok()?;
            (start <= last && last < size).then(|| (start, last + 1))
        }
        _ => None,
    }
}

/// Splits the raw query on `&` and decodes names and values like a form decoder (`+` is a
/// space), so a client that re-encodes the signature produces a different value.
fn parse_query(raw: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let spaced = s.replace('+', " ");
        percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
    };
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn expired_response(
    expires: i64,
    request_id: &str,
    host_id: &str,
    cut: &Arc<AtomicBool>,
) -> Response<SimBody> {
    let expires_at = jiff::Timestamp::from_second(expires)
        .map(iso8601)
        .unwrap_or_else(|_| expires.to_string());
    error_response(
        StatusCode::FORBIDDEN,
        "AccessDenied",
        "Request has expired.",
        &[
            ("Expires", expires_at),
            ("ServerTime", iso8601(jiff::Timestamp::now())),
        ],
        request_id,
        host_id,
        cut,
    )
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    extra: &[(&str, String)],
    request_id: &str,
    host_id: &str,
    cut: &Arc<AtomicBool>,
) -> Response<SimBody> {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{}</Code>\n  \
         <Message>{}</Message>\n  <RequestId>{}</RequestId>\n  <HostId>{}</HostId>\n",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id),
        xml_escape(host_id),
    );
    for (name, value) in extra {
        xml.push_str(&format!("  <{name}>{}</{name}>\n", xml_escape(value)));
    }
    xml.push_str("</Error>\n");
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(SimBody::full(Bytes::from(xml), cut))
        .expect("static header names and values are valid")
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `2017-02-07T01:30:29.000Z`, the form OSS error bodies use.
fn iso8601(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string()
}

/// `Tue, 17 Nov 2015 17:27:45 GMT` (RFC 7231 IMF-fixdate).
fn http_date(at: jiff::Timestamp) -> String {
    at.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// 24 upper-case hex digits, the shape of OSS request ids.
fn new_request_id() -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .to_ascii_uppercase()[..24]
        .to_owned()
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("generated ASCII header value")
}

#[cfg(test)]
pub(crate) mod golden;
#[cfg(test)]
mod tests;
