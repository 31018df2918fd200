//! Tests of the S3 signer and URL builder against botocore's golden requests
//! (`tests/fixtures/golden/s3/*.json`, shape documented in `scripts/golden/gen_s3_vectors.py`).

use super::*;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/s3");

fn fixtures() -> Vec<Value> {
    let mut paths: Vec<_> = std::fs::read_dir(FIXTURES)
        .expect("golden S3 fixtures")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 80, "only {} fixtures", paths.len());
    paths
        .iter()
        .map(|path| serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
        .collect()
}

fn str_of<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} missing in {}", value["name"]))
}

fn pairs(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_owned(),
                pair[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sent_header<'a>(fixture: &'a Value, name: &str) -> Option<&'a str> {
    fixture["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap())
}

fn timestamp(fixture: &Value) -> jiff::Timestamp {
    let fmt = "%Y%m%dT%H%M%SZ%z";
    jiff::Timestamp::strptime(fmt, format!("{}+0000", str_of(fixture, "/timestamp"))).unwrap()
}

fn credentials(fixture: &Value) -> S3Credentials {
    S3Credentials::new(
        str_of(fixture, "/credentials/access_key_id"),
        Secret::new(str_of(fixture, "/credentials/secret_access_key")),
        fixture["credentials"]["session_token"]
            .as_str()
            .map(Secret::new),
    )
}

/// The headers the caller passes: what botocore signed, less what `sign` adds itself.
fn caller_headers(fixture: &Value) -> Vec<(String, String)> {
    let signed: Vec<&str> = str_of(fixture, "/signed_headers").split(';').collect();
    let added = [
        "host",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
    ];
    pairs(&fixture["request"]["headers"])
        .into_iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            signed.contains(&lower.as_str()) && !added.contains(&lower.as_str())
        })
        .collect()
}

#[test]
fn signs_every_botocore_request_identically() {
    for fixture in fixtures() {
        let name = str_of(&fixture, "/name");
        let payload = match sent_header(&fixture, "x-amz-content-sha256").unwrap() {
            UNSIGNED_PAYLOAD => PayloadHash::Unsigned,
            hex => {
                assert_eq!(hex, str_of(&fixture, "/request/body_sha256"), "{name}");
                let body = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    str_of(&fixture, "/request/body_base64"),
                )
                .unwrap();
                PayloadHash::of_body(&body)
            }
        };
        let query = pairs(&fixture["request"]["query"]);
        let headers = caller_headers(&fixture);
        let request = S3Request {
            method: str_of(&fixture, "/request/method"),
            host: str_of(&fixture, "/request/host"),
            path: str_of(&fixture, "/request/path"),
            query: &query,
            headers: &headers,
            payload: &payload,
        };
        let credentials = credentials(&fixture);
        let region = str_of(&fixture, "/region");
        let at = timestamp(&fixture);

        let canonical = canonical_request_for(&request, &credentials, at);
        assert_eq!(canonical, str_of(&fixture, "/canonical_request"), "{name}");
        assert_eq!(
            string_to_sign_for(&canonical, region, at),
            str_of(&fixture, "/string_to_sign"),
            "{name}"
        );

        let signed = sign(&request, &credentials, region, at);
        for (header, value) in signed.pairs() {
            assert_eq!(
                Some(value),
                sent_header(&fixture, header),
                "{name}: {header}"
            );
        }
        assert_eq!(
            signed.authorization.expose(),
            str_of(&fixture, "/authorization"),
            "{name}"
        );
        assert_eq!(
            signed.x_amz_security_token.is_some(),
            sent_header(&fixture, "x-amz-security-token").is_some(),
            "{name}"
        );
    }
}

#[test]
fn builds_every_botocore_url_identically() {
    for fixture in fixtures() {
        let name = str_of(&fixture, "/name");
        let region = str_of(&fixture, "/region");
        let endpoint = match fixture["endpoint"].as_str() {
            Some(endpoint) => endpoint.to_owned(),
            None => default_aws_endpoint(region),
        };
        let style = match str_of(&fixture, "/addressing_style") {
            "path" => Some(AddressingStyle::Path),
            "virtual" => Some(AddressingStyle::VirtualHosted),
            _ => None,
        };
        let endpoint = S3Endpoint::parse(&endpoint, style).unwrap();
        let bucket = str_of(&fixture, "/params/Bucket");
        let location = match fixture["params"]["Key"].as_str() {
            Some(key) => {
                if key.split('/').any(|s| s == "." || s == "..") {
                    assert!(matches!(check_key(key), Err(KeyError::DotSegment(_))));
                } else {
                    check_key(key).unwrap();
                }
                endpoint.object(bucket, key)
            }
            None => endpoint.bucket(bucket),
        };
        assert_eq!(location.host, str_of(&fixture, "/request/host"), "{name}");
        assert_eq!(location.path, str_of(&fixture, "/request/path"), "{name}");
        let query = pairs(&fixture["request"]["query"]);
        let url = location.url(&query);
        assert_eq!(url, str_of(&fixture, "/request/url"), "{name}");

        // reqwest must send the path and query exactly as signed (dot segments excepted,
        // which `check_key` refuses).
        if !name.contains("dot_segments") {
            let parsed = reqwest::Url::parse(&url).unwrap();
            assert_eq!(parsed.path(), location.path, "{name}");
            assert_eq!(parsed.query().unwrap_or(""), query_string(&query), "{name}");
        }
    }
}

#[test]
fn key_encoding_keeps_slash_and_unreserved_only() {
    assert_eq!(encode_key("a b+c~d*e=f/g"), "a%20b%2Bc~d%2Ae%3Df/g");
    assert_eq!(encode_key("订单"), "%E8%AE%A2%E5%8D%95");
    assert_eq!(encode_key("-_.~AZaz09/"), "-_.~AZaz09/");
    assert_eq!(encode_key("%"), "%25");
    assert_eq!(encode_query_component("a/b c"), "a%2Fb%20c");
}

#[test]
fn check_key_refuses_what_a_url_cannot_carry() {
    assert_eq!(check_key(""), Err(KeyError::Empty));
    assert_eq!(check_key(&"k".repeat(1025)), Err(KeyError::TooLong(1025)));
    check_key(&"k".repeat(1024)).unwrap();
    assert!(matches!(check_key("a/./b"), Err(KeyError::DotSegment(_))));
    assert!(matches!(check_key("../b"), Err(KeyError::DotSegment(_))));
    assert!(matches!(check_key("a/.."), Err(KeyError::DotSegment(_))));
    check_key("a/.b/..c/...").unwrap();
    check_key("a//b/").unwrap();
}

#[test]
fn addressing_defaults_to_path_style_for_ip_and_localhost() {
    assert_eq!(
        AddressingStyle::for_host("127.0.0.1"),
        AddressingStyle::Path
    );
    assert_eq!(AddressingStyle::for_host("[::1]"), AddressingStyle::Path);
    assert_eq!(
        AddressingStyle::for_host("LocalHost"),
        AddressingStyle::Path
    );
    assert_eq!(
        AddressingStyle::for_host("s3.us-east-1.amazonaws.com"),
        AddressingStyle::VirtualHosted
    );

    let local = S3Endpoint::parse(
        "http://localhost:9000",
        Some(AddressingStyle::VirtualHosted),
    )
    .unwrap();
    assert_eq!(local.style(), AddressingStyle::Path);
    assert_eq!(
        local.object("b-1", "k").url(&[]),
        "http://localhost:9000/b-1/k"
    );
    let v6 = S3Endpoint::parse("http://[::1]:9000/", None).unwrap();
    assert_eq!(v6.bucket("bkt").url(&[]), "http://[::1]:9000/bkt");

    let aws = S3Endpoint::parse("https://S3.EU-WEST-1.amazonaws.com:443", None).unwrap();
    let location = aws.object("bkt", "a b");
    assert_eq!(location.host, "bkt.s3.eu-west-1.amazonaws.com");
    assert_eq!(location.path, "/a%20b");
    assert_eq!(aws.bucket("bkt").path, "/");
    // Not DNS-compatible: back to path style, as botocore does.
    assert_eq!(aws.object("Bkt_1", "k").path, "/Bkt_1/k");
    assert_eq!(aws.object("a.b.c", "k").path, "/a.b.c/k");
    // Over http, dots are fine in a virtual host.
    let plain = S3Endpoint::parse("http://minio.internal:9000", None).unwrap();
    assert_eq!(plain.object("a.b.c", "k").host, "a.b.c.minio.internal:9000");
}

#[test]
fn endpoint_parse_refuses_extras() {
    for bad in [
        "s3.amazonaws.com",
        "ftp://h",
        "https://h/path",
        "https://h/?q",
        "https://u:p@h",
        "https://h/#f",
    ] {
        assert!(S3Endpoint::parse(bad, None).is_err(), "{bad}");
    }
    assert_eq!(
        default_aws_endpoint("ap-southeast-1"),
        "https://s3.ap-southeast-1.amazonaws.com"
    );
}

#[test]
fn query_string_sends_bare_names_for_empty_values() {
    let query = vec![
        ("uploads".to_owned(), String::new()),
        ("prefix".to_owned(), "a/b".to_owned()),
    ];
    assert_eq!(query_string(&query), "uploads&prefix=a%2Fb");
    assert_eq!(canonical_query(&query), "prefix=a%2Fb&uploads=");
}

#[test]
fn headers_are_trimmed_merged_and_hop_by_hop_skipped() {
    let headers = vec![
        ("X-Amz-Meta-A".to_owned(), "  one   two ".to_owned()),
        ("x-amz-meta-a".to_owned(), "three".to_owned()),
        ("Expect".to_owned(), "100-continue".to_owned()),
        ("User-Agent".to_owned(), "dmstrack".to_owned()),
    ];
    let payload = PayloadHash::empty();
    let request = S3Request {
        method: "GET",
        host: "h",
        path: "/",
        query: &[],
        headers: &headers,
        payload: &payload,
    };
    let credentials = S3Credentials::new("AK", Secret::new("s"), None);
    let at: jiff::Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
    let canonical = canonical_request_for(&request, &credentials, at);
    assert!(
        canonical.contains("\nx-amz-meta-a:one two,three\n"),
        "{canonical}"
    );
    assert!(
        canonical.ends_with(&format!(
            "\n\nhost;x-amz-content-sha256;x-amz-date;x-amz-meta-a\n{EMPTY_SHA256}"
        )),
        "{canonical}"
    );
}

#[test]
fn debug_masks_secret_token_and_authorization() {
    let credentials = S3Credentials::new(
        "AKIDEXAMPLE",
        Secret::new("very-secret-key"),
        Some(Secret::new("session-token-value")),
    );
    let shown = format!("{credentials:?}");
    assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
    assert!(!shown.contains("very-secret-key"), "{shown}");
    assert!(!shown.contains("session-token-value"), "{shown}");

    let payload = PayloadHash::Unsigned;
    let request = S3Request {
        method: "HEAD",
        host: "h",
        path: "/b/k",
        query: &[],
        headers: &[],
        payload: &payload,
    };
    let signed = sign(
        &request,
        &credentials,
        "us-east-1",
        "2026-11-27T12:00:00Z".parse().unwrap(),
    );
    let shown = format!("{signed:?}");
    assert!(!shown.contains("Signature="), "{shown}");
    assert!(!shown.contains("session-token-value"), "{shown}");
    assert!(
        signed
            .pairs()
            .contains(&("x-amz-security-token", "session-token-value"))
    );
}
