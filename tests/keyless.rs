//! Keyless credentials end to end: `check --online` names the source (and the role) it used
//! against the credential fakes, and a request refused with an expired STS token refreshes the
//! credentials once and succeeds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dmstrack::credentials::{CredentialEnv, CredentialProvider};
use dmstrack::dms::{DmsClient, DownloadStatus};
use dmstrack::net::ratelimit::RateLimiter;
use dmstrack::net::secret::Secret;
use dmstrack::sim::credentials::{ImdsFake, ImdsOptions, StsFake, StsOptions};
use dmstrack::sim::dms::{DmsSimulator, StatusStep};
use dmstrack::telemetry::metrics::Telemetry;

use crate::support::{self, AK_ID, AK_SECRET, assert_no_secrets, dmstrack, run};

const KEY: &str = "0f6f2c1e-keyless";

/// A DMS simulator that accepts the first `n` numbered credentials a fake hands out.
async fn dms_for(prefix: &str, n: u64) -> DmsSimulator {
    let sim = DmsSimulator::start().await.unwrap();
    for i in 1..=n {
        sim.add_sts_credentials(
            format!("STS.{prefix}.{i}"),
            format!("{prefix}-secret-{i}"),
            format!("{prefix}-token-{i}"),
        );
    }
    sim.script_ticket(77, KEY, [StatusStep::Downloading]);
    sim
}

fn ticket() -> String {
    format!("[[tickets]]\norder_id = 77\ndownload_key_id = \"{KEY}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_names_the_assumed_role() {
    let sts = StsFake::start(StsOptions {
        access_keys: HashMap::from([(AK_ID.to_owned(), Secret::new(AK_SECRET))]),
        ..StsOptions::default()
    })
    .await
    .unwrap();
    let dms = dms_for("fake", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[dms]\nendpoint = \"{}\"\n[credentials]\nsource = \"ram_role_arn\"\nrole_arn = \"acs:ram::123:role/dms-archiver\"\n\
         sts_endpoint = \"{}\"\naccess_key_id = \"{AK_ID}\"\naccess_key_secret = \"{AK_SECRET}\"\n{}",
        dms.endpoint(),
        sts.endpoint(),
        ticket()
    );
    let config = support::write_config(dir.path(), &body);
    let mut cmd = dmstrack();
    cmd.args(["check", "--online", "-c"]).arg(&config);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("credentials: ram_role_arn")
            && stdout.contains("acs:ram::123:role/dms-archiver"),
        "{stdout}"
    );
    assert!(stdout.contains("DOWNLOADING"), "{stdout}");
    assert_eq!(sts.count("AssumeRole"), 1);
    assert_no_secrets(
        &format!("{stdout}{stderr}"),
        &[AK_SECRET, "fake-secret-1", "fake-token-1"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_names_the_ecs_role() {
    let imds = ImdsFake::start(ImdsOptions::default()).await.unwrap();
    let dms = dms_for("imds", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[dms]\nendpoint = \"{}\"\n[credentials]\nsource = \"ecs_ram_role\"\nmetadata_endpoint = \"{}\"\n{}",
        dms.endpoint(),
        imds.endpoint(),
        ticket()
    );
    let config = support::write_config(dir.path(), &body);
    let mut cmd = dmstrack();
    cmd.args(["check", "--online", "-c"]).arg(&config);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("credentials: ecs_ram_role") && stdout.contains("dms-reader"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_names_the_rrsa_role_of_the_default_chain() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOi.projected.token").unwrap();
    let sts = StsFake::start(StsOptions {
        oidc_token_file: Some(token_file.clone()),
        ..StsOptions::default()
    })
    .await
    .unwrap();
    let dms = dms_for("fake", 2).await;
    let body = format!(
        "[dms]\nendpoint = \"{}\"\n[credentials]\nsource = \"default\"\nsts_endpoint = \"{}\"\n{}",
        dms.endpoint(),
        sts.endpoint(),
        ticket()
    );
    let config = support::write_config(dir.path(), &body);
    let mut cmd = dmstrack();
    cmd.args(["check", "--online", "-c"])
        .arg(&config)
        .env("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::123:role/rrsa-archiver")
        .env(
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            "acs:ram::123:oidc-provider/ack-rrsa",
        )
        .env("ALIBABA_CLOUD_OIDC_TOKEN_FILE", &token_file)
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true");
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("credentials: default chain → oidc (role acs:ram::123:role/rrsa-archiver)"),
        "{stdout}"
    );
    assert_no_secrets(
        &format!("{stdout}{stderr}"),
        &["eyJhbGciOi.projected.token", "fake-token-1"],
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_refreshes_the_credentials_once() {
    let sts = StsFake::start(StsOptions {
        access_keys: HashMap::from([(AK_ID.to_owned(), Secret::new(AK_SECRET))]),
        ..StsOptions::default()
    })
    .await
    .unwrap();
    let dms = dms_for("fake", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[dms]\nendpoint = \"{}\"\n[credentials]\nsource = \"ram_role_arn\"\nrole_arn = \"acs:ram::1:role/r\"\n\
         sts_endpoint = \"{}\"\naccess_key_id = \"{AK_ID}\"\naccess_key_secret = \"{AK_SECRET}\"\n",
        dms.endpoint(),
        sts.endpoint()
    );
    let config = support::config(dir.path(), &body);
    let provider =
        CredentialProvider::new(&config.credentials, CredentialEnv::from_vars([], None)).unwrap();
    let client = DmsClient::new(
        &config.dms,
        provider,
        Arc::new(RateLimiter::new(100.0)),
        Telemetry::default(),
    )
    .unwrap();
    assert_eq!(
        client.query_status(77, KEY, None).await.unwrap().status,
        DownloadStatus::Downloading
    );
    assert!(dms.expire_sts_token("STS.fake.1"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let status = client.query_status(77, KEY, None).await.unwrap();
    assert_eq!(status.status, DownloadStatus::Downloading);
    assert_eq!(sts.count("AssumeRole"), 2, "one forced refresh");
    let ids: Vec<_> = dms
        .calls()
        .into_iter()
        .map(|c| c.access_key_id.unwrap())
        .collect();
    assert_eq!(ids, ["STS.fake.1", "STS.fake.1", "STS.fake.2"]);
    assert_eq!(
        dms.calls()[1].error_code.as_deref(),
        Some("InvalidSecurityToken.Expired")
    );
}
