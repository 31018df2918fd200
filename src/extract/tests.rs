//! End-to-end tests of zip extraction against zips built in the test, some doctored byte by
//! byte into shapes `ZipWriter` refuses to produce (escaping names, lying sizes, bad CRCs).

use std::fmt::Write as _;
use std::fs;
use std::io::{Cursor, Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use tempfile::TempDir;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::unpack::{Budget, CopyError, copy_entry};
use super::*;
use crate::net::signer::sha256_hex;

/// One entry of a test zip.
enum Item<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
}
use Item::{Dir, File as FileItem};

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

fn stored() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Stored)
}

fn build_zip(items: &[Item<'_>], options: SimpleFileOptions) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for item in items {
        match item {
            FileItem(name, data) => {
                writer.start_file(*name, options).unwrap();
                writer.write_all(data).unwrap();
            }
            Dir(name) => writer.add_directory(*name, options).unwrap(),
        }
    }
    writer.finish().unwrap().into_inner()
}

fn options() -> ExtractOptions {
    ExtractOptions {
        max_entries: 1000,
        max_unpacked_bytes: 1 << 30,
        threads: 2,
        sync: false,
    }
}

/// A zip file in its own folder, and an empty `dest` that is the only thing in `root`, so
/// anything written outside `dest` shows up in `root`.
struct Scene {
    _zip_dir: TempDir,
    zip: PathBuf,
    root: TempDir,
    dest: PathBuf,
}

impl Scene {
    fn new(zip_bytes: &[u8]) -> Self {
        let zip_dir = TempDir::new().unwrap();
        let zip = zip_dir.path().join("export.zip.part");
        fs::write(&zip, zip_bytes).unwrap();
        let root = TempDir::new().unwrap();
        let dest = root.path().join("staging");
        fs::create_dir(&dest).unwrap();
        Self {
            _zip_dir: zip_dir,
            zip,
            root,
            dest,
        }
    }

    fn extract(&self, options: &ExtractOptions) -> Result<ExtractReport, ExtractError> {
        extract_zip(&self.zip, &self.dest, options)
    }

    /// Names in `root`: must be just the staging folder.
    fn root_listing(&self) -> Vec<String> {
        listing(self.root.path())
    }

    fn dest_listing(&self) -> Vec<String> {
        listing(&self.dest)
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---- byte-level doctoring of a written zip ----

/// Offsets of one entry's central-directory header and local header.
#[derive(Debug, Clone, Copy)]
struct Headers {
    central: usize,
    local: usize,
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Walks the central directory of a non-zip64 archive.
fn headers(zip: &[u8]) -> Vec<Headers> {
    let eocd = zip.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let count = u16_at(zip, eocd + 10);
    let mut central = u32_at(zip, eocd + 16) as usize;
    let mut found = Vec::new();
    for _ in 0..count {
        assert_eq!(&zip[central..central + 4], b"PK\x01\x02");
        let local = u32_at(zip, central + 42) as usize;
        assert_eq!(&zip[local..local + 4], b"PK\x03\x04");
        found.push(Headers { central, local });
        central += 46
            + usize::from(u16_at(zip, central + 28))
            + usize::from(u16_at(zip, central + 30))
            + usize::from(u16_at(zip, central + 32));
    }
    found
}

/// Replaces a placeholder name in both headers with `name` of the same length.
fn rename(zip: &mut [u8], placeholder: &str, name: &[u8]) {
    assert_eq!(
        placeholder.len(),
        name.len(),
        "renames must keep the length"
    );
    let at: Vec<usize> = zip
        .windows(placeholder.len())
        .enumerate()
        .filter(|(_, w)| *w == placeholder.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        2,
        "placeholder must appear in the local and central header"
    );
    for i in at {
        zip[i..i + name.len()].copy_from_slice(name);
    }
}

fn set_flags(zip: &mut [u8], entry: Headers, set: u16, clear: u16) {
    for at in [entry.central + 8, entry.local + 6] {
        let flags = (u16_at(zip, at) | set) & !clear;
        put_u16(zip, at, flags);
    }
}

fn set_crc(zip: &mut [u8], entry: Headers, crc: u32) {
    put_u32(zip, entry.central + 16, crc);
    put_u32(zip, entry.local + 14, crc);
}

fn set_uncompressed_size(zip: &mut [u8], entry: Headers, size: u32) {
    put_u32(zip, entry.central + 24, size);
    put_u32(zip, entry.local + 22, size);
}

/// Start of an entry's data (after its local header).
fn data_start(zip: &[u8], entry: Headers) -> usize {
    entry.local
        + 30
        + usize::from(u16_at(zip, entry.local + 26))
        + usize::from(u16_at(zip, entry.local + 28))
}

const UTF8_FLAG: u16 = 1 << 11;
const DATA_DESCRIPTOR_FLAG: u16 = 1 << 3;

// ---- refused content ----

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
    let stop = AtomicBool::new(false);
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
    let stopped = AtomicBool::new(true);
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

// ---- damaged downloads ----

#[test]
fn wrong_crc_is_a_corrupt_download() {
    let mut zip = build_zip(
        &[FileItem("a.sql", b"insert into t values (1);\n")],
        deflated(),
    );
    let entry = headers(&zip)[0];
    set_crc(&mut zip, entry, 0xdead_beef);
    let err = Scene::new(&zip).extract(&options()).unwrap_err();
    assert!(matches!(err, ExtractError::CorruptEntry { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("entry \"a.sql\": CRC-32 mismatch: stored deadbeef, computed "),
        "{err}"
    );
    assert!(err.is_corrupt_download());
}

#[test]
fn damaged_entry_data_is_a_corrupt_download() {
    let text: Vec<u8> = (0..20_000_u32)
        .flat_map(|i| format!("insert into t values ({i}, 'row {i}');\n").into_bytes())
        .collect();
    for options_used in [stored(), deflated()] {
        let mut zip = build_zip(&[FileItem("rows.sql", &text)], options_used);
        let entry = headers(&zip)[0];
        let middle = data_start(&zip, entry) + 200;
        for byte in &mut zip[middle..middle + 16] {
            *byte ^= 0x5a;
        }
        let err = Scene::new(&zip).extract(&options()).unwrap_err();
        assert!(matches!(err, ExtractError::CorruptEntry { .. }), "{err:?}");
        assert!(err.is_corrupt_download(), "{err}");
        assert!(err.to_string().starts_with("entry \"rows.sql\": "), "{err}");
    }
}

#[test]
fn truncated_zip_is_a_corrupt_download() {
    let zip = build_zip(
        &[FileItem("a.sql", &[b'x'; 10_000]), FileItem("b.sql", b"y")],
        deflated(),
    );
    for keep in [zip.len() / 2, zip.len() - 10, 0] {
        let err = Scene::new(&zip[..keep]).extract(&options()).unwrap_err();
        assert!(
            matches!(err, ExtractError::BadArchive { .. }),
            "{keep}: {err:?}"
        );
        assert!(err.is_corrupt_download(), "{err}");
    }
}

// ---- faithful extraction ----

/// Checks the report against `expected` and every file on disk against the report.
fn assert_extracted(scene: &Scene, report: &ExtractReport, expected: &[(&str, &[u8])]) {
    let mut want: Vec<ExtractedFile> = expected
        .iter()
        .map(|(path, data)| ExtractedFile {
            path: (*path).to_owned(),
            bytes: data.len() as u64,
            sha256: sha256_hex(data),
        })
        .collect();
    want.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(report.files, want);
    assert_eq!(
        report.unpacked_bytes,
        expected.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
    );
    for (path, data) in expected {
        assert_eq!(fs::read(scene.dest.join(path)).unwrap(), *data, "{path}");
    }
}

#[test]
fn data_descriptor_entries_extract_byte_identical() {
    let big: Vec<u8> = (0..300_000_u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut writer = ZipWriter::new_stream(Vec::new());
    writer.start_file("big.bin", deflated()).unwrap();
    writer.write_all(&big).unwrap();
    writer.start_file("dir/small.txt", stored()).unwrap();
    writer.write_all(b"small").unwrap();
    let zip = writer.finish().unwrap().into_inner();
    let flags = u16_at(&zip, headers(&zip)[0].central + 8);
    assert_ne!(
        flags & DATA_DESCRIPTOR_FLAG,
        0,
        "fixture must use data descriptors"
    );

    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(
        &scene,
        &report,
        &[("big.bin", &big), ("dir/small.txt", b"small")],
    );
    assert_eq!(report.dirs, ["dir"]);
    assert_eq!(report.entries, 2);
}

#[test]
fn zip64_entries_extract_byte_identical() {
    let data = b"zip64 payload\n".repeat(1000);
    let zip = build_zip(
        &[FileItem("a.sql", &data), FileItem("b.sql", b"")],
        deflated().large_file(true),
    );
    // The zip64 extended-information extra field (id 0x0001) must be present.
    let entry = headers(&zip)[0];
    let name_len = usize::from(u16_at(&zip, entry.local + 26));
    assert_eq!(u16_at(&zip, entry.local + 30 + name_len), 0x0001);

    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[("a.sql", &data), ("b.sql", b"")]);
}

#[test]
fn chinese_names_survive_with_and_without_the_utf8_flag() {
    let one = "数据/订单表.sql";
    let two = "报表/汇总.csv";
    let mut zip = build_zip(
        &[FileItem(one, b"select 1;"), FileItem(two, b"a,b\n")],
        deflated(),
    );
    let all = headers(&zip);
    let flags = |zip: &[u8], i: usize| u16_at(zip, all[i].central + 8);
    assert_ne!(
        flags(&zip, 1) & UTF8_FLAG,
        0,
        "the writer flags non-ASCII names"
    );
    // What Java and Windows writers produce: UTF-8 bytes, no flag.
    set_flags(&mut zip, all[1], 0, UTF8_FLAG);
    assert_eq!(flags(&zip, 1) & UTF8_FLAG, 0);

    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[(one, b"select 1;"), (two, b"a,b\n")]);
    assert_eq!(report.dirs, ["报表", "数据"]);
}

#[test]
fn legacy_cp437_names_are_decoded_and_false_utf8_flags_rejected() {
    let mut zip = build_zip(&[FileItem("Xber.txt", b"cp437")], stored());
    // 0x81 is "ü" in CP437 and invalid as UTF-8.
    rename(&mut zip, "Xber.txt", b"\x81ber.txt");
    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[("über.txt", b"cp437")]);

    let entry = headers(&zip)[0];
    set_flags(&mut zip, entry, UTF8_FLAG, 0);
    let err = Scene::new(&zip).extract(&options()).unwrap_err();
    assert!(matches!(err, ExtractError::UnsafeName { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "entry \"\u{fffd}ber.txt\": name is flagged as UTF-8 but is not valid UTF-8"
    );
}

#[test]
fn nested_and_empty_folders_are_created() {
    let zip = build_zip(
        &[
            Dir("empty/"),
            Dir("a/b/c/"),
            FileItem("a/b/c/d.txt", b"deep"),
            FileItem("x/y/z.txt", b"implicit parents"),
            FileItem("top.txt", b""),
        ],
        deflated(),
    );
    let scene = Scene::new(&zip);
    let report = scene
        .extract(&ExtractOptions {
            sync: true,
            ..options()
        })
        .unwrap();
    assert_extracted(
        &scene,
        &report,
        &[
            ("a/b/c/d.txt", b"deep"),
            ("x/y/z.txt", b"implicit parents"),
            ("top.txt", b""),
        ],
    );
    assert_eq!(report.dirs, ["a", "a/b", "a/b/c", "empty", "x", "x/y"]);
    assert_eq!(report.entries, 5);
    assert!(scene.dest.join("empty").is_dir());
    assert!(listing(&scene.dest.join("empty")).is_empty());
    assert_eq!(scene.root_listing(), ["staging"]);
}

#[test]
fn parallel_extraction_matches_single_threaded() {
    let contents: Vec<(String, Vec<u8>)> = (0..12_u32)
        .map(|i| {
            let rows = 1 + (i * 3_000) % 17_000;
            let text = (0..rows)
                .flat_map(|r| format!("insert into t{i} values ({r}, 'v{r}');\n").into_bytes())
                .collect();
            (format!("part{}/t{i}.sql", i % 3), text)
        })
        .collect();
    let items: Vec<Item<'_>> = contents
        .iter()
        .map(|(name, data)| FileItem(name, data))
        .collect();
    let zip = build_zip(&items, deflated());
    let expected: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(name, data)| (name.as_str(), data.as_slice()))
        .collect();

    let serial = Scene::new(&zip);
    let one = serial
        .extract(&ExtractOptions {
            threads: 1,
            ..options()
        })
        .unwrap();
    let parallel = Scene::new(&zip);
    let four = parallel
        .extract(&ExtractOptions {
            threads: 4,
            ..options()
        })
        .unwrap();
    let all_cores = Scene::new(&zip);
    let auto = all_cores
        .extract(&ExtractOptions {
            threads: 0,
            ..options()
        })
        .unwrap();
    assert_eq!(one, four);
    assert_eq!(one, auto);
    assert_extracted(&parallel, &four, &expected);
    assert_eq!(four.dirs, ["part0", "part1", "part2"]);
}

#[test]
fn synced_extraction_is_faithful_past_the_flush_queue() {
    // More files than the flusher's queue holds, so workers also sync inline when it is full.
    let contents: Vec<(String, Vec<u8>)> = (0..40_u32)
        .map(|i| {
            let text = format!("select {i};\n").repeat(1 + i as usize * 50);
            (format!("many/{i}.sql"), text.into_bytes())
        })
        .collect();
    let items: Vec<Item<'_>> = contents
        .iter()
        .map(|(name, data)| FileItem(name, data))
        .collect();
    let zip = build_zip(&items, deflated());
    let expected: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(name, data)| (name.as_str(), data.as_slice()))
        .collect();

    for threads in [1, 2] {
        let synced = Scene::new(&zip);
        let report = synced
            .extract(&ExtractOptions {
                threads,
                sync: true,
                ..options()
            })
            .unwrap();
        assert_extracted(&synced, &report, &expected);
        let unsynced = Scene::new(&zip);
        let plain = unsynced
            .extract(&ExtractOptions {
                threads,
                ..options()
            })
            .unwrap();
        assert_eq!(report, plain, "threads={threads}");
    }
}

#[test]
fn empty_archive_extracts_to_nothing() {
    let scene = Scene::new(&build_zip(&[], deflated()));
    let report = scene.extract(&options()).unwrap();
    assert_eq!(
        report,
        ExtractReport {
            files: Vec::new(),
            dirs: Vec::new(),
            entries: 0,
            unpacked_bytes: 0,
        }
    );
}

// ---- throughput ----

/// The benchmark from the brief: 512 MiB of SQL in 8 deflated files, against `unzip -q`.
/// Run: `cargo test --release --lib extract::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn throughput_512_mib_of_sql_in_8_deflated_files() {
    use std::time::Instant;

    const FILES: usize = 8;
    const FILE_BYTES: usize = 64 << 20;
    let work = TempDir::new().unwrap();
    let zip_path = work.path().join("export.zip");
    let started = Instant::now();
    let mut writer = ZipWriter::new(std::io::BufWriter::new(
        fs::File::create(&zip_path).unwrap(),
    ));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for f in 0..FILES {
        writer
            .start_file(format!("x_REDO_31201_207/table_{f}.sql"), deflated())
            .unwrap();
        let mut written = 0;
        let mut row = 0_u64;
        let mut chunk = String::with_capacity(1 << 20);
        while written < FILE_BYTES {
            chunk.clear();
            while chunk.len() < (1 << 20) - 200 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                row += 1;
                let _ = writeln!(
                    chunk,
                    "INSERT INTO `orders_{f}` (`id`, `user_id`, `amount`, `status`, `note`) VALUES ({row}, {}, {}.{:02}, '{}', 'order note {:x}');",
                    seed >> 44,
                    (seed >> 20) % 100_000,
                    (seed >> 8) % 100,
                    ["PAID", "REFUNDED", "SHIPPED", "NEW"][(seed % 4) as usize],
                    seed >> 24,
                );
            }
            let take = chunk.len().min(FILE_BYTES - written);
            writer.write_all(&chunk.as_bytes()[..take]).unwrap();
            written += take;
        }
    }
    writer.finish().unwrap();
    let zip_len = fs::metadata(&zip_path).unwrap().len();
    eprintln!(
        "sample: {} MiB in {FILES} files, zip {} MiB, built in {:.1?}",
        (FILES * FILE_BYTES) >> 20,
        zip_len >> 20,
        started.elapsed()
    );

    let total = (FILES * FILE_BYTES) as u64;
    for (threads, sync) in [(0, false), (1, false), (0, true)] {
        let dest = work.path().join(format!("dest-{threads}-{sync}"));
        fs::create_dir(&dest).unwrap();
        // Reset the peak-RSS counter so VmHWM measures this extraction alone.
        fs::write("/proc/self/clear_refs", "5").unwrap();
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let report = extract_zip(
            &zip_path,
            &dest,
            &ExtractOptions {
                threads,
                sync,
                ..options()
            },
        )
        .unwrap();
        let elapsed = started.elapsed();
        let cpu = cpu_seconds().0 - cpu_before.0;
        let peak = fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
            .unwrap();
        assert_eq!(report.unpacked_bytes, total);
        eprintln!(
            "extract_zip threads={threads} sync={sync}: {elapsed:.2?}, {:.0} MiB/s, \
             {cpu:.2} CPU-s, peak RSS {peak}",
            (total >> 20) as f64 / elapsed.as_secs_f64()
        );
        fs::remove_dir_all(&dest).unwrap();
    }

    let dest = work.path().join("dest-unzip");
    let children_before = cpu_seconds().1;
    let started = Instant::now();
    let status = std::process::Command::new("unzip")
        .arg("-q")
        .arg(&zip_path)
        .arg("-d")
        .arg(&dest)
        .status();
    match status {
        Ok(status) if status.success() => {
            let elapsed = started.elapsed();
            let cpu = cpu_seconds().1 - children_before;
            eprintln!(
                "unzip -q: {elapsed:.2?}, {:.0} MiB/s, {cpu:.2} CPU-s",
                (total >> 20) as f64 / elapsed.as_secs_f64()
            );
        }
        other => eprintln!("unzip -q not run: {other:?}"),
    }
}

/// (this process, its waited-for children) CPU seconds, user + system, from
/// `/proc/self/stat` (in USER_HZ ticks, 100 per second on Linux).
fn cpu_seconds() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name, which may contain spaces.
    let fields: Vec<f64> = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14..=17, i.e. 11..=14 after the name.
    (
        (fields[11] + fields[12]) / 100.0,
        (fields[13] + fields[14]) / 100.0,
    )
}
