//! Provider tests against the loopback fakes in `crate::sim::credentials`: every provider, the
//! default chain's order, and refresh behaviour under paused time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::advance;

use super::*;
use crate::config::{CredentialSource, CredentialsSettings};
use crate::net::secret::Secret;
use crate::sim::credentials::{ImdsFake, ImdsOptions, StsFake, StsOptions, UriFake};

const MIN: Duration = Duration::from_secs(60);

fn env_with(vars: &[(&str, &str)], home: Option<&Path>) -> CredentialEnv {
    CredentialEnv::from_vars(
        vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        home.map(Path::to_path_buf),
    )
}

fn settings(source: CredentialSource) -> CredentialsSettings {
    CredentialsSettings {
        source,
        ..CredentialsSettings::default()
    }
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

fn write_cli_config(home: &Path, text: &str) -> PathBuf {
    write(&home.join(".aliyun/config.json"), text)
}

const CLI_CONFIG: &str = r#"{
  "current": "second",
  "profiles": [
    {"name": "first", "mode": "AK", "access_key_id": "LTAIfirst", "access_key_secret": "secret-first"},
    {"name": "second", "mode": "StsToken", "access_key_id": "STS.second", "access_key_secret": "secret-second", "sts_token": "token-second"}
  ]
}"#;

/// Env for chain tests that must never reach the real metadata service.
const NO_IMDS: (&str, &str) = ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true");

async fn sts_with_key(id: &str, secret: &str) -> StsFake {
    let mut keys = HashMap::new();
    keys.insert(id.to_owned(), Secret::new(secret));
    StsFake::start(StsOptions {
        access_keys: keys,
        ..StsOptions::default()
    })
    .await
    .unwrap()
}

// --- static, env -------------------------------------------------------------------------

#[tokio::test]
async fn static_keys_inline_and_from_a_file_with_trailing_newline() {
    let mut s = settings(CredentialSource::Static);
    s.access_key_id = Some("LTAIinline".into());
    s.access_key_secret = Some(Secret::new("inline-secret"));
    s.security_token = Some(Secret::new("static-token"));
    let provider = CredentialProvider::new(&s, CredentialEnv::default()).unwrap();
    let got = provider.get().await.unwrap();
    assert_eq!(got.access_key_id, "LTAIinline");
    assert_eq!(got.access_key_secret.expose(), "inline-secret");
    assert_eq!(
        got.security_token.as_ref().map(Secret::expose),
        Some("static-token")
    );
    assert_eq!(got.expiration, None);
    assert_eq!(provider.describe(), "static");
    provider.invalidate();
    assert_eq!(
        provider.get().await.unwrap(),
        got,
        "invalidate is a no-op for static keys"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir.path().join("ak_secret"), "  file-secret\n");
    let mut s = settings(CredentialSource::Static);
    s.access_key_id = Some("LTAIfile".into());
    s.access_key_secret_file = Some(file.clone());
    let got = CredentialProvider::new(&s, CredentialEnv::default())
        .unwrap()
        .get()
        .await
        .unwrap();
    assert_eq!(got.access_key_secret.expose(), "file-secret");

    std::fs::write(&file, "\n").unwrap();
    let err = CredentialProvider::new(&s, CredentialEnv::default()).unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("empty"),
        "{err}"
    );
    s.access_key_secret_file = Some(dir.path().join("missing"));
    let err = CredentialProvider::new(&s, CredentialEnv::default()).unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("missing"),
        "{err}"
    );
}

#[tokio::test]
async fn env_keys_with_token_and_clear_errors_when_missing_or_empty() {
    let env = env_with(
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret"),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", "env-token"),
        ],
        None,
    );
    let provider = CredentialProvider::new(&settings(CredentialSource::Env), env).unwrap();
    let got = provider.get().await.unwrap();
    assert_eq!(got.access_key_id, "LTAIenv");
    assert_eq!(got.access_key_secret.expose(), "env-secret");
    assert_eq!(
        got.security_token.as_ref().map(Secret::expose),
        Some("env-token")
    );
    assert_eq!(provider.describe(), "env");

    let err =
        CredentialProvider::new(&settings(CredentialSource::Env), env_with(&[], None)).unwrap_err();
    assert!(err.is_config());
    assert!(
        err.to_string().contains("ALIBABA_CLOUD_ACCESS_KEY_ID"),
        "{err}"
    );
    let half = env_with(
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ""),
        ],
        None,
    );
    let err = CredentialProvider::new(&settings(CredentialSource::Env), half).unwrap_err();
    assert!(
        err.to_string()
            .contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET is not set or empty"),
        "{err}"
    );
}

// --- profiles ------------------------------------------------------------------------------

#[tokio::test]
async fn cli_profile_selection_current_env_and_config() {
    let home = tempfile::tempdir().unwrap();
    write_cli_config(home.path(), CLI_CONFIG);
    let profile = |configured: Option<&str>, env_profile: Option<&str>| {
        let mut s = settings(CredentialSource::Profile);
        s.profile = configured.map(str::to_owned);
        let vars: Vec<(&str, &str)> = env_profile
            .map(|p| ("ALIBABA_CLOUD_PROFILE", p))
            .into_iter()
            .collect();
        CredentialProvider::new(&s, env_with(&vars, Some(home.path()))).unwrap()
    };

    // The file's `current`: a StsToken profile.
    let current = profile(None, None);
    let got = current.get().await.unwrap();
    assert_eq!(got.access_key_id, "STS.second");
    assert_eq!(
        got.security_token.as_ref().map(Secret::expose),
        Some("token-second")
    );
    assert_eq!(
        current.describe(),
        "profile \"second\" (~/.aliyun/config.json, mode StsToken)"
    );

    // ALIBABA_CLOUD_PROFILE beats `current`.
    let by_env = profile(None, Some("first"));
    let got = by_env.get().await.unwrap();
    assert_eq!(
        (got.access_key_id.as_str(), got.access_key_secret.expose()),
        ("LTAIfirst", "secret-first")
    );
    assert_eq!(got.security_token, None);
    assert_eq!(
        by_env.describe(),
        "profile \"first\" (~/.aliyun/config.json, mode AK)"
    );

    // The config key beats ALIBABA_CLOUD_PROFILE.
    assert_eq!(
        profile(Some("second"), Some("first"))
            .get()
            .await
            .unwrap()
            .access_key_id,
        "STS.second"
    );
}

#[tokio::test]
async fn ini_profile_with_inline_comments_and_credentials_file_variable() {
    let home = tempfile::tempdir().unwrap();
    write(
        &home.path().join(".alibabacloud/credentials.ini"),
        "[default]\ntype = access_key # plain keys\naccess_key_id = LTAIini # the id\naccess_key_secret = ini-secret # the secret\n",
    );
    let provider = CredentialProvider::new(
        &settings(CredentialSource::Profile),
        env_with(&[], Some(home.path())),
    )
    .unwrap();
    let got = provider.get().await.unwrap();
    assert_eq!(
        (got.access_key_id.as_str(), got.access_key_secret.expose()),
        ("LTAIini", "ini-secret")
    );
    assert_eq!(
        provider.describe(),
        "profile \"default\" (~/.alibabacloud/credentials.ini, type access_key)"
    );

    // ALIBABA_CLOUD_CREDENTIALS_FILE replaces the default path; the section follows the profile.
    let other = tempfile::tempdir().unwrap();
    let file = write(
        &other.path().join("creds.ini"),
        "[prod]\ntype = access_key\naccess_key_id = LTAIprod\naccess_key_secret = prod-secret\n",
    );
    let env = env_with(
        &[
            ("ALIBABA_CLOUD_CREDENTIALS_FILE", file.to_str().unwrap()),
            ("ALIBABA_CLOUD_PROFILE", "prod"),
        ],
        Some(home.path()),
    );
    let provider = CredentialProvider::new(&settings(CredentialSource::Profile), env).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "LTAIprod");
    assert!(
        provider.describe().contains(&file.display().to_string()),
        "{}",
        provider.describe()
    );

    // A named file that does not exist is an error, not a silent skip.
    let env = env_with(
        &[("ALIBABA_CLOUD_CREDENTIALS_FILE", "/nonexistent/creds.ini")],
        Some(home.path()),
    );
    let err = CredentialProvider::new(&settings(CredentialSource::Profile), env).unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("ALIBABA_CLOUD_CREDENTIALS_FILE"),
        "{err}"
    );
}

#[tokio::test]
async fn cli_profile_disabled_falls_to_ini_and_missing_profile_is_a_config_error() {
    let home = tempfile::tempdir().unwrap();
    write_cli_config(home.path(), CLI_CONFIG);
    write(
        &home.path().join(".alibabacloud/credentials.ini"),
        "[second]\ntype = access_key\naccess_key_id = LTAIfromini\naccess_key_secret = s\n",
    );
    let env = env_with(
        &[
            ("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true"),
            ("ALIBABA_CLOUD_PROFILE", "second"),
        ],
        Some(home.path()),
    );
    let provider = CredentialProvider::new(&settings(CredentialSource::Profile), env).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "LTAIfromini");

    let mut s = settings(CredentialSource::Profile);
    s.profile = Some("nobody".into());
    let err = CredentialProvider::new(&s, env_with(&[], Some(home.path()))).unwrap_err();
    assert!(err.is_config());
    let text = err.to_string();
    assert!(
        text.contains("\"nobody\"")
            && text.contains("~/.aliyun/config.json")
            && text.contains("credentials.ini"),
        "{text}"
    );

    write_cli_config(
        home.path(),
        r#"{"current":"x","profiles":[{"name":"x","mode":"External","process_command":"y"}]}"#,
    );
    let err = CredentialProvider::new(
        &settings(CredentialSource::Profile),
        env_with(&[], Some(home.path())),
    )
    .unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("mode External is not supported"),
        "{err}"
    );
}

// --- ECS metadata ----------------------------------------------------------------------------

fn imds_settings(fake: &ImdsFake) -> CredentialsSettings {
    let mut s = settings(CredentialSource::EcsRamRole);
    s.metadata_endpoint = Some(fake.endpoint());
    s
}

#[tokio::test]
async fn imds_v2_gets_a_token_discovers_the_role_and_sends_the_token() {
    let fake = ImdsFake::start(ImdsOptions::default()).await.unwrap();
    let provider =
        CredentialProvider::new(&imds_settings(&fake), CredentialEnv::default()).unwrap();
    assert_eq!(
        provider.describe(),
        "ecs_ram_role (role from the metadata service)"
    );
    let got = provider.get().await.unwrap();
    assert_eq!(got.access_key_id, "STS.imds.1");
    assert_eq!(got.access_key_secret.expose(), "imds-secret-1");
    assert_eq!(
        got.security_token.as_ref().map(Secret::expose),
        Some("imds-token-1")
    );
    assert!(got.expiration.is_some());
    let log: Vec<(String, String, bool)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.metadata_token))
        .collect();
    assert_eq!(
        log,
        [
            ("PUT".into(), "/latest/api/token".into(), false),
            (
                "GET".into(),
                "/latest/meta-data/ram/security-credentials/".into(),
                true
            ),
            (
                "GET".into(),
                "/latest/meta-data/ram/security-credentials/dms-reader".into(),
                true
            ),
        ]
    );
    assert_eq!(
        provider.describe(),
        "ecs_ram_role (role \"dms-reader\", from the metadata service)"
    );
}

#[tokio::test]
async fn imds_falls_back_to_v1_when_the_token_is_refused() {
    let fake = ImdsFake::start(ImdsOptions {
        v2_enabled: false,
        ..ImdsOptions::default()
    })
    .await
    .unwrap();
    let provider =
        CredentialProvider::new(&imds_settings(&fake), CredentialEnv::default()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.1");
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| !r.metadata_token));
}

#[tokio::test]
async fn imds_v1_disabled_by_env_fails_without_trying_v1() {
    let fake = ImdsFake::start(ImdsOptions {
        v2_enabled: false,
        ..ImdsOptions::default()
    })
    .await
    .unwrap();
    let env = env_with(&[("ALIBABA_CLOUD_IMDSV1_DISABLED", "true")], None);
    let provider = CredentialProvider::new(&imds_settings(&fake), env).unwrap();
    let err = provider.get().await.unwrap_err();
    assert!(
        matches!(err, CredentialError::ImdsV2Required { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("HTTP 403"), "{err}");
    assert!(err.is_config());
    assert_eq!(fake.requests().len(), 1, "only the token PUT");

    // And a service that insists on tokens refuses v1 requests even when we may fall back.
    let strict = ImdsFake::start(ImdsOptions {
        v2_enabled: false,
        v1_enabled: false,
        ..ImdsOptions::default()
    })
    .await
    .unwrap();
    let err = CredentialProvider::new(&imds_settings(&strict), CredentialEnv::default())
        .unwrap()
        .get()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
}

#[tokio::test]
async fn imds_role_from_setting_or_env_skips_discovery() {
    let fake = ImdsFake::start(ImdsOptions::default()).await.unwrap();
    let mut s = imds_settings(&fake);
    s.role_name = Some("dms-reader".into());
    let provider = CredentialProvider::new(
        &s,
        env_with(&[("ALIBABA_CLOUD_ECS_METADATA", "ignored-role")], None),
    )
    .unwrap();
    assert_eq!(provider.describe(), "ecs_ram_role (role \"dms-reader\")");
    provider.get().await.unwrap();
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/latest/api/token",
            "/latest/meta-data/ram/security-credentials/dms-reader"
        ]
    );

    let fake = ImdsFake::start(ImdsOptions::default()).await.unwrap();
    let provider = CredentialProvider::new(
        &imds_settings(&fake),
        env_with(&[("ALIBABA_CLOUD_ECS_METADATA", "dms-reader")], None),
    )
    .unwrap();
    provider.get().await.unwrap();
    assert_eq!(fake.requests().len(), 2, "no role listing");

    // A role the instance does not have: a definite 404.
    let provider = CredentialProvider::new(
        &imds_settings(&fake),
        env_with(&[("ALIBABA_CLOUD_ECS_METADATA", "other")], None),
    )
    .unwrap();
    let err = provider.get().await.unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("HTTP 404"),
        "{err}"
    );
}

#[tokio::test]
async fn imds_without_an_attached_role_says_so() {
    let fake = ImdsFake::start(ImdsOptions {
        role: None,
        ..ImdsOptions::default()
    })
    .await
    .unwrap();
    let err = CredentialProvider::new(&imds_settings(&fake), CredentialEnv::default())
        .unwrap()
        .get()
        .await
        .unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("no RAM role"),
        "{err}"
    );
}

#[tokio::test]
async fn ecs_ram_role_refuses_to_start_when_metadata_is_disabled() {
    let err = CredentialProvider::new(
        &settings(CredentialSource::EcsRamRole),
        env_with(&[NO_IMDS], None),
    )
    .unwrap_err();
    assert!(
        err.is_config()
            && err
                .to_string()
                .contains("ALIBABA_CLOUD_ECS_METADATA_DISABLED"),
        "{err}"
    );
}

// --- STS AssumeRole ---------------------------------------------------------------------------

fn ram_role_settings(sts: &StsFake) -> CredentialsSettings {
    let mut s = settings(CredentialSource::RamRoleArn);
    s.access_key_id = Some("LTAIsource".into());
    s.access_key_secret = Some(Secret::new("source-secret"));
    s.role_arn = Some("acs:ram::123:role/dms-reader".into());
    s.sts_endpoint = Some(sts.endpoint());
    s
}

#[tokio::test]
async fn assume_role_is_signed_so_that_sts_verifies_it() {
    let sts = sts_with_key("LTAIsource", "source-secret").await;
    let mut s = ram_role_settings(&sts);
    // Characters that RFC 3986 encoding must get right: spaces, quotes, `*`, `+`, `/`.
    s.policy = Some(r#"{"Statement": [{"Action": ["dms:*"], "Effect": "Allow", "Resource": "acs:dms:*:*:a+b/c"}], "Version": "1"}"#.into());
    s.external_id = Some("ext id~1".into());
    s.session_duration = Some(Duration::from_secs(1800));
    let provider = CredentialProvider::new(&s, CredentialEnv::default()).unwrap();
    assert_eq!(
        provider.describe(),
        "ram_role_arn (role acs:ram::123:role/dms-reader, source static)"
    );
    let got = provider.get().await.unwrap();
    assert_eq!(got.access_key_id, "STS.fake.1");
    assert_eq!(
        got.security_token.as_ref().map(Secret::expose),
        Some("fake-token-1")
    );
    let request = &sts.requests()[0];
    assert_eq!(request.method, "GET");
    let p = &request.params;
    assert_eq!(p["Action"], "AssumeRole");
    assert_eq!(p["RoleSessionName"], "dmstrack");
    assert_eq!(p["DurationSeconds"], "1800");
    assert_eq!(p["ExternalId"], "ext id~1");
    assert_eq!(p["Policy"], s.policy.clone().unwrap());
    assert_eq!(p["AccessKeyId"], "LTAIsource");
    assert!(!p.contains_key("SecurityToken"));
}

#[tokio::test]
async fn assume_role_with_a_wrong_secret_reports_code_and_request_id_but_no_secret() {
    let sts = sts_with_key("LTAIsource", "the-right-secret").await;
    let provider =
        CredentialProvider::new(&ram_role_settings(&sts), CredentialEnv::default()).unwrap();
    let err = provider.get().await.unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
    assert!(err.is_config());
    let text = err.to_string();
    assert!(
        text.contains("STS AssumeRole") && text.contains("HTTP 400") && text.contains("RequestId "),
        "{text}"
    );
    for secret in ["source-secret", "the-right-secret"] {
        assert!(
            !text.contains(secret) && !format!("{err:?}").contains(secret),
            "{text}"
        );
    }
}

#[tokio::test]
async fn assume_role_signs_with_env_keys_and_their_sts_token() {
    let sts = sts_with_key("STS.envsource", "env-secret").await;
    let mut s = settings(CredentialSource::RamRoleArn);
    s.sts_endpoint = Some(sts.endpoint());
    let env = env_with(
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "STS.envsource"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret"),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", "env-token"),
            ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/from-env"),
            ("ALIBABA_CLOUD_ROLE_SESSION_NAME", "session-from-env"),
        ],
        None,
    );
    let provider = CredentialProvider::new(&s, env).unwrap();
    assert_eq!(
        provider.describe(),
        "ram_role_arn (role acs:ram::1:role/from-env, source env)"
    );
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.1");
    let p = &sts.requests()[0].params;
    assert!(p.contains_key("SecurityToken"));
    assert_eq!(p["RoleSessionName"], "session-from-env");

    let err = CredentialProvider::new(
        &settings(CredentialSource::RamRoleArn),
        CredentialEnv::default(),
    )
    .unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("role_arn"),
        "{err}"
    );
}

#[tokio::test]
async fn cli_profile_in_ram_role_arn_mode_assumes_the_role_with_its_own_keys() {
    let sts = sts_with_key("LTAIprofile", "profile-secret").await;
    let home = tempfile::tempdir().unwrap();
    write_cli_config(
        home.path(),
        r#"{"current":"role","profiles":[{"name":"role","mode":"RamRoleArn","access_key_id":"LTAIprofile",
            "access_key_secret":"profile-secret","ram_role_arn":"acs:ram::1:role/p","ram_session_name":"from-profile",
            "expired_seconds":900,"sts_region":"cn-shanghai"}]}"#,
    );
    let mut s = settings(CredentialSource::Profile);
    s.sts_endpoint = Some(sts.endpoint());
    let provider = CredentialProvider::new(&s, env_with(&[], Some(home.path()))).unwrap();
    assert_eq!(
        provider.describe(),
        "profile \"role\" (~/.aliyun/config.json, mode RamRoleArn, role acs:ram::1:role/p)"
    );
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.1");
    let p = &sts.requests()[0].params;
    assert_eq!(
        (p["RoleSessionName"].as_str(), p["DurationSeconds"].as_str()),
        ("from-profile", "900")
    );
}

// --- STS AssumeRoleWithOIDC -------------------------------------------------------------------

struct OidcSetup {
    _dir: tempfile::TempDir,
    token_file: PathBuf,
    sts: StsFake,
}

async fn oidc_setup(lifetime: Duration) -> OidcSetup {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(&dir.path().join("token"), "eyJ.first-token.sig\n");
    let sts = StsFake::start(StsOptions {
        oidc_token_file: Some(token_file.clone()),
        lifetime,
        ..StsOptions::default()
    })
    .await
    .unwrap();
    OidcSetup {
        _dir: dir,
        token_file,
        sts,
    }
}

fn oidc_settings(setup: &OidcSetup) -> CredentialsSettings {
    let mut s = settings(CredentialSource::Oidc);
    s.role_arn = Some("acs:ram::1:role/x".into());
    s.oidc_provider_arn = Some("acs:ram::1:oidc-provider/ack".into());
    s.oidc_token_file = Some(setup.token_file.clone());
    s.sts_endpoint = Some(setup.sts.endpoint());
    s
}

#[tokio::test(start_paused = true)]
async fn oidc_sends_the_current_token_file_and_picks_up_rotation() {
    let setup = oidc_setup(60 * MIN).await;
    let provider =
        CredentialProvider::new(&oidc_settings(&setup), CredentialEnv::default()).unwrap();
    assert_eq!(provider.describe(), "oidc (role acs:ram::1:role/x)");
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.1");
    let first = &setup.sts.requests()[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.params["Action"], "AssumeRoleWithOIDC");
    assert_eq!(first.params["RoleSessionName"], "dmstrack");
    assert!(first.params.contains_key("OIDCToken"));
    assert!(
        !first.params.contains_key("Signature"),
        "AssumeRoleWithOIDC is unsigned"
    );

    // The kubelet rotates the token; the fake now accepts only the new one.
    std::fs::write(&setup.token_file, "eyJ.second-token.sig\n").unwrap();
    advance(46 * MIN).await;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.2");
    assert_eq!(setup.sts.count("AssumeRoleWithOIDC"), 2);
}

#[tokio::test]
async fn oidc_with_a_token_sts_does_not_accept_fails_without_showing_the_token() {
    let setup = oidc_setup(60 * MIN).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = oidc_settings(&setup);
    s.oidc_token_file = Some(write(&dir.path().join("stale"), "eyJ.stale-token.sig"));
    let err = CredentialProvider::new(&s, CredentialEnv::default())
        .unwrap()
        .get()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AuthenticationFail.OIDCToken.Invalid"));
    assert!(err.is_config());
    assert!(!format!("{err} {err:?}").contains("stale-token"), "{err}");

    let mut s = oidc_settings(&setup);
    s.oidc_provider_arn = None;
    let err = CredentialProvider::new(&s, CredentialEnv::default()).unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("ALIBABA_CLOUD_OIDC_PROVIDER_ARN"),
        "{err}"
    );

    let mut s = oidc_settings(&setup);
    s.oidc_token_file = Some(dir.path().join("absent"));
    assert!(
        CredentialProvider::new(&s, CredentialEnv::default())
            .unwrap_err()
            .is_config()
    );
}

// --- credentials URI -------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn uri_provider_from_setting_or_env() {
    let fake = UriFake::start(60 * MIN).await.unwrap();
    let mut s = settings(CredentialSource::Uri);
    s.credentials_uri = Some(fake.url());
    let provider = CredentialProvider::new(&s, CredentialEnv::default()).unwrap();
    assert_eq!(provider.describe(), format!("uri ({})", fake.url()));
    let got = provider.get().await.unwrap();
    assert_eq!(
        (got.access_key_id.as_str(), got.access_key_secret.expose()),
        ("STS.uri.1", "uri-secret-1")
    );

    let env = env_with(
        &[("ALIBABA_CLOUD_CREDENTIALS_URI", fake.url().as_str())],
        None,
    );
    let provider = CredentialProvider::new(&settings(CredentialSource::Uri), env).unwrap();
    fake.set_outage(Some(500));
    let err = provider.get().await.unwrap_err();
    assert!(
        !err.is_config() && err.to_string().contains("HTTP 500"),
        "{err}"
    );
    fake.set_outage(None);
    // The failure is not retried at once…
    assert!(provider.get().await.is_err());
    // …but after the back-off delay.
    advance(Duration::from_secs(2)).await;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.uri.2");
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.method == "GET" && r.path == "/credentials")
    );

    let err = CredentialProvider::new(&settings(CredentialSource::Uri), CredentialEnv::default())
        .unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("ALIBABA_CLOUD_CREDENTIALS_URI"),
        "{err}"
    );
}

// --- default chain ---------------------------------------------------------------------------

fn chain(
    s: &CredentialsSettings,
    vars: &[(&str, &str)],
    home: &Path,
) -> Result<CredentialProvider, CredentialError> {
    CredentialProvider::new(s, env_with(vars, Some(home)))
}

const ENV_KEYS: [(&str, &str); 2] = [
    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv"),
    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret"),
];

#[tokio::test]
async fn chain_env_beats_profile_files() {
    let home = tempfile::tempdir().unwrap();
    write_cli_config(home.path(), CLI_CONFIG);
    let provider = chain(
        &settings(CredentialSource::Default),
        &[ENV_KEYS[0], ENV_KEYS[1], NO_IMDS],
        home.path(),
    )
    .unwrap();
    assert_eq!(
        provider.describe(),
        "default chain (not resolved yet; candidates: env)"
    );
    assert_eq!(provider.get().await.unwrap().access_key_id, "LTAIenv");
    assert_eq!(provider.describe(), "default chain → env");
}

#[tokio::test]
async fn chain_oidc_from_env_comes_before_profiles_and_a_failing_step_stops_the_chain() {
    let setup = oidc_setup(60 * MIN).await;
    let home = tempfile::tempdir().unwrap();
    write_cli_config(home.path(), CLI_CONFIG);
    let mut s = settings(CredentialSource::Default);
    s.sts_endpoint = Some(setup.sts.endpoint());
    let token_path = setup.token_file.to_str().unwrap().to_owned();
    let vars = [
        ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/rrsa"),
        (
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            "acs:ram::1:oidc-provider/ack",
        ),
        ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", token_path.as_str()),
        NO_IMDS,
    ];
    let provider = chain(&s, &vars, home.path()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.1");
    assert_eq!(
        provider.describe(),
        "default chain → oidc (role acs:ram::1:role/rrsa)"
    );

    // Only two of the three OIDC variables: not configured, so the profile is used.
    let provider = chain(&s, &[vars[0], vars[1], NO_IMDS], home.path()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.second");

    // OIDC configured but refused: the chain stops there (no fall-through to the profile).
    setup.sts.set_outage(Some(403));
    let err = chain(&s, &vars, home.path())
        .unwrap()
        .get()
        .await
        .unwrap_err();
    assert!(
        matches!(err, CredentialError::Chain { step: "oidc", .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("default chain, step oidc: STS AssumeRoleWithOIDC refused"),
        "{err}"
    );
}

#[tokio::test]
async fn chain_cli_profile_beats_ini_and_imds() {
    let imds = ImdsFake::start(ImdsOptions::default()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    write_cli_config(home.path(), CLI_CONFIG);
    write(
        &home.path().join(".alibabacloud/credentials.ini"),
        "[default]\ntype = access_key\naccess_key_id = LTAIini\naccess_key_secret = s\n",
    );
    let mut s = settings(CredentialSource::Default);
    s.metadata_endpoint = Some(imds.endpoint());
    let provider = chain(&s, &[], home.path()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.second");
    assert_eq!(
        provider.describe(),
        "default chain → profile \"second\" (~/.aliyun/config.json, mode StsToken)"
    );

    // Without config.json the ini profile wins over the metadata service.
    std::fs::remove_file(home.path().join(".aliyun/config.json")).unwrap();
    let provider = chain(&s, &[], home.path()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "LTAIini");
    assert!(
        imds.requests().is_empty(),
        "the metadata service was never asked"
    );

    // Without either, the metadata service.
    std::fs::remove_file(home.path().join(".alibabacloud/credentials.ini")).unwrap();
    let provider = chain(&s, &[], home.path()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.1");
    assert_eq!(
        provider.describe(),
        "default chain → ecs_ram_role (role \"dms-reader\", from the metadata service)"
    );
}

#[tokio::test]
async fn chain_uri_is_last_and_imds_can_be_disabled_by_env() {
    let uri = UriFake::start(60 * MIN).await.unwrap();
    let imds = ImdsFake::start(ImdsOptions::default()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut s = settings(CredentialSource::Default);
    s.metadata_endpoint = Some(imds.endpoint());
    let uri_var = ("ALIBABA_CLOUD_CREDENTIALS_URI", uri.url().to_string());
    let uri_var = (uri_var.0, uri_var.1.as_str());

    // The metadata service comes before the URI…
    let provider = chain(&s, &[uri_var], home.path()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.1");
    assert!(uri.requests().is_empty());

    // …unless disabled.
    let provider = chain(&s, &[uri_var, NO_IMDS], home.path()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.uri.1");
    assert_eq!(
        provider.describe(),
        format!("default chain → uri ({})", uri.url())
    );
    assert_eq!(
        imds.requests().len(),
        3,
        "only the first provider asked the metadata service"
    );
}

#[tokio::test]
async fn chain_skips_an_unreachable_implicit_metadata_service_but_not_a_named_role() {
    // A loopback port with nothing listening: "not on ECS".
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url: reqwest::Url = format!("http://{}/", closed.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(closed);
    let uri = UriFake::start(60 * MIN).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut s = settings(CredentialSource::Default);
    s.metadata_endpoint = Some(closed_url);
    s.credentials_uri = Some(uri.url());
    let provider = chain(&s, &[], home.path()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.uri.1");

    // Nothing after it: the error lists what was tried.
    s.credentials_uri = None;
    let err = chain(&s, &[], home.path())
        .unwrap()
        .get()
        .await
        .unwrap_err();
    assert!(
        matches!(err, CredentialError::NoCredentials { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("ecs_ram_role: ECS metadata"),
        "{err}"
    );

    // A named role means the service is expected: unreachable is a (transient) error.
    s.role_name = Some("dms-reader".into());
    s.credentials_uri = Some(uri.url());
    let err = chain(&s, &[], home.path())
        .unwrap()
        .get()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CredentialError::Chain {
                step: "ecs_ram_role",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_config());
}

#[tokio::test]
async fn chain_with_nothing_configured_fails_at_start_and_says_what_it_tried() {
    let home = tempfile::tempdir().unwrap();
    let err = chain(
        &settings(CredentialSource::Default),
        &[NO_IMDS],
        home.path(),
    )
    .unwrap_err();
    assert!(err.is_config());
    let text = err.to_string();
    for step in [
        "env:",
        "oidc:",
        "cli_profile:",
        "ini_profile:",
        "ecs_ram_role: disabled",
        "uri:",
    ] {
        assert!(text.contains(step), "{step} missing in {text}");
    }

    // A broken profile file fails at start-up too, naming the step.
    write_cli_config(home.path(), "{ not json");
    let err = chain(
        &settings(CredentialSource::Default),
        &[NO_IMDS],
        home.path(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CredentialError::Chain {
                step: "cli_profile",
                ..
            }
        ),
        "{err:?}"
    );
}

// --- refresh under paused time ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn refresh_waits_for_the_margin_then_refreshes_once() {
    let imds = ImdsFake::start(ImdsOptions::default()).await.unwrap();
    let provider =
        CredentialProvider::new(&imds_settings(&imds), CredentialEnv::default()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.1");
    advance(44 * MIN).await;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.1");
    assert_eq!(imds.issued(), 1);
    advance(2 * MIN).await;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.2");
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.2");
    assert_eq!(imds.issued(), 2);
}

#[tokio::test(start_paused = true)]
async fn short_lifetimes_refresh_at_eighty_percent() {
    let uri = UriFake::start(10 * MIN).await.unwrap();
    let mut s = settings(CredentialSource::Uri);
    s.credentials_uri = Some(uri.url());
    let provider = CredentialProvider::new(&s, CredentialEnv::default()).unwrap();
    provider.get().await.unwrap();
    advance(7 * MIN).await;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.uri.1");
    advance(90 * Duration::from_secs(1)).await;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.uri.2");
}

async fn concurrent_gets(provider: &CredentialProvider, n: usize) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let provider = provider.clone();
        tasks.spawn(async move { provider.get().await.map(|c| c.access_key_id) });
    }
    let mut ids = Vec::new();
    while let Some(result) = tasks.join_next().await {
        ids.push(result.unwrap().unwrap());
    }
    ids
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_gets_share_one_sts_request() {
    let setup = oidc_setup(60 * MIN).await;
    let provider =
        CredentialProvider::new(&oidc_settings(&setup), CredentialEnv::default()).unwrap();
    let ids = concurrent_gets(&provider, 100).await;
    assert!(ids.iter().all(|id| id == "STS.fake.1"), "{ids:?}");
    assert_eq!(setup.sts.requests().len(), 1);

    // In the refresh window: one request again; callers get the old or the new credentials.
    advance(46 * MIN).await;
    let ids = concurrent_gets(&provider, 100).await;
    assert!(
        ids.iter()
            .all(|id| id == "STS.fake.1" || id == "STS.fake.2"),
        "{ids:?}"
    );
    assert_eq!(setup.sts.requests().len(), 2);
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.2");
    assert_eq!(setup.sts.requests().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_old_credentials_until_they_expire_then_errors() {
    let setup = oidc_setup(60 * MIN).await;
    let sts = &setup.sts;
    let provider =
        CredentialProvider::new(&oidc_settings(&setup), CredentialEnv::default()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.1");

    sts.set_outage(Some(503));
    advance(46 * MIN).await;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.1");
    assert_eq!(sts.requests().len(), 2, "one failed refresh");
    // Backing off: no request within the retry delay, however often we ask.
    for _ in 0..20 {
        assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.1");
    }
    assert_eq!(sts.requests().len(), 2);
    advance(Duration::from_millis(1500)).await;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.1");
    assert_eq!(sts.requests().len(), 3, "retried after the delay");

    // Past expiry the old credentials are no longer served.
    advance(15 * MIN).await;
    let err = provider.get().await.unwrap_err();
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    assert!(!err.is_config());
    // Waiting callers get the same error without a new request.
    let before = sts.requests().len();
    assert!(provider.get().await.is_err());
    assert_eq!(sts.requests().len(), before);

    sts.set_outage(None);
    advance(MIN).await;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.fake.2");
}

#[tokio::test(start_paused = true)]
async fn invalidate_forces_one_refresh() {
    let imds = ImdsFake::start(ImdsOptions::default()).await.unwrap();
    let mut s = imds_settings(&imds);
    s.source = CredentialSource::Default;
    let home = tempfile::tempdir().unwrap();
    let provider = chain(&s, &[], home.path()).unwrap();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.1");
    provider.invalidate();
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.2");
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.imds.2");
    assert_eq!(imds.issued(), 2);

    // If the forced refresh fails, the rejected credentials are not served again.
    imds.set_outage(Some(500));
    provider.invalidate();
    assert!(provider.get().await.is_err());
}

// --- no secret in Debug or Display -----------------------------------------------------------

#[tokio::test]
async fn debug_and_display_never_show_secrets() {
    let credentials = Credentials::new(
        "LTAIshown",
        Secret::new("hidden-secret"),
        Some(Secret::new("hidden-token")),
    );
    let text = format!("{credentials:?}");
    assert!(
        text.contains("LTAIshown")
            && !text.contains("hidden-secret")
            && !text.contains("hidden-token"),
        "{text}"
    );

    let home = tempfile::tempdir().unwrap();
    write_cli_config(
        home.path(),
        r#"{"current":"p","profiles":[{"name":"p","mode":"StsToken","access_key_id":"LTAIp","access_key_secret":"hidden-profile-secret","sts_token":"hidden-profile-token"}]}"#,
    );
    let sts = sts_with_key("LTAIsource", "hidden-other-secret").await;
    let mut static_settings = ram_role_settings(&sts);
    static_settings.source = CredentialSource::Static;
    let vars = [
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "hidden-env-secret"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "hidden-env-token"),
    ];
    let providers = [
        CredentialProvider::new(&static_settings, CredentialEnv::default()).unwrap(),
        CredentialProvider::new(&settings(CredentialSource::Env), env_with(&vars, None)).unwrap(),
        CredentialProvider::new(
            &settings(CredentialSource::Profile),
            env_with(&[], Some(home.path())),
        )
        .unwrap(),
        CredentialProvider::new(&ram_role_settings(&sts), CredentialEnv::default()).unwrap(),
        CredentialProvider::new(
            &settings(CredentialSource::Default),
            env_with(&vars, Some(home.path())),
        )
        .unwrap(),
    ];
    let mut shown = String::new();
    for provider in &providers {
        let result = provider.get().await;
        shown += &format!("{provider:?} {} {result:?}\n", provider.describe());
        if let Err(e) = result {
            shown += &format!("{e}\n");
        }
    }
    shown += &format!("{:?}", env_with(&vars, None));
    for secret in [
        "hidden-secret",
        "hidden-token",
        "hidden-profile-secret",
        "hidden-profile-token",
        "source-secret",
        "hidden-other-secret",
        "hidden-env-secret",
        "hidden-env-token",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked in:\n{shown}");
    }
    assert!(
        shown.contains("SignatureDoesNotMatch"),
        "the ram_role_arn error is part of the check:\n{shown}"
    );
}

#[test]
fn provider_is_send_and_sync_and_its_get_future_is_send() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let mut s = settings(CredentialSource::Static);
    s.access_key_id = Some("LTAIx".into());
    s.access_key_secret = Some(Secret::new("x"));
    let provider = CredentialProvider::new(&s, CredentialEnv::default()).unwrap();
    assert_send_sync(&provider);
    assert_send(&provider.get());
}
