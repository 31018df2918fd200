//! Why an exchange with the upload target failed, and what to do about it: retry (throttling,
//! 5xx, transport, a digest mismatch on the way), refresh an expired STS token, start a
//! multipart upload over (`NoSuchUpload`), or stop with a clear final error (refused
//! credentials or signature, access denied, a redirect, a missing bucket).

use base64::Engine as _;
use reqwest::header::HeaderMap;

/// What kind of failure it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Credentials, signature, permissions or clock refused: retrying will not help.
    Auth,
    /// The STS token expired: refresh and try again.
    TokenExpired,
    /// Throttled (503 SlowDown, 429): back off.
    Throttled,
    /// A server error: back off.
    Server,
    /// The connection failed or broke.
    Transport,
    /// The multipart upload is gone (aborted, completed, expired): start over.
    NoSuchUpload,
    /// No such object (a HEAD).
    NotFound,
    /// The bytes that arrived do not match the digest sent: send them again.
    BadDigest,
    /// A redirect, not followed.
    Redirect,
    /// Any other definite refusal (no such bucket, a bad request).
    Refused,
    /// A local problem (a file that cannot be read).
    Local,
    /// No credentials could be had; `true` when the settings are wrong.
    Credentials(bool),
    /// The answer does not confirm what was sent (a CRC-64 or ETag that does not match).
    Unconfirmed,
}

/// A failed exchange. Never holds a secret: only the service's `Code`, `Message` and request
/// id are kept of an error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// What kind.
    pub kind: StoreErrorKind,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The service's error code.
    pub code: String,
    /// Its message, or ours.
    pub message: String,
    /// `x-oss-request-id` / `x-amz-request-id`, for a support ticket.
    pub request_id: String,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(status) = self.status {
            write!(f, "HTTP {status} ")?;
        }
        if !self.code.is_empty() {
            write!(f, "{}", self.code)?;
        }
        if !self.message.is_empty() {
            if !self.code.is_empty() {
                f.write_str(": ")?;
            }
            f.write_str(&self.message)?;
        }
        if !self.request_id.is_empty() {
            write!(f, " (request id {})", self.request_id)?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    fn plain(kind: StoreErrorKind, message: String) -> Self {
        Self {
            kind,
            status: None,
            code: String::new(),
            message,
            request_id: String::new(),
        }
    }

    /// A transport failure.
    pub(crate) fn transport(message: String) -> Self {
        Self::plain(StoreErrorKind::Transport, message)
    }

    /// A local failure (reading the file to send).
    pub(crate) fn local(message: String) -> Self {
        Self::plain(StoreErrorKind::Local, message)
    }

    /// The credentials could not be had.
    pub(crate) fn credentials(message: String, config: bool) -> Self {
        Self::plain(
            StoreErrorKind::Credentials(config),
            format!("credentials: {message}"),
        )
    }

    /// An answer that does not confirm the upload.
    pub(crate) fn unconfirmed(message: String) -> Self {
        Self::plain(StoreErrorKind::Unconfirmed, message)
    }

    /// Worth another attempt of the same request (after a backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Throttled
                | StoreErrorKind::Server
                | StoreErrorKind::Transport
                | StoreErrorKind::BadDigest
                | StoreErrorKind::Credentials(false)
                | StoreErrorKind::Unconfirmed
                | StoreErrorKind::Local
        )
    }

    /// Final: the credentials, the signature or the target are refused. Not retried until
    /// an operator acts (`dmstrack retry`).
    pub fn is_final(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Auth
                | StoreErrorKind::Redirect
                | StoreErrorKind::Refused
                | StoreErrorKind::Credentials(true)
        )
    }
}

/// Classifies a non-2xx answer.
pub(crate) fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> StoreError {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if (300..400).contains(&status) {
        return StoreError {
            kind: StoreErrorKind::Redirect,
            status: Some(status),
            code: "Redirect".into(),
            message: crate::net::redirect_refusal(status, headers),
            request_id: String::new(),
        };
    }
    // HEAD answers have no body; OSS puts the error XML, base64-encoded, in `x-oss-err`.
    let decoded;
    let text = if body.is_empty() {
        decoded = header("x-oss-err")
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .unwrap_or_default();
        String::from_utf8_lossy(&decoded).into_owned()
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    let code = crate::net::xml_element(&text, "Code");
    let mut message = crate::net::xml_element(&text, "Message");
    if message.chars().count() > 300 {
        message = message.chars().take(300).collect::<String>() + "…";
    }
    let request_id = header("x-oss-request-id")
        .or_else(|| header("x-amz-request-id"))
        .map(str::to_owned)
        .unwrap_or_else(|| crate::net::xml_element(&text, "RequestId"));
    let kind = match code.as_str() {
        "SignatureDoesNotMatch"
        | "InvalidAccessKeyId"
        | "AccessDenied"
        | "RequestTimeTooSkewed"
        | "InvalidToken"
        | "AccountProblem"
        | "AllAccessDisabled"
        | "InvalidObjectState" => StoreErrorKind::Auth,
        "InvalidSecurityToken" | "SecurityTokenExpired" | "ExpiredToken" => {
            StoreErrorKind::TokenExpired
        }
        "NoSuchUpload" => StoreErrorKind::NoSuchUpload,
        "InvalidDigest" | "BadDigest" => StoreErrorKind::BadDigest,
        c if c == "SlowDown" || c.starts_with("Throttl") || c == "RequestLimitExceeded" => {
            StoreErrorKind::Throttled
        }
        _ if status == 429 || status == 503 => StoreErrorKind::Throttled,
        _ if status >= 500 => StoreErrorKind::Server,
        "NoSuchKey" => StoreErrorKind::NotFound,
        "" if status == 404 => StoreErrorKind::NotFound,
        "" if status == 401 || status == 403 => StoreErrorKind::Auth,
        _ => StoreErrorKind::Refused,
    };
    StoreError {
        kind,
        status: Some(status),
        code,
        message,
        request_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(code: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message>\
             <RequestId>r-1</RequestId><StringToSign>OSS4-HMAC-SHA256 secret-ish</StringToSign>\
             <CanonicalRequest>x-oss-security-token:TOKEN</CanonicalRequest></Error>"
        )
        .into_bytes()
    }

    #[test]
    fn answers_are_sorted_into_what_to_do() {
        let h = HeaderMap::new();
        for (status, code, kind) in [
            (403, "SignatureDoesNotMatch", StoreErrorKind::Auth),
            (403, "InvalidAccessKeyId", StoreErrorKind::Auth),
            (403, "AccessDenied", StoreErrorKind::Auth),
            (403, "SecurityTokenExpired", StoreErrorKind::TokenExpired),
            (403, "InvalidSecurityToken", StoreErrorKind::TokenExpired),
            (503, "SlowDown", StoreErrorKind::Throttled),
            (500, "InternalError", StoreErrorKind::Server),
            (404, "NoSuchUpload", StoreErrorKind::NoSuchUpload),
            (400, "InvalidDigest", StoreErrorKind::BadDigest),
            (400, "EntityTooSmall", StoreErrorKind::Refused),
            (404, "NoSuchBucket", StoreErrorKind::Refused),
        ] {
            let err = classify(status, &h, &xml(code));
            assert_eq!(err.kind, kind, "{code}");
            let shown = err.to_string();
            assert!(
                !shown.contains("TOKEN") && !shown.contains("secret-ish"),
                "{shown}"
            );
        }
        assert!(classify(403, &h, &xml("AccessDenied")).is_final());
        assert!(classify(503, &h, &xml("SlowDown")).is_retryable());
    }

    #[test]
    fn head_errors_are_read_from_x_oss_err() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-oss-err",
            base64::engine::general_purpose::STANDARD
                .encode(xml("AccessDenied"))
                .parse()
                .unwrap(),
        );
        h.insert("x-oss-request-id", "abc".parse().unwrap());
        let err = classify(403, &h, &[]);
        assert_eq!(
            (err.kind, err.code.as_str(), err.request_id.as_str()),
            (StoreErrorKind::Auth, "AccessDenied", "abc")
        );
        assert_eq!(
            classify(404, &HeaderMap::new(), &[]).kind,
            StoreErrorKind::NotFound
        );
    }
}
