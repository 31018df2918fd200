//! The ECS instance metadata service (IMDS): the RAM role's temporary credentials, fetched
//! with an IMDSv2 session token when the service hands one out, else (unless forbidden) the
//! IMDSv1 way without it.

use std::sync::Mutex;

use super::error::CredentialError;
use super::http::{self, Fetched, Shape};
use crate::net::secret::Secret;

/// The service name errors carry.
const SERVICE: &str = "ECS metadata";
/// The same, for the IMDSv2 token request.
const TOKEN_SERVICE: &str = "ECS metadata (IMDSv2 token)";
/// Where the RAM role's name and credentials live.
const CREDENTIALS_PATH: &str = "latest/meta-data/ram/security-credentials/";
/// Requested token lifetime, in seconds (the SDKs ask for the maximum, six hours).
const TOKEN_TTL_SECONDS: &str = "21600";

/// Fetches the RAM role's credentials from the metadata service.
#[derive(Debug)]
pub(crate) struct ImdsFetcher {
    client: reqwest::Client,
    base: reqwest::Url,
    role_name: Option<String>,
    v1_disabled: bool,
    /// The role name the service named last, for `describe()`.
    discovered: Mutex<Option<String>>,
}

impl ImdsFetcher {
    /// `base` is the service root (`http://100.100.100.200`); `role_name` skips discovery.
    pub(crate) fn new(
        client: reqwest::Client,
        base: reqwest::Url,
        role_name: Option<String>,
        v1_disabled: bool,
    ) -> Self {
        Self {
            client,
            base,
            role_name,
            v1_disabled,
            discovered: Mutex::new(None),
        }
    }

    /// `ecs_ram_role (role "…")`.
    pub(crate) fn describe(&self) -> String {
        if let Some(role) = &self.role_name {
            return format!("ecs_ram_role (role \"{role}\")");
        }
        match self
            .discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
        {
            Some(role) => format!("ecs_ram_role (role \"{role}\", from the metadata service)"),
            None => "ecs_ram_role (role from the metadata service)".to_owned(),
        }
    }

    fn url(&self, path: &str) -> reqwest::Url {
        // `join` keeps a base path only when it ends with `/`.
        let mut base = self.base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.join(path).unwrap_or(base)
    }

    fn with_token(
        request: reqwest::RequestBuilder,
        token: Option<&Secret>,
    ) -> reqwest::RequestBuilder {
        match token.and_then(|t| reqwest::header::HeaderValue::from_str(t.expose()).ok()) {
            Some(mut value) => {
                value.set_sensitive(true);
                request.header("X-aliyun-ecs-metadata-token", value)
            }
            None => request,
        }
    }

    /// One fetch: token (or v1 fallback), role name, credentials.
    pub(crate) async fn fetch(&self) -> Result<Fetched, CredentialError> {
        let token = match self.token().await {
            Ok(token) => Some(token),
            Err(error) if self.v1_disabled => {
                return Err(CredentialError::ImdsV2Required {
                    error: Box::new(error),
                });
            }
            Err(error) => {
                tracing::debug!(%error, "IMDSv2 token request failed; falling back to IMDSv1");
                None
            }
        };
        let role = match &self.role_name {
            Some(role) => role.clone(),
            None => self.discover_role(token.as_ref()).await?,
        };
        let mut url = self.url(CREDENTIALS_PATH);
        url.path_segments_mut()
            .map_err(|()| CredentialError::Setting {
                provider: "ecs_ram_role",
                reason: "metadata_endpoint cannot carry a path".to_owned(),
            })?
            .pop_if_empty()
            .push(&role);
        let (status, body) = http::send(
            SERVICE,
            &url,
            Self::with_token(self.client.get(url.clone()), token.as_ref()),
        )
        .await?;
        if !(200..300).contains(&status) {
            return Err(http::refused(SERVICE, status, &body, &[]));
        }
        http::parse_credentials(SERVICE, status, &body, Shape::Flat)
    }

    async fn token(&self) -> Result<Secret, CredentialError> {
        let url = self.url("latest/api/token");
        let request = self
            .client
            .put(url.clone())
            .header("X-aliyun-ecs-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS);
        let (status, body) = http::send(TOKEN_SERVICE, &url, request).await?;
        if !(200..300).contains(&status) {
            return Err(http::refused(TOKEN_SERVICE, status, &body, &[]));
        }
        let token = String::from_utf8(body)
            .unwrap_or_default()
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(CredentialError::BadResponse {
                service: TOKEN_SERVICE,
                status,
                reason: "the token is empty".to_owned(),
            });
        }
        Ok(Secret::new(token))
    }

    async fn discover_role(&self, token: Option<&Secret>) -> Result<String, CredentialError> {
        let url = self.url(CREDENTIALS_PATH);
        let (status, body) = http::send(
            SERVICE,
            &url,
            Self::with_token(self.client.get(url.clone()), token),
        )
        .await?;
        let no_role = || {
            CredentialError::Setting {
            provider: "ecs_ram_role",
            reason: "the metadata service lists no RAM role for this instance: attach one, or set role_name".to_owned(),
        }
        };
        if status == 404 {
            return Err(no_role());
        }
        if !(200..300).contains(&status) {
            return Err(http::refused(SERVICE, status, &body, &[]));
        }
        let text = String::from_utf8(body).unwrap_or_default();
        let role = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(no_role)?
            .to_owned();
        *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) = Some(role.clone());
        Ok(role)
    }
}
