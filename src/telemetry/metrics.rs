//! Prometheus metrics (`GET /metrics`, text format 0.0.4), built on `prometheus-client`.
//!
//! Labels are small fixed sets (action, outcome, status, result, state): never ticket ids,
//! URLs or keys, which would make the series count grow without bound and leak identifiers.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::process::{FilesystemCollector, ProcessCollector};
use crate::telemetry::summary::Summary;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionOutcome {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Action {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookResult {
    hook: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: &'static str,
}

type HistogramFamily = Family<Action, Histogram, fn() -> Histogram>;

/// Every metric dmstrack exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    api_requests: Family<ActionOutcome, Counter>,
    api_duration: HistogramFamily,
    polls: Family<Status, Counter>,
    downloads: Family<ResultLabel, Counter>,
    download_bytes: Counter,
    tickets: Family<State, Gauge>,
    last_archive: Gauge<f64, AtomicU64>,
    hooks: Family<HookResult, Counter>,
    uploads: Family<ResultLabel, Counter>,
    upload_bytes: Counter,
    upload_objects: Family<ResultLabel, Counter>,
    upload_failures: Family<Operation, Counter>,
    upload_queue: Gauge,
    upload_duration: Histogram,
    retention_removed: Counter,
    ticket_files: Family<State, Gauge>,
    state_commits: Counter,
    state_records: Counter,
    state_commit_duration: Histogram,
    state_commit_failures: Counter,
    ready: Gauge,
    filesystems: std::sync::Arc<FilesystemCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn api_histogram() -> Histogram {
    // 10 ms … ~41 s: covers a fast answer through a slow gateway up to the request timeout.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

impl Metrics {
    /// A registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let api_requests = Family::<ActionOutcome, Counter>::default();
        registry.register(
            "dmstrack_api_requests",
            "DMS API attempts by action and outcome",
            api_requests.clone(),
        );
        let api_duration: HistogramFamily = Family::new_with_constructor(api_histogram);
        registry.register(
            "dmstrack_api_request_duration_seconds",
            "Duration of one DMS API attempt, from send to the end of the body",
            api_duration.clone(),
        );
        let polls = Family::<Status, Counter>::default();
        registry.register(
            "dmstrack_polls",
            "Status polls by the DownloadStatus answered (or error)",
            polls.clone(),
        );
        let downloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "dmstrack_downloads",
            "Download jobs by how they ended",
            downloads.clone(),
        );
        let download_bytes = Counter::default();
        registry.register(
            "dmstrack_download_bytes",
            "Bytes of export zips received",
            download_bytes.clone(),
        );
        let tickets = Family::<State, Gauge>::default();
        registry.register(
            "dmstrack_tickets",
            "Watched tickets by state",
            tickets.clone(),
        );
        let last_archive = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "dmstrack_last_archive_timestamp_seconds",
            "Unix time of the last archive published by this process",
            last_archive.clone(),
        );
        let hooks = Family::<HookResult, Counter>::default();
        registry.register(
            "dmstrack_hook_runs",
            "Hook runs by hook (on_archived, on_uploaded) and result (ok, failed, timeout)",
            hooks.clone(),
        );
        let uploads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "dmstrack_uploads",
            "Upload jobs by how they ended (uploaded, retry, failed, cancelled)",
            uploads.clone(),
        );
        let upload_bytes = Counter::default();
        registry.register(
            "dmstrack_upload_bytes",
            "Bytes sent to the upload target",
            upload_bytes.clone(),
        );
        let upload_objects = Family::<ResultLabel, Counter>::default();
        registry.register(
            "dmstrack_upload_objects",
            "Objects confirmed in the upload target: sent, or skipped (already there)",
            upload_objects.clone(),
        );
        let upload_failures = Family::<Operation, Counter>::default();
        registry.register(
            "dmstrack_upload_request_failures",
            "Failed requests to the upload target by operation (each retry counts)",
            upload_failures.clone(),
        );
        let upload_queue = Gauge::default();
        registry.register(
            "dmstrack_upload_queue",
            "Tickets whose upload is pending or running",
            upload_queue.clone(),
        );
        // 1 s … ~9 h: from a small zip on a LAN to a large one behind retries.
        let upload_duration = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "dmstrack_upload_duration_seconds",
            "Time from publish to a confirmed upload, per ticket",
            upload_duration.clone(),
        );
        let retention_removed = Counter::default();
        registry.register(
            "dmstrack_retention_removed",
            "Local archive folders removed by archive.retention",
            retention_removed.clone(),
        );
        let state_commits = Counter::default();
        registry.register(
            "dmstrack_state_commits",
            "Transactions committed to the state database (one fsync each)",
            state_commits.clone(),
        );
        let state_records = Counter::default();
        registry.register(
            "dmstrack_state_records_written",
            "Ticket records written to the state database",
            state_records.clone(),
        );
        // 100 µs … ~1.6 s: a local SSD through slow network block storage.
        let state_commit_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "dmstrack_state_commit_duration_seconds",
            "Duration of one state commit, fsync included",
            state_commit_duration.clone(),
        );
        let state_commit_failures = Counter::default();
        registry.register(
            "dmstrack_state_commit_failures",
            "State commits that failed (the records are kept and retried)",
            state_commit_failures.clone(),
        );
        let ticket_files = Family::<State, Gauge>::default();
        registry.register(
            "dmstrack_ticket_files",
            "Files of the tickets folder: ok, or invalid (skipped)",
            ticket_files.clone(),
        );
        let build_info = Family::<Version, Gauge>::default();
        build_info
            .get_or_create(&Version {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "dmstrack_build_info",
            "Build information; the value is always 1",
            build_info,
        );
        let ready = Gauge::default();
        registry.register(
            "dmstrack_ready",
            "1 when /readyz answers 200 (config, credentials, and the API answered recently or \
             nothing is pending), else 0; set at each scrape",
            ready.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        let filesystems = std::sync::Arc::new(FilesystemCollector::default());
        registry.register_collector(Box::new(std::sync::Arc::clone(&filesystems)));
        // Series the alert rules watch with increase() exist from the start at 0: a counter
        // that first appears at 1 shows no increase, so its first event would go unnoticed.
        // (The action names are the DMS API's, as the client labels them.)
        for action in [
            "QueryDataTrackResultDownloadStatus",
            "DownloadDataTrackResult",
        ] {
            for outcome in ["success", "auth_error"] {
                let _ = api_requests.get_or_create(&ActionOutcome { action, outcome });
            }
        }
        for result in ["uploaded", "failed"] {
            let _ = uploads.get_or_create(&ResultLabel { result });
        }
        for hook in ["on_archived", "on_uploaded"] {
            for result in ["ok", "failed", "timeout"] {
                let _ = hooks.get_or_create(&HookResult { hook, result });
            }
        }
        let metrics = Self {
            registry,
            api_requests,
            api_duration,
            polls,
            downloads,
            download_bytes,
            tickets,
            last_archive,
            hooks,
            uploads,
            upload_bytes,
            upload_objects,
            upload_failures,
            upload_queue,
            upload_duration,
            retention_removed,
            ticket_files,
            state_commits,
            state_records,
            state_commit_duration,
            state_commit_failures,
            ready,
            filesystems,
        };
        metrics.set_tickets(&Summary::default());
        metrics
    }

    /// One API attempt ended.
    pub fn api_request(&self, action: &'static str, outcome: &'static str, seconds: f64) {
        self.api_requests
            .get_or_create(&ActionOutcome { action, outcome })
            .inc();
        self.api_duration
            .get_or_create(&Action { action })
            .observe(seconds);
    }

    /// A status poll was answered with this status (or `error`, or `other` for a status this
    /// version does not know: a label never takes a value from the server).
    pub fn poll(&self, status: &'static str) {
        self.polls.get_or_create(&Status { status }).inc();
    }

    /// A download job ended (`archived`, `retry`, `failed`, `cancelled`).
    pub fn download(&self, result: &'static str) {
        self.downloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Bytes received from OSS.
    pub fn download_bytes(&self, bytes: u64) {
        self.download_bytes.inc_by(bytes);
    }

    /// An archive was published now.
    pub fn archived_now(&self) {
        let now = jiff::Timestamp::now();
        self.last_archive.set(now.as_millisecond() as f64 / 1000.0);
    }

    /// A hook ran (`ok`, `failed`, `timeout`).
    pub fn hook(&self, hook: &'static str, result: &str) {
        let result = match result {
            "ok" => "ok",
            "timeout" => "timeout",
            _ => "failed",
        };
        self.hooks.get_or_create(&HookResult { hook, result }).inc();
    }

    /// An upload job ended (`uploaded`, `retry`, `failed`, `cancelled`).
    pub fn upload(&self, result: &'static str) {
        self.uploads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Bytes sent to the upload target.
    pub fn upload_bytes(&self, bytes: u64) {
        self.upload_bytes.inc_by(bytes);
    }

    /// An object was confirmed (`sent`, `skipped`).
    pub fn upload_object(&self, result: &'static str) {
        self.upload_objects
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A request to the upload target failed.
    pub fn upload_failure(&self, operation: &'static str) {
        self.upload_failures
            .get_or_create(&Operation { operation })
            .inc();
    }

    /// Tickets waiting for or running an upload.
    pub fn set_upload_queue(&self, tickets: usize) {
        self.upload_queue.set(tickets as i64);
    }

    /// A ticket's upload was confirmed this long after its publish.
    pub fn upload_took(&self, seconds: f64) {
        self.upload_duration.observe(seconds);
    }

    /// The tickets folder's files: `ok` ones and `invalid` (skipped) ones.
    pub fn set_ticket_files(&self, ok: usize, invalid: usize) {
        for (state, count) in [("ok", ok), ("invalid", invalid)] {
            self.ticket_files
                .get_or_create(&State { state })
                .set(count as i64);
        }
    }

    /// `archive.retention` removed a local folder.
    pub fn retention_removed(&self) {
        self.retention_removed.inc();
    }

    /// A state commit of `records` records took `seconds`.
    pub fn state_commit(&self, records: usize, seconds: f64) {
        self.state_commits.inc();
        self.state_records.inc_by(records as u64);
        self.state_commit_duration.observe(seconds);
    }

    /// A state commit failed.
    pub fn state_commit_failed(&self) {
        self.state_commit_failures.inc();
    }

    /// State commits so far.
    pub fn state_commits(&self) -> u64 {
        self.state_commits.get()
    }

    /// Whether `/readyz` would answer 200 now.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Report the free space of the filesystems holding these folders from now on.
    pub fn watch_filesystems(&self, state: &std::path::Path, archive: &std::path::Path) {
        self.filesystems.watch(state, archive);
    }

    /// The per-state ticket gauges.
    pub fn set_tickets(&self, summary: &Summary) {
        for (state, count) in [
            ("pending", summary.pending),
            ("waiting", summary.waiting),
            ("downloading", summary.downloading),
            ("extracting", summary.extracting),
            ("archived", summary.archived),
            ("failed", summary.failed),
        ] {
            self.tickets
                .get_or_create(&State { state })
                .set(count as i64);
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let metrics = Metrics::new();
        metrics.api_request("QueryDataTrackResultDownloadStatus", "success", 0.05);
        metrics.poll("DOWNLOAD_SUCCESS");
        metrics.download("archived");
        metrics.download_bytes(1234);
        metrics.hook("on_archived", "ok");
        metrics.archived_now();
        metrics.set_ready(true);
        let dir = tempfile::tempdir().unwrap();
        metrics.watch_filesystems(dir.path(), dir.path());
        let text = metrics.encode();
        for expected in [
            "dmstrack_api_requests_total{action=\"QueryDataTrackResultDownloadStatus\",outcome=\"success\"} 1",
            "dmstrack_api_request_duration_seconds_bucket{action=\"QueryDataTrackResultDownloadStatus\",le=\"0.08\"} 1",
            "dmstrack_polls_total{status=\"DOWNLOAD_SUCCESS\"} 1",
            "dmstrack_downloads_total{result=\"archived\"} 1",
            "dmstrack_download_bytes_total 1234",
            "dmstrack_tickets{state=\"waiting\"} 0",
            "dmstrack_hook_runs_total{hook=\"on_archived\",result=\"ok\"} 1",
            "dmstrack_build_info{version=\"",
            "# TYPE dmstrack_last_archive_timestamp_seconds gauge",
            "dmstrack_ready 1",
            "# TYPE process_cpu_seconds_total counter",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "dmstrack_filesystem_avail_bytes{dir=\"state\"} ",
            "dmstrack_filesystem_size_bytes{dir=\"archive\"} ",
            "dmstrack_uploads_total{result=\"failed\"} 0",
            "dmstrack_hook_runs_total{hook=\"on_uploaded\",result=\"timeout\"} 0",
            "dmstrack_api_requests_total{action=\"DownloadDataTrackResult\",outcome=\"auth_error\"} 0",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}

/// Metrics and health, shared by the client, the downloader, the scheduler and the listener.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// Prometheus metrics.
    pub metrics: std::sync::Arc<Metrics>,
    /// Liveness and readiness.
    pub health: std::sync::Arc<crate::telemetry::health::Health>,
}
