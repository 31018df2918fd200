//! The archive directory: where every file of a ticket's life goes, the manifest, the atomic
//! publish, and start-up cleanup.
//!
//! ```text
//! <archive.dir>/<order_id>/<download_key_id>/   published by one rename; manifest.json inside
//! <archive.dir>/.dmstrack/downloads/<ticket>.zip.part (+ .json)  resumable downloads
//! <archive.dir>/.dmstrack/staging/<ticket>-<random>/              being extracted
//! ```
//! Everything lives on the archive's filesystem, so the final `rename` is atomic: a reader
//! never sees a partial archive, and a ticket is archived exactly when its manifest exists.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `manifest.json` (docs/reference/manifest.md). `source` never holds the URL's query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The ticket.
    pub order_id: i64,
    /// The export's key.
    pub download_key_id: String,
    /// Tenant id.
    pub tid: Option<i64>,
    /// The config label.
    pub label: Option<String>,
    /// DMS's `TotalCount`.
    pub total_count: Option<i64>,
    /// When it was published, RFC 3339 UTC to the second.
    pub archived_at: String,
    /// The downloaded zip.
    pub source: ManifestSource,
    /// Every file extracted, sorted by path.
    pub files: Vec<ManifestFile>,
}

/// Where the zip came from, and its digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSource {
    /// OSS host (`host[:port]`).
    pub host: String,
    /// Object key (URL path, decoded), without the query.
    pub object: String,
    /// Zip size.
    pub bytes: u64,
    /// CRC-64/XZ of the zip, decimal (as OSS's `x-oss-hash-crc64ecma`).
    pub crc64ecma: String,
    /// SHA-256 of the zip, lower hex.
    pub sha256: String,
}

/// One extracted file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative path under `files/`, `/`-separated.
    pub path: String,
    /// Size.
    pub bytes: u64,
    /// SHA-256, lower hex.
    pub sha256: String,
}

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The folder, inside a published archive, holding the zip's entries.
pub const FILES_DIR: &str = "files";

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// An I/O error on a path.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something already sits where the archive goes, without a manifest.
    #[error("{} already exists but holds no manifest.json; move it away to let dmstrack publish there", path.display())]
    Occupied {
        /// The destination.
        path: PathBuf,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PublishError {
    let path = path.to_owned();
    move |source| PublishError::Io { op, path, source }
}

/// Paths inside one archive directory.
#[derive(Debug, Clone)]
pub struct ArchiveLayout {
    root: PathBuf,
}

impl ArchiveLayout {
    /// The layout under `root` (nothing is created).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// The archive root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn work_dir(&self) -> PathBuf {
        self.root.join(".dmstrack")
    }

    fn downloads_dir(&self) -> PathBuf {
        self.work_dir().join("downloads")
    }

    fn staging_dir(&self) -> PathBuf {
        self.work_dir().join("staging")
    }

    fn trash_dir(&self) -> PathBuf {
        self.work_dir().join("trash")
    }

    /// Removes a published archive folder so that no reader ever sees it half removed: one
    /// rename into the work folder (same filesystem), then the delete. A crash in between
    /// leaves it in the trash, emptied at the next start.
    pub fn remove_atomically(&self, dir: &Path, ticket_id: &str) -> std::io::Result<()> {
        let trash = self.trash_dir();
        std::fs::create_dir_all(&trash)?;
        let target = tempfile::Builder::new()
            .prefix(&format!("{ticket_id}-"))
            .tempdir_in(&trash)?
            .keep();
        // The rename needs a free name: the empty temp folder makes one and goes.
        std::fs::remove_dir(&target)?;
        std::fs::rename(dir, &target)?;
        if let Some(parent) = dir.parent() {
            let _ = sync_dir(parent);
        }
        std::fs::remove_dir_all(&target)
    }

    /// Creates the root and the work folders.
    pub fn ensure(&self) -> Result<(), PublishError> {
        for dir in [self.downloads_dir(), self.staging_dir()] {
            std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        Ok(())
    }

    /// The file a daemon locks to own this archive folder.
    pub fn lock_path(&self) -> PathBuf {
        self.work_dir().join("lock")
    }

    /// The partial download of a ticket.
    pub fn part_path(&self, ticket_id: &str) -> PathBuf {
        self.downloads_dir().join(format!("{ticket_id}.zip.part"))
    }

    /// Where a published archive goes.
    pub fn final_dir(&self, order_id: i64, download_key_id: &str) -> PathBuf {
        self.root
            .join(order_id.to_string())
            .join(path_safe(download_key_id))
    }

    /// True when the ticket's manifest exists: the one test of "archived".
    pub fn is_archived(&self, order_id: i64, download_key_id: &str) -> bool {
        self.final_dir(order_id, download_key_id)
            .join(MANIFEST)
            .is_file()
    }

    /// A fresh, empty staging folder for a ticket (with its `files/` inside).
    pub fn new_staging(&self, ticket_id: &str) -> Result<PathBuf, PublishError> {
        let parent = self.staging_dir();
        std::fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{ticket_id}-"))
            .tempdir_in(&parent)
            .map_err(io_err("create staging folder in", &parent))?
            .keep();
        std::fs::create_dir(dir.join(FILES_DIR)).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    /// Start-up cleanup: every staging folder (publishing is one rename, so anything left in
    /// staging is an interrupted extraction), the trash (folders being removed), and every
    /// partial download not in `keep` (ticket ids still in progress). Returns what was removed.
    pub fn clean_stale(&self, keep: &HashSet<String>) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for dir in [self.staging_dir(), self.trash_dir()] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if std::fs::remove_dir_all(entry.path()).is_ok() {
                        removed.push(entry.path());
                    }
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.downloads_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let id = name
                    .strip_suffix(".zip.part")
                    .or_else(|| name.strip_suffix(".zip.part.json"));
                let keep_it = id.is_some_and(|id| keep.contains(id));
                if !keep_it && std::fs::remove_file(entry.path()).is_ok() {
                    removed.push(entry.path());
                }
            }
        }
        removed
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The staging folder is now the archive.
    New,
    /// A complete archive (with its manifest) was already there: it is kept, the staging
    /// folder is deleted. An archive is never published twice.
    Existing,
}

/// Writes `manifest.json` into `staging` (fsynced), then renames `staging` to `final_dir` in
/// one step and fsyncs the parent. `final_dir`'s parent (`<order_id>/`) is created if needed.
pub fn publish(
    staging: &Path,
    final_dir: &Path,
    manifest: &Manifest,
) -> Result<Published, PublishError> {
    let parent = final_dir.parent().expect("final dir has a parent");
    if final_dir.join(MANIFEST).is_file() {
        let _ = std::fs::remove_dir_all(staging);
        return Ok(Published::Existing);
    }
    let manifest_path = staging.join(MANIFEST);
    let json = serde_json::to_vec_pretty(manifest).expect("manifests serialize");
    let mut file =
        std::fs::File::create(&manifest_path).map_err(io_err("write", &manifest_path))?;
    file.write_all(&json)
        .map_err(io_err("write", &manifest_path))?;
    file.write_all(b"\n")
        .map_err(io_err("write", &manifest_path))?;
    file.sync_all().map_err(io_err("fsync", &manifest_path))?;
    sync_dir(staging).map_err(io_err("fsync", staging))?;

    if !parent.exists() {
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        if let Some(root) = parent.parent() {
            sync_dir(root).map_err(io_err("fsync", root))?;
        }
    }
    if final_dir.exists() {
        return Err(PublishError::Occupied {
            path: final_dir.to_owned(),
        });
    }
    std::fs::rename(staging, final_dir).map_err(io_err("rename staging folder to", final_dir))?;
    sync_dir(parent).map_err(io_err("fsync", parent))?;
    Ok(Published::New)
}

/// A file-name-safe form of a key: ASCII letters, digits, `-`, `_` and `.` stay, anything
/// else becomes `%XX`, and `.`/`..` are encoded, so a key can never name another folder.
/// UUID keys map to themselves.
pub fn path_safe(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        out = out.replace('.', "%2E");
        if out.is_empty() {
            out.push_str("%00");
        }
    }
    out
}

/// fsync a directory, so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The name of the zip kept in an archive folder, from the object's key: its file name when
/// that is a plain name (`x_REDO_31201_207.zip`), else `export.zip`.
pub fn kept_zip_name(object: &str) -> String {
    let name = object.rsplit('/').next().unwrap_or_default();
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['\\', '\0'])
        && name != MANIFEST
        && name != FILES_DIR;
    match (plain, name.ends_with(".zip")) {
        (true, true) => name.to_owned(),
        (true, false) => format!("{name}.zip"),
        (false, _) => "export.zip".to_owned(),
    }
}

/// `archived_at`: RFC 3339 UTC, whole seconds.
pub fn format_archived_at(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            order_id: 11223344,
            download_key_id: "e23dd7ec".into(),
            tid: Some(3),
            label: Some("orders".into()),
            total_count: Some(69),
            archived_at: format_archived_at("2026-11-28T12:00:00.123Z".parse().unwrap()),
            source: ManifestSource {
                host: "idbsaasstore.oss-cn-zhangjiakou.aliyuncs.com".into(),
                object: "x_REDO_31201_207.zip".into(),
                bytes: 123456,
                crc64ecma: "11051210869376104954".into(),
                sha256: "ab".into(),
            },
            files: vec![ManifestFile {
                path: "a/b.sql".into(),
                bytes: 100,
                sha256: "cd".into(),
            }],
        }
    }

    #[test]
    fn keys_never_escape_their_folder() {
        assert_eq!(
            path_safe("e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd"),
            "e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd"
        );
        assert_eq!(path_safe("dk-2024/a+b c*~"), "dk-2024%2Fa%2Bb%20c%2A%7E");
        assert_eq!(path_safe(".."), "%2E%2E");
        assert_eq!(path_safe("."), "%2E");
        assert_eq!(path_safe("订"), "%E8%AE%A2");
        assert_eq!(path_safe(""), "%00");
    }

    #[test]
    fn manifest_has_exactly_the_spec_fields() {
        let value = serde_json::to_value(manifest()).unwrap();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "archived_at",
                "download_key_id",
                "files",
                "label",
                "order_id",
                "source",
                "tid",
                "total_count"
            ]
        );
        assert_eq!(value["archived_at"], "2026-11-28T12:00:00Z");
        assert_eq!(value["source"]["crc64ecma"], "11051210869376104954");
        let source_keys: Vec<_> = value["source"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            source_keys,
            ["bytes", "crc64ecma", "host", "object", "sha256"]
        );
        let file_keys: Vec<_> = value["files"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(file_keys, ["bytes", "path", "sha256"]);
    }

    #[test]
    fn publish_is_one_rename_and_refuses_to_overwrite() {
        let root = tempfile::tempdir().unwrap();
        let layout = ArchiveLayout::new(root.path());
        layout.ensure().unwrap();
        let staging = layout.new_staging("1-k").unwrap();
        std::fs::write(staging.join(FILES_DIR).join("a.sql"), b"select 1;").unwrap();
        let dest = layout.final_dir(1, "k");
        assert!(!layout.is_archived(1, "k"));
        assert_eq!(
            publish(&staging, &dest, &manifest()).unwrap(),
            Published::New
        );
        assert!(layout.is_archived(1, "k"));
        assert!(!staging.exists());
        assert_eq!(
            std::fs::read(dest.join("files/a.sql")).unwrap(),
            b"select 1;"
        );
        let written: Manifest =
            serde_json::from_slice(&std::fs::read(dest.join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(written, manifest());

        // A complete archive already there is success, never a reason to retry (review
        // finding 1: this answered Occupied and the ticket re-extracted every poll).
        let again = layout.new_staging("1-k").unwrap();
        assert_eq!(
            publish(&again, &dest, &manifest()).unwrap(),
            Published::Existing
        );
        assert!(!again.exists(), "the duplicate staging folder is removed");

        // A folder without a manifest is someone else's: refused, staging left for cleanup.
        let occupied = layout.final_dir(2, "k");
        std::fs::create_dir_all(&occupied).unwrap();
        let third = layout.new_staging("2-k").unwrap();
        assert!(matches!(
            publish(&third, &occupied, &manifest()),
            Err(PublishError::Occupied { .. })
        ));
        assert!(
            third.exists(),
            "a refused publish leaves the staging folder for cleanup"
        );
    }

    #[test]
    fn keys_with_slashes_stay_inside_their_order_folder() {
        let layout = ArchiveLayout::new(Path::new("/a"));
        assert_eq!(
            layout.final_dir(5, "../../etc"),
            Path::new("/a/5/..%2F..%2Fetc")
        );
    }

    #[test]
    fn startup_cleanup_keeps_only_parts_in_progress() {
        let root = tempfile::tempdir().unwrap();
        let layout = ArchiveLayout::new(root.path());
        layout.ensure().unwrap();
        let staging = layout.new_staging("1-k").unwrap();
        std::fs::write(layout.part_path("1-k"), b"partial").unwrap();
        std::fs::write(layout.part_path("2-done"), b"partial").unwrap();
        let removed = layout.clean_stale(&HashSet::from(["1-k".to_owned()]));
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(!staging.exists());
        assert!(layout.part_path("1-k").exists());
        assert!(!layout.part_path("2-done").exists());
    }
}
