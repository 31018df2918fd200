//! HTTP plumbing shared by the remote providers (metadata service, STS, credentials URI):
//! client construction with the right timeouts and proxy rules, and turning responses into
//! [`Fetched`] credentials or a [`CredentialError`] that holds no secret.

use std::time::Duration;

use serde::Deserialize;

use super::Credentials;
use super::env::CredentialEnv;
use super::error::{CredentialError, TransportKind};
use crate::net::secret::Secret;

/// Credentials as a remote source returned them.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    /// The credentials (with `expiration` set when the source gave one).
    pub(crate) credentials: Credentials,
}

/// Which kind of endpoint a client talks to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClientKind {
    /// The ECS metadata service: link-local, answers in milliseconds or not at all, and must
    /// never go through a proxy (the SDKs use 1 s connect and read timeouts).
    Metadata,
    /// STS or a credentials URI: public endpoints, reached through the proxy the environment
    /// names, like every other Alibaba Cloud tool.
    Remote,
}

/// Builds a client. Proxies come from the [`CredentialEnv`] snapshot, not from the process
/// environment, so a test's snapshot fully decides where requests go.
pub(crate) fn client(
    kind: ClientKind,
    env: &CredentialEnv,
) -> Result<reqwest::Client, CredentialError> {
    // Credentials are fetched every few tens of minutes: an idle keep-alive connection would
    // only ever be reused after the server has dropped it.
    let builder = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        // A redirect would carry a signed query, an OIDC token or an STS token to another host.
        .redirect(reqwest::redirect::Policy::none());
    let builder = match kind {
        ClientKind::Metadata => builder
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3)),
        ClientKind::Remote => {
            let mut builder = builder
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(15));
            for proxy in env_proxies(env)? {
                builder = builder.proxy(proxy);
            }
            builder
        }
    };
    builder.build().map_err(|e| CredentialError::Setting {
        provider: "http",
        reason: format!(
            "cannot build the HTTP client: {}",
            error_chain(&e.without_url())
        ),
    })
}

/// `HTTPS_PROXY`, `HTTP_PROXY` and `ALL_PROXY` with `NO_PROXY`, as curl and reqwest read them.
fn env_proxies(env: &CredentialEnv) -> Result<Vec<reqwest::Proxy>, CredentialError> {
    let no_proxy = env
        .first_of(&["NO_PROXY", "no_proxy"])
        .and_then(reqwest::NoProxy::from_string);
    let mut proxies = Vec::new();
    type MakeProxy = fn(&str) -> reqwest::Result<reqwest::Proxy>;
    let specs: [(&[&str], MakeProxy); 3] = [
        (&["HTTPS_PROXY", "https_proxy"], |u| {
            reqwest::Proxy::https(u)
        }),
        (&["HTTP_PROXY", "http_proxy"], |u| reqwest::Proxy::http(u)),
        (&["ALL_PROXY", "all_proxy"], |u| reqwest::Proxy::all(u)),
    ];
    for (names, make) in specs {
        if let Some(url) = env.first_of(names) {
            // The proxy URL may carry a password: report only which variable is wrong.
            let proxy = make(url).map_err(|_| CredentialError::Setting {
                provider: "http",
                reason: format!("{} is not a valid proxy URL", names[0]),
            })?;
            proxies.push(proxy.no_proxy(no_proxy.clone()));
        }
    }
    Ok(proxies)
}

/// Scheme, host, port and path of a URL: what an error may show (a query can hold a token).
pub(crate) fn endpoint_text(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

/// The text of an error and all its sources, joined by `: `.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A request that got no response. The URL (whose query may hold a signature or an OIDC
/// token) is removed from the error first.
pub(crate) fn transport_error(
    service: &'static str,
    url: &reqwest::Url,
    err: reqwest::Error,
) -> CredentialError {
    let kind = if err.is_timeout() {
        TransportKind::Timeout
    } else if err.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    };
    CredentialError::Transport {
        service,
        endpoint: endpoint_text(url),
        kind,
        detail: error_chain(&err.without_url()),
    }
}

/// Sends a request and reads the whole (small) body. Nobody prints the body: it may hold
/// credentials.
pub(crate) async fn send(
    service: &'static str,
    url: &reqwest::Url,
    request: reqwest::RequestBuilder,
) -> Result<(u16, Vec<u8>), CredentialError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(service, url, e))?;
    let status = response.status().as_u16();
    if response.status().is_redirection() {
        return Err(CredentialError::BadResponse {
            service,
            status,
            reason: crate::net::redirect_refusal(status, response.headers()),
        });
    }
    let body = crate::net::read_bounded(response, crate::net::ERROR_BODY_LIMIT)
        .await
        .map_err(|e| CredentialError::BadResponse {
            service,
            status,
            reason: e.to_string(),
        })?;
    Ok((status, body))
}

/// The Alibaba Cloud error body: `{"RequestId","HostId","Code","Message"}`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Turns an error response into [`CredentialError::Refused`]. `sensitive` holds values we
/// sent that must not come back in a message (an OIDC token, a role session policy is fine).
pub(crate) fn refused(
    service: &'static str,
    status: u16,
    body: &[u8],
    sensitive: &[&str],
) -> CredentialError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (request_id, code, message) = match parsed {
        Some(b) => (b.request_id, b.code, b.message),
        None => (None, None, None),
    };
    let message = message.map(|m| scrub(&m, sensitive));
    CredentialError::Refused {
        service,
        status,
        code,
        request_id,
        message,
    }
}

/// Cuts an echoed string-to-sign (STS's `SignatureDoesNotMatch` carries one, with the STS
/// token in it), replaces every occurrence of a sensitive value, also in its percent-encoded
/// forms (a string-to-sign encodes values twice), and keeps messages to a sane length.
fn scrub(message: &str, sensitive: &[&str]) -> String {
    let lower = message.to_ascii_lowercase();
    let cut = ["server string to sign", "string to sign", "stringtosign"]
        .iter()
        .filter_map(|marker| lower.find(marker))
        .min()
        .unwrap_or(message.len());
    let mut out = message[..cut]
        .trim()
        .trim_end_matches([':', ','])
        .to_owned();
    for value in sensitive.iter().filter(|v| v.len() >= 4) {
        let once = crate::net::signer::percent_encode(value);
        let twice = crate::net::signer::percent_encode(&once);
        for form in [value.to_string(), once, twice] {
            out = out.replace(&form, crate::net::secret::MASK);
        }
    }
    if out.chars().count() > 300 {
        out = out.chars().take(300).collect::<String>() + "…";
    }
    out
}

/// The credential object every source returns (STS nests it under `Credentials`; the metadata
/// service and credentials URIs add `Code`). No `Debug`: plain strings until moved into
/// [`Secret`]s.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireCredentials {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    access_key_secret: Option<String>,
    #[serde(default)]
    security_token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

/// Which response shape to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `{"Code":"Success", AccessKeyId, …}` (metadata service, credentials URI).
    Flat,
    /// `{"RequestId", "Credentials": {…}}` (STS).
    Sts,
}

/// Parses a successful (2xx) response into credentials with an expiration.
pub(crate) fn parse_credentials(
    service: &'static str,
    status: u16,
    body: &[u8],
    shape: Shape,
) -> Result<Fetched, CredentialError> {
    let bad = |reason: &str| CredentialError::BadResponse {
        service,
        status,
        reason: reason.to_owned(),
    };
    let wire: WireCredentials = match shape {
        Shape::Flat => serde_json::from_slice(body)
            .map_err(|_| bad("the body is not the expected JSON object"))?,
        Shape::Sts => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct StsBody {
                credentials: Option<WireCredentials>,
            }
            let parsed: StsBody = serde_json::from_slice(body)
                .map_err(|_| bad("the body is not the expected JSON object"))?;
            parsed
                .credentials
                .ok_or_else(|| bad("the body has no Credentials object"))?
        }
    };
    if shape == Shape::Flat {
        match wire.code.as_deref() {
            Some("Success") => {}
            code => {
                return Err(CredentialError::Refused {
                    service,
                    status,
                    code: Some(code.unwrap_or("(none)").to_owned()),
                    request_id: None,
                    message: Some("the response's Code is not \"Success\"".to_owned()),
                });
            }
        }
    }
    let id = wire
        .access_key_id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad("AccessKeyId is missing"))?;
    let secret = wire
        .access_key_secret
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad("AccessKeySecret is missing"))?;
    let token = wire
        .security_token
        .filter(|v| !v.is_empty())
        .map(Secret::new);
    let expiration_text = wire
        .expiration
        .ok_or_else(|| bad("Expiration is missing"))?;
    let expiration: jiff::Timestamp = expiration_text.parse().map_err(|_| {
        bad(&format!(
            "Expiration {expiration_text:?} is not a UTC timestamp like 2024-01-02T03:04:05Z"
        ))
    })?;
    let mut credentials = Credentials::new(id, Secret::new(secret), token);
    credentials.expiration = Some(expiration);
    Ok(Fetched { credentials })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_and_sts_shapes() {
        let flat = br#"{"Code":"Success","AccessKeyId":"STS.a","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2030-01-02T03:04:05Z","LastUpdated":"x"}"#;
        let got = parse_credentials("ECS metadata", 200, flat, Shape::Flat)
            .unwrap()
            .credentials;
        assert_eq!(got.access_key_id, "STS.a");
        assert_eq!(got.access_key_secret.expose(), "s");
        assert_eq!(got.security_token.as_ref().map(Secret::expose), Some("t"));
        assert_eq!(
            got.expiration,
            Some("2030-01-02T03:04:05Z".parse().unwrap())
        );

        let sts = br#"{"RequestId":"r","Credentials":{"AccessKeyId":"STS.b","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2030-01-02T03:04:05Z"},"AssumedRoleUser":{}}"#;
        assert_eq!(
            parse_credentials("STS", 200, sts, Shape::Sts)
                .unwrap()
                .credentials
                .access_key_id,
            "STS.b"
        );
    }

    #[test]
    fn rejects_non_success_code_and_missing_fields_without_echoing_values() {
        let failed = br#"{"Code":"Failed","AccessKeyId":"a","AccessKeySecret":"very-secret","Expiration":"2030-01-02T03:04:05Z"}"#;
        let err = parse_credentials("ECS metadata", 200, failed, Shape::Flat).unwrap_err();
        assert_eq!(err.code(), Some("Failed"));
        let no_exp = br#"{"Code":"Success","AccessKeyId":"a","AccessKeySecret":"very-secret"}"#;
        let err = parse_credentials("ECS metadata", 200, no_exp, Shape::Flat)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Expiration is missing"), "{err}");
        assert!(!err.contains("very-secret"));
        let err = parse_credentials("STS", 200, b"<html>", Shape::Sts).unwrap_err();
        assert!(!err.is_config());
    }

    #[test]
    fn refused_reads_the_error_body_and_scrubs_sent_secrets() {
        let body = br#"{"RequestId":"RID","HostId":"sts.aliyuncs.com","Code":"AuthenticationFail.OIDCToken.Invalid","Message":"token eyJhbGciOi.payload is bad"}"#;
        let err = refused("STS AssumeRoleWithOIDC", 400, body, &["eyJhbGciOi.payload"]);
        let text = err.to_string();
        assert!(
            text.contains("Code AuthenticationFail.OIDCToken.Invalid"),
            "{text}"
        );
        assert!(text.contains("RequestId RID"), "{text}");
        assert!(!text.contains("eyJhbGciOi.payload"), "{text}");
        assert!(err.is_config());
        let err = refused("STS", 502, b"bad gateway", &[]);
        assert_eq!(err.to_string(), "STS refused the request: HTTP 502");
        assert!(!err.is_config());
    }

    #[test]
    fn endpoint_text_drops_query_and_userinfo() {
        let url: reqwest::Url = "http://user:pw@127.0.0.1:9/creds?token=abc"
            .parse()
            .unwrap();
        assert_eq!(endpoint_text(&url), "http://127.0.0.1:9/creds");
    }

    #[test]
    fn bad_proxy_variable_is_named_without_its_value() {
        let env = CredentialEnv::from_vars(
            [(
                "HTTPS_PROXY".to_owned(),
                "::not a url pw=hunter2".to_owned(),
            )],
            None,
        );
        let err = client(ClientKind::Remote, &env).unwrap_err().to_string();
        assert!(err.contains("HTTPS_PROXY"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
