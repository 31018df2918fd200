//! The `.part` file of a download: the meta beside it (ETag and size, so a resume happens only
//! for an unchanged object) and the blocking writer that re-hashes a kept prefix and appends
//! and hashes what arrives. Everything here blocks; the caller runs it off the async workers.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use super::FetchError;

/// What is remembered next to a `.part` file, so a later attempt (or run) can resume only
/// when the object is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct PartMeta {
    pub(super) etag: Option<String>,
    pub(super) total: u64,
}

pub(super) fn meta_path(part: &Path) -> PathBuf {
    let mut name = part.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

pub(super) fn read_meta(part: &Path) -> Option<PartMeta> {
    serde_json::from_slice(&std::fs::read(meta_path(part)).ok()?).ok()
}

pub(super) fn write_meta(part: &Path, meta: &PartMeta) -> std::io::Result<()> {
    std::fs::write(
        meta_path(part),
        serde_json::to_vec(meta).expect("meta serializes"),
    )
}

/// Deletes a part file and its meta (missing files are fine). Blocking.
pub fn remove_part(part: &Path) {
    let _ = std::fs::remove_file(part);
    let _ = std::fs::remove_file(meta_path(part));
}

/// [`remove_part`] on a blocking thread.
pub async fn remove_part_off_loop(part: &Path) {
    let part = part.to_owned();
    let _ = tokio::task::spawn_blocking(move || remove_part(&part)).await;
}

/// A chunk on its way to the writer, holding its share of the queue's byte budget.
pub(super) type QueuedChunk = (bytes::Bytes, tokio::sync::OwnedSemaphorePermit);

pub(super) struct Digests {
    pub(super) bytes: u64,
    pub(super) crc64: u64,
    pub(super) sha256: String,
}

/// The blocking side: re-hashes the kept prefix on resume, then appends and hashes chunks.
pub(super) struct PartWriter {
    path: PathBuf,
    file: std::fs::File,
    crc: crc64fast::Digest,
    sha: sha2::Sha256,
    bytes: u64,
}

impl PartWriter {
    /// Opens `path`, keeps its first `keep` bytes and hashes them. Blocking; stops early (with
    /// [`FetchError::Cancelled`]) when `stop` is cancelled.
    pub(super) fn open(
        path: &Path,
        keep: u64,
        stop: &CancellationToken,
    ) -> Result<Self, FetchError> {
        let io = |op, source| FetchError::Io {
            op,
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io("open", e))?;
        file.set_len(keep).map_err(|e| io("truncate", e))?;
        let mut writer = Self {
            path: path.to_owned(),
            file: file.try_clone().map_err(|e| io("open", e))?,
            crc: crc64fast::Digest::new(),
            sha: sha2::Sha256::new(),
            bytes: 0,
        };
        // CRC-64 and SHA-256 cover the whole file, so the kept prefix is hashed again.
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| io("read", e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut remaining = keep;
        while remaining > 0 {
            if stop.is_cancelled() {
                return Err(FetchError::Cancelled);
            }
            let want = remaining.min(buf.len() as u64) as usize;
            let n = file.read(&mut buf[..want]).map_err(|e| io("read", e))?;
            if n == 0 {
                return Err(io(
                    "read",
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "part file shrank"),
                ));
            }
            writer.crc.write(&buf[..n]);
            writer.sha.update(&buf[..n]);
            writer.bytes += n as u64;
            remaining -= n as u64;
        }
        writer
            .file
            .seek(std::io::SeekFrom::Start(keep))
            .map_err(|e| io("seek", e))?;
        Ok(writer)
    }

    /// Appends and hashes queued chunks until the queue closes; never writes past `total`.
    pub(super) fn run(
        mut self,
        mut rx: tokio::sync::mpsc::Receiver<QueuedChunk>,
        written: &AtomicU64,
        total: u64,
    ) -> Result<Digests, FetchError> {
        let io = |op, path: &Path, source| FetchError::Io {
            op,
            path: path.to_owned(),
            source,
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &self.file);
        // The permit is released once the chunk is written and hashed.
        while let Some((chunk, _permit)) = rx.blocking_recv() {
            if self.bytes + chunk.len() as u64 > total {
                return Err(io(
                    "write",
                    &self.path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the server sent more than the {total} bytes it announced"),
                    ),
                ));
            }
            out.write_all(&chunk)
                .map_err(|e| io("write", &self.path, e))?;
            self.crc.write(&chunk);
            self.sha.update(&chunk);
            self.bytes += chunk.len() as u64;
            // Caught up with the network (slow or stalled link): hand the buffer to the
            // kernel, so a SIGKILL now loses nothing that was received and the next run
            // resumes from the last byte.
            if rx.is_empty() {
                out.flush().map_err(|e| io("write", &self.path, e))?;
            }
            written.store(self.bytes, Ordering::Relaxed);
        }
        out.flush().map_err(|e| io("write", &self.path, e))?;
        drop(out);
        self.file
            .sync_data()
            .map_err(|e| io("fsync", &self.path, e))?;
        Ok(Digests {
            bytes: self.bytes,
            crc64: self.crc.sum64(),
            sha256: crate::net::signer::hex_lower(&self.sha.finalize()),
        })
    }
}
