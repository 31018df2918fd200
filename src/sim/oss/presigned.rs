//! The download half of the OSS simulator: GET/HEAD through V1 presigned URLs (what DMS hands
//! out), with the query-signature and expiry checks done on the raw query, the download faults
//! (`OssFault`), and the object answer with OSS's lenient `Range` rules that header-signed
//! GETs reuse. Facts: `shared/reference/dms-api.md` §8.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use hyper::header::HeaderMap;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;

use super::body::{BodyStop, SimBody};
use super::reply::{OssError, http_date, iso8601};
use super::server::{Outcome, Target};
use super::store::{RangeSource, StoredObject};
use super::{OssFault, OssOperation, Shared};
use crate::net::secret::Secret;
use crate::net::signer::percent_encode;

/// The V1 string to sign:
/// `VERB\nContent-MD5\nContent-Type\nExpires\n{CanonicalizedOSSHeaders}{CanonicalizedResource}`.
///
/// `canonicalized_oss_headers` is already in its final form (`name:value\n` per header, see
/// [`canonicalized_oss_headers`]).
pub fn oss_v1_string_to_sign(
    verb: &str,
    content_md5: &str,
    content_type: &str,
    expires: &str,
    canonicalized_oss_headers: &str,
    canonicalized_resource: &str,
) -> String {
    format!(
        "{verb}\n{content_md5}\n{content_type}\n{expires}\n{canonicalized_oss_headers}{canonicalized_resource}"
    )
}

/// V1 signature: `Base64(HMAC-SHA1(secret, string_to_sign))` (no `&` appended to the key,
/// unlike the RPC V1 signature).
pub fn oss_v1_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Every `x-oss-*` header, name lower-case and value trimmed, sorted by name, as
/// `name:value\n` lines. Repeated headers are joined with `,`.
pub fn canonicalized_oss_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut oss: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if !name.starts_with("x-oss-") {
            continue;
        }
        match oss.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(value.trim());
            }
            None => oss.push((name, value.trim().to_owned())),
        }
    }
    oss.sort();
    oss.iter().map(|(n, v)| format!("{n}:{v}\n")).collect()
}

/// `/bucket/key` with the decoded key, plus `?security-token=<token>` when one is used.
pub fn canonicalized_resource(bucket: &str, key: &str, security_token: Option<&str>) -> String {
    match security_token {
        Some(token) => format!("/{bucket}/{key}?security-token={token}"),
        None => format!("/{bucket}/{key}"),
    }
}

/// Percent-encodes each `/`-separated segment of a key (RFC 3986), keeping the slashes.
pub fn encode_key(key: &str) -> String {
    key.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Wall-clock unix seconds: OSS checks `Expires` against real time, not tokio's clock.
pub(super) fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Splits the raw query on `&` and decodes names and values like a form decoder (`+` is a
/// space), so a client that re-encodes the signature produces a different value.
pub(super) fn parse_query(raw: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let spaced = s.replace('+', " ");
        percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
    };
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// Answers a request without an `Authorization` header: a presigned GET or HEAD.
pub(super) fn answer(
    shared: &Shared,
    request: &Parts,
    target: &Target,
    raw_query: &str,
    request_id: &str,
    cut: &Arc<AtomicBool>,
) -> Outcome {
    let error = |error: OssError| Outcome::error(error, request_id, &shared.host_id, cut);
    let config = &shared.config;
    let method = &request.method;
    let operation = if method == Method::HEAD {
        OssOperation::HeadObject
    } else {
        OssOperation::GetObject
    };
    if method != Method::GET && method != Method::HEAD {
        return error(
            OssError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                "0003-00000102",
            )
            .with("Method", method.as_str()),
        );
    }
    if target.bucket != config.bucket {
        return error(OssError::no_such_bucket(&target.bucket));
    }
    let key = target.key.as_str();
    let with_key = |outcome: Outcome| outcome.for_key(key).with_operation(operation);

    let query = parse_query(raw_query);
    let param = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (access_key_id, signature) = (param("OSSAccessKeyId"), param("Signature"));
    if access_key_id.is_none() && signature.is_none() {
        return with_key(error(OssError::access_denied(
            "You have no right to access this object because of bucket acl.",
        )));
    }
    let expires_text = match param("Expires") {
        None => {
            return with_key(error(OssError::access_denied(
                "Expires is required in a signed URL.",
            )));
        }
        Some("") => {
            return with_key(error(OssError::access_denied("Expires must not be empty.")));
        }
        Some(text) => text,
    };
    let Ok(expires) = expires_text.parse::<i64>() else {
        return with_key(error(
            OssError::access_denied("Expires must be a Unix time in seconds.")
                .with("Expires", expires_text),
        ));
    };

    let sent_token = param("security-token");
    let known_key = access_key_id == Some(config.access_key_id.as_str());
    // An STS AccessKey id exists only together with its token.
    let key_usable = known_key && (config.security_token.is_none() || sent_token.is_some());
    if !key_usable {
        return with_key(error(OssError::invalid_access_key_id(
            access_key_id.unwrap_or(""),
        )));
    }

    if unix_now() > expires {
        return with_key(error(expired(expires)));
    }

    if sent_token != config.security_token.as_ref().map(Secret::expose) {
        return with_key(error(OssError::new(
            StatusCode::FORBIDDEN,
            "InvalidSecurityToken",
            "The security token you provided is invalid.",
            "0002-00000008",
        )));
    }

    let header_text = |name: &str| {
        request
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .unwrap_or_default()
    };
    let oss_headers = canonicalized_oss_headers(
        request
            .headers
            .iter()
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))),
    );
    let string_to_sign = oss_v1_string_to_sign(
        method.as_str(),
        &header_text("content-md5"),
        &header_text("content-type"),
        expires_text,
        &oss_headers,
        &canonicalized_resource(&target.bucket, key, sent_token),
    );
    let expected = oss_v1_signature(config.access_key_secret.expose(), &string_to_sign);
    if signature != Some(expected.as_str()) {
        return with_key(error(
            OssError::new(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you \
                 provided. Check your key and signing method.",
                "0002-00000017",
            )
            .with("OSSAccessKeyId", config.access_key_id.clone()),
        ));
    }

    let (fault, object) = {
        let mut state = shared.lock();
        let fault = if method == Method::GET {
            state.faults.get_mut(key).and_then(VecDeque::pop_front)
        } else {
            None
        };
        let object = state
            .objects
            .get(&(target.bucket.clone(), key.to_owned()))
            .cloned();
        (fault, object)
    };
    let with_fault = |outcome: Outcome| {
        let mut outcome = with_key(outcome);
        outcome.fault = fault;
        outcome
    };
    let fault_error = match fault {
        Some(OssFault::Expired) => Some(expired(expires)),
        Some(OssFault::InternalError) => Some(OssError::internal_error()),
        Some(OssFault::SlowDown) => Some(OssError::slow_down()),
        _ => None,
    };
    if let Some(fault_error) = fault_error {
        return with_fault(error(fault_error));
    }
    let Some(object) = object else {
        return with_fault(error(OssError::no_such_key(key)));
    };
    match object_response(
        &object,
        method == Method::HEAD,
        &request.headers,
        fault,
        cut,
    ) {
        Ok(response) => with_fault(Outcome::answer(response)),
        Err(_) => with_fault(error(OssError::internal_error())),
    }
}

fn expired(expires: i64) -> OssError {
    let expires_at = jiff::Timestamp::from_second(expires)
        .map(iso8601)
        .unwrap_or_else(|_| expires.to_string());
    OssError::access_denied("Request has expired.")
        .with("Expires", expires_at)
        .with("ServerTime", iso8601(jiff::Timestamp::now()))
}

/// The answer to a GET or HEAD of a stored object: `Range` handled, OSS headers, the body
/// streamed from memory or the object's file, and a download fault applied.
pub(super) fn object_response(
    object: &StoredObject,
    head: bool,
    request_headers: &HeaderMap,
    fault: Option<OssFault>,
    cut: &Arc<AtomicBool>,
) -> std::io::Result<Response<SimBody>> {
    let size = object.len();
    let range = request_headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, size));
    let (status, start, end) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", object.content_type.as_str())
        .header("content-length", end - start)
        .header("accept-ranges", "bytes")
        .header("etag", format!("\"{}\"", object.etag))
        .header("last-modified", http_date(object.last_modified))
        .header("x-oss-object-type", object.object_type.as_str())
        .header("x-oss-storage-class", "Standard");
    if object.send_crc {
        let crc = match fault {
            // Any value but the true one; flipping the low bit keeps it plausible-looking.
            Some(OssFault::WrongCrcHeader) => object.crc64 ^ 1,
            _ => object.crc64,
        };
        builder = builder.header("x-oss-hash-crc64ecma", crc);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header("content-range", format!("bytes {start}-{}/{size}", end - 1));
    }
    let body = if head {
        SimBody::empty(cut)
    } else {
        let mut body = match object.data.open_range(start, end)? {
            RangeSource::Memory(data) => SimBody::full(data, cut),
            RangeSource::File(file, len) => SimBody::file(file, len, cut),
        };
        match fault {
            Some(OssFault::CutAfter(n)) => body.stop = Some(BodyStop::Cut(n)),
            Some(OssFault::StallAfter(n)) => body.stop = Some(BodyStop::Stall(n)),
            Some(OssFault::FlipByte(offset)) if (start..end).contains(&offset) => {
                body.flip_at = Some(offset - start);
            }
            _ => {}
        }
        body
    };
    Ok(builder
        .body(body)
        .expect("static header names and numeric or ASCII values are valid"))
}

/// Parses a single byte range the way OSS does without `x-oss-range-behavior: standard`:
/// returns the half-open `[start, end)` to serve with 206, or `None` for "ignore the header
/// and send the whole object with 200" (malformed, several ranges, start or end outside the
/// object, start after end, an empty object).
pub(super) fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (first.is_empty(), last.is_empty()) {
        // `bytes=-n`: the last n bytes.
        (true, false) if digits(last) => {
            let n: u64 = last.parse().ok()?;
            (n > 0 && n <= size).then(|| (size - n, size))
        }
        // `bytes=a-`: from a to the end.
        (false, true) if digits(first) => {
            let start: u64 = first.parse().ok()?;
            (start < size).then_some((start, size))
        }
        // `bytes=a-b`: both inclusive.
        (false, false) if digits(first) && digits(last) => {
            let start: u64 = first.parse().ok()?;
            let last: u64 = last.parse().ok()?;
            (start <= last && last < size).then(|| (start, last + 1))
        }
        _ => None,
    }
}
