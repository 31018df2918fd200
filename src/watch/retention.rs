//! `archive.retention`: local archive folders older than the limit (by their manifest's
//! `archived_at`) are removed, with `[upload]` only once their upload is confirmed, never one
//! whose hooks or upload still need it. Checked at start-up, after each publish or upload, and
//! at least every 10 minutes; the scan and the removals run on a blocking thread, each folder
//! renamed away before it is deleted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::Scheduler;
use super::state::{Durability, HookState, TicketState, UploadState};
use crate::job::archive::{ArchiveLayout, MANIFEST, Manifest};

/// The longest pause between two retention checks.
pub(super) const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// What a scan may and may not remove, from the loop's records.
#[derive(Debug, Default)]
pub(super) struct Guards {
    /// Folders a ticket still needs (hooks pending, an upload not confirmed).
    pub(super) busy: HashSet<PathBuf>,
    /// Folders whose upload is confirmed.
    pub(super) uploaded: HashSet<PathBuf>,
}

impl Scheduler {
    /// Asks for a retention check soon (after a publish or an upload).
    pub(super) fn retention_soon(&mut self) {
        if self.services.retention.is_some() {
            self.next_retention = self.next_retention.min(Instant::now());
        }
    }

    /// Whether a retention scan may start: retention is set, none runs, and every ticket's
    /// record is loaded (the guards come from the records: a scan before them would not know
    /// which folders are still needed).
    pub(super) fn retention_due(&self) -> bool {
        self.services.retention.is_some() && self.retention_task.is_none() && self.loads.is_empty()
    }

    /// Starts a retention scan unless one runs.
    pub(super) fn start_retention(&mut self) {
        self.next_retention = Instant::now() + RETENTION_EVERY;
        let Some(retention) = self.services.retention else {
            return;
        };
        if self.retention_task.is_some() {
            return;
        }
        let uploads = self.services.uploads.is_some();
        let mut guards = Guards::default();
        for ticket in self.tickets.values() {
            let record = &ticket.record;
            let Some(dir) = &record.archive else { continue };
            let hooks_open = record.hooks.values().any(|h| h.state == HookState::Pending)
                || !ticket.hooks_running.is_empty();
            let upload = record.upload.as_ref();
            let upload_open = uploads
                && upload.is_none_or(|u| u.state != UploadState::Uploaded || !u.cleaned)
                || ticket.upload_cancel.is_some()
                || ticket.cleaning;
            if record.state != TicketState::Archived || hooks_open || upload_open {
                guards.busy.insert(dir.clone());
            }
            if upload.is_some_and(|u| u.state == UploadState::Uploaded) {
                guards.uploaded.insert(dir.clone());
            }
        }
        let layout = self.layout.clone();
        self.retention_task = Some(tokio::task::spawn_blocking(move || {
            prune(&layout, retention, uploads, &guards, jiff::Timestamp::now())
        }));
    }

    /// A retention scan ended: the removed folders are no longer anyone's archive.
    pub(super) fn retention_done(&mut self, removed: Vec<PathBuf>) {
        self.retention_task = None;
        if removed.is_empty() {
            return;
        }
        let removed: HashSet<PathBuf> = removed.into_iter().collect();
        let ids: Vec<String> = self
            .tickets
            .iter()
            .filter(|(_, t)| {
                t.record
                    .archive
                    .as_ref()
                    .is_some_and(|a| removed.contains(a))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.tickets.get_mut(&id).expect("present").record.archive = None;
            self.save(&id, Durability::Now);
        }
    }
}

/// Blocking: removes the archive folders under `layout` older than `retention`. With uploads,
/// only folders confirmed uploaded; never a busy one. Returns the removed folders.
pub(super) fn prune(
    layout: &ArchiveLayout,
    retention: Duration,
    uploads: bool,
    guards: &Guards,
    now: jiff::Timestamp,
) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(orders) = std::fs::read_dir(layout.root()) else {
        return removed;
    };
    for order in orders.flatten() {
        let name = order.file_name();
        if name.to_string_lossy().starts_with('.') || !order.path().is_dir() {
            continue;
        }
        let Ok(keys) = std::fs::read_dir(order.path()) else {
            continue;
        };
        for key in keys.flatten() {
            let dir = key.path();
            let Some(archived_at) = archived_at(&dir) else {
                continue;
            };
            let age: Duration = now
                .duration_since(archived_at)
                .try_into()
                .unwrap_or(Duration::ZERO);
            if age <= retention
                || guards.busy.contains(&dir)
                || (uploads && !guards.uploaded.contains(&dir))
            {
                continue;
            }
            let id = format!(
                "{}-{}",
                name.to_string_lossy(),
                key.file_name().to_string_lossy()
            );
            match layout.remove_atomically(&dir, &id) {
                Ok(()) => {
                    info!(archive = %dir.display(), age_days = age.as_secs() / 86_400,
                          "archive folder removed (archive.retention)");
                    removed.push(dir);
                }
                Err(err) => {
                    warn!(archive = %dir.display(), error = %err, "cannot remove an expired archive folder");
                }
            }
        }
        // An order folder left empty goes too.
        let _ = std::fs::remove_dir(order.path());
    }
    removed
}

/// The `archived_at` of a published folder's manifest.
fn archived_at(dir: &Path) -> Option<jiff::Timestamp> {
    let bytes = std::fs::read(dir.join(MANIFEST)).ok()?;
    let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
    manifest.archived_at.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(layout: &ArchiveLayout, order: i64, key: &str, archived_at: &str) -> PathBuf {
        let dir = layout.final_dir(order, key);
        std::fs::create_dir_all(dir.join("files")).unwrap();
        let manifest = serde_json::json!({
            "order_id": order, "download_key_id": key, "tid": null, "label": null,
            "total_count": null, "archived_at": archived_at,
            "source": {"host": "h", "object": "o.zip", "bytes": 1, "crc64ecma": "1", "sha256": "a"},
            "files": []
        });
        std::fs::write(dir.join(MANIFEST), manifest.to_string()).unwrap();
        dir
    }

    #[test]
    fn only_old_confirmed_idle_folders_go() {
        let root = tempfile::tempdir().unwrap();
        let layout = ArchiveLayout::new(root.path());
        layout.ensure().unwrap();
        let now: jiff::Timestamp = "2026-12-03T00:00:00Z".parse().unwrap();
        let old = publish(&layout, 1, "old", "2026-08-01T00:00:00Z");
        let recent = publish(&layout, 2, "recent", "2026-12-01T00:00:00Z");
        let busy = publish(&layout, 3, "busy", "2026-01-01T00:00:00Z");
        let not_uploaded = publish(&layout, 4, "nope", "2026-01-01T00:00:00Z");
        let ninety_days = Duration::from_secs(90 * 86_400);

        let mut guards = Guards::default();
        guards.busy.insert(busy.clone());
        guards
            .uploaded
            .extend([old.clone(), recent.clone(), busy.clone()]);
        let removed = prune(&layout, ninety_days, true, &guards, now);
        assert_eq!(removed, vec![old.clone()]);
        assert!(!old.exists() && !root.path().join("1").exists());
        assert!(recent.exists() && busy.exists() && not_uploaded.exists());

        // Without uploads, what is not busy goes once old enough.
        let removed = prune(&layout, ninety_days, false, &guards, now);
        assert_eq!(removed, vec![not_uploaded]);
        assert!(busy.exists());
    }
}
