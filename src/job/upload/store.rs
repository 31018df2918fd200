//! One HTTP exchange with the upload target: an OSS bucket (V4 header signing with the
//! `[credentials]` chain, refreshed STS tokens included) or an S3-compatible bucket (SigV4
//! with the S3 keys). Each method is one request, signed anew; the caller decides about
//! retries. Answers are read bounded; errors carry `Code`, `Message` and the request id, never
//! an `Authorization` header, a token, or the `<StringToSign>`/`<CanonicalRequest>` OSS echoes.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::error::{StoreError, classify};
use super::oss_sign::{OssEndpoint, OssRequest, sign_v4};
use super::s3_sign::{PayloadHash, S3Credentials, S3Endpoint, S3Request};
use crate::config::StoreKind;
use crate::credentials::CredentialProvider;
use crate::telemetry::Metrics;

/// Most bytes of an answer body read (XML of a listing page of 1,000 parts is ~150 KiB).
const ANSWER_LIMIT: usize = 4 << 20;
/// Read size when streaming a file body.
const FILE_CHUNK: usize = 256 << 10;

/// What a request sends.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// Nothing.
    Empty,
    /// A small in-memory body (the CompleteMultipartUpload XML, `manifest.json`).
    Bytes(Bytes),
    /// `len` bytes of a file from `offset`, streamed (opened anew for every attempt).
    File {
        /// The file.
        path: PathBuf,
        /// Where the bytes start.
        offset: u64,
        /// How many.
        len: u64,
    },
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `ETag`, quotes removed.
    pub(crate) fn etag(&self) -> Option<String> {
        self.header("etag")
            .map(|e| e.trim().trim_matches('"').to_owned())
    }

    /// OSS's CRC-64 of the object or part.
    pub(crate) fn crc64(&self) -> Option<u64> {
        self.header("x-oss-hash-crc64ecma")
            .and_then(|v| v.trim().parse().ok())
    }
}

enum Target {
    Oss {
        endpoint: OssEndpoint,
        credentials: CredentialProvider,
    },
    S3 {
        endpoint: S3Endpoint,
        credentials: S3Credentials,
    },
}

/// A bucket to upload into. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    bucket: String,
    region: String,
    target: Target,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("kind", &self.kind())
            .field("bucket", &self.inner.bucket)
            .finish_non_exhaustive()
    }
}

/// The S3 keys, or the OSS credential chain, a store signs with.
#[derive(Debug, Clone)]
pub enum StoreCredentials {
    /// OSS: the same provider as the DMS API.
    Oss(CredentialProvider),
    /// S3: fixed keys.
    S3(S3Credentials),
}

impl ObjectStore {
    /// A store for `bucket` at `endpoint`. Redirects are never followed: the signed request
    /// (and an STS token) would go to another host.
    pub fn new(
        endpoint: &reqwest::Url,
        bucket: &str,
        region: &str,
        credentials: StoreCredentials,
        connect_timeout: std::time::Duration,
        read_timeout: std::time::Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let text = endpoint.as_str();
        let target = match credentials {
            StoreCredentials::Oss(credentials) => Target::Oss {
                endpoint: OssEndpoint::parse(text).map_err(|e| e.to_string())?,
                credentials,
            },
            StoreCredentials::S3(credentials) => Target::S3 {
                endpoint: S3Endpoint::parse(text, None).map_err(|e| e.to_string())?,
                credentials,
            },
        };
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .user_agent(crate::net::USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                format!(
                    "cannot build the HTTP client: {}",
                    crate::net::transport_error_text(e)
                )
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                bucket: bucket.to_owned(),
                region: region.to_owned(),
                target,
                metrics,
            }),
        })
    }

    /// OSS or S3.
    pub fn kind(&self) -> StoreKind {
        match self.inner.target {
            Target::Oss { .. } => StoreKind::Oss,
            Target::S3 { .. } => StoreKind::S3,
        }
    }

    /// An expired STS token was refused: the next request signs with refreshed credentials.
    pub(crate) fn refresh_credentials(&self) {
        if let Target::Oss { credentials, .. } = &self.inner.target {
            credentials.invalidate();
        }
    }

    /// Sends one request for `key` (`""`: the bucket) and returns a 2xx answer, or the error.
    /// `headers` are sent and signed (`content-md5`, `content-type`, `x-oss-*`, `x-amz-*`).
    pub(crate) async fn send(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Answer, StoreError> {
        let inner = &*self.inner;
        let now = jiff::Timestamp::now();
        let mut all_headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_ascii_lowercase(), (*v).to_owned()))
            .collect();
        let url = match &inner.target {
            Target::Oss {
                endpoint,
                credentials,
            } => {
                let credentials = credentials
                    .get()
                    .await
                    .map_err(|e| StoreError::credentials(e.to_string(), e.is_config()))?;
                let signed = sign_v4(
                    &OssRequest {
                        method,
                        bucket: &inner.bucket,
                        key,
                        query,
                        headers,
                    },
                    &inner.region,
                    &credentials,
                    now,
                );
                for (name, value) in signed.wire_pairs() {
                    all_headers.push((name.to_owned(), value.to_owned()));
                }
                endpoint.url(&inner.bucket, key, query)
            }
            Target::S3 {
                endpoint,
                credentials,
            } => {
                let location = if key.is_empty() {
                    endpoint.bucket(&inner.bucket)
                } else {
                    endpoint.object(&inner.bucket, key)
                };
                let owned_query: Vec<(String, String)> = query
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                let payload = match &body {
                    Body::Bytes(bytes) => PayloadHash::of_body(bytes),
                    Body::Empty => PayloadHash::empty(),
                    Body::File { .. } => PayloadHash::Unsigned,
                };
                let signed = super::s3_sign::sign(
                    &S3Request {
                        method,
                        host: &location.host,
                        path: &location.path,
                        query: &owned_query,
                        headers: &all_headers,
                        payload: &payload,
                    },
                    credentials,
                    &inner.region,
                    now,
                );
                for (name, value) in signed.pairs() {
                    all_headers.push((name.to_owned(), value.to_owned()));
                }
                location.url(&owned_query)
            }
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut request = inner.http.request(method.clone(), &url);
        for (name, value) in &all_headers {
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| StoreError::local(format!("header {name} is not valid")))?;
            if matches!(
                name.as_str(),
                "authorization" | "x-oss-security-token" | "x-amz-security-token"
            ) {
                value.set_sensitive(true);
            }
            request = request.header(name.as_str(), value);
        }
        request = match body {
            Body::Empty if method == reqwest::Method::GET || method == reqwest::Method::HEAD => {
                request
            }
            Body::Empty => request.header("content-length", "0"),
            Body::Bytes(bytes) => request.body(bytes),
            Body::File { path, offset, len } => request
                .header("content-length", len.to_string())
                .body(file_body(path, offset, len, Arc::clone(&inner.metrics)).await?),
        };
        let response = request
            .send()
            .await
            .map_err(|e| StoreError::transport(crate::net::transport_error_text(e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        if method == reqwest::Method::HEAD {
            return if status.is_success() {
                Ok(Answer {
                    headers,
                    body: Vec::new(),
                })
            } else {
                Err(classify(status.as_u16(), &headers, &[]))
            };
        }
        let body = crate::net::read_bounded(response, ANSWER_LIMIT)
            .await
            .map_err(|e| StoreError::transport(e.to_string()))?;
        if status.is_success() {
            Ok(Answer { headers, body })
        } else {
            Err(classify(status.as_u16(), &headers, &body))
        }
    }
}

/// Streams `len` bytes of `path` from `offset`; the file is read on blocking threads (tokio's
/// file I/O), and every byte read is counted in the upload metrics.
async fn file_body(
    path: PathBuf,
    offset: u64,
    len: u64,
    metrics: Arc<Metrics>,
) -> Result<reqwest::Body, StoreError> {
    let local = |e: std::io::Error| StoreError::local(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::open(&path).await.map_err(local)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(local)?;
    let counted = Counted {
        inner: file.take(len),
        metrics,
    };
    let stream = tokio_util::io::ReaderStream::with_capacity(counted, FILE_CHUNK);
    Ok(reqwest::Body::wrap_stream(stream))
}

/// A reader that adds what passes through it to `dmstrack_upload_bytes_total`.
struct Counted<R> {
    inner: R,
    metrics: Arc<Metrics>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.metrics.upload_bytes(read as u64);
        }
        polled
    }
}
