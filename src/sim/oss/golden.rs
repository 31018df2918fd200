//! Test-only loader of the oss2 golden requests in `tests/fixtures/golden/oss/` (written by
//! `scripts/golden/gen_oss_vectors.py`, whose docstring describes the JSON shape).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// One captured oss2 request with the inputs that produced it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GoldenRequest {
    pub(crate) name: String,
    pub(crate) operation: String,
    pub(crate) inputs: GoldenInputs,
    pub(crate) request: GoldenWire,
    pub(crate) signing: GoldenSigning,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GoldenInputs {
    pub(crate) auth: String,
    pub(crate) access_key_id: String,
    pub(crate) access_key_secret: String,
    pub(crate) security_token: Option<String>,
    pub(crate) region: String,
    pub(crate) bucket: String,
    pub(crate) key: Option<String>,
    pub(crate) endpoint: String,
    pub(crate) addressing: String,
    pub(crate) time: String,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) upload_id: Option<String>,
    pub(crate) parts: Option<Vec<GoldenPart>>,
    pub(crate) additional_headers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GoldenPart {
    pub(crate) part_number: u32,
    pub(crate) size: usize,
    pub(crate) etag: String,
    pub(crate) crc64: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GoldenWire {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body_base64: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GoldenSigning {
    pub(crate) canonical_request: Option<String>,
    pub(crate) string_to_sign: String,
}

impl GoldenRequest {
    /// The frozen signing time.
    pub(crate) fn time(&self) -> jiff::Timestamp {
        self.inputs.time.parse().expect("fixture time is RFC 3339")
    }

    /// The exact body bytes sent.
    pub(crate) fn body(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.request.body_base64)
            .expect("fixture body is base64")
    }

    /// A sent header's value (name compared case-insensitively).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded object key, `""` for a bucket-level request.
    pub(crate) fn key(&self) -> &str {
        self.inputs.key.as_deref().unwrap_or("")
    }

    /// The raw HTTP/1.1 request bytes oss2 sent: request line, `Host`, the captured headers
    /// in order, the body.
    pub(crate) fn raw_http(&self) -> Vec<u8> {
        let target = if self.request.query.is_empty() {
            self.request.path.clone()
        } else {
            format!("{}?{}", self.request.path, self.request.query)
        };
        let mut head = format!("{} {target} HTTP/1.1\r\n", self.request.method);
        if self.header("host").is_none() {
            head.push_str(&format!("Host: {}\r\n", self.request.host));
        }
        for (name, value) in &self.request.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&self.body());
        raw
    }
}

/// Bytes of part `n` of `size` in the fixtures: `(i * 7 + n) % 256`.
pub(crate) fn part_body(n: u32, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| ((i as u64 * 7 + u64::from(n)) % 256) as u8)
        .collect()
}

pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/oss")
}

/// Every request fixture, sorted by name.
pub(crate) fn load_all() -> Vec<GoldenRequest> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("golden fixture directory exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "json")
                && path.file_stem().is_some_and(|s| s != "crc64_combine")
        })
        .collect();
    paths.sort();
    let fixtures: Vec<GoldenRequest> = paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("readable fixture");
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect();
    assert!(
        fixtures.len() >= 60,
        "expected the oss2 fixtures, found {}",
        fixtures.len()
    );
    fixtures
}
