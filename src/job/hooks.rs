//! The `[hooks] on_archived` command: runs the configured argv (no shell) after a publish,
//! with placeholders and `DMSTRACK_*` variables filled in, a timeout, and its output's tail
//! logged. The outcome is returned for the caller to record; a hook never undoes an archive.

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

/// The outcome of the `on_archived` hook.
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
    let argv = settings.on_archived.as_ref()?;
    let values = Placeholders {
        dir,
        order_id,
        download_key_id,
    };
    let (result, detail) = run(argv, &values, label, settings.timeout).await;
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
        warn!(order_id, download_key_id, label = label_field, %detail, "on_archived hook failed");
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
        // The hook is not the service: it must not speak for it to systemd.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        // Nor may it inherit dmstrack's own secrets (a hook that needs credentials gets its own).
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
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
            warn!(order_id, download_key_id, label = label_field, %detail, "on_archived hook failed");
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
        info!(order_id, download_key_id, label = label_field, elapsed_ms, %stdout, %stderr, "on_archived hook succeeded");
    } else {
        warn!(order_id, download_key_id, label = label_field, result, %detail, elapsed_ms, %stdout, %stderr, "on_archived hook failed");
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
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;

    /// A folder with a `#!/bin/sh` script that runs `body`.
    struct Script {
        dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Script {
        fn new(body: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("hook.sh");
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            Self { dir, path }
        }

        fn file(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn settings(&self, args: &[&str], timeout: Duration) -> HookSettings {
            let mut argv = vec![self.path.to_str().unwrap().to_owned()];
            argv.extend(args.iter().map(|a| (*a).to_owned()));
            HookSettings {
                on_archived: Some(argv),
                timeout,
            }
        }
    }

    const KEY: &str = "e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd";

    /// Writes each argument and the DMSTRACK_* variables, one per line, to `out`.
    const RECORDER: &str = r#"out="$(dirname "$0")/out"
for arg in "$@"; do printf 'arg=%s\n' "$arg" >> "$out"; done
printf 'dir=%s\norder=%s\nkey=%s\nlabel=%s\nnotify=%s\n' "$DMSTRACK_ARCHIVE_DIR" "$DMSTRACK_ORDER_ID" "$DMSTRACK_DOWNLOAD_KEY_ID" "$DMSTRACK_LABEL" "${NOTIFY_SOCKET-unset}" >> "$out"
echo "shipped $1""#;

    #[tokio::test]
    async fn none_without_a_configured_hook() {
        let settings = HookSettings {
            on_archived: None,
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            run_on_archived(&settings, Path::new("/a"), 1, KEY, None).await,
            None
        );
    }

    #[tokio::test]
    async fn placeholders_and_environment_are_filled() {
        let script = Script::new(RECORDER);
        let archive = script.file("archive/11223344/{order_id}");
        let settings = script.settings(
            &[
                "{dir}",
                "--order={order_id}",
                "{order_id}/{download_key_id}.{unknown}",
                "plain",
            ],
            Duration::from_secs(10),
        );
        let outcome = run_on_archived(&settings, &archive, 11223344, KEY, Some("orders"))
            .await
            .unwrap();
        assert_eq!(outcome.result, RESULT_OK, "{outcome:?}");
        assert_eq!(outcome.detail, "exit status 0");
        let recorded = std::fs::read_to_string(script.file("out")).unwrap();
        let dir = archive.display();
        assert_eq!(
            recorded,
            format!(
                "arg={dir}\narg=--order=11223344\narg=11223344/{KEY}.{{unknown}}\narg=plain\n\
                 dir={dir}\norder=11223344\nkey={KEY}\nlabel=orders\nnotify=unset\n"
            )
        );
    }

    #[tokio::test]
    async fn label_variable_is_empty_without_a_label() {
        let script = Script::new(RECORDER);
        let settings = script.settings(&[], Duration::from_secs(10));
        let outcome = run_on_archived(&settings, Path::new("/srv/a"), 7, KEY, None)
            .await
            .unwrap();
        assert_eq!(outcome.result, RESULT_OK, "{outcome:?}");
        let recorded = std::fs::read_to_string(script.file("out")).unwrap();
        assert!(recorded.contains("\nlabel=\n"), "{recorded}");
    }

    #[tokio::test]
    async fn arguments_reach_the_program_without_a_shell() {
        let script = Script::new(RECORDER);
        let marker = script.file("pwned");
        let injection = format!(
            "$(touch {}); `touch {}` | ; *",
            marker.display(),
            marker.display()
        );
        let settings = script.settings(&[&injection, "$HOME"], Duration::from_secs(10));
        let outcome = run_on_archived(&settings, Path::new("/a"), 1, KEY, None)
            .await
            .unwrap();
        assert_eq!(outcome.result, RESULT_OK, "{outcome:?}");
        assert!(!marker.exists(), "the argument was interpreted by a shell");
        let recorded = std::fs::read_to_string(script.file("out")).unwrap();
        assert!(
            recorded.starts_with(&format!("arg={injection}\narg=$HOME\n")),
            "{recorded}"
        );
    }

    #[tokio::test]
    async fn non_zero_exit_fails_with_status_and_stderr() {
        let script = Script::new("echo 'progress' ; echo 'upload refused: quota' >&2; exit 3");
        let settings = script.settings(&[], Duration::from_secs(10));
        let outcome = run_on_archived(&settings, Path::new("/a"), 1, KEY, None)
            .await
            .unwrap();
        assert_eq!(outcome.result, RESULT_FAILED);
        assert_eq!(outcome.detail, "exit status 3: upload refused: quota");
    }

    #[tokio::test]
    async fn missing_program_fails_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("no-such-hook");
        let settings = HookSettings {
            on_archived: Some(vec![program.to_str().unwrap().to_owned(), "{dir}".into()]),
            timeout: Duration::from_secs(10),
        };
        let outcome = run_on_archived(&settings, Path::new("/a"), 1, KEY, None)
            .await
            .unwrap();
        assert_eq!(outcome.result, RESULT_FAILED);
        assert!(
            outcome
                .detail
                .starts_with(&format!("cannot start {}: ", program.display())),
            "{}",
            outcome.detail
        );
        assert!(
            outcome.detail.contains("No such file"),
            "{}",
            outcome.detail
        );
    }

    #[tokio::test]
    async fn non_executable_program_fails_with_the_reason() {
        let script = Script::new("exit 0");
        std::fs::set_permissions(&script.path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let outcome = run_on_archived(
            &script.settings(&[], Duration::from_secs(10)),
            Path::new("/a"),
            1,
            KEY,
            None,
        )
        .await
        .unwrap();
        assert_eq!(outcome.result, RESULT_FAILED);
        assert!(
            outcome.detail.contains("ermission denied"),
            "{}",
            outcome.detail
        );
    }

    /// Real time: the hook is a real process. The script starts a background child that would
    /// outlive it, to prove the whole process group is killed.
    #[tokio::test]
    async fn timeout_kills_the_hook_and_its_children() {
        let script = Script::new(
            r#"sleep 30 &
echo $! > "$(dirname "$0")/child.pid"
echo "still working" >&2
wait"#,
        );
        let settings = script.settings(&[], Duration::from_millis(300));
        let started = std::time::Instant::now();
        let outcome = run_on_archived(&settings, Path::new("/a"), 1, KEY, None)
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(outcome.result, RESULT_TIMEOUT, "{outcome:?}");
        assert_eq!(outcome.detail, "killed after 300ms: still working");
        assert!(took < Duration::from_secs(3), "took {took:?}");

        let pid = std::fs::read_to_string(script.file("child.pid")).unwrap();
        let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        // Killed means gone, or a zombie waiting for a reaper that is not us.
        while std::fs::read_to_string(&stat).is_ok_and(|s| !is_zombie(&s)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the hook's child survived"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn is_zombie(stat: &str) -> bool {
        // "pid (comm) S …": the state follows the last ')'.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_hook_group() {
        let script = Script::new(
            r#"sleep 30 &
echo $! > "$(dirname "$0")/child.pid"
wait"#,
        );
        let settings = script.settings(&[], Duration::from_secs(60));
        let pid_file = script.file("child.pid");
        let run = run_on_archived(&settings, Path::new("/a"), 1, KEY, None);
        tokio::select! {
            _ = run => panic!("the hook should still be running"),
            () = async {
                while std::fs::read_to_string(&pid_file).map_or(true, |s| !s.ends_with('\n')) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => {}
        }
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::fs::read_to_string(&stat).is_ok_and(|s| !is_zombie(&s)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the hook's child survived"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn only_the_tail_of_long_output_is_kept() {
        // 10 000 lines of stderr, then exit 1: the detail shows the last line, and reading the
        // whole stream did not block the hook.
        let script = Script::new(
            "i=0; while [ $i -lt 10000 ]; do echo \"line $i\" >&2; i=$((i+1)); done; exit 1",
        );
        let outcome = run_on_archived(
            &script.settings(&[], Duration::from_secs(20)),
            Path::new("/a"),
            1,
            KEY,
            None,
        )
        .await
        .unwrap();
        assert_eq!(outcome.result, RESULT_FAILED);
        assert_eq!(outcome.detail, "exit status 1: line 9999");
    }

    #[tokio::test]
    async fn tail_keeps_the_last_bytes() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let tail = Tail::collect(Some(reader));
        let mut expected = String::new();
        for i in 0..2000 {
            let line = format!("{i:05}\n");
            tokio::io::AsyncWriteExt::write_all(&mut writer, line.as_bytes())
                .await
                .unwrap();
            expected.push_str(&line);
        }
        drop(writer);
        let text = tail.finish().await;
        let expected = expected[expected.len() - TAIL_BYTES..].trim_end();
        assert_eq!(text, expected);
    }

    #[test]
    fn fill_replaces_in_one_pass() {
        let values = Placeholders {
            dir: Path::new("/srv/{order_id}"),
            order_id: 5,
            download_key_id: "{dir}",
        };
        assert_eq!(
            values.fill("{dir}:{download_key_id}:{order_id}{"),
            "/srv/{order_id}:{dir}:5{"
        );
        assert_eq!(values.fill("{{order_id}}"), "{5}");
        assert_eq!(values.fill("no placeholders"), "no placeholders");
    }
}
