//! Exclusive locks on the folders one daemon owns: the state folder (two daemons on one
//! state would race on its records) and the archive folder (two daemons with different state
//! folders but one archive would delete each other's staging folders and partial downloads).
//! A lock is an `flock` on a file inside the folder, released when dropped or when the process
//! dies, so a SIGKILL never leaves a stale lock behind.

use std::io::{Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// A held lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock on `<dir>/.lock` for `what` ("state", "archive"), or says who holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self, String> {
        Self::acquire_file(&dir.join(".lock"), dir, what)
    }

    /// Takes the lock on the file `path`, which guards `dir`.
    pub fn acquire_file(path: &Path, dir: &Path, what: &str) -> Result<Self, String> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                // The pid is only for the message another process prints.
                let _ = file.set_len(0);
                let _ = file.seek(std::io::SeekFrom::Start(0));
                let _ = writeln!(file, "{}", std::process::id());
                Ok(Self {
                    _file: file,
                    path: path.to_owned(),
                })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                Err(format!(
                    "another dmstrack (pid {}) is running with the {what} directory {}",
                    holder.trim(),
                    dir.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_message_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "state").unwrap();
        let second = DirLock::acquire(dir.path(), "state").unwrap_err();
        assert!(
            second.contains(&format!("pid {}", std::process::id()))
                && second.contains("state directory"),
            "{second}"
        );
        drop(first);
        DirLock::acquire(dir.path(), "state").unwrap();
    }
}
