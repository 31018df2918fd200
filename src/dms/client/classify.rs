//! The retry table: one HTTP answer of the gateway classified as done, retry (with the
//! server's hint), refresh the credentials, or a definite refusal; and the scrubbing of what a
//! gateway echoes back. Pure functions, tested on their own.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap};

use super::GatewayError;
use crate::credentials::Credentials;
use crate::dms::types::Envelope;
use crate::net::retry::retry_after;

/// What one attempt's answer means.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// A successful answer: the parsed body.
    Done(serde_json::Value),
    /// Worth another attempt, after the server's hint if it gave one. `kind` is the metrics
    /// outcome label (`throttled`, `server_error`, `malformed`, `transport_error`, …).
    Retry {
        kind: &'static str,
        reason: String,
        hint: Option<Duration>,
    },
    /// The STS token expired: refresh the credentials once and retry.
    RefreshCredentials(GatewayError),
    /// Credentials or signature refused.
    Auth(GatewayError),
    /// Any other definite refusal.
    Refused(GatewayError),
}

/// Most bytes of one API answer read: answers are a few KiB.
pub(super) const API_BODY_LIMIT: usize = 1 << 20;

/// The retry table, as a pure function of one HTTP answer.
pub(crate) fn classify(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Verdict {
    let hint = retry_after(headers, now);
    if (300..400).contains(&status) {
        return Verdict::Refused(GatewayError {
            http_status: status,
            code: "Redirect".into(),
            message: crate::net::redirect_refusal(status, headers),
            request_id: String::new(),
        });
    }
    if (200..300).contains(&status) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Verdict::Retry {
                kind: "malformed",
                reason: format!("malformed JSON answer (HTTP {status})"),
                hint,
            };
        };
        let Ok(envelope) = serde_json::from_value::<Envelope>(value.clone()) else {
            return Verdict::Retry {
                kind: "malformed",
                reason: format!("unexpected answer shape (HTTP {status})"),
                hint,
            };
        };
        if envelope.success == Some(true) {
            return Verdict::Done(value);
        }
        let error = GatewayError {
            http_status: status,
            code: envelope.error_code.unwrap_or_default(),
            message: sanitize_message(
                envelope
                    .error_message
                    .as_deref()
                    .unwrap_or("Success is not true"),
            ),
            request_id: envelope.request_id,
        };
        return verdict_for_code(error, hint);
    }
    let error = parse_gateway_error(status, headers, body);
    if status == 429 || status == 503 {
        return Verdict::Retry {
            kind: "throttled",
            reason: error.to_string(),
            hint,
        };
    }
    match verdict_for_code(error, hint) {
        Verdict::Refused(error) if status >= 500 => Verdict::Retry {
            kind: "server_error",
            reason: error.to_string(),
            hint,
        },
        other => other,
    }
}

fn verdict_for_code(error: GatewayError, hint: Option<Duration>) -> Verdict {
    let code = error.code.as_str();
    if code.starts_with("Throttling") {
        return Verdict::Retry {
            kind: "throttled",
            reason: error.to_string(),
            hint,
        };
    }
    if code == "ServiceUnavailable" || code == "InternalError" {
        return Verdict::Retry {
            kind: "server_error",
            reason: error.to_string(),
            hint,
        };
    }
    // A reused nonce means another request beat us to it (or a proxy replayed one); a fresh
    // nonce on the next attempt fixes it.
    if code == "SignatureNonceUsed" {
        return Verdict::Retry {
            kind: "nonce_reused",
            reason: error.to_string(),
            hint,
        };
    }
    if code == "InvalidSecurityToken.Expired" {
        return Verdict::RefreshCredentials(error);
    }
    let auth_prefixes = [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "Forbidden",
        "NoPermission",
        "InvalidTimeStamp",
        "InvalidSecurityToken",
        "MissingSecurityToken",
        "InvalidAccessKeySecret",
    ];
    if auth_prefixes.iter().any(|p| code.starts_with(p)) || error.http_status == 401 {
        return Verdict::Auth(error);
    }
    Verdict::Refused(error)
}

/// Reads a gateway error body: JSON `{RequestId, HostId, Code, Message}`, or the XML form when
/// the gateway says so in its content type.
fn parse_gateway_error(status: u16, headers: &HeaderMap, body: &[u8]) -> GatewayError {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Body {
        #[serde(default)]
        request_id: String,
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let is_xml = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("xml"));
    let parsed = if is_xml {
        let text = String::from_utf8_lossy(body);
        let tag = |name: &str| crate::net::xml_element(&text, name);
        Some(Body {
            request_id: tag("RequestId"),
            code: tag("Code"),
            message: tag("Message"),
        })
    } else {
        serde_json::from_slice::<Body>(body).ok()
    };
    match parsed {
        Some(b) => GatewayError {
            http_status: status,
            code: b.code,
            message: sanitize_message(&b.message),
            request_id: b.request_id,
        },
        None => GatewayError {
            http_status: status,
            code: String::new(),
            message: format!("HTTP {status} with an unreadable body"),
            request_id: String::new(),
        },
    }
}

/// Gateways append the server's string-to-sign to `SignatureDoesNotMatch` messages; for V1 it
/// holds every parameter, the STS token included. Keep only the human part, briefly.
pub(super) fn sanitize_message(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    let cut = ["server string to sign", "string to sign", "stringtosign"]
        .iter()
        .filter_map(|marker| lower.find(marker))
        .min()
        .unwrap_or(message.len());
    let mut text = message[..cut]
        .trim()
        .trim_end_matches([':', ','])
        .trim()
        .to_owned();
    if text.chars().count() > 300 {
        text = text.chars().take(300).collect::<String>() + "…";
    }
    text
}

/// Replaces any occurrence of the credentials' secret parts in `text` (defence in depth: an
/// error message must never carry them, whatever a server echoes).
pub(super) fn redact(text: String, credentials: &Credentials) -> String {
    let mut text = text;
    let secrets = [
        Some(&credentials.access_key_secret),
        credentials.security_token.as_ref(),
    ];
    for secret in secrets.into_iter().flatten() {
        if !secret.is_empty() {
            text = text.replace(secret.expose(), crate::net::secret::MASK);
        }
    }
    text
}
