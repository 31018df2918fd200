//! Tests of `signer`.
use super::*;
use crate::net::secret::Secret;

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn ts(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

fn creds(id: &str, secret: &str) -> Credentials {
    Credentials::new(id, Secret::new(secret), None)
}

#[test]
fn percent_encoding_follows_rfc3986() {
    assert_eq!(percent_encode("a b*c~d/e+f=g"), "a%20b%2Ac~d%2Fe%2Bf%3Dg");
    assert_eq!(percent_encode("-_.~AZaz09"), "-_.~AZaz09");
    assert_eq!(percent_encode("订单"), "%E8%AE%A2%E5%8D%95");
    assert_eq!(percent_encode("é"), "%C3%A9");
}

#[test]
fn v1_official_describe_regions_vector() {
    let p = params(&[
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("Format", "XML"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Version", "2014-05-26"),
    ]);
    let sts = v1_string_to_sign("GET", &p);
    assert_eq!(
        sts,
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
    );
    assert_eq!(
        v1_signature("testsecret", &sts),
        "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    );
    assert_eq!(
        percent_encode("OLeaidS1JvxuMvnyHOwuJ+uX5qY="),
        "OLeaidS1JvxuMvnyHOwuJ%2BuX5qY%3D"
    );
}

#[test]
fn v1_official_describe_dedicated_hosts_vector() {
    let p = params(&[
        ("AccessKeyId", "testid"),
        ("Action", "DescribeDedicatedHosts"),
        ("Format", "JSON"),
        ("RegionId", "cn-beijing"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "edb2b34af0af9a6d14deaf7c1a5315eb"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2023-03-13T08:34:30Z"),
        ("Version", "2014-05-26"),
    ]);
    assert_eq!(
        v1_signature("testsecret", &v1_string_to_sign("GET", &p)),
        "9NaGiOspFP5UPcwX8Iwt2YJXXuk="
    );
    assert_eq!(
        v1_signature("testsecret", &v1_string_to_sign("POST", &p)),
        "ZvQ9xGiFnquSJRvj+WE6kdSpTwU="
    );
}

fn dms_v1_params() -> Vec<(String, String)> {
    params(&[
        ("AccessKeyId", "testid"),
        ("Action", "QueryDataTrackResultDownloadStatus"),
        ("DownloadKeyId", "dk-2024/a+b c*~"),
        ("Format", "JSON"),
        ("OrderId", "123456"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Tid", "3"),
        ("Timestamp", "2024-01-02T03:04:05Z"),
        ("Version", "2018-11-01"),
    ])
}

#[test]
fn v1_dms_vectors_with_reserved_characters() {
    let p = dms_v1_params();
    let post = v1_string_to_sign("POST", &p);
    assert!(
        post.contains("DownloadKeyId%3Ddk-2024%252Fa%252Bb%2520c%252A~"),
        "{post}"
    );
    assert_eq!(
        v1_signature("testsecret", &post),
        "vsLNkYM0zNgUzRB/1pFcL3WLAcg="
    );
    assert_eq!(
        v1_signature("testsecret", &v1_string_to_sign("GET", &p)),
        "M9741fxje9tXnr8osvX2OTw5Qp0="
    );
}

#[test]
fn v1_sign_builds_the_same_request_as_the_vector() {
    let business = params(&[
        ("DownloadKeyId", "dk-2024/a+b c*~"),
        ("OrderId", "123456"),
        ("Tid", "3"),
    ]);
    let request = RpcRequest {
        method: "POST",
        host: "dms-enterprise.aliyuncs.com",
        action: "QueryDataTrackResultDownloadStatus",
        version: "2018-11-01",
        params: &business,
    };
    let signed = sign(
        SignatureVersion::V1,
        &request,
        &creds("testid", "testsecret"),
        ts("2024-01-02T03:04:05Z"),
        "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    );
    assert_eq!(
        signed.query,
        format!(
            "{}&Signature={}",
            canonical_query(&dms_v1_params()),
            percent_encode("vsLNkYM0zNgUzRB/1pFcL3WLAcg=")
        )
    );
    assert!(
        signed
            .query
            .ends_with("&Signature=vsLNkYM0zNgUzRB%2F1pFcL3WLAcg%3D")
    );
}

#[test]
fn v3_official_run_instances_vector() {
    let query = params(&[
        (
            "ImageId",
            "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
        ),
        ("RegionId", "cn-shanghai"),
    ]);
    let headers = params(&[
        ("host", "ecs.cn-shanghai.aliyuncs.com"),
        ("x-acs-action", "RunInstances"),
        ("x-acs-version", "2014-05-26"),
        ("x-acs-date", "2023-10-26T10:22:32Z"),
        ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
        ("x-acs-content-sha256", EMPTY_BODY_SHA256),
    ]);
    let canonical = v3_canonical_request("POST", &query, &headers, EMPTY_BODY_SHA256);
    assert_eq!(
        sha256_hex(canonical.as_bytes()),
        "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    );
    assert_eq!(
        v3_signature("YourAccessKeySecret", &canonical),
        "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    );
    assert_eq!(
        v3_canonical_headers(&headers).1,
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
    );
}

#[test]
fn v3_dms_vector_through_sign() {
    let business = params(&[
        ("DownloadKeyId", "dk-2024/a+b c*~"),
        ("OrderId", "123456"),
        ("Tid", "3"),
    ]);
    assert_eq!(
        canonical_query(&business),
        "DownloadKeyId=dk-2024%2Fa%2Bb%20c%2A~&OrderId=123456&Tid=3"
    );
    let request = RpcRequest {
        method: "POST",
        host: "dms-enterprise.aliyuncs.com",
        action: "QueryDataTrackResultDownloadStatus",
        version: "2018-11-01",
        params: &business,
    };
    let signed = sign(
        SignatureVersion::V3,
        &request,
        &creds("testid", "testsecret"),
        ts("2024-01-02T03:04:05Z"),
        "3156853299f313e23d1673dc12e1703d",
    );
    let headers = params(&[
        ("host", "dms-enterprise.aliyuncs.com"),
        ("x-acs-action", "QueryDataTrackResultDownloadStatus"),
        ("x-acs-version", "2018-11-01"),
        ("x-acs-date", "2024-01-02T03:04:05Z"),
        ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
        ("x-acs-content-sha256", EMPTY_BODY_SHA256),
    ]);
    let canonical = v3_canonical_request("POST", &business, &headers, EMPTY_BODY_SHA256);
    assert_eq!(
        sha256_hex(canonical.as_bytes()),
        "7146174a6fab0c6f8277d7b81f419a4453aa7c78cee879637fa835acaea8eaef"
    );
    let authorization = signed
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .unwrap();
    assert_eq!(
        authorization.1,
        "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=9734523ad1e42a7ed0e0ff2b3fe4959ac4fcdb82356ce8e3e5679fa2194d21ce"
    );
    assert!(signed.headers.iter().all(|(k, _)| k != "host"));
    assert_eq!(
        signed.query,
        "DownloadKeyId=dk-2024%2Fa%2Bb%20c%2A~&OrderId=123456&Tid=3"
    );
}

#[test]
fn v3_sts_signs_the_token_headers() {
    let business = params(&[("OrderId", "1")]);
    let request = RpcRequest {
        method: "POST",
        host: "h",
        action: "A",
        version: "V",
        params: &business,
    };
    let credentials = Credentials::new("STS.id", Secret::new("s"), Some(Secret::new("tok")));
    let signed = sign(
        SignatureVersion::V3,
        &request,
        &credentials,
        ts("2024-01-02T03:04:05Z"),
        "n",
    );
    let authorization = &signed
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .unwrap()
        .1;
    assert!(
        authorization.contains("x-acs-accesskey-id;x-acs-action"),
        "{authorization}"
    );
    assert!(
        authorization.contains("x-acs-security-token;x-acs-signature-nonce"),
        "{authorization}"
    );
    let v1 = sign(
        SignatureVersion::V1,
        &request,
        &credentials,
        ts("2024-01-02T03:04:05Z"),
        "n",
    );
    assert!(v1.query.contains("SecurityToken=tok"));
}

/// Non-ASCII values are signed as their UTF-8 bytes, percent-encoded, in both versions;
/// the expected values come from the reference Python in dms-api.md (`quote(s, safe='~')`).
#[test]
fn non_ascii_utf8_values() {
    let p = params(&[
        ("FilterTableList", "[\"订单\",\"clients é\"]"),
        ("OrderId", "7"),
    ]);
    assert_eq!(
        canonical_query(&p),
        "FilterTableList=%5B%22%E8%AE%A2%E5%8D%95%22%2C%22clients%20%C3%A9%22%5D&OrderId=7"
    );
    let sts = v1_string_to_sign("POST", &p);
    assert_eq!(
        sts,
        "POST&%2F&FilterTableList%3D%255B%2522%25E8%25AE%25A2%25E5%258D%2595%2522%252C%2522clients%2520%25C3%25A9%2522%255D%26OrderId%3D7"
    );
    assert_eq!(v1_signature("testsecret", &sts), V1_NON_ASCII);
    let headers = params(&[("host", "h"), ("x-acs-action", "A")]);
    let canonical = v3_canonical_request("POST", &p, &headers, EMPTY_BODY_SHA256);
    assert_eq!(v3_signature("testsecret", &canonical), V3_NON_ASCII);
}

const V1_NON_ASCII: &str = "MOjRsCUx7d7ml818AKt6F4WwnCU=";
const V3_NON_ASCII: &str = "48174920605896ab9f57da78de74969d378d1c9a468259782f15091d5bab6da4";
