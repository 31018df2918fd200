//! The DMS client against the simulator: signatures, the retry table, nonces, the global rate
//! limit and secrets. Time-dependent tests run on paused tokio time with the simulator on the
//! same current-thread runtime.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dmstrack::config::{ExportSpec, RollbackSqlType};
use dmstrack::credentials::{CredentialEnv, CredentialProvider};
use dmstrack::dms::{DmsClient, DmsError, DownloadStatus};
use dmstrack::net::ratelimit::RateLimiter;
use dmstrack::sim::dms::{DmsFault, DmsSimulator, StatusStep};
use dmstrack::telemetry::metrics::Telemetry;

use crate::support::{self, AK_ID, AK_SECRET, LogCapture, assert_no_secrets};

const KEY: &str = "e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd";
const URL: &str = "https://idbsaasstore.oss-cn-zhangjiakou.aliyuncs.com/x_REDO_31201_207.zip?Expires=1682239593&OSSAccessKeyId=LTAIoss&Signature=c2lnbmF0dXJl%2Bx%3D";

struct Setup {
    sim: DmsSimulator,
    client: DmsClient,
    _dir: tempfile::TempDir,
}

/// A simulator and a client; `rps` is `dms.max_requests_per_second`.
async fn setup_with_rate(signature: &str, secret: &str, rps: f64) -> Setup {
    let sim = DmsSimulator::start().await.unwrap();
    sim.add_access_key(AK_ID, AK_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let body = support::preamble(dir.path(), &sim.endpoint(), signature, secret).replace(
        "[dms]\n",
        &format!("[dms]\nmax_requests_per_second = {rps:?}\n"),
    );
    let config = support::config(dir.path(), &body);
    let limiter = Arc::new(RateLimiter::new(config.dms.max_requests_per_second));
    let client = DmsClient::new(
        &config.dms,
        support::credentials(&config),
        limiter,
        Telemetry::default(),
    )
    .unwrap();
    Setup {
        sim,
        client,
        _dir: dir,
    }
}

/// A fast rate limit, for tests about other things.
async fn setup(signature: &str, secret: &str) -> Setup {
    setup_with_rate(signature, secret, 1000.0).await
}

#[tokio::test]
async fn query_succeeds_with_v3_and_v1() {
    for signature in ["v3", "v1"] {
        let s = setup(signature, AK_SECRET).await;
        s.sim.script_ticket(
            7,
            KEY,
            [StatusStep::Downloading, StatusStep::success(URL, 69)],
        );
        let first = s.client.query_status(7, KEY, Some(3)).await.unwrap();
        assert_eq!(first.status, DownloadStatus::Downloading);
        assert!(first.url.is_none());
        let second = s.client.query_status(7, KEY, Some(3)).await.unwrap();
        assert_eq!(second.status, DownloadStatus::Success);
        assert_eq!(second.total_count, Some(69));
        let url = second.url.unwrap();
        assert_eq!(
            url.expose(),
            URL,
            "the trailing newline is trimmed, nothing else changes"
        );
        assert_eq!(
            second.body["ErrorCode"], "UnknownError",
            "ErrorCode is filled even on success"
        );
        let calls = s.sim.calls();
        assert_eq!(calls.len(), 2);
        assert!(
            calls
                .iter()
                .all(|c| c.status == Some(200) && c.method == "POST")
        );
        assert_eq!(calls[0].params.get("Tid").map(String::as_str), Some("3"));
        assert_eq!(
            calls[0].params.get("DownloadKeyId").map(String::as_str),
            Some(KEY)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn throttling_waits_the_servers_delay_then_retries_with_a_new_nonce() {
    let s = setup("v3", AK_SECRET).await;
    s.sim.script_ticket(7, KEY, [StatusStep::Init]);
    s.sim.inject(
        1,
        DmsFault::Throttling {
            retry_after_ms: 2500,
        },
    );
    let status = s.client.query_status(7, KEY, None).await.unwrap();
    assert_eq!(status.status, DownloadStatus::Init);
    let calls = s.sim.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].error_code.as_deref(), Some("Throttling.User"));
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_millis(2500) && gap < Duration::from_millis(2600),
        "waited {gap:?}"
    );
    assert_ne!(calls[0].nonce, calls[1].nonce);
    assert_ne!(calls[0].timestamp, None);
}

#[tokio::test(start_paused = true)]
async fn every_retryable_fault_is_retried_and_signed_anew() {
    let faults = [
        DmsFault::ServiceUnavailable,
        DmsFault::InternalError,
        DmsFault::MalformedJson,
        DmsFault::DropConnection,
        DmsFault::Throttling { retry_after_ms: 10 },
    ];
    for fault in faults {
        for signature in ["v3", "v1"] {
            let s = setup(signature, AK_SECRET).await;
            s.sim.script_ticket(7, KEY, [StatusStep::Listing]);
            s.sim.inject(1, fault.clone());
            let status = s
                .client
                .query_status(7, KEY, None)
                .await
                .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
            assert_eq!(status.status, DownloadStatus::Listing);
            let calls = s.sim.calls();
            assert_eq!(calls.len(), 2, "{fault:?} {signature}: exactly one retry");
            assert_eq!(calls[1].status, Some(200));
            assert_ne!(
                calls[0].nonce, calls[1].nonce,
                "{fault:?}: a retry must carry a fresh nonce"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_max_attempts() {
    let s = setup("v3", AK_SECRET).await;
    s.sim.script_ticket(7, KEY, [StatusStep::Init]);
    for call in 1..=5 {
        s.sim.inject(call, DmsFault::ServiceUnavailable);
    }
    let err = s.client.query_status(7, KEY, None).await.unwrap_err();
    assert!(
        matches!(err, DmsError::Unavailable { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), 75);
    assert_eq!(s.sim.call_count(), 3, "dms.max_attempts = 3");
    assert!(err.to_string().contains("ServiceUnavailable"), "{err}");
}

#[tokio::test]
async fn auth_failures_are_not_retried() {
    let s = setup("v3", "the-wrong-secret").await;
    s.sim.script_ticket(7, KEY, [StatusStep::Init]);
    let err = s.client.query_status(7, KEY, None).await.unwrap_err();
    assert_eq!(err.exit_code(), 78);
    let text = err.to_string();
    assert!(
        text.contains("SignatureDoesNotMatch") && text.contains("RequestId"),
        "{text}"
    );
    assert!(
        !text.contains("string to sign"),
        "the server's string to sign is not echoed: {text}"
    );
    assert_eq!(s.sim.call_count(), 1);

    let s = setup("v1", AK_SECRET).await;
    assert!(s.sim.remove_access_key(AK_ID));
    let err = s.client.query_status(7, KEY, None).await.unwrap_err();
    assert!(
        err.to_string().contains("InvalidAccessKeyId.NotFound"),
        "{err}"
    );
    assert_eq!((err.exit_code(), s.sim.call_count()), (78, 1));
}

#[tokio::test]
async fn a_skewed_clock_is_reported_not_retried() {
    let s = setup("v3", AK_SECRET).await;
    let sim = s.sim;
    sim.set_clock_offset(jiff::SignedDuration::from_mins(20));
    let err = s.client.query_status(7, KEY, None).await.unwrap_err();
    assert!(
        err.to_string().contains("InvalidTimeStamp.Expired"),
        "{err}"
    );
    assert_eq!((err.exit_code(), sim.call_count()), (78, 1));
}

#[tokio::test]
async fn business_failures_are_reported_with_their_code() {
    let s = setup("v3", AK_SECRET).await;
    let err = s
        .client
        .query_status(404, "no-such-key", None)
        .await
        .unwrap_err();
    assert!(matches!(err, DmsError::Api { .. }), "{err}");
    assert!(err.to_string().contains("InvalidParameter"), "{err}");
    assert_eq!((err.exit_code(), s.sim.call_count()), (1, 1));

    s.sim.script_ticket(7, KEY, [StatusStep::Init]);
    s.sim.inject(
        2,
        DmsFault::BusinessFailure {
            code: "OrderNotExist".into(),
            message: "no such order".into(),
        },
    );
    let err = s.client.query_status(7, KEY, None).await.unwrap_err();
    assert!(
        err.to_string().contains("OrderNotExist: no such order"),
        "{err}"
    );
    assert_eq!(
        s.sim.call_count(),
        2,
        "a Success=false answer is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn nonces_are_never_reused() {
    let s = setup("v1", AK_SECRET).await;
    s.sim.script_ticket(7, KEY, [StatusStep::Init]);
    for call in [2, 5, 6, 9] {
        s.sim.inject(call, DmsFault::InternalError);
    }
    for _ in 0..20 {
        s.client.query_status(7, KEY, None).await.unwrap();
    }
    let nonces: Vec<_> = s
        .sim
        .calls()
        .into_iter()
        .map(|c| c.nonce.unwrap())
        .collect();
    assert_eq!(nonces.len(), 24);
    assert_eq!(nonces.iter().collect::<HashSet<_>>().len(), 24);
}

#[tokio::test(start_paused = true)]
async fn one_rate_limit_holds_across_fifty_concurrent_callers() {
    let s = setup_with_rate("v3", AK_SECRET, 10.0).await;
    s.sim.script_ticket(7, KEY, [StatusStep::Init]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = s.client.clone();
        tasks.spawn(async move { client.query_status(7, KEY, None).await.map(|_| ()) });
    }
    for result in tasks.join_all().await {
        result.unwrap();
    }
    let mut times: Vec<_> = s.sim.calls().into_iter().map(|c| c.at).collect();
    times.sort();
    assert_eq!(times.len(), 50);
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(100),
            "two requests {:?} apart",
            pair[1] - pair[0]
        );
    }
    assert!(times[49] - times[0] >= Duration::from_millis(4900));
}

#[tokio::test]
async fn export_sends_every_parameter_as_the_sdk_does() {
    let s = setup("v3", AK_SECRET).await;
    s.sim.script_export(406, [StatusStep::Init]);
    let spec = ExportSpec {
        rollback_sql_type: RollbackSqlType::Forward,
        filter_start_time: Some("2026-11-27 00:00:00".into()),
        filter_end_time: Some("2026-11-27 23:59:59".into()),
        filter_tables: vec!["orders".into(), "订单".into()],
        filter_types: vec!["UPDATE".into(), "DELETE".into()],
        column_filter: Some(dmstrack::config::ColumnFilter {
            between_end: None,
            between_start: None,
            column_name: "account_name".into(),
            in_list: vec!["1".into(), "2 3".into()],
            operator: dmstrack::config::ColumnOperator::In,
            value: None,
        }),
        event_ids: vec![1, 2],
    };
    let key = s.client.start_export(406, Some(3), &spec).await.unwrap();
    let exports = s.sim.exports();
    assert_eq!(exports.len(), 1);
    let e = &exports[0];
    assert_eq!(e.download_key_id, key);
    assert_eq!(
        (e.order_id, e.rollback_sql_type.as_str(), e.tid),
        (406, "FORWARD", Some(3))
    );
    assert_eq!(
        e.filter_table_list.as_deref(),
        Some(&["orders".to_owned(), "订单".to_owned()][..])
    );
    assert_eq!(
        e.filter_type_list.as_deref(),
        Some(&["UPDATE".to_owned(), "DELETE".to_owned()][..])
    );
    assert_eq!(e.event_id_list.as_deref(), Some(&[1, 2][..]));
    assert_eq!(e.column_filter.as_ref().unwrap()["InList"][1], "2 3");
    assert_eq!(e.filter_start_time.as_deref(), Some("2026-11-27 00:00:00"));
    // The minted key follows the export script.
    assert_eq!(
        s.client
            .query_status(406, &key, Some(3))
            .await
            .unwrap()
            .status,
        DownloadStatus::Init
    );
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_logs_or_errors() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    const TOKEN: &str = "CAIS-sts-token-Zq9w-never-print";
    for signature in ["v1", "v3"] {
        let sim = DmsSimulator::start().await.unwrap();
        sim.add_sts_credentials("STS.testkey", AK_SECRET, TOKEN);
        sim.script_ticket(7, KEY, [StatusStep::success(URL, 1)]);
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "[dms]\nendpoint = \"{}\"\nsignature = \"{signature}\"\n[credentials]\nsource = \"static\"\naccess_key_id = \"STS.testkey\"\naccess_key_secret = \"{AK_SECRET}\"\nsecurity_token = \"{TOKEN}\"\n",
            sim.endpoint()
        );
        let config = support::config(dir.path(), &body);
        let provider =
            CredentialProvider::new(&config.credentials, CredentialEnv::from_vars([], None))
                .unwrap();
        let limiter = Arc::new(RateLimiter::new(100.0));
        let client = DmsClient::new(
            &config.dms,
            provider,
            Arc::clone(&limiter),
            Telemetry::default(),
        )
        .unwrap();
        let ok = client.query_status(7, KEY, None).await.unwrap();
        let shown = format!("{ok:?} {:?}", ok.url);
        assert_no_secrets(&shown, &["c2lnbmF0dXJl", "LTAIoss"]);

        // Now the wrong secret: the gateway answers with its string to sign, token inside.
        let wrong = body.replace(AK_SECRET, "wrong-secret-value");
        let config = support::config(dir.path(), &wrong);
        let provider =
            CredentialProvider::new(&config.credentials, CredentialEnv::from_vars([], None))
                .unwrap();
        let client = DmsClient::new(&config.dms, provider, limiter, Telemetry::default()).unwrap();
        let err = client.query_status(7, KEY, None).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains("SignatureDoesNotMatch"), "{text}");
        assert_no_secrets(&text, &[AK_SECRET, TOKEN, "wrong-secret-value"]);
    }
    let logged = logs.text();
    assert!(
        logged.contains("DMS call succeeded"),
        "the client's own lines are captured: {logged}"
    );
    assert_no_secrets(
        &logged,
        &[
            AK_SECRET,
            TOKEN,
            "wrong-secret-value",
            "c2lnbmF0dXJl",
            "Signature=",
        ],
    );
}
