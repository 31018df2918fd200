//! What a failed write under the destination means: a local disk problem worth retrying
//! later, a name the filesystem refuses, or two entries the filesystem takes for one path
//! (case-insensitive or Unicode-normalising mounts such as SMB shares on a NAS).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use rustix::io::Errno;

use super::ExtractError;
use super::plan::Plan;

/// What a failure to create a file (`O_CREAT | O_EXCL`) or folder (`mkdir`) under its
/// archive name says about the extraction. Only then is a name at stake: any later failure
/// (writing data, syncing) is a local problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CreateFault {
    /// The local disk, its quota or its permissions (`ENOSPC`, `EDQUOT`, `EROFS`, `EACCES`,
    /// `EPERM`, `EIO`, anything unknown): the same archive may well work later.
    Local,
    /// The filesystem refuses the name itself, for the given reason; it always will.
    NameRefused(&'static str),
    /// Something is already at the path.
    Exists,
}

/// Classifies `error`, raised by creating a file or folder.
pub(super) fn classify_create_error(error: &io::Error) -> CreateFault {
    match Errno::from_io_error(error) {
        Some(Errno::NAMETOOLONG) => CreateFault::NameRefused("name too long for it"),
        // ZFS with utf8only, SMB and NFS mounts refusing characters of the name.
        Some(Errno::ILSEQ) => CreateFault::NameRefused("it cannot store these characters"),
        // vfat, exFAT and SMB mounts refusing characters such as `:`, `?`, `"` or `|`; creating
        // with these flags raises EINVAL for nothing else.
        Some(Errno::INVAL) => CreateFault::NameRefused("it does not accept this name"),
        Some(Errno::EXIST) => CreateFault::Exists,
        Some(_) => CreateFault::Local,
        // An error made in-process rather than by the system.
        None => match error.kind() {
            io::ErrorKind::InvalidFilename => CreateFault::NameRefused("name too long for it"),
            io::ErrorKind::AlreadyExists => CreateFault::Exists,
            _ => CreateFault::Local,
        },
    }
}

/// The error for failing to create `path` (relative to `dest`, `/`-separated), which `entry`
/// needs, with `source`.
///
/// `dest` is a fresh, empty staging folder and every path is created once (the plan refused
/// exact duplicates), so an existing path is another entry of this archive whose name this
/// filesystem takes for the same one (`A.sql` after `a.sql`, or NFD `é` after NFC `é`).
/// Only the filesystem knows which names it folds together, so it is asked: the entry whose
/// path leads to the same inode is the twin. When none does, something else put the path
/// there, and the failure stays a local one.
pub(super) fn create_failed(
    dest: &Path,
    path: &str,
    entry: &str,
    source: io::Error,
    plan: &Plan,
) -> ExtractError {
    match classify_create_error(&source) {
        CreateFault::NameRefused(reason) => ExtractError::NameRefused {
            entry: entry.to_owned(),
            path: path.to_owned(),
            reason,
            source,
        },
        CreateFault::Exists => match twin(dest, path, plan) {
            Some((earlier_path, earlier_entry)) => ExtractError::PathCollision {
                entry: entry.to_owned(),
                path: path.to_owned(),
                earlier_entry: earlier_entry.to_owned(),
                earlier_path: earlier_path.to_owned(),
            },
            None => write_error(dest, path, entry, source),
        },
        CreateFault::Local => write_error(dest, path, entry, source),
    }
}

fn write_error(dest: &Path, path: &str, entry: &str, source: io::Error) -> ExtractError {
    ExtractError::Write {
        entry: entry.to_owned(),
        path: dest.join(path),
        source,
    }
}

/// Another planned path in the same folder that the filesystem resolves to the same inode as
/// `path`, with the entry that needs it. (Twins in different folders are impossible here:
/// folders are all created before files, so their own collision is met first.)
fn twin<'p>(dest: &Path, path: &str, plan: &'p Plan) -> Option<(&'p str, &'p str)> {
    let existing = fs::symlink_metadata(dest.join(path)).ok()?;
    let same_inode = |candidate: &str| {
        fs::symlink_metadata(dest.join(candidate))
            .is_ok_and(|meta| meta.dev() == existing.dev() && meta.ino() == existing.ino())
    };
    let folder = parent(path);
    let lower = path.to_lowercase();
    // Case variants first: the usual culprit, found without an `lstat` of every neighbour.
    let (likely, others): (Vec<_>, Vec<_>) = plan
        .paths()
        .filter(|(candidate, _)| *candidate != path && parent(candidate) == folder)
        .partition(|(candidate, _)| candidate.to_lowercase() == lower);
    likely
        .into_iter()
        .chain(others)
        .find(|(candidate, _)| same_inode(candidate))
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_error(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno.raw_os_error())
    }

    #[test]
    fn refused_names_and_existing_paths_are_told_apart_from_local_problems() {
        let create = |errno| classify_create_error(&os_error(errno));
        assert_eq!(
            create(Errno::NAMETOOLONG),
            CreateFault::NameRefused("name too long for it")
        );
        assert_eq!(
            create(Errno::ILSEQ),
            CreateFault::NameRefused("it cannot store these characters")
        );
        assert_eq!(
            create(Errno::INVAL),
            CreateFault::NameRefused("it does not accept this name")
        );
        assert_eq!(create(Errno::EXIST), CreateFault::Exists);
        for local in [
            Errno::NOSPC,
            Errno::DQUOT,
            Errno::ROFS,
            Errno::ACCESS,
            Errno::PERM,
            Errno::IO,
            Errno::NOENT,
            Errno::MFILE,
        ] {
            assert_eq!(create(local), CreateFault::Local, "{local:?}");
        }
    }

    #[test]
    fn errors_without_an_os_code_are_classified_by_kind() {
        let made = |kind| classify_create_error(&io::Error::from(kind));
        assert_eq!(
            made(io::ErrorKind::InvalidFilename),
            CreateFault::NameRefused("name too long for it")
        );
        assert_eq!(made(io::ErrorKind::AlreadyExists), CreateFault::Exists);
        assert_eq!(made(io::ErrorKind::StorageFull), CreateFault::Local);
        assert_eq!(made(io::ErrorKind::Other), CreateFault::Local);
    }
}
