//! Gateway authentication of one received request: reading which signature it carries and
//! what it claims ([`read_envelope`]), then checking it the way the gateway does
//! ([`authenticate`]). Everything is recomputed from what was received: the query as decoded
//! from the raw URL, the form body, the headers as sent and the body's own hash, with the
//! canonicalisation functions of `crate::net::signer`.

use std::collections::BTreeMap;

use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

use super::reply::GatewayError;
use super::{API_VERSION, DOWNLOAD_ACTION, MAX_CLOCK_SKEW, QUERY_STATUS_ACTION, State};
use crate::net::signer::{
    SignatureVersion, V3_ALGORITHM, sha256_hex, v1_signature, v1_string_to_sign,
    v3_canonical_request, v3_signature,
};

/// V3 headers that must be present and signed (besides `host`).
const V3_REQUIRED_HEADERS: [&str; 5] = [
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
];

const V3_TOKEN_HEADER: &str = "x-acs-security-token";

/// V1 parameters that belong to the protocol, not to the action.
const V1_COMMON_PARAMS: [&str; 12] = [
    "AccessKeyId",
    "Action",
    "Format",
    "RegionId",
    "SecurityToken",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureType",
    "SignatureVersion",
    "Timestamp",
    "Version",
];

/// A request as it arrived, reduced to what authentication reads.
#[derive(Debug)]
pub(super) struct Received {
    pub(super) method: Method,
    pub(super) headers: HeaderMap,
    /// The URL query, decoded pair by pair, in the order sent.
    pub(super) query: Vec<(String, String)>,
    /// Pairs of an `application/x-www-form-urlencoded` body (empty otherwise).
    pub(super) form: Vec<(String, String)>,
    /// Hex SHA-256 of the body bytes as received.
    pub(super) body_sha256: String,
}

impl Received {
    pub(super) fn new(
        method: Method,
        headers: HeaderMap,
        raw_query: Option<&str>,
        body: &[u8],
    ) -> Self {
        let is_form = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        let form = if is_form {
            decode_pairs(&String::from_utf8_lossy(body))
        } else {
            Vec::new()
        };
        Self {
            method,
            query: decode_pairs(raw_query.unwrap_or("")),
            form,
            body_sha256: sha256_hex(body),
            headers,
        }
    }

    /// A header's value as sent (several occurrences joined with `,`).
    fn header(&self, name: &str) -> Option<String> {
        let mut values = self.headers.get_all(name).iter().peekable();
        values.peek()?;
        let joined: Vec<String> = values
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        Some(joined.join(","))
    }

    /// Query and form pairs together, as V1 signs them.
    fn all_params(&self) -> impl Iterator<Item = &(String, String)> {
        self.query.iter().chain(self.form.iter())
    }

    fn param(&self, name: &str) -> Option<String> {
        self.all_params()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .last()
    }
}

/// Decodes `a=b&c=d` the way the gateway does: `+` is a space (Python SDKs send spaces as
/// `+` while signing `%20`), then percent-decoding; a name without `=` has an empty value.
pub(super) fn decode_pairs(raw: &str) -> Vec<(String, String)> {
    let decode = |part: &str| {
        percent_decode_str(&part.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (decode(name), decode(value)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// The pieces of a V3 `Authorization` header.
#[derive(Debug, Default)]
pub(super) struct V3Authorization {
    credential: Option<String>,
    signed_headers: Option<String>,
    signature: Option<String>,
}

/// Which authentication a request carries.
#[derive(Debug)]
pub(super) enum Scheme {
    V3(V3Authorization),
    V1,
    /// An `Authorization` header with another algorithm.
    UnknownAlgorithm,
    Unsigned,
}

/// What a request claims, read without judging it.
#[derive(Debug)]
pub(super) struct Envelope {
    pub(super) scheme: Scheme,
    pub(super) action: Option<String>,
    pub(super) api_version: Option<String>,
    pub(super) access_key_id: Option<String>,
    pub(super) nonce: Option<String>,
    pub(super) timestamp: Option<String>,
    security_token: Option<String>,
    /// Business parameters: what the action reads.
    pub(super) params: BTreeMap<String, String>,
}

impl Envelope {
    pub(super) fn signature_version(&self) -> Option<SignatureVersion> {
        match self.scheme {
            Scheme::V3(_) => Some(SignatureVersion::V3),
            Scheme::V1 => Some(SignatureVersion::V1),
            Scheme::UnknownAlgorithm | Scheme::Unsigned => None,
        }
    }
}

fn parse_v3_authorization(value: &str) -> Option<V3Authorization> {
    let rest = value.trim().strip_prefix(V3_ALGORITHM)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let mut parsed = V3Authorization::default();
    for part in rest.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        let value = Some(value.trim().to_owned());
        match key.trim() {
            "Credential" => parsed.credential = value,
            "SignedHeaders" => parsed.signed_headers = value,
            "Signature" => parsed.signature = value,
            _ => {}
        }
    }
    Some(parsed)
}

/// Reads the scheme and the claims. V3 is recognised by its `Authorization` header, V1 by a
/// `Signature` or `SignatureMethod` parameter.
pub(super) fn read_envelope(received: &Received) -> Envelope {
    if let Some(authorization) = received.header(AUTHORIZATION.as_str()) {
        let scheme = match parse_v3_authorization(&authorization) {
            Some(parsed) => Scheme::V3(parsed),
            None => Scheme::UnknownAlgorithm,
        };
        let access_key_id = match &scheme {
            Scheme::V3(parsed) => parsed.credential.clone(),
            _ => None,
        };
        return Envelope {
            scheme,
            action: received.header("x-acs-action"),
            api_version: received.header("x-acs-version"),
            access_key_id,
            nonce: received.header("x-acs-signature-nonce"),
            timestamp: received.header("x-acs-date"),
            security_token: received.header(V3_TOKEN_HEADER),
            params: received.all_params().cloned().collect(),
        };
    }
    let signed_v1 = received
        .all_params()
        .any(|(key, _)| key == "Signature" || key == "SignatureMethod");
    Envelope {
        scheme: if signed_v1 {
            Scheme::V1
        } else {
            Scheme::Unsigned
        },
        action: received.param("Action"),
        api_version: received.param("Version"),
        access_key_id: received.param("AccessKeyId"),
        nonce: received.param("SignatureNonce"),
        timestamp: received.param("Timestamp"),
        security_token: received.param("SecurityToken"),
        params: received
            .all_params()
            .filter(|(key, _)| !V1_COMMON_PARAMS.contains(&key.as_str()))
            .cloned()
            .collect(),
    }
}

/// Runs every gateway check in the documented order; on success remembers the nonce.
pub(super) fn authenticate(
    received: &Received,
    envelope: &Envelope,
    state: &mut State,
) -> Result<(), GatewayError> {
    let expected_signature = match &envelope.scheme {
        Scheme::V3(authorization) => {
            let signed_headers = v3_structure(received, authorization)?;
            check_api(envelope)?;
            check_timestamp(envelope.timestamp.as_deref(), state.now())?;
            check_v3_coverage(received, &signed_headers)?;
            if received
                .header("x-acs-content-sha256")
                .is_none_or(|sent| sent != received.body_sha256)
            {
                return Err(GatewayError::content_hash_mismatch());
            }
            Expected::V3 {
                signed_headers,
                signature: authorization.signature.clone().unwrap_or_default(),
            }
        }
        Scheme::V1 => {
            let signature = v1_structure(received)?;
            check_api(envelope)?;
            check_timestamp(envelope.timestamp.as_deref(), state.now())?;
            Expected::V1 { signature }
        }
        Scheme::UnknownAlgorithm => {
            return Err(GatewayError::incomplete_signature(
                "unsupported signature algorithm in Authorization",
            ));
        }
        Scheme::Unsigned => {
            return Err(GatewayError::incomplete_signature(
                "the request is not signed",
            ));
        }
    };
    // Every branch above has ensured these two are present.
    let access_key_id = envelope.access_key_id.clone().unwrap_or_default();
    let nonce = envelope.nonce.clone().unwrap_or_default();
    let account = state
        .accounts
        .get(&access_key_id)
        .ok_or_else(GatewayError::access_key_not_found)?;
    match (&account.security_token, &envelope.security_token) {
        (None, None) => {}
        (None, Some(_)) => return Err(GatewayError::token_mismatch()),
        (Some(_), None) => return Err(GatewayError::token_missing()),
        (Some(expected), Some(sent)) if expected.expose() != sent => {
            return Err(GatewayError::token_mismatch());
        }
        (Some(_), Some(_)) if account.token_expired => {
            return Err(GatewayError::token_expired());
        }
        (Some(_), Some(_)) => {}
    }
    let secret = account.secret.expose();
    match expected_signature {
        Expected::V3 {
            signed_headers,
            signature,
        } => {
            let headers: Vec<(String, String)> = signed_headers
                .iter()
                .map(|name| (name.clone(), received.header(name).unwrap_or_default()))
                .collect();
            let canonical = v3_canonical_request(
                received.method.as_str(),
                &received.query,
                &headers,
                &received.body_sha256,
            );
            if v3_signature(secret, &canonical) != signature {
                return Err(GatewayError::signature_mismatch(&canonical));
            }
        }
        Expected::V1 { signature } => {
            let pairs: Vec<(&str, &str)> = received
                .all_params()
                .filter(|(key, _)| key != "Signature")
                .map(|(key, value)| (key.as_str(), value.as_str()))
                .collect();
            let string_to_sign = v1_string_to_sign(received.method.as_str(), &pairs);
            if v1_signature(secret, &string_to_sign) != signature {
                return Err(GatewayError::signature_mismatch(&string_to_sign));
            }
        }
    }
    if !state.used_nonces.insert((access_key_id, nonce)) {
        return Err(GatewayError::nonce_used());
    }
    Ok(())
}

enum Expected {
    V3 {
        signed_headers: Vec<String>,
        signature: String,
    },
    V1 {
        signature: String,
    },
}

/// The V3 `Authorization` pieces and the required headers are all there; returns the
/// signed header names (lower-case, as listed).
fn v3_structure(
    received: &Received,
    authorization: &V3Authorization,
) -> Result<Vec<String>, GatewayError> {
    let present = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.is_empty());
    for (name, value) in [
        ("Credential", &authorization.credential),
        ("SignedHeaders", &authorization.signed_headers),
        ("Signature", &authorization.signature),
    ] {
        if !present(value) {
            return Err(GatewayError::incomplete_signature(&format!(
                "Authorization has no {name}"
            )));
        }
    }
    for name in V3_REQUIRED_HEADERS {
        if received.header(name).is_none_or(|value| value.is_empty()) {
            return Err(GatewayError::missing_parameter(name));
        }
    }
    Ok(authorization
        .signed_headers
        .as_deref()
        .unwrap_or_default()
        .split(';')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect())
}

/// Every header the gateway requires is signed, and every signed header was sent.
fn check_v3_coverage(received: &Received, signed_headers: &[String]) -> Result<(), GatewayError> {
    let token_sent = received.header(V3_TOKEN_HEADER).is_some();
    let must_sign = ["host"]
        .into_iter()
        .chain(V3_REQUIRED_HEADERS)
        .chain(token_sent.then_some(V3_TOKEN_HEADER));
    for name in must_sign {
        if !signed_headers.iter().any(|signed| signed == name) {
            return Err(GatewayError::incomplete_signature(&format!(
                "header {name} must be signed"
            )));
        }
    }
    if let Some(absent) = signed_headers
        .iter()
        .find(|name| received.header(name).is_none())
    {
        return Err(GatewayError::incomplete_signature(&format!(
            "signed header {absent} is not in the request"
        )));
    }
    Ok(())
}

/// The V1 signature parameters are there and name the one supported method; returns the
/// signature sent.
fn v1_structure(received: &Received) -> Result<String, GatewayError> {
    let signature = received
        .param("Signature")
        .filter(|value| !value.is_empty())
        .ok_or_else(|| GatewayError::incomplete_signature("Signature is missing"))?;
    if received.param("SignatureMethod").as_deref() != Some("HMAC-SHA1") {
        return Err(GatewayError::incomplete_signature(
            "SignatureMethod must be HMAC-SHA1",
        ));
    }
    if received.param("SignatureVersion").as_deref() != Some("1.0") {
        return Err(GatewayError::incomplete_signature(
            "SignatureVersion must be 1.0",
        ));
    }
    for name in [
        "AccessKeyId",
        "Action",
        "Version",
        "Timestamp",
        "SignatureNonce",
    ] {
        if received.param(name).is_none_or(|value| value.is_empty()) {
            return Err(GatewayError::missing_parameter(name));
        }
    }
    Ok(signature)
}

fn check_api(envelope: &Envelope) -> Result<(), GatewayError> {
    if envelope.api_version.as_deref() != Some(API_VERSION) {
        return Err(GatewayError::invalid_version());
    }
    match envelope.action.as_deref() {
        Some(QUERY_STATUS_ACTION | DOWNLOAD_ACTION) => Ok(()),
        _ => Err(GatewayError::action_not_found()),
    }
}

/// `yyyy-MM-ddTHH:mm:ssZ`, within [`MAX_CLOCK_SKEW`] of `now` either way.
fn check_timestamp(sent: Option<&str>, now: jiff::Timestamp) -> Result<(), GatewayError> {
    let at = sent
        .and_then(parse_timestamp)
        .ok_or_else(GatewayError::timestamp_format)?;
    if at.duration_since(now).abs() > MAX_CLOCK_SKEW {
        return Err(GatewayError::timestamp_expired());
    }
    Ok(())
}

/// Strict UTC `yyyy-MM-ddTHH:mm:ssZ` (exactly 20 characters).
pub(super) fn parse_timestamp(text: &str) -> Option<jiff::Timestamp> {
    if text.len() != 20 {
        return None;
    }
    let civil = jiff::civil::DateTime::strptime("%Y-%m-%dT%H:%M:%SZ", text).ok()?;
    jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_decode_plus_and_percent_and_bare_names() {
        assert_eq!(
            decode_pairs("a=x+y%2Bz&b&&c=%E8%AE%A2&d="),
            vec![
                ("a".to_owned(), "x y+z".to_owned()),
                ("b".to_owned(), String::new()),
                ("c".to_owned(), "订".to_owned()),
                ("d".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn timestamps_are_strict() {
        assert!(parse_timestamp("2024-01-02T03:04:05Z").is_some());
        for bad in [
            "2024-01-02 03:04:05Z",
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05+00:00",
            "2024-1-2T03:04:05Z",
            "2024-01-02T03:04:05.123Z",
            "2024-13-02T03:04:05Z",
            "",
        ] {
            assert!(parse_timestamp(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn v3_authorization_needs_the_algorithm_and_a_space() {
        let parsed = parse_v3_authorization(
            "ACS3-HMAC-SHA256 Credential=ak,SignedHeaders=host;x-acs-date, Signature=abc",
        )
        .unwrap();
        assert_eq!(parsed.credential.as_deref(), Some("ak"));
        assert_eq!(parsed.signed_headers.as_deref(), Some("host;x-acs-date"));
        assert_eq!(parsed.signature.as_deref(), Some("abc"));
        assert!(parse_v3_authorization("ACS3-HMAC-SHA256Credential=ak").is_none());
        assert!(parse_v3_authorization("ACS3-HMAC-SM3 Credential=ak").is_none());
    }
}
