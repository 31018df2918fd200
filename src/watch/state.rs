//! Per-ticket state on disk: one JSON file per ticket in `<state.dir>/tickets/`, written
//! atomically (temp file, fsync, rename, fsync of the folder) on every change, so a restart
//! resumes where the last run stopped and `dmstrack status` can read it without the daemon.
//!
//! Nothing secret is stored: no credentials, and never the signed URL (it is fetched again
//! after a restart).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{TicketSource, TicketSpec};
use crate::job::archive::{path_safe, sync_dir};
pub use crate::job::hooks::HookOutcome;

/// Where a ticket is in its life (SPEC.md "Ticket states").
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

/// Everything persisted about one ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketRecord {
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
    /// The `on_archived` hook's outcome.
    #[serde(default)]
    pub hook: Option<HookOutcome>,
}

impl TicketRecord {
    /// A fresh record for a ticket seen for the first time.
    pub fn new(spec: &TicketSpec, now: jiff::Timestamp) -> Self {
        Self {
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

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O error on a path.
    #[error("state file {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A state file that is not valid JSON of the expected shape.
    #[error("state file {} is corrupt: {source}", path.display())]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    tickets_dir: PathBuf,
}

impl StateStore {
    /// Opens (creating) `<dir>/tickets`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let tickets_dir = dir.join("tickets");
        std::fs::create_dir_all(&tickets_dir).map_err(|source| StateError::Io {
            path: tickets_dir.clone(),
            source,
        })?;
        Ok(Self { tickets_dir })
    }

    /// Opens an existing state directory without creating anything (for `status`).
    pub fn open_existing(dir: &Path) -> Self {
        Self {
            tickets_dir: dir.join("tickets"),
        }
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.tickets_dir.join(format!("{id}.json"))
    }

    /// Reads one ticket's record, if it has one.
    pub fn load(&self, id: &str) -> Result<Option<TicketRecord>, StateError> {
        let path = self.path_of(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Every record in the directory, sorted by id (unreadable files are reported, not fatal).
    pub fn load_all(&self) -> (Vec<TicketRecord>, Vec<StateError>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(&self.tickets_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (records, errors),
            Err(source) => {
                errors.push(StateError::Io {
                    path: self.tickets_dir.clone(),
                    source,
                });
                return (records, errors);
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            match self.load(id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        (records, errors)
    }

    /// Writes a record atomically: temp file, fsync, rename over the old one, fsync the folder.
    pub fn save(&self, record: &TicketRecord) -> Result<(), StateError> {
        let path = self.path_of(&record.id);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(record).expect("records serialize");
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.tickets_dir)
            .map_err(io)?;
        tmp.write_all(&json).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        sync_dir(&self.tickets_dir).map_err(io)?;
        Ok(())
    }
}

/// An exclusive lock on a state directory, held while a daemon runs: two daemons on the same
/// state would race on its files. Released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    /// Takes the lock on `<dir>/.lock`, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, String> {
        let path = dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                use std::io::Seek as _;
                let _ = file.set_len(0);
                let _ = file.seek(std::io::SeekFrom::Start(0));
                let _ = writeln!(file, "{}", std::process::id());
                Ok(Self { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(format!(
                    "another dmstrack (pid {}) is running with the state directory {}",
                    holder.trim(),
                    dir.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
        }
    }
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

    #[test]
    fn save_and_load_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let now: jiff::Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let mut record = TicketRecord::new(&existing(11, "k1"), now);
        assert_eq!(store.load(&record.id).unwrap(), None);
        store.save(&record).unwrap();
        record.state = TicketState::Waiting;
        record.attempts = 3;
        store.save(&record).unwrap();
        assert_eq!(store.load(&record.id).unwrap(), Some(record.clone()));
        let (all, errors) = store.load_all();
        assert_eq!((all, errors.len()), (vec![record], 0));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("tickets"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temp files left behind: {leftovers:?}"
        );
    }

    #[test]
    fn one_daemon_per_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let second = StateLock::acquire(dir.path()).unwrap_err();
        assert!(
            second.contains(&format!("pid {}", std::process::id())),
            "{second}"
        );
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn corrupt_files_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("tickets/9-x.json"), b"{not json").unwrap();
        let (records, errors) = store.load_all();
        assert!(records.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("9-x.json is corrupt"),
            "{}",
            errors[0]
        );
    }
}
