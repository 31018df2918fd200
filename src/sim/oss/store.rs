//! What the OSS simulator stores: objects and multipart-upload parts, each kept in memory when
//! small and in a temp file of the simulator's own directory otherwise, so uploading big zips
//! keeps memory bounded. Content arrives through a `BodySink`, which hashes (MD5, CRC-64/XZ)
//! as it writes.
//!
//! File I/O is plain `std::fs` on the calling task, deliberately: see `body.rs` for why the
//! simulator never waits on the blocking pool.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use md5::Digest as _;
use tempfile::TempPath;

use super::reply::upper_hex;

/// Content up to this size stays in memory; bigger content goes to a temp file.
pub(super) const SPILL_THRESHOLD: usize = 1024 * 1024;

/// OSS's smallest part size for every part but the last, checked at Complete (100 KB).
pub(super) const MIN_PART_SIZE: u64 = 100 * 1024;

/// Content bytes, in memory or in a temp file (deleted when the last holder drops it).
#[derive(Clone)]
pub(super) enum Data {
    Memory(Bytes),
    File { path: Arc<TempPath>, len: u64 },
}

impl fmt::Debug for Data {
    /// The content is left out: objects can be tens of MiB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(data) => f.debug_struct("Memory").field("len", &data.len()).finish(),
            Self::File { len, .. } => f.debug_struct("File").field("len", len).finish(),
        }
    }
}

impl Data {
    pub(super) fn len(&self) -> u64 {
        match self {
            Self::Memory(data) => data.len() as u64,
            Self::File { len, .. } => *len,
        }
    }

    /// Bytes `[start, end)` as an in-memory slice, or an open file positioned at `start`.
    pub(super) fn open_range(&self, start: u64, end: u64) -> io::Result<RangeSource> {
        match self {
            Self::Memory(data) => Ok(RangeSource::Memory(
                data.slice(start as usize..end as usize),
            )),
            Self::File { path, .. } => {
                let mut file = File::open(path.as_ref() as &Path)?;
                file.seek(SeekFrom::Start(start))?;
                Ok(RangeSource::File(file, end - start))
            }
        }
    }

    /// The whole content (test accessors only: it may be big).
    pub(super) fn read_all(&self) -> io::Result<Vec<u8>> {
        match self {
            Self::Memory(data) => Ok(data.to_vec()),
            Self::File { path, .. } => std::fs::read(path.as_ref() as &Path),
        }
    }

    /// Appends the content to `sink`.
    pub(super) fn copy_into(&self, sink: &mut BodySink<'_>) -> io::Result<()> {
        match self {
            Self::Memory(data) => sink.write(data),
            Self::File { path, .. } => {
                let mut file = File::open(path.as_ref() as &Path)?;
                let mut buf = vec![0; 256 * 1024];
                loop {
                    let read = file.read(&mut buf)?;
                    if read == 0 {
                        return Ok(());
                    }
                    sink.write(&buf[..read])?;
                }
            }
        }
    }
}

/// A readable range of [`Data`].
#[derive(Debug)]
pub(super) enum RangeSource {
    Memory(Bytes),
    File(File, u64),
}

/// Content being received: hashed as it comes, spilled to a temp file past the threshold.
pub(super) struct BodySink<'a> {
    dir: &'a Path,
    memory: Vec<u8>,
    file: Option<(File, TempPath)>,
    md5: md5::Md5,
    crc: crc64fast::Digest,
    len: u64,
}

/// What a finished [`BodySink`] holds.
#[derive(Debug, Clone)]
pub(super) struct Received {
    pub(super) data: Data,
    pub(super) md5: [u8; 16],
    pub(super) crc64: u64,
}

impl fmt::Debug for BodySink<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodySink")
            .field("len", &self.len)
            .field("on_disk", &self.file.is_some())
            .finish()
    }
}

impl<'a> BodySink<'a> {
    pub(super) fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            memory: Vec::new(),
            file: None,
            md5: md5::Md5::new(),
            crc: crc64fast::Digest::new(),
            len: 0,
        }
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.md5.update(chunk);
        self.crc.write(chunk);
        self.len += chunk.len() as u64;
        match &mut self.file {
            Some((file, _)) => file.write_all(chunk),
            None => {
                self.memory.extend_from_slice(chunk);
                if self.memory.len() > SPILL_THRESHOLD {
                    let (mut file, path) = tempfile::NamedTempFile::new_in(self.dir)?.into_parts();
                    file.write_all(&self.memory)?;
                    self.memory = Vec::new();
                    self.file = Some((file, path));
                }
                Ok(())
            }
        }
    }

    pub(super) fn finish(self) -> io::Result<Received> {
        let data = match self.file {
            Some((mut file, path)) => {
                file.flush()?;
                Data::File {
                    path: Arc::new(path),
                    len: self.len,
                }
            }
            None => Data::Memory(Bytes::from(self.memory)),
        };
        Ok(Received {
            data,
            md5: self.md5.finalize().into(),
            crc64: self.crc.sum64(),
        })
    }
}

/// `Normal` (PutObject) or `Multipart` (CompleteMultipartUpload), as `x-oss-object-type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// Written by one PutObject.
    Normal,
    /// Assembled by CompleteMultipartUpload.
    Multipart,
}

impl ObjectType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Multipart => "Multipart",
        }
    }
}

/// One stored object.
#[derive(Debug, Clone)]
pub(super) struct StoredObject {
    pub(super) data: Data,
    /// The `ETag` without quotes: MD5 hex (upper case), or `<hex>-<N>` for multipart.
    pub(super) etag: String,
    pub(super) crc64: u64,
    pub(super) send_crc: bool,
    pub(super) object_type: ObjectType,
    pub(super) content_type: String,
    pub(super) last_modified: jiff::Timestamp,
}

impl StoredObject {
    /// An object written whole (PutObject, or the test accessors).
    pub(super) fn normal(
        received: Received,
        content_type: &str,
        send_crc: bool,
        now: jiff::Timestamp,
    ) -> Self {
        Self {
            etag: upper_hex(&received.md5),
            crc64: received.crc64,
            data: received.data,
            send_crc,
            object_type: ObjectType::Normal,
            content_type: content_type.to_owned(),
            last_modified: now,
        }
    }

    /// An in-memory object from bytes.
    pub(super) fn from_bytes(data: Bytes, send_crc: bool, now: jiff::Timestamp) -> Self {
        let md5: [u8; 16] = md5::Md5::digest(&data).into();
        let mut crc = crc64fast::Digest::new();
        crc.write(&data);
        let received = Received {
            data: Data::Memory(data),
            md5,
            crc64: crc.sum64(),
        };
        Self::normal(received, super::OBJECT_CONTENT_TYPE, send_crc, now)
    }

    pub(super) fn len(&self) -> u64 {
        self.data.len()
    }

    pub(super) fn info(&self) -> super::ObjectInfo {
        super::ObjectInfo {
            etag: format!("\"{}\"", self.etag),
            crc64ecma: self.crc64,
            len: self.len(),
        }
    }
}

/// One uploaded part.
#[derive(Debug, Clone)]
pub(super) struct Part {
    pub(super) data: Data,
    pub(super) md5: [u8; 16],
    pub(super) crc64: u64,
    pub(super) last_modified: jiff::Timestamp,
}

impl Part {
    pub(super) fn etag(&self) -> String {
        upper_hex(&self.md5)
    }
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub(super) struct Upload {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) content_type: String,
    pub(super) initiated: jiff::Timestamp,
    pub(super) parts: BTreeMap<u32, Part>,
}
