//! End-to-end tests of zip extraction against zips built in the test, some doctored byte by
//! byte into shapes `ZipWriter` refuses to produce (escaping names, lying sizes, bad CRCs):
//! the shared builders and doctoring helpers, and one file per subject.

mod damaged;
mod faithful;
mod names;
mod refused;
mod throughput;
mod write_errors;

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

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
        cancel: None,
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
