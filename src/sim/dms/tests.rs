//! Tests of the DMS simulator over real loopback HTTP: requests are built with
//! `crate::net::signer` (or by hand, to break them in one precise way) and sent with reqwest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jiff::SignedDuration;
use serde_json::Value;

use super::*;
use crate::credentials::Credentials;
use crate::net::signer::{
    self, EMPTY_BODY_SHA256, RpcRequest, SignatureVersion, SignedRequest, canonical_query,
    format_timestamp, percent_encode, sha256_hex, v1_signature, v1_string_to_sign,
    v3_canonical_headers, v3_canonical_request, v3_signature,
};

const AK: &str = "LTAI5tSimKey";
const SK: &str = "sim-secret-value";
const STS_AK: &str = "STS.NUsimKey";
const STS_SK: &str = "sts-secret-value";
const STS_TOKEN: &str = "CAIStokenvalue";
const ORDER: i64 = 1001;
const KEY: &str = "dk-1";

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn query_params() -> Vec<(String, String)> {
    pairs(&[("OrderId", "1001"), ("DownloadKeyId", KEY), ("Tid", "3")])
}

fn ak() -> Credentials {
    Credentials::new(AK, Secret::new(SK), None)
}

fn sts() -> Credentials {
    Credentials::new(STS_AK, Secret::new(STS_SK), Some(Secret::new(STS_TOKEN)))
}

fn fresh_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn started() -> DmsSimulator {
    let sim = DmsSimulator::start().await.unwrap();
    sim.add_access_key(AK, SK);
    sim.add_sts_credentials(STS_AK, STS_SK, STS_TOKEN);
    sim.script_ticket(ORDER, KEY, [StatusStep::Init]);
    sim
}

/// An answer as the client saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    fn code(&self) -> String {
        self.json()["Code"].as_str().unwrap_or_default().to_owned()
    }

    fn error_code(&self) -> String {
        self.json()["ErrorCode"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn download_status(&self) -> String {
        self.json()["StatusResult"]["DownloadStatus"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[track_caller]
    fn assert_gateway_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "{self:?}"
        );
        assert_eq!(
            self.headers["content-type"],
            "application/json;charset=utf-8"
        );
        let json = self.json();
        for field in ["RequestId", "HostId", "Message", "Recommend"] {
            assert!(json[field].is_string(), "{field} missing: {json}");
        }
    }

    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.json()["Success"], true, "{self:?}");
    }
}

/// One call to sign with `crate::net::signer::sign`.
#[derive(Clone, Debug)]
struct Call {
    version: SignatureVersion,
    method: &'static str,
    action: String,
    api_version: String,
    params: Vec<(String, String)>,
    credentials: Credentials,
    timestamp: jiff::Timestamp,
    nonce: String,
}

impl Call {
    fn new(version: SignatureVersion, credentials: Credentials) -> Self {
        Self {
            version,
            method: "POST",
            action: QUERY_STATUS_ACTION.to_owned(),
            api_version: API_VERSION.to_owned(),
            params: query_params(),
            credentials,
            timestamp: jiff::Timestamp::now(),
            nonce: fresh_nonce(),
        }
    }

    fn action(mut self, action: &str, params: Vec<(String, String)>) -> Self {
        self.action = action.to_owned();
        self.params = params;
        self
    }

    fn sign(&self, sim: &DmsSimulator) -> SignedRequest {
        let host = sim.addr().to_string();
        signer::sign(
            self.version,
            &RpcRequest {
                method: self.method,
                host: &host,
                action: &self.action,
                version: &self.api_version,
                params: &self.params,
            },
            &self.credentials,
            self.timestamp,
            &self.nonce,
        )
    }
}

thread_local! {
    // The test harness runs each test on its own thread, so this is one client per test
    // (building a client costs tens of milliseconds in a debug build).
    static HTTP: reqwest::Client = reqwest::Client::builder().no_proxy().build().unwrap();
}

fn http() -> reqwest::Client {
    HTTP.with(reqwest::Client::clone)
}

async fn try_send_raw(
    sim: &DmsSimulator,
    method: &str,
    query: &str,
    headers: &[(String, String)],
    body: Option<(&str, Vec<u8>)>,
) -> reqwest::Result<Reply> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http().request(method, format!("{}/?{query}", sim.endpoint()));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    let response = request.send().await?;
    Ok(Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await?,
    })
}

async fn send_raw(
    sim: &DmsSimulator,
    method: &str,
    query: &str,
    headers: &[(String, String)],
    body: Option<(&str, Vec<u8>)>,
) -> Reply {
    try_send_raw(sim, method, query, headers, body)
        .await
        .unwrap()
}

async fn try_send(sim: &DmsSimulator, call: &Call) -> reqwest::Result<Reply> {
    let signed = call.sign(sim);
    try_send_raw(sim, call.method, &signed.query, &signed.headers, None).await
}

async fn send(sim: &DmsSimulator, call: &Call) -> Reply {
    try_send(sim, call).await.unwrap()
}

/// V3 headers signed by hand: `signed` are signed (plus `host`), `unsigned` are only sent.
fn v3_by_hand(
    sim: &DmsSimulator,
    method: &str,
    query: &[(String, String)],
    signed: Vec<(String, String)>,
    unsigned: Vec<(String, String)>,
    body_sha256: &str,
) -> Vec<(String, String)> {
    let mut to_sign = signed.clone();
    to_sign.push(("host".to_owned(), sim.addr().to_string()));
    let canonical = v3_canonical_request(method, query, &to_sign, body_sha256);
    let (_, signed_names) = v3_canonical_headers(&to_sign);
    let authorization = format!(
        "ACS3-HMAC-SHA256 Credential={AK},SignedHeaders={signed_names},Signature={}",
        v3_signature(SK, &canonical)
    );
    let mut headers = signed;
    headers.extend(unsigned);
    headers.push(("authorization".to_owned(), authorization));
    headers
}

fn v3_standard_headers(date: &str, body_sha256: &str) -> Vec<(String, String)> {
    pairs(&[
        ("x-acs-action", QUERY_STATUS_ACTION),
        ("x-acs-version", API_VERSION),
        ("x-acs-date", date),
        ("x-acs-signature-nonce", &fresh_nonce()),
        ("x-acs-content-sha256", body_sha256),
    ])
}

/// A V1 parameter set signed by hand (common parameters as given, nothing added).
fn v1_by_hand(method: &str, params: &[(String, String)]) -> String {
    let signature = v1_signature(SK, &v1_string_to_sign(method, params));
    format!(
        "{}&Signature={}",
        canonical_query(params),
        percent_encode(&signature)
    )
}

fn v1_common(timestamp: &str) -> Vec<(String, String)> {
    pairs(&[
        ("AccessKeyId", AK),
        ("Action", QUERY_STATUS_ACTION),
        ("Format", "JSON"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", &fresh_nonce()),
        ("SignatureVersion", "1.0"),
        ("Timestamp", timestamp),
        ("Version", API_VERSION),
    ])
}

#[tokio::test]
async fn v3_and_v1_are_accepted_over_post_and_get() {
    let sim = started().await;
    let cases = [
        (SignatureVersion::V3, "POST"),
        (SignatureVersion::V3, "GET"),
        (SignatureVersion::V1, "POST"),
        (SignatureVersion::V1, "GET"),
    ];
    for (version, method) in cases {
        let mut call = Call::new(version, ak());
        call.method = method;
        let reply = send(&sim, &call).await;
        reply.assert_ok();
        assert_eq!(
            reply.headers["content-type"],
            "application/json;charset=utf-8"
        );
        let json = reply.json();
        assert_eq!(json["ErrorCode"], "UnknownError");
        assert_eq!(json["ErrorMessage"], "UnknownError");
        assert_eq!(reply.download_status(), "INIT");
        assert!(json["StatusResult"].get("DownloadUrl").is_none());
    }
    let calls = sim.calls();
    assert_eq!(calls.len(), 4);
    for (index, (call, (version, method))) in calls.iter().zip(cases).enumerate() {
        assert_eq!(call.number, index as u64 + 1);
        assert_eq!(call.method, method);
        assert_eq!(call.signature_version, Some(version));
        assert_eq!(call.action.as_deref(), Some(QUERY_STATUS_ACTION));
        assert_eq!(call.access_key_id.as_deref(), Some(AK));
        assert_eq!(call.status, Some(200));
        assert_eq!(call.error_code, None);
        assert!(call.nonce.as_deref().is_some_and(|n| n.len() == 32));
        assert!(call.timestamp.as_deref().is_some_and(|t| t.ends_with('Z')));
        // Only business parameters: V1's common ones (and its signature) are not there.
        assert_eq!(
            call.params.keys().collect::<Vec<_>>(),
            ["DownloadKeyId", "OrderId", "Tid"]
        );
    }
    assert_eq!(sim.call_count(), 4);
    assert_eq!(sim.action_count(QUERY_STATUS_ACTION), 4);
    assert_eq!(sim.status_answers(ORDER, KEY), 4);
}

#[tokio::test]
async fn form_body_params_are_accepted_as_older_sdks_send_them() {
    let sim = started().await;
    // V1: everything in the form body; the string to sign covers query and body together.
    let mut params = v1_common(&format_timestamp(jiff::Timestamp::now()));
    params.extend(query_params());
    let form = v1_by_hand("POST", &params);
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let reply = send_raw(
        &sim,
        "POST",
        "",
        &[],
        Some((content_type, form.into_bytes())),
    )
    .await;
    reply.assert_ok();
    assert_eq!(reply.download_status(), "INIT");

    // V3: business params in the body, which is hashed, and an empty canonical query.
    let body = canonical_query(&query_params()).into_bytes();
    let body_hash = sha256_hex(&body);
    let date = format_timestamp(jiff::Timestamp::now());
    let headers = v3_by_hand(
        &sim,
        "POST",
        &[],
        v3_standard_headers(&date, &body_hash),
        Vec::new(),
        &body_hash,
    );
    let reply = send_raw(&sim, "POST", "", &headers, Some((content_type, body))).await;
    reply.assert_ok();
    assert_eq!(sim.calls()[1].params["DownloadKeyId"], KEY);
}

#[tokio::test]
async fn wrong_secret_is_signature_does_not_match_with_the_server_string() {
    let sim = started().await;
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let wrong = Credentials::new(AK, Secret::new("not-the-secret"), None);
        let reply = send(&sim, &Call::new(version, wrong)).await;
        reply.assert_gateway_error(400, "SignatureDoesNotMatch");
        let message = reply.json()["Message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with(
                "Specified signature is not matched with our calculation. server string to sign is:"
            ),
            "{message}"
        );
        match version {
            SignatureVersion::V1 => {
                assert!(message.contains("is:POST&%2F&AccessKeyId"), "{message}")
            }
            SignatureVersion::V3 => {
                assert!(message.contains("is:POST\n/\nDownloadKeyId="), "{message}")
            }
        }
    }
    // With STS the echoed string holds the token: why clients must never log this message.
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let wrong = Credentials::new(STS_AK, Secret::new("nope"), Some(Secret::new(STS_TOKEN)));
        let reply = send(&sim, &Call::new(version, wrong)).await;
        reply.assert_gateway_error(400, "SignatureDoesNotMatch");
        assert!(reply.body.contains(STS_TOKEN), "{}", reply.body);
    }
    assert!(
        sim.calls()
            .iter()
            .all(|call| call.error_code.as_deref() == Some("SignatureDoesNotMatch"))
    );
}

#[tokio::test]
async fn unknown_access_key_is_not_found() {
    let sim = started().await;
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let stranger = Credentials::new("LTAIstranger", Secret::new(SK), None);
        send(&sim, &Call::new(version, stranger))
            .await
            .assert_gateway_error(404, "InvalidAccessKeyId.NotFound");
    }
    assert!(sim.remove_access_key(AK));
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_gateway_error(404, "InvalidAccessKeyId.NotFound");
}

#[tokio::test]
async fn a_nonce_is_spent_per_access_key_and_only_by_accepted_requests() {
    let sim = started().await;
    sim.add_access_key("LTAIother", SK);
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let first = Call::new(version, ak());
        send(&sim, &first).await.assert_ok();
        let mut again = Call::new(version, ak());
        again.nonce.clone_from(&first.nonce);
        send(&sim, &again)
            .await
            .assert_gateway_error(400, "SignatureNonceUsed");
        let mut other_key = Call::new(
            version,
            Credentials::new("LTAIother", Secret::new(SK), None),
        );
        other_key.nonce.clone_from(&first.nonce);
        send(&sim, &other_key).await.assert_ok();

        let mut forged = Call::new(version, Credentials::new(AK, Secret::new("bad"), None));
        let nonce = forged.nonce.clone();
        send(&sim, &forged)
            .await
            .assert_gateway_error(400, "SignatureDoesNotMatch");
        forged.credentials = ak();
        assert_eq!(forged.nonce, nonce);
        send(&sim, &forged).await.assert_ok();
    }
}

#[tokio::test]
async fn timestamps_more_than_15_minutes_off_either_way_are_expired() {
    let sim = started().await;
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        for (minutes, accepted) in [(-16, false), (16, false), (-14, true), (14, true)] {
            let mut call = Call::new(version, ak());
            call.timestamp = sim.now() + SignedDuration::from_mins(minutes);
            let reply = send(&sim, &call).await;
            if accepted {
                reply.assert_ok();
            } else {
                reply.assert_gateway_error(400, "InvalidTimeStamp.Expired");
            }
        }
    }
    // The simulator's own clock moves too: the client signs with the wall clock.
    for (minutes, accepted) in [(16, false), (-16, false), (14, true), (-14, true)] {
        sim.set_clock_offset(SignedDuration::from_mins(minutes));
        let reply = send(&sim, &Call::new(SignatureVersion::V3, ak())).await;
        assert_eq!(
            reply.status == 200,
            accepted,
            "offset {minutes} min: {reply:?}"
        );
        if !accepted {
            reply.assert_gateway_error(400, "InvalidTimeStamp.Expired");
        }
    }
}

#[tokio::test]
async fn badly_formatted_timestamps_are_rejected() {
    let sim = started().await;
    let query = canonical_query(&query_params());
    let headers = v3_by_hand(
        &sim,
        "POST",
        &query_params(),
        v3_standard_headers("2024-01-02 03:04:05", EMPTY_BODY_SHA256),
        Vec::new(),
        EMPTY_BODY_SHA256,
    );
    send_raw(&sim, "POST", &query, &headers, None)
        .await
        .assert_gateway_error(400, "InvalidTimeStamp.Format");

    let mut params = v1_common("1704164645");
    params.extend(query_params());
    send_raw(&sim, "POST", &v1_by_hand("POST", &params), &[], None)
        .await
        .assert_gateway_error(400, "InvalidTimeStamp.Format");
}

#[tokio::test]
async fn sts_requests_must_carry_the_matching_live_token() {
    let sim = started().await;
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        send(&sim, &Call::new(version, sts())).await.assert_ok();
        let wrong_token = Credentials::new(STS_AK, Secret::new(STS_SK), Some(Secret::new("other")));
        send(&sim, &Call::new(version, wrong_token))
            .await
            .assert_gateway_error(400, "InvalidSecurityToken.Mismatch");
        let no_token = Credentials::new(STS_AK, Secret::new(STS_SK), None);
        send(&sim, &Call::new(version, no_token))
            .await
            .assert_gateway_error(400, "MissingSecurityToken");
        let token_on_long_term_key = Credentials::new(AK, Secret::new(SK), Some(Secret::new("x")));
        send(&sim, &Call::new(version, token_on_long_term_key))
            .await
            .assert_gateway_error(400, "InvalidSecurityToken.Mismatch");
    }

    assert!(sim.expire_sts_token(STS_AK));
    assert!(!sim.expire_sts_token(AK), "a long-term key has no token");
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        send(&sim, &Call::new(version, sts()))
            .await
            .assert_gateway_error(400, "InvalidSecurityToken.Expired");
    }
    // What a forced refresh brings: new temporary credentials, which work.
    sim.add_sts_credentials("STS.NUrefreshed", "s2", "token-2");
    let refreshed = Credentials::new(
        "STS.NUrefreshed",
        Secret::new("s2"),
        Some(Secret::new("token-2")),
    );
    send(&sim, &Call::new(SignatureVersion::V3, refreshed))
        .await
        .assert_ok();
}

#[tokio::test]
async fn an_unsigned_v3_token_header_is_incomplete() {
    let sim = started().await;
    let date = format_timestamp(jiff::Timestamp::now());
    let headers = v3_by_hand(
        &sim,
        "POST",
        &query_params(),
        v3_standard_headers(&date, EMPTY_BODY_SHA256),
        pairs(&[("x-acs-security-token", STS_TOKEN)]),
        EMPTY_BODY_SHA256,
    );
    let query = canonical_query(&query_params());
    let reply = send_raw(&sim, "POST", &query, &headers, None).await;
    reply.assert_gateway_error(400, "IncompleteSignature");
    assert!(reply.body.contains("x-acs-security-token must be signed"));
}

#[tokio::test]
async fn scripted_sequence_advances_and_repeats_its_last_step() {
    let sim = started().await;
    let minted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&minted);
    let url = UrlSource::generated(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        format!("https://bucket.oss.example/1001_REDO.zip?Expires=9&Signature=s{n}")
    });
    let mut steps = StatusStep::Init.times(2);
    steps.extend([
        StatusStep::Listing,
        StatusStep::Downloading,
        StatusStep::success(url, 69),
    ]);
    sim.script_ticket(ORDER, KEY, steps);

    let mut seen = Vec::new();
    for _ in 0..7 {
        let reply = send(&sim, &Call::new(SignatureVersion::V3, ak())).await;
        reply.assert_ok();
        let result = reply.json()["StatusResult"].clone();
        seen.push(result["DownloadStatus"].as_str().unwrap().to_owned());
        if result["DownloadStatus"] == "DOWNLOAD_SUCCESS" {
            assert_eq!(result["StatusDesc"], "SUCCESS");
            assert_eq!(result["TotalCount"], 69);
            let url = result["DownloadUrl"].as_str().unwrap();
            assert!(url.ends_with("\n"), "{url:?}");
            let n = seen.iter().filter(|s| *s == "DOWNLOAD_SUCCESS").count();
            assert!(url.ends_with(&format!("Signature=s{n}\n")), "{url:?}");
        } else {
            assert!(result.get("DownloadUrl").is_none(), "{result}");
        }
    }
    assert_eq!(
        seen,
        [
            "INIT",
            "INIT",
            "LISTING",
            "DOWNLOADING",
            "DOWNLOAD_SUCCESS",
            "DOWNLOAD_SUCCESS",
            "DOWNLOAD_SUCCESS"
        ]
    );
    assert_eq!(minted.load(Ordering::SeqCst), 3, "a URL per success answer");
    assert_eq!(sim.status_answers(ORDER, KEY), 7);

    sim.script_ticket(
        ORDER,
        KEY,
        [StatusStep::Listing, StatusStep::fail("binlog purged")],
    );
    let first = send(&sim, &Call::new(SignatureVersion::V1, ak())).await;
    assert_eq!(first.download_status(), "LISTING");
    for _ in 0..2 {
        let reply = send(&sim, &Call::new(SignatureVersion::V1, ak())).await;
        assert_eq!(reply.download_status(), "DOWNLOAD_FAIL");
        assert_eq!(reply.json()["StatusResult"]["StatusDesc"], "binlog purged");
    }
}

#[tokio::test]
async fn fixed_url_and_unknown_statuses_pass_through() {
    let sim = started().await;
    sim.script_ticket(
        ORDER,
        KEY,
        [
            StatusStep::Other {
                status: "FILTERING".to_owned(),
                desc: "filtering".to_owned(),
            },
            StatusStep::success("https://b.example/x.zip?Signature=abc", 5),
        ],
    );
    let reply = send(&sim, &Call::new(SignatureVersion::V3, ak())).await;
    assert_eq!(reply.download_status(), "FILTERING");
    let reply = send(&sim, &Call::new(SignatureVersion::V3, ak())).await;
    assert_eq!(
        reply.json()["StatusResult"]["DownloadUrl"],
        "https://b.example/x.zip?Signature=abc\n"
    );
}

#[tokio::test]
async fn unknown_ticket_is_a_business_failure() {
    let sim = started().await;
    let call = Call::new(SignatureVersion::V3, ak()).action(
        QUERY_STATUS_ACTION,
        pairs(&[("OrderId", "1001"), ("DownloadKeyId", "nope")]),
    );
    let reply = send(&sim, &call).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["Success"], false);
    assert_eq!(reply.error_code(), "InvalidParameter");
    assert!(
        reply.json()["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    assert_eq!(
        sim.calls()[0].error_code.as_deref(),
        Some("InvalidParameter")
    );
}

#[tokio::test]
async fn missing_or_mistyped_business_params_are_gateway_errors() {
    let sim = started().await;
    let call = Call::new(SignatureVersion::V3, ak())
        .action(QUERY_STATUS_ACTION, pairs(&[("OrderId", "1001")]));
    send(&sim, &call)
        .await
        .assert_gateway_error(400, "MissingDownloadKeyId");
    let call = Call::new(SignatureVersion::V1, ak()).action(
        QUERY_STATUS_ACTION,
        pairs(&[("OrderId", "ten"), ("DownloadKeyId", KEY)]),
    );
    send(&sim, &call)
        .await
        .assert_gateway_error(400, "InvalidParameter");
}

#[tokio::test]
async fn unknown_action_wrong_version_path_and_method_are_rejected() {
    let sim = started().await;
    let call = Call::new(SignatureVersion::V3, ak()).action("DeleteEverything", query_params());
    send(&sim, &call)
        .await
        .assert_gateway_error(404, "InvalidAction.NotFound");
    let mut call = Call::new(SignatureVersion::V1, ak());
    call.api_version = "2014-05-26".to_owned();
    send(&sim, &call)
        .await
        .assert_gateway_error(400, "InvalidVersion");
    let mut call = Call::new(SignatureVersion::V3, ak());
    call.method = "PUT";
    send(&sim, &call)
        .await
        .assert_gateway_error(400, "UnsupportedHTTPMethod");
    let reply = http()
        .post(format!("{}/other", sim.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 404);
    send_raw(&sim, "POST", &canonical_query(&query_params()), &[], None)
        .await
        .assert_gateway_error(400, "IncompleteSignature");
}

#[tokio::test]
async fn v3_signed_headers_must_include_x_acs_date() {
    let sim = started().await;
    let date = format_timestamp(jiff::Timestamp::now());
    let mut signed = v3_standard_headers(&date, EMPTY_BODY_SHA256);
    let date_header = signed.remove(2);
    assert_eq!(date_header.0, "x-acs-date");
    let headers = v3_by_hand(
        &sim,
        "POST",
        &query_params(),
        signed.clone(),
        vec![date_header],
        EMPTY_BODY_SHA256,
    );
    let query = canonical_query(&query_params());
    let reply = send_raw(&sim, "POST", &query, &headers, None).await;
    reply.assert_gateway_error(400, "IncompleteSignature");
    assert!(
        reply.body.contains("x-acs-date must be signed"),
        "{}",
        reply.body
    );

    // Not sent at all: a missing parameter.
    let headers = v3_by_hand(
        &sim,
        "POST",
        &query_params(),
        signed,
        Vec::new(),
        EMPTY_BODY_SHA256,
    );
    send_raw(&sim, "POST", &query, &headers, None)
        .await
        .assert_gateway_error(400, "MissingParameter");
}

#[tokio::test]
async fn tampering_with_a_query_param_after_signing_breaks_the_signature() {
    let sim = started().await;
    sim.script_ticket(1002, KEY, [StatusStep::Init]);
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let call = Call::new(version, ak());
        let signed = call.sign(&sim);
        assert!(signed.query.contains("OrderId=1001"));
        let tampered = signed.query.replace("OrderId=1001", "OrderId=1002");
        send_raw(&sim, call.method, &tampered, &signed.headers, None)
            .await
            .assert_gateway_error(400, "SignatureDoesNotMatch");
        // The untampered request (same nonce: the rejected one did not spend it) passes.
        send_raw(&sim, call.method, &signed.query, &signed.headers, None)
            .await
            .assert_ok();
    }
}

#[tokio::test]
async fn v3_content_hash_must_be_the_body_hash() {
    let sim = started().await;
    let date = format_timestamp(jiff::Timestamp::now());
    let headers = v3_by_hand(
        &sim,
        "POST",
        &query_params(),
        v3_standard_headers(&date, EMPTY_BODY_SHA256),
        Vec::new(),
        EMPTY_BODY_SHA256,
    );
    let query = canonical_query(&query_params());
    let body = || Some(("text/plain", b"smuggled".to_vec()));
    send_raw(&sim, "POST", &query, &headers, body())
        .await
        .assert_gateway_error(400, "SignatureDoesNotMatch");

    // The header lies while the signature covers the real body: still refused.
    let real_hash = sha256_hex(b"smuggled");
    let headers = v3_by_hand(
        &sim,
        "POST",
        &query_params(),
        v3_standard_headers(&date, EMPTY_BODY_SHA256),
        Vec::new(),
        &real_hash,
    );
    let reply = send_raw(&sim, "POST", &query, &headers, body()).await;
    reply.assert_gateway_error(400, "SignatureDoesNotMatch");
    assert!(
        reply.body.contains("x-acs-content-sha256"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn plus_in_the_query_is_a_space_as_python_sdks_send_it() {
    let sim = started().await;
    sim.script_ticket(ORDER, "dk a", [StatusStep::Downloading]);
    let call = Call::new(SignatureVersion::V3, ak()).action(
        QUERY_STATUS_ACTION,
        pairs(&[("OrderId", "1001"), ("DownloadKeyId", "dk a")]),
    );
    let signed = call.sign(&sim);
    assert!(signed.query.contains("dk%20a"));
    let as_python_sends = signed.query.replace("%20", "+");
    let reply = send_raw(&sim, "POST", &as_python_sends, &signed.headers, None).await;
    reply.assert_ok();
    assert_eq!(reply.download_status(), "DOWNLOADING");
}

#[tokio::test]
async fn throttling_fault_sends_retry_after_in_milliseconds() {
    let sim = started().await;
    sim.inject(
        2,
        DmsFault::Throttling {
            retry_after_ms: 1500,
        },
    );
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_ok();
    let reply = send(&sim, &Call::new(SignatureVersion::V3, ak())).await;
    reply.assert_gateway_error(400, "Throttling.User");
    assert_eq!(reply.headers["x-acs-retry-after"], "1500");
    assert_eq!(
        reply.json()["Message"],
        "Request was denied due to user flow control."
    );
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_ok();
    let calls = sim.calls();
    assert_eq!(
        calls[1].faults,
        [DmsFault::Throttling {
            retry_after_ms: 1500
        }]
    );
    assert_eq!(calls[1].error_code.as_deref(), Some("Throttling.User"));
    assert_eq!(
        sim.status_answers(ORDER, KEY),
        2,
        "a throttled call reads no status"
    );
}

#[tokio::test]
async fn server_error_faults() {
    let sim = started().await;
    sim.inject(1, DmsFault::ServiceUnavailable);
    sim.inject(2, DmsFault::InternalError);
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_gateway_error(503, "ServiceUnavailable");
    send(&sim, &Call::new(SignatureVersion::V1, ak()))
        .await
        .assert_gateway_error(500, "InternalError");
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_ok();
}

#[tokio::test]
async fn a_fault_spends_the_nonce_so_a_retry_must_sign_anew() {
    let sim = started().await;
    sim.inject(1, DmsFault::ServiceUnavailable);
    let call = Call::new(SignatureVersion::V3, ak());
    send(&sim, &call)
        .await
        .assert_gateway_error(503, "ServiceUnavailable");
    send(&sim, &call)
        .await
        .assert_gateway_error(400, "SignatureNonceUsed");
}

#[tokio::test]
async fn a_fault_does_not_hide_an_authentication_failure() {
    let sim = started().await;
    sim.inject(1, DmsFault::InternalError);
    let wrong = Credentials::new(AK, Secret::new("bad"), None);
    send(&sim, &Call::new(SignatureVersion::V3, wrong))
        .await
        .assert_gateway_error(400, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn malformed_json_fault_is_200_with_a_broken_body() {
    let sim = started().await;
    sim.inject(1, DmsFault::MalformedJson);
    let reply = send(&sim, &Call::new(SignatureVersion::V3, ak())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers["content-type"],
        "application/json;charset=utf-8"
    );
    assert!(
        serde_json::from_str::<Value>(&reply.body).is_err(),
        "{}",
        reply.body
    );
    assert_eq!(sim.calls()[0].status, Some(200));
}

#[tokio::test]
async fn drop_connection_fault_sends_no_response_bytes() {
    let sim = started().await;
    sim.inject(1, DmsFault::DropConnection);
    // A raw socket shows that not a single byte comes back before the close.
    let call = Call::new(SignatureVersion::V3, ak());
    let signed = call.sign(&sim);
    let mut raw = format!(
        "POST /?{} HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\n",
        signed.query,
        sim.addr()
    );
    for (name, value) in &signed.headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, raw.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer).await;
    assert!(
        read.is_err() || answer.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(sim.calls()[0].status, None);
    assert_eq!(sim.calls()[0].faults, [DmsFault::DropConnection]);

    // Through reqwest it is a transport error with no status; the next call works.
    sim.inject(2, DmsFault::DropConnection);
    let error = try_send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .unwrap_err();
    assert!(error.status().is_none(), "{error:?}");
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_ok();
}

#[tokio::test]
async fn business_failure_fault_is_200_success_false() {
    let sim = started().await;
    sim.inject(
        1,
        DmsFault::BusinessFailure {
            code: "UnknownError".to_owned(),
            message: "backend hiccup".to_owned(),
        },
    );
    let reply = send(&sim, &Call::new(SignatureVersion::V3, ak())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["Success"], false);
    assert_eq!(reply.json()["ErrorMessage"], "backend hiccup");
    assert_eq!(sim.calls()[0].error_code.as_deref(), Some("UnknownError"));
}

#[tokio::test(start_paused = true)]
async fn delay_fault_answers_late_in_tokio_time() {
    let sim = started().await;
    sim.inject(1, DmsFault::Delay(Duration::from_secs(30)));
    sim.inject(2, DmsFault::Delay(Duration::from_secs(30)));
    sim.inject(2, DmsFault::ServiceUnavailable);
    let before = tokio::time::Instant::now();
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_ok();
    assert!(
        before.elapsed() >= Duration::from_secs(30),
        "{:?}",
        before.elapsed()
    );

    // A client that gives up first gets nothing, and the ticket is not advanced.
    let call = Call::new(SignatureVersion::V3, ak());
    let late = tokio::time::timeout(Duration::from_secs(5), try_send(&sim, &call)).await;
    assert!(late.is_err(), "answered before the delay");
    assert_eq!(sim.status_answers(ORDER, KEY), 1);

    // Delay and another fault combine.
    sim.inject(3, DmsFault::Delay(Duration::from_secs(30)));
    sim.inject(3, DmsFault::ServiceUnavailable);
    let before = tokio::time::Instant::now();
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_gateway_error(503, "ServiceUnavailable");
    assert!(before.elapsed() >= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn calls_record_arrival_in_tokio_time() {
    let sim = started().await;
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_ok();
    tokio::time::sleep(Duration::from_secs(90)).await;
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_ok();
    let calls = sim.calls();
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_secs(90), "{gap:?}");
}

#[tokio::test]
async fn faults_can_target_the_nth_call_of_an_action() {
    let sim = started().await;
    sim.script_export(ORDER, [StatusStep::Init]);
    sim.inject_for_action(QUERY_STATUS_ACTION, 2, DmsFault::InternalError);
    let export = Call::new(SignatureVersion::V3, ak()).action(
        DOWNLOAD_ACTION,
        pairs(&[("OrderId", "1001"), ("RollbackSQLType", "FORWARD")]),
    );
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_ok();
    send(&sim, &export).await.assert_ok();
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_gateway_error(500, "InternalError");
    assert_eq!(sim.action_count(QUERY_STATUS_ACTION), 2);
    assert_eq!(sim.action_count(DOWNLOAD_ACTION), 1);
}

#[tokio::test]
async fn export_mints_a_key_that_follows_the_export_script() {
    let sim = started().await;
    sim.script_export(
        406,
        [
            StatusStep::Listing,
            StatusStep::success("https://b.example/406_REDO.zip?Signature=x", 12),
        ],
    );
    let export_params = pairs(&[
        ("OrderId", "406"),
        ("RollbackSQLType", "REVERSE"),
        ("FilterStartTime", "2023-04-23 00:00:00"),
        ("FilterEndTime", "2023-04-23 12:00:00"),
        ("FilterTableList", r#"["table1","table2"]"#),
        ("FilterTypeList", r#"["UPDATE","DELETE"]"#),
        ("EventIdList", "[1,2]"),
        (
            "ColumnFilter",
            r#"{"ColumnName":"account_name","InList":["1","2"],"Operator":"IN"}"#,
        ),
        ("Tid", "3"),
    ]);
    let mut keys = Vec::new();
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let call = Call::new(version, ak()).action(DOWNLOAD_ACTION, export_params.clone());
        let reply = send(&sim, &call).await;
        reply.assert_ok();
        assert_eq!(reply.json()["ErrorCode"], "UnknownError");
        let key = reply.json()["DownloadKeyId"].as_str().unwrap().to_owned();
        uuid::Uuid::parse_str(&key).unwrap();
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1], "each export mints its own key");

    let query = |key: &str| {
        Call::new(SignatureVersion::V3, ak()).action(
            QUERY_STATUS_ACTION,
            pairs(&[("OrderId", "406"), ("DownloadKeyId", key)]),
        )
    };
    assert_eq!(
        send(&sim, &query(&keys[0])).await.download_status(),
        "LISTING"
    );
    let done = send(&sim, &query(&keys[0])).await;
    assert_eq!(done.download_status(), "DOWNLOAD_SUCCESS");
    assert_eq!(
        done.json()["StatusResult"]["DownloadUrl"],
        "https://b.example/406_REDO.zip?Signature=x\n"
    );
    // The second key has its own fresh copy of the script.
    assert_eq!(
        send(&sim, &query(&keys[1])).await.download_status(),
        "LISTING"
    );

    let exports = sim.exports();
    assert_eq!(exports.len(), 2);
    assert_eq!(
        exports[0],
        ExportRequest {
            call_number: 1,
            order_id: 406,
            rollback_sql_type: "REVERSE".to_owned(),
            filter_start_time: Some("2023-04-23 00:00:00".to_owned()),
            filter_end_time: Some("2023-04-23 12:00:00".to_owned()),
            filter_table_list: Some(vec!["table1".to_owned(), "table2".to_owned()]),
            filter_type_list: Some(vec!["UPDATE".to_owned(), "DELETE".to_owned()]),
            event_id_list: Some(vec![1, 2]),
            column_filter: Some(serde_json::json!({
                "ColumnName": "account_name", "InList": ["1", "2"], "Operator": "IN"
            })),
            tid: Some(3),
            download_key_id: keys[0].clone(),
        }
    );
    assert_eq!(exports[1].call_number, 2);
    assert_eq!(exports[1].download_key_id, keys[1]);
}

#[tokio::test]
async fn export_validation_failures() {
    let sim = started().await;
    sim.script_export(406, [StatusStep::Init]);
    let with = |extra: &[(&str, &str)]| {
        let mut params = pairs(&[("OrderId", "406"), ("RollbackSQLType", "FORWARD")]);
        params.extend(pairs(extra));
        Call::new(SignatureVersion::V3, ak()).action(DOWNLOAD_ACTION, params)
    };
    for (extra, what) in [
        (&[("FilterTableList", "[table1]")][..], "FilterTableList"),
        (&[("FilterTypeList", r#"{"a":1}"#)][..], "FilterTypeList"),
        (&[("EventIdList", r#"["x"]"#)][..], "EventIdList"),
        (
            &[("ColumnFilter", r#"{"ColumnName":"a","Operator":"LIKE"}"#)][..],
            "ColumnFilter",
        ),
        (&[("ColumnFilter", "[1]")][..], "ColumnFilter"),
        (
            &[("FilterStartTime", "2023-04-23T00:00:00Z")][..],
            "FilterStartTime",
        ),
        (&[("RollbackSQLType", "SIDEWAYS")][..], "RollbackSQLType"),
    ] {
        let mut call = with(extra);
        if what == "RollbackSQLType" {
            call.params
                .retain(|(k, v)| k != "RollbackSQLType" || v != "FORWARD");
        }
        let reply = send(&sim, &call).await;
        assert_eq!(reply.status, 200, "{what}: {reply:?}");
        assert_eq!(reply.json()["Success"], false, "{what}");
        assert_eq!(reply.error_code(), "InvalidParameter", "{what}");
        assert!(
            reply.json()["ErrorMessage"]
                .as_str()
                .unwrap()
                .contains(what),
            "{what}: {reply:?}"
        );
    }
    let no_type =
        Call::new(SignatureVersion::V3, ak()).action(DOWNLOAD_ACTION, pairs(&[("OrderId", "406")]));
    send(&sim, &no_type)
        .await
        .assert_gateway_error(400, "MissingRollbackSQLType");
    let unscripted = Call::new(SignatureVersion::V3, ak()).action(
        DOWNLOAD_ACTION,
        pairs(&[("OrderId", "999"), ("RollbackSQLType", "FORWARD")]),
    );
    let reply = send(&sim, &unscripted).await;
    assert_eq!(
        (reply.status, reply.json()["Success"].clone()),
        (200, Value::Bool(false))
    );
    assert!(
        sim.exports().is_empty(),
        "rejected exports are not recorded"
    );
    send(&sim, &with(&[])).await.assert_ok();
    assert_eq!(sim.exports().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_and_drop_close_the_listener() {
    let sim = started().await;
    let addr = sim.addr();
    send(&sim, &Call::new(SignatureVersion::V3, ak()))
        .await
        .assert_ok();
    sim.shutdown();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let other = started().await;
    let addr = other.addr();
    drop(other);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn debug_output_shows_no_secret_token_or_url() {
    let sim = started().await;
    sim.script_ticket(
        ORDER,
        KEY,
        [StatusStep::success(
            "https://b.example/x.zip?Signature=urlsecret",
            1,
        )],
    );
    let shown = format!("{sim:?}");
    for secret in [SK, STS_SK, STS_TOKEN, "urlsecret"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(shown.contains(AK), "ids are not secret: {shown}");
    // Recorded calls keep the token out of their params too.
    send(&sim, &Call::new(SignatureVersion::V1, sts()))
        .await
        .assert_ok();
    assert!(!format!("{:?}", sim.calls()).contains(STS_TOKEN));
}
