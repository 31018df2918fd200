//! The default chain, in the official SDKs' order: env → OIDC → aliyun CLI profile →
//! `credentials.ini` profile → ECS RAM role → credentials URI.
//!
//! A step that is not configured is skipped. The first configured step is the one used: if
//! it fails, the chain fails with that step's error (falling through to a later step would
//! hide a broken setup). One exception keeps laptops and non-ECS hosts working: an implicit
//! metadata step (no `role_name` or `ALIBABA_CLOUD_ECS_METADATA` names a role) whose service
//! cannot be reached means "not on ECS" and is skipped. The step that first returns
//! credentials is remembered and used from then on.

use std::sync::{Arc, OnceLock};

use super::Credentials;
use super::cache::Refresher;
use super::env::names;
use super::error::CredentialError;
use super::files::Lookup;
use super::resolve::Resolver;

/// A configured step.
#[derive(Debug)]
struct Step {
    name: &'static str,
    source: Arc<Refresher>,
    /// An unreachable endpoint means "not configured here" (the implicit metadata step).
    skip_if_unreachable: bool,
}

/// One line of the chain, in order.
#[derive(Debug)]
enum Entry {
    /// Not configured, and why.
    Skipped(String),
    /// Configured.
    Step(Step),
}

/// The default chain. See the module docs.
#[derive(Debug)]
pub(crate) struct Chain {
    entries: Vec<Entry>,
    /// Index into `entries` of the step that delivered.
    chosen: OnceLock<usize>,
    /// Serialises the first resolution.
    resolving: tokio::sync::Mutex<()>,
}

/// Wraps a build-time error with the step's name.
fn at(step: &'static str) -> impl Fn(CredentialError) -> CredentialError {
    move |error| CredentialError::Chain {
        step,
        error: Box::new(error),
    }
}

impl Chain {
    /// Lays the chain out up to the first step that will certainly be used. Reads the
    /// profile files; makes no network call.
    pub(crate) fn build(resolver: &Resolver<'_>) -> Result<Self, CredentialError> {
        let mut entries = Vec::new();
        let env = resolver.env();
        let decisive = |entries: &mut Vec<Entry>, name, source| {
            entries.push(Entry::Step(Step {
                name,
                source,
                skip_if_unreachable: false,
            }));
        };

        match resolver.env_keys().map_err(at("env"))? {
            Some(source) => {
                decisive(&mut entries, "env", source);
                return Ok(Self::new(entries));
            }
            None => entries.push(Entry::Skipped(format!(
                "env: {} not set",
                names::ACCESS_KEY_ID
            ))),
        }

        match resolver.oidc().map_err(at("oidc"))? {
            Ok(source) => {
                decisive(&mut entries, "oidc", source);
                return Ok(Self::new(entries));
            }
            Err(missing) => entries.push(Entry::Skipped(format!(
                "oidc: not set: {}",
                missing.join(", ")
            ))),
        }

        match resolver.cli_file() {
            None if env.flag(names::CLI_PROFILE_DISABLED) => entries.push(Entry::Skipped(format!(
                "cli_profile: disabled by {}",
                names::CLI_PROFILE_DISABLED
            ))),
            None => entries.push(Entry::Skipped("cli_profile: no home folder".to_owned())),
            Some(path) => match resolver.cli_lookup(&path).map_err(at("cli_profile"))? {
                Lookup::Found(found) => {
                    let source = resolver.profile_source(*found).map_err(at("cli_profile"))?;
                    decisive(&mut entries, "cli_profile", source);
                    return Ok(Self::new(entries));
                }
                Lookup::NoFile => entries.push(Entry::Skipped(format!(
                    "cli_profile: no {}",
                    resolver.shown_path(&path)
                ))),
                Lookup::NoProfile(name) => entries.push(Entry::Skipped(format!(
                    "cli_profile: no profile \"{name}\" in {}",
                    resolver.shown_path(&path)
                ))),
            },
        }

        match resolver.ini_file().map_err(at("ini_profile"))? {
            None => entries.push(Entry::Skipped("ini_profile: no home folder".to_owned())),
            Some(path) => match resolver.ini_lookup(&path).map_err(at("ini_profile"))? {
                Lookup::Found(found) => {
                    let source = resolver.profile_source(*found).map_err(at("ini_profile"))?;
                    decisive(&mut entries, "ini_profile", source);
                    return Ok(Self::new(entries));
                }
                Lookup::NoFile => entries.push(Entry::Skipped(format!(
                    "ini_profile: no {}",
                    resolver.shown_path(&path)
                ))),
                Lookup::NoProfile(name) => entries.push(Entry::Skipped(format!(
                    "ini_profile: no section [{name}] in {}",
                    resolver.shown_path(&path)
                ))),
            },
        }

        if env.flag(names::ECS_METADATA_DISABLED) {
            entries.push(Entry::Skipped(format!(
                "ecs_ram_role: disabled by {}",
                names::ECS_METADATA_DISABLED
            )));
        } else {
            let explicit = resolver.imds_is_explicit();
            entries.push(Entry::Step(Step {
                name: "ecs_ram_role",
                source: resolver.imds().map_err(at("ecs_ram_role"))?,
                skip_if_unreachable: !explicit,
            }));
            if explicit {
                return Ok(Self::new(entries));
            }
        }

        match resolver.uri().map_err(at("uri"))? {
            Some(source) => decisive(&mut entries, "uri", source),
            None => entries.push(Entry::Skipped(format!(
                "uri: {} not set",
                names::CREDENTIALS_URI
            ))),
        }

        let chain = Self::new(entries);
        if !chain.entries.iter().any(|e| matches!(e, Entry::Step(_))) {
            return Err(CredentialError::NoCredentials {
                tried: chain.skipped_text(),
            });
        }
        Ok(chain)
    }

    fn new(entries: Vec<Entry>) -> Self {
        Self {
            entries,
            chosen: OnceLock::new(),
            resolving: tokio::sync::Mutex::new(()),
        }
    }

    fn skipped_text(&self) -> String {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Skipped(why) => Some(why.as_str()),
                Entry::Step(_) => None,
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn chosen(&self) -> Option<&Step> {
        match &self.entries[*self.chosen.get()?] {
            Entry::Step(step) => Some(step),
            Entry::Skipped(_) => None,
        }
    }

    /// Credentials from the remembered step, or the first step that delivers.
    pub(crate) async fn get(&self) -> Result<Credentials, CredentialError> {
        if let Some(step) = self.chosen() {
            return step.source.get().await.map_err(at(step.name));
        }
        let _resolving = self.resolving.lock().await;
        if let Some(step) = self.chosen() {
            return step.source.get().await.map_err(at(step.name));
        }
        let mut tried = Vec::new();
        for (index, entry) in self.entries.iter().enumerate() {
            let step = match entry {
                Entry::Skipped(why) => {
                    tried.push(why.clone());
                    continue;
                }
                Entry::Step(step) => step,
            };
            match step.source.get().await {
                Ok(credentials) => {
                    let _ = self.chosen.set(index);
                    tracing::info!(source = %step.source.describe(), "default credential chain resolved");
                    return Ok(credentials);
                }
                Err(error) if step.skip_if_unreachable && error.is_unreachable() => {
                    tracing::debug!(step = step.name, %error, "skipping an unreachable credential source");
                    tried.push(format!("{}: {error}", step.name));
                }
                Err(error) => return Err(at(step.name)(error)),
            }
        }
        Err(CredentialError::NoCredentials {
            tried: tried.join("; "),
        })
    }

    /// Forwards to the remembered step.
    pub(crate) fn invalidate(&self) {
        if let Some(step) = self.chosen() {
            step.source.invalidate();
        }
    }

    /// `default chain → <step>` once resolved; the candidates before.
    pub(crate) fn describe(&self) -> String {
        if let Some(step) = self.chosen() {
            return format!("default chain → {}", step.source.describe());
        }
        let candidates: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Step(step) => Some(step.source.describe()),
                Entry::Skipped(_) => None,
            })
            .collect();
        format!(
            "default chain (not resolved yet; candidates: {})",
            candidates.join(", ")
        )
    }
}
