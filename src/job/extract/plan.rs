//! The check pass over the central directory, before anything is written: entry count,
//! names, entry types, declared sizes against the limit, and colliding paths. Its result says
//! which directories to create and which files to inflate.

use std::collections::{BTreeMap, HashMap, HashSet};

use zip::{CompressionMethod, ZipArchive};

use super::names::{check_path, decode_name, name_for_message, shown};
use super::source::SharedFile;
use super::{ExtractError, ExtractOptions};

/// What to create under the destination.
#[derive(Debug)]
pub(super) struct Plan {
    /// Files to inflate, in central-directory order.
    pub(super) files: Vec<PlannedFile>,
    /// Every directory to create (explicit entries and parents of entries), mapped to the
    /// entry name that needs it, for error messages.
    pub(super) dirs: BTreeMap<String, String>,
    /// Entries in the archive.
    pub(super) entries: u64,
}

impl Plan {
    /// Every path to create, folders then files, each with the entry name that needs it.
    pub(super) fn paths(&self) -> impl Iterator<Item = (&str, &str)> {
        let dirs = self
            .dirs
            .iter()
            .map(|(path, entry)| (path.as_str(), entry.as_str()));
        let files = self
            .files
            .iter()
            .map(|file| (file.path.as_str(), file.entry.as_str()));
        dirs.chain(files)
    }
}

/// A file entry that passed every check.
#[derive(Debug, Clone)]
pub(super) struct PlannedFile {
    /// Index in the archive.
    pub(super) index: usize,
    /// Decoded name, for error messages.
    pub(super) entry: String,
    /// Checked relative path, `/`-separated.
    pub(super) path: String,
    /// Declared uncompressed size (central directory).
    pub(super) size: u64,
    /// Declared CRC-32 (central directory).
    pub(super) crc32: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

/// One entry after the per-entry checks.
#[derive(Debug)]
struct Checked {
    file: PlannedFile,
    kind: Kind,
}

const S_IFMT: u32 = 0o170_000;
const S_IFIFO: u32 = 0o010_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFSOCK: u32 = 0o140_000;

/// Checks every entry of `archive` and returns what to write, or the first problem found.
pub(super) fn plan(
    archive: &ZipArchive<SharedFile>,
    reader: &SharedFile,
    options: &ExtractOptions,
) -> Result<Plan, ExtractError> {
    // Records actually parsed from the central directory, not the end record's claim.
    let entries = archive.len() as u64;
    if entries > options.max_entries {
        let first_past = usize::try_from(options.max_entries).unwrap_or(usize::MAX);
        return Err(ExtractError::TooManyEntries {
            entry: name_of_entry_for_message(archive, first_past),
            limit: options.max_entries,
        });
    }
    // The zip crate keys entries by name, so a repeated name silently hides one entry; find
    // the repeat in the central directory to name it.
    if archive.has_duplicate_names() {
        let entry = first_repeated_name(reader, archive.central_directory_start())
            .ok()
            .flatten()
            .unwrap_or_default();
        return Err(ExtractError::Duplicate {
            entry,
            reason: "the archive holds more than one entry with this name".to_owned(),
        });
    }

    // Declared sizes are summed here so an honest bomb fails before anything is written;
    // the limit on bytes actually written is enforced while unpacking.
    let mut checked = Vec::with_capacity(archive.len());
    let mut declared_total: u64 = 0;
    for index in 0..archive.len() {
        let one = check_entry(archive, index)?;
        if one.kind == Kind::File {
            declared_total = declared_total
                .checked_add(one.file.size)
                .filter(|total| *total <= options.max_unpacked_bytes)
                .ok_or_else(|| ExtractError::TooLarge {
                    entry: one.file.entry.clone(),
                    limit: options.max_unpacked_bytes,
                })?;
        }
        checked.push(one);
    }

    let dirs = check_collisions(&checked)?;
    let files = checked
        .into_iter()
        .filter(|one| one.kind == Kind::File)
        .map(|one| one.file)
        .collect();
    Ok(Plan {
        files,
        dirs,
        entries,
    })
}

fn check_entry(archive: &ZipArchive<SharedFile>, index: usize) -> Result<Checked, ExtractError> {
    let data = archive
        .by_index_data(index)
        .map_err(|source| ExtractError::BadArchive { source })?;
    let raw = data.name_raw();
    let entry = decode_name(raw, data.flags().as_u16(), || {
        data.name().ok().map(|name| name.into_owned())
    })
    .map_err(|reason| ExtractError::UnsafeName {
        entry: String::from_utf8_lossy(raw).into_owned(),
        reason: reason.to_owned(),
    })?;
    let safe = check_path(&entry).map_err(|reason| ExtractError::UnsafeName {
        entry: entry.clone(),
        reason,
    })?;

    let kind = match data.unix_mode().map_or(0, |mode| mode & S_IFMT) {
        S_IFLNK => return Err(ExtractError::Symlink { entry }),
        S_IFDIR => Kind::Dir,
        // Some writers mark directories only by the trailing separator.
        0 | S_IFREG if safe.trailing_separator => Kind::Dir,
        0 | S_IFREG => Kind::File,
        special => {
            let kind = match special {
                S_IFIFO => "FIFO",
                S_IFCHR => "character device",
                S_IFBLK => "block device",
                S_IFSOCK => "socket",
                _ => "unknown file type",
            };
            return Err(ExtractError::SpecialFile { entry, kind });
        }
    };

    if data.encrypted() {
        return Err(ExtractError::Unsupported {
            entry,
            reason: "encrypted entries are not supported".to_owned(),
        });
    }
    if kind == Kind::Dir && data.size() > 0 {
        return Err(ExtractError::Unsupported {
            reason: format!("directory entry carries {} bytes of data", data.size()),
            entry,
        });
    }
    let method = data.compression();
    if kind == Kind::File
        && !matches!(
            method,
            CompressionMethod::Stored | CompressionMethod::Deflated
        )
    {
        return Err(ExtractError::Unsupported {
            entry,
            reason: format!("compression method {method} is not supported"),
        });
    }

    Ok(Checked {
        file: PlannedFile {
            index,
            path: safe.path,
            size: data.size(),
            crc32: data.crc32(),
            entry,
        },
        kind,
    })
}

/// Refuses two entries with one path (`a` and `a/`, `a/b` and `a\b`, …) and a file used as
/// a parent directory; returns every directory to create.
fn check_collisions(checked: &[Checked]) -> Result<BTreeMap<String, String>, ExtractError> {
    let mut by_path: HashMap<&str, &Checked> = HashMap::with_capacity(checked.len());
    for one in checked {
        if let Some(earlier) = by_path.insert(&one.file.path, one) {
            let reason = if earlier.kind == one.kind {
                format!("same path as entry {}", shown(&earlier.file.entry))
            } else {
                format!(
                    "a file and a directory have the same path (entry {})",
                    shown(&earlier.file.entry)
                )
            };
            return Err(ExtractError::Duplicate {
                entry: one.file.entry.clone(),
                reason,
            });
        }
    }

    let mut dirs = BTreeMap::new();
    for one in checked {
        let path = one.file.path.as_str();
        if one.kind == Kind::Dir {
            dirs.entry(path.to_owned())
                .or_insert_with(|| one.file.entry.clone());
        }
        for (slash, _) in path.match_indices('/') {
            let parent = &path[..slash];
            if by_path.get(parent).is_some_and(|p| p.kind == Kind::File) {
                return Err(ExtractError::Duplicate {
                    entry: one.file.entry.clone(),
                    reason: format!("its parent {} is a file entry", shown(parent)),
                });
            }
            dirs.entry(parent.to_owned())
                .or_insert_with(|| one.file.entry.clone());
        }
    }
    Ok(dirs)
}

/// Best-effort name of entry `index` for a message about the archive as a whole.
fn name_of_entry_for_message(archive: &ZipArchive<SharedFile>, index: usize) -> String {
    archive
        .by_index_data(index)
        .map(|data| name_for_message(data.name_raw(), data.flags().as_u16()))
        .unwrap_or_default()
}

/// Central-directory file header: signature, then 42 bytes of fixed fields.
const CENTRAL_HEADER_SIGNATURE: [u8; 4] = [b'P', b'K', 1, 2];
const CENTRAL_HEADER_LEN: u64 = 46;

/// Walks the central directory from `start` and returns the first name seen twice.
fn first_repeated_name(reader: &SharedFile, start: u64) -> std::io::Result<Option<String>> {
    let mut seen = HashSet::new();
    let mut offset = start;
    loop {
        let mut header = [0_u8; CENTRAL_HEADER_LEN as usize];
        reader.read_exact_at(&mut header, offset)?;
        if header[..4] != CENTRAL_HEADER_SIGNATURE {
            return Ok(None);
        }
        let field = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let flags = field(8);
        let [name_len, extra_len, comment_len] = [28, 30, 32].map(|at| u64::from(field(at)));
        let mut name = vec![0_u8; name_len as usize];
        reader.read_exact_at(&mut name, offset + CENTRAL_HEADER_LEN)?;
        if !seen.insert(name.clone()) {
            return Ok(Some(name_for_message(&name, flags)));
        }
        offset += CENTRAL_HEADER_LEN + name_len + extra_len + comment_len;
    }
}
