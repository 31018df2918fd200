//! The object-storage operations an upload uses, one exchange each, on either backend:
//! HeadObject, PutObject, the multipart calls (initiate, upload part, list parts, complete,
//! abort), and a listing of the prefix for `check --online`. Both services spell these the
//! same way (`?uploads`, `?partNumber=&uploadId=`), which is why one client serves both.

use bytes::Bytes;
use serde::Deserialize;

use super::digest::PartDigest;
use super::error::{StoreError, StoreErrorKind};
use super::store::{Answer, Body, ObjectStore};
use crate::config::StoreKind;

/// The S3 header of a body's CRC-32 (base64 of the big-endian value).
const CHECKSUM_CRC32: &str = "x-amz-checksum-crc32";

/// An object as HeadObject describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// Its size.
    pub size: u64,
    /// Its ETag, quotes removed.
    pub etag: Option<String>,
    /// Its CRC-64 (OSS only).
    pub crc64: Option<u64>,
}

/// One uploaded part as ListParts describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemotePart {
    pub(crate) number: u32,
    /// Quotes removed.
    pub(crate) etag: String,
    pub(crate) size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitiateResult {
    upload_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPartsResult {
    #[serde(default)]
    is_truncated: Option<String>,
    #[serde(default)]
    next_part_number_marker: Option<String>,
    #[serde(default, rename = "Part")]
    parts: Vec<ListedPart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedPart {
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
    size: u64,
}

fn malformed(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::unconfirmed(format!("malformed {what} answer: {err}"))
}

impl ObjectStore {
    /// HeadObject; `None` when there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<RemoteObject>, StoreError> {
        match self.send("HEAD", key, &[], &[], Body::Empty).await {
            Ok(answer) => Ok(Some(RemoteObject {
                size: answer
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                etag: answer.etag(),
                crc64: answer.crc64(),
            })),
            Err(err) if err.kind == StoreErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// GetObject of a small object (read bounded); `None` when there is no such object.
    pub async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.send("GET", key, &[], &[], Body::Empty).await {
            Ok(answer) => Ok(Some(answer.body)),
            Err(err) if err.kind == StoreErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// PutObject with `Content-MD5` (the service checks it), and on S3 `x-amz-checksum-crc32`
    /// too (checked, and kept with the object).
    pub(crate) async fn put_object(
        &self,
        key: &str,
        body: Body,
        part: &PartDigest,
        content_type: &str,
    ) -> Result<Answer, StoreError> {
        let (md5, crc32) = (part.content_md5(), part.checksum_crc32());
        let mut headers = vec![
            ("content-md5", md5.as_str()),
            ("content-type", content_type),
        ];
        if self.kind() == StoreKind::S3 {
            headers.push((CHECKSUM_CRC32, crc32.as_str()));
        }
        self.send("PUT", key, &[], &headers, body).await
    }

    /// The part checksum algorithm a multipart upload declares at its start: CRC-32 on S3
    /// (checked per part and in the composite), none on OSS (CRC-64 comes back by itself).
    pub(crate) fn multipart_checksum(&self) -> Option<&'static str> {
        (self.kind() == StoreKind::S3).then_some("CRC32")
    }

    /// InitiateMultipartUpload / CreateMultipartUpload: the new upload id. On S3 the upload
    /// declares CRC-32 part checksums, which every part and the Complete then carry.
    pub(crate) async fn initiate(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<String, StoreError> {
        let mut headers = vec![("content-type", content_type)];
        if let Some(algorithm) = self.multipart_checksum() {
            headers.push(("x-amz-checksum-algorithm", algorithm));
        }
        let answer = self
            .send("POST", key, &[("uploads", "")], &headers, Body::Empty)
            .await?;
        let parsed: InitiateResult = quick_xml::de::from_reader(answer.body.as_slice())
            .map_err(|e| malformed("InitiateMultipartUpload", e))?;
        if parsed.upload_id.trim().is_empty() {
            return Err(malformed("InitiateMultipartUpload", "no UploadId"));
        }
        Ok(parsed.upload_id.trim().to_owned())
    }

    /// UploadPart with `Content-MD5` (and `x-amz-checksum-crc32` on S3).
    pub(crate) async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Body,
        part: &PartDigest,
    ) -> Result<Answer, StoreError> {
        let number = number.to_string();
        let (md5, crc32) = (part.content_md5(), part.checksum_crc32());
        let mut headers = vec![("content-md5", md5.as_str())];
        if self.kind() == StoreKind::S3 {
            headers.push((CHECKSUM_CRC32, crc32.as_str()));
        }
        self.send(
            "PUT",
            key,
            &[("partNumber", &number), ("uploadId", upload_id)],
            &headers,
            body,
        )
        .await
    }

    /// ListParts, every page.
    pub(crate) async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<RemotePart>, StoreError> {
        let mut parts = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![("uploadId", upload_id), ("max-parts", "1000")];
            if !marker.is_empty() {
                query.push(("part-number-marker", marker.as_str()));
            }
            let answer = self.send("GET", key, &query, &[], Body::Empty).await?;
            let page: ListPartsResult = quick_xml::de::from_reader(answer.body.as_slice())
                .map_err(|e| malformed("ListParts", e))?;
            parts.extend(page.parts.into_iter().map(|p| RemotePart {
                number: p.part_number,
                etag: p.etag.trim().trim_matches('"').to_owned(),
                size: p.size,
            }));
            let truncated = page
                .is_truncated
                .as_deref()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("true"));
            match page.next_part_number_marker {
                Some(next) if truncated && !next.trim().is_empty() && next.trim() != marker => {
                    marker = next.trim().to_owned();
                }
                _ => return Ok(parts),
            }
        }
    }

    /// CompleteMultipartUpload with every part, numbered from 1 in order (on S3 with its
    /// CRC-32, which an upload that declared the algorithm must list).
    pub(crate) async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartDigest],
    ) -> Result<Answer, StoreError> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (index, part) in parts.iter().enumerate() {
            let number = index + 1;
            let etag = part.etag();
            let checksum = match self.kind() {
                StoreKind::S3 => {
                    format!("<ChecksumCRC32>{}</ChecksumCRC32>", part.checksum_crc32())
                }
                StoreKind::Oss => String::new(),
            };
            xml.push_str(&format!(
                "<Part>{checksum}<ETag>\"{etag}\"</ETag><PartNumber>{number}</PartNumber></Part>"
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let body = Bytes::from(xml);
        let md5 = super::digest::content_md5(&body);
        let answer = self
            .send(
                "POST",
                key,
                &[("uploadId", upload_id)],
                &[("content-md5", &md5), ("content-type", "application/xml")],
                Body::Bytes(body),
            )
            .await?;
        // S3 may answer 200 and put the error in the body.
        let text = String::from_utf8_lossy(&answer.body);
        if text.contains("<Error>") {
            return Err(super::error::classify(500, &answer.headers, &answer.body));
        }
        Ok(answer)
    }

    /// AbortMultipartUpload (a gone upload counts as aborted).
    pub(crate) async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        match self
            .send("DELETE", key, &[("uploadId", upload_id)], &[], Body::Empty)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.kind == StoreErrorKind::NoSuchUpload => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Lists at most one key under `prefix`: proves the endpoint, the credentials and the
    /// permission to list (for `check --online`).
    pub async fn check_access(&self, prefix: &str) -> Result<(), StoreError> {
        let query: Vec<(&str, &str)> = match self.kind() {
            StoreKind::Oss => vec![("max-keys", "1"), ("prefix", prefix)],
            StoreKind::S3 => vec![("list-type", "2"), ("max-keys", "1"), ("prefix", prefix)],
        };
        self.send("GET", "", &query, &[], Body::Empty)
            .await
            .map(drop)
    }
}
