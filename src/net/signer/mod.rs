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
mod tests;
