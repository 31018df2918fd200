//! Ticket state: the record kept for each ticket, its identity, and where it is stored.
//!
//! Records live in one SQLite database in WAL mode (`<state.dir>/state.db`, see [`store`]).
//! The watch loop alone writes it, through one writer thread ([`writer`]) that commits
//! changes in groups: one fsync per batch, never a write on the async workers, and poll-only
//! fields (attempts, next poll) batched for a few seconds. `dmstrack status` reads the same
//! database with or without a running daemon. State written by earlier versions (one JSON
//! file per ticket) is imported once ([`legacy`]).
//!
//! Nothing secret is stored: no credentials, and never the signed URL (it is fetched again
//! after a restart).

mod legacy;
mod lock;
mod store;
pub mod writer;

pub use lock::DirLock;
pub use store::{DB_FILE, StateStore};
pub use writer::{Committed, Durability, StateWriter};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{TicketSource, TicketSpec};
use crate::job::archive::path_safe;
pub use crate::job::hooks::{HookKind, HookOutcome};
use crate::job::upload::progress::UploadProgress;

/// Where a ticket is in its life (docs/reference/status-json.md, `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketState {
    /// Not polled yet (an export ticket: its export not started yet).
    Pending,
    /// DMS is preparing the export; polled on a backoff schedule.
    Waiting,
    /// The zip is being downloaded.
    Downloading,
    /// The zip is being verified, extracted and published.
    Extracting,
    /// Published with its manifest. Terminal.
    Archived,
    /// Given up (DOWNLOAD_FAIL, an unsafe archive, give_up_after). Terminal.
    Failed,
}

impl TicketState {
    /// `archived` or `failed`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Archived | Self::Failed)
    }

    /// The name used in status and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Waiting => "waiting",
            Self::Downloading => "downloading",
            Self::Extracting => "extracting",
            Self::Archived => "archived",
            Self::Failed => "failed",
        }
    }
}

/// Download progress, for `status` and resuming.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadProgress {
    /// Bytes on disk so far.
    pub bytes: u64,
    /// The object's size, once known.
    pub total: Option<u64>,
}

/// The layout of [`TicketRecord`] this version writes. 1: one JSON file per ticket, no
/// `schema` field (dmstrack 0.1); 2: rows in `state.db`.
pub const SCHEMA_VERSION: u32 = 2;

fn legacy_schema() -> u32 {
    1
}

/// Everything persisted about one ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketRecord {
    /// The record's layout version ([`SCHEMA_VERSION`]); records of earlier versions lack it.
    #[serde(default = "legacy_schema")]
    pub schema: u32,
    /// Stable identity, also the file name (see [`ticket_id`]).
    pub id: String,
    /// The data-tracking ticket.
    pub order_id: i64,
    /// The export's key; `None` until an export ticket has one.
    pub download_key_id: Option<String>,
    /// The label from the config.
    pub label: Option<String>,
    /// The tenant id used.
    pub tid: Option<i64>,
    /// Where it is.
    pub state: TicketState,
    /// The last `DownloadStatus` seen.
    pub last_status: Option<String>,
    /// Status queries made so far.
    pub attempts: u32,
    /// When the next status query is due.
    pub next_poll_at: Option<jiff::Timestamp>,
    /// The last problem, for people.
    pub last_error: Option<String>,
    /// The published folder.
    pub archive: Option<PathBuf>,
    /// When dmstrack first saw the ticket (`give_up_after` counts from here).
    pub first_seen_at: jiff::Timestamp,
    /// Last change.
    pub updated_at: jiff::Timestamp,
    /// Set just before `DownloadDataTrackResult` is sent, so a crash in between is noticed.
    #[serde(default)]
    pub export_requested_at: Option<jiff::Timestamp>,
    /// Download progress.
    #[serde(default)]
    pub download: Option<DownloadProgress>,
    /// The last outcome of the `on_archived` hook (as dmstrack 0.1 kept it; `hooks` has the
    /// whole story).
    #[serde(default)]
    pub hook: Option<HookOutcome>,
    /// Each configured hook's runs for this ticket: pending until it succeeded or ran out of
    /// attempts, so a hook cut by a stop or crash runs again after a restart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<HookKind, HookRecord>,
    /// The upload of the archive, with `[upload]`.
    #[serde(default)]
    pub upload: Option<UploadRecord>,
}

/// Where a hook is for one ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookState {
    /// Not run yet, or to run again (it failed, timed out, or was cut by a stop or crash).
    Pending,
    /// It succeeded.
    Ok,
    /// It failed `hooks.max_attempts` times.
    Failed,
}

/// A hook's runs for one ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// Where it is.
    pub state: HookState,
    /// Runs that ended (a run cut by a stop does not count).
    pub attempts: u32,
    /// The last run's outcome.
    #[serde(default)]
    pub last: Option<HookOutcome>,
}

impl HookRecord {
    /// A hook that has not run yet.
    pub fn pending() -> Self {
        Self {
            state: HookState::Pending,
            attempts: 0,
            last: None,
        }
    }
}

/// Where an archive's upload is (`status --json`'s `upload.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    /// Waiting for its (next) attempt.
    Pending,
    /// An attempt runs.
    Uploading,
    /// Every object is confirmed, `manifest.json` last.
    Uploaded,
    /// Refused for good (credentials, permissions), or not done within `poll.give_up_after`.
    Failed,
}

impl UploadState {
    /// The name used in status and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Uploading => "uploading",
            Self::Uploaded => "uploaded",
            Self::Failed => "failed",
        }
    }
}

/// The upload of one archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Where it is.
    pub state: UploadState,
    /// Upload attempts so far.
    pub attempts: u32,
    /// The last problem (`None` again after a success).
    pub last_error: Option<String>,
    /// The remote folder, `oss://bucket/prefix/<order_id>/<key>/`.
    pub url: String,
    /// When the upload first became pending (`give_up_after` counts from here).
    pub pending_since: jiff::Timestamp,
    /// When the next attempt is due, while pending.
    #[serde(default)]
    pub next_attempt_at: Option<jiff::Timestamp>,
    /// When it was confirmed.
    #[serde(default)]
    pub uploaded_at: Option<jiff::Timestamp>,
    /// The local clean-up after the upload (zip removed unless `keep_zip`, folder removed
    /// with `keep_local = false`) is done.
    #[serde(default)]
    pub cleaned: bool,
    /// What is confirmed so far.
    #[serde(default)]
    pub progress: UploadProgress,
}

impl UploadRecord {
    /// A new pending upload to `url`.
    pub fn pending(url: String, now: jiff::Timestamp) -> Self {
        Self {
            state: UploadState::Pending,
            attempts: 0,
            last_error: None,
            url,
            pending_since: now,
            next_attempt_at: None,
            uploaded_at: None,
            cleaned: false,
            progress: UploadProgress::default(),
        }
    }
}

impl TicketRecord {
    /// A fresh record for a ticket seen for the first time.
    pub fn new(spec: &TicketSpec, now: jiff::Timestamp) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            id: ticket_id(spec),
            order_id: spec.order_id,
            download_key_id: match &spec.source {
                TicketSource::Existing { download_key_id } => Some(download_key_id.clone()),
                TicketSource::Export(_) => None,
            },
            label: spec.label.clone(),
            tid: spec.tid,
            state: TicketState::Pending,
            last_status: None,
            attempts: 0,
            next_poll_at: None,
            last_error: None,
            archive: None,
            first_seen_at: now,
            updated_at: now,
            export_requested_at: None,
            download: None,
            hook: None,
            hooks: BTreeMap::new(),
            upload: None,
        }
    }
}

/// The stable identity of a ticket: `<order_id>-<key>` for an existing export, and
/// `<order_id>-export-<hash of the export's parameters>` for one dmstrack starts (so changing
/// the filters asks for a new export, and a label change does not).
pub fn ticket_id(spec: &TicketSpec) -> String {
    match &spec.source {
        TicketSource::Existing { download_key_id } => {
            format!("{}-{}", spec.order_id, path_safe(download_key_id))
        }
        TicketSource::Export(export) => {
            let params = crate::dms::types::export_params(spec.order_id, None, export);
            let canonical = crate::net::signer::canonical_query(&params);
            let digest = crate::net::signer::sha256_hex(canonical.as_bytes());
            format!("{}-export-{}", spec.order_id, &digest[..16])
        }
    }
}

/// Every record in the state folder `dir`, for `status` and `check`, without creating or
/// changing anything: the database when there is one, else the files an earlier version
/// left (a daemon of this version imports them at its first start).
pub fn read_all(dir: &std::path::Path) -> (Vec<TicketRecord>, Vec<StateError>) {
    match StateStore::open_read_only(dir) {
        Ok(Some(store)) => store.load_all(),
        Ok(None) => legacy::read(dir),
        Err(err) => (Vec::new(), vec![err]),
    }
}

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O error on a path.
    #[error("state {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The database refused an operation (full disk, a damaged file, a read-only folder).
    #[error("state database {}: {source}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// A record that is not valid JSON of the expected shape.
    #[error("state record {what} is corrupt: {source}")]
    Corrupt {
        /// The file or the record's id.
        what: String,
        /// The error.
        source: serde_json::Error,
    },
    /// The state was written by a newer dmstrack.
    #[error("state database {} has layout version {found}; this dmstrack reads up to {SCHEMA_VERSION} (a newer version wrote it)", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: u32,
    },
    /// The writer thread is gone (the daemon is stopping).
    #[error("the state writer has stopped")]
    WriterGone,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ExportSpec, RollbackSqlType};

    fn existing(order_id: i64, key: &str) -> TicketSpec {
        TicketSpec {
            order_id,
            tid: None,
            label: None,
            source: TicketSource::Existing {
                download_key_id: key.into(),
            },
        }
    }

    #[test]
    fn ticket_ids_are_stable_and_distinguish_exports() {
        assert_eq!(ticket_id(&existing(7, "abc")), "7-abc");
        let export = |types: Vec<String>| TicketSpec {
            order_id: 7,
            tid: Some(3),
            label: Some("x".into()),
            source: TicketSource::Export(Box::new(ExportSpec {
                rollback_sql_type: RollbackSqlType::Reverse,
                filter_start_time: None,
                filter_end_time: None,
                filter_tables: vec![],
                filter_types: types,
                column_filter: None,
                event_ids: vec![],
            })),
        };
        let a = ticket_id(&export(vec!["UPDATE".into()]));
        assert!(
            a.starts_with("7-export-") && a.len() == "7-export-".len() + 16,
            "{a}"
        );
        assert_eq!(a, ticket_id(&export(vec!["UPDATE".into()])));
        assert_ne!(a, ticket_id(&export(vec!["DELETE".into()])));
        let mut relabelled = export(vec!["UPDATE".into()]);
        relabelled.label = Some("other".into());
        assert_eq!(
            a,
            ticket_id(&relabelled),
            "a label change is the same export"
        );
    }
}
