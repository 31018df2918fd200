//! Applying a new config to the running loop: the difference only. Tickets that stay keep
//! running (a download in progress is never disturbed), removed ones stop (their partial
//! download kept for a later resume), new ones are loaded off the loop and then start.

use std::collections::HashMap;

use tracing::info;

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
        // Deadlines follow a changed give_up_after.
        let give_up_after = self.services.poll.give_up_after;
        for ticket in self.tickets.values_mut() {
            ticket.deadline = deadline_of(&ticket.record, give_up_after);
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
