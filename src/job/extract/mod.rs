//! Safe, verified, parallel extraction of a downloaded export zip into an empty staging
//! folder: the public API, its errors, and the order of the steps.
//!
//! The whole archive is checked from its central directory before anything is written
//! (names, entry types, limits, duplicates; see [`plan`]), then the files are inflated on
//! several threads at once, each hashed with SHA-256 and checked against its CRC-32 as it is
//! written (see [`unpack`]). A failed create is told apart: a name the destination
//! filesystem refuses, or two names it takes for one, fail for good; a disk problem is
//! retried later (see `write_errors.rs`). Synchronous code: the caller runs it in
//! `spawn_blocking`.

mod names;
mod plan;
mod source;
mod unpack;
mod write_errors;

#[cfg(test)]
mod tests;

use std::fs::{DirBuilder, File};
use std::path::{Path, PathBuf};

use zip::ZipArchive;
use zip::result::ZipError;

use self::names::{check_path, shown};
use self::source::SharedFile;

/// Limits and knobs for [`extract_zip`].
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Most entries (files and directories) the archive may hold.
    pub max_entries: u64,
    /// Most bytes the files may unpack to, counted on the bytes actually written.
    pub max_unpacked_bytes: u64,
    /// Worker threads inflating entries; 0 means one per available core.
    pub threads: usize,
    /// `fsync` every written file and created directory (and `dest`) before returning.
    pub sync: bool,
    /// Stops the extraction early (between chunks of a file) with [`ExtractError::Cancelled`].
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

/// One file written under the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFile {
    /// Path relative to the destination, `/`-separated, UTF-8.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

/// What [`extract_zip`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractReport {
    /// Every file, sorted by path.
    pub files: Vec<ExtractedFile>,
    /// Every directory created under the destination (directory entries and the parents of
    /// files), sorted, relative and `/`-separated.
    pub dirs: Vec<String>,
    /// Entries in the archive (files and directory entries).
    pub entries: u64,
    /// Total bytes written, the sum of `files[..].bytes`.
    pub unpacked_bytes: u64,
}

/// Why an archive could not be extracted. Entry names in messages are quoted with control
/// characters escaped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The zip file itself could not be opened.
    #[error("cannot open zip {}: {source}", path.display())]
    OpenZip {
        /// The zip file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The end record or central directory cannot be read (truncated or damaged file).
    #[error("zip archive is unreadable: {source}")]
    BadArchive {
        /// What the zip reader found.
        source: ZipError,
    },
    /// An entry's data is damaged: CRC-32 mismatch, inflate error, size other than declared.
    #[error("entry {}: {reason}", shown(.entry))]
    CorruptEntry {
        /// The entry name.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// An entry name that would not stay inside the destination as written.
    #[error("entry {}: {reason}", shown(.entry))]
    UnsafeName {
        /// The entry name.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A symbolic link entry.
    #[error("entry {}: symbolic links are not allowed", shown(.entry))]
    Symlink {
        /// The entry name.
        entry: String,
    },
    /// A device, FIFO or socket entry.
    #[error("entry {}: {kind} entries are not allowed", shown(.entry))]
    SpecialFile {
        /// The entry name.
        entry: String,
        /// What kind of special file, e.g. `FIFO`.
        kind: &'static str,
    },
    /// An entry this reader cannot unpack (encrypted, unknown compression method, …).
    #[error("entry {}: {reason}", shown(.entry))]
    Unsupported {
        /// The entry name.
        entry: String,
        /// What is unsupported.
        reason: String,
    },
    /// Two entries for one path, or a path that is both a file and a directory.
    #[error("entry {}: {reason}", shown(.entry))]
    Duplicate {
        /// The entry name.
        entry: String,
        /// Which paths collide.
        reason: String,
    },
    /// The archive has more entries than `max_entries`; `entry` is the first one past it.
    #[error("entry {}: archive has more than {limit} entries (max_entries)", shown(.entry))]
    TooManyEntries {
        /// The first entry past the limit.
        entry: String,
        /// `max_entries`.
        limit: u64,
    },
    /// The files unpack to more than `max_unpacked_bytes`; `entry` is the one that crossed it.
    #[error(
        "entry {}: archive unpacks to more than {limit} bytes (max_unpacked_bytes)",
        shown(.entry)
    )]
    TooLarge {
        /// The entry that crossed the limit.
        entry: String,
        /// `max_unpacked_bytes`.
        limit: u64,
    },
    /// Writing under the destination failed for a local reason that may pass: disk full,
    /// quota, read-only filesystem, permissions, I/O error, or a path that something other
    /// than this archive put in the staging folder.
    #[error("entry {}: cannot write {}: {source}", shown(.entry), path.display())]
    Write {
        /// The entry being written.
        entry: String,
        /// The file or directory that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The destination filesystem refuses the name of a file or folder (too long, characters
    /// it cannot store): final, since the same archive fails the same way on this filesystem.
    #[error("{}", name_refused_message(.entry, .path, .reason))]
    NameRefused {
        /// The entry being written.
        entry: String,
        /// The refused path, relative to the destination: the entry's own, or a folder it needs.
        path: String,
        /// What the filesystem objects to, e.g. `name too long for it`.
        reason: &'static str,
        /// The I/O error (`ENAMETOOLONG`, `EILSEQ`, `EINVAL`).
        source: std::io::Error,
    },
    /// Two entries with different names that the destination filesystem takes for one path
    /// (case-insensitive or Unicode-normalising, e.g. an SMB share): final, since only a
    /// case-sensitive filesystem can hold both.
    #[error(
        "{}",
        collision_message(.entry, .path, .earlier_entry, .earlier_path)
    )]
    PathCollision {
        /// The entry that could not be written.
        entry: String,
        /// Its path (its own, or a folder it needs), relative to the destination.
        path: String,
        /// The entry written first that holds the same path on this filesystem.
        earlier_entry: String,
        /// That entry's path (its own, or a folder it needs).
        earlier_path: String,
    },
    /// [`ExtractOptions::cancel`] was cancelled; the output is incomplete.
    #[error("extraction cancelled")]
    Cancelled,
    /// Syncing the destination folder itself failed.
    #[error("cannot sync {}: {source}", path.display())]
    SyncDest {
        /// The destination.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ExtractError {
    /// True when a fresh download could fix the failure (damaged bytes), false when the
    /// archive's content itself is refused (including names the destination filesystem
    /// refuses or folds together) or the local disk failed.
    pub fn is_corrupt_download(&self) -> bool {
        match self {
            Self::BadArchive { source } => !matches!(source, ZipError::UnsupportedArchive(_)),
            Self::CorruptEntry { .. } => true,
            Self::OpenZip { .. }
            | Self::UnsafeName { .. }
            | Self::Symlink { .. }
            | Self::SpecialFile { .. }
            | Self::Unsupported { .. }
            | Self::Duplicate { .. }
            | Self::TooManyEntries { .. }
            | Self::TooLarge { .. }
            | Self::Write { .. }
            | Self::NameRefused { .. }
            | Self::PathCollision { .. }
            | Self::Cancelled
            | Self::SyncDest { .. } => false,
        }
    }

    /// True when the local disk failed (full, read-only, permissions): neither the download
    /// nor the archive is at fault, so the ticket should try again later. False for
    /// [`NameRefused`](Self::NameRefused) and [`PathCollision`](Self::PathCollision): the
    /// filesystem will refuse the same archive the same way, so they are final failures.
    pub fn is_local_io(&self) -> bool {
        matches!(
            self,
            Self::OpenZip { .. } | Self::Write { .. } | Self::SyncDest { .. }
        )
    }
}

/// Extracts `zip_path` into `dest`, an existing empty directory on the same filesystem.
///
/// Nothing is written unless every entry passes the checks; on a later failure `dest` may hold
/// partial output, which the caller deletes. Nothing is ever written outside `dest`: paths
/// are checked component by component, every parent directory is created here, and files are
/// created with `O_EXCL`, so no symlink is ever followed. Zip permission bits are ignored;
/// files and directories get the process umask.
pub fn extract_zip(
    zip_path: &Path,
    dest: &Path,
    options: &ExtractOptions,
) -> Result<ExtractReport, ExtractError> {
    let open_error = |source| ExtractError::OpenZip {
        path: zip_path.to_owned(),
        source,
    };
    let reader = SharedFile::new(File::open(zip_path).map_err(open_error)?).map_err(open_error)?;
    let archive =
        ZipArchive::new(reader.clone()).map_err(|source| ExtractError::BadArchive { source })?;
    let plan = plan::plan(&archive, &reader, options)?;

    // BTreeMap order puts every parent before its children.
    for (dir, entry) in &plan.dirs {
        DirBuilder::new()
            .create(dest.join(dir))
            .map_err(|source| write_errors::create_failed(dest, dir, entry, source, &plan))?;
    }

    let mut files = unpack::unpack(&archive, &plan, dest, options)?;
    files.sort_unstable_by(|a, b| a.path.cmp(&b.path));

    if options.sync {
        for (dir, entry) in plan.dirs.iter().rev() {
            let path = dest.join(dir);
            sync_dir(&path).map_err(|source| ExtractError::Write {
                entry: entry.clone(),
                path,
                source,
            })?;
        }
        sync_dir(dest).map_err(|source| ExtractError::SyncDest {
            path: dest.to_owned(),
            source,
        })?;
    }

    Ok(ExtractReport {
        unpacked_bytes: files.iter().map(|file| file.bytes).sum(),
        files,
        dirs: plan.dirs.into_keys().collect(),
        entries: plan.entries,
    })
}

/// Whether `path` is `entry`'s own path rather than a folder it needs.
fn is_own_path(entry: &str, path: &str) -> bool {
    check_path(entry).is_ok_and(|safe| safe.path == path)
}

fn name_refused_message(entry: &str, path: &str, reason: &str) -> String {
    if is_own_path(entry, path) {
        format!(
            "entry {}: the archive filesystem refuses this name ({reason})",
            shown(entry)
        )
    } else {
        format!(
            "entry {}: the archive filesystem refuses the name of its folder {} ({reason})",
            shown(entry),
            shown(path)
        )
    }
}

fn collision_message(entry: &str, path: &str, earlier_entry: &str, earlier_path: &str) -> String {
    let remedy = "(case-insensitive or normalising); extract to a case-sensitive filesystem";
    if is_own_path(entry, path) && is_own_path(earlier_entry, earlier_path) {
        format!(
            "entries {} and {} are the same file on this filesystem {remedy}",
            shown(earlier_entry),
            shown(entry)
        )
    } else {
        format!(
            "entries {} and {} collide: {} and {} are the same path on this filesystem {remedy}",
            shown(earlier_entry),
            shown(entry),
            shown(earlier_path),
            shown(path)
        )
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}
