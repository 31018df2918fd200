//! STS: `AssumeRole` (V1-signed with source credentials) and `AssumeRoleWithOIDC` (RRSA,
//! unsigned, with a projected service-account token that is re-read at every refresh).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Credentials;
use super::cache::Refresher;
use super::error::CredentialError;
use super::http::{self, Fetched, Shape};
use crate::net::signer::{
    canonical_query, format_timestamp, percent_encode, v1_signature, v1_string_to_sign,
};

/// STS API version.
const VERSION: &str = "2015-04-01";
/// Service names errors carry.
const ASSUME_ROLE: &str = "STS AssumeRole";
const ASSUME_ROLE_WITH_OIDC: &str = "STS AssumeRoleWithOIDC";

/// The STS endpoint: `sts_endpoint` as given, else `sts[-vpc].<region>.aliyuncs.com` when a
/// region is known, else the central `sts.aliyuncs.com`.
pub(crate) fn endpoint(
    configured: Option<&reqwest::Url>,
    region: Option<&str>,
    vpc: bool,
) -> Result<reqwest::Url, CredentialError> {
    if let Some(url) = configured {
        return Ok(url.clone());
    }
    let host = match region {
        Some(region) => {
            // The region becomes part of a host name: accept only what region ids look like.
            if region.is_empty()
                || !region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(CredentialError::Setting {
                    provider: "sts",
                    reason: format!("sts_region {region:?} is not a region id like cn-hangzhou"),
                });
            }
            format!("sts{}.{region}.aliyuncs.com", if vpc { "-vpc" } else { "" })
        }
        None => "sts.aliyuncs.com".to_owned(),
    };
    reqwest::Url::parse(&format!("https://{host}/")).map_err(|e| CredentialError::Setting {
        provider: "sts",
        reason: format!("cannot build the STS endpoint: {e}"),
    })
}

/// What both STS calls share.
#[derive(Debug, Clone)]
pub(crate) struct RoleRequest {
    /// STS endpoint root.
    pub(crate) endpoint: reqwest::Url,
    /// The role to assume.
    pub(crate) role_arn: String,
    /// `RoleSessionName`.
    pub(crate) session_name: String,
    /// `DurationSeconds`.
    pub(crate) duration: Duration,
    /// Optional session policy (JSON).
    pub(crate) policy: Option<String>,
}

impl RoleRequest {
    fn common_params(&self, action: &str, timestamp: jiff::Timestamp) -> Vec<(String, String)> {
        let mut params = vec![
            ("Action".to_owned(), action.to_owned()),
            ("Format".to_owned(), "JSON".to_owned()),
            ("Version".to_owned(), VERSION.to_owned()),
            ("Timestamp".to_owned(), format_timestamp(timestamp)),
            (
                "DurationSeconds".to_owned(),
                self.duration.as_secs().to_string(),
            ),
            ("RoleArn".to_owned(), self.role_arn.clone()),
            ("RoleSessionName".to_owned(), self.session_name.clone()),
        ];
        if let Some(policy) = &self.policy {
            params.push(("Policy".to_owned(), policy.clone()));
        }
        params
    }
}

/// Reads the response of an STS call.
fn read_response(
    service: &'static str,
    status: u16,
    body: &[u8],
    sensitive: &[&str],
) -> Result<Fetched, CredentialError> {
    if (200..300).contains(&status) {
        http::parse_credentials(service, status, body, Shape::Sts)
    } else {
        Err(http::refused(service, status, body, sensitive))
    }
}

/// `AssumeRole`, signed (V1, GET) with the source credentials.
#[derive(Debug)]
pub(crate) struct AssumeRoleFetcher {
    pub(crate) client: reqwest::Client,
    pub(crate) request: RoleRequest,
    /// `ExternalId`, when the role's trust policy wants one.
    pub(crate) external_id: Option<String>,
    /// Where the signing credentials come from (possibly temporary themselves).
    pub(crate) source: Arc<Refresher>,
}

impl AssumeRoleFetcher {
    /// One `AssumeRole` call.
    pub(crate) async fn fetch(&self) -> Result<Fetched, CredentialError> {
        let source = self.source.get().await?;
        let query = assume_role_query(
            &self.request,
            self.external_id.as_deref(),
            &source,
            jiff::Timestamp::now(),
            &uuid::Uuid::new_v4().simple().to_string(),
        );
        let mut url = self.request.endpoint.clone();
        url.set_query(Some(&query));
        let (status, body) = http::send(ASSUME_ROLE, &url, self.client.get(url.clone())).await?;
        // STS may echo what it was sent (the string to sign holds the source's STS token):
        // the source's secrets never reach an error message.
        let mut sensitive = vec![source.access_key_secret.expose()];
        if let Some(token) = &source.security_token {
            sensitive.push(token.expose());
        }
        read_response(ASSUME_ROLE, status, &body, &sensitive)
    }
}

/// The query string of one `AssumeRole` call, V1-signed for GET with `source`. Pure (the
/// caller passes the timestamp and a fresh nonce) so golden tests can rebuild SDK requests.
pub(crate) fn assume_role_query(
    request: &RoleRequest,
    external_id: Option<&str>,
    source: &Credentials,
    timestamp: jiff::Timestamp,
    nonce: &str,
) -> String {
    let mut params = request.common_params("AssumeRole", timestamp);
    params.extend([
        ("SignatureMethod".to_owned(), "HMAC-SHA1".to_owned()),
        ("SignatureVersion".to_owned(), "1.0".to_owned()),
        ("SignatureNonce".to_owned(), nonce.to_owned()),
        ("AccessKeyId".to_owned(), source.access_key_id.clone()),
    ]);
    if let Some(token) = &source.security_token {
        params.push(("SecurityToken".to_owned(), token.expose().to_owned()));
    }
    if let Some(external_id) = external_id {
        params.push(("ExternalId".to_owned(), external_id.to_owned()));
    }
    let signature = v1_signature(
        source.access_key_secret.expose(),
        &v1_string_to_sign("GET", &params),
    );
    format!(
        "{}&Signature={}",
        canonical_query(&params),
        percent_encode(&signature)
    )
}

/// `AssumeRoleWithOIDC` (RRSA). Sent as a POST with the parameters in a form body, so the
/// token stays out of URLs (and proxy logs).
#[derive(Debug)]
pub(crate) struct OidcFetcher {
    pub(crate) client: reqwest::Client,
    pub(crate) request: RoleRequest,
    /// `OIDCProviderArn`.
    pub(crate) provider_arn: String,
    /// The projected token; the kubelet rotates it, so it is read anew for every call.
    pub(crate) token_file: PathBuf,
}

impl OidcFetcher {
    /// Reads the token file (trimmed); an empty file is an error.
    pub(crate) fn read_token(path: &std::path::Path) -> Result<String, CredentialError> {
        let token = std::fs::read_to_string(path).map_err(|e| CredentialError::ReadFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(CredentialError::InvalidFile {
                path: path.to_owned(),
                reason: "the OIDC token file is empty".to_owned(),
            });
        }
        Ok(token.to_owned())
    }

    /// One `AssumeRoleWithOIDC` call.
    pub(crate) async fn fetch(&self) -> Result<Fetched, CredentialError> {
        let token = Self::read_token(&self.token_file)?;
        let (query, form) = oidc_query_and_form(
            &self.request,
            &self.provider_arn,
            &token,
            jiff::Timestamp::now(),
        );
        let mut url = self.request.endpoint.clone();
        url.set_query(Some(&query));
        let request = self
            .client
            .post(url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form);
        let (status, body) = http::send(ASSUME_ROLE_WITH_OIDC, &url, request).await?;
        read_response(ASSUME_ROLE_WITH_OIDC, status, &body, &[&token])
    }
}

/// The query string and the form body of one `AssumeRoleWithOIDC` call. Pure (the caller
/// passes the timestamp) so golden tests can rebuild SDK requests.
pub(crate) fn oidc_query_and_form(
    request: &RoleRequest,
    provider_arn: &str,
    token: &str,
    timestamp: jiff::Timestamp,
) -> (String, String) {
    let mut query = Vec::new();
    let mut form = Vec::new();
    for (name, value) in request.common_params("AssumeRoleWithOIDC", timestamp) {
        match name.as_str() {
            "Action" | "Format" | "Version" | "Timestamp" => query.push((name, value)),
            _ => form.push((name, value)),
        }
    }
    form.push(("OIDCProviderArn".to_owned(), provider_arn.to_owned()));
    form.push(("OIDCToken".to_owned(), token.to_owned()));
    (canonical_query(&query), canonical_query(&form))
}

/// The request builders above and the STS fake against golden requests of the official SDKs.
#[cfg(test)]
#[path = "sts_golden_tests.rs"]
mod golden_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_from_config_region_or_central() {
        let configured: reqwest::Url = "http://127.0.0.1:9/".parse().unwrap();
        assert_eq!(
            endpoint(Some(&configured), Some("cn-hangzhou"), true).unwrap(),
            configured
        );
        assert_eq!(
            endpoint(None, Some("cn-shanghai"), false).unwrap().as_str(),
            "https://sts.cn-shanghai.aliyuncs.com/"
        );
        assert_eq!(
            endpoint(None, Some("cn-shanghai"), true).unwrap().as_str(),
            "https://sts-vpc.cn-shanghai.aliyuncs.com/"
        );
        assert_eq!(
            endpoint(None, None, true).unwrap().as_str(),
            "https://sts.aliyuncs.com/"
        );
        assert!(
            endpoint(None, Some("evil.com/x"), false)
                .unwrap_err()
                .is_config()
        );
    }
}
