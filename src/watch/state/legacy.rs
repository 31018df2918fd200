//! State written by dmstrack 0.1: one JSON file per ticket in `<state.dir>/tickets/`. It is
//! imported into `state.db` once, in one transaction, and the folder is then renamed
//! `tickets.migrated` (kept, so a downgrade can be undone by renaming it back).

use std::path::{Path, PathBuf};

use super::{SCHEMA_VERSION, StateError, StateStore, TicketRecord};

/// The folder dmstrack 0.1 kept its records in.
pub(super) const LEGACY_DIR: &str = "tickets";
/// What that folder is renamed to once imported.
pub(super) const MIGRATED_DIR: &str = "tickets.migrated";

/// Reads every record in `<dir>/tickets/` (`status` before the first start of this version).
pub(super) fn read(dir: &Path) -> (Vec<TicketRecord>, Vec<StateError>) {
    let folder = dir.join(LEGACY_DIR);
    let mut records = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (records, errors),
        Err(source) => {
            errors.push(StateError::Io {
                path: folder,
                source,
            });
            return (records, errors);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "json")
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    for path in paths {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(source) => {
                errors.push(StateError::Io { path, source });
                continue;
            }
        };
        match serde_json::from_slice::<TicketRecord>(&bytes) {
            Ok(mut record) => {
                record.schema = SCHEMA_VERSION;
                records.push(record);
            }
            Err(source) => errors.push(StateError::Corrupt {
                what: path.display().to_string(),
                source,
            }),
        }
    }
    (records, errors)
}

/// Imports `<dir>/tickets/` into `store`, if it is there. Unreadable files are logged and
/// left behind in the renamed folder; they were unusable before too.
pub(super) fn import(dir: &Path, store: &mut StateStore) -> Result<(), StateError> {
    let folder = dir.join(LEGACY_DIR);
    if !folder.is_dir() {
        return Ok(());
    }
    let (records, errors) = read(dir);
    for err in &errors {
        tracing::warn!(error = %err, "skipping an unreadable state file of an earlier version");
    }
    // Records already in the database win: they are newer than any file left beside it.
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let (present, _) = store.load(&ids);
    let fresh = records
        .iter()
        .filter(|r| !present.iter().any(|p| p.id == r.id));
    store.commit(fresh, [])?;
    let mut target = dir.join(MIGRATED_DIR);
    if target.exists() {
        target = dir.join(format!(
            "{MIGRATED_DIR}-{}",
            jiff::Timestamp::now().as_second()
        ));
    }
    std::fs::rename(&folder, &target).map_err(|source| StateError::Io {
        path: folder.clone(),
        source,
    })?;
    tracing::info!(
        records = records.len(),
        from = %folder.display(),
        kept_as = %target.display(),
        "imported ticket state written by an earlier version"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::state::TicketState;

    /// A record exactly as dmstrack 0.1 wrote it (no `schema`, pretty JSON).
    const V1_RECORD: &str = r#"{
  "id": "11223344-e23dd7ec",
  "order_id": 11223344,
  "download_key_id": "e23dd7ec",
  "label": "orders",
  "tid": 3,
  "state": "archived",
  "last_status": "DOWNLOAD_SUCCESS",
  "attempts": 4,
  "next_poll_at": null,
  "last_error": null,
  "archive": "/var/lib/dmstrack/archive/11223344/e23dd7ec",
  "first_seen_at": "2026-11-28T12:00:00Z",
  "updated_at": "2026-11-28T12:05:00Z",
  "export_requested_at": null,
  "download": { "bytes": 123, "total": 123 },
  "hook": { "result": "ok", "detail": "exit status 0", "finished_at": "2026-11-28T12:05:01Z" }
}"#;

    #[test]
    fn records_of_version_1_are_imported_once_and_the_folder_kept() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_DIR);
        std::fs::create_dir(&legacy).unwrap();
        std::fs::write(legacy.join("11223344-e23dd7ec.json"), V1_RECORD).unwrap();
        std::fs::write(legacy.join("9-broken.json"), "{not json").unwrap();
        std::fs::write(legacy.join(".tmp-abc"), "half").unwrap();

        let (before, _) = read(dir.path());
        assert_eq!(before.len(), 1, "status reads them before the first start");

        let store = StateStore::open(dir.path()).unwrap();
        let record = store.load_one("11223344-e23dd7ec").unwrap().unwrap();
        assert_eq!(record.schema, SCHEMA_VERSION);
        assert_eq!(record.state, TicketState::Archived);
        assert_eq!(record.attempts, 4);
        assert_eq!(record.hook.as_ref().unwrap().result, "ok");
        assert!(!legacy.exists());
        assert!(dir.path().join(MIGRATED_DIR).join("9-broken.json").exists());
        drop(store);

        // A second start imports nothing more and keeps what the database holds.
        let mut store = StateStore::open(dir.path()).unwrap();
        let mut changed = record.clone();
        changed.attempts = 9;
        store.commit([&changed], []).unwrap();
        std::fs::create_dir(&legacy).unwrap();
        std::fs::write(legacy.join("11223344-e23dd7ec.json"), V1_RECORD).unwrap();
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            store
                .load_one("11223344-e23dd7ec")
                .unwrap()
                .unwrap()
                .attempts,
            9,
            "a stale file never overwrites the database"
        );
    }
}
