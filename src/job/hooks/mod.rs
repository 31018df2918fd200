//! The `[hooks]` commands: `on_archived` after a publish, `on_uploaded` after a confirmed
//! upload. Runs the configured argv (no shell) with placeholders and `DMSTRACK_*` variables
//! filled in, a timeout, and its output's tail logged. The outcome is returned for the caller
//! to record (and to run the hook again, up to `hooks.max_attempts`); a hook never undoes an
//! archive or an upload.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use crate::config::HookSettings;

/// How much of the end of stdout and of stderr is kept for the log.
const TAIL_BYTES: usize = 2048;

/// After the hook exits, how long its output pipes may stay open. A process it left in the
/// background can hold them open forever; its output is then no longer read.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// After killing a timed-out hook, how long to wait for it to be gone.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// The outcome of one run of a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOutcome {
    /// `ok`, `failed` or `timeout`.
    pub result: String,
    /// Exit status or the reason, for people.
    pub detail: String,
    /// When it finished.
    pub finished_at: jiff::Timestamp,
}

/// How much of stderr goes into [`HookOutcome::detail`] (the full tail is in the log).
const DETAIL_STDERR_CHARS: usize = 200;

/// [`HookOutcome::result`] of a hook that exited 0.
pub const RESULT_OK: &str = "ok";
/// [`HookOutcome::result`] of a hook that could not start or exited non-zero.
pub const RESULT_FAILED: &str = "failed";
/// [`HookOutcome::result`] of a hook killed at its timeout.
pub const RESULT_TIMEOUT: &str = "timeout";

/// Runs `[hooks] on_archived` for the archive just published at `dir`. `None` when no hook is
/// configured.
///
/// The argv runs directly (no shell), with `{dir}`, `{order_id}` and `{download_key_id}`
/// replaced anywhere inside each element, stdin from /dev/null, and the environment plus
/// `DMSTRACK_ARCHIVE_DIR`, `DMSTRACK_ORDER_ID`, `DMSTRACK_DOWNLOAD_KEY_ID` and `DMSTRACK_LABEL`
/// (empty without a label). The hook runs in its own process group: at the timeout, or when this
/// future is dropped, the whole group is killed. Processes it leaves behind after a normal exit
/// are left alone (the group id may no longer be ours to signal).
///
/// The timeout runs on tokio's clock while the hook runs in real time: under paused time
/// (`start_paused` tests) the runtime idles while it waits for the process, auto-advance jumps
/// to the deadline, and a configured hook ends as `timeout`. Such tests leave hooks out.
pub async fn run_on_archived(
    settings: &HookSettings,
    dir: &Path,
    order_id: i64,
    download_key_id: &str,
    label: Option<&str>,
) -> Option<HookOutcome> {
    let context = HookContext {
        dir,
        order_id,
        download_key_id,
        label,
        url: None,
    };
    run_hook(HookKind::Archived, settings, &context).await
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// `hooks.on_archived`, after a publish.
    #[serde(rename = "on_archived")]
    Archived,
    /// `hooks.on_uploaded`, after a confirmed upload.
    #[serde(rename = "on_uploaded")]
    Uploaded,
}

impl HookKind {
    /// The config key.
    pub fn name(self) -> &'static str {
        match self {
            Self::Archived => "on_archived",
            Self::Uploaded => "on_uploaded",
        }
    }

    /// The configured argv, if any.
    pub fn argv(self, settings: &HookSettings) -> Option<&[String]> {
        match self {
            Self::Archived => settings.on_archived.as_deref(),
            Self::Uploaded => settings.on_uploaded.as_deref(),
        }
    }
}

/// What a hook is told about its ticket.
#[derive(Debug, Clone, Copy)]
pub struct HookContext<'a> {
    /// The archive folder.
    pub dir: &'a Path,
    /// The ticket.
    pub order_id: i64,
    /// The export's key.
    pub download_key_id: &'a str,
    /// The config label.
    pub label: Option<&'a str>,
    /// The remote folder (`on_uploaded` only).
    pub url: Option<&'a str>,
}

/// Runs the `kind` hook for one ticket, if it is configured. See [`run_on_archived`].
pub async fn run_hook(
    kind: HookKind,
    settings: &HookSettings,
    context: &HookContext<'_>,
) -> Option<HookOutcome> {
    let argv = kind.argv(settings)?;
    let values = Placeholders {
        dir: context.dir,
        order_id: context.order_id,
        download_key_id: context.download_key_id,
        url: context.url.unwrap_or(""),
    };
    let (result, detail) = run(kind, argv, &values, context.label, settings.timeout).await;
    Some(HookOutcome {
        result: result.to_owned(),
        detail,
        finished_at: jiff::Timestamp::now(),
    })
}

/// The values the placeholders stand for.
struct Placeholders<'a> {
    dir: &'a Path,
    order_id: i64,
    download_key_id: &'a str,
    url: &'a str,
}

impl Placeholders<'_> {
    /// Replaces every placeholder in one pass, so a value that happens to contain `{dir}` (a
    /// folder name, say) is not replaced again. Unknown `{…}` text is kept as it is.
    fn fill(&self, arg: &str) -> OsString {
        let order_id = self.order_id.to_string();
        let mut out = OsString::with_capacity(arg.len());
        let mut rest = arg;
        while let Some(open) = rest.find('{') {
            out.push(&rest[..open]);
            rest = &rest[open..];
            let (value, len) = if rest.starts_with("{dir}") {
                (self.dir.as_os_str(), "{dir}".len())
            } else if rest.starts_with("{order_id}") {
                (order_id.as_ref(), "{order_id}".len())
            } else if rest.starts_with("{download_key_id}") {
                (self.download_key_id.as_ref(), "{download_key_id}".len())
            } else if rest.starts_with("{url}") {
                (self.url.as_ref(), "{url}".len())
            } else {
                ("{".as_ref(), 1)
            };
            out.push(value);
            rest = &rest[len..];
        }
        out.push(rest);
        out
    }
}

async fn run(
    kind: HookKind,
    argv: &[String],
    values: &Placeholders<'_>,
    label: Option<&str>,
    timeout: Duration,
) -> (&'static str, String) {
    let order_id = values.order_id;
    let download_key_id = values.download_key_id;
    let label_field = label.unwrap_or("");
    let Some((program, args)) = argv.split_first() else {
        let detail = "no program configured".to_owned();
        warn!(order_id, download_key_id, label = label_field, hook = kind.name(), %detail, "hook failed");
        return (RESULT_FAILED, detail);
    };
    let program = values.fill(program);
    let mut command = Command::new(&program);
    command
        .args(args.iter().map(|arg| values.fill(arg)))
        .env("DMSTRACK_ARCHIVE_DIR", values.dir)
        .env("DMSTRACK_ORDER_ID", order_id.to_string())
        .env("DMSTRACK_DOWNLOAD_KEY_ID", download_key_id)
        .env("DMSTRACK_LABEL", label_field)
        .env("DMSTRACK_UPLOAD_URL", values.url)
        // The hook is not the service: it must not speak for it to systemd.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        // Nor may it inherit dmstrack's own secrets (a hook that needs credentials gets its own).
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);

    let started = tokio::time::Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let detail = format!("cannot start {}: {e}", program.to_string_lossy());
            warn!(order_id, download_key_id, label = label_field, hook = kind.name(), %detail, "hook failed");
            return (RESULT_FAILED, detail);
        }
    };
    let stdout = Tail::collect(child.stdout.take());
    let stderr = Tail::collect(child.stderr.take());
    // Declared after `child`, so on drop it fires first, while the leader is not yet reaped
    // and the group id cannot have been reused.
    let mut group = GroupKiller::new(child.id());

    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let (result, mut detail) = match waited {
        Ok(Ok(status)) => {
            group.disarm();
            if status.success() {
                (RESULT_OK, describe(status))
            } else {
                (RESULT_FAILED, describe(status))
            }
        }
        Ok(Err(e)) => {
            group.kill();
            let _ = child.start_kill();
            (RESULT_FAILED, format!("cannot wait for the hook: {e}"))
        }
        Err(_elapsed) => {
            group.kill();
            let _ = child.start_kill();
            // SIGKILL cannot be caught, but a process stuck in the kernel (say on a hung NFS
            // mount) dies only when the call returns: do not wait for that forever. Unreaped,
            // the group stays safe to signal, and kill_on_drop hands the leader to tokio's reaper.
            if let Ok(Ok(_)) = tokio::time::timeout(REAP_GRACE, child.wait()).await {
                group.disarm();
            }
            (
                RESULT_TIMEOUT,
                format!("killed after {}", humantime::format_duration(timeout)),
            )
        }
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let stdout = stdout.finish().await;
    let stderr = stderr.finish().await;
    if result != RESULT_OK
        && let Some(line) = last_line(&stderr)
    {
        detail.push_str(": ");
        detail.push_str(&line);
    }
    if result == RESULT_OK {
        info!(order_id, download_key_id, label = label_field, hook = kind.name(), elapsed_ms, %stdout, %stderr, "hook succeeded");
    } else {
        warn!(order_id, download_key_id, label = label_field, hook = kind.name(), result, %detail, elapsed_ms, %stdout, %stderr, "hook failed");
    }
    (result, detail)
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The last non-empty line of `text`, cut to its last [`DETAIL_STDERR_CHARS`] characters.
fn last_line(text: &str) -> Option<String> {
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let skip = line.chars().count().saturating_sub(DETAIL_STDERR_CHARS);
    Some(line.chars().skip(skip).collect())
}

/// Kills the hook's process group (`kill(-pgid, SIGKILL)`), which `kill_on_drop` alone does not
/// do: a hook that is a script would otherwise leave its children running.
#[derive(Debug)]
struct GroupKiller {
    group: Option<rustix::process::Pid>,
}

impl GroupKiller {
    fn new(leader: Option<u32>) -> Self {
        let group = leader
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw);
        Self { group }
    }

    /// Kills the group now. Only while the leader is unreaped: until then its id cannot be
    /// handed to another process group.
    fn kill(&mut self) {
        if let Some(group) = self.group.take() {
            // ESRCH (the group is already gone) is the expected failure and needs no report.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }

    /// The leader has been reaped: the group id is no longer safe to signal.
    fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last [`TAIL_BYTES`] of one output stream, read by a task of its own so the hook never
/// blocks on a full pipe.
#[derive(Debug)]
struct Tail {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: Option<AbortOnDropHandle<()>>,
}

impl Tail {
    fn collect<R: AsyncRead + Unpin + Send + 'static>(stream: Option<R>) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let reader = stream.map(|mut stream| {
            let bytes = Arc::clone(&bytes);
            AbortOnDropHandle::new(tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    let mut tail = bytes.lock().unwrap_or_else(|e| e.into_inner());
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * TAIL_BYTES {
                        let excess = tail.len() - TAIL_BYTES;
                        tail.drain(..excess);
                    }
                }
            }))
        });
        Self { bytes, reader }
    }

    /// Waits up to [`DRAIN_GRACE`] for the end of the stream, then returns the tail as text.
    async fn finish(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            // On timeout the handle is dropped, which aborts the reader.
            let _ = tokio::time::timeout(DRAIN_GRACE, reader).await;
        }
        let tail = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let start = tail.len().saturating_sub(TAIL_BYTES);
        String::from_utf8_lossy(&tail[start..])
            .trim_end()
            .to_owned()
    }
}

#[cfg(test)]
mod tests;
