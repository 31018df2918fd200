//! The two profile files of the Alibaba Cloud tools: the aliyun CLI's `~/.aliyun/config.json`
//! and the SDKs' `~/.alibabacloud/credentials.ini`. Parsing only: what a profile says, turned
//! into a [`ProfileSpec`]; nothing here talks to the network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::CredentialError;
use crate::net::secret::Secret;

/// The modes of `config.json` this program implements.
const CLI_MODES: &str = "AK, StsToken, RamRoleArn, EcsRamRole, OIDC";
/// The types of `credentials.ini` this program implements.
const INI_TYPES: &str = "access_key, ram_role_arn, ecs_ram_role, oidc_role_arn";

/// What a profile asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ProfileSpec {
    /// Fixed keys, optionally with an STS token.
    AccessKey {
        id: String,
        secret: Secret,
        token: Option<Secret>,
    },
    /// `AssumeRole` signed with the profile's own AccessKey.
    RamRoleArn {
        id: String,
        secret: Secret,
        role_arn: String,
        session_name: Option<String>,
        duration_seconds: Option<u64>,
        policy: Option<String>,
        external_id: Option<String>,
        sts_region: Option<String>,
        vpc: bool,
    },
    /// The ECS instance's RAM role.
    EcsRamRole { role_name: Option<String> },
    /// `AssumeRoleWithOIDC` with a token file.
    Oidc {
        role_arn: String,
        provider_arn: String,
        token_file: PathBuf,
        session_name: Option<String>,
    },
}

/// A profile found in one of the files.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FoundProfile {
    /// The profile (or section) name.
    pub(crate) name: String,
    /// The file it came from.
    pub(crate) path: PathBuf,
    /// `mode AK`, `type access_key`, … for `describe()`.
    pub(crate) kind: String,
    /// What it asks for.
    pub(crate) spec: ProfileSpec,
}

/// The outcome of looking a profile up in one file.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The file does not exist.
    NoFile,
    /// The file exists but has no such profile (the name that was looked for).
    NoProfile(String),
    /// Found.
    Found(Box<FoundProfile>),
}

/// `config.json` as far as we read it.
#[derive(Deserialize)]
struct CliConfig {
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    profiles: Vec<CliProfile>,
}

/// One entry of `profiles` (aliyun-cli `config/profile.go` field names). No `Debug`: it holds
/// secrets as plain strings until they are moved into [`Secret`]s.
#[derive(Deserialize)]
struct CliProfile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    access_key_secret: Option<String>,
    #[serde(default)]
    sts_token: Option<String>,
    #[serde(default)]
    ram_role_name: Option<String>,
    #[serde(default)]
    ram_role_arn: Option<String>,
    #[serde(default)]
    ram_session_name: Option<String>,
    #[serde(default)]
    expired_seconds: Option<u64>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    sts_region: Option<String>,
    #[serde(default)]
    enable_vpc: Option<bool>,
    #[serde(default)]
    oidc_provider_arn: Option<String>,
    #[serde(default)]
    oidc_token_file: Option<String>,
    #[serde(default)]
    role_session_name: Option<String>,
}

/// Reads a whole small file; a missing file is `Ok(None)`.
fn read_optional(path: &Path) -> Result<Option<String>, CredentialError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CredentialError::ReadFile {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn nonblank(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Looks up a profile in an aliyun CLI `config.json`: `requested`, else the file's `current`,
/// else `default`.
pub(crate) fn cli_profile(path: &Path, requested: Option<&str>) -> Result<Lookup, CredentialError> {
    let Some(text) = read_optional(path)? else {
        return Ok(Lookup::NoFile);
    };
    // serde_json's messages can quote a value (a secret of the wrong type, say), so only the
    // error's category and position are reported.
    let config: CliConfig =
        serde_json::from_str(&text).map_err(|e| CredentialError::InvalidFile {
            path: path.to_owned(),
            reason: format!(
                "not a valid aliyun CLI config ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        })?;
    let name = requested
        .map(str::to_owned)
        .or_else(|| nonblank(config.current.clone()))
        .unwrap_or_else(|| "default".to_owned());
    let Some(profile) = config.profiles.into_iter().find(|p| p.name == name) else {
        return Ok(Lookup::NoProfile(name));
    };
    let invalid = |reason: String| CredentialError::InvalidFile {
        path: path.to_owned(),
        reason: format!("profile \"{name}\" (mode {}): {reason}", profile.mode),
    };
    let required = |value: Option<String>, key: &str| {
        nonblank(value).ok_or_else(|| invalid(format!("{key} is missing or empty")))
    };
    let spec = match profile.mode.as_str() {
        "AK" | "StsToken" => ProfileSpec::AccessKey {
            id: required(profile.access_key_id.clone(), "access_key_id")?,
            secret: Secret::new(required(
                profile.access_key_secret.clone(),
                "access_key_secret",
            )?),
            token: if profile.mode == "StsToken" {
                Some(Secret::new(required(
                    profile.sts_token.clone(),
                    "sts_token",
                )?))
            } else {
                None
            },
        },
        "RamRoleArn" => ProfileSpec::RamRoleArn {
            id: required(profile.access_key_id.clone(), "access_key_id")?,
            secret: Secret::new(required(
                profile.access_key_secret.clone(),
                "access_key_secret",
            )?),
            role_arn: required(profile.ram_role_arn.clone(), "ram_role_arn")?,
            session_name: nonblank(profile.ram_session_name.clone()),
            duration_seconds: profile.expired_seconds.filter(|s| *s > 0),
            policy: nonblank(profile.policy.clone()),
            external_id: nonblank(profile.external_id.clone()),
            sts_region: nonblank(profile.sts_region.clone()),
            vpc: profile.enable_vpc.unwrap_or(false),
        },
        "EcsRamRole" => ProfileSpec::EcsRamRole {
            role_name: nonblank(profile.ram_role_name.clone()),
        },
        "OIDC" => ProfileSpec::Oidc {
            role_arn: required(profile.ram_role_arn.clone(), "ram_role_arn")?,
            provider_arn: required(profile.oidc_provider_arn.clone(), "oidc_provider_arn")?,
            token_file: PathBuf::from(required(
                profile.oidc_token_file.clone(),
                "oidc_token_file",
            )?),
            session_name: nonblank(profile.role_session_name.clone()),
        },
        other => {
            return Err(CredentialError::UnsupportedMode {
                path: path.to_owned(),
                profile: name,
                mode: if other.is_empty() {
                    "(empty)".to_owned()
                } else {
                    other.to_owned()
                },
                supported: CLI_MODES,
            });
        }
    };
    Ok(Lookup::Found(Box::new(FoundProfile {
        kind: format!("mode {}", profile.mode),
        name,
        path: path.to_owned(),
        spec,
    })))
}

/// Looks up section `name` in an SDK `credentials.ini`.
pub(crate) fn ini_profile(path: &Path, name: &str) -> Result<Lookup, CredentialError> {
    let Some(text) = read_optional(path)? else {
        return Ok(Lookup::NoFile);
    };
    let sections = parse_ini(&text).map_err(|line| CredentialError::InvalidFile {
        path: path.to_owned(),
        reason: format!("line {line} is neither a [section], a key = value, nor a comment"),
    })?;
    let Some(section) = sections.get(name) else {
        return Ok(Lookup::NoProfile(name.to_owned()));
    };
    let kind = section.get("type").cloned().unwrap_or_default();
    let invalid = |reason: String| CredentialError::InvalidFile {
        path: path.to_owned(),
        reason: format!("section [{name}] (type {kind}): {reason}"),
    };
    let required = |key: &str| {
        section
            .get(key)
            .cloned()
            .ok_or_else(|| invalid(format!("{key} is missing or empty")))
    };
    let optional = |key: &str| section.get(key).cloned();
    let spec = match kind.as_str() {
        "access_key" => ProfileSpec::AccessKey {
            id: required("access_key_id")?,
            secret: Secret::new(required("access_key_secret")?),
            token: None,
        },
        "ram_role_arn" => ProfileSpec::RamRoleArn {
            id: required("access_key_id")?,
            secret: Secret::new(required("access_key_secret")?),
            role_arn: required("role_arn")?,
            session_name: optional("role_session_name"),
            duration_seconds: None,
            policy: optional("policy"),
            external_id: None,
            sts_region: None,
            vpc: false,
        },
        "ecs_ram_role" => ProfileSpec::EcsRamRole {
            role_name: optional("role_name"),
        },
        "oidc_role_arn" => ProfileSpec::Oidc {
            role_arn: required("role_arn")?,
            provider_arn: required("oidc_provider_arn")?,
            token_file: PathBuf::from(required("oidc_token_file_path")?),
            session_name: optional("role_session_name"),
        },
        other => {
            return Err(CredentialError::UnsupportedMode {
                path: path.to_owned(),
                profile: name.to_owned(),
                mode: if other.is_empty() {
                    "(no type)".to_owned()
                } else {
                    other.to_owned()
                },
                supported: INI_TYPES,
            });
        }
    };
    Ok(Lookup::Found(Box::new(FoundProfile {
        name: name.to_owned(),
        path: path.to_owned(),
        kind: format!("type {kind}"),
        spec,
    })))
}

/// The SDKs' tiny INI dialect: `[section]`, `key = value`, full-line `#`/`;` comments, and a
/// value cut at its first `#` (an inline comment). Empty values are dropped. A bad line is
/// reported by its 1-based number only (it may hold a secret).
fn parse_ini(text: &str) -> Result<HashMap<String, HashMap<String, String>>, usize> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_owned();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
            return Err(index + 1);
        };
        let value = value.split('#').next().unwrap_or_default().trim();
        if !value.is_empty() {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.trim().to_owned(), value.to_owned());
        }
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn found(lookup: Lookup) -> FoundProfile {
        match lookup {
            Lookup::Found(p) => *p,
            other => panic!("expected a profile, got {other:?}"),
        }
    }

    const CLI: &str = r#"{
      "current": "work",
      "profiles": [
        {"name": "default", "mode": "AK", "access_key_id": "LTAIdefault", "access_key_secret": "sec-default", "region_id": "cn-hangzhou"},
        {"name": "work", "mode": "StsToken", "access_key_id": "STS.work", "access_key_secret": "sec-work", "sts_token": "tok-work"},
        {"name": "role", "mode": "RamRoleArn", "access_key_id": "LTAIrole", "access_key_secret": "sec-role",
         "ram_role_arn": "acs:ram::1:role/r", "ram_session_name": "s", "expired_seconds": 1800,
         "sts_region": "cn-shanghai", "enable_vpc": true},
        {"name": "ecs", "mode": "EcsRamRole", "ram_role_name": "dms-reader"},
        {"name": "oidc", "mode": "OIDC", "ram_role_arn": "acs:ram::1:role/o", "oidc_provider_arn": "acs:ram::1:oidc-provider/p",
         "oidc_token_file": "/var/run/token"},
        {"name": "sso", "mode": "CloudSSO"},
        {"name": "broken", "mode": "AK", "access_key_id": "LTAIx"}
      ],
      "meta_path": ""
    }"#;

    #[test]
    fn cli_profile_follows_requested_then_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "config.json", CLI);
        let current = found(cli_profile(&path, None).unwrap());
        assert_eq!(current.name, "work");
        assert_eq!(current.kind, "mode StsToken");
        assert_eq!(
            current.spec,
            ProfileSpec::AccessKey {
                id: "STS.work".into(),
                secret: Secret::new("sec-work"),
                token: Some(Secret::new("tok-work")),
            }
        );
        let named = found(cli_profile(&path, Some("default")).unwrap());
        assert_eq!(
            named.spec,
            ProfileSpec::AccessKey {
                id: "LTAIdefault".into(),
                secret: Secret::new("sec-default"),
                token: None,
            }
        );
        assert!(
            matches!(cli_profile(&path, Some("nope")).unwrap(), Lookup::NoProfile(n) if n == "nope")
        );
        assert!(matches!(
            cli_profile(&dir.path().join("none.json"), None).unwrap(),
            Lookup::NoFile
        ));
    }

    #[test]
    fn cli_profile_role_modes_and_unsupported_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "config.json", CLI);
        match found(cli_profile(&path, Some("role")).unwrap()).spec {
            ProfileSpec::RamRoleArn {
                id,
                role_arn,
                session_name,
                duration_seconds,
                sts_region,
                vpc,
                ..
            } => {
                assert_eq!(
                    (id.as_str(), role_arn.as_str()),
                    ("LTAIrole", "acs:ram::1:role/r")
                );
                assert_eq!(session_name.as_deref(), Some("s"));
                assert_eq!(duration_seconds, Some(1800));
                assert_eq!(sts_region.as_deref(), Some("cn-shanghai"));
                assert!(vpc);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            found(cli_profile(&path, Some("ecs")).unwrap()).spec,
            ProfileSpec::EcsRamRole {
                role_name: Some("dms-reader".into())
            }
        );
        assert!(matches!(
            found(cli_profile(&path, Some("oidc")).unwrap()).spec,
            ProfileSpec::Oidc { ref token_file, .. } if token_file == Path::new("/var/run/token")
        ));
        let err = cli_profile(&path, Some("sso")).unwrap_err();
        assert!(err.is_config());
        assert!(
            err.to_string().contains("mode CloudSSO is not supported"),
            "{err}"
        );
        let err = cli_profile(&path, Some("broken")).unwrap_err();
        assert!(
            err.to_string().contains("access_key_secret is missing"),
            "{err}"
        );
    }

    #[test]
    fn invalid_json_reports_position_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "config.json",
            r#"{"profiles":[{"name":"default","mode":"AK","access_key_secret": 12345678}]}"#,
        );
        let err = cli_profile(&path, None).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("12345678"), "{err}");
    }

    #[test]
    fn ini_sections_types_and_inline_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "credentials.ini",
            "# comment\n[default]\nenable = true\ntype = access_key   # the usual\naccess_key_id = LTAIini  # id\naccess_key_secret = sec-ini # secret\n\n\
             [client1]\ntype = ecs_ram_role\nrole_name = EcsRamRoleTest\n\
             [client2]\ntype = oidc_role_arn\nrole_arn = acs:ram::1:role/o\noidc_provider_arn = acs:ram::1:oidc-provider/p\noidc_token_file_path = /t\n\
             [client3]\ntype = rsa_key_pair\n",
        );
        assert_eq!(
            found(ini_profile(&path, "default").unwrap()).spec,
            ProfileSpec::AccessKey {
                id: "LTAIini".into(),
                secret: Secret::new("sec-ini"),
                token: None,
            }
        );
        assert_eq!(
            found(ini_profile(&path, "client1").unwrap()).spec,
            ProfileSpec::EcsRamRole {
                role_name: Some("EcsRamRoleTest".into())
            }
        );
        assert!(matches!(
            found(ini_profile(&path, "client2").unwrap()).spec,
            ProfileSpec::Oidc { .. }
        ));
        assert!(
            ini_profile(&path, "client3")
                .unwrap_err()
                .to_string()
                .contains("mode rsa_key_pair is not supported")
        );
        assert!(matches!(
            ini_profile(&path, "x").unwrap(),
            Lookup::NoProfile(_)
        ));
    }

    #[test]
    fn ini_bad_line_reports_number_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "c.ini", "[default]\nsecretwithoutequals\n");
        let err = ini_profile(&path, "default").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("secretwithoutequals"), "{err}");
    }
}
