//! The DMS simulator's gateway checks on requests made by the official SDKs
//! (`tests/fixtures/golden/dms/dms.json`): each SDK request, replayed byte for byte, is
//! accepted; the same request with one signature character changed, or one parameter altered,
//! is `SignatureDoesNotMatch`. The simulator's clock is moved to the fixtures' frozen time
//! with its clock offset, so the skew check stays as strict as ever.

use super::{DmsSimulator, StatusStep};
use crate::dms::golden_tests::{Answer, Case, Sent, dms_cases, flip_one_char, replay};

async fn simulator_for(case: &Case) -> DmsSimulator {
    let inputs = &case.inputs;
    let sim = DmsSimulator::start().await.expect("simulator");
    sim.set_clock_offset(inputs.timestamp().duration_since(jiff::Timestamp::now()));
    let id = inputs.access_key_id.clone().expect("key");
    let secret = inputs.access_key_secret.clone().expect("secret");
    match &inputs.security_token {
        Some(token) => sim.add_sts_credentials(id, secret, token.clone()),
        None => sim.add_access_key(id, secret),
    }
    let order_id = inputs.order_id.expect("OrderId");
    match &inputs.download_key_id {
        Some(key) => sim.script_ticket(order_id, key.clone(), [StatusStep::Init]),
        None => sim.script_export(order_id, [StatusStep::Init]),
    }
    sim
}

/// The SDK request with one character of its signature changed.
fn forged(case: &Case) -> Sent {
    let sent = &case.sent;
    match case.signature.as_str() {
        "v3" => {
            let authorization = sent.header("authorization").expect("Authorization");
            let (head, signature) = authorization.rsplit_once("Signature=").expect("Signature");
            sent.with_header(
                "authorization",
                &format!("{head}Signature={}", flip_one_char(signature)),
            )
        }
        _ => sent.with_query_value(
            "Signature",
            &flip_one_char(sent.raw_query_value("Signature")),
        ),
    }
}

fn code(answer: &Answer) -> &str {
    answer.body["Code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn simulator_accepts_sdk_requests_and_refuses_them_altered() {
    let cases = dms_cases();
    for case in &cases {
        let name = &case.name;
        let sim = simulator_for(case).await;
        let addr = sim.addr();

        // Refusals first: they must not spend the nonce the genuine request then uses.
        let answer = replay(addr, &forged(case)).await;
        assert_eq!(
            (answer.status, code(&answer)),
            (400, "SignatureDoesNotMatch"),
            "{name}: forged signature: {}",
            answer.body
        );
        let order_id = case.inputs.order_id.expect("OrderId");
        let altered = case
            .sent
            .with_query_value("OrderId", &(order_id + 1).to_string());
        let answer = replay(addr, &altered).await;
        assert_eq!(
            (answer.status, code(&answer)),
            (400, "SignatureDoesNotMatch"),
            "{name}: altered OrderId: {}",
            answer.body
        );

        let answer = replay(addr, &case.sent).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        assert_eq!(answer.body["Success"], true, "{name}: {}", answer.body);
        let call = sim.calls().pop().expect("a recorded call");
        assert_eq!(call.error_code, None, "{name}");
        assert_eq!(
            call.nonce.as_deref(),
            case.inputs.nonce.as_deref(),
            "{name}"
        );
        match &case.inputs.download_key_id {
            Some(key) => {
                assert_eq!(call.params.get("DownloadKeyId"), Some(key), "{name}");
                assert_eq!(answer.body["StatusResult"]["DownloadStatus"], "INIT");
            }
            None => {
                let export = sim.exports().pop().expect("an accepted export");
                let wanted = case.inputs.export.as_ref().expect("export inputs");
                assert_eq!(
                    export.filter_table_list.as_ref(),
                    Some(&wanted.filter_tables)
                );
                assert_eq!(export.column_filter, wanted.column_filter, "{name}");
                assert!(answer.body["DownloadKeyId"].is_string(), "{name}");
            }
        }

        // Replaying it once more is a reused nonce, not a signature problem.
        let answer = replay(addr, &case.sent).await;
        assert_eq!(code(&answer), "SignatureNonceUsed", "{name}");
    }
}

#[tokio::test]
async fn without_the_clock_offset_the_frozen_requests_are_expired() {
    let case = &dms_cases()[0];
    let sim = simulator_for(case).await;
    sim.set_clock_offset(jiff::SignedDuration::ZERO);
    let answer = replay(sim.addr(), &case.sent).await;
    assert_eq!(code(&answer), "InvalidTimeStamp.Expired", "{}", answer.body);
}
