//! One watched ticket in the loop, and how it is brought in: its record read through the
//! state writer (off the loop), the archive folder checked for a manifest (off the loop), and
//! where it resumes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Scheduler;
use super::state::{Committed, Durability, StateWriter, TicketRecord, TicketState, ticket_id};
use crate::config::TicketSpec;
use crate::job::archive::ArchiveLayout;
use crate::job::download::Progress;

/// A ticket of the config with what is known about it on disk.
#[derive(Debug, Clone)]
pub struct LoadedTicket {
    /// From the config.
    pub spec: TicketSpec,
    /// Its record, when it has one.
    pub record: Option<TicketRecord>,
    /// Its archive folder holds a manifest: it is archived, whatever the record says.
    pub archived_on_disk: bool,
}

/// Reads the records of `specs` (through the writer, so changes not yet committed count) and
/// checks which ones have an archive already. All file work runs off the async workers.
pub async fn load_tickets(
    writer: &StateWriter,
    layout: &ArchiveLayout,
    specs: Vec<TicketSpec>,
) -> Result<Vec<LoadedTicket>, String> {
    let ids: Vec<String> = specs.iter().map(ticket_id).collect();
    let mut records: std::collections::HashMap<String, TicketRecord> = writer
        .load(ids.clone())
        .await?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let loaded: Vec<LoadedTicket> = specs
        .into_iter()
        .zip(ids)
        .map(|(spec, id)| LoadedTicket {
            record: records.remove(&id),
            spec,
            archived_on_disk: false,
        })
        .collect();
    let layout = layout.clone();
    tokio::task::spawn_blocking(move || {
        loaded
            .into_iter()
            .map(|mut ticket| {
                // Every ticket not archived yet needs the check (a failed one too: an archive
                // is never turned into a failure); the key of an export ticket is known once
                // its record has one.
                if let Some(record) = &ticket.record
                    && record.state != TicketState::Archived
                    && let Some(key) = &record.download_key_id
                {
                    ticket.archived_on_disk = layout.is_archived(record.order_id, key);
                }
                if ticket.record.is_none()
                    && let crate::config::TicketSource::Existing { download_key_id } =
                        &ticket.spec.source
                {
                    ticket.archived_on_disk =
                        layout.is_archived(ticket.spec.order_id, download_key_id);
                }
                ticket
            })
            .collect()
    })
    .await
    .map_err(|e| format!("loading ticket state failed: {e}"))
}

/// A ticket in the loop.
#[derive(Debug)]
pub(super) struct Ticket {
    pub(super) spec: TicketSpec,
    pub(super) record: TicketRecord,
    /// Tells this ticket's tasks from those of an earlier ticket with the same id (removed
    /// and added again by reloads).
    pub(super) generation: u64,
    /// When `give_up_after` runs out.
    pub(super) deadline: Instant,
    /// A poll, export or download task for this ticket is running.
    pub(super) busy: bool,
    /// Consecutive failed export attempts, for their backoff.
    pub(super) export_failures: u32,
    pub(super) progress: Arc<Progress>,
    pub(super) job_cancel: Option<CancellationToken>,
    pub(super) saved_bytes: u64,
    /// A change the next API step depends on (the export key before the first poll): that
    /// step waits until it is durable.
    pub(super) barrier: Option<Committed>,
    /// The running upload job, if any.
    pub(super) upload_cancel: Option<CancellationToken>,
    /// Hooks running now.
    pub(super) hooks_running: Vec<crate::job::hooks::HookKind>,
    /// The local clean-up after the upload runs.
    pub(super) cleaning: bool,
    /// When a poll next also looks for an archive that appeared on disk meanwhile.
    pub(super) next_disk_check: Instant,
    /// The local clean-up after the upload failed in this process: it is tried again at the
    /// next start, and until then it holds nothing up (`run --once` ends).
    pub(super) cleanup_failed: bool,
}

/// `give_up_after` measured from when the ticket was first seen (wall clock), as an instant.
pub(super) fn deadline_of(record: &TicketRecord, give_up_after: Duration) -> Instant {
    let elapsed = jiff::Timestamp::now()
        .duration_since(record.first_seen_at)
        .try_into()
        .unwrap_or(Duration::ZERO);
    Instant::now() + give_up_after.saturating_sub(elapsed)
}

/// A tokio instant as wall-clock time, for `next_poll_at`.
pub(super) fn wall_clock(at: Instant) -> jiff::Timestamp {
    let ahead = at.saturating_duration_since(Instant::now());
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(ahead).unwrap_or(jiff::SignedDuration::ZERO))
        .unwrap_or_else(|_| jiff::Timestamp::now())
}

impl Scheduler {
    /// Brings a loaded ticket into the loop and queues its next step.
    pub(super) fn add_ticket(&mut self, loaded: LoadedTicket) {
        let LoadedTicket {
            spec,
            record,
            archived_on_disk,
        } = loaded;
        let id = ticket_id(&spec);
        if self.tickets.contains_key(&id) {
            return;
        }
        let now = jiff::Timestamp::now();
        // A new ticket's record is first written at its first change (its first poll), not
        // here: with thousands of new tickets, one write each would stall the start.
        let (mut record, mut save) = match record {
            Some(record) => (record, false),
            None => (TicketRecord::new(&spec, now), false),
        };
        if record.label != spec.label || record.tid != spec.tid {
            record.label = spec.label.clone();
            record.tid = spec.tid;
            save = true;
        }
        // The manifest is the truth: a ticket with one is archived, whatever the state says.
        if archived_on_disk
            && record.state != TicketState::Archived
            && let Some(key) = record.download_key_id.clone()
        {
            record.state = TicketState::Archived;
            record.archive = Some(self.layout.final_dir(spec.order_id, &key));
            record.next_poll_at = None;
            record.last_error = None;
            save = true;
        }
        // A download or extraction interrupted by a restart resumes from a fresh status query
        // (the signed URL is never stored); the partial download is kept for Range.
        if matches!(
            record.state,
            TicketState::Downloading | TicketState::Extracting
        ) {
            record.state = TicketState::Waiting;
            record.next_poll_at = None;
            save = true;
        }
        if record.export_requested_at.is_some() && record.download_key_id.is_none() {
            warn!(
                order_id = spec.order_id,
                label = spec.label.as_deref().unwrap_or(""),
                "a previous run was stopped while DownloadDataTrackResult was in flight; its key was never \
                   received, so the export is requested again (DMS may hold an unused export)"
            );
        }
        let deadline = deadline_of(&record, self.services.poll.give_up_after);
        let due = (!record.state.is_terminal()).then(|| {
            let wait = record
                .next_poll_at
                .and_then(|at| at.duration_since(now).try_into().ok())
                .unwrap_or(Duration::ZERO);
            Instant::now() + wait
        });
        self.next_generation += 1;
        let ticket = Ticket {
            spec,
            record,
            generation: self.next_generation,
            deadline,
            busy: false,
            export_failures: 0,
            progress: Arc::new(Progress::default()),
            job_cancel: None,
            saved_bytes: 0,
            barrier: None,
            upload_cancel: None,
            hooks_running: Vec::new(),
            cleaning: false,
            // Just checked while loading.
            next_disk_check: Instant::now() + super::tasks::DISK_CHECK_EVERY,
            cleanup_failed: false,
        };
        self.count(ticket.record.state, true);
        self.tickets.insert(id.clone(), ticket);
        if save {
            self.save(&id, Durability::Now);
        }
        if let Some(at) = due {
            self.schedule(&id, at);
        }
        self.queue_post_work(&id, false);
    }

    /// Counts one more (`add`) or one fewer ticket in `state`.
    pub(super) fn count(&mut self, state: TicketState, add: bool) {
        let counts = &mut self.counts;
        let slot = match state {
            TicketState::Pending => &mut counts.pending,
            TicketState::Waiting => &mut counts.waiting,
            TicketState::Downloading => &mut counts.downloading,
            TicketState::Extracting => &mut counts.extracting,
            TicketState::Archived => &mut counts.archived,
            TicketState::Failed => &mut counts.failed,
        };
        *slot = if add {
            *slot + 1
        } else {
            slot.saturating_sub(1)
        };
    }
}
