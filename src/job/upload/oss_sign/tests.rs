//! The V4 signer and URL builder against oss-upload.md §1 and the oss2 golden requests.

use super::*;
use crate::sim::oss::golden::{self, GoldenRequest};

const BUCKET: &str = "dmstrack-archive";
const REGION: &str = "cn-hangzhou";
const PREFIX: &str = "dms-archive/11223344/e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd/";

fn frozen() -> jiff::Timestamp {
    "2026-11-27T12:00:00Z".parse().unwrap()
}

fn long_term() -> Credentials {
    Credentials::new(
        "LTAI5tExampleKeyId0001",
        Secret::new("ExampleSecret0001DoNotUse"),
        None,
    )
}

fn sts() -> Credentials {
    Credentials::new(
        "STS.NExampleTempKeyId02",
        Secret::new("ExampleTempSecret0002"),
        Some(Secret::new("CAISExampleSecurityToken+/=0002")),
    )
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

#[test]
fn reference_vector_2_v4_put_object_with_sts() {
    let key = format!("{PREFIX}manifest.json");
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-MD5", "ioBVTJHZ/KisuC8CPeAvEQ=="),
    ];
    let request = OssRequest {
        method: "PUT",
        bucket: BUCKET,
        key: &key,
        query: &[],
        headers: &headers,
    };
    let signature = v4_signature(&request, REGION, &sts(), frozen());
    let expected_canonical = "PUT\n\
        /dmstrack-archive/dms-archive/11223344/e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd/manifest.json\n\
        \n\
        content-md5:ioBVTJHZ/KisuC8CPeAvEQ==\n\
        content-type:application/json\n\
        x-oss-content-sha256:UNSIGNED-PAYLOAD\n\
        x-oss-date:20261127T120000Z\n\
        x-oss-security-token:CAISExampleSecurityToken+/=0002\n\
        \n\
        \n\
        UNSIGNED-PAYLOAD";
    assert_eq!(signature.canonical_request.expose(), expected_canonical);
    assert_eq!(
        sha256_hex(signature.canonical_request.expose()),
        "601aadfb9af01a23d12781555438f13e69fb5c03efb47d724c7ab1c483e76e1a"
    );
    let signed = sign_v4(&request, REGION, &sts(), frozen());
    assert_eq!(
        signed.authorization.expose(),
        "OSS4-HMAC-SHA256 Credential=STS.NExampleTempKeyId02/20261127/cn-hangzhou/oss/aliyun_v4_request, \
         Signature=666d87899bfe084fa486cae2eb7f8a9eec400068b5a735354db70f412b2e63ad"
    );
    assert_eq!(
        signed.wire_pairs(),
        vec![
            ("x-oss-date", "20261127T120000Z"),
            ("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-oss-security-token", "CAISExampleSecurityToken+/=0002"),
            ("authorization", signed.authorization.expose()),
        ]
    );
}

#[test]
fn reference_vector_3_v4_upload_part() {
    let key = format!("{PREFIX}x_REDO_31201_207.zip");
    let request = OssRequest {
        method: "PUT",
        bucket: BUCKET,
        key: &key,
        query: &[
            ("partNumber", "3"),
            ("uploadId", "0004B9894A22E5B1888A1E29F8236E2D"),
        ],
        headers: &[],
    };
    let signature = v4_signature(&request, REGION, &long_term(), frozen());
    assert_eq!(
        sha256_hex(signature.canonical_request.expose()),
        "237f852111b40dc8420572d7c2e31c87881be55216ebbeab121db0c0af40b70f"
    );
    let signed = sign_v4(&request, REGION, &long_term(), frozen());
    assert_eq!(
        signed.authorization.expose(),
        "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId0001/20261127/cn-hangzhou/oss/aliyun_v4_request, \
         Signature=de3c776d8cec77adc23fce49747df966ead8bc426ffde0b3c388357617174a28"
    );
    assert_eq!(signed.security_token, None);
    assert_eq!(signed.wire_pairs().len(), 3);
}

#[test]
fn reference_vector_1_v1_put_object() {
    let key = format!("{PREFIX}x_REDO_31201_207.zip");
    let headers = [
        ("Content-Type", "application/zip"),
        ("Content-MD5", "2aNe9mQoZzzVzFdITucTxQ=="),
    ];
    let request = OssRequest {
        method: "PUT",
        bucket: BUCKET,
        key: &key,
        query: &[],
        headers: &headers,
    };
    let date = http_date(frozen());
    assert_eq!(date, "Fri, 27 Nov 2026 12:00:00 GMT");
    assert_eq!(
        v1_string_to_sign(&request, &date),
        format!(
            "PUT\n2aNe9mQoZzzVzFdITucTxQ==\napplication/zip\nFri, 27 Nov 2026 12:00:00 GMT\n/dmstrack-archive/{key}"
        )
    );
    assert_eq!(
        sign_v1(&request, &date, &long_term()).expose(),
        "OSS LTAI5tExampleKeyId0001:1yWKp6qB6HZMYDoEqb1uAihjFAY="
    );
}

#[test]
fn v4_encodes_the_key_in_the_canonical_uri_and_v1_does_not() {
    let key = format!("{PREFIX}a b+c.zip");
    let request = OssRequest {
        method: "PUT",
        bucket: BUCKET,
        key: &key,
        query: &[("uploads", ""), ("max-parts", "5")],
        headers: &[],
    };
    let canonical = canonical_request(&request, "20261127T120000Z", None);
    assert!(
        canonical
            .contains("/e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd/a%20b%2Bc.zip\nmax-parts=5&uploads\n"),
        "{canonical}"
    );
    let v1 = v1_string_to_sign(&request, "d");
    assert!(v1.ends_with("/a b+c.zip?uploads"), "{v1}");
}

#[test]
fn signer_headers_given_by_the_caller_are_ignored() {
    let key = format!("{PREFIX}manifest.json");
    let plain = [
        ("Content-Type", "application/json"),
        ("Content-MD5", "ioBVTJHZ/KisuC8CPeAvEQ=="),
    ];
    let with_stale = [
        ("Content-Type", "application/json"),
        ("x-oss-date", "20200101T000000Z"),
        ("Authorization", "stale"),
        ("Content-MD5", "ioBVTJHZ/KisuC8CPeAvEQ=="),
        ("User-Agent", "not signed"),
    ];
    let sign = |headers: &[(&str, &str)]| {
        let request = OssRequest {
            method: "PUT",
            bucket: BUCKET,
            key: &key,
            query: &[],
            headers,
        };
        sign_v4(&request, REGION, &sts(), frozen())
    };
    assert_eq!(sign(&plain), sign(&with_stale));
}

#[test]
fn debug_masks_the_authorization_and_the_token() {
    let request = OssRequest {
        method: "GET",
        bucket: BUCKET,
        key: "",
        query: &[("bucketInfo", "")],
        headers: &[],
    };
    let signed = sign_v4(&request, REGION, &sts(), frozen());
    let debug = format!("{signed:?}");
    assert!(!debug.contains("CAISExample"), "{debug}");
    assert!(!debug.contains("Signature="), "{debug}");
    let signature = v4_signature(&request, REGION, &sts(), frozen());
    let debug = format!("{signature:?}");
    assert!(!debug.contains("CAISExample"), "{debug}");
}

#[test]
fn key_encoding_matches_python_quote_with_no_safe_characters() {
    assert_eq!(
        encode_component("a/b c+d~e*f=g_h-i.j 归档"),
        "a%2Fb%20c%2Bd~e%2Af%3Dg_h-i.j%20%E5%BD%92%E6%A1%A3"
    );
    assert_eq!(encode_component(""), "");
}

#[test]
fn endpoint_parsing_and_addressing() {
    let local = OssEndpoint::parse("http://127.0.0.1:9000").unwrap();
    assert_eq!(local.addressing(BUCKET), Addressing::PathStyle);
    assert_eq!(local.host(BUCKET), "127.0.0.1:9000");
    assert_eq!(local.path(BUCKET, ""), "/dmstrack-archive/");
    let localhost = OssEndpoint::parse("http://localhost:9000/").unwrap();
    assert_eq!(localhost.addressing(BUCKET), Addressing::PathStyle);
    let v6 = OssEndpoint::parse("http://[::1]:9000").unwrap();
    assert_eq!(v6.addressing(BUCKET), Addressing::PathStyle);

    let cloud = OssEndpoint::parse("oss-cn-hangzhou.aliyuncs.com").unwrap();
    assert_eq!(cloud.scheme(), "https");
    assert_eq!(cloud.addressing(BUCKET), Addressing::VirtualHosted);
    assert_eq!(
        cloud.host(BUCKET),
        "dmstrack-archive.oss-cn-hangzhou.aliyuncs.com"
    );
    assert_eq!(cloud.path(BUCKET, ""), "/");
    assert_eq!(
        cloud.url(BUCKET, "", &[("bucketInfo", "")]),
        "https://dmstrack-archive.oss-cn-hangzhou.aliyuncs.com/?bucketInfo="
    );
    // A name that cannot be a host label falls back to path-style, as in oss2.
    assert_eq!(cloud.addressing("Bad_Bucket"), Addressing::PathStyle);

    for bad in ["ftp://x", "https://", "https://h/path", "https://u@h"] {
        assert!(OssEndpoint::parse(bad).is_err(), "{bad}");
    }
}

fn is_signed_by_production(fixture: &GoldenRequest) -> bool {
    fixture.inputs.auth == "v4" && fixture.inputs.additional_headers.is_none()
}

fn fixture_credentials(fixture: &GoldenRequest) -> Credentials {
    let inputs = &fixture.inputs;
    Credentials::new(
        inputs.access_key_id.clone(),
        Secret::new(inputs.access_key_secret.clone()),
        inputs.security_token.clone().map(Secret::new),
    )
}

fn fixture_pairs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn every_oss2_v1_fixture_is_reproduced_exactly() {
    let mut checked = 0;
    for fixture in golden::load_all().iter().filter(|f| f.inputs.auth == "v1") {
        let query = fixture_pairs(&fixture.inputs.params);
        let headers = fixture_pairs(&fixture.request.headers);
        let request = OssRequest {
            method: &fixture.request.method,
            bucket: &fixture.inputs.bucket,
            key: fixture.key(),
            query: &query,
            headers: &headers,
        };
        let date = http_date(fixture.time());
        assert_eq!(fixture.header("date"), Some(date.as_str()));
        assert_eq!(
            v1_string_to_sign(&request, &date),
            fixture.signing.string_to_sign,
            "{}",
            fixture.name
        );
        let authorization = sign_v1(&request, &date, &fixture_credentials(fixture));
        assert_eq!(
            fixture.header("authorization"),
            Some(authorization.expose()),
            "{}",
            fixture.name
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} V1 fixtures");
}

#[test]
fn every_oss2_v4_fixture_is_reproduced_exactly() {
    let fixtures = golden::load_all();
    let mut checked = 0;
    for fixture in fixtures.iter().filter(|f| is_signed_by_production(f)) {
        let inputs = &fixture.inputs;
        let credentials = fixture_credentials(fixture);
        let query = fixture_pairs(&inputs.params);
        let headers = fixture_pairs(&fixture.request.headers);
        let request = OssRequest {
            method: &fixture.request.method,
            bucket: &inputs.bucket,
            key: fixture.key(),
            query: &query,
            headers: &headers,
        };
        let name = &fixture.name;
        let signature = v4_signature(&request, &inputs.region, &credentials, fixture.time());
        assert_eq!(
            Some(signature.canonical_request.expose()),
            fixture.signing.canonical_request.as_deref(),
            "{name}"
        );
        assert_eq!(
            signature.string_to_sign, fixture.signing.string_to_sign,
            "{name}"
        );
        let signed = sign_v4(&request, &inputs.region, &credentials, fixture.time());
        for (header, value) in signed.wire_pairs() {
            assert_eq!(fixture.header(header), Some(value), "{name}: {header}");
        }

        let endpoint = OssEndpoint::parse(&inputs.endpoint).unwrap();
        let expected_addressing = match inputs.addressing.as_str() {
            "path" => Addressing::PathStyle,
            _ => Addressing::VirtualHosted,
        };
        assert_eq!(
            endpoint.addressing(&inputs.bucket),
            expected_addressing,
            "{name}"
        );
        assert_eq!(
            endpoint.host(&inputs.bucket),
            fixture.request.host,
            "{name}"
        );
        assert_eq!(
            endpoint.path(&inputs.bucket, fixture.key()),
            fixture.request.path,
            "{name}"
        );
        assert_eq!(
            endpoint.url(&inputs.bucket, fixture.key(), &query),
            fixture.request.url,
            "{name}"
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} V4 fixtures");
}
