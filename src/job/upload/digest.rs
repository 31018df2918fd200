//! The checksums an upload is confirmed with, computed from the file on disk before it is
//! sent: MD5 (sent as `Content-MD5`, which OSS and S3 check, and compared with the ETag
//! answered) and CRC-64/XZ (compared with OSS's `x-oss-hash-crc64ecma`), for the whole object
//! and for every part of a multipart upload, in one read. Blocking.

use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use md5::Digest as _;
use tokio_util::sync::CancellationToken;

use super::crc64::Crc64;

/// Read size of the digest pass.
const READ_CHUNK: usize = 1 << 20;

/// The checksums of one part (or of a whole single-part object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartDigest {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) md5: [u8; 16],
    pub(crate) crc64: u64,
}

impl PartDigest {
    /// `Content-MD5`: base64 of the binary MD5.
    pub(crate) fn content_md5(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.md5)
    }

    /// The ETag a service answers for it: the lower-case hex MD5.
    pub(crate) fn etag(&self) -> String {
        crate::net::signer::hex_lower(&self.md5)
    }
}

/// The checksums of one file, cut into parts of `part_size` (one part when it fits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileDigest {
    pub(crate) size: u64,
    pub(crate) crc64: u64,
    pub(crate) parts: Vec<PartDigest>,
}

impl FileDigest {
    /// True when the file goes up in one PutObject.
    pub(crate) fn single(&self) -> bool {
        self.parts.len() == 1
    }

    /// The ETag S3 (and compatible stores) answer for this multipart object:
    /// `<hex MD5 of the concatenated binary part MD5s>-<parts>`.
    pub(crate) fn multipart_etag(&self) -> String {
        let mut md5 = md5::Md5::new();
        for part in &self.parts {
            md5.update(part.md5);
        }
        format!(
            "{}-{}",
            crate::net::signer::hex_lower(&md5.finalize()),
            self.parts.len()
        )
    }
}

/// `Content-MD5` of an in-memory body.
pub(crate) fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

/// The part size for a file of `size`: `part_size`, raised when 10,000 parts would not hold
/// the file (the services' limit), to a whole MiB.
pub(crate) fn part_size_for(size: u64, part_size: u64) -> u64 {
    const MAX_PARTS: u64 = 10_000;
    if size.div_ceil(part_size.max(1)) <= MAX_PARTS {
        return part_size.max(1);
    }
    size.div_ceil(MAX_PARTS).div_ceil(1 << 20) * (1 << 20)
}

/// Reads `path` once and computes its checksums. Files up to `part_size` are one part.
pub(crate) fn digest_file(
    path: &Path,
    part_size: u64,
    cancel: &CancellationToken,
) -> std::io::Result<FileDigest> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let part_size = part_size_for(size, part_size);
    let mut whole = Crc64::new();
    let mut parts = Vec::with_capacity(size.div_ceil(part_size).max(1) as usize);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = 0u64;
    loop {
        let len = part_size.min(size - offset);
        let mut md5 = md5::Md5::new();
        let mut crc = Crc64::new();
        let mut remaining = len;
        while remaining > 0 {
            if cancel.is_cancelled() {
                return Err(std::io::Error::other("cancelled"));
            }
            let want = remaining.min(buf.len() as u64) as usize;
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was read",
                ));
            }
            md5.update(&buf[..n]);
            crc.update(&buf[..n]);
            whole.update(&buf[..n]);
            remaining -= n as u64;
        }
        parts.push(PartDigest {
            offset,
            len,
            md5: md5.finalize().into(),
            crc64: crc.value(),
        });
        offset += len;
        if offset >= size {
            break;
        }
    }
    Ok(FileDigest {
        size,
        crc64: whole.value(),
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_digests_and_the_multipart_etag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..250_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let cancel = CancellationToken::new();
        let digest = digest_file(&path, 100_000, &cancel).unwrap();
        assert_eq!(digest.size, 250_000);
        assert_eq!(
            digest
                .parts
                .iter()
                .map(|p| (p.offset, p.len))
                .collect::<Vec<_>>(),
            [(0, 100_000), (100_000, 100_000), (200_000, 50_000)]
        );
        assert_eq!(digest.crc64, super::super::crc64::checksum(&data));
        assert_eq!(
            digest.parts[1].content_md5(),
            content_md5(&data[100_000..200_000])
        );
        // S3's multipart ETag, computed the way S3 documents it.
        let mut concat = Vec::new();
        for chunk in data.chunks(100_000) {
            concat.extend_from_slice(&md5::Md5::digest(chunk));
        }
        assert_eq!(
            digest.multipart_etag(),
            format!(
                "{}-3",
                crate::net::signer::hex_lower(&md5::Md5::digest(&concat))
            )
        );
        let single = digest_file(&path, 1 << 20, &cancel).unwrap();
        assert!(single.single());
        assert_eq!(
            single.parts[0].etag(),
            crate::net::signer::hex_lower(&md5::Md5::digest(&data))
        );
        // "hello dmstrack\n", the reference's Content-MD5 example.
        assert_eq!(content_md5(b"hello dmstrack\n"), "2aNe9mQoZzzVzFdITucTxQ==");
        std::fs::write(&path, b"").unwrap();
        let empty = digest_file(&path, 100, &cancel).unwrap();
        assert_eq!((empty.size, empty.parts.len()), (0, 1));
    }

    #[test]
    fn the_part_size_grows_past_ten_thousand_parts() {
        assert_eq!(part_size_for(100 << 20, 64 << 20), 64 << 20);
        let huge = 1u64 << 40; // 1 TiB
        let size = part_size_for(huge, 64 << 20);
        assert!(huge.div_ceil(size) <= 10_000 && size.is_multiple_of(1 << 20));
    }
}
