//! Applying a new config to the running loop: the difference only. Tickets that stay keep
//! running (a download in progress is never disturbed), removed ones stop (their partial
//! download kept for a later resume), new ones are loaded off the loop and then start.

use std::collections::HashMap;

use tracing::info;

use super::requests::{self, Action, Outcome, Request};
use super::state::{Durability, ticket_id};
use super::tickets::{deadline_of, load_tickets};
use super::{Scheduler, Services};
use crate::config::TicketSpec;

impl Scheduler {
    pub(super) fn reload(
        &mut self,
        tickets: Vec<TicketSpec>,
        services: Services,
        applied: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        self.services = services;
        let wanted: HashMap<String, TicketSpec> =
            tickets.into_iter().map(|s| (ticket_id(&s), s)).collect();
        let removed: Vec<String> = self
            .tickets
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in &removed {
            self.remove_ticket(id);
        }
        let mut added = Vec::new();
        for (id, spec) in &wanted {
            match self.tickets.get_mut(id) {
                Some(ticket) => {
                    if ticket.spec.label != spec.label || ticket.spec.tid != spec.tid {
                        ticket.record.label = spec.label.clone();
                        ticket.record.tid = spec.tid;
                        ticket.spec = spec.clone();
                        self.save(id, Durability::Now);
                    }
                }
                None => added.push(spec.clone()),
            }
        }
        // Deadlines follow a changed give_up_after; a poll queued past a shorter one comes
        // back to it.
        let give_up_after = self.services.poll.give_up_after;
        let mut earlier = Vec::new();
        for (id, ticket) in self.tickets.iter_mut() {
            ticket.deadline = deadline_of(&ticket.record, give_up_after);
            if let Some(at) = self.timers.due_at(id)
                && at > ticket.deadline
            {
                earlier.push(id.clone());
            }
        }
        for id in earlier {
            let deadline = self.tickets[&id].deadline;
            self.schedule(&id, deadline);
        }
        info!(
            added = added.len(),
            removed = removed.len(),
            watched = self.tickets.len(),
            "config reloaded"
        );
        self.wanted = wanted.into_keys().collect();
        if added.is_empty() {
            if let Some(applied) = applied {
                let _ = applied.send(());
            }
        } else {
            let writer = self.writer.clone();
            let layout = self.layout.clone();
            self.loads
                .spawn(async move { (load_tickets(&writer, &layout, added).await, applied) });
        }
        self.publish_summary();
    }

    /// Stops watching a ticket: its timer goes, a running job is cancelled (it stops at a safe
    /// point and keeps its partial download), its record stays for `status`.
    fn remove_ticket(&mut self, id: &str) {
        let Some(ticket) = self.tickets.remove(id) else {
            return;
        };
        self.count(ticket.record.state, false);
        self.timers.cancel(id);
        self.post_timers.cancel_where(|(ticket, _)| ticket == id);
        self.post_pending.remove(id);
        super::post::cancel_upload(ticket.upload_cancel);
        if let Some(cancel) = ticket.job_cancel {
            cancel.cancel();
            // Until that job has ended, a new ticket with this id must not start a job.
            *self.draining.entry(id.to_owned()).or_default() += 1;
        }
        info!(
            order_id = ticket.spec.order_id,
            label = ticket.spec.label.as_deref().unwrap_or(""),
            "ticket removed from the config; no longer watched"
        );
    }

    /// Records of tickets a reload added have been read: bring in those still wanted.
    pub(super) fn loaded(&mut self, loaded: Result<Vec<super::LoadedTicket>, String>) {
        match loaded {
            Ok(tickets) => {
                for ticket in tickets {
                    if self.wanted.contains(&ticket_id(&ticket.spec)) {
                        self.add_ticket(ticket);
                    }
                }
                self.publish_summary();
            }
            Err(err) => {
                tracing::error!(error = %err, "could not read the state of added tickets");
            }
        }
    }
}

impl Scheduler {
    /// `dmstrack retry` / `dmstrack forget`, applied in the loop that owns the state.
    pub(super) fn on_request(
        &mut self,
        request: Request,
        reply: tokio::sync::oneshot::Sender<Outcome>,
    ) {
        let who = requests::describe(&request);
        let matching: Vec<String> = self
            .tickets
            .iter()
            .filter(|(_, t)| request.matches(&t.record))
            .map(|(id, _)| id.clone())
            .collect();
        match request.action {
            Action::Retry => {
                let outcome = if matching.is_empty() {
                    Outcome {
                        code: 1,
                        message: format!("{who}: no such ticket in the config"),
                    }
                } else {
                    let retried = matching.iter().filter(|id| self.retry_ticket(id)).count();
                    if retried == 0 {
                        Outcome {
                            code: 0,
                            message: format!("{who}: nothing has failed; left alone"),
                        }
                    } else {
                        Outcome {
                            code: 0,
                            message: format!(
                                "{who}: {retried} ticket(s) back to waiting, polled now"
                            ),
                        }
                    }
                };
                let _ = reply.send(outcome);
            }
            Action::Forget => {
                if !matching.is_empty() {
                    let _ = reply.send(Outcome {
                        code: 1,
                        message: format!(
                            "{who} is in the config; remove it from the config (or its tickets file) first"
                        ),
                    });
                    return;
                }
                // Not watched: its record is only in the state; drop it and its partial download.
                let (writer, layout) = (self.writer.clone(), self.layout.clone());
                tokio::spawn(async move {
                    let outcome = forget(&writer, &layout, &request).await;
                    let _ = reply.send(outcome);
                });
            }
        }
    }

    /// Puts what failed of a ticket back to waiting; true when something had failed.
    fn retry_ticket(&mut self, id: &str) -> bool {
        let give_up_after = self.services.poll.give_up_after;
        let ticket = self.tickets.get_mut(id).expect("present");
        let before = ticket.record.state;
        let retried = requests::retry_record(&mut ticket.record, jiff::Timestamp::now());
        if retried.is_empty() {
            return false;
        }
        info!(order_id = ticket.spec.order_id, retried = ?retried, "retry asked for; back to waiting");
        ticket.export_failures = 0;
        ticket.deadline = deadline_of(&ticket.record, give_up_after);
        let after = ticket.record.state;
        if before != after {
            self.count(before, false);
            self.count(after, true);
        }
        if !after.is_terminal() {
            self.schedule(id, tokio::time::Instant::now());
        }
        self.save(id, Durability::Now);
        self.queue_post_work(id, false);
        self.publish_summary();
        true
    }
}

/// Drops the records a `forget` names (none of them watched) and their partial downloads.
async fn forget(
    writer: &super::state::StateWriter,
    layout: &crate::job::archive::ArchiveLayout,
    request: &Request,
) -> Outcome {
    let who = requests::describe(request);
    let records = match writer.load_all().await {
        Ok(records) => records,
        Err(err) => {
            return Outcome {
                code: 1,
                message: format!("{who}: {err}"),
            };
        }
    };
    let ids: Vec<String> = records
        .iter()
        .filter(|r| request.matches(r))
        .map(|r| r.id.clone())
        .collect();
    if ids.is_empty() {
        return Outcome {
            code: 1,
            message: format!("{who}: no state recorded"),
        };
    }
    for id in &ids {
        if let Err(err) = writer.remove(id.clone()).await {
            return Outcome {
                code: 1,
                message: format!("{who}: {err}"),
            };
        }
    }
    let layout = layout.clone();
    let parts: Vec<std::path::PathBuf> = ids.iter().map(|id| layout.part_path(id)).collect();
    let _ = tokio::task::spawn_blocking(move || {
        for part in parts {
            crate::job::download::remove_part(&part);
        }
    })
    .await;
    Outcome {
        code: 0,
        message: format!(
            "{who}: state of {} ticket(s) dropped (archives stay)",
            ids.len()
        ),
    }
}
