//! The DMS API client: signs every attempt anew, holds the process-wide rate limit, retries
//! what is worth retrying and stops at once on what is not.
//!
//! Requests are sent like the official SDK: POST `/`, every parameter in the query string,
//! empty body. One table decides what is retried ([`classify`]): throttling (`Throttling*`
//! codes, HTTP 429 and 503, `x-acs-retry-after`), other 5xx, malformed answers and transport
//! errors are retried with jittered exponential backoff up to `dms.max_attempts`; auth and
//! signature errors fail at once with the gateway's `Code`, `Message` and `RequestId`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, HeaderMap, USER_AGENT};
use tracing::{debug, info};

mod classify;

use self::classify::{API_BODY_LIMIT, Verdict, classify, redact};
use super::types::*;
use crate::config::{DmsSettings, ExportSpec};
use crate::credentials::{CredentialError, CredentialProvider, Credentials};
use crate::net::ratelimit::RateLimiter;
use crate::net::retry::Backoff;
use crate::net::signer::{self, RpcRequest, SignatureVersion};
use crate::telemetry::metrics::Telemetry;

/// Backoff between attempts of one call when the server gives no hint: 0.5 s, 1 s, 2 s, …
/// capped at 10 s, ±20 %. Short on purpose: the ticket's own poll schedule is the long loop.
const CALL_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(10),
    multiplier: 2.0,
    jitter: 0.2,
};

/// The source of request timestamps; tests inject a skewed clock.
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// An error answer from the gateway or from DMS itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// HTTP status.
    pub http_status: u16,
    /// `Code` (gateway) or `ErrorCode` (DMS).
    pub code: String,
    /// `Message` or `ErrorMessage`, with any echoed string-to-sign removed.
    pub message: String,
    /// `RequestId`.
    pub request_id: String,
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = if self.code.is_empty() {
            "(no code)"
        } else {
            &self.code
        };
        write!(f, "{code}")?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        write!(f, " (HTTP {}", self.http_status)?;
        if !self.request_id.is_empty() {
            write!(f, ", RequestId {}", self.request_id)?;
        }
        write!(f, ")")
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum DmsError {
    /// Credentials or signature refused: restarting will not help.
    #[error("{action} was refused: {detail}")]
    Auth {
        /// The action.
        action: &'static str,
        /// The gateway's answer.
        detail: GatewayError,
    },
    /// Retryable failures until the attempts ran out.
    #[error("{action}: the API could not be reached ({attempts} attempt(s)); last error: {last}")]
    Unavailable {
        /// The action.
        action: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A definite refusal that is not about credentials (bad parameter, `Success=false`, …).
    #[error("{action} failed: {detail}")]
    Api {
        /// The action.
        action: &'static str,
        /// The answer.
        detail: GatewayError,
    },
    /// A success answer that makes no sense (no key, an unusable URL).
    #[error("{action}: unexpected answer: {message}")]
    Invalid {
        /// The action.
        action: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Credentials could not be resolved.
    #[error("{action}: credentials: {source}")]
    Credentials {
        /// The action.
        action: &'static str,
        /// Why.
        #[source]
        source: CredentialError,
    },
}

impl DmsError {
    /// The process exit code this error calls for (docs/reference/commands.md): 78 when the
    /// configuration or the credentials are wrong, 75 when the API could not be reached, 1
    /// otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Auth { .. } => 78,
            Self::Credentials { source, .. } if source.is_config() => 78,
            Self::Credentials { .. } | Self::Unavailable { .. } => 75,
            Self::Api { .. } | Self::Invalid { .. } => 1,
        }
    }

    /// True when the credentials or signature were refused.
    pub fn is_auth(&self) -> bool {
        self.exit_code() == 78
    }
}

/// A DMS API client. Cheap to clone; clones share the connection pool and the rate limit.
#[derive(Clone)]
pub struct DmsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    root: reqwest::Url,
    host: String,
    signature: SignatureVersion,
    credentials: CredentialProvider,
    limiter: Arc<RateLimiter>,
    max_attempts: u32,
    request_timeout: Duration,
    clock: Clock,
    rng: Mutex<fastrand::Rng>,
    telemetry: Telemetry,
}

impl std::fmt::Debug for DmsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmsClient")
            .field("endpoint", &self.inner.root.as_str())
            .field("signature", &self.inner.signature)
            .field("credentials", &self.inner.credentials.describe())
            .finish_non_exhaustive()
    }
}

impl DmsClient {
    /// Builds a client. `limiter` is the process-wide one, shared with every other client.
    pub fn new(
        settings: &DmsSettings,
        credentials: CredentialProvider,
        limiter: Arc<RateLimiter>,
        telemetry: Telemetry,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .user_agent(crate::net::USER_AGENT)
            // A redirect would carry the signed query (and the STS token) to another host,
            // and trust whatever that host answers.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut root = settings.endpoint.clone();
        root.set_path("/");
        let host = match root.port() {
            Some(port) => format!("{}:{port}", root.host_str().unwrap_or_default()),
            None => root.host_str().unwrap_or_default().to_owned(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                root,
                host,
                signature: settings.signature,
                credentials,
                limiter,
                max_attempts: settings.max_attempts.max(1),
                request_timeout: settings.request_timeout,
                clock: Arc::new(jiff::Timestamp::now),
                rng: Mutex::new(fastrand::Rng::new()),
                telemetry,
            }),
        })
    }

    /// Replaces the clock used for request timestamps (tests).
    pub fn with_clock(self, clock: Clock) -> Self {
        let mut inner =
            Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("with_clock before cloning"));
        inner.clock = clock;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The credential provider in use.
    pub fn credentials(&self) -> &CredentialProvider {
        &self.inner.credentials
    }

    /// `QueryDataTrackResultDownloadStatus`.
    pub async fn query_status(
        &self,
        order_id: i64,
        download_key_id: &str,
        tid: Option<i64>,
    ) -> Result<ExportStatus, DmsError> {
        let params = query_status_params(order_id, download_key_id, tid);
        let body = self.call(ACTION_QUERY_STATUS, &params).await?;
        let envelope: Envelope = serde_json::from_value(body.clone()).expect("checked by classify");
        let parsed: QueryStatusBody =
            serde_json::from_value(body.clone()).map_err(|e| DmsError::Invalid {
                action: ACTION_QUERY_STATUS,
                message: format!("StatusResult is malformed: {e}"),
            })?;
        let raw = parsed.status_result.ok_or_else(|| DmsError::Invalid {
            action: ACTION_QUERY_STATUS,
            message: "the answer has no StatusResult".into(),
        })?;
        let status = ExportStatus::from_raw(envelope.request_id, raw, body).map_err(|e| {
            DmsError::Invalid {
                action: ACTION_QUERY_STATUS,
                message: e.to_string(),
            }
        })?;
        if status.status == DownloadStatus::Success && status.url.is_none() {
            return Err(DmsError::Invalid {
                action: ACTION_QUERY_STATUS,
                message: "DOWNLOAD_SUCCESS without a DownloadUrl".into(),
            });
        }
        Ok(status)
    }

    /// `DownloadDataTrackResult`: starts an export and returns its `DownloadKeyId`.
    pub async fn start_export(
        &self,
        order_id: i64,
        tid: Option<i64>,
        spec: &ExportSpec,
    ) -> Result<String, DmsError> {
        let params = export_params(order_id, tid, spec);
        let body = self.call(ACTION_EXPORT, &params).await?;
        let parsed: ExportBody = serde_json::from_value(body).map_err(|e| DmsError::Invalid {
            action: ACTION_EXPORT,
            message: format!("malformed answer: {e}"),
        })?;
        match parsed.download_key_id.map(|k| k.trim().to_owned()) {
            Some(key) if !key.is_empty() => Ok(key),
            _ => Err(DmsError::Invalid {
                action: ACTION_EXPORT,
                message: "the answer has no DownloadKeyId".into(),
            }),
        }
    }

    /// One action with retries; returns the successful answer's JSON.
    async fn call(
        &self,
        action: &'static str,
        params: &[(String, String)],
    ) -> Result<serde_json::Value, DmsError> {
        let inner = &*self.inner;
        let mut refreshed_credentials = false;
        let mut last_failure = String::new();
        let mut attempt = 0;
        while attempt < inner.max_attempts {
            attempt += 1;
            inner.limiter.acquire().await;
            let credentials = inner
                .credentials
                .get()
                .await
                .map_err(|source| DmsError::Credentials { action, source })?;
            inner.telemetry.health.credentials_resolved();
            let started = tokio::time::Instant::now();
            let verdict = match self.send_once(action, params, &credentials).await {
                Ok((status, headers, body)) => classify(status, &headers, &body, SystemTime::now()),
                Err(reason) => Verdict::Retry {
                    kind: "transport_error",
                    reason,
                    hint: None,
                },
            };
            let outcome = match &verdict {
                Verdict::Done(_) => "success",
                Verdict::Retry { kind, .. } => kind,
                Verdict::RefreshCredentials(_) => "token_expired",
                Verdict::Auth(_) => "auth_error",
                Verdict::Refused(_) => "rejected",
            };
            inner
                .telemetry
                .metrics
                .api_request(action, outcome, started.elapsed().as_secs_f64());
            match verdict {
                Verdict::Done(body) => {
                    inner.telemetry.health.api_answered();
                    debug!(action, attempt, "DMS call succeeded");
                    return Ok(body);
                }
                Verdict::Auth(mut detail) => {
                    detail.message = redact(detail.message, &credentials);
                    return Err(DmsError::Auth { action, detail });
                }
                Verdict::Refused(mut detail) => {
                    detail.message = redact(detail.message, &credentials);
                    return Err(DmsError::Api { action, detail });
                }
                Verdict::RefreshCredentials(mut detail) => {
                    detail.message = redact(detail.message, &credentials);
                    if refreshed_credentials {
                        return Err(DmsError::Auth { action, detail });
                    }
                    info!(action, code = %detail.code, "security token expired; refreshing credentials and retrying");
                    refreshed_credentials = true;
                    inner.credentials.invalidate();
                    // The refresh is not the API's fault: it does not use up an attempt.
                    attempt -= 1;
                }
                Verdict::Retry { reason, hint, .. } => {
                    last_failure = redact(reason, &credentials);
                    if attempt >= inner.max_attempts {
                        break;
                    }
                    let delay = hint.unwrap_or_else(|| {
                        let mut rng = inner.rng.lock().expect("rng lock poisoned");
                        CALL_BACKOFF.delay(attempt - 1, &mut rng)
                    });
                    info!(
                        action,
                        attempt,
                        max_attempts = inner.max_attempts,
                        delay_ms = delay.as_millis() as u64,
                        reason = %last_failure,
                        "DMS call failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
        Err(DmsError::Unavailable {
            action,
            attempts: attempt,
            last: last_failure,
        })
    }

    /// Signs (fresh nonce and timestamp) and sends one attempt; returns the raw answer.
    async fn send_once(
        &self,
        action: &'static str,
        params: &[(String, String)],
        credentials: &Credentials,
    ) -> Result<(u16, HeaderMap, Vec<u8>), String> {
        let inner = &*self.inner;
        let request = RpcRequest {
            method: "POST",
            host: &inner.host,
            action,
            version: API_VERSION,
            params,
        };
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let signed = signer::sign(
            inner.signature,
            &request,
            credentials,
            (inner.clock)(),
            &nonce,
        );
        let mut url = inner.root.clone();
        url.set_query(Some(&signed.query));
        let mut builder = inner
            .http
            .post(url)
            .timeout(inner.request_timeout)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, crate::net::USER_AGENT);
        for (name, value) in &signed.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder
            .send()
            .await
            .map_err(crate::net::transport_error_text)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = crate::net::read_bounded(response, API_BODY_LIMIT)
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, headers, body))
    }
}

#[cfg(test)]
mod tests;
