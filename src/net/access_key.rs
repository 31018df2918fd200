//! `Credentials`: the AccessKey pair (and STS token) a request is signed with. It lives in the
//! bottom layer because the pure signers below the credential providers need it.

use crate::net::secret::Secret;

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
