//! Golden STS requests of the official SDKs (`tests/fixtures/golden/dms/sts.json`): dmstrack's
//! `AssumeRole` / `AssumeRoleWithOIDC` builders rebuild them, and the STS fake of
//! `crate::sim::credentials` accepts the SDK's exact bytes and refuses them altered. Compiled
//! as a child of `crate::credentials::sts` (wired there with `#[path]`) to reach its builders.

use std::collections::HashMap;
use std::time::Duration;

use super::{RoleRequest, assume_role_query, oidc_query_and_form};
use crate::dms::golden_tests::{
    Case, check_signer_on_sdk_request, decode_pairs, flip_one_char, replay, sorted, sts_cases,
};
use crate::net::secret::Secret;
use crate::net::signer::v1_string_to_sign;
use crate::sim::credentials::{StsFake, StsOptions};

fn role_request(case: &Case) -> RoleRequest {
    let inputs = &case.inputs;
    RoleRequest {
        endpoint: format!("https://{}/", inputs.host)
            .parse()
            .expect("endpoint"),
        role_arn: inputs.role_arn.clone().expect("RoleArn"),
        session_name: inputs.role_session_name.clone().expect("RoleSessionName"),
        duration: Duration::from_secs(inputs.duration_seconds.expect("DurationSeconds")),
        policy: inputs.policy.clone(),
    }
}

#[test]
fn fixtures_cover_both_calls_with_and_without_options() {
    let cases = sts_cases();
    let role = |c: &&Case| c.inputs.action == "AssumeRole" && c.dmstrack.is_some();
    assert!(cases.iter().filter(role).any(|c| c.inputs.policy.is_none()));
    assert!(
        cases
            .iter()
            .filter(role)
            .any(|c| c.inputs.policy.is_some() && c.inputs.external_id.is_some())
    );
    assert!(
        cases
            .iter()
            .filter(role)
            .any(|c| c.inputs.security_token.is_some())
    );
    let oidc = |c: &&Case| c.inputs.action == "AssumeRoleWithOIDC";
    assert!(cases.iter().filter(oidc).any(|c| c.inputs.policy.is_none()));
    assert!(cases.iter().filter(oidc).any(|c| c.inputs.policy.is_some()));
}

#[test]
fn our_v1_signer_reproduces_every_sdk_assume_role_signature() {
    for case in sts_cases().iter().filter(|c| c.signature == "v1") {
        check_signer_on_sdk_request(case);
    }
}

/// `alibabacloud-credentials` sends the very request dmstrack sends (GET, all in the query):
/// ours is the same parameter set with the same signature, in canonical order. Where the SDK
/// sends another shape (tea-openapi's POST), the SDK's V1 function signed dmstrack's GET.
#[test]
fn assume_role_builder_matches_the_sdk() {
    let mut checked = 0;
    for case in sts_cases() {
        let Some(shape) = &case.dmstrack else {
            continue;
        };
        let name = &case.name;
        let inputs = &case.inputs;
        let query = assume_role_query(
            &role_request(&case),
            inputs.external_id.as_deref(),
            &inputs.credentials(),
            inputs.timestamp(),
            inputs.nonce(),
        );
        assert_eq!(query, shape.query, "{name}: query string");
        assert_eq!(
            v1_string_to_sign(&shape.method, &shape.params),
            shape.string_to_sign,
            "{name}: string to sign"
        );
        if shape.method == case.sent.method {
            // The SDK sent dmstrack's very request.
            assert_eq!(
                sorted(decode_pairs(&query)),
                sorted(case.sent.pairs()),
                "{name}: parameters differ from the SDK request"
            );
            let sdk = case.sdk_signing.as_ref().expect("signed");
            assert_eq!(shape.signature, sdk.signature, "{name}");
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
}

/// dmstrack sends `AssumeRoleWithOIDC` as a POST with the token in a form body (as the Go and
/// Java credential providers do); the Python provider puts everything in a GET query. The
/// parameters, merged, are the same.
#[test]
fn oidc_builder_sends_the_sdk_parameters() {
    let mut checked = 0;
    for case in sts_cases() {
        if case.inputs.action != "AssumeRoleWithOIDC"
            || !case.sdk.starts_with("alibabacloud-credentials")
        {
            continue;
        }
        let inputs = &case.inputs;
        let (query, form) = oidc_query_and_form(
            &role_request(&case),
            inputs.oidc_provider_arn.as_deref().expect("provider"),
            inputs.oidc_token.as_deref().expect("token"),
            inputs.timestamp(),
        );
        let query_names: Vec<String> = decode_pairs(&query).into_iter().map(|(k, _)| k).collect();
        assert_eq!(query_names, ["Action", "Format", "Timestamp", "Version"]);
        assert!(form.contains("OIDCToken="), "the token travels in the body");
        let mut ours = decode_pairs(&query);
        ours.extend(decode_pairs(&form));
        assert_eq!(
            sorted(ours),
            sorted(case.sent.pairs()),
            "{}: parameters differ from the SDK request",
            case.name
        );
        checked += 1;
    }
    assert_eq!(checked, 2);
}

async fn fake_for(case: &Case, token_file: &std::path::Path) -> StsFake {
    let inputs = &case.inputs;
    let mut access_keys = HashMap::new();
    if let (Some(id), Some(secret)) = (&inputs.access_key_id, &inputs.access_key_secret) {
        access_keys.insert(id.clone(), Secret::new(secret.clone()));
    }
    if let Some(token) = &inputs.oidc_token {
        std::fs::write(token_file, token).expect("token file");
    }
    StsFake::start(StsOptions {
        access_keys,
        oidc_token_file: Some(token_file.to_owned()),
        ..StsOptions::default()
    })
    .await
    .expect("STS fake")
}

fn code(answer: &crate::dms::golden_tests::Answer) -> &str {
    answer.body["Code"].as_str().unwrap_or_default()
}

/// The fake accepts each SDK request as sent; a signed one with one signature character
/// changed, or one parameter altered, is `SignatureDoesNotMatch`; an OIDC one with another
/// token is refused.
#[tokio::test]
async fn sts_fake_accepts_sdk_requests_and_refuses_them_altered() {
    let dir = tempfile::tempdir().expect("tempdir");
    for case in sts_cases() {
        let name = &case.name;
        let token_file = dir.path().join(format!("{name}.token"));
        let fake = fake_for(&case, &token_file).await;
        let addr = fake
            .endpoint()
            .socket_addrs(|| None)
            .expect("loopback address")[0];
        let sent = &case.sent;
        if case.signature == "v1" {
            let signature = sent.raw_query_value("Signature");
            let forged = sent.with_query_value("Signature", &flip_one_char(signature));
            let answer = replay(addr, &forged).await;
            assert_eq!(
                (answer.status, code(&answer)),
                (400, "SignatureDoesNotMatch"),
                "{name}: forged signature"
            );
            let altered = sent.with_query_value("DurationSeconds", "3601");
            let answer = replay(addr, &altered).await;
            assert_eq!(
                (answer.status, code(&answer)),
                (400, "SignatureDoesNotMatch"),
                "{name}: altered parameter"
            );
        } else {
            let token = sent.raw_query_value("OIDCToken");
            let altered = sent.with_query_value("OIDCToken", &flip_one_char(token));
            let answer = replay(addr, &altered).await;
            assert_eq!(
                (answer.status, code(&answer)),
                (400, "AuthenticationFail.OIDCToken.Invalid"),
                "{name}: altered token"
            );
        }
        let answer = replay(addr, sent).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        assert!(
            answer.body["Credentials"]["SecurityToken"].is_string(),
            "{name}: {}",
            answer.body
        );
        assert_eq!(fake.issued(), 1, "{name}");
    }
}
