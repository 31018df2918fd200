//! Alibaba Cloud credentials: the `Credentials` value every signed request uses, and the
//! [`CredentialProvider`] that produces it from `[credentials]`: static keys, the SDK
//! environment variables, profile files, the ECS metadata service, STS (`AssumeRole`,
//! `AssumeRoleWithOIDC`), a credentials URI, or the official default chain over them.
//!
//! Layout: `resolve` turns settings into sources, `chain` is the default chain, `cache`
//! caches and refreshes temporary credentials, and `imds`, `sts`, `uri` (with `http`) and
//! `files` are the sources themselves.

mod cache;
mod chain;
mod env;
mod error;
mod files;
mod http;
mod imds;
mod resolve;
mod sts;
mod uri;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

pub use crate::net::access_key::Credentials;
pub use env::CredentialEnv;
pub use error::{CredentialError, TransportKind};

use crate::config::{CredentialSource, CredentialsSettings};

/// The configured credential source, with caching and refresh. Cheap to clone (an `Arc`);
/// every clone shares the cache. `Debug` shows [`describe`](Self::describe), never a secret.
#[derive(Clone)]
pub struct CredentialProvider {
    inner: Arc<Inner>,
}

enum Inner {
    Single(Arc<cache::Refresher>),
    Chain(chain::Chain),
}

impl CredentialProvider {
    /// Builds the provider. Reads local files (secret file, profile files, OIDC token file)
    /// now so a bad setup fails at start-up; makes no network call.
    pub fn new(
        settings: &CredentialsSettings,
        env: CredentialEnv,
    ) -> Result<Self, CredentialError> {
        let resolver = resolve::Resolver::new(settings, &env);
        let inner = match settings.source {
            CredentialSource::Default => Inner::Chain(chain::Chain::build(&resolver)?),
            CredentialSource::Static => Inner::Single(resolver.static_keys()?),
            CredentialSource::Env => Inner::Single(resolver.env_keys_required()?),
            CredentialSource::Profile => Inner::Single(resolver.profile_required()?),
            CredentialSource::EcsRamRole => Inner::Single(resolver.imds()?),
            CredentialSource::Oidc => Inner::Single(resolver.oidc_required()?),
            CredentialSource::RamRoleArn => Inner::Single(resolver.ram_role_arn()?),
            CredentialSource::Uri => Inner::Single(resolver.uri_required()?),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Current credentials, from the cache while fresh; refreshed (one request for all
    /// concurrent callers) when they near expiry.
    pub async fn get(&self) -> Result<Credentials, CredentialError> {
        match &*self.inner {
            Inner::Single(source) => source.get().await,
            Inner::Chain(chain) => chain.get().await,
        }
    }

    /// The API rejected the credentials as expired (e.g. `InvalidSecurityToken.Expired`):
    /// the next [`get`](Self::get) refreshes. A no-op for long-lived keys.
    pub fn invalidate(&self) {
        match &*self.inner {
            Inner::Single(source) => source.invalidate(),
            Inner::Chain(chain) => chain.invalidate(),
        }
    }

    /// What is in use, for logs and `check --online`, e.g. `static`, `env`,
    /// `profile "prod" (~/.aliyun/config.json, mode AK)`, `ecs_ram_role (role "dms-reader")`,
    /// `default chain → env`. Never a secret.
    pub fn describe(&self) -> String {
        match &*self.inner {
            Inner::Single(source) => source.describe(),
            Inner::Chain(chain) => chain.describe(),
        }
    }
}

impl fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CredentialProvider")
            .field(&self.describe())
            .finish()
    }
}
