//! Alibaba Cloud credentials: the `Credentials` value every signed request uses, and the
//! providers that produce it (static, env, profile, and the default chain).

use crate::secret::Secret;

/// An AccessKey pair, optionally with an STS security token. `Debug` masks the secret and the
/// token (they are [`Secret`]s); the AccessKey id is not a secret (it travels in clear in
/// every signed request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The AccessKey id (`LTAI…` or `STS.…`).
    pub access_key_id: String,
    /// The AccessKey secret.
    pub access_key_secret: Secret,
    /// The STS token, for temporary credentials.
    pub security_token: Option<Secret>,
    /// When temporary credentials stop working; `None` for long-lived keys.
    pub expiration: Option<jiff::Timestamp>,
}

impl Credentials {
    /// Long-lived or STS credentials without a known expiry.
    pub fn new(
        access_key_id: impl Into<String>,
        access_key_secret: Secret,
        security_token: Option<Secret>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            access_key_secret,
            security_token,
            expiration: None,
        }
    }
}

// ---- TEMPORARY STUB (replaced by the credentials branch at merge) ----
/// Error resolving credentials.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);
impl CredentialError {
    /// Restarting will not help.
    pub fn is_config(&self) -> bool {
        true
    }
}
/// Snapshot of the environment.
#[derive(Debug, Clone, Default)]
pub struct CredentialEnv;
impl CredentialEnv {
    /// From the process.
    pub fn from_process() -> Self {
        Self
    }
}
/// Provider.
#[derive(Debug, Clone)]
pub struct CredentialProvider(std::sync::Arc<Credentials>);
impl CredentialProvider {
    /// Build.
    pub fn new(
        settings: &crate::config::CredentialsSettings,
        _env: CredentialEnv,
    ) -> Result<Self, CredentialError> {
        Ok(Self(std::sync::Arc::new(Credentials::new(
            settings.access_key_id.clone().unwrap_or_default(),
            settings.access_key_secret.clone().unwrap_or_default(),
            settings.security_token.clone(),
        ))))
    }
    /// Get.
    pub async fn get(&self) -> Result<Credentials, CredentialError> {
        Ok((*self.0).clone())
    }
    /// Invalidate.
    pub fn invalidate(&self) {}
    /// Describe.
    pub fn describe(&self) -> String {
        "static".into()
    }
}
