//! `CredentialError`: why no credentials could be had, and whether restarting could help.
//!
//! Every message names the provider or service and carries what a human needs to act (STS or
//! metadata `Code`, `RequestId`, HTTP status, the file path), never a secret, a token or a
//! request URL's query (reqwest errors are stripped of their URL before they get here).

use std::fmt::Write as _;
use std::path::PathBuf;

/// Why credentials could not be obtained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// A setting or environment variable is missing or invalid.
    #[error("{provider}: {reason}")]
    Setting {
        /// The provider that needed it (`static`, `env`, `oidc`, …).
        provider: &'static str,
        /// What is wrong, naming the key or variable.
        reason: String,
    },
    /// A local file could not be read.
    #[error("cannot read {}: {reason}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error's text.
        reason: String,
    },
    /// A local file is not in the expected format or lacks a needed key.
    #[error("{}: {reason}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a value from the file).
        reason: String,
    },
    /// A profile uses a mode or type this program does not implement.
    #[error("{}: profile \"{profile}\": mode {mode} is not supported (supported: {supported})", path.display())]
    UnsupportedMode {
        /// The profile file.
        path: PathBuf,
        /// The profile name.
        profile: String,
        /// The mode or type as written.
        mode: String,
        /// The modes that are supported in that file.
        supported: &'static str,
    },
    /// The named profile exists in none of the profile files.
    #[error("profile \"{profile}\" not found (looked in {searched})")]
    ProfileNotFound {
        /// The profile name.
        profile: String,
        /// Where it was looked for.
        searched: String,
    },
    /// The default chain found no configured source.
    #[error("no credentials found by the default chain ({tried})")]
    NoCredentials {
        /// Each step and why it was skipped.
        tried: String,
    },
    /// The request did not get an HTTP response (connect error, timeout, TLS, …).
    #[error("{service}: request to {endpoint} failed: {detail}")]
    Transport {
        /// `STS AssumeRole`, `ECS metadata`, …
        service: &'static str,
        /// Scheme, host and path of the endpoint (never a query).
        endpoint: String,
        /// Whether it was a connect error, a timeout or something else.
        kind: TransportKind,
        /// The error chain's text.
        detail: String,
    },
    /// The service answered with an error.
    #[error("{}", refusal_text(service, *status, code.as_deref(), request_id.as_deref(), message.as_deref()))]
    Refused {
        /// `STS AssumeRole`, `ECS metadata`, …
        service: &'static str,
        /// HTTP status.
        status: u16,
        /// The service's error `Code`.
        code: Option<String>,
        /// The `RequestId`, for a support ticket.
        request_id: Option<String>,
        /// The service's `Message` (with any secret we sent scrubbed out).
        message: Option<String>,
    },
    /// The service answered something that could not be understood.
    #[error("{service}: unexpected response (HTTP {status}): {reason}")]
    BadResponse {
        /// `STS AssumeRole`, `ECS metadata`, …
        service: &'static str,
        /// HTTP status.
        status: u16,
        /// What is wrong with it (never a value from the body).
        reason: String,
    },
    /// The IMDSv2 token request failed and IMDSv1 is forbidden by the environment.
    #[error(
        "ECS metadata: the IMDSv2 token request failed and ALIBABA_CLOUD_IMDSV1_DISABLED=true forbids falling back to IMDSv1: {error}"
    )]
    ImdsV2Required {
        /// Why the token request failed.
        error: Box<CredentialError>,
    },
    /// A step of the default chain was configured but failed.
    #[error("default chain, step {step}: {error}")]
    Chain {
        /// The step (`env`, `oidc`, `cli_profile`, `ini_profile`, `ecs_ram_role`, `uri`).
        step: &'static str,
        /// Its error.
        error: Box<CredentialError>,
    },
}

/// How a request failed to get a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection could be made.
    Connect,
    /// A connect or read timeout.
    Timeout,
    /// Anything else (TLS, a broken connection, a body error).
    Other,
}

impl CredentialError {
    /// True when restarting will not help (exit 78): missing or invalid settings, unreadable
    /// or malformed files, and definite refusals by STS or the metadata service. False for
    /// transient trouble (network, timeouts, throttling, 5xx) (exit 75).
    pub fn is_config(&self) -> bool {
        match self {
            Self::Setting { .. }
            | Self::ReadFile { .. }
            | Self::InvalidFile { .. }
            | Self::UnsupportedMode { .. }
            | Self::ProfileNotFound { .. }
            | Self::NoCredentials { .. } => true,
            Self::Transport { .. } | Self::BadResponse { .. } => false,
            Self::Refused { status, code, .. } => is_definite_refusal(*status, code.as_deref()),
            Self::ImdsV2Required { error } | Self::Chain { error, .. } => error.is_config(),
        }
    }

    /// True when the endpoint could not be reached at all (the default chain takes that as
    /// "not on ECS" for an implicit metadata step).
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            Self::Transport { kind, .. } => {
                matches!(kind, TransportKind::Connect | TransportKind::Timeout)
            }
            Self::ImdsV2Required { error } => error.is_unreachable(),
            _ => false,
        }
    }

    /// The service's error `Code`, when the failure came from one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => code.as_deref(),
            Self::ImdsV2Required { error } | Self::Chain { error, .. } => error.code(),
            _ => None,
        }
    }
}

/// A 4xx with a code that is not about load is the service saying no: retrying the same
/// request will get the same answer.
fn is_definite_refusal(status: u16, code: Option<&str>) -> bool {
    let transient_code = code.is_some_and(|c| {
        c.starts_with("Throttling") || c == "ServiceUnavailable" || c == "InternalError"
    });
    (400..500).contains(&status) && status != 408 && status != 429 && !transient_code
}

fn refusal_text(
    service: &str,
    status: u16,
    code: Option<&str>,
    request_id: Option<&str>,
    message: Option<&str>,
) -> String {
    let mut out = format!("{service} refused the request: HTTP {status}");
    if let Some(code) = code {
        let _ = write!(out, ", Code {code}");
    }
    if let Some(id) = request_id {
        let _ = write!(out, ", RequestId {id}");
    }
    if let Some(message) = message {
        let _ = write!(out, ": {message}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: Option<&str>) -> CredentialError {
        CredentialError::Refused {
            service: "STS AssumeRole",
            status,
            code: code.map(str::to_owned),
            request_id: Some("RID-1".to_owned()),
            message: Some("nope".to_owned()),
        }
    }

    #[test]
    fn refusals_are_config_errors_but_load_and_5xx_are_not() {
        assert!(refused(400, Some("SignatureDoesNotMatch")).is_config());
        assert!(refused(403, Some("NoPermission")).is_config());
        assert!(refused(404, None).is_config());
        assert!(!refused(400, Some("Throttling.User")).is_config());
        assert!(!refused(429, None).is_config());
        assert!(!refused(500, Some("InternalError")).is_config());
        assert!(!refused(503, Some("ServiceUnavailable")).is_config());
        let chained = CredentialError::Chain {
            step: "oidc",
            error: Box::new(refused(400, Some("AuthenticationFail.OIDCToken.Invalid"))),
        };
        assert!(chained.is_config());
        assert_eq!(chained.code(), Some("AuthenticationFail.OIDCToken.Invalid"));
    }

    #[test]
    fn refusal_text_names_code_and_request_id() {
        assert_eq!(
            refused(400, Some("SignatureDoesNotMatch")).to_string(),
            "STS AssumeRole refused the request: HTTP 400, Code SignatureDoesNotMatch, RequestId RID-1: nope"
        );
    }

    #[test]
    fn transport_errors_are_transient_and_unreachable_only_for_connect_or_timeout() {
        let err = |kind| CredentialError::Transport {
            service: "ECS metadata",
            endpoint: "http://127.0.0.1:1/".to_owned(),
            kind,
            detail: "x".to_owned(),
        };
        assert!(!err(TransportKind::Connect).is_config());
        assert!(err(TransportKind::Connect).is_unreachable());
        assert!(err(TransportKind::Timeout).is_unreachable());
        assert!(!err(TransportKind::Other).is_unreachable());
    }
}
