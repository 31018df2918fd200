//! Header authentication of the OSS simulator: `Authorization: OSS4-HMAC-SHA256 …` (V4) and
//! `Authorization: OSS ak:signature` (V1), checked against the keys registered on the
//! simulator, with STS tokens, their expiry and the 15-minute clock-skew rule.
//!
//! Written from `shared/reference/oss-upload.md` §1 and proven by replaying oss2's requests
//! (`tests/fixtures/golden/oss/`). It deliberately shares no code with the production signer
//! (`crate::job::upload::oss_sign`): a simulator that verified with the production code would
//! accept whatever that code gets wrong.
//!
//! Order of the checks, as OSS reports them: malformed header (400) → unknown AccessKey id →
//! STS token missing / wrong / expired → missing or skewed date → V4 scope and payload rules →
//! signature. Every refusal is an [`OssError`] in OSS's shape; a signature mismatch echoes
//! `StringToSign` (and, for V4, `CanonicalRequest`) so a client can diff them.

use std::collections::HashMap;

use hmac::{KeyInit, Mac};
use hyper::StatusCode;
use hyper::header::HeaderMap;
use sha2::{Digest as _, Sha256};

use super::reply::OssError;
use super::{canonicalized_oss_headers, oss_v1_signature, oss_v1_string_to_sign};
use crate::net::secret::Secret;

/// Largest accepted distance between the request's date and the simulator's clock.
const MAX_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);

/// The only payload hash OSS accepts in V4 header signing.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Query parameters OSS signs as V1 sub-resources (the ones this simulator can meet).
const V1_SUBRESOURCES: &[&str] = &[
    "acl",
    "append",
    "bucketInfo",
    "delete",
    "location",
    "objectMeta",
    "partNumber",
    "position",
    "security-token",
    "tagging",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "x-oss-process",
];

/// An AccessKey the simulator accepts.
#[derive(Debug, Clone)]
pub(super) struct RegisteredKey {
    pub(super) secret: Secret,
    /// STS: the token every request must carry.
    pub(super) security_token: Option<Secret>,
    /// STS: when the token stops being accepted.
    pub(super) expires_at: Option<jiff::Timestamp>,
}

/// The parts of a request the signature covers.
#[derive(Debug)]
pub(super) struct SignedParts<'a> {
    pub(super) method: &'a str,
    pub(super) bucket: &'a str,
    /// Decoded key, `""` for a bucket-level request.
    pub(super) key: &'a str,
    /// Decoded query pairs, in arrival order.
    pub(super) query: &'a [(String, String)],
    pub(super) headers: &'a HeaderMap,
}

/// Verifies the `Authorization` header; `Ok` carries the AccessKey id.
pub(super) fn verify(
    request: &SignedParts<'_>,
    keys: &HashMap<String, RegisteredKey>,
    region: &str,
    now: jiff::Timestamp,
) -> Result<String, OssError> {
    let authorization = header(request.headers, "authorization").unwrap_or_default();
    if let Some(rest) = authorization.strip_prefix("OSS4-HMAC-SHA256 ") {
        verify_v4(request, rest, keys, region, now)
    } else if let Some(rest) = authorization.strip_prefix("OSS ") {
        verify_v1(request, rest, keys, now)
    } else {
        Err(
            OssError::invalid_argument("Authorization header is invalid.", "0002-00000001")
                .with("Authorization", authorization),
        )
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The AccessKey and, for STS, the token rules.
fn check_key<'k>(
    access_key_id: &str,
    headers: &HeaderMap,
    keys: &'k HashMap<String, RegisteredKey>,
    now: jiff::Timestamp,
) -> Result<&'k RegisteredKey, OssError> {
    let key = keys
        .get(access_key_id)
        .ok_or_else(|| OssError::invalid_access_key_id(access_key_id))?;
    let sent_token = header(headers, "x-oss-security-token");
    match (&key.security_token, sent_token) {
        (None, None) => {}
        // An STS AccessKey id exists only together with its token.
        (Some(_), None) => return Err(OssError::invalid_access_key_id(access_key_id)),
        (None, Some(_)) => return Err(invalid_security_token()),
        (Some(expected), Some(sent)) => {
            if sent != expected.expose() {
                return Err(invalid_security_token());
            }
            if key.expires_at.is_some_and(|at| now >= at) {
                // EC 0002-00000007 per oss-upload.md; the Code string is not verified there.
                return Err(OssError::new(
                    StatusCode::FORBIDDEN,
                    "SecurityTokenExpired",
                    "The security token you provided has expired.",
                    "0002-00000007",
                ));
            }
        }
    }
    Ok(key)
}

fn invalid_security_token() -> OssError {
    OssError::new(
        StatusCode::FORBIDDEN,
        "InvalidSecurityToken",
        "The security token you provided is invalid.",
        "0002-00000008",
    )
}

fn check_skew(request_time: jiff::Timestamp, now: jiff::Timestamp) -> Result<(), OssError> {
    let skew = now.duration_since(request_time).abs();
    if skew > MAX_SKEW {
        return Err(OssError::new(
            StatusCode::FORBIDDEN,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            "0002-00000504",
        )
        .with(
            "RequestTime",
            request_time.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
        )
        .with(
            "ServerTime",
            now.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
        )
        .with("MaxAllowedSkewMilliseconds", "900000"));
    }
    Ok(())
}

fn signature_mismatch(
    access_key_id: &str,
    provided: &str,
    string_to_sign: &str,
    canonical_request: Option<&str>,
    ec: &'static str,
) -> OssError {
    let bytes: Vec<String> = string_to_sign.bytes().map(|b| format!("{b:02x}")).collect();
    let mut error = OssError::new(
        StatusCode::FORBIDDEN,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. \
         Check your key and signing method.",
        ec,
    )
    .with("OSSAccessKeyId", access_key_id)
    .with("SignatureProvided", provided)
    .with("StringToSign", string_to_sign)
    .with("StringToSignBytes", bytes.join(" "));
    if let Some(canonical) = canonical_request {
        error = error.with("CanonicalRequest", canonical);
    }
    error
}

// ---- V4 ---------------------------------------------------------------------------------

/// The comma-separated fields of a V4 `Authorization` header.
struct V4Header {
    access_key_id: String,
    date: String,
    region: String,
    product: String,
    terminal: String,
    additional: Option<String>,
    signature: String,
}

fn parse_v4_header(rest: &str) -> Result<V4Header, OssError> {
    let malformed = |what: &str| {
        OssError::invalid_argument(
            format!("Authorization header is invalid: {what}."),
            "0002-00000001",
        )
    };
    let mut credential = None;
    let mut additional = None;
    let mut signature = None;
    for field in rest.split(',') {
        let (name, value) = field
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed("a field without '='"))?;
        match name {
            "Credential" => credential = Some(value.to_owned()),
            "AdditionalHeaders" => additional = Some(value.to_owned()),
            "Signature" => signature = Some(value.to_owned()),
            _ => return Err(malformed("an unknown field")),
        }
    }
    let credential = credential.ok_or_else(|| malformed("no Credential"))?;
    let signature = signature.ok_or_else(|| malformed("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, product, terminal] = scope[..] else {
        return Err(malformed(
            "Credential is not ak/date/region/oss/aliyun_v4_request",
        ));
    };
    Ok(V4Header {
        access_key_id: access_key_id.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        product: product.to_owned(),
        terminal: terminal.to_owned(),
        additional,
        signature,
    })
}

fn verify_v4(
    request: &SignedParts<'_>,
    rest: &str,
    keys: &HashMap<String, RegisteredKey>,
    region: &str,
    now: jiff::Timestamp,
) -> Result<String, OssError> {
    let auth = parse_v4_header(rest)?;
    let key = check_key(&auth.access_key_id, request.headers, keys, now)?;

    let x_oss_date = header(request.headers, "x-oss-date")
        .ok_or_else(|| OssError::access_denied("x-oss-date is required with OSS4-HMAC-SHA256."))?;
    let request_time = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", &x_oss_date)
        .and_then(|t| jiff::tz::TimeZone::UTC.to_timestamp(t))
        .map_err(|_| {
            OssError::access_denied("x-oss-date is not yyyymmddTHHMMSSZ.")
                .with("XOssDate", &x_oss_date)
        })?;
    check_skew(request_time, now)?;

    if auth.date != x_oss_date[..8] || auth.product != "oss" || auth.terminal != "aliyun_v4_request"
    {
        return Err(OssError::invalid_argument(
            "Invalid credential scope in Authorization header.",
            "0002-00000231",
        ));
    }
    if auth.region != region {
        return Err(OssError::invalid_argument(
            "Invalid signing region in Authorization header.",
            "0002-00000230",
        ));
    }
    let payload = header(request.headers, "x-oss-content-sha256");
    if payload.as_deref() != Some(UNSIGNED_PAYLOAD) {
        // EC 0002-00000214 per oss-upload.md.
        return Err(OssError::invalid_argument(
            "x-oss-content-sha256 must be UNSIGNED-PAYLOAD.",
            "0002-00000214",
        ));
    }
    let additional: Vec<String> = match &auth.additional {
        None => Vec::new(),
        // EC 0002-00000209 per oss-upload.md: an empty list is refused.
        Some(list) if list.trim().is_empty() => {
            return Err(OssError::invalid_argument(
                "AdditionalHeaders must not be empty.",
                "0002-00000209",
            ));
        }
        Some(list) => {
            let mut names: Vec<String> = list
                .split(';')
                .map(|n| n.trim().to_ascii_lowercase())
                .collect();
            names.sort();
            names.dedup();
            names
        }
    };

    let canonical = v4_canonical_request(request, &additional, UNSIGNED_PAYLOAD);
    let scope = format!("{}/{region}/oss/aliyun_v4_request", auth.date);
    let string_to_sign = format!(
        "OSS4-HMAC-SHA256\n{x_oss_date}\n{scope}\n{}",
        lower_hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut signing_key = hmac256(
        format!("aliyun_v4{}", key.secret.expose()).as_bytes(),
        auth.date.as_bytes(),
    );
    for step in [region, "oss", "aliyun_v4_request"] {
        signing_key = hmac256(&signing_key, step.as_bytes());
    }
    let expected = lower_hex(&hmac256(&signing_key, string_to_sign.as_bytes()));
    if expected != auth.signature {
        return Err(signature_mismatch(
            &auth.access_key_id,
            &auth.signature,
            &string_to_sign,
            Some(&canonical),
            "0002-00000228",
        ));
    }
    Ok(auth.access_key_id)
}

/// The V4 canonical request as the server rebuilds it from what arrived.
fn v4_canonical_request(request: &SignedParts<'_>, additional: &[String], payload: &str) -> String {
    let uri = uri_encode(&format!("/{}/{}", request.bucket, request.key), true);

    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    query.sort();
    let query: Vec<String> = query
        .into_iter()
        .map(|(k, v)| if v.is_empty() { k } else { format!("{k}={v}") })
        .collect();

    let mut names: Vec<&str> = request
        .headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| {
            n.starts_with("x-oss-")
                || *n == "content-type"
                || *n == "content-md5"
                || additional.iter().any(|a| a == n)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut headers = String::new();
    for name in names {
        let value = header(request.headers, name).unwrap_or_default();
        headers.push_str(&format!("{name}:{value}\n"));
    }

    format!(
        "{}\n{uri}\n{}\n{headers}\n{}\n{payload}",
        request.method,
        query.join("&"),
        additional.join(";"),
    )
}

/// Every byte but `A-Z a-z 0-9 - _ . ~` (and `/` when `keep_slash`) as `%XY`.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let plain = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/');
        if plain {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn lower_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- V1 ---------------------------------------------------------------------------------

fn verify_v1(
    request: &SignedParts<'_>,
    rest: &str,
    keys: &HashMap<String, RegisteredKey>,
    now: jiff::Timestamp,
) -> Result<String, OssError> {
    let Some((access_key_id, provided)) = rest.rsplit_once(':') else {
        return Err(OssError::invalid_argument(
            "Authorization header is invalid: expected OSS AccessKeyId:Signature.",
            "0002-00000001",
        ));
    };
    let key = check_key(access_key_id, request.headers, keys, now)?;

    let date = header(request.headers, "x-oss-date")
        .or_else(|| header(request.headers, "date"))
        .ok_or_else(|| OssError::access_denied("OSS authentication requires a valid Date."))?;
    let request_time = parse_v1_date(&date).ok_or_else(|| {
        OssError::access_denied("OSS authentication requires a valid Date.").with("Date", &date)
    })?;
    check_skew(request_time, now)?;

    let oss_headers = canonicalized_oss_headers(
        request
            .headers
            .iter()
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))),
    );
    let mut subresources: Vec<&(String, String)> = request
        .query
        .iter()
        .filter(|(k, _)| V1_SUBRESOURCES.contains(&k.as_str()) || k.starts_with("response-"))
        .collect();
    subresources.sort();
    let mut resource = format!("/{}/{}", request.bucket, request.key);
    for (i, (k, v)) in subresources.iter().enumerate() {
        resource.push(if i == 0 { '?' } else { '&' });
        resource.push_str(k);
        if !v.is_empty() {
            resource.push('=');
            resource.push_str(v);
        }
    }
    let string_to_sign = oss_v1_string_to_sign(
        request.method,
        &header(request.headers, "content-md5").unwrap_or_default(),
        &header(request.headers, "content-type").unwrap_or_default(),
        &date,
        &oss_headers,
        &resource,
    );
    let expected = oss_v1_signature(key.secret.expose(), &string_to_sign);
    if expected != provided {
        return Err(signature_mismatch(
            access_key_id,
            provided,
            &string_to_sign,
            None,
            "0002-00000040",
        ));
    }
    Ok(access_key_id.to_owned())
}

/// `Fri, 27 Nov 2026 12:00:00 GMT`, or the V4 form when a V1 request sends `x-oss-date`.
fn parse_v1_date(text: &str) -> Option<jiff::Timestamp> {
    let utc = |t: jiff::civil::DateTime| jiff::tz::TimeZone::UTC.to_timestamp(t).ok();
    jiff::civil::DateTime::strptime("%a, %d %b %Y %H:%M:%S GMT", text)
        .ok()
        .and_then(utc)
        .or_else(|| {
            jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", text)
                .ok()
                .and_then(utc)
        })
}
