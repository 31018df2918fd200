//! The zip file as a shared, independently seekable reader: every worker thread holds its own
//! cursor over one open file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A cursor over a shared open file that reads with `pread`, so every worker can own a cheap
/// clone of the `ZipArchive` (its parsed central directory is behind an `Arc`) and seek
/// independently without reopening or re-parsing the zip.
#[derive(Debug, Clone)]
pub(super) struct SharedFile {
    file: Arc<File>,
    len: u64,
    position: u64,
}

impl SharedFile {
    pub(super) fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file: Arc::new(file),
            len,
            position: 0,
        })
    }

    pub(super) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

impl Read for SharedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, self.position) {
                Ok(n) => {
                    self.position += n as u64;
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }
}

impl Seek for SharedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the zip",
            )
        })?;
        Ok(self.position)
    }
}
