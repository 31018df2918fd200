//! The checksums an upload is confirmed with, computed from the file on disk before each part
//! is sent: MD5 (sent as `Content-MD5`, which OSS and S3 check, and compared with the ETag
//! answered) and CRC-64/XZ (compared with OSS's `x-oss-hash-crc64ecma`), per part and, by
//! combining the parts', for the whole object. Blocking.

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
    /// CRC-32 (ISO-HDLC), sent to S3 as `x-amz-checksum-crc32`.
    pub(crate) crc32: u32,
}

impl PartDigest {
    /// `x-amz-checksum-crc32`: base64 of the big-endian CRC-32.
    pub(crate) fn checksum_crc32(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.crc32.to_be_bytes())
    }

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

    /// The `ChecksumCRC32` S3 answers for this multipart object (`COMPOSITE`): the CRC-32 of
    /// the concatenated big-endian part CRCs, base64, `-<parts>`.
    pub(crate) fn composite_crc32(&self) -> String {
        let mut crc = crc32fast::Hasher::new();
        for part in &self.parts {
            crc.update(&part.crc32.to_be_bytes());
        }
        format!(
            "{}-{}",
            base64::engine::general_purpose::STANDARD.encode(crc.finalize().to_be_bytes()),
            self.parts.len()
        )
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

/// Where the parts of a file of `size` lie, `(offset, len)`: one part when it fits in
/// `part_size` (already adjusted by [`part_size_for`]), one empty part for an empty file.
pub(crate) fn part_ranges(size: u64, part_size: u64) -> Vec<(u64, u64)> {
    let part_size = part_size.max(1);
    let mut ranges = Vec::with_capacity(size.div_ceil(part_size).max(1) as usize);
    let mut offset = 0u64;
    loop {
        let len = part_size.min(size - offset);
        ranges.push((offset, len));
        offset += len;
        if offset >= size {
            return ranges;
        }
    }
}

/// Reads `len` bytes of `path` from `offset` and computes their checksums. Blocking.
pub(crate) fn digest_part(
    path: &Path,
    offset: u64,
    len: u64,
    cancel: &CancellationToken,
) -> std::io::Result<PartDigest> {
    use std::io::Seek as _;
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut md5 = md5::Md5::new();
    let mut crc = Crc64::new();
    let mut crc32 = crc32fast::Hasher::new();
    let mut buf = vec![0u8; READ_CHUNK.min(len.max(1) as usize)];
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
        crc32.update(&buf[..n]);
        remaining -= n as u64;
    }
    Ok(PartDigest {
        offset,
        len,
        md5: md5.finalize().into(),
        crc64: crc.value(),
        crc32: crc32.finalize(),
    })
}

impl FileDigest {
    /// The digest of a file from its parts' digests, in order (the whole CRC-64 is combined
    /// from the parts', as OSS does for a multipart object).
    pub(crate) fn from_parts(size: u64, parts: Vec<PartDigest>) -> Self {
        let crc64 = super::crc64::combine_parts(parts.iter().map(|p| (p.crc64, p.len)));
        Self { size, crc64, parts }
    }
}

/// Reads `path` and computes its checksums, part by part. Files up to `part_size` are one
/// part. Blocking.
pub(crate) fn digest_file(
    path: &Path,
    part_size: u64,
    cancel: &CancellationToken,
) -> std::io::Result<FileDigest> {
    let size = std::fs::metadata(path)?.len();
    let parts = part_ranges(size, part_size_for(size, part_size))
        .into_iter()
        .map(|(offset, len)| digest_part(path, offset, len, cancel))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(FileDigest::from_parts(size, parts))
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
    fn crc32_checksums_as_s3_spells_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"123456789").unwrap();
        let cancel = CancellationToken::new();
        // The CRC-32 check value 0xCBF43926, big-endian, base64.
        let part = digest_part(&path, 0, 9, &cancel).unwrap();
        assert_eq!(part.checksum_crc32(), "y/Q5Jg==");
        // Composite: the CRC of the parts' CRCs, with the count (the `crc` crate as oracle).
        let oracle = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
        let digest = digest_file(&path, 4, &cancel).unwrap();
        let mut concat = Vec::new();
        for chunk in b"123456789".chunks(4) {
            concat.extend_from_slice(&oracle.checksum(chunk).to_be_bytes());
        }
        let expected = base64::engine::general_purpose::STANDARD
            .encode(oracle.checksum(&concat).to_be_bytes());
        assert_eq!(digest.composite_crc32(), format!("{expected}-3"));
    }

    #[test]
    fn part_ranges_cover_the_file_once() {
        assert_eq!(part_ranges(0, 10), [(0, 0)]);
        assert_eq!(part_ranges(10, 10), [(0, 10)]);
        assert_eq!(part_ranges(20, 10), [(0, 10), (10, 10)]);
        assert_eq!(part_ranges(25, 10), [(0, 10), (10, 10), (20, 5)]);
        // A part read on its own has the checksums of that slice.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let part = digest_part(&path, 1_500_000, 1_400_000, &CancellationToken::new()).unwrap();
        assert_eq!(
            part.md5,
            <[u8; 16]>::from(md5::Md5::digest(&data[1_500_000..2_900_000]))
        );
        assert_eq!(
            part.crc64,
            super::super::crc64::checksum(&data[1_500_000..2_900_000])
        );
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        assert!(digest_part(&path, 0, 10, &cancelled).is_err());
    }

    #[test]
    fn the_part_size_grows_past_ten_thousand_parts() {
        assert_eq!(part_size_for(100 << 20, 64 << 20), 64 << 20);
        let huge = 1u64 << 40; // 1 TiB
        let size = part_size_for(huge, 64 << 20);
        assert!(huge.div_ceil(size) <= 10_000 && size.is_multiple_of(1 << 20));
    }
}
