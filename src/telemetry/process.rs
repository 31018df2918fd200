//! `process_*` metrics (CPU time, memory, file descriptors, start time) and the free space of
//! the state and archive filesystems, read at each scrape.
//!
//! The process metrics carry the names and meanings of the official Prometheus clients'
//! process collectors, so dashboards and alerts written for any exporter work unchanged.
//! Everything comes from `/proc/self` and `statvfs`; on a system without them the metrics are
//! simply left out. The scrape runs off the async workers (`service::http`), because a
//! `statvfs` on a hung network filesystem can block.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The clock tick of the times in `/proc/<pid>/stat`. The kernel always reports them in
/// USER_HZ, which is 100 on every architecture dmstrack is built for (Prometheus' procfs
/// library makes the same assumption).
const USER_HZ: f64 = 100.0;

/// One reading of `/proc/self`.
#[derive(Debug, Clone, PartialEq)]
struct ProcessSample {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
    start_time_seconds: f64,
}

impl ProcessSample {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| boot_time(&text))?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        parse(&stat, &status, boot_time, &limits, open_fds)
    }
}

/// Builds a sample from the texts of `/proc/self/stat`, `/proc/self/status` and
/// `/proc/self/limits`, the boot time (`btime` of `/proc/stat`) and the open descriptors.
fn parse(
    stat: &str,
    status: &str,
    boot_time: u64,
    limits: &str,
    open_fds: u64,
) -> Option<ProcessSample> {
    // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state): field N of proc_pid_stat(5) is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let (utime, stime) = (field(14)?, field(15)?);
    let start_ticks = field(22)?;
    let virtual_bytes = field(23)?;
    let resident_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())?;
    let max_fds = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse::<u64>().ok());
    Some(ProcessSample {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        resident_bytes: resident_kib * 1024,
        virtual_bytes,
        open_fds,
        max_fds,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / USER_HZ,
    })
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Encodes one unlabelled metric.
fn encode_one(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// The `process_*` collector, registered once in [`crate::telemetry::Metrics::new`].
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let Some(sample) = ProcessSample::read() else {
            return Ok(());
        };
        encode_one(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            &ConstCounter::new(sample.cpu_seconds),
        )?;
        encode_one(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            &ConstGauge::new(sample.resident_bytes as f64),
        )?;
        encode_one(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            &ConstGauge::new(sample.virtual_bytes as f64),
        )?;
        encode_one(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            &ConstGauge::new(sample.open_fds as f64),
        )?;
        if let Some(max) = sample.max_fds {
            encode_one(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                &ConstGauge::new(max as f64),
            )?;
        }
        encode_one(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            &ConstGauge::new(sample.start_time_seconds),
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabel {
    dir: &'static str,
}

/// Free and total bytes of the filesystems holding the state and the archive folders
/// (`dmstrack_filesystem_avail_bytes{dir}`, `dmstrack_filesystem_size_bytes{dir}`), for the
/// disk-full alert. The folders are set once the daemon knows them.
#[derive(Debug, Default)]
pub struct FilesystemCollector {
    dirs: Mutex<Vec<(&'static str, PathBuf)>>,
}

impl FilesystemCollector {
    /// Measures `state` and `archive` from now on.
    pub fn watch(&self, state: &Path, archive: &Path) {
        *self.dirs.lock().expect("filesystem collector lock") =
            vec![("state", state.to_owned()), ("archive", archive.to_owned())];
    }
}

impl Collector for FilesystemCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let dirs = self.dirs.lock().expect("filesystem collector lock").clone();
        let readings: Vec<FilesystemReading> = dirs
            .iter()
            .filter_map(|(label, path)| {
                let vfs = rustix::fs::statvfs(path).ok()?;
                Some(FilesystemReading {
                    dir: label,
                    avail_bytes: vfs.f_bavail.saturating_mul(vfs.f_frsize),
                    size_bytes: vfs.f_blocks.saturating_mul(vfs.f_frsize),
                })
            })
            .collect();
        if readings.is_empty() {
            return Ok(());
        }
        let mut avail = encoder.encode_descriptor(
            "dmstrack_filesystem_avail_bytes",
            "Bytes available to dmstrack on the filesystem of its state or archive folder",
            None,
            MetricType::Gauge,
        )?;
        for r in &readings {
            let labels = DirLabel { dir: r.dir };
            ConstGauge::new(r.avail_bytes as f64).encode(avail.encode_family(&labels)?)?;
        }
        let mut size = encoder.encode_descriptor(
            "dmstrack_filesystem_size_bytes",
            "Size in bytes of the filesystem of dmstrack's state or archive folder",
            None,
            MetricType::Gauge,
        )?;
        for r in &readings {
            let labels = DirLabel { dir: r.dir };
            ConstGauge::new(r.size_bytes as f64).encode(size.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// One `statvfs` of a watched folder.
struct FilesystemReading {
    dir: &'static str,
    avail_bytes: u64,
    size_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_texts() {
        // A command name with a space and a parenthesis, as a process may name itself.
        let stat = "4242 (dms track) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 125 0 0 20 0 \
                    8 0 123456 987654321 4321 18446744073709551615";
        let status = "Name:\tdmstrack\nVmSize:\t  964504 kB\nVmRSS:\t   18432 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let sample = parse(stat, status, 1_700_000_000, limits, 17).unwrap();
        assert_eq!(
            sample,
            ProcessSample {
                cpu_seconds: 3.75,
                resident_bytes: 18432 * 1024,
                virtual_bytes: 987_654_321,
                open_fds: 17,
                max_fds: Some(1024),
                start_time_seconds: 1_700_000_000.0 + 1234.56,
            }
        );
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse(stat, status, 0, unlimited, 1).unwrap().max_fds, None);
    }

    #[test]
    fn this_process_is_measured() {
        let sample = ProcessSample::read().expect("/proc is there on Linux");
        assert!(sample.resident_bytes > 0);
        assert!(sample.open_fds > 0);
        let now = jiff::Timestamp::now().as_second() as f64;
        assert!(
            sample.start_time_seconds <= now + 1.0 && sample.start_time_seconds > now - 86_400.0,
            "{sample:?}"
        );
    }
}
