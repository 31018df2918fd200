//! The `dmstrack` binary: output and exit codes of `query`, `export`, `check` and config errors.

use dmstrack::sim::dms::{DmsSimulator, StatusStep};

use crate::support::{self, AK_ID, AK_SECRET, assert_no_secrets, dmstrack, run};

const KEY: &str = "e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd";

async fn simulator() -> DmsSimulator {
    let sim = DmsSimulator::start().await.unwrap();
    sim.add_access_key(AK_ID, AK_SECRET);
    sim.script_ticket(
        11223344,
        KEY,
        [StatusStep::success("https://idbsaasstore.oss-cn-zhangjiakou.aliyuncs.com/a.zip?Expires=1&OSSAccessKeyId=x&Signature=y", 69)],
    );
    sim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_prints_the_status_json_with_v3_and_v1() {
    let sim = simulator().await;
    for signature in ["v3", "v1"] {
        let dir = tempfile::tempdir().unwrap();
        let config = support::write_config(
            dir.path(),
            &support::preamble(dir.path(), &sim.endpoint(), signature, AK_SECRET),
        );
        let mut cmd = dmstrack();
        cmd.args(["query", "-c"]).arg(&config).args([
            "--order-id",
            "11223344",
            "--download-key-id",
            KEY,
            "--tid",
            "3",
        ]);
        let (code, stdout, stderr) = run(cmd).await;
        assert_eq!(code, 0, "{signature}: {stderr}");
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["Success"], true);
        assert_eq!(json["StatusResult"]["DownloadStatus"], "DOWNLOAD_SUCCESS");
        assert_eq!(json["StatusResult"]["TotalCount"], 69);
    }
    let versions: Vec<_> = sim.calls().iter().map(|c| c.signature_version).collect();
    assert_eq!(
        versions,
        [
            Some(dmstrack::net::signer::SignatureVersion::V3),
            Some(dmstrack::net::signer::SignatureVersion::V1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_exits_78_naming_the_code_without_the_secret() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        &support::preamble(dir.path(), &sim.endpoint(), "v1", "wrong-secret-123"),
    );
    let mut cmd = dmstrack();
    cmd.args(["--log-level", "trace", "query", "-c"])
        .arg(&config)
        .args(["--order-id", "11223344", "--download-key-id", KEY]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("SignatureDoesNotMatch"), "{stderr}");
    assert_no_secrets(
        &format!("{stdout}{stderr}"),
        &["wrong-secret-123", AK_SECRET],
    );
    assert_eq!(sim.call_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let body = support::preamble(
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        "v3",
        AK_SECRET,
    );
    let config = support::write_config(
        dir.path(),
        &body.replace("max_attempts = 3", "max_attempts = 2"),
    );
    let mut cmd = dmstrack();
    cmd.args(["query", "-c"])
        .arg(&config)
        .args(["--order-id", "1", "--download-key-id", KEY]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("could not be reached"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_prints_the_new_key() {
    let sim = simulator().await;
    sim.script_export(406, [StatusStep::Init]);
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        &support::preamble(dir.path(), &sim.endpoint(), "v3", AK_SECRET),
    );
    let mut cmd = dmstrack();
    cmd.args(["export", "-c"]).arg(&config).args([
        "--order-id",
        "406",
        "--rollback-sql-type",
        "REVERSE",
        "--filter-table",
        "orders,users",
        "--filter-type",
        "UPDATE",
        "--filter-start-time",
        "2026-11-27 00:00:00",
    ]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    let exports = sim.exports();
    assert_eq!(stdout.trim(), exports[0].download_key_id);
    assert_eq!(
        exports[0].filter_table_list.as_deref(),
        Some(&["orders".to_owned(), "users".to_owned()][..])
    );

    let mut cmd = dmstrack();
    cmd.args(["export", "-c"]).arg(&config).args([
        "--order-id",
        "406",
        "--rollback-sql-type",
        "SIDEWAYS",
    ]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 2, "a usage error: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_78_with_file_line_column() {
    let cases = [
        (
            "[dms]\nendpoint = \"https://x\"\nbogus_key = 1\n",
            ":3:1: dms.bogus_key: unknown field `bogus_key`",
        ),
        (
            "[dms]\nmax_attempts = \"five\"\n",
            ":2:16: dms.max_attempts: invalid type: string \"five\", expected a whole number",
        ),
        (
            "[poll]\ninitial_interval = \"5 fortnights\"\n",
            ":2:20: poll.initial_interval: invalid duration \"5 fortnights\"",
        ),
    ];
    for (body, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = support::write_config(dir.path(), body);
        for args in [
            &["check"][..],
            &["run", "--once"],
            &["status"],
            &["query", "--order-id", "1", "--download-key-id", "k"],
        ] {
            let mut cmd = dmstrack();
            cmd.args(args).arg("-c").arg(&config);
            let (code, _, stderr) = run(cmd).await;
            assert_eq!(code, 78, "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("{}{expected}", config.display())),
                "{args:?}: {stderr}"
            );
        }
    }
    let mut cmd = dmstrack();
    cmd.args(["check", "-c", "/nonexistent/dmstrack.toml"]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 78);
    assert!(
        stderr.contains("cannot read config file /nonexistent/dmstrack.toml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_validates_and_warns_about_readable_inline_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[credentials]\nsource = \"static\"\naccess_key_id = \"{AK_ID}\"\naccess_key_secret = \"{AK_SECRET}\"\n[[tickets]]\norder_id = 1\ndownload_key_id = \"{KEY}\"\n"
    );
    let config = support::write_config(dir.path(), &body);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = dmstrack();
    cmd.args(["check", "-c"]).arg(&config);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("OK (1 ticket(s))"), "{stdout}");
    assert!(
        stderr.contains("credentials.access_key_secret written inline") && stderr.contains("0644"),
        "{stderr}"
    );
    assert_no_secrets(&format!("{stdout}{stderr}"), &[AK_SECRET]);

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = dmstrack();
    cmd.args(["check", "-c"]).arg(&config);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 0);
    assert!(
        !stderr.contains("inline"),
        "no warning for a private file: {stderr}"
    );
}

/// `check` refuses s3:// keys the daemon could not use (exit 1), as it does the DMS keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_s3_keys_the_daemon_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[credentials]\nsource = \"static\"\naccess_key_id = \"{AK_ID}\"\naccess_key_secret_file = \"ak\"\n\
         [upload]\nurl = \"s3://archive-bucket/p\"\nendpoint = \"http://127.0.0.1:9\"\n"
    );
    std::fs::write(dir.path().join("ak"), AK_SECRET).unwrap();
    let cases = [
        (
            format!(
                "{base}[upload.credentials]\naccess_key_id = \"AKIAX\"\nsecret_access_key_file = \"missing\"\n"
            ),
            "upload.credentials.secret_access_key_file",
        ),
        (base.clone(), "AWS_ACCESS_KEY_ID"),
    ];
    for (body, expected) in cases {
        let config = support::write_config(dir.path(), &body);
        let mut cmd = dmstrack();
        cmd.args(["check", "-c"]).arg(&config);
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            cmd.env_remove(var);
        }
        let (code, _, stderr) = run(cmd).await;
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("upload credentials") && stderr.contains(expected),
            "{stderr}"
        );
    }
    // With the keys in the environment it passes.
    let config = support::write_config(dir.path(), &base);
    let mut cmd = dmstrack();
    cmd.args(["check", "-c"])
        .arg(&config)
        .env("AWS_ACCESS_KEY_ID", "AKIAX")
        .env("AWS_SECRET_ACCESS_KEY", "s3-secret");
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_queries_each_ticket() {
    let sim = simulator().await;
    sim.script_ticket(5, "failed-key", [StatusStep::fail("binlog expired")]);
    let dir = tempfile::tempdir().unwrap();
    let mut body = support::preamble(dir.path(), &sim.endpoint(), "v3", AK_SECRET);
    body.push_str(&format!(
        "[[tickets]]\norder_id = 11223344\ndownload_key_id = \"{KEY}\"\nlabel = \"good\"\n"
    ));
    let config = support::write_config(dir.path(), &body);
    let mut cmd = dmstrack();
    cmd.args(["check", "--online", "-c"]).arg(&config);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("credentials: static"), "{stdout}");
    assert!(
        stdout.contains(
            "order 11223344 (good) key e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd: DOWNLOAD_SUCCESS"
        ),
        "{stdout}"
    );

    body.push_str("[[tickets]]\norder_id = 5\ndownload_key_id = \"failed-key\"\n");
    let config = support::write_config(dir.path(), &body);
    let mut cmd = dmstrack();
    cmd.args(["check", "--online", "-c"]).arg(&config);
    let (code, stdout, _) = run(cmd).await;
    assert_eq!(code, 1, "a ticket problem: {stdout}");
    assert!(
        stdout.contains("order 5 key failed-key: DOWNLOAD_FAIL (binlog expired)"),
        "{stdout}"
    );
}
