//! The tickets folder (`[watch] tickets_dir`): more `[[tickets]]` in `*.toml` files, each
//! validated exactly like the main file. A bad file (a typo, a ticket already listed
//! elsewhere) is reported and skipped; the others keep working.

use std::path::{Path, PathBuf};

use super::Config;
use super::validate::validate_tickets_file;

/// One file of the tickets folder and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketFile {
    /// The file.
    pub path: PathBuf,
    /// Tickets taken from it (0 when it is bad).
    pub tickets: usize,
    /// Why it was skipped (every problem, as `file:line:column: key: message` lines).
    pub problem: Option<String>,
}

/// The `*.toml` files of `dir`, by name; hidden ones (a temporary file of `dmstrack add`)
/// are left out.
pub fn tickets_file_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                && p.is_file()
        })
        .collect();
    paths.sort();
    paths
}

/// The contents a config was read from (the main file and every tickets file, by path):
/// what decides whether a change on disk calls for a reload.
#[derive(Debug, Default)]
pub(crate) struct Fingerprint(sha2::Sha256);

impl Fingerprint {
    /// Adds one file's path and what reading it gave.
    pub(crate) fn add(&mut self, path: &Path, read: &std::io::Result<Vec<u8>>) {
        use sha2::Digest as _;
        self.0.update(path.as_os_str().as_encoded_bytes());
        self.0.update([0]);
        match read {
            Ok(bytes) => self.0.update(bytes),
            Err(err) => self.0.update(err.kind().to_string().as_bytes()),
        }
        self.0.update([0xff]);
    }

    /// The digest.
    pub(crate) fn finish(self) -> [u8; 32] {
        use sha2::Digest as _;
        self.0.finalize().into()
    }
}

/// Reads the config file and the tickets folder again, as [`Config::load`] does, into a
/// fingerprint comparable with [`Config::fingerprint`]. Blocking.
pub fn fingerprint_on_disk(config: &Path, tickets_dir: &Path) -> [u8; 32] {
    let mut fingerprint = Fingerprint::default();
    fingerprint.add(config, &std::fs::read(config));
    for path in tickets_file_paths(tickets_dir) {
        fingerprint.add(&path, &std::fs::read(&path));
    }
    fingerprint.finish()
}

impl Config {
    /// Adds the tickets of the tickets folder, file by file; bad files are recorded in
    /// [`Config::ticket_files`] and skipped. A missing folder is no tickets.
    pub(crate) fn read_tickets_dir(&mut self, fingerprint: &mut Fingerprint) {
        for path in tickets_file_paths(&self.watch.tickets_dir) {
            let mut file = TicketFile {
                path: path.clone(),
                tickets: 0,
                problem: None,
            };
            let read = std::fs::read(&path);
            fingerprint.add(&path, &read);
            match read.map(String::from_utf8) {
                Err(err) => file.problem = Some(format!("{}: {err}", path.display())),
                Ok(Err(err)) => file.problem = Some(format!("{}: {err}", path.display())),
                Ok(Ok(text)) => {
                    match validate_tickets_file(&text, &path, self.dms.tid, &mut self.ticket_index)
                    {
                        Ok(tickets) => {
                            file.tickets = tickets.len();
                            self.tickets.extend(tickets);
                        }
                        Err(diagnostics) => {
                            file.problem = Some(
                                diagnostics
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join("\n"),
                            )
                        }
                    }
                }
            }
            self.ticket_files.push(file);
        }
    }

    /// The files of the tickets folder that were skipped.
    pub fn bad_ticket_files(&self) -> impl Iterator<Item = &TicketFile> {
        self.ticket_files.iter().filter(|f| f.problem.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigEnv;

    #[test]
    fn tickets_folder_files_add_tickets_and_bad_ones_are_skipped_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(
            &main,
            "[[tickets]]\norder_id = 1\ndownload_key_id = \"a\"\n",
        )
        .unwrap();
        let tickets = dir.path().join("tickets.d");
        std::fs::create_dir(&tickets).unwrap();
        std::fs::write(
            tickets.join("10-good.toml"),
            "[[tickets]]\norder_id = 2\ndownload_key_id = \"b\"\nlabel = \"from a file\"\n",
        )
        .unwrap();
        std::fs::write(
            tickets.join("20-dup.toml"),
            "[[tickets]]\norder_id = 3\ndownload_key_id = \"c\"\n\n[[tickets]]\norder_id = 1\ndownload_key_id = \"a\"\n",
        )
        .unwrap();
        std::fs::write(tickets.join("30-typo.toml"), "[[tickets]]\norder_idd = 4\n").unwrap();
        std::fs::write(tickets.join(".tmp-x.toml"), "garbage").unwrap();
        std::fs::write(tickets.join("notes.txt"), "not a ticket file").unwrap();

        let config = Config::load(&main, &ConfigEnv::default()).unwrap();
        let orders: Vec<i64> = config.tickets.iter().map(|t| t.order_id).collect();
        assert_eq!(orders, [1, 2], "the duplicate's file is skipped whole");
        assert_eq!(config.ticket_files.len(), 3);
        let problems: Vec<&str> = config
            .bad_ticket_files()
            .map(|f| f.problem.as_deref().unwrap())
            .collect();
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0].starts_with(&format!(
                "{}:6:1: tickets[1].order_id: duplicate ticket",
                tickets.join("20-dup.toml").display()
            )) && problems[0].contains(&format!("already listed at {}:1:1", main.display())),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains("30-typo.toml:2:1: tickets[0].order_idd: unknown field"),
            "{}",
            problems[1]
        );
        assert_eq!(config.tickets[1].label.as_deref(), Some("from a file"));
        assert!(
            config
                .ticket_place(&config.tickets[1])
                .is_some_and(|p| p.ends_with("10-good.toml:1:1"))
        );
    }
}
