//! `state.db`: ticket records as rows of one SQLite database in WAL mode. A commit writes any
//! number of records in one transaction, which costs one fsync of the log; readers (`status`,
//! `check`) see the last commit while the daemon writes.
//!
//! Blocking: every method does file I/O. The daemon calls them only from the writer thread
//! or `spawn_blocking`; the one-shot commands call them directly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use super::{SCHEMA_VERSION, StateError, TicketRecord, legacy};

/// The database's file name inside `state.dir`.
pub const DB_FILE: &str = "state.db";
/// How long a statement waits for another connection's lock (a reader checkpointing, a
/// one-shot command) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open state database.
#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
}

impl StateStore {
    /// Opens (creating) `<dir>/state.db` for writing, and imports the JSON records an earlier
    /// version left in `<dir>/tickets/` (the folder is then renamed `tickets.migrated`).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(db_error(&path))?;
        let mut store = Self { conn, path };
        store.prepare()?;
        legacy::import(dir, &mut store)?;
        Ok(store)
    }

    /// Opens an existing database without creating or changing anything (`status`, `check`).
    /// `Ok(None)` when there is none yet.
    pub fn open_read_only(dir: &Path) -> Result<Option<Self>, StateError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_error(&path))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error(&path))?;
        let store = Self { conn, path };
        store.check_version()?;
        Ok(Some(store))
    }

    fn prepare(&mut self) -> Result<(), StateError> {
        let path = self.path.clone();
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(db_error(&path))?;
        // WAL: readers never block the writer, and a commit appends to the log with one
        // fsync (synchronous=FULL) instead of rewriting pages in place.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error(&path))?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db_error(&path))?;
        self.check_version()?;
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS tickets (
                     id TEXT PRIMARY KEY NOT NULL,
                     record TEXT NOT NULL
                 ) WITHOUT ROWID;",
            )
            .map_err(db_error(&path))?;
        self.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db_error(&path))?;
        Ok(())
    }

    fn check_version(&self) -> Result<(), StateError> {
        let found: u32 = self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(db_error(&self.path))?;
        if found > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                path: self.path.clone(),
                found,
            });
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The records of `ids` that exist (in no particular order); unreadable ones are reported
    /// apart, so one damaged record never hides the others.
    pub fn load(&self, ids: &[String]) -> (Vec<TicketRecord>, Vec<StateError>) {
        let mut records = Vec::with_capacity(ids.len());
        let mut errors = Vec::new();
        let statement = self
            .conn
            .prepare_cached("SELECT record FROM tickets WHERE id = ?1");
        let mut statement = match statement {
            Ok(statement) => statement,
            Err(source) => {
                errors.push(db_error(&self.path)(source));
                return (records, errors);
            }
        };
        for id in ids {
            let text: Option<String> = match statement
                .query_row(params![id], |row| row.get(0))
                .optional()
            {
                Ok(text) => text,
                Err(source) => {
                    errors.push(db_error(&self.path)(source));
                    continue;
                }
            };
            if let Some(text) = text {
                match decode(id, &text) {
                    Ok(record) => records.push(record),
                    Err(err) => errors.push(err),
                }
            }
        }
        (records, errors)
    }

    /// One record, if there is one.
    pub fn load_one(&self, id: &str) -> Result<Option<TicketRecord>, StateError> {
        let (mut records, mut errors) = self.load(&[id.to_owned()]);
        match errors.pop() {
            Some(err) => Err(err),
            None => Ok(records.pop()),
        }
    }

    /// Every record, sorted by id; unreadable ones are reported apart.
    pub fn load_all(&self) -> (Vec<TicketRecord>, Vec<StateError>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let rows = self
            .conn
            .prepare("SELECT id, record FROM tickets ORDER BY id")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?
                    .collect::<Result<Vec<(String, String)>, _>>()
            });
        match rows {
            Ok(rows) => {
                for (id, text) in rows {
                    match decode(&id, &text) {
                        Ok(record) => records.push(record),
                        Err(err) => errors.push(err),
                    }
                }
            }
            Err(source) => errors.push(db_error(&self.path)(source)),
        }
        (records, errors)
    }

    /// Writes `puts` and deletes `removes` in one transaction: all of them are durable when
    /// this returns `Ok`, none of them otherwise.
    pub fn commit<'a>(
        &mut self,
        puts: impl IntoIterator<Item = &'a TicketRecord>,
        removes: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let transaction = self.conn.transaction().map_err(db_error(&path))?;
        {
            let mut upsert = transaction
                .prepare_cached(
                    "INSERT INTO tickets (id, record) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                )
                .map_err(db_error(&path))?;
            for record in puts {
                let text = serde_json::to_string(record).expect("records serialize");
                upsert
                    .execute(params![record.id, text])
                    .map_err(db_error(&path))?;
            }
            let mut delete = transaction
                .prepare_cached("DELETE FROM tickets WHERE id = ?1")
                .map_err(db_error(&path))?;
            for id in removes {
                delete.execute(params![id]).map_err(db_error(&path))?;
            }
        }
        transaction.commit().map_err(db_error(&path))
    }
}

fn decode(id: &str, text: &str) -> Result<TicketRecord, StateError> {
    let mut record: TicketRecord =
        serde_json::from_str(text).map_err(|source| StateError::Corrupt {
            what: id.to_owned(),
            source,
        })?;
    record.schema = SCHEMA_VERSION;
    Ok(record)
}

fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> StateError + '_ {
    move |source| StateError::Db {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TicketSource, TicketSpec};
    use crate::watch::state::TicketState;

    pub(crate) fn record(order_id: i64, key: &str) -> TicketRecord {
        let spec = TicketSpec {
            order_id,
            tid: None,
            label: None,
            source: TicketSource::Existing {
                download_key_id: key.into(),
            },
        };
        TicketRecord::new(&spec, "2026-11-28T12:00:00Z".parse().unwrap())
    }

    #[test]
    fn commit_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        let mut a = record(11, "k1");
        let b = record(12, "k2");
        assert_eq!(store.load_one(&a.id).unwrap(), None);
        store.commit([&a, &b], []).unwrap();
        a.state = TicketState::Waiting;
        a.attempts = 3;
        store.commit([&a], [b.id.as_str()]).unwrap();
        assert_eq!(store.load_one(&a.id).unwrap(), Some(a.clone()));
        assert_eq!(store.load_one(&b.id).unwrap(), None);
        let (all, errors) = store.load_all();
        assert_eq!((all, errors.len()), (vec![a], 0));
    }

    #[test]
    fn a_reader_sees_commits_while_the_writer_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = StateStore::open(dir.path()).unwrap();
        assert!(StateStore::open_read_only(dir.path()).unwrap().is_some());
        let reader = StateStore::open_read_only(dir.path()).unwrap().unwrap();
        let a = record(1, "k");
        writer.commit([&a], []).unwrap();
        assert_eq!(reader.load_all().0, vec![a]);
    }

    #[test]
    fn no_database_reads_as_none_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(StateStore::open_read_only(dir.path()).unwrap().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupt_record_is_reported_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        let good = record(1, "good");
        store.commit([&good], []).unwrap();
        store
            .conn
            .execute(
                "INSERT INTO tickets (id, record) VALUES ('9-x', '{not json')",
                [],
            )
            .unwrap();
        let (records, errors) = store.load_all();
        assert_eq!(records, vec![good]);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("9-x is corrupt"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateStore::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = StateStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::TooNew { .. }), "{err}");
    }
}
