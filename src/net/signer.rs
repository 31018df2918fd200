//! Pure request signing for Alibaba Cloud RPC APIs: V3 `ACS3-HMAC-SHA256` and V1 `HMAC-SHA1`.
//!
//! Nothing here reads a clock, draws a nonce or touches the network: the caller passes the
//! timestamp and nonce, so every function is reproducible and tested against the vendor's
//! published vectors (see `../shared/reference/dms-api.md` §3). The DMS simulator verifies
//! requests with these same canonicalisation functions, and STS `AssumeRole` reuses the V1 path.

use std::fmt::Write as _;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::net::access_key::Credentials;

/// RFC 3986 unreserved characters stay as they are; everything else becomes `%XY` (upper-case
/// hex, UTF-8 bytes). Space is `%20`, `*` is `%2A`, `~` is kept: exactly Alibaba's rules.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The hex SHA-256 of an empty body, sent as `x-acs-content-sha256` on every RPC call.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The V3 algorithm name, first line of the string to sign and prefix of `Authorization`.
pub const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Which signature algorithm requests carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureVersion {
    /// V3 `ACS3-HMAC-SHA256`: the official SDKs' default.
    #[default]
    V3,
    /// V1 (`SignatureVersion=1.0`) `HMAC-SHA1`, the older RPC signature.
    V1,
}

/// One RPC call before signing: what the caller wants, without any authentication.
#[derive(Debug, Clone)]
pub struct RpcRequest<'a> {
    /// HTTP method; it is part of both signatures.
    pub method: &'a str,
    /// The `Host` header exactly as sent (`host` or `host:port` for a non-default port).
    pub host: &'a str,
    /// The API action, e.g. `QueryDataTrackResultDownloadStatus`.
    pub action: &'a str,
    /// The API version, e.g. `2018-11-01`.
    pub version: &'a str,
    /// Business parameters (name, value), all sent in the query string.
    pub params: &'a [(String, String)],
}

/// What to put on the wire: the query string (after `/?`) and the extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The full, already percent-encoded query string. Send it verbatim.
    pub query: String,
    /// Headers to send besides `Host` (names lower-case). Includes `authorization` for V3.
    pub headers: Vec<(String, String)>,
}

/// Percent-encodes one name or value with Alibaba's RFC 3986 rules.
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, RFC3986).to_string()
}

/// `k=v&k=v` with names and values percent-encoded, sorted by encoded name (byte order),
/// then by value, so repeated names are deterministic.
pub fn canonical_query<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k.as_ref()), percent_encode(v.as_ref())))
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (i, (k, v)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Formats a timestamp the way both signatures want it: `yyyy-MM-ddTHH:mm:ssZ` in UTC.
pub fn format_timestamp(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// V1 string to sign: `METHOD&%2F&pe(canonical query)`.
pub fn v1_string_to_sign<K: AsRef<str>, V: AsRef<str>>(method: &str, params: &[(K, V)]) -> String {
    format!(
        "{}&{}&{}",
        method,
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// V1 signature: `Base64(HMAC-SHA1(secret + "&", string_to_sign))`.
pub fn v1_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(format!("{access_key_secret}&").as_bytes())
            .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Lower-case hex of bytes (V3 wants lower-case everywhere).
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

/// V3 canonical headers: lower-case names, trimmed values, sorted; returns
/// (`name:value\n` lines, `name;name` signed-header list).
pub fn v3_canonical_headers<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> (String, String) {
    let mut lowered: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_ref().to_ascii_lowercase(),
                v.as_ref().trim().to_owned(),
            )
        })
        .collect();
    lowered.sort();
    let mut canonical = String::new();
    let mut signed = String::new();
    for (i, (k, v)) in lowered.iter().enumerate() {
        canonical.push_str(k);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
        if i > 0 {
            signed.push(';');
        }
        signed.push_str(k);
    }
    (canonical, signed)
}

/// V3 canonical request:
/// `METHOD\n/\nCanonicalQuery\nCanonicalHeaders\nSignedHeaders\nHexSha256(body)`.
pub fn v3_canonical_request<Q, W, K, V>(
    method: &str,
    query: &[(Q, W)],
    headers: &[(K, V)],
    body_sha256_hex: &str,
) -> String
where
    Q: AsRef<str>,
    W: AsRef<str>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let (canonical_headers, signed_headers) = v3_canonical_headers(headers);
    format!(
        "{method}\n/\n{}\n{canonical_headers}\n{signed_headers}\n{body_sha256_hex}",
        canonical_query(query)
    )
}

/// V3 signature: `hex(HMAC-SHA256(secret, "ACS3-HMAC-SHA256\n" + hex(sha256(canonical request))))`.
pub fn v3_signature(access_key_secret: &str, canonical_request: &str) -> String {
    let string_to_sign = format!(
        "{V3_ALGORITHM}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    hex_lower(&mac.finalize().into_bytes())
}

/// Signs one RPC call. `timestamp` and `nonce` must be fresh for every attempt: the gateway
/// rejects a reused nonce (`SignatureNonceUsed`) and a clock more than 15 minutes off.
pub fn sign(
    version: SignatureVersion,
    request: &RpcRequest<'_>,
    credentials: &Credentials,
    timestamp: jiff::Timestamp,
    nonce: &str,
) -> SignedRequest {
    match version {
        SignatureVersion::V1 => sign_v1(request, credentials, timestamp, nonce),
        SignatureVersion::V3 => sign_v3(request, credentials, timestamp, nonce),
    }
}

fn sign_v1(
    request: &RpcRequest<'_>,
    credentials: &Credentials,
    timestamp: jiff::Timestamp,
    nonce: &str,
) -> SignedRequest {
    let mut params: Vec<(String, String)> = request.params.to_vec();
    let common = [
        ("AccessKeyId", credentials.access_key_id.clone()),
        ("Action", request.action.to_owned()),
        ("Format", "JSON".to_owned()),
        ("SignatureMethod", "HMAC-SHA1".to_owned()),
        ("SignatureNonce", nonce.to_owned()),
        ("SignatureVersion", "1.0".to_owned()),
        ("Timestamp", format_timestamp(timestamp)),
        ("Version", request.version.to_owned()),
    ];
    params.extend(common.into_iter().map(|(k, v)| (k.to_owned(), v)));
    if let Some(token) = &credentials.security_token {
        params.push(("SecurityToken".to_owned(), token.expose().to_owned()));
    }
    let signature = v1_signature(
        credentials.access_key_secret.expose(),
        &v1_string_to_sign(request.method, &params),
    );
    let query = format!(
        "{}&Signature={}",
        canonical_query(&params),
        percent_encode(&signature)
    );
    SignedRequest {
        query,
        headers: vec![
            ("x-acs-action".to_owned(), request.action.to_owned()),
            ("x-acs-version".to_owned(), request.version.to_owned()),
        ],
    }
}

fn sign_v3(
    request: &RpcRequest<'_>,
    credentials: &Credentials,
    timestamp: jiff::Timestamp,
    nonce: &str,
) -> SignedRequest {
    let mut headers: Vec<(String, String)> = vec![
        ("host".to_owned(), request.host.to_owned()),
        ("x-acs-action".to_owned(), request.action.to_owned()),
        (
            "x-acs-content-sha256".to_owned(),
            EMPTY_BODY_SHA256.to_owned(),
        ),
        ("x-acs-date".to_owned(), format_timestamp(timestamp)),
        ("x-acs-signature-nonce".to_owned(), nonce.to_owned()),
        ("x-acs-version".to_owned(), request.version.to_owned()),
    ];
    if let Some(token) = &credentials.security_token {
        // As the SDK does with STS credentials: both are signed.
        headers.push((
            "x-acs-accesskey-id".to_owned(),
            credentials.access_key_id.clone(),
        ));
        headers.push(("x-acs-security-token".to_owned(), token.expose().to_owned()));
    }
    let canonical =
        v3_canonical_request(request.method, request.params, &headers, EMPTY_BODY_SHA256);
    let signature = v3_signature(credentials.access_key_secret.expose(), &canonical);
    let (_, signed_headers) = v3_canonical_headers(&headers);
    let authorization = format!(
        "{V3_ALGORITHM} Credential={},SignedHeaders={signed_headers},Signature={signature}",
        credentials.access_key_id
    );
    // `host` is set by the HTTP client from the URL; sending it twice would be wrong.
    headers.retain(|(name, _)| name != "host");
    headers.push(("authorization".to_owned(), authorization));
    SignedRequest {
        query: canonical_query(request.params),
        headers,
    }
}

#[cfg(test)]
mod tests {
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
}
