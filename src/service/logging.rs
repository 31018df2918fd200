//! Log output: `--log-format auto|text|json` and `--log-level` (or `RUST_LOG`), on stderr.
//!
//! `auto` writes text on a terminal or the systemd journal (which adds its own timestamps and
//! metadata) and JSON lines anywhere else (containers, files), so log pipelines get fields
//! without parsing. stdout is kept for command output (`query`, `status`, `export`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal or the journal, JSON lines otherwise.
    #[default]
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// What `auto` resolves to in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    Terminal,
    Journal,
    Json,
}

fn resolve(format: LogFormat) -> Resolved {
    let terminal = std::io::stderr().is_terminal();
    match format {
        LogFormat::Json => Resolved::Json,
        LogFormat::Text if terminal => Resolved::Terminal,
        LogFormat::Text => Resolved::Journal,
        LogFormat::Auto if terminal => Resolved::Terminal,
        LogFormat::Auto if stderr_is_journal() => Resolved::Journal,
        LogFormat::Auto => Resolved::Json,
    }
}

/// systemd sets `JOURNAL_STREAM=<device>:<inode>` for a service whose stderr goes to the
/// journal; it only counts when it matches our actual stderr (a child may inherit it).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// The filter: `--log-level`, else `RUST_LOG`, else `info`. Noisy dependencies stay at `warn`.
fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    let directives = match level {
        Some(level) => level.to_owned(),
        None => std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "info".into()),
    };
    let with_quiet_deps =
        format!("hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn,{directives}");
    EnvFilter::try_new(&with_quiet_deps)
        .map_err(|e| format!("invalid log level {directives:?}: {e}"))
}

/// Installs the global subscriber. Call once, first thing.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter = filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match resolve(format) {
        Resolved::Terminal => builder.with_ansi(true).try_init(),
        Resolved::Journal => builder.with_ansi(false).without_time().try_init(),
        Resolved::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
