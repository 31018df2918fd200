//! Requests from `dmstrack retry` and `dmstrack forget` to whoever owns the state.
//!
//! The daemon owns the state while it runs, so the commands never write it beside it: they
//! leave a request file in `<state.dir>/requests/`, which the running daemon picks up (within
//! a second or two), applies in its loop, and answers with a result file. With no daemon
//! running, the command takes the state lock itself and applies the pending requests the
//! same way, so there is never a race with a daemon's own writes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::{HookState, StateStore, TicketRecord, TicketState, UploadState};

/// The folder of request and result files inside `state.dir`.
pub const REQUESTS_DIR: &str = "requests";

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A failed ticket (or its failed upload or hooks) goes back to waiting.
    Retry,
    /// The state of a ticket no longer configured is dropped (with its partial download).
    Forget,
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Retry or forget.
    pub action: Action,
    /// The ticket's order.
    pub order_id: i64,
    /// One export of it; `None`: every ticket of the order.
    pub download_key_id: Option<String>,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The command's exit code: 0 done (or nothing to do), 1 refused or unknown.
    pub code: u8,
    /// What happened, for people.
    pub message: String,
}

impl Request {
    /// Whether `record` is one of the tickets this request names.
    pub fn matches(&self, record: &TicketRecord) -> bool {
        record.order_id == self.order_id
            && self
                .download_key_id
                .as_deref()
                .is_none_or(|key| record.download_key_id.as_deref() == Some(key))
    }
}

/// Whether anything of a ticket ended failed: the ticket, its upload, a hook.
pub fn has_failed(record: &TicketRecord) -> bool {
    record.state == TicketState::Failed
        || record
            .upload
            .as_ref()
            .is_some_and(|u| u.state == UploadState::Failed)
        || record.hooks.values().any(|h| h.state == HookState::Failed)
}

/// Puts what failed of a ticket back to waiting: the ticket polled at once with a fresh
/// `give_up_after`, a failed upload pending again, failed hooks pending with fresh attempts.
/// Returns what was retried, for people (empty: nothing had failed).
pub fn retry_record(record: &mut TicketRecord, now: jiff::Timestamp) -> Vec<&'static str> {
    let mut retried = Vec::new();
    if record.state == TicketState::Failed {
        record.state = if record.download_key_id.is_some() {
            TicketState::Waiting
        } else {
            TicketState::Pending
        };
        record.last_error = None;
        record.first_seen_at = now;
        record.next_poll_at = Some(now);
        record.updated_at = now;
        retried.push("ticket");
    }
    if let Some(upload) = &mut record.upload
        && upload.state == UploadState::Failed
    {
        upload.state = UploadState::Pending;
        upload.pending_since = now;
        upload.next_attempt_at = Some(now);
        retried.push("upload");
    }
    for hook in record.hooks.values_mut() {
        if hook.state == HookState::Failed {
            hook.state = HookState::Pending;
            hook.attempts = 0;
            retried.push("hook");
        }
    }
    retried
}

/// A request file's path and its result's.
pub fn result_path(request: &Path) -> PathBuf {
    request.with_extension("result")
}

/// Writes a request into `<state_dir>/requests/` (atomically); returns its path.
pub fn submit(state_dir: &Path, request: &Request) -> std::io::Result<PathBuf> {
    let dir = state_dir.join(REQUESTS_DIR);
    std::fs::create_dir_all(&dir)?;
    let name = format!(
        "{}-{}.json",
        jiff::Timestamp::now().as_millisecond(),
        uuid::Uuid::new_v4().simple()
    );
    let path = dir.join(name);
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir)?;
    std::io::Write::write_all(&mut tmp, &serde_json::to_vec(request).expect("serializes"))?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// The pending request files, oldest first.
pub fn pending(state_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(REQUESTS_DIR)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
}

/// Reads a request file.
pub fn read(path: &Path) -> Result<Request, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Answers a request: the result file first, then the request goes.
pub fn answer(path: &Path, outcome: &Outcome) {
    let _ = std::fs::write(
        result_path(path),
        serde_json::to_vec(outcome).expect("serializes"),
    );
    let _ = std::fs::remove_file(path);
}

/// Applies `request` to the state directly (no daemon runs: the caller holds the state
/// lock). `configured` says which tickets the config lists; `remove_parts` deletes a ticket's
/// partial downloads.
pub fn apply_offline(
    store: &mut StateStore,
    request: &Request,
    configured: &dyn Fn(&TicketRecord) -> bool,
    remove_parts: &dyn Fn(&str),
) -> Outcome {
    let (records, _) = store.load_all();
    let matching: Vec<TicketRecord> = records.into_iter().filter(|r| request.matches(r)).collect();
    let who = describe(request);
    match request.action {
        Action::Retry => {
            let mut changed = Vec::new();
            for mut record in matching.into_iter().filter(|r| configured(r)) {
                if !retry_record(&mut record, jiff::Timestamp::now()).is_empty() {
                    changed.push(record);
                }
            }
            if changed.is_empty() {
                return Outcome {
                    code: 0,
                    message: format!("{who}: nothing has failed; left alone"),
                };
            }
            match store.commit(changed.iter(), []) {
                Ok(()) => Outcome {
                    code: 0,
                    message: format!(
                        "{who}: {} ticket(s) back to waiting; the next start polls them at once",
                        changed.len()
                    ),
                },
                Err(err) => Outcome {
                    code: 1,
                    message: format!("{who}: {err}"),
                },
            }
        }
        Action::Forget => {
            if matching.iter().any(configured) {
                return Outcome {
                    code: 1,
                    message: format!(
                        "{who} is in the config; remove it from the config (or its tickets file) first"
                    ),
                };
            }
            if matching.is_empty() {
                return Outcome {
                    code: 1,
                    message: format!("{who}: no state recorded"),
                };
            }
            let ids: Vec<&str> = matching.iter().map(|r| r.id.as_str()).collect();
            match store.commit([], ids.iter().copied()) {
                Ok(()) => {
                    for id in &ids {
                        remove_parts(id);
                    }
                    Outcome {
                        code: 0,
                        message: format!(
                            "{who}: state of {} ticket(s) dropped (archives stay)",
                            ids.len()
                        ),
                    }
                }
                Err(err) => Outcome {
                    code: 1,
                    message: format!("{who}: {err}"),
                },
            }
        }
    }
}

/// `order 7` or `order 7 key K`, for messages.
pub fn describe(request: &Request) -> String {
    match &request.download_key_id {
        Some(key) => format!("order {} key {key}", request.order_id),
        None => format!("order {}", request.order_id),
    }
}
