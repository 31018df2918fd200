//! `CredentialEnv`: the snapshot of environment variables and home folder that every
//! credential provider reads instead of `std::env`, so tests can hand each provider its own.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Names of the environment variables the providers read (besides the proxy ones).
pub(crate) mod names {
    pub(crate) const ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
    pub(crate) const ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
    pub(crate) const SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
    pub(crate) const PROFILE: &str = "ALIBABA_CLOUD_PROFILE";
    pub(crate) const CLI_PROFILE_DISABLED: &str = "ALIBABA_CLOUD_CLI_PROFILE_DISABLED";
    pub(crate) const CREDENTIALS_FILE: &str = "ALIBABA_CLOUD_CREDENTIALS_FILE";
    pub(crate) const ECS_METADATA: &str = "ALIBABA_CLOUD_ECS_METADATA";
    pub(crate) const ECS_METADATA_DISABLED: &str = "ALIBABA_CLOUD_ECS_METADATA_DISABLED";
    pub(crate) const IMDSV1_DISABLED: &str = "ALIBABA_CLOUD_IMDSV1_DISABLED";
    pub(crate) const ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
    pub(crate) const OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
    pub(crate) const OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
    pub(crate) const ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
    pub(crate) const STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
    pub(crate) const VPC_ENDPOINT_ENABLED: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";
    pub(crate) const CREDENTIALS_URI: &str = "ALIBABA_CLOUD_CREDENTIALS_URI";
}

/// The proxy variables reqwest would read, captured so the STS and URI clients use the
/// snapshot too. Upper-case first, as curl and reqwest do.
pub(crate) const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// A snapshot of the environment variables the credential providers honour, plus the home
/// folder (for `~/.aliyun/config.json` and `~/.alibabacloud/credentials.ini`).
///
/// `Debug` lists variable names only: some values are secrets.
#[derive(Clone, Default)]
pub struct CredentialEnv {
    vars: BTreeMap<String, String>,
    home: Option<PathBuf>,
}

impl CredentialEnv {
    /// Captures the `ALIBABA_CLOUD_*`, `AWS_*` (S3 uploads) and proxy variables of this
    /// process and its home folder.
    pub fn from_process() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| {
                k.starts_with("ALIBABA_CLOUD_")
                    || k.starts_with("AWS_")
                    || PROXY_VARS.contains(&k.as_str())
            });
        Self::from_vars(vars, std::env::home_dir())
    }

    /// A snapshot built from explicit values (tests, or an embedding program).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        home: Option<PathBuf>,
    ) -> Self {
        Self {
            vars: vars.into_iter().collect(),
            home,
        }
    }

    /// The value of a variable when it is set and not blank (the SDKs treat an empty value as
    /// unset).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// True when the variable is `true` (any case), the SDKs' only spelling of "on".
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// The first of `names` that is set.
    pub(crate) fn first_of(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.get(n))
    }

    /// The home folder, if known.
    pub(crate) fn home(&self) -> Option<&PathBuf> {
        self.home.as_ref()
    }
}

impl fmt::Debug for CredentialEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialEnv")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("home", &self.home)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_count_as_unset_and_flags_need_true() {
        let env = CredentialEnv::from_vars(
            [
                ("A".to_owned(), "  ".to_owned()),
                ("B".to_owned(), "TRUE".to_owned()),
                ("C".to_owned(), "1".to_owned()),
            ],
            None,
        );
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("missing"), None);
        assert!(env.flag("B"));
        assert!(!env.flag("C"));
        assert_eq!(env.first_of(&["A", "C", "B"]), Some("1"));
    }

    #[test]
    fn debug_shows_names_not_values() {
        let env = CredentialEnv::from_vars(
            [(
                names::ACCESS_KEY_SECRET.to_owned(),
                "topsecret-value".to_owned(),
            )],
            None,
        );
        let text = format!("{env:?}");
        assert!(text.contains(names::ACCESS_KEY_SECRET));
        assert!(!text.contains("topsecret-value"));
    }
}
