//! Archives refused before anything is written (or while writing, with nothing outside the
//! destination touched): unsafe names, links and special files, limits, duplicates.

use std::fs;
use std::io::{Cursor, Read as _, Write};

use tempfile::TempDir;
use zip::ZipWriter;

use super::super::unpack::{Budget, CopyError, copy_entry};
use super::*;

#[test]
fn escaping_names_are_rejected_and_nothing_is_written_anywhere() {
    let absolute_probe = TempDir::new().unwrap();
    let absolute = format!("{}/abs-evil", absolute_probe.path().display());
    let cases: [(&str, &str); 6] = [
        ("../evil", "path escapes the archive (\"..\")"),
        ("a/../../evil", "path has a \"..\" component"),
        ("/abs", "path is absolute"),
        (&absolute, "path is absolute"),
        ("C:\\x", "path has a drive prefix (\"C:\")"),
        ("..\\..\\x", "path escapes the archive (\"..\")"),
    ];
    for (name, reason) in cases {
        let placeholder = "Q".repeat(name.len());
        let mut zip = build_zip(
            &[
                FileItem("fine.txt", b"harmless"),
                FileItem(&placeholder, b"payload"),
            ],
            deflated(),
        );
        rename(&mut zip, &placeholder, name.as_bytes());
        let scene = Scene::new(&zip);

        let err = scene.extract(&options()).unwrap_err();
        assert!(
            matches!(err, ExtractError::UnsafeName { .. }),
            "{name}: {err:?}"
        );
        assert_eq!(err.to_string(), format!("entry \"{name}\": {reason}"));
        assert!(!err.is_corrupt_download());
        assert_eq!(scene.root_listing(), ["staging"], "{name}");
        assert!(
            scene.dest_listing().is_empty(),
            "{name}: checks come before writes"
        );
        assert!(listing(absolute_probe.path()).is_empty());
    }
}

#[test]
fn symlink_entries_are_rejected() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("before.txt", deflated()).unwrap();
    writer.write_all(b"x").unwrap();
    writer
        .add_symlink("link", "/etc/passwd", deflated())
        .unwrap();
    let zip = writer.finish().unwrap().into_inner();
    let scene = Scene::new(&zip);

    let err = scene.extract(&options()).unwrap_err();
    assert!(matches!(err, ExtractError::Symlink { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "entry \"link\": symbolic links are not allowed"
    );
    assert!(!err.is_corrupt_download());
    assert!(scene.dest_listing().is_empty());
}

#[test]
fn fifo_device_and_socket_entries_are_rejected() {
    for (file_type, kind) in [
        (0o010_000, "FIFO"),
        (0o020_000, "character device"),
        (0o060_000, "block device"),
        (0o140_000, "socket"),
    ] {
        let attributes = (file_type | 0o644) << 16;
        let zip = build_zip(
            &[FileItem("special", b"")],
            stored().external_attributes(attributes),
        );
        let scene = Scene::new(&zip);
        let err = scene.extract(&options()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("entry \"special\": {kind} entries are not allowed")
        );
        assert!(!err.is_corrupt_download());
        assert!(scene.dest_listing().is_empty());
    }
}

#[test]
fn entry_count_limit_is_enforced() {
    let zip = build_zip(
        &[
            FileItem("1", b"a"),
            FileItem("2", b"b"),
            Dir("3/"),
            FileItem("4", b"d"),
        ],
        deflated(),
    );
    let scene = Scene::new(&zip);

    let at_limit = ExtractOptions {
        max_entries: 3,
        ..options()
    };
    let err = scene.extract(&at_limit).unwrap_err();
    assert!(
        matches!(err, ExtractError::TooManyEntries { limit: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "entry \"4\": archive has more than 3 entries (max_entries)"
    );
    assert!(!err.is_corrupt_download());
    assert!(scene.dest_listing().is_empty());

    let report = scene
        .extract(&ExtractOptions {
            max_entries: 4,
            ..options()
        })
        .unwrap();
    assert_eq!(report.entries, 4);
}

#[test]
fn zip_bomb_past_the_byte_limit_is_rejected_before_writing() {
    let zeros = vec![0_u8; 8 << 20];
    let zip = build_zip(
        &[FileItem("small.txt", b"ok"), FileItem("bomb.sql", &zeros)],
        deflated(),
    );
    assert!(zip.len() < 64 << 10, "the fixture must be a real bomb");
    let scene = Scene::new(&zip);

    let err = scene
        .extract(&ExtractOptions {
            max_unpacked_bytes: 1 << 20,
            ..options()
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"bomb.sql\": archive unpacks to more than 1048576 bytes (max_unpacked_bytes)"
    );
    assert!(!err.is_corrupt_download());
    assert!(scene.dest_listing().is_empty());
}

#[test]
fn lying_size_header_stops_at_the_declared_size_below_the_cap() {
    let zeros = vec![0_u8; 4 << 20];
    let mut zip = build_zip(&[FileItem("liar.sql", &zeros)], deflated());
    let entry = headers(&zip)[0];
    set_uncompressed_size(&mut zip, entry, 1000);
    let scene = Scene::new(&zip);
    let cap = 64 << 10;

    let err = scene
        .extract(&ExtractOptions {
            max_unpacked_bytes: cap,
            ..options()
        })
        .unwrap_err();
    assert!(matches!(err, ExtractError::CorruptEntry { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("entry \"liar.sql\": data runs past its declared size of 1000 bytes"),
        "{err}"
    );
    let written = fs::metadata(scene.dest.join("liar.sql")).unwrap().len();
    assert!(written <= 1000, "wrote {written} bytes");
}

/// Headers can only lie per entry (and the zip crate bounds each entry by its declared
/// size), so the archive-wide cap on written bytes is checked on the copy loop directly,
/// with a reader that produces more than any header says.
#[test]
fn written_byte_budget_holds_across_entries_whatever_the_reader_yields() {
    let stop = || false;
    let budget = Budget::new(1 << 20);
    let mut buf = vec![0_u8; 64 << 10];

    let mut first = Vec::new();
    let mut data = std::io::repeat(b'x').take(700 << 10);
    let copied = copy_entry(&mut data, &mut first, 700 << 10, &budget, &stop, &mut buf).unwrap();
    assert_eq!(copied.bytes, 700 << 10);
    assert_eq!(copied.sha256, sha256_hex(&first));
    assert_eq!(copied.crc32, crc32fast::hash(&first));

    let mut second = Vec::new();
    let mut more = std::io::repeat(b'y').take(10 << 20);
    let err = copy_entry(&mut more, &mut second, 10 << 20, &budget, &stop, &mut buf).unwrap_err();
    assert!(matches!(err, CopyError::OverBudget), "{err:?}");
    assert!(first.len() + second.len() <= 1 << 20);

    // A reader that goes on past the declared size is cut off at it.
    let mut third = Vec::new();
    let mut long = std::io::repeat(b'z').take(5000);
    let err = copy_entry(
        &mut long,
        &mut third,
        100,
        &Budget::new(u64::MAX),
        &stop,
        &mut buf,
    )
    .unwrap_err();
    assert!(matches!(err, CopyError::PastDeclaredSize(None)), "{err:?}");
    assert_eq!(third.len(), 100);

    // Another worker's failure stops the copy.
    let stopped = || true;
    let err = copy_entry(
        &mut std::io::repeat(0).take(10),
        &mut Vec::new(),
        10,
        &Budget::new(u64::MAX),
        &stopped,
        &mut buf,
    )
    .unwrap_err();
    assert!(matches!(err, CopyError::Stopped));
}

#[test]
fn duplicate_and_colliding_paths_are_rejected() {
    let mut same_name = build_zip(
        &[FileItem("aaaa.txt", b"1"), FileItem("bbbb.txt", b"2")],
        deflated(),
    );
    rename(&mut same_name, "bbbb.txt", b"aaaa.txt");
    let cases: [(Vec<u8>, &str); 4] = [
        (
            same_name,
            "entry \"aaaa.txt\": the archive holds more than one entry with this name",
        ),
        (
            build_zip(&[FileItem("a", b"1"), Dir("a/")], deflated()),
            "entry \"a/\": a file and a directory have the same path (entry \"a\")",
        ),
        (
            build_zip(&[FileItem("d/x", b"1"), FileItem("d\\x", b"2")], deflated()),
            "entry \"d\\x\": same path as entry \"d/x\"",
        ),
        (
            build_zip(&[FileItem("a", b"1"), FileItem("a/b", b"2")], deflated()),
            "entry \"a/b\": its parent \"a\" is a file entry",
        ),
    ];
    for (zip, message) in cases {
        let scene = Scene::new(&zip);
        let err = scene.extract(&options()).unwrap_err();
        assert!(matches!(err, ExtractError::Duplicate { .. }), "{err:?}");
        assert_eq!(err.to_string(), message);
        assert!(!err.is_corrupt_download());
        assert!(scene.dest_listing().is_empty());
    }
}

#[test]
fn encrypted_entries_are_unsupported() {
    let mut zip = build_zip(&[FileItem("secret.sql", b"select 1;")], stored());
    let entry = headers(&zip)[0];
    set_flags(&mut zip, entry, 1, 0);
    let err = Scene::new(&zip).extract(&options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"secret.sql\": encrypted entries are not supported"
    );
    assert!(!err.is_corrupt_download());
}

#[test]
fn existing_paths_in_dest_are_never_followed_or_overwritten() {
    let zip = build_zip(
        &[
            FileItem("out/evil.txt", b"payload"),
            FileItem("taken.txt", b"new"),
        ],
        deflated(),
    );
    let scene = Scene::new(&zip);
    let outside = TempDir::new().unwrap();
    std::os::unix::fs::symlink(outside.path(), scene.dest.join("out")).unwrap();
    let err = scene.extract(&options()).unwrap_err();
    assert!(matches!(err, ExtractError::Write { .. }), "{err:?}");
    assert!(!err.is_corrupt_download());
    assert!(listing(outside.path()).is_empty());

    let scene = Scene::new(&zip);
    fs::write(scene.dest.join("taken.txt"), b"old").unwrap();
    let err = scene.extract(&options()).unwrap_err();
    assert!(err.to_string().contains("cannot write"), "{err}");
    assert_eq!(fs::read(scene.dest.join("taken.txt")).unwrap(), b"old");
}

#[test]
fn a_cancelled_extraction_stops_and_says_so() {
    let data = b"select 1;\n".repeat(10_000);
    let zip = build_zip(&[FileItem("a.sql", &data)], deflated());
    let scene = Scene::new(&zip);
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let err = scene
        .extract(&ExtractOptions {
            cancel: Some(cancel),
            ..options()
        })
        .unwrap_err();
    assert!(matches!(err, ExtractError::Cancelled), "{err:?}");
    assert!(!err.is_local_io() && !err.is_corrupt_download());
}
