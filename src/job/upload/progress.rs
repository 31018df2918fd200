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
    /// Parts confirmed: number → ETag (the part's MD5).
    #[serde(default)]
    pub parts: BTreeMap<u32, String>,
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
            } => {
                self.multipart.insert(
                    key.clone(),
                    MultipartProgress {
                        upload_id: upload_id.clone(),
                        part_size: *part_size,
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
