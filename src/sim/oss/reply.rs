//! The wire shape of the OSS simulator's answers: OSS XML errors (with `EC`), the small
//! formatting helpers (dates, request ids, XML escaping) both halves of the simulator share.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use super::body::SimBody;

/// One OSS error answer: status, `Code`, `Message`, `EC` and extra elements (`Key`,
/// `StringToSign`, …) after `HostId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OssError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    /// The error's `EC` (also sent as `x-oss-ec`). The values the reference documents are
    /// noted where used; the others only have OSS's shape and must not be relied on.
    pub(super) ec: &'static str,
    pub(super) extra: Vec<(&'static str, String)>,
}

impl OssError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        ec: &'static str,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            ec,
            extra: Vec::new(),
        }
    }

    /// Adds an element after `HostId`.
    pub(super) fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    pub(super) fn internal_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
            "0000-00000001",
        )
    }

    pub(super) fn slow_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
            "0000-00000002",
        )
    }

    pub(super) fn no_such_bucket(bucket: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
            "0015-00000101",
        )
        .with("BucketName", bucket)
    }

    pub(super) fn no_such_key(key: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            "0026-00000001",
        )
        .with("Key", key)
    }

    pub(super) fn no_such_upload(upload_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified upload does not exist. The upload ID may be invalid, or the upload \
             may have been aborted or completed.",
            "0042-00000002",
        )
        .with("UploadId", upload_id)
    }

    pub(super) fn invalid_argument(message: impl Into<String>, ec: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", message, ec)
    }

    pub(super) fn access_denied(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            message,
            "0003-00000001",
        )
    }

    pub(super) fn invalid_access_key_id(access_key_id: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The OSS Access Key Id you provided does not exist in our records.",
            "0002-00000902",
        )
        .with("OSSAccessKeyId", access_key_id)
    }

    /// The XML document, as OSS lays it out.
    pub(super) fn xml(&self, request_id: &str, host_id: &str) -> String {
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{}</Code>\n  \
             <Message>{}</Message>\n  <RequestId>{}</RequestId>\n  <HostId>{}</HostId>\n",
            xml_escape(self.code),
            xml_escape(&self.message),
            xml_escape(request_id),
            xml_escape(host_id),
        );
        for (name, value) in &self.extra {
            xml.push_str(&format!("  <{name}>{}</{name}>\n", xml_escape(value)));
        }
        xml.push_str(&format!(
            "  <EC>{}</EC>\n  <RecommendDoc>https://api.aliyun.com/troubleshoot?q={}</RecommendDoc>\n</Error>\n",
            self.ec, self.ec
        ));
        xml
    }

    pub(super) fn into_response(
        self,
        request_id: &str,
        host_id: &str,
        cut: &Arc<AtomicBool>,
    ) -> Response<SimBody> {
        let xml = self.xml(request_id, host_id);
        Response::builder()
            .status(self.status)
            .header("content-type", "application/xml")
            .header("x-oss-ec", self.ec)
            .body(SimBody::full(Bytes::from(xml), cut))
            .expect("static header names and ASCII values are valid")
    }
}

pub(super) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `2017-02-07T01:30:29.000Z`, the form OSS XML uses.
pub(super) fn iso8601(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string()
}

/// `Tue, 17 Nov 2015 17:27:45 GMT` (RFC 7231 IMF-fixdate).
pub(super) fn http_date(at: jiff::Timestamp) -> String {
    at.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// 24 upper-case hex digits, the shape of OSS request ids.
pub(super) fn new_request_id() -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .to_ascii_uppercase()[..24]
        .to_owned()
}

/// 32 upper-case hex digits, the shape of OSS multipart upload ids.
pub(super) fn new_upload_id() -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .to_ascii_uppercase()
}

pub(super) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("generated ASCII header value")
}

/// Upper-case hex of a digest.
pub(super) fn upper_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
