//! The real `dmstrack` binary against simulators served from the test process: a SIGKILL or
//! SIGTERM in the middle of a download, and the exit codes of `run --once`.
//!
//! These run on real time (a multi-threaded runtime serves the simulators while the child
//! process works), with fast polls so each test takes a few seconds.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmstrack::sim::dms::{DmsSimulator, StatusStep, UrlSource};
use dmstrack::sim::oss::{OssFault, OssSimulator};
use dmstrack::sim::zipgen::{SampleSpec, sample_zip};

use crate::support::{
    self, AK_ID, AK_SECRET, DaemonConfig, assert_files_match_zip, assert_no_secrets, dmstrack,
    read_json, tree,
};

const KEY: &str = "e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd";
const KEY2: &str = "3f8e6d21-0c7b-4a55-8e19-6d2c4b7a9f02";
const OBJECT: &str = "exports/x_UNDO_31201_208.zip";

/// A temp folder, both simulators, and the config the binary runs with.
struct Scene {
    dir: tempfile::TempDir,
    dms: DmsSimulator,
    oss: Arc<OssSimulator>,
    config: DaemonConfig,
}

impl Scene {
    async fn new() -> Self {
        let oss = Arc::new(OssSimulator::start().await.unwrap());
        let dms = DmsSimulator::start().await.unwrap();
        dms.add_access_key(AK_ID, AK_SECRET);
        let mut config = DaemonConfig::new(&dms.endpoint(), "v3");
        config
            .set("poll", "initial_interval", "\"100ms\"")
            .set("poll", "max_interval", "\"200ms\"")
            .set("download", "read_timeout", "\"30s\"");
        Self {
            dir: tempfile::tempdir().unwrap(),
            dms,
            oss,
            config,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn final_dir(&self, order_id: i64, key: &str) -> PathBuf {
        self.root()
            .join("archive")
            .join(order_id.to_string())
            .join(key)
    }

    fn part(&self, order_id: i64, key: &str) -> PathBuf {
        self.root().join(format!(
            "archive/.dmstrack/downloads/{order_id}-{key}.zip.part"
        ))
    }

    /// Freshly presigned URLs of `object`, one per answer.
    fn fresh_urls(&self, object: &str) -> UrlSource {
        let oss = Arc::clone(&self.oss);
        let object = object.to_owned();
        UrlSource::generated(move || oss.presign(&object, Duration::from_secs(3600)))
    }

    /// `dmstrack run -c <config>` plus `args`, stderr into `<name>.log` in the scene.
    fn command(&self, name: &str, args: &[&str]) -> std::process::Command {
        let config = self.config.write(self.root());
        let log = std::fs::File::create(self.root().join(format!("{name}.log"))).unwrap();
        let mut command = dmstrack();
        command
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.root().join(format!("{name}.log"))).unwrap()
    }

    /// Runs `dmstrack run --once` to its end; returns the exit code.
    async fn run_once(&self, name: &str) -> i32 {
        let mut command = self.command(name, &["--once"]);
        let status = tokio::task::spawn_blocking(move || command.status().unwrap())
            .await
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

/// A zip of about half a MiB, so a download can be stopped well inside it.
fn big_zip() -> Vec<u8> {
    let zip = sample_zip(&SampleSpec::rollback(3 << 20, 2, 2027));
    assert!(zip.len() > 256 << 10, "{} bytes", zip.len());
    zip
}

/// Polls `done` every 20 ms for up to 20 s; fails if the child exits meanwhile.
async fn wait_for(what: &str, child: &mut Child, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dmstrack exited ({status}) before {what}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Sets up one ticket whose first download stalls after `half` bytes; starts the binary and
/// waits until those bytes are in the `.part` file.
async fn stalled_download(scene: &mut Scene, args: &[&str]) -> (Vec<u8>, u64, Child) {
    let zip = big_zip();
    let half = zip.len() as u64 / 2;
    scene.oss.put_object(OBJECT, zip.clone());
    scene.oss.inject(OBJECT, OssFault::StallAfter(half));
    scene.dms.script_ticket(
        7,
        KEY,
        [
            StatusStep::Downloading,
            StatusStep::success(scene.fresh_urls(OBJECT), 69),
        ],
    );
    scene.config.ticket(7, KEY, "interrupted");
    let mut child = scene.command("first", args).spawn().unwrap();
    let part = scene.part(7, KEY);
    wait_for("the part file holds the bytes sent", &mut child, || {
        file_len(&part) == half
    })
    .await;
    (zip, half, child)
}

/// The restart resumed with `Range` from `from` and published the right archive.
fn assert_resumed_and_archived(scene: &Scene, zip: &[u8], from: u64) {
    let gets: Vec<_> = scene
        .oss
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range, Some(format!("bytes={from}-")));
    assert_eq!(gets[1].status, 206);
    let dir = scene.final_dir(7, KEY);
    assert_files_match_zip(&dir, zip);
    let manifest = read_json(&dir.join("manifest.json"));
    assert_eq!(
        manifest["source"]["sha256"],
        dmstrack::net::signer::sha256_hex(zip)
    );
    assert!(!scene.part(7, KEY).exists(), "the part file is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_download_then_restart_resumes_with_range() {
    let mut scene = Scene::new().await;
    let (zip, half, mut child) = stalled_download(&mut scene, &["--once"]).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        file_len(&scene.part(7, KEY)),
        half,
        "the killed process kept its bytes"
    );
    assert!(!scene.root().join("archive/7").exists());

    let code = scene.run_once("second").await;
    assert_eq!(code, 0, "{}", scene.log("second"));
    assert_resumed_and_archived(&scene, &zip, half);
    assert!(
        scene.log("second").contains("resuming download with Range"),
        "{}",
        scene.log("second")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_promptly_keeps_the_part_and_a_restart_finishes() {
    let mut scene = Scene::new().await;
    let (zip, half, mut child) = stalled_download(&mut scene, &[]).await;
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(5) {
            child.kill().unwrap();
            panic!("still running 5 s after SIGTERM: {}", scene.log("first"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", scene.log("first"));
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "stopped after {:?}",
        sent.elapsed()
    );
    assert_eq!(file_len(&scene.part(7, KEY)), half, "the part file is kept");
    assert!(
        !scene.root().join("archive/7").exists(),
        "no partial archive is published"
    );
    assert_eq!(
        tree(&scene.root().join("archive/.dmstrack/staging")),
        Vec::<String>::new()
    );
    let record = support::state_record(&scene.root().join("state"), 7, KEY).unwrap();
    assert!(
        !matches!(record["state"].as_str(), Some("archived" | "failed")),
        "{record}"
    );

    let code = scene.run_once("second").await;
    assert_eq!(code, 0, "{}", scene.log("second"));
    assert_resumed_and_archived(&scene, &zip, half);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_exits_0_when_all_archived_1_when_one_failed_78_on_a_wrong_secret() {
    let mut scene = Scene::new().await;
    let zip = sample_zip(&SampleSpec::demo(5));
    scene.oss.put_object(OBJECT, zip.clone());
    scene.dms.script_ticket(
        7,
        KEY,
        [
            StatusStep::Init,
            StatusStep::success(scene.fresh_urls(OBJECT), 69),
        ],
    );
    scene.config.ticket(7, KEY, "good");
    assert_eq!(
        scene.run_once("archived").await,
        0,
        "{}",
        scene.log("archived")
    );
    assert_files_match_zip(&scene.final_dir(7, KEY), &zip);

    scene.dms.script_ticket(
        8,
        KEY2,
        [StatusStep::Listing, StatusStep::fail("the binlog is gone")],
    );
    scene.config.ticket(8, KEY2, "bad");
    assert_eq!(scene.run_once("failed").await, 1, "{}", scene.log("failed"));
    let record = support::state_record(&scene.root().join("state"), 8, KEY2).unwrap();
    assert_eq!(record["state"], "failed");
    assert!(
        record["last_error"]
            .as_str()
            .unwrap()
            .contains("the binlog is gone")
    );

    let mut wrong = Scene::new().await;
    wrong.dms.script_ticket(9, KEY, [StatusStep::Init]);
    wrong
        .config
        .secret("wrong-secret-Tq81")
        .ticket(9, KEY, "refused");
    let code = wrong.run_once("refused").await;
    let log = wrong.log("refused");
    assert_eq!(code, 78, "{log}");
    assert!(log.contains("SignatureDoesNotMatch"), "{log}");
    assert_no_secrets(&log, &["wrong-secret-Tq81", AK_SECRET]);
    assert_eq!(wrong.dms.call_count(), 1, "an auth refusal is not retried");
}

/// As a hardened container runs it: an unprivileged user (uid and gid 65534) that can write
/// only the state and archive folders (the scene's root and config are root's, read-only to
/// it). Switching users needs root, as CI has; without it the test says so and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_user_archives_with_only_state_and_archive_writable() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
    if !rustix::process::getuid().is_root() || which("setpriv").is_none() {
        eprintln!("skipped: switching to an unprivileged user needs root and setpriv");
        return;
    }
    const NOBODY: u32 = 65534;
    let mut scene = Scene::new().await;
    let zip = sample_zip(&SampleSpec::demo(3));
    scene.oss.put_object(OBJECT, zip.clone());
    scene
        .dms
        .script_ticket(5, KEY, [StatusStep::success(scene.fresh_urls(OBJECT), 1)]);
    scene.config.ticket(5, KEY, "unprivileged");
    let config = scene.config.write(scene.root());
    std::fs::set_permissions(scene.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = scene.root().join("ak_secret");
    chown(&secret, Some(NOBODY), Some(NOBODY)).unwrap();
    for dir in ["state", "archive"] {
        let path = scene.root().join(dir);
        std::fs::create_dir(&path).unwrap();
        chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let mut command = std::process::Command::new("setpriv");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(env!("CARGO_BIN_EXE_dmstrack"))
        .args(["--log-format", "json", "run", "--once", "-c"])
        .arg(&config)
        .current_dir("/");
    let (code, _, stderr) = support::run(command).await;
    assert_eq!(code, 0, "{stderr}");
    let manifest = scene.final_dir(5, KEY).join("manifest.json");
    assert_eq!(std::fs::metadata(&manifest).unwrap().uid(), NOBODY);
    assert_files_match_zip(&scene.final_dir(5, KEY), &zip);
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// SIGKILL in the middle of a multipart upload (a part hangs in the OSS simulator): the next
/// run resumes the same upload, sends only the parts not confirmed, leaves nothing half done
/// in the bucket, and `run --once` exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_restart_finishes_it() {
    use dmstrack::sim::oss::{OssOperation, UploadFault};
    const BUCKET: &str = "dmstrack-archive";
    let mut scene = Scene::new().await;
    let zip = big_zip();
    scene.oss.put_object(OBJECT, zip.clone());
    scene.oss.create_bucket(BUCKET);
    scene.oss.add_access_key(AK_ID, AK_SECRET);
    scene
        .dms
        .script_ticket(7, KEY, [StatusStep::success(scene.fresh_urls(OBJECT), 69)]);
    let endpoint = scene.oss.base_url();
    scene
        .config
        .ticket(7, KEY, "kill-mid-upload")
        .set("upload", "url", &format!("\"oss://{BUCKET}/p\""))
        .set("upload", "endpoint", &format!("{endpoint:?}"))
        .set("upload", "part_size", "\"100KiB\"")
        .set("upload", "concurrency", "1");
    scene
        .oss
        .inject_upload_fault_on_call(OssOperation::UploadPart, 2, UploadFault::Stall);
    let mut child = scene.command("first", &["--once"]).spawn().unwrap();
    let oss = Arc::clone(&scene.oss);
    wait_for("the second part hangs", &mut child, || {
        oss.call_count(OssOperation::UploadPart) >= 2
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        scene.oss.multipart_uploads().len(),
        1,
        "begun, not completed"
    );
    assert!(
        scene.oss.objects(BUCKET).is_empty(),
        "nothing taken for done"
    );

    let code = scene.run_once("second").await;
    assert_eq!(code, 0, "{}", scene.log("second"));
    let key = format!("p/7/{KEY}/x_UNDO_31201_208.zip");
    assert_eq!(
        scene.oss.object_bytes(BUCKET, &key).as_deref(),
        Some(zip.as_slice())
    );
    assert!(
        scene
            .oss
            .object_bytes(BUCKET, &format!("p/7/{KEY}/manifest.json"))
            .is_some()
    );
    assert_eq!(
        scene.oss.call_count(OssOperation::InitiateMultipartUpload),
        1
    );
    let parts = zip.len().div_ceil(100 << 10);
    assert_eq!(
        scene.oss.call_count(OssOperation::UploadPart) as usize,
        2 + (parts - 1),
        "part 1 was confirmed before the kill and not sent again"
    );
    assert!(scene.oss.multipart_uploads().is_empty());
}
