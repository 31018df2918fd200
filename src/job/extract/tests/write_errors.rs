//! Write failures that are the archive's names meeting the destination filesystem, which are
//! final, told apart from local disk problems, which are retried later.

use std::collections::BTreeMap;
use std::io;

use super::super::plan::{Plan, PlannedFile};
use super::super::write_errors::create_failed;
use super::*;

/// The pipeline's contract: neither a fresh download nor a later retry can help.
fn assert_final(err: &ExtractError) {
    assert!(!err.is_local_io(), "{err}");
    assert!(!err.is_corrupt_download(), "{err}");
}

#[test]
fn a_name_too_long_for_the_filesystem_is_a_final_failure() {
    // ext4, tmpfs, xfs and btrfs all cap one component at 255 bytes (ENAMETOOLONG). A long
    // Chinese table name gets there at 85 characters, 3 bytes each in UTF-8.
    let long_ascii = format!("{}.sql", "x".repeat(300));
    let long_chinese = format!("{}.sql", "订单明细".repeat(25));
    for name in [&long_ascii, &long_chinese] {
        let zip = build_zip(
            &[FileItem("ok.sql", b"fine"), FileItem(name, b"too long")],
            deflated(),
        );
        let scene = Scene::new(&zip);
        let err = scene.extract(&options()).unwrap_err();
        assert!(
            matches!(
                err,
                ExtractError::NameRefused {
                    reason: "name too long for it",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "entry \"{name}\": the archive filesystem refuses this name (name too long for it)"
            )
        );
        assert_final(&err);
        assert_eq!(scene.root_listing(), ["staging"]);
    }
}

#[test]
fn a_folder_name_too_long_for_the_filesystem_is_a_final_failure() {
    let folder = "d".repeat(256);
    let name = format!("{folder}/table.sql");
    let zip = build_zip(&[FileItem(&name, b"x")], deflated());
    let err = Scene::new(&zip).extract(&options()).unwrap_err();
    assert!(matches!(err, ExtractError::NameRefused { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "entry \"{name}\": the archive filesystem refuses the name of its folder \"{folder}\" \
             (name too long for it)"
        )
    );
    assert_final(&err);
}

// A case-insensitive or normalising filesystem cannot be mounted in a test, so its
// behaviour is reproduced where it matters: two names that resolve to one inode. A hard link
// gives the second name exactly what such a filesystem gives it: `lstat` succeeds and
// returns the first file's inode, and `O_EXCL` creation fails with EEXIST.

fn plan(files: &[&str], dirs: &[(&str, &str)]) -> Plan {
    Plan {
        files: files
            .iter()
            .enumerate()
            .map(|(index, path)| PlannedFile {
                index,
                entry: (*path).to_owned(),
                path: (*path).to_owned(),
                size: 0,
                crc32: 0,
            })
            .collect(),
        dirs: dirs
            .iter()
            .map(|(dir, entry)| ((*dir).to_owned(), (*entry).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        entries: (files.len() + dirs.len()) as u64,
    }
}

fn exists() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::EXIST.raw_os_error())
}

/// `earlier` written, then `later` fails to be created because the filesystem folds it
/// onto `earlier`.
fn folded(dest: &Path, earlier: &str, later: &str) {
    fs::write(dest.join(earlier), b"first").unwrap();
    fs::hard_link(dest.join(earlier), dest.join(later)).unwrap();
}

#[test]
fn names_equal_up_to_case_are_a_final_collision_naming_both_entries() {
    let dest = TempDir::new().unwrap();
    let plan = plan(&["b.sql", "a.sql", "z.sql", "A.sql"], &[]);
    folded(dest.path(), "a.sql", "A.sql");
    fs::write(dest.path().join("b.sql"), b"unrelated").unwrap();

    let err = create_failed(dest.path(), "A.sql", "A.sql", exists(), &plan);
    assert!(matches!(err, ExtractError::PathCollision { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "entries \"a.sql\" and \"A.sql\" are the same file on this filesystem \
         (case-insensitive or normalising); extract to a case-sensitive filesystem"
    );
    assert_final(&err);
}

#[test]
fn names_equal_up_to_unicode_normalisation_are_a_final_collision() {
    let nfc = "caf\u{e9}.sql";
    let nfd = "cafe\u{301}.sql";
    let dest = TempDir::new().unwrap();
    let plan = plan(&[nfc, "other.sql", nfd], &[]);
    folded(dest.path(), nfc, nfd);

    let err = create_failed(dest.path(), nfd, nfd, exists(), &plan);
    assert!(
        matches!(&err, ExtractError::PathCollision { earlier_entry, .. } if earlier_entry == nfc),
        "{err:?}"
    );
    assert_final(&err);
}

#[test]
fn folders_equal_up_to_case_name_the_entries_that_need_them() {
    let dest = TempDir::new().unwrap();
    let plan = plan(
        &["Data/x.sql", "data/y.sql"],
        &[("Data", "Data/x.sql"), ("data", "data/y.sql")],
    );
    folded(dest.path(), "Data", "data");

    let err = create_failed(dest.path(), "data", "data/y.sql", exists(), &plan);
    assert_eq!(
        err.to_string(),
        "entries \"Data/x.sql\" and \"data/y.sql\" collide: \"Data\" and \"data\" are the same \
         path on this filesystem (case-insensitive or normalising); extract to a case-sensitive \
         filesystem"
    );
    assert_final(&err);
}

/// A path no other entry accounts for was put in the staging folder by something else: not
/// the archive's fault, so it stays a local problem to retry.
#[test]
fn an_existing_path_no_other_entry_explains_stays_local() {
    let dest = TempDir::new().unwrap();
    let plan = plan(&["a.sql", "b.sql"], &[]);
    fs::write(dest.path().join("a.sql"), b"stray").unwrap();
    fs::write(dest.path().join("b.sql"), b"written").unwrap();

    let err = create_failed(dest.path(), "a.sql", "a.sql", exists(), &plan);
    assert!(matches!(err, ExtractError::Write { .. }), "{err:?}");
    assert!(err.is_local_io());
}

#[test]
fn refused_characters_are_final_and_disk_problems_stay_local() {
    use rustix::io::Errno;
    let dest = TempDir::new().unwrap();
    let plan = plan(&["a?.sql"], &[]);
    let fail = |errno: Errno| {
        create_failed(
            dest.path(),
            "a?.sql",
            "a?.sql",
            io::Error::from_raw_os_error(errno.raw_os_error()),
            &plan,
        )
    };

    for (errno, reason) in [
        (Errno::ILSEQ, "it cannot store these characters"),
        (Errno::INVAL, "it does not accept this name"),
    ] {
        let err = fail(errno);
        assert_eq!(
            err.to_string(),
            format!("entry \"a?.sql\": the archive filesystem refuses this name ({reason})")
        );
        assert_final(&err);
    }
    for errno in [
        Errno::NOSPC,
        Errno::DQUOT,
        Errno::ROFS,
        Errno::ACCESS,
        Errno::PERM,
        Errno::IO,
    ] {
        let err = fail(errno);
        assert!(matches!(err, ExtractError::Write { .. }), "{err:?}");
        assert!(err.is_local_io(), "{errno:?}");
        assert!(!err.is_corrupt_download(), "{errno:?}");
    }
}
