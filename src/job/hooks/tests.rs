//! Tests of `hooks`.
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
        crate::sim::write_executable(&path, &format!("#!/bin/sh\n{body}\n")).unwrap();
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
            on_uploaded: None,
            timeout,
            max_attempts: 3,
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
        on_uploaded: None,
        timeout: Duration::from_secs(5),
        max_attempts: 3,
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
        on_uploaded: None,
        timeout: Duration::from_secs(10),
        max_attempts: 3,
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
        url: "oss://b/p/5/{dir}/",
    };
    assert_eq!(
        values.fill("{dir}:{download_key_id}:{order_id}{"),
        "/srv/{order_id}:{dir}:5{"
    );
    assert_eq!(values.fill("{url}"), "oss://b/p/5/{dir}/");
    assert_eq!(values.fill("{{order_id}}"), "{5}");
    assert_eq!(values.fill("no placeholders"), "no placeholders");
}
