//! Turns `[credentials]` settings and the environment snapshot into credential sources, one
//! function per provider. Local files are read here (so a bad setup fails at start-up); no
//! network call is made.
//!
//! Precedence for every value: the config key, then the profile's own field (for profile
//! modes), then the SDKs' environment variable, then the default.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Credentials;
use super::cache::{Fetcher, Refresher};
use super::env::{CredentialEnv, names};
use super::error::CredentialError;
use super::files::{self, FoundProfile, Lookup, ProfileSpec};
use super::http::{self, ClientKind};
use super::imds::ImdsFetcher;
use super::sts::{self, AssumeRoleFetcher, OidcFetcher, RoleRequest};
use super::uri::UriFetcher;
use crate::config::CredentialsSettings;
use crate::net::secret::Secret;

/// The metadata service's address on every ECS instance.
const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";
/// `RoleSessionName` when nothing names one.
const DEFAULT_SESSION_NAME: &str = "dmstrack";
/// STS `DurationSeconds` when nothing names one (the SDKs' default).
const DEFAULT_SESSION_DURATION: Duration = Duration::from_secs(3600);

/// Profile-level values for an assumed role (empty outside profiles).
#[derive(Debug, Default)]
struct RoleOverrides {
    session_name: Option<String>,
    duration_seconds: Option<u64>,
    policy: Option<String>,
    external_id: Option<String>,
    sts_region: Option<String>,
    vpc: bool,
}

/// Builds sources from the settings and the environment snapshot.
#[derive(Debug)]
pub(crate) struct Resolver<'a> {
    settings: &'a CredentialsSettings,
    env: &'a CredentialEnv,
    metadata_client: OnceCell<reqwest::Client>,
    remote_client: OnceCell<reqwest::Client>,
}

fn setting(provider: &'static str, reason: impl Into<String>) -> CredentialError {
    CredentialError::Setting {
        provider,
        reason: reason.into(),
    }
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(settings: &'a CredentialsSettings, env: &'a CredentialEnv) -> Self {
        Self {
            settings,
            env,
            metadata_client: OnceCell::new(),
            remote_client: OnceCell::new(),
        }
    }

    pub(crate) fn env(&self) -> &CredentialEnv {
        self.env
    }

    fn client(&self, kind: ClientKind) -> Result<reqwest::Client, CredentialError> {
        let cell = match kind {
            ClientKind::Metadata => &self.metadata_client,
            ClientKind::Remote => &self.remote_client,
        };
        if let Some(client) = cell.get() {
            return Ok(client.clone());
        }
        let client = http::client(kind, self.env)?;
        Ok(cell.get_or_init(|| client).clone())
    }

    /// A path for `describe()` and errors: `~/…` under the home folder.
    pub(crate) fn shown_path(&self, path: &Path) -> String {
        match self
            .env
            .home()
            .and_then(|home| path.strip_prefix(home).ok())
        {
            Some(rest) => format!("~/{}", rest.display()),
            None => path.display().to_string(),
        }
    }

    fn fixed(label: impl Into<String>, credentials: Credentials) -> Arc<Refresher> {
        Arc::new(Refresher::new(label, Fetcher::Fixed(credentials)))
    }

    /// `static`: `access_key_id` + the inline secret or the secret file (trimmed).
    pub(crate) fn static_keys(&self) -> Result<Arc<Refresher>, CredentialError> {
        let s = self.settings;
        let id = s
            .access_key_id
            .clone()
            .ok_or_else(|| setting("static", "access_key_id is not set"))?;
        let secret = match (&s.access_key_secret, &s.access_key_secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| CredentialError::ReadFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                let secret = text.trim();
                if secret.is_empty() {
                    return Err(CredentialError::InvalidFile {
                        path: path.clone(),
                        reason: "the AccessKey secret file is empty".to_owned(),
                    });
                }
                Secret::new(secret)
            }
            (None, None) => {
                return Err(setting(
                    "static",
                    "set access_key_secret_file (or access_key_secret)",
                ));
            }
        };
        if secret.is_empty() {
            return Err(setting("static", "access_key_secret is empty"));
        }
        Ok(Self::fixed(
            "static",
            Credentials::new(id, secret, s.security_token.clone()),
        ))
    }

    /// `env`: `None` when `ALIBABA_CLOUD_ACCESS_KEY_ID` is unset; an error when only half is set.
    pub(crate) fn env_keys(&self) -> Result<Option<Arc<Refresher>>, CredentialError> {
        let Some(id) = self.env.get(names::ACCESS_KEY_ID) else {
            return Ok(None);
        };
        let secret = self.env.get(names::ACCESS_KEY_SECRET).ok_or_else(|| {
            setting(
                "env",
                format!(
                    "{} is set but {} is not set or empty",
                    names::ACCESS_KEY_ID,
                    names::ACCESS_KEY_SECRET
                ),
            )
        })?;
        let token = self.env.get(names::SECURITY_TOKEN).map(Secret::new);
        Ok(Some(Self::fixed(
            "env",
            Credentials::new(id.trim(), Secret::new(secret.trim()), token),
        )))
    }

    /// `env` as an explicit source: missing variables are an error.
    pub(crate) fn env_keys_required(&self) -> Result<Arc<Refresher>, CredentialError> {
        self.env_keys()?.ok_or_else(|| {
            setting(
                "env",
                format!(
                    "{} and {} must both be set and non-empty",
                    names::ACCESS_KEY_ID,
                    names::ACCESS_KEY_SECRET
                ),
            )
        })
    }

    fn role_request(
        &self,
        role_arn: String,
        o: RoleOverrides,
    ) -> Result<RoleRequest, CredentialError> {
        let s = self.settings;
        let region = s
            .sts_region
            .clone()
            .or(o.sts_region)
            .or_else(|| self.env.get(names::STS_REGION).map(str::to_owned));
        let vpc = o.vpc || self.env.flag(names::VPC_ENDPOINT_ENABLED);
        Ok(RoleRequest {
            endpoint: sts::endpoint(s.sts_endpoint.as_ref(), region.as_deref(), vpc)?,
            role_arn,
            session_name: s
                .role_session_name
                .clone()
                .or(o.session_name)
                .or_else(|| self.env.get(names::ROLE_SESSION_NAME).map(str::to_owned))
                .unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned()),
            duration: s
                .session_duration
                .or(o.duration_seconds.map(Duration::from_secs))
                .unwrap_or(DEFAULT_SESSION_DURATION),
            policy: s.policy.clone().or(o.policy),
        })
    }

    fn oidc_source(
        &self,
        label: String,
        role_arn: String,
        provider_arn: String,
        token_file: PathBuf,
        overrides: RoleOverrides,
    ) -> Result<Arc<Refresher>, CredentialError> {
        // Read once now so a missing or empty token file fails at start-up; it is read
        // again at every refresh.
        OidcFetcher::read_token(&token_file)?;
        let fetcher = OidcFetcher {
            client: self.client(ClientKind::Remote)?,
            request: self.role_request(role_arn, overrides)?,
            provider_arn,
            token_file,
        };
        Ok(Arc::new(Refresher::new(label, Fetcher::Oidc(fetcher))))
    }

    /// `oidc` from config keys, else the three `ALIBABA_CLOUD_*` variables. `Ok(None)` unless
    /// all three are known (the chain's rule); `missing` lists what is not.
    pub(crate) fn oidc(
        &self,
    ) -> Result<Result<Arc<Refresher>, Vec<&'static str>>, CredentialError> {
        let s = self.settings;
        let role_arn = s
            .role_arn
            .clone()
            .or_else(|| self.env.get(names::ROLE_ARN).map(str::to_owned));
        let provider_arn = s
            .oidc_provider_arn
            .clone()
            .or_else(|| self.env.get(names::OIDC_PROVIDER_ARN).map(str::to_owned));
        let token_file = s
            .oidc_token_file
            .clone()
            .or_else(|| self.env.get(names::OIDC_TOKEN_FILE).map(PathBuf::from));
        match (role_arn, provider_arn, token_file) {
            (Some(role_arn), Some(provider_arn), Some(token_file)) => {
                let label = format!("oidc (role {role_arn})");
                self.oidc_source(
                    label,
                    role_arn,
                    provider_arn,
                    token_file,
                    RoleOverrides::default(),
                )
                .map(Ok)
            }
            (role, provider, file) => {
                let mut missing = Vec::new();
                if role.is_none() {
                    missing.push("role_arn / ALIBABA_CLOUD_ROLE_ARN");
                }
                if provider.is_none() {
                    missing.push("oidc_provider_arn / ALIBABA_CLOUD_OIDC_PROVIDER_ARN");
                }
                if file.is_none() {
                    missing.push("oidc_token_file / ALIBABA_CLOUD_OIDC_TOKEN_FILE");
                }
                Ok(Err(missing))
            }
        }
    }

    /// `oidc` as an explicit source.
    pub(crate) fn oidc_required(&self) -> Result<Arc<Refresher>, CredentialError> {
        self.oidc()?
            .map_err(|missing| setting("oidc", format!("not set: {}", missing.join(", "))))
    }

    fn metadata_base(&self) -> reqwest::Url {
        self.settings.metadata_endpoint.clone().unwrap_or_else(|| {
            DEFAULT_METADATA_ENDPOINT
                .parse()
                .expect("the default metadata endpoint is a valid URL")
        })
    }

    /// True when a role name says the metadata service is expected (`role_name` or
    /// `ALIBABA_CLOUD_ECS_METADATA`), so an unreachable service is an error rather than
    /// "not on ECS".
    pub(crate) fn imds_is_explicit(&self) -> bool {
        self.settings.role_name.is_some() || self.env.get(names::ECS_METADATA).is_some()
    }

    fn imds_source(
        &self,
        label: String,
        profile_role: Option<String>,
    ) -> Result<Arc<Refresher>, CredentialError> {
        let role = self
            .settings
            .role_name
            .clone()
            .or(profile_role)
            .or_else(|| self.env.get(names::ECS_METADATA).map(str::to_owned));
        let fetcher = ImdsFetcher::new(
            self.client(ClientKind::Metadata)?,
            self.metadata_base(),
            role,
            self.env.flag(names::IMDSV1_DISABLED),
        );
        Ok(Arc::new(Refresher::new(label, Fetcher::Imds(fetcher))))
    }

    /// `ecs_ram_role`.
    pub(crate) fn imds(&self) -> Result<Arc<Refresher>, CredentialError> {
        if self.env.flag(names::ECS_METADATA_DISABLED) {
            return Err(setting(
                "ecs_ram_role",
                format!(
                    "{}=true forbids using the metadata service",
                    names::ECS_METADATA_DISABLED
                ),
            ));
        }
        self.imds_source("ecs_ram_role".to_owned(), None)
    }

    /// `uri`: `Ok(None)` when neither `credentials_uri` nor the variable is set.
    pub(crate) fn uri(&self) -> Result<Option<Arc<Refresher>>, CredentialError> {
        let url = match (
            &self.settings.credentials_uri,
            self.env.get(names::CREDENTIALS_URI),
        ) {
            (Some(url), _) => url.clone(),
            (None, Some(text)) => text.trim().parse().map_err(|_| {
                setting(
                    "uri",
                    format!("{} is not a valid URL", names::CREDENTIALS_URI),
                )
            })?,
            (None, None) => return Ok(None),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(setting(
                "uri",
                "the credentials URI must be http:// or https://",
            ));
        }
        let label = format!("uri ({})", http::endpoint_text(&url));
        let fetcher = UriFetcher {
            client: self.client(ClientKind::Remote)?,
            url,
        };
        Ok(Some(Arc::new(Refresher::new(label, Fetcher::Uri(fetcher)))))
    }

    /// `uri` as an explicit source.
    pub(crate) fn uri_required(&self) -> Result<Arc<Refresher>, CredentialError> {
        self.uri()?.ok_or_else(|| {
            setting(
                "uri",
                format!("set credentials_uri or {}", names::CREDENTIALS_URI),
            )
        })
    }

    /// The profile name asked for, if any (config key, then `ALIBABA_CLOUD_PROFILE`).
    fn requested_profile(&self) -> Option<String> {
        self.settings
            .profile
            .clone()
            .or_else(|| self.env.get(names::PROFILE).map(str::to_owned))
    }

    /// `~/.aliyun/config.json`, unless disabled or there is no home folder.
    pub(crate) fn cli_file(&self) -> Option<PathBuf> {
        if self.env.flag(names::CLI_PROFILE_DISABLED) {
            return None;
        }
        self.env
            .home()
            .map(|h| h.join(".aliyun").join("config.json"))
    }

    /// `ALIBABA_CLOUD_CREDENTIALS_FILE` (must exist), else `~/.alibabacloud/credentials.ini`.
    pub(crate) fn ini_file(&self) -> Result<Option<PathBuf>, CredentialError> {
        if let Some(path) = self.env.get(names::CREDENTIALS_FILE) {
            let path = PathBuf::from(path);
            if !path.exists() {
                return Err(CredentialError::ReadFile {
                    reason: format!(
                        "{} names a file that does not exist",
                        names::CREDENTIALS_FILE
                    ),
                    path,
                });
            }
            return Ok(Some(path));
        }
        Ok(self
            .env
            .home()
            .map(|h| h.join(".alibabacloud").join("credentials.ini")))
    }

    /// Looks the profile up in `config.json`.
    pub(crate) fn cli_lookup(&self, path: &Path) -> Result<Lookup, CredentialError> {
        files::cli_profile(path, self.requested_profile().as_deref())
    }

    /// Looks the profile up in `credentials.ini`.
    pub(crate) fn ini_lookup(&self, path: &Path) -> Result<Lookup, CredentialError> {
        let name = self
            .requested_profile()
            .unwrap_or_else(|| "default".to_owned());
        files::ini_profile(path, &name)
    }

    /// A source for a profile found in one of the files.
    pub(crate) fn profile_source(
        &self,
        found: FoundProfile,
    ) -> Result<Arc<Refresher>, CredentialError> {
        let mut label = format!(
            "profile \"{}\" ({}, {}",
            found.name,
            self.shown_path(&found.path),
            found.kind
        );
        let source = match found.spec {
            ProfileSpec::AccessKey { id, secret, token } => {
                label.push(')');
                Self::fixed(label, Credentials::new(id, secret, token))
            }
            ProfileSpec::RamRoleArn {
                id,
                secret,
                role_arn,
                session_name,
                duration_seconds,
                policy,
                external_id,
                sts_region,
                vpc,
            } => {
                label.push_str(&format!(", role {role_arn})"));
                let source = Self::fixed(
                    format!("profile \"{}\" AccessKey", found.name),
                    Credentials::new(id, secret, None),
                );
                let overrides = RoleOverrides {
                    session_name,
                    duration_seconds,
                    policy,
                    external_id,
                    sts_region,
                    vpc,
                };
                self.assume_role(label, role_arn, overrides, source)?
            }
            ProfileSpec::EcsRamRole { role_name } => {
                label.push(')');
                self.imds_source(label, role_name)?
            }
            ProfileSpec::Oidc {
                role_arn,
                provider_arn,
                token_file,
                session_name,
            } => {
                label.push_str(&format!(", role {role_arn})"));
                let overrides = RoleOverrides {
                    session_name,
                    ..RoleOverrides::default()
                };
                self.oidc_source(label, role_arn, provider_arn, token_file, overrides)?
            }
        };
        Ok(source)
    }

    /// `profile` as an explicit source: `config.json`, then `credentials.ini`.
    pub(crate) fn profile_required(&self) -> Result<Arc<Refresher>, CredentialError> {
        let mut searched = Vec::new();
        let mut name = self.requested_profile();
        if let Some(path) = self.cli_file() {
            match self.cli_lookup(&path)? {
                Lookup::Found(found) => return self.profile_source(*found),
                Lookup::NoProfile(n) => name = Some(n),
                Lookup::NoFile => {}
            }
            searched.push(self.shown_path(&path));
        }
        if let Some(path) = self.ini_file()? {
            if let Lookup::Found(found) = self.ini_lookup(&path)? {
                return self.profile_source(*found);
            }
            searched.push(self.shown_path(&path));
        }
        Err(CredentialError::ProfileNotFound {
            profile: name.unwrap_or_else(|| "default".to_owned()),
            searched: if searched.is_empty() {
                "no profile file: no home folder, and the aliyun CLI config is disabled".to_owned()
            } else {
                searched.join(", ")
            },
        })
    }

    fn assume_role(
        &self,
        label: String,
        role_arn: String,
        overrides: RoleOverrides,
        source: Arc<Refresher>,
    ) -> Result<Arc<Refresher>, CredentialError> {
        let external_id = self
            .settings
            .external_id
            .clone()
            .or(overrides.external_id.clone());
        let fetcher = AssumeRoleFetcher {
            client: self.client(ClientKind::Remote)?,
            request: self.role_request(role_arn, overrides)?,
            external_id,
            source,
        };
        Ok(Arc::new(Refresher::new(
            label,
            Fetcher::AssumeRole(fetcher),
        )))
    }

    /// `ram_role_arn`: `AssumeRole` signed with the static keys if given, else the named
    /// profile, else the environment's keys.
    pub(crate) fn ram_role_arn(&self) -> Result<Arc<Refresher>, CredentialError> {
        let role_arn = self
            .settings
            .role_arn
            .clone()
            .or_else(|| self.env.get(names::ROLE_ARN).map(str::to_owned))
            .ok_or_else(|| {
                setting(
                    "ram_role_arn",
                    format!("set role_arn or {}", names::ROLE_ARN),
                )
            })?;
        let source = if self.settings.access_key_id.is_some() {
            self.static_keys()?
        } else if self.settings.profile.is_some() {
            self.profile_required()?
        } else {
            self.env_keys_required()?
        };
        let label = format!(
            "ram_role_arn (role {role_arn}, source {})",
            source.describe()
        );
        self.assume_role(label, role_arn, RoleOverrides::default(), source)
    }
}
