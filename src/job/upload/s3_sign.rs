//! Pure AWS SigV4 header signing for S3-compatible stores, and S3 object URLs (key encoding,
//! path-style vs virtual-hosted addressing).
//!
//! Nothing here reads a clock or touches the network: the caller passes the time, so every
//! function is reproducible. The rules are botocore's (`S3SigV4Auth`), and the unit tests replay
//! the requests botocore 1.44.8 prepared in `tests/fixtures/golden/s3/` (made by
//! `scripts/golden/gen_s3_vectors.py`). What differs from generic SigV4, for S3:
//! * the canonical URI is the path exactly as sent, percent-encoded once and not normalised;
//! * the payload hash may be the literal `UNSIGNED-PAYLOAD`, which lets bodies stream from disk
//!   (their integrity is then carried by `Content-MD5`).

use std::fmt::Write as _;

use hmac::{KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::net::secret::Secret;

/// The algorithm name: first line of the string to sign and prefix of `Authorization`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The payload hash that leaves the body out of the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The hex SHA-256 of an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The service name in the credential scope.
const SERVICE: &str = "s3";

/// RFC 3986 unreserved characters stay; everything else becomes `%XY` (upper-case hex of the
/// UTF-8 bytes). Used for query names and values, and for the bucket in a path-style URL.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Object keys keep `/` as well: S3 keys are one greedy path label (botocore `{Key+}`).
const KEY: &AsciiSet = &UNRESERVED.remove(b'/');

/// Headers botocore never signs (hop-by-hop, tracing, `user-agent`): proxies may change them.
const UNSIGNABLE_HEADERS: [&str; 14] = [
    "baggage",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// S3 credentials: a long-term access key, or temporary ones with a session token.
/// `Debug` shows the key id only; the secret and the token print as `******`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Credentials {
    /// `AKIA…` (long-term) or `ASIA…` (temporary); not a secret, it appears in `Authorization`.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials, sent as `x-amz-security-token`.
    pub session_token: Option<Secret>,
}

impl S3Credentials {
    /// Bundles the three parts.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token,
        }
    }
}

/// What the signature says about the body (`x-amz-content-sha256`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadHash {
    /// `UNSIGNED-PAYLOAD`: for bodies streamed from disk. S3, MinIO and Ceph accept it for every
    /// operation over http and https; `Content-MD5` then protects the body.
    Unsigned,
    /// The lower-case hex SHA-256 of the whole body, for small in-memory bodies (the
    /// CompleteMultipartUpload XML) and empty ones ([`EMPTY_SHA256`]): botocore's default
    /// for everything but streamed uploads.
    Sha256(String),
}

impl PayloadHash {
    /// The hash of a body held in memory.
    pub fn of_body(body: &[u8]) -> Self {
        Self::Sha256(sha256_hex(body))
    }

    /// The hash of an empty body.
    pub fn empty() -> Self {
        Self::Sha256(EMPTY_SHA256.to_owned())
    }

    /// The header value and last line of the canonical request.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Unsigned => UNSIGNED_PAYLOAD,
            Self::Sha256(hex) => hex,
        }
    }
}

/// One request before signing.
#[derive(Clone, Copy, Debug)]
pub struct S3Request<'a> {
    /// HTTP method, upper-case (`PUT`, `POST`, `GET`, `HEAD`, `DELETE`).
    pub method: &'a str,
    /// The `Host` header exactly as sent: `host`, or `host:port` for a non-default port
    /// ([`S3Location::host`]).
    pub host: &'a str,
    /// The URL path exactly as sent, already percent-encoded ([`S3Location::path`]). S3 signs it
    /// as it is: not encoded again, not normalised.
    pub path: &'a str,
    /// Query parameters, decoded (`("partNumber", "2")`, `("uploads", "")`).
    pub query: &'a [(String, String)],
    /// Every other header that will be sent and signed, e.g. `content-md5`, `content-type`,
    /// `x-amz-*` (S3 rejects an unsigned `x-amz-*` header). Not `host` and not the ones
    /// [`sign`] adds. Names in any case; hop-by-hop headers (`expect`, …) are skipped as
    /// botocore does.
    pub headers: &'a [(String, String)],
    /// The body's hash or [`PayloadHash::Unsigned`].
    pub payload: &'a PayloadHash,
}

/// The headers [`sign`] adds to the request. `Debug` masks the token and `Authorization`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// `x-amz-date`: `yyyymmddTHHMMSSZ`, UTC.
    pub x_amz_date: String,
    /// `x-amz-content-sha256`: the payload hash that was signed.
    pub x_amz_content_sha256: String,
    /// `x-amz-security-token`, with temporary credentials only.
    pub x_amz_security_token: Option<Secret>,
    /// `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
    pub authorization: Secret,
}

impl SignatureHeaders {
    /// `(name, value)` pairs to put on the wire, names lower-case.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        let mut pairs = vec![
            ("x-amz-date", self.x_amz_date.as_str()),
            ("x-amz-content-sha256", self.x_amz_content_sha256.as_str()),
        ];
        if let Some(token) = &self.x_amz_security_token {
            pairs.push(("x-amz-security-token", token.expose()));
        }
        pairs.push(("authorization", self.authorization.expose()));
        pairs
    }
}

/// Signs one request with the credentials, for `region`, at time `at`. S3 rejects a clock more
/// than 15 minutes off (`RequestTimeTooSkewed`), so sign each attempt afresh.
pub fn sign(
    request: &S3Request<'_>,
    credentials: &S3Credentials,
    region: &str,
    at: jiff::Timestamp,
) -> SignatureHeaders {
    let amz_date = amz_date(at);
    let headers = headers_to_sign(request, credentials, &amz_date);
    let canonical = canonical_request(request, &headers);
    let scope = credential_scope(&amz_date, region);
    let to_sign = string_to_sign(&amz_date, &scope, &canonical);
    let key = signing_key(
        credentials.secret_access_key.expose(),
        &amz_date[..8],
        region,
    );
    let signature = hex_lower(&hmac_sha256(&key, to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
        credentials.access_key_id,
        signed_header_names(&headers)
    );
    SignatureHeaders {
        x_amz_date: amz_date,
        x_amz_content_sha256: request.payload.as_str().to_owned(),
        x_amz_security_token: credentials.session_token.clone(),
        authorization: Secret::new(authorization),
    }
}

/// The canonical request [`sign`] hashes, for comparing with a server's `CanonicalRequest` when
/// it answers `SignatureDoesNotMatch` (it contains the session token: do not log it).
pub fn canonical_request_for(
    request: &S3Request<'_>,
    credentials: &S3Credentials,
    at: jiff::Timestamp,
) -> String {
    let amz_date = amz_date(at);
    canonical_request(request, &headers_to_sign(request, credentials, &amz_date))
}

/// The string to sign for a canonical request (what S3 echoes as `StringToSign` in a
/// `SignatureDoesNotMatch` answer).
pub fn string_to_sign_for(canonical_request: &str, region: &str, at: jiff::Timestamp) -> String {
    let amz_date = amz_date(at);
    string_to_sign(
        &amz_date,
        &credential_scope(&amz_date, region),
        canonical_request,
    )
}

/// `yyyymmddTHHMMSSZ` in UTC.
pub fn amz_date(at: jiff::Timestamp) -> String {
    at.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// The signed headers: lower-case names, values trimmed with inner whitespace runs collapsed
/// (botocore's `_header_value`), repeated names joined by `,`, sorted by name.
fn headers_to_sign(
    request: &S3Request<'_>,
    credentials: &S3Credentials,
    amz_date: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(request.headers.len() + 4);
    let mut add = |name: &str, value: &str| {
        let name = name.trim().to_ascii_lowercase();
        if UNSIGNABLE_HEADERS.contains(&name.as_str()) {
            return;
        }
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        headers.push((name, value));
    };
    add("host", request.host);
    let added_by_sign = [
        "host",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
        "authorization",
    ];
    for (name, value) in request.headers {
        if !added_by_sign.contains(&name.to_ascii_lowercase().as_str()) {
            add(name, value);
        }
    }
    add("x-amz-date", amz_date);
    add("x-amz-content-sha256", request.payload.as_str());
    if let Some(token) = &credentials.session_token {
        add("x-amz-security-token", token.expose());
    }
    // A stable sort keeps repeated headers in the order given, as botocore joins them.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        match merged.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => merged.push((name, value)),
        }
    }
    merged
}

fn signed_header_names(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";")
}

/// `METHOD\nPATH\nQUERY\nHEADERS\n\nSIGNED_HEADERS\nPAYLOAD_HASH`.
fn canonical_request(request: &S3Request<'_>, headers: &[(String, String)]) -> String {
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        request.method,
        request.path,
        canonical_query(request.query)
    );
    for (name, value) in headers {
        let _ = writeln!(canonical, "{name}:{value}");
    }
    let _ = write!(
        canonical,
        "\n{}\n{}",
        signed_header_names(headers),
        request.payload.as_str()
    );
    canonical
}

/// `k=v&k=v`, names and values encoded (RFC 3986, `/` too), sorted by encoded name then
/// value; a parameter without value is `k=`.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (encode_query_component(k), encode_query_component(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn credential_scope(amz_date: &str, region: &str) -> String {
    format!("{}/{region}/{SERVICE}/aws4_request", &amz_date[..8])
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// `"AWS4"+secret` → date → region → `s3` → `aws4_request`, each an HMAC-SHA256.
fn signing_key(secret: &str, date: &str, region: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, SERVICE.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Percent-encodes an object key for the URL path: `/` and `A-Za-z0-9-._~` stay, everything
/// else becomes `%XY` of its UTF-8 bytes (space `%20`, `+` `%2B`, `*` `%2A`, `=` `%3D`).
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY).to_string()
}

/// Percent-encodes a query name or value: `A-Za-z0-9-._~` stay, `/` is encoded too.
pub fn encode_query_component(value: &str) -> String {
    utf8_percent_encode(value, UNRESERVED).to_string()
}

/// The query string as sent (after `?`), parameters in the order given; a parameter without
/// value is sent bare (`?uploads`), as botocore does.
pub fn query_string(query: &[(String, String)]) -> String {
    query
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                encode_query_component(k)
            } else {
                format!(
                    "{}={}",
                    encode_query_component(k),
                    encode_query_component(v)
                )
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Why an object key cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An empty key names no object.
    #[error("an S3 object key may not be empty")]
    Empty,
    /// S3 allows at most 1024 bytes.
    #[error("S3 object key is {0} bytes long; at most 1024 are allowed")]
    TooLong(usize),
    /// HTTP clients (the WHATWG URL rules reqwest follows) remove `.` and `..` path segments,
    /// even encoded, so such a key would reach another object or fail its signature.
    #[error("S3 object key {0:?} has a \".\" or \"..\" segment, which URLs cannot carry")]
    DotSegment(String),
}

/// Checks that a key can go into a URL unchanged.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > 1024 {
        return Err(KeyError::TooLong(key.len()));
    }
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(KeyError::DotSegment(key.to_owned()));
    }
    Ok(())
}

/// Where the bucket name goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressingStyle {
    /// `https://endpoint/bucket/key`: MinIO and Ceph without a wildcard domain, and any IP or
    /// `localhost` endpoint.
    Path,
    /// `https://bucket.endpoint/key`: AWS (path style is deprecated there) and any store with
    /// a wildcard DNS name.
    VirtualHosted,
}

impl AddressingStyle {
    /// The default for an endpoint host: path style for an IP address or `localhost`,
    /// virtual-hosted otherwise (docs/reference/config.md, `upload.endpoint`).
    pub fn for_host(host: &str) -> Self {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_ok() || bare.eq_ignore_ascii_case("localhost") {
            Self::Path
        } else {
            Self::VirtualHosted
        }
    }
}

/// Why an endpoint URL is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL at all.
    #[error("S3 endpoint {0:?} is not a URL")]
    Invalid(String),
    /// Only `http` and `https`.
    #[error("S3 endpoint {0:?} must start with http:// or https://")]
    Scheme(String),
    /// A path, query, fragment or user info would change what is signed.
    #[error("S3 endpoint {0:?} must be scheme://host[:port] with nothing after it")]
    Extra(String),
}

/// The AWS endpoint for a region, used when `[upload] endpoint` is not set.
pub fn default_aws_endpoint(region: &str) -> String {
    format!("https://s3.{region}.amazonaws.com")
}

/// A parsed endpoint and the addressing style to use with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Endpoint {
    https: bool,
    /// Host, with `:port` when not the scheme's default; lower-case.
    authority: String,
    ip_or_localhost: bool,
    style: AddressingStyle,
}

impl S3Endpoint {
    /// Parses `scheme://host[:port]`. `style` `None` picks [`AddressingStyle::for_host`]. An IP
    /// or `localhost` endpoint always gets path style: there is no DNS name to prefix.
    pub fn parse(endpoint: &str, style: Option<AddressingStyle>) -> Result<Self, EndpointError> {
        let url = reqwest::Url::parse(endpoint)
            .map_err(|_| EndpointError::Invalid(endpoint.to_owned()))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(EndpointError::Scheme(endpoint.to_owned())),
        };
        if !matches!(url.path(), "" | "/")
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(EndpointError::Extra(endpoint.to_owned()));
        }
        let host = url
            .host_str()
            .ok_or_else(|| EndpointError::Invalid(endpoint.to_owned()))?;
        // `port()` is None for the scheme's default port, which the Host header leaves out.
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let ip_or_localhost = AddressingStyle::for_host(host) == AddressingStyle::Path;
        let style = if ip_or_localhost {
            AddressingStyle::Path
        } else {
            style.unwrap_or(AddressingStyle::VirtualHosted)
        };
        Ok(Self {
            https,
            authority,
            ip_or_localhost,
            style,
        })
    }

    /// The addressing style requests use (before the per-bucket fallback of [`Self::object`]).
    pub fn style(&self) -> AddressingStyle {
        self.style
    }

    /// Where an object lives. Virtual-hosted addressing falls back to path style for a bucket
    /// that is not a DNS label (upper case, `_`, …) or, over https, contains dots (the wildcard
    /// certificate would not match), as botocore does. `key` must pass [`check_key`].
    pub fn object(&self, bucket: &str, key: &str) -> S3Location {
        let encoded_key = encode_key(key);
        if self.virtual_hosted(bucket) {
            S3Location {
                https: self.https,
                host: format!("{bucket}.{}", self.authority),
                path: format!("/{encoded_key}"),
            }
        } else {
            S3Location {
                https: self.https,
                host: self.authority.clone(),
                path: format!("/{}/{encoded_key}", encode_query_component(bucket)),
            }
        }
    }

    /// Where a bucket lives (HeadBucket, ListObjectsV2): `/bucket` in path style, `/` on the
    /// bucket's host otherwise.
    pub fn bucket(&self, bucket: &str) -> S3Location {
        if self.virtual_hosted(bucket) {
            S3Location {
                https: self.https,
                host: format!("{bucket}.{}", self.authority),
                path: "/".to_owned(),
            }
        } else {
            S3Location {
                https: self.https,
                host: self.authority.clone(),
                path: format!("/{}", encode_query_component(bucket)),
            }
        }
    }

    fn virtual_hosted(&self, bucket: &str) -> bool {
        self.style == AddressingStyle::VirtualHosted
            && !self.ip_or_localhost
            && virtual_hostable(bucket, !self.https)
    }
}

/// botocore's `aws.isVirtualHostableS3Bucket`: 3..=63 characters, no upper case, not shaped
/// like an IPv4 address, and DNS labels (`a-z0-9-`, no leading or trailing `-`), with dots
/// between labels only when `allow_dots`.
fn virtual_hostable(bucket: &str, allow_dots: bool) -> bool {
    if bucket.len() < 3
        || bucket.len() > 63
        || bucket.bytes().any(|b| b.is_ascii_uppercase())
        || bucket.parse::<std::net::Ipv4Addr>().is_ok()
        || (!allow_dots && bucket.contains('.'))
    {
        return false;
    }
    bucket.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// A request target: what goes into the `Host` header, the signed path and the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    https: bool,
    /// The `Host` header value (and URL authority).
    pub host: String,
    /// The percent-encoded path: the URL path and the canonical URI.
    pub path: String,
}

impl S3Location {
    /// The full URL with `query` (order kept; see [`query_string`]).
    pub fn url(&self, query: &[(String, String)]) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let mut url = format!("{scheme}://{}{}", self.host, self.path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query_string(query));
        }
        url
    }
}

#[cfg(test)]
#[path = "s3_sign_tests.rs"]
mod tests;
