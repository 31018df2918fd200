//! The parallel write pass: worker threads pull files from a shared counter, inflate each one
//! into a new file under the destination, hash it with SHA-256 and check its CRC-32 and size,
//! all while counting every written byte against the archive-wide limit.
//!
//! With `sync`, a finished file is handed to a flusher thread that `fsync`s it while the
//! workers inflate the next ones, so the disk's work overlaps the CPU's instead of stalling a
//! worker per file (on a 512 MiB export with 2 cores: 1.29 s → 1.13 s for the whole job).
//! The hand-off queue is bounded; when it is full the worker syncs the file itself, so open
//! files stay few and a burst of small files is synced by every thread at once. Every file
//! is synced before [`unpack`] returns.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::thread;

use sha2::{Digest, Sha256};
use zip::{ZipArchive, ZipReadOptions};

use super::plan::{Plan, PlannedFile};
use super::source::SharedFile;
use super::write_errors::create_failed;
use super::{ExtractError, ExtractOptions, ExtractedFile};

/// Read and write chunk: large enough that per-chunk costs (syscalls, the atomic budget, the
/// stop flag) vanish, small enough that memory stays flat whatever the archive size.
const CHUNK_LEN: usize = 256 * 1024;

/// Written files waiting for the flusher's `fsync` (each holds an open file descriptor).
const SYNC_QUEUE: usize = 16;

/// Bytes written so far across all workers, against `max_unpacked_bytes`.
#[derive(Debug)]
pub(super) struct Budget {
    used: AtomicU64,
    limit: u64,
}

impl Budget {
    pub(super) fn new(limit: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            limit,
        }
    }

    /// Claims `bytes` before they are written; false once the total would pass the limit.
    fn claim(&self, bytes: u64) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        before.saturating_add(bytes) <= self.limit
    }
}

/// State shared by the workers.
struct Shared<'a> {
    plan: &'a Plan,
    /// Indices into `files`, largest first, so the long files start early and the short
    /// ones fill the gaps at the end.
    order: Vec<usize>,
    next: AtomicUsize,
    stop: AtomicBool,
    budget: Budget,
    first_error: Mutex<Option<ExtractError>>,
    dest: &'a Path,
    sync: bool,
    cancel: Option<tokio_util::sync::CancellationToken>,
}

impl Shared<'_> {
    /// Another worker failed, or the caller cancelled: stop at the next chunk.
    fn stopped(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            self.fail(ExtractError::Cancelled);
            return true;
        }
        false
    }

    fn fail(&self, error: ExtractError) {
        self.stop.store(true, Ordering::Relaxed);
        let mut slot = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(error);
    }
}

/// A written file whose data is not yet known to be on disk.
struct Unsynced {
    file: File,
    entry: String,
    path: PathBuf,
}

impl Unsynced {
    fn sync(self, shared: &Shared<'_>) {
        if let Err(source) = self.file.sync_all() {
            shared.fail(ExtractError::Write {
                entry: self.entry,
                path: self.path,
                source,
            });
        }
    }
}

/// Syncs handed-off files until every sender is gone. After a failure the output is thrown
/// away, so it only drains the queue.
fn flush(shared: &Shared<'_>, queue: Receiver<Unsynced>) {
    for unsynced in queue {
        if !shared.stop.load(Ordering::Relaxed) {
            unsynced.sync(shared);
        }
    }
}

/// Writes every planned file under `dest` (whose directories exist) on up to
/// `options.threads` threads; stops all of them at the first error and returns it.
pub(super) fn unpack(
    archive: &ZipArchive<SharedFile>,
    plan: &Plan,
    dest: &Path,
    options: &ExtractOptions,
) -> Result<Vec<ExtractedFile>, ExtractError> {
    let files = &plan.files;
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].size));
    let shared = Shared {
        plan,
        order,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        budget: Budget::new(options.max_unpacked_bytes),
        first_error: Mutex::new(None),
        dest,
        sync: options.sync,
        cancel: options.cancel.clone(),
    };
    let threads = match options.threads {
        0 => thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
    .clamp(1, files.len().max(1));

    let mut written = Vec::with_capacity(files.len());
    thread::scope(|scope| {
        let shared = &shared;
        // Without a flusher thread (no sync asked, or the system refused the thread), each
        // worker syncs its own files.
        let (flusher, to_flusher) = if shared.sync {
            let (tx, rx) = sync_channel::<Unsynced>(SYNC_QUEUE);
            match thread::Builder::new()
                .name("dmstrack-fsync".to_owned())
                .spawn_scoped(scope, move || flush(shared, rx))
            {
                Ok(flusher) => (Some(flusher), Some(tx)),
                Err(_) => (None, None),
            }
        } else {
            (None, None)
        };
        // This thread is a worker too; if the system refuses more threads, fewer do the job.
        let helpers: Vec<_> = (1..threads)
            .map_while(|_| {
                let archive = archive.clone();
                let to_flusher = to_flusher.clone();
                thread::Builder::new()
                    .name("dmstrack-unzip".to_owned())
                    .spawn_scoped(scope, move || work(shared, archive, to_flusher.as_ref()))
                    .ok()
            })
            .collect();
        written.extend(work(shared, archive.clone(), to_flusher.as_ref()));
        for helper in helpers {
            match helper.join() {
                Ok(done) => written.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        // The last sender goes, so the flusher ends once the queue is drained.
        drop(to_flusher);
        if let Some(flusher) = flusher
            && let Err(panic) = flusher.join()
        {
            std::panic::resume_unwind(panic);
        }
    });

    match shared
        .first_error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        Some(error) => Err(error),
        None => Ok(written),
    }
}

/// One worker: takes files until none are left or another worker failed.
fn work(
    shared: &Shared<'_>,
    mut archive: ZipArchive<SharedFile>,
    to_flusher: Option<&SyncSender<Unsynced>>,
) -> Vec<ExtractedFile> {
    let mut buf = vec![0_u8; CHUNK_LEN];
    let mut done = Vec::new();
    while !shared.stopped() {
        let Some(&i) = shared
            .order
            .get(shared.next.fetch_add(1, Ordering::Relaxed))
        else {
            break;
        };
        match write_file(
            shared,
            &mut archive,
            &shared.plan.files[i],
            &mut buf,
            to_flusher,
        ) {
            Ok(file) => done.push(file),
            Err(Failure::Stopped) => break,
            Err(Failure::Error(error)) => {
                shared.fail(error);
                break;
            }
        }
    }
    done
}

enum Failure {
    /// Another worker failed first; this one gave up quietly.
    Stopped,
    Error(ExtractError),
}

impl From<ExtractError> for Failure {
    fn from(error: ExtractError) -> Self {
        Self::Error(error)
    }
}

fn write_file(
    shared: &Shared<'_>,
    archive: &mut ZipArchive<SharedFile>,
    planned: &PlannedFile,
    buf: &mut [u8],
    to_flusher: Option<&SyncSender<Unsynced>>,
) -> Result<ExtractedFile, Failure> {
    let corrupt = |reason: String| ExtractError::CorruptEntry {
        entry: planned.entry.clone(),
        reason,
    };
    let target = shared.dest.join(&planned.path);
    let write_error = |source| ExtractError::Write {
        entry: planned.entry.clone(),
        path: target.clone(),
        source,
    };

    // The CRC-32 is checked below by this module, with a message that says what is wrong;
    // the crate's own check would only report "Invalid checksum".
    let mut entry = archive
        .by_index_with_options(planned.index, ZipReadOptions::new().ignore_crc32(true))
        .map_err(|err| corrupt(format!("cannot locate its data: {err}")))?;
    // O_EXCL: never follow or reuse anything already at the path.
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|source| {
            create_failed(
                shared.dest,
                &planned.path,
                &planned.entry,
                source,
                shared.plan,
            )
        })?;

    let copied = copy_entry(
        &mut entry,
        &mut out,
        planned.size,
        &shared.budget,
        &|| shared.stopped(),
        buf,
    )
    .map_err(|err| match err {
        CopyError::Stopped => Failure::Stopped,
        CopyError::Read(err) => corrupt(format!("cannot read or inflate its data: {err}")).into(),
        CopyError::PastDeclaredSize(err) => {
            let detail = err.map(|err| format!(" ({err})")).unwrap_or_default();
            let size = planned.size;
            corrupt(format!(
                "data runs past its declared size of {size} bytes{detail}"
            ))
            .into()
        }
        CopyError::ShortOfDeclaredSize(got) => {
            let size = planned.size;
            corrupt(format!(
                "data ends after {got} of its declared {size} bytes"
            ))
            .into()
        }
        CopyError::OverBudget => ExtractError::TooLarge {
            entry: planned.entry.clone(),
            limit: shared.budget.limit,
        }
        .into(),
        CopyError::Write(err) => write_error(err).into(),
    })?;
    if copied.crc32 != planned.crc32 {
        return Err(corrupt(format!(
            "CRC-32 mismatch: stored {:08x}, computed {:08x}",
            planned.crc32, copied.crc32
        ))
        .into());
    }
    if shared.sync {
        let unsynced = Unsynced {
            file: out,
            entry: planned.entry.clone(),
            path: target.clone(),
        };
        let left_to_us = match to_flusher {
            Some(queue) => match queue.try_send(unsynced) {
                Ok(()) => None,
                Err(TrySendError::Full(unsynced) | TrySendError::Disconnected(unsynced)) => {
                    Some(unsynced)
                }
            },
            None => Some(unsynced),
        };
        if let Some(unsynced) = left_to_us {
            unsynced.file.sync_all().map_err(write_error)?;
        }
    }
    Ok(ExtractedFile {
        path: planned.path.clone(),
        bytes: copied.bytes,
        sha256: copied.sha256,
    })
}

/// What [`copy_entry`] measured.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Copied {
    pub(super) bytes: u64,
    pub(super) crc32: u32,
    pub(super) sha256: String,
}

#[derive(Debug)]
pub(super) enum CopyError {
    /// The stop flag was raised by another worker.
    Stopped,
    /// Reading or inflating failed.
    Read(io::Error),
    /// The data went on after the declared size (with the reader's error, if it raised one).
    PastDeclaredSize(Option<io::Error>),
    /// The data ended early, after this many bytes.
    ShortOfDeclaredSize(u64),
    /// The archive-wide byte limit would be passed.
    OverBudget,
    /// Writing the output failed.
    Write(io::Error),
}

/// Copies one entry's data from `reader` to `out` in `buf`-sized chunks, hashing as it goes.
///
/// Every chunk is claimed from `budget` before it is written, so the limit holds on bytes
/// actually written whatever the headers claim. The reader is never asked for more than the
/// declared size; one more read must then report the end (the zip crate fails that read if
/// the data goes on), so an entry is never longer than declared either.
pub(super) fn copy_entry(
    reader: &mut impl Read,
    out: &mut impl Write,
    declared: u64,
    budget: &Budget,
    stopped: &dyn Fn() -> bool,
    buf: &mut [u8],
) -> Result<Copied, CopyError> {
    let mut crc = crc32fast::Hasher::new();
    let mut sha = Sha256::new();
    let mut written: u64 = 0;
    loop {
        if stopped() {
            return Err(CopyError::Stopped);
        }
        let remaining = declared - written;
        let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        // At the declared size, read a whole chunk anyway: it must come back empty.
        let want = if want == 0 { buf.len() } else { want };
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if remaining == 0 => return Err(CopyError::PastDeclaredSize(Some(err))),
            Err(err) => return Err(CopyError::Read(err)),
        };
        if remaining == 0 {
            return Err(CopyError::PastDeclaredSize(None));
        }
        if !budget.claim(n as u64) {
            return Err(CopyError::OverBudget);
        }
        let chunk = &buf[..n];
        crc.update(chunk);
        sha.update(chunk);
        out.write_all(chunk).map_err(CopyError::Write)?;
        written += n as u64;
    }
    if written != declared {
        return Err(CopyError::ShortOfDeclaredSize(written));
    }
    Ok(Copied {
        bytes: written,
        crc32: crc.finalize(),
        sha256: to_hex(&sha.finalize()),
    })
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}
