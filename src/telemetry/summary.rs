//! The per-state ticket counts and the last problem: what `STATUS=`, the `dmstrack_tickets`
//! gauges and readiness report. The watch loop keeps it current as tickets move.

/// Counts per state, and the last problem, for `STATUS=` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Not polled yet.
    pub pending: usize,
    /// Waiting for DMS.
    pub waiting: usize,
    /// Downloading.
    pub downloading: usize,
    /// Extracting.
    pub extracting: usize,
    /// Archived.
    pub archived: usize,
    /// Failed.
    pub failed: usize,
    /// The most recent error of any ticket.
    pub last_error: Option<String>,
}

impl Summary {
    /// Tickets not yet archived or failed.
    pub fn active(&self) -> usize {
        self.pending + self.waiting + self.downloading + self.extracting
    }

    /// One line for `STATUS=`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} waiting, {} downloading, {} archived, {} failed",
            self.pending + self.waiting,
            self.downloading + self.extracting,
            self.archived,
            self.failed
        );
        if let Some(error) = &self.last_error {
            line.push_str("; last error: ");
            line.push_str(&error.chars().take(200).collect::<String>());
        }
        line
    }
}
