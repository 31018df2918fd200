//! A credentials URI: a local or sidecar HTTP endpoint that answers a GET with
//! `{"Code":"Success","AccessKeyId",…,"Expiration"}`.

use super::error::CredentialError;
use super::http::{self, Fetched, Shape};

/// The service name errors carry.
const SERVICE: &str = "credentials URI";

/// GETs the URI.
#[derive(Debug)]
pub(crate) struct UriFetcher {
    pub(crate) client: reqwest::Client,
    pub(crate) url: reqwest::Url,
}

impl UriFetcher {
    /// One GET.
    pub(crate) async fn fetch(&self) -> Result<Fetched, CredentialError> {
        let (status, body) =
            http::send(SERVICE, &self.url, self.client.get(self.url.clone())).await?;
        if !(200..300).contains(&status) {
            return Err(http::refused(SERVICE, status, &body, &[]));
        }
        http::parse_credentials(SERVICE, status, &body, Shape::Flat)
    }
}
