//! `dmstrack status [--json]`: every ticket's state from the state directory, without any
//! network call: a table for people, or the JSON array of docs/reference/status-json.md for
//! scripts. It names the state folder it read (on stderr, so `--json` stays parseable) and
//! warns when that folder does not exist: run by hand on a systemd host without
//! `STATE_DIRECTORY`, it would otherwise read an empty folder and show every ticket pending.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use super::{Exit, load_config};
use crate::config::UploadSettings;
use crate::config::{ConfigEnv, TicketSource};
use crate::job::upload::runner::folder_url;
use crate::watch::state::{HookState, TicketRecord, TicketState, UploadState, ticket_id};

/// The last `on_archived` hook run of a ticket, as `status` shows it.
#[derive(Debug, Serialize)]
struct HookEntry {
    /// `ok`, `failed` or `timeout`.
    result: String,
    /// Exit status or the reason.
    detail: String,
}

/// `upload` in `status --json`: where the archive's upload is.
#[derive(Debug, Serialize)]
struct UploadEntry {
    state: &'static str,
    attempts: u32,
    last_error: Option<String>,
    url: String,
}

/// One hook's runs for a ticket.
#[derive(Debug, Serialize)]
struct HookRuns {
    state: HookState,
    attempts: u32,
    result: Option<String>,
    detail: Option<String>,
}

/// One ticket in `status --json`: the contract's fields, then download progress, the hooks,
/// and whether the ticket is still configured.
#[derive(Debug, Serialize)]
struct StatusEntry {
    order_id: i64,
    download_key_id: Option<String>,
    label: Option<String>,
    state: TicketState,
    last_status: Option<String>,
    attempts: u32,
    next_poll_at: Option<String>,
    last_error: Option<String>,
    archive: Option<String>,
    upload: Option<UploadEntry>,
    downloaded_bytes: Option<u64>,
    total_bytes: Option<u64>,
    hook: Option<HookEntry>,
    hooks: BTreeMap<&'static str, HookRuns>,
    configured: bool,
}

impl StatusEntry {
    fn new(r: &TicketRecord, uploads: Option<&UploadSettings>, configured: bool) -> Self {
        let upload = uploads.map(|settings| match &r.upload {
            Some(u) => UploadEntry {
                state: u.state.as_str(),
                attempts: u.attempts,
                last_error: u.last_error.clone(),
                url: u.url.clone(),
            },
            // Not archived yet: it will be uploaded once it is.
            None => UploadEntry {
                state: UploadState::Pending.as_str(),
                attempts: 0,
                last_error: None,
                url: r
                    .download_key_id
                    .as_deref()
                    .map_or_else(String::new, |key| folder_url(settings, r.order_id, key)),
            },
        });
        Self {
            order_id: r.order_id,
            download_key_id: r.download_key_id.clone(),
            label: r.label.clone(),
            state: r.state,
            last_status: r.last_status.clone(),
            attempts: r.attempts,
            next_poll_at: r
                .next_poll_at
                .filter(|_| !r.state.is_terminal())
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            last_error: r.last_error.clone(),
            archive: r.archive.as_ref().map(|p| p.display().to_string()),
            upload,
            downloaded_bytes: r.download.as_ref().map(|d| d.bytes),
            total_bytes: r.download.as_ref().and_then(|d| d.total),
            hook: r.hook.as_ref().map(|h| HookEntry {
                result: h.result.clone(),
                detail: h.detail.clone(),
            }),
            hooks: r
                .hooks
                .iter()
                .map(|(kind, h)| {
                    (
                        kind.name(),
                        HookRuns {
                            state: h.state,
                            attempts: h.attempts,
                            result: h.last.as_ref().map(|l| l.result.clone()),
                            detail: h.last.as_ref().map(|l| l.detail.clone()),
                        },
                    )
                })
                .collect(),
            configured,
        }
    }
}

pub(super) fn run(path: &Path, env: &ConfigEnv, json: bool) -> Exit {
    let config = match load_config(path, env) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    for line in state_folder_notes(&config.state.dir, env) {
        eprintln!("{line}");
    }
    let (records, errors) = crate::watch::state::read_all(&config.state.dir);
    for err in &errors {
        eprintln!("warning: {err}");
    }
    // Config order first (tickets never run yet show as pending), then tickets that are only
    // in the state directory (removed from the config; their archives stay).
    // A ticket is (order_id, download_key_id): an export ticket whose key turned out to equal
    // a pinned ticket's is that ticket, shown once, as the pinned one, as long as it has
    // nothing of its own to report (a failure, an upload or hook not done).
    let pinned: HashMap<(i64, &str), String> = config
        .tickets
        .iter()
        .filter_map(|spec| match &spec.source {
            TicketSource::Existing { download_key_id } => {
                Some(((spec.order_id, download_key_id.as_str()), ticket_id(spec)))
            }
            TicketSource::Export(_) => None,
        })
        .collect();
    let is_twin = |record: &TicketRecord| {
        let pinned_id = record
            .download_key_id
            .as_deref()
            .and_then(|key| pinned.get(&(record.order_id, key)));
        let quiet = record.state != TicketState::Failed
            && record
                .upload
                .as_ref()
                .is_none_or(|u| u.state == UploadState::Uploaded)
            && record.hooks.values().all(|h| h.state == HookState::Ok);
        pinned_id.is_some_and(|pinned_id| *pinned_id != record.id) && quiet
    };
    let mut entries = Vec::new();
    let mut shown = HashSet::new();
    for spec in &config.tickets {
        let id = ticket_id(spec);
        let record = records
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .unwrap_or_else(|| {
                let mut fresh = TicketRecord::new(spec, jiff::Timestamp::now());
                fresh.next_poll_at = None;
                fresh
            });
        shown.insert(id);
        if is_twin(&record) {
            continue;
        }
        entries.push(StatusEntry::new(&record, config.upload.as_ref(), true));
    }
    for record in records
        .iter()
        .filter(|r| !shown.contains(&r.id) && !is_twin(r))
    {
        entries.push(StatusEntry::new(record, config.upload.as_ref(), false));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("status serializes")
        );
    } else {
        print_table(&entries);
    }
    Exit::Success
}

/// What `status` says about the folder it reads: its path, and a warning when it is missing.
fn state_folder_notes(dir: &Path, env: &ConfigEnv) -> Vec<String> {
    let mut notes = vec![format!("state folder: {}", dir.display())];
    if !dir.is_dir() {
        let mut warning = format!(
            "warning: the state folder {} does not exist: nothing has run with this config and \
             these settings yet, so every ticket shows as pending",
            dir.display()
        );
        if env.state_directory.is_none() {
            warning.push_str(
                ". A daemon under systemd keeps its state in $STATE_DIRECTORY, which is not set \
                 here; for dmstrack.service run `sudo STATE_DIRECTORY=/var/lib/dmstrack dmstrack \
                 status` (dmstrack@NAME.service: /var/lib/dmstrack-NAME)",
            );
        }
        notes.push(warning);
    }
    notes
}

fn print_table(entries: &[StatusEntry]) {
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            let progress = match (e.state, e.downloaded_bytes, e.total_bytes) {
                (TicketState::Downloading, Some(b), Some(t)) if t > 0 => {
                    format!(
                        "{} of {} ({:.0} %)",
                        bytesize::ByteSize(b),
                        bytesize::ByteSize(t),
                        b as f64 * 100.0 / t as f64
                    )
                }
                (TicketState::Downloading, Some(b), _) => bytesize::ByteSize(b).to_string(),
                _ => String::new(),
            };
            let upload_error = e
                .upload
                .as_ref()
                .and_then(|u| u.last_error.as_ref())
                .filter(|_| e.state == TicketState::Archived);
            let mut detail = match (&e.archive, &e.last_error) {
                (_, _) if upload_error.is_some() => {
                    format!("upload: {}", upload_error.expect("checked"))
                }
                (Some(archive), _) if e.state == TicketState::Archived => match &e.hook {
                    Some(hook) if hook.result == crate::job::hooks::RESULT_OK => {
                        format!("{archive} (hook ok)")
                    }
                    Some(hook) => format!("{archive} (hook {}: {})", hook.result, hook.detail),
                    None => archive.clone(),
                },
                (None, _) if e.state == TicketState::Archived => match &e.upload {
                    Some(upload) => format!("{} (local copy removed)", upload.url),
                    None => "(local copy removed)".to_owned(),
                },
                (_, Some(error)) => error.clone(),
                _ => progress,
            };
            if !e.configured {
                detail = format!("(no longer configured) {detail}");
            }
            let upload = match &e.upload {
                Some(upload) if e.state == TicketState::Archived => upload.state.to_owned(),
                _ => "-".to_owned(),
            };
            [
                e.order_id.to_string(),
                e.download_key_id.clone().unwrap_or_else(|| "-".into()),
                e.label.clone().unwrap_or_default(),
                e.state.as_str().to_owned(),
                e.last_status.clone().unwrap_or_else(|| "-".into()),
                e.next_poll_at.clone().unwrap_or_else(|| "-".into()),
                upload,
                detail.trim_end().to_owned(),
            ]
        })
        .collect();
    let header = [
        "ORDER",
        "DOWNLOAD KEY",
        "LABEL",
        "STATE",
        "LAST STATUS",
        "NEXT POLL",
        "UPLOAD",
        "DETAIL",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    if rows.is_empty() {
        println!("(no tickets)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_its_folder_and_warns_when_it_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let env = ConfigEnv::default();
        assert_eq!(
            state_folder_notes(dir.path(), &env),
            [format!("state folder: {}", dir.path().display())]
        );
        let missing = dir.path().join("state");
        let notes = state_folder_notes(&missing, &env);
        assert_eq!(notes.len(), 2);
        assert!(
            notes[1].starts_with("warning: the state folder"),
            "{notes:?}"
        );
        assert!(
            notes[1].contains("STATE_DIRECTORY=/var/lib/dmstrack"),
            "{notes:?}"
        );
        // With STATE_DIRECTORY set the systemd hint would be beside the point.
        let under_systemd = ConfigEnv {
            state_directory: Some(missing.clone()),
            ..ConfigEnv::default()
        };
        let notes = state_folder_notes(&missing, &under_systemd);
        assert!(!notes[1].contains("sudo"), "{notes:?}");
    }
}
