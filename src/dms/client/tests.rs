//! Tests of `client`.
use super::classify::sanitize_message;
use super::*;
use reqwest::header::CONTENT_TYPE;
use reqwest::header::HeaderValue;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    h
}

fn gateway(code: &str) -> Vec<u8> {
    format!(r#"{{"RequestId":"R-1","HostId":"dms-enterprise.aliyuncs.com","Code":"{code}","Message":"m","Recommend":"x"}}"#)
        .into_bytes()
}

#[test]
fn success_is_decided_on_success_not_error_code() {
    let body = br#"{"RequestId":"r","Success":true,"ErrorMessage":"UnknownError","ErrorCode":"UnknownError","DownloadKeyId":"k"}"#;
    assert!(matches!(
        classify(200, &json_headers(), body, now()),
        Verdict::Done(_)
    ));
    let body = br#"{"RequestId":"r","Success":false,"ErrorCode":"InvalidOrderId","ErrorMessage":"no such order"}"#;
    match classify(200, &json_headers(), body, now()) {
        Verdict::Refused(e) => {
            assert_eq!(
                (e.code.as_str(), e.message.as_str(), e.request_id.as_str()),
                ("InvalidOrderId", "no such order", "r")
            )
        }
        other => panic!("{other:?}"),
    }
    let body = br#"{"RequestId":"r","ErrorCode":"X"}"#;
    assert!(
        matches!(
            classify(200, &json_headers(), body, now()),
            Verdict::Refused(_)
        ),
        "no Success is not success"
    );
}

#[test]
fn retry_table() {
    let mut throttled = json_headers();
    throttled.insert("x-acs-retry-after", HeaderValue::from_static("2500"));
    assert_eq!(
        classify(400, &throttled, &gateway("Throttling.User"), now()),
        Verdict::Retry {
            kind: "throttled",
            reason: "Throttling.User: m (HTTP 400, RequestId R-1)".into(),
            hint: Some(Duration::from_millis(2500))
        }
    );
    for (status, code) in [
        (503, "ServiceUnavailable"),
        (500, "InternalError"),
        (502, ""),
        (429, "Whatever"),
        (400, "Throttling.Api"),
    ] {
        assert!(
            matches!(
                classify(status, &json_headers(), &gateway(code), now()),
                Verdict::Retry { .. }
            ),
            "{status} {code}"
        );
    }
    assert!(matches!(
        classify(200, &json_headers(), b"{\"RequestId\":", now()),
        Verdict::Retry { .. }
    ));
    assert!(matches!(
        classify(502, &HeaderMap::new(), b"<html>bad gateway</html>", now()),
        Verdict::Retry { .. }
    ));
    for code in [
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "SignatureDoesNotMatch",
        "Forbidden.RAM",
        "InvalidTimeStamp.Expired",
        "IncompleteSignature",
    ] {
        assert!(
            matches!(
                classify(400, &json_headers(), &gateway(code), now()),
                Verdict::Auth(_)
            ),
            "{code}"
        );
    }
    assert!(matches!(
        classify(403, &json_headers(), &gateway("NoPermission"), now()),
        Verdict::Auth(_)
    ));
    assert!(matches!(
        classify(
            400,
            &json_headers(),
            &gateway("InvalidSecurityToken.Expired"),
            now()
        ),
        Verdict::RefreshCredentials(_)
    ));
    assert!(matches!(
        classify(400, &json_headers(), &gateway("InvalidParameter"), now()),
        Verdict::Refused(_)
    ));
}

#[test]
fn xml_gateway_errors_are_read() {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=utf-8"),
    );
    let body = b"<?xml version='1.0'?><Error><RequestId>R</RequestId><Code>SignatureDoesNotMatch</Code><Message>bad</Message></Error>";
    match classify(400, &h, body, now()) {
        Verdict::Auth(e) => assert_eq!(
            (e.code.as_str(), e.message.as_str(), e.request_id.as_str()),
            ("SignatureDoesNotMatch", "bad", "R")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn echoed_string_to_sign_is_dropped() {
    let message = "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3Dx%26SecurityToken%3DTOKEN";
    assert_eq!(
        sanitize_message(message),
        "Specified signature is not matched with our calculation."
    );
    let credentials = Credentials::new("id", "s3cret".into(), Some("tok3n".into()));
    assert_eq!(
        redact("a s3cret b tok3n".into(), &credentials),
        "a ****** b ******"
    );
}
