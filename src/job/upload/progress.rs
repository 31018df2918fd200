//! What an upload has confirmed so far, kept in the ticket's durable state so that a restart
//! (after a crash or SIGKILL) neither sends a confirmed object or part again nor takes an
//! unconfirmed one for done, and resumes (or starts over) a multipart upload it began.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Confirmed objects and multipart uploads in progress, by remote key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadProgress {
    /// Objects whose upload was confirmed (size and checksum).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub done: BTreeSet<String>,
    /// Multipart uploads begun and not completed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub multipart: BTreeMap<String, MultipartProgress>,
}

/// One multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartProgress {
    /// The service's upload id.
    pub upload_id: String,
    /// The part size it was begun with (a changed `part_size` starts it over).
    pub part_size: u64,
    /// The checksum algorithm it declared at its start (`CRC32` on S3; none on OSS, or on an
    /// S3 upload begun by an older dmstrack). A service refuses parts whose checksum type
    /// differs from the declared one, so an upload begun otherwise is started over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Parts confirmed: number → ETag (the part's MD5).
    #[serde(default)]
    pub parts: BTreeMap<u32, String>,
}

impl MultipartProgress {
    /// Whether this upload can be resumed by one that sends `part_size` parts declaring the
    /// `checksum` algorithm. A changed part size would mix part boundaries; a changed checksum
    /// type (an S3 upload begun without CRC-32, resumed by a build that sends it) is refused by
    /// the service for every part ("Checksum Type mismatch"), so it would never finish.
    pub fn resumable_with(&self, part_size: u64, checksum: Option<&str>) -> bool {
        self.part_size == part_size && self.checksum.as_deref() == checksum
    }
}

/// A step of an upload the watch loop records in the ticket's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStep {
    /// A multipart upload was begun: durable before any part is sent, so it is resumed (or
    /// aborted) rather than forgotten in the bucket.
    MultipartStarted {
        /// Remote key.
        key: String,
        /// Upload id.
        upload_id: String,
        /// Part size.
        part_size: u64,
        /// The checksum algorithm the upload declared.
        checksum: Option<String>,
    },
    /// A part was confirmed.
    PartDone {
        /// Remote key.
        key: String,
        /// Part number.
        number: u32,
        /// Its ETag.
        etag: String,
    },
    /// The multipart upload is gone (completed elsewhere, aborted, expired).
    MultipartGone {
        /// Remote key.
        key: String,
    },
    /// An object was confirmed.
    ObjectDone {
        /// Remote key.
        key: String,
    },
}

impl UploadProgress {
    /// Applies a step.
    pub fn apply(&mut self, step: &UploadStep) {
        match step {
            UploadStep::MultipartStarted {
                key,
                upload_id,
                part_size,
                checksum,
            } => {
                self.multipart.insert(
                    key.clone(),
                    MultipartProgress {
                        upload_id: upload_id.clone(),
                        part_size: *part_size,
                        checksum: checksum.clone(),
                        parts: BTreeMap::new(),
                    },
                );
            }
            UploadStep::PartDone { key, number, etag } => {
                if let Some(multipart) = self.multipart.get_mut(key) {
                    multipart.parts.insert(*number, etag.clone());
                }
            }
            UploadStep::MultipartGone { key } => {
                self.multipart.remove(key);
            }
            UploadStep::ObjectDone { key } => {
                self.multipart.remove(key);
                self.done.insert(key.clone());
            }
        }
    }

    /// Whether the step must be durable before the upload goes on.
    pub fn needs_durability(step: &UploadStep) -> bool {
        matches!(step, UploadStep::MultipartStarted { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(checksum: Option<&str>) -> UploadProgress {
        let mut progress = UploadProgress::default();
        progress.apply(&UploadStep::MultipartStarted {
            key: "k".into(),
            upload_id: "u".into(),
            part_size: 8,
            checksum: checksum.map(str::to_owned),
        });
        progress
    }

    #[test]
    fn only_the_same_part_size_and_checksum_type_resume() {
        let s3 = started(Some("CRC32"));
        let earlier = &s3.multipart["k"];
        assert!(earlier.resumable_with(8, Some("CRC32")));
        assert!(!earlier.resumable_with(16, Some("CRC32")));
        assert!(!earlier.resumable_with(8, None));
        let oss = started(None);
        assert!(oss.multipart["k"].resumable_with(8, None));
        assert!(!oss.multipart["k"].resumable_with(8, Some("CRC32")));
    }

    #[test]
    fn an_upload_recorded_before_checksums_were_declared_is_started_over_on_s3() {
        // A record written before the checksum field existed.
        let old: UploadProgress = serde_json::from_str(
            r#"{"multipart":{"k":{"upload_id":"u","part_size":8,"parts":{"1":"e"}}}}"#,
        )
        .unwrap();
        let earlier = &old.multipart["k"];
        assert_eq!(earlier.checksum, None);
        assert!(
            !earlier.resumable_with(8, Some("CRC32")),
            "S3 now declares CRC32"
        );
        assert!(earlier.resumable_with(8, None), "OSS declares nothing");
        // And the field survives a round trip.
        let again: UploadProgress =
            serde_json::from_str(&serde_json::to_string(&started(Some("CRC32"))).unwrap()).unwrap();
        assert_eq!(again.multipart["k"].checksum.as_deref(), Some("CRC32"));
    }
}
