//! OSS request signing, V4 header form (`OSS4-HMAC-SHA256`) and V1 (`OSS ak:sig`), plus the wire encoding of object
//! keys and request URLs (path-style or virtual-hosted).
//!
//! Everything here is pure: no clock, no I/O. The caller passes the signing time, so each
//! function is reproducible and tested against the vectors in
//! `shared/reference/oss-upload.md` §1 and the oss2 2.19.1 requests under
//! `tests/fixtures/golden/oss/` (made by `scripts/golden/gen_oss_vectors.py`).
//!
//! Rules (oss2 `ProviderAuthV4`): the canonical URI is always `/<bucket>/<key>` (decoded key,
//! re-encoded with `/` kept), even for virtual-hosted requests; the canonical query holds every
//! parameter, encoded with `/` encoded too, sorted, `k` alone when the value is empty; the
//! signed headers are `content-type`, `content-md5` and every `x-oss-*`; the payload is always
//! `UNSIGNED-PAYLOAD`. No AdditionalHeaders are signed, so the `Authorization` header never
//! carries that field (an empty one is rejected by OSS).

use std::fmt;
use std::fmt::Write as _;

use hmac::{KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::credentials::Credentials;
use crate::secret::Secret;

/// The algorithm name: first line of the string to sign, prefix of `Authorization`.
pub const ALGORITHM: &str = "OSS4-HMAC-SHA256";

/// The only `x-oss-content-sha256` value OSS accepts, and the canonical request's last line.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The headers the signer adds itself; copies of them in the caller's headers are ignored.
const SIGNER_HEADERS: [&str; 4] = [
    "x-oss-date",
    "x-oss-content-sha256",
    "x-oss-security-token",
    "authorization",
];

/// Every byte except `A-Z a-z 0-9 - _ . ~` becomes `%XY` (upper-case hex of the UTF-8 bytes).
/// It is oss2's key encoding on the wire (Python `quote(key, safe='')`) and the V4 encoding of
/// query names and values.
const UNRESERVED_ONLY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// As [`UNRESERVED_ONLY`] but `/` stays: the V4 canonical URI encoding.
const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED_ONLY.remove(b'/');

/// One OSS request as the signer sees it.
#[derive(Debug, Clone, Copy)]
pub struct OssRequest<'a> {
    /// `PUT`, `POST`, `GET`, `HEAD`, `DELETE`.
    pub method: &'a str,
    /// Bucket name.
    pub bucket: &'a str,
    /// The object key, decoded (as stored); `""` for a bucket-level request.
    pub key: &'a str,
    /// Query parameters, decoded. Sub-resources without a value (`uploads`, `bucketInfo`)
    /// have an empty value.
    pub query: &'a [(&'a str, &'a str)],
    /// The headers that will be sent, names in any case. Only `content-type`, `content-md5`
    /// and `x-oss-*` are signed; the ones the signer adds (`x-oss-date`,
    /// `x-oss-content-sha256`, `x-oss-security-token`, `authorization`) are ignored here.
    pub headers: &'a [(&'a str, &'a str)],
}

/// The headers [`sign_v4`] adds to a request. `Debug` masks the token and the
/// `Authorization` value.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `x-oss-date`, `yyyymmddTHHMMSSZ` in UTC.
    pub x_oss_date: String,
    /// `x-oss-security-token`, for STS credentials.
    pub security_token: Option<Secret>,
    /// `authorization`.
    pub authorization: Secret,
}

impl SignedHeaders {
    /// `(name, value)` pairs to put on the wire, names lower-case: `x-oss-date`,
    /// `x-oss-content-sha256`, `x-oss-security-token` (STS only) and `authorization`. The
    /// values are exposed: use them only to build the request, and mark `authorization` and
    /// the token sensitive there.
    pub fn wire_pairs(&self) -> Vec<(&'static str, &str)> {
        let mut pairs = vec![
            ("x-oss-date", self.x_oss_date.as_str()),
            ("x-oss-content-sha256", UNSIGNED_PAYLOAD),
        ];
        if let Some(token) = &self.security_token {
            pairs.push(("x-oss-security-token", token.expose()));
        }
        pairs.push(("authorization", self.authorization.expose()));
        pairs
    }
}

impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedHeaders")
            .field("x_oss_date", &self.x_oss_date)
            .field("security_token", &self.security_token)
            .field("authorization", &self.authorization)
            .finish()
    }
}

/// Every intermediate value of one V4 signature, to compare with the `<CanonicalRequest>` and
/// `<StringToSign>` of a `SignatureDoesNotMatch` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4Signature {
    /// `x-oss-date` value.
    pub x_oss_date: String,
    /// `<yyyymmdd>/<region>/oss/aliyun_v4_request`.
    pub scope: String,
    /// The canonical request. It holds the STS token when there is one, hence [`Secret`].
    pub canonical_request: Secret,
    /// The string to sign (no secret: it carries a hash of the canonical request).
    pub string_to_sign: String,
    /// Lower-case hex signature.
    pub signature: String,
}

/// Signs `request` for `region` at `now`: the headers to add before sending it.
pub fn sign_v4(
    request: &OssRequest<'_>,
    region: &str,
    credentials: &Credentials,
    now: jiff::Timestamp,
) -> SignedHeaders {
    let signature = v4_signature(request, region, credentials, now);
    let authorization = format!(
        "{ALGORITHM} Credential={}/{}, Signature={}",
        credentials.access_key_id, signature.scope, signature.signature
    );
    SignedHeaders {
        x_oss_date: signature.x_oss_date,
        security_token: credentials.security_token.clone(),
        authorization: Secret::new(authorization),
    }
}

/// The V4 signature of `request` with every intermediate step.
pub fn v4_signature(
    request: &OssRequest<'_>,
    region: &str,
    credentials: &Credentials,
    now: jiff::Timestamp,
) -> V4Signature {
    let x_oss_date = v4_date_time(now);
    let date = &x_oss_date[..8];
    let scope = scope(date, region);
    let token = credentials.security_token.as_ref().map(Secret::expose);
    let canonical_request = canonical_request(request, &x_oss_date, token);
    let string_to_sign = string_to_sign(&canonical_request, &x_oss_date, &scope);
    let key = signing_key(credentials.access_key_secret.expose(), date, region);
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    V4Signature {
        x_oss_date,
        scope,
        canonical_request: Secret::new(canonical_request),
        string_to_sign,
        signature,
    }
}

/// `yyyymmddTHHMMSSZ` in UTC, the `x-oss-date` form.
pub fn v4_date_time(now: jiff::Timestamp) -> String {
    now.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// `<yyyymmdd>/<region>/oss/aliyun_v4_request`.
pub fn scope(date: &str, region: &str) -> String {
    format!("{date}/{region}/oss/aliyun_v4_request")
}

/// The canonical request of `request` once the signer's headers (`x-oss-date`,
/// `x-oss-content-sha256`, and `x-oss-security-token` when `security_token` is set) are added.
pub fn canonical_request(
    request: &OssRequest<'_>,
    x_oss_date: &str,
    security_token: Option<&str>,
) -> String {
    let mut signed: Vec<(String, &str)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .filter(|(name, _)| {
            !SIGNER_HEADERS.contains(&name.as_str())
                && (name == "content-type" || name == "content-md5" || name.starts_with("x-oss-"))
        })
        .collect();
    signed.push(("x-oss-date".to_owned(), x_oss_date));
    signed.push(("x-oss-content-sha256".to_owned(), UNSIGNED_PAYLOAD));
    if let Some(token) = security_token {
        signed.push(("x-oss-security-token".to_owned(), token));
    }
    signed.sort();

    let mut out = String::new();
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_uri(request.bucket, request.key));
    out.push('\n');
    out.push_str(&canonical_query(request.query));
    out.push('\n');
    for (name, value) in &signed {
        let _ = writeln!(out, "{name}:{value}");
    }
    // The empty line after the headers block, then the (empty) AdditionalHeaders line.
    out.push_str("\n\n");
    out.push_str(UNSIGNED_PAYLOAD);
    out
}

/// `OSS4-HMAC-SHA256\n<x-oss-date>\n<scope>\n<hex sha256(canonical request)>`.
pub fn string_to_sign(canonical_request: &str, x_oss_date: &str, scope: &str) -> String {
    let digest = Sha256::digest(canonical_request.as_bytes());
    format!("{ALGORITHM}\n{x_oss_date}\n{scope}\n{}", hex(&digest))
}

/// `/<bucket>/<key>` encoded with `/` kept; `/<bucket>/` for a bucket-level request.
fn canonical_uri(bucket: &str, key: &str) -> String {
    let resource = format!("/{bucket}/{key}");
    utf8_percent_encode(&resource, UNRESERVED_AND_SLASH).to_string()
}

/// Every parameter, names and values encoded (`/` too), sorted, `&`-joined, `k` alone for an
/// empty value.
fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (encode_component(k), encode_component(v)))
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (i, (k, v)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        if !v.is_empty() {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// HMAC-SHA256 chain `"aliyun_v4"+secret` → date → region → `oss` → `aliyun_v4_request`.
fn signing_key(secret: &str, date: &str, region: &str) -> [u8; 32] {
    let mut key = hmac_sha256(format!("aliyun_v4{secret}").as_bytes(), date.as_bytes());
    for part in [region, "oss", "aliyun_v4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    key
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Query parameters that V1 signs as sub-resources (oss2 `ProviderAuth._subresource_key_set`,
/// the ones an uploader can send); every other parameter is left out of the V1 signature.
const V1_SUBRESOURCES: [&str; 11] = [
    "acl",
    "append",
    "bucketInfo",
    "partNumber",
    "position",
    "security-token",
    "tagging",
    "uploadId",
    "uploads",
    "versionId",
    "objectMeta",
];

/// The V1 string to sign: `VERB\nContent-MD5\nContent-Type\nDate\n` + the `x-oss-*` headers
/// (`name:value\n`, sorted) + `/<bucket>/<key>` (not encoded) + the sorted sub-resources
/// (`response-*` included). `date` is the `Date` (or `x-oss-date`) value sent.
pub fn v1_string_to_sign(request: &OssRequest<'_>, date: &str) -> String {
    let header = |wanted: &str| {
        request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map_or("", |(_, value)| value.trim())
    };
    let mut oss_headers: Vec<(String, &str)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .filter(|(name, _)| name.starts_with("x-oss-"))
        .collect();
    oss_headers.sort();
    let mut subresources: Vec<&(&str, &str)> = request
        .query
        .iter()
        .filter(|(name, _)| V1_SUBRESOURCES.contains(name) || name.starts_with("response-"))
        .collect();
    subresources.sort();

    let mut out = format!(
        "{}\n{}\n{}\n{date}\n",
        request.method,
        header("content-md5"),
        header("content-type")
    );
    for (name, value) in &oss_headers {
        let _ = writeln!(out, "{name}:{value}");
    }
    let _ = write!(out, "/{}/{}", request.bucket, request.key);
    for (i, (name, value)) in subresources.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        if !value.is_empty() {
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

/// The V1 `Authorization` value, `OSS <ak>:base64(HMAC-SHA1(secret, string to sign))`. The
/// caller must already have put `x-oss-security-token` (STS) in `request.headers`, and sends
/// `date` as the `Date` header. V4 is the default; this exists for stores that only know V1.
pub fn sign_v1(request: &OssRequest<'_>, date: &str, credentials: &Credentials) -> Secret {
    use base64::Engine as _;
    let string_to_sign = v1_string_to_sign(request, date);
    let mut mac =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(credentials.access_key_secret.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Secret::new(format!("OSS {}:{signature}", credentials.access_key_id))
}

/// `Fri, 27 Nov 2026 12:00:00 GMT`, the `Date` form V1 signs.
pub fn http_date(now: jiff::Timestamp) -> String {
    now.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Percent-encodes one query name or value, or a whole key for the wire: every byte but
/// `A-Z a-z 0-9 - _ . ~` (so `/`, space, `+`, `*`, `=` and non-ASCII are all encoded).
pub fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED_ONLY).to_string()
}

/// How a request names its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `<scheme>://<endpoint>/<bucket>/<key>`: oss2 uses it for an IP or `localhost` endpoint
    /// (and for a bucket name that cannot be a host label).
    PathStyle,
    /// `<scheme>://<bucket>.<endpoint>/<key>`: what real OSS accepts.
    VirtualHosted,
}

/// The `[upload] endpoint` of an OSS target, parsed: scheme and `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OssEndpoint {
    scheme: String,
    authority: String,
}

/// An endpoint that is not `[http[s]://]host[:port][/]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OSS endpoint {endpoint:?}: {reason}")]
pub struct EndpointError {
    /// The value given.
    pub endpoint: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl OssEndpoint {
    /// Parses `https://oss-cn-hangzhou.aliyuncs.com`, `http://127.0.0.1:9000` or a bare host
    /// (then `https`). A path other than `/` is refused.
    pub fn parse(endpoint: &str) -> Result<Self, EndpointError> {
        let error = |reason| EndpointError {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let trimmed = endpoint.trim();
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("https".to_owned(), trimmed),
        };
        if scheme != "http" && scheme != "https" {
            return Err(error("the scheme must be http or https"));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() {
            return Err(error("no host"));
        }
        if authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(error("only scheme://host[:port] is allowed"));
        }
        Ok(Self {
            scheme,
            authority: authority.to_ascii_lowercase(),
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// `host[:port]` as given.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// How requests for `bucket` are addressed (oss2 `_determine_endpoint_type`): path-style
    /// for an IP or `localhost` endpoint, or a bucket name that is not a valid host label;
    /// virtual-hosted otherwise.
    pub fn addressing(&self, bucket: &str) -> Addressing {
        if is_ip_or_localhost(&self.authority) || !is_valid_bucket_name(bucket) {
            Addressing::PathStyle
        } else {
            Addressing::VirtualHosted
        }
    }

    /// The `Host` header of a request for `bucket`.
    pub fn host(&self, bucket: &str) -> String {
        match self.addressing(bucket) {
            Addressing::PathStyle => self.authority.clone(),
            Addressing::VirtualHosted => format!("{bucket}.{}", self.authority),
        }
    }

    /// The path of a request: `/<bucket>/<encoded key>` (path-style) or `/<encoded key>`.
    /// The key is encoded whole, `/` included, as oss2 does; `key = ""` names the bucket.
    pub fn path(&self, bucket: &str, key: &str) -> String {
        match self.addressing(bucket) {
            Addressing::PathStyle => format!("/{bucket}/{}", encode_component(key)),
            Addressing::VirtualHosted => format!("/{}", encode_component(key)),
        }
    }

    /// The full request URL. Query pairs are decoded values; each is sent as `k=v` with both
    /// encoded by [`encode_component`] (an empty value gives `k=`, as oss2 sends).
    pub fn url(&self, bucket: &str, key: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!(
            "{}://{}{}",
            self.scheme,
            self.host(bucket),
            self.path(bucket, key)
        );
        for (i, (name, value)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&encode_component(name));
            url.push('=');
            url.push_str(&encode_component(value));
        }
        url
    }
}

/// True for `localhost`, an IPv4 address or a bracketed IPv6 address (port ignored).
fn is_ip_or_localhost(authority: &str) -> bool {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let host = authority.split(':').next().unwrap_or(authority);
    host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok()
}

/// oss2's `is_valid_bucket_name`: 3..=63 of `a-z 0-9 -`, starting with a letter or digit,
/// not ending with `-`.
fn is_valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests;
