//! Benchmark fixture: serves a generated DMS export from the built-in DMS and OSS simulators
//! on 127.0.0.1 and writes a dmstrack config pointing at them, for `scripts/bench.py`.
//!
//! ```text
//! cargo run --release --example bench_fixture -- --size 512MiB --dir DIR
//! cargo run --release --example bench_fixture -- --waiting 10000 --max-rps 1000 --dir DIR
//! cargo run --release --example bench_fixture -- --polling --poll-interval 20ms --dir DIR
//! BENCH_S3_SECRET=… cargo run --release --example bench_fixture -- --upload-only 512MiB \
//!     --s3-endpoint http://127.0.0.1:PORT --s3-bucket B --s3-access-key-id ID --dir DIR
//! ```
//!
//! Archive mode (the default) generates `SampleSpec::rollback(size, files, seed)` once into
//! `DIR/export-….zip` (kept and reused on later runs), serves it from the OSS simulator, and
//! scripts one ticket whose every status query answers `DOWNLOAD_SUCCESS` with a freshly
//! presigned URL. Waiting mode (`--waiting N`) scripts N tickets that answer `INIT` forever,
//! for idle-CPU and memory measurements. Polling mode (`--polling`) scripts one ticket that
//! answers `DOWNLOADING` forever (the same answer from the first query on, so every run of a
//! client sees the same sequence), and a config that polls it every
//! `--poll-interval` without jitter, for the CPU cost of one status poll; its announcement
//! also carries the simulator's made-up AccessKey pair and the ticket, so another client (the
//! official SDK) can poll the same simulator. Upload mode (`--upload-only SIZE`) generates
//! once a file of SIZE random bytes (`DIR/upload-….zip`, kept and reused; the upload does not
//! read a zip's structure), publishes it as the archive of one ticket
//! (`DIR/archive/<order_id>/<key>/x_REDO_1.zip` with its `manifest.json`, written by
//! `dmstrack::job::archive::publish`), scripts that ticket to answer `DOWNLOAD_SUCCESS`, and
//! adds `[upload]` to the config (`s3://BUCKET/PREFIX` at `--s3-endpoint`, `--part-size`,
//! `--upload-concurrency`, the key `--s3-access-key-id` with its secret from the environment
//! variable `BENCH_S3_SECRET`, written to `DIR/s3_secret`): dmstrack finds the archive at
//! start-up, takes the ticket as archived (without downloading, and without even querying
//! DMS: the script only answers if it does), and uploads it.
//!
//! Either way it writes `DIR/config.toml` (static credentials with a secret file, state and
//! archive under `DIR`; `[http] listen` with `--http-listen`), prints one line
//! `BENCH_FIXTURE {json}` on stdout (config path, a presigned URL for curl, sizes), and serves
//! until SIGINT/SIGTERM, or until stdin reaches its end when stdin is a pipe (so the fixture
//! dies with the script that started it). In waiting mode it also prints
//! `BENCH_FIXTURE_POLLED {json}` once every ticket has been queried. Human-readable notes go to
//! stderr.
//!
//! Commands, one per line on stdin (when it is a pipe), each answered by one line
//! `BENCH_FIXTURE_QUERIES {"queries": N, "answered": M}` (status queries received, and those
//! answered HTTP 200 with `Success: true`):
//! - `count`: at once;
//! - `await N [SECONDS]`: as soon as `N` status queries have been received, or after SECONDS
//!   (default 60) with fewer, so a client that died cannot hang the script.
//!
//! and, in upload mode only, `stage`: deletes `DIR/archive` and `DIR/state` and publishes the
//! ticket's archive anew (the cached file hard-linked into it), for a fresh round; answered by
//! `BENCH_FIXTURE_STAGED {"dir": …, "zip": …, "bytes": N}` (or `{"error": …}`). The archive
//! is also staged once at start-up.

use std::io::{BufRead as _, BufWriter, Write as _};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use dmstrack::job::archive::{
    ArchiveLayout, Manifest, ManifestSource, format_archived_at, kept_zip_name, publish,
};
use dmstrack::job::upload::crc64::Crc64;
use dmstrack::sim::dms::{DmsSimulator, QUERY_STATUS_ACTION, StatusStep, UrlSource};
use dmstrack::sim::oss::OssSimulator;
use dmstrack::sim::zipgen::{SampleSpec, write_sample_zip};

/// Made-up credentials: only the simulator started by this process accepts them.
const AK_ID: &str = "LTAI5benchFixtureKey";
const AK_SECRET: &str = "bench-fixture-secret-for-the-local-simulator-only";
/// The archive-mode ticket.
const ORDER_ID: i64 = 90_000_001;
const DOWNLOAD_KEY_ID: &str = "b3c4d5e6-0000-4a00-8b00-000000000001";
/// The polling-mode ticket.
const POLLING_ORDER_ID: i64 = 92_000_001;
const POLLING_KEY_ID: &str = "b3c4d5e6-0000-4a00-8b00-000000000002";
/// The upload-mode ticket.
const UPLOAD_ORDER_ID: i64 = 93_000_001;
const UPLOAD_KEY_ID: &str = "b3c4d5e6-0000-4a00-8b00-000000000003";
/// The object name DMS gives the upload-mode export (the zip keeps it in the archive).
const UPLOAD_OBJECT: &str = "x_REDO_1.zip";
/// First order id of the waiting-mode tickets.
const WAITING_FIRST_ORDER: i64 = 91_000_000;
/// How long presigned URLs stay valid: longer than any benchmark run.
const URL_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// `TotalCount` in the success answer (rows in the export; only shown in the manifest).
const TOTAL_COUNT: u64 = 1_000_000;

#[derive(Debug, Parser)]
#[command(about = "Serve a generated DMS export on 127.0.0.1 for benchmarking dmstrack")]
struct Args {
    /// Folder for the cached zip, the config, the secret file, state and archive.
    #[arg(long)]
    dir: PathBuf,
    /// Uncompressed SQL in the export, e.g. 128MiB or 512MiB.
    #[arg(long, default_value = "512MiB")]
    size: bytesize::ByteSize,
    /// Number of SQL files the export is split into.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Seed of the SQL generator.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Waiting mode: this many tickets that answer INIT forever, and no export.
    #[arg(long, conflicts_with = "polling")]
    waiting: Option<usize>,
    /// Polling mode: one ticket that answers DOWNLOADING forever, polled every
    /// `--poll-interval`.
    #[arg(long)]
    polling: bool,
    /// Poll interval of the polling mode's config (initial = max, no jitter).
    #[arg(long, default_value = "20ms")]
    poll_interval: String,
    /// `dms.max_requests_per_second` of the written config (default: 10 in archive mode,
    /// 200 in waiting mode, 1000 in polling mode).
    #[arg(long)]
    max_rps: Option<f64>,
    /// Adds `[http] listen = ADDR` to the written config (for /metrics and /healthz).
    #[arg(long)]
    http_listen: Option<String>,
    /// Upload mode: an archive already published for one ticket, holding a file of this many
    /// random bytes as its zip, uploaded to `--s3-endpoint` (needs the `--s3-*` options).
    #[arg(long, conflicts_with_all = ["waiting", "polling"],
          requires_all = ["s3_endpoint", "s3_bucket", "s3_access_key_id"])]
    upload_only: Option<bytesize::ByteSize>,
    /// Upload mode: the S3-compatible endpoint, e.g. http://127.0.0.1:5000 (path style).
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Upload mode: the bucket.
    #[arg(long)]
    s3_bucket: Option<String>,
    /// Upload mode: the key prefix in the bucket.
    #[arg(long, default_value = "bench")]
    s3_prefix: String,
    /// Upload mode: the access key id (its secret comes from the environment variable
    /// `BENCH_S3_SECRET`, never from the command line).
    #[arg(long)]
    s3_access_key_id: Option<String>,
    /// Upload mode: `upload.part_size`.
    #[arg(long, default_value = "64MiB")]
    part_size: String,
    /// Upload mode: `upload.concurrency`.
    #[arg(long, default_value_t = 4)]
    upload_concurrency: u32,
}

/// The machine-readable line for the benchmark script.
#[derive(Debug, Default, serde::Serialize)]
struct Announcement {
    config: PathBuf,
    dms_endpoint: String,
    /// Archive mode only.
    url: Option<String>,
    zip: Option<PathBuf>,
    zip_bytes: Option<u64>,
    sql_bytes: Option<u64>,
    files: Option<usize>,
    tickets: usize,
    /// Polling mode only: what another client needs to poll the simulator's ticket. The
    /// secret is made up and only this process's simulator accepts it.
    access_key_id: Option<&'static str>,
    access_key_secret: Option<&'static str>,
    order_id: Option<i64>,
    download_key_id: Option<&'static str>,
    /// Upload mode only: the published archive folder, and the remote keys of the zip and
    /// the manifest in the bucket.
    archive_dir: Option<PathBuf>,
    zip_key: Option<String>,
    manifest_key: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match start(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench_fixture: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let dir =
        std::fs::canonicalize(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(serve(args, dir))
}

async fn serve(args: Args, dir: PathBuf) -> Result<(), String> {
    let dms = DmsSimulator::start()
        .await
        .map_err(|e| format!("cannot start the DMS simulator: {e}"))?;
    dms.add_access_key(AK_ID, AK_SECRET);
    // Kept alive until the end: dropping the simulator stops it.
    let mut oss_keepalive = None;

    let mut settings = ConfigSettings {
        endpoint: dms.endpoint(),
        http_listen: args.http_listen.clone(),
        max_rps: args.max_rps,
        extra: String::new(),
    };
    let mut stage = None;
    let announcement = match args.waiting {
        None if args.upload_only.is_some() => {
            let size = args.upload_only.expect("checked").as_u64();
            let (zip, source) = cached_random_zip(&dir, size, args.seed)?;
            dms.script_ticket(
                UPLOAD_ORDER_ID,
                UPLOAD_KEY_ID,
                // Never fetched: the archive is there already, so dmstrack takes it as is.
                [StatusStep::success(
                    UrlSource::fixed(format!(
                        "http://127.0.0.1:9/bench/{UPLOAD_OBJECT}?Expires=4102444800"
                    )),
                    TOTAL_COUNT,
                )],
            );
            settings.extra = upload_section(&dir, &args)?;
            let tickets = format!(
                "\n[[tickets]]\norder_id = {UPLOAD_ORDER_ID}\ndownload_key_id = \"{UPLOAD_KEY_ID}\"\nlabel = \"bench-upload\"\n"
            );
            let config = write_config(&dir, &settings, PollPlan::Fast, &tickets)?;
            let staged = UploadStage {
                dir: dir.clone(),
                zip: zip.clone(),
                source,
            };
            let archive_dir = staged.stage()?;
            stage = Some(staged);
            let folder = format!(
                "{}{UPLOAD_ORDER_ID}/{UPLOAD_KEY_ID}/",
                if args.s3_prefix.is_empty() {
                    String::new()
                } else {
                    format!("{}/", args.s3_prefix.trim_matches('/'))
                }
            );
            Announcement {
                config,
                dms_endpoint: dms.endpoint(),
                zip: Some(zip),
                zip_bytes: Some(size),
                tickets: 1,
                order_id: Some(UPLOAD_ORDER_ID),
                download_key_id: Some(UPLOAD_KEY_ID),
                archive_dir: Some(archive_dir),
                zip_key: Some(format!("{folder}{}", kept_zip_name(UPLOAD_OBJECT))),
                manifest_key: Some(format!("{folder}manifest.json")),
                ..Announcement::default()
            }
        }
        None if args.polling => {
            dms.script_ticket(POLLING_ORDER_ID, POLLING_KEY_ID, [StatusStep::Downloading]);
            let tickets = format!(
                "\n[[tickets]]\norder_id = {POLLING_ORDER_ID}\ndownload_key_id = \"{POLLING_KEY_ID}\"\n"
            );
            let plan = PollPlan::Every(&args.poll_interval);
            let config = write_config(&dir, &settings, plan, &tickets)?;
            Announcement {
                config,
                dms_endpoint: dms.endpoint(),
                tickets: 1,
                access_key_id: Some(AK_ID),
                access_key_secret: Some(AK_SECRET),
                order_id: Some(POLLING_ORDER_ID),
                download_key_id: Some(POLLING_KEY_ID),
                ..Announcement::default()
            }
        }
        None => {
            let spec = SampleSpec::rollback(args.size.as_u64(), args.files, args.seed);
            let zip = cached_zip(&dir, &spec, args.size)?;
            let body = std::fs::read(&zip).map_err(|e| format!("{}: {e}", zip.display()))?;
            let zip_bytes = body.len() as u64;
            let oss = Arc::new(
                OssSimulator::start()
                    .await
                    .map_err(|e| format!("cannot start the OSS simulator: {e}"))?,
            );
            let object = format!("bench/{ORDER_ID}_UNDO.zip");
            oss.put_object(&object, body);
            let url_for_dms = {
                let oss = Arc::clone(&oss);
                let object = object.clone();
                UrlSource::generated(move || oss.presign(&object, URL_LIFETIME))
            };
            dms.script_ticket(
                ORDER_ID,
                DOWNLOAD_KEY_ID,
                [StatusStep::success(url_for_dms, TOTAL_COUNT)],
            );
            let url = oss.presign(&object, URL_LIFETIME);
            oss_keepalive = Some(oss);
            let tickets = format!(
                "\n[[tickets]]\norder_id = {ORDER_ID}\ndownload_key_id = \"{DOWNLOAD_KEY_ID}\"\nlabel = \"bench-{}KiB\"\n",
                args.size.as_u64() / 1024
            );
            let config = write_config(&dir, &settings, PollPlan::Fast, &tickets)?;
            Announcement {
                config,
                dms_endpoint: dms.endpoint(),
                url: Some(url),
                zip: Some(zip),
                zip_bytes: Some(zip_bytes),
                sql_bytes: Some(spec.total_bytes()),
                files: Some(spec.files.len()),
                tickets: 1,
                ..Announcement::default()
            }
        }
        Some(count) => {
            let mut tickets = String::with_capacity(count * 96);
            for i in 0..count {
                let order_id = WAITING_FIRST_ORDER + i as i64;
                let key = waiting_key(i);
                // An empty script answers INIT forever.
                dms.script_ticket(order_id, key.clone(), []);
                tickets.push_str(&format!(
                    "\n[[tickets]]\norder_id = {order_id}\ndownload_key_id = \"{key}\"\n"
                ));
            }
            let config = write_config(&dir, &settings, PollPlan::Idle, &tickets)?;
            Announcement {
                config,
                dms_endpoint: dms.endpoint(),
                tickets: count,
                ..Announcement::default()
            }
        }
    };
    announce("BENCH_FIXTURE", &announcement);
    eprintln!(
        "bench_fixture: serving; config {} (stop with Ctrl-C)",
        announcement.config.display()
    );

    let polled = async {
        let Some(count) = args.waiting else {
            return std::future::pending().await;
        };
        // Every ticket has a distinct key, and the first query of each one comes before any
        // second one (the first poll is due at start, the next a poll interval later), so
        // `count` status queries mean every ticket has been asked once.
        let started = Instant::now();
        while (dms.action_count(QUERY_STATUS_ACTION) as usize) < count {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        announce(
            "BENCH_FIXTURE_POLLED",
            &serde_json::json!({
                "queries": dms.action_count(QUERY_STATUS_ACTION),
                "seconds": started.elapsed().as_secs_f64(),
            }),
        );
        std::future::pending::<()>().await
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = answer_commands(&dms, stage.as_ref()) => {}
        _ = polled => {}
    }
    drop(oss_keepalive);
    dms.shutdown();
    Ok(())
}

/// Prints `TAG {json}` as one line and flushes it, so a reading script sees it at once.
fn announce(tag: &str, value: &impl serde::Serialize) {
    let json = serde_json::to_string(value).expect("plain data serializes");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{tag} {json}");
    let _ = out.flush();
}

/// Answers the commands read from stdin (see the top of this file); resolves when stdin is a
/// pipe and its writer has gone, never otherwise (a terminal or `/dev/null` would end at once
/// or on a stray Ctrl-D).
async fn answer_commands(dms: &DmsSimulator, stage: Option<&UploadStage>) {
    let is_pipe = std::fs::metadata("/proc/self/fd/0").is_ok_and(|m| m.file_type().is_fifo());
    if !is_pipe {
        return std::future::pending().await;
    }
    // A plain thread, not `spawn_blocking`: the runtime would wait for it on the way out.
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = line_rx.recv().await {
        let mut words = line.split_whitespace();
        if let (Some("stage"), Some(stage)) = (line.split_whitespace().next(), stage) {
            let stage = stage.clone();
            let staged = tokio::task::spawn_blocking(move || {
                let dir = stage.stage()?;
                Ok::<_, String>(serde_json::json!({
                    "dir": dir,
                    "zip": stage.zip,
                    "bytes": stage.source.bytes,
                }))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|staged| staged);
            let answer = staged.unwrap_or_else(|error| serde_json::json!({ "error": error }));
            announce("BENCH_FIXTURE_STAGED", &answer);
            continue;
        }
        match (words.next(), words.next().map(str::parse::<u64>)) {
            (Some("count"), None) => {}
            (Some("await"), Some(Ok(target))) => {
                let limit = words
                    .next()
                    .and_then(|w| w.parse::<u64>().ok())
                    .unwrap_or(60);
                let deadline = Instant::now() + Duration::from_secs(limit);
                // Checked every millisecond: cheap next to a status query, and late by at most
                // that much when the measuring script stops the client.
                while dms.action_count(QUERY_STATUS_ACTION) < target && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            _ => {
                eprintln!(
                    "bench_fixture: unknown command {line:?} (want `count`, `await N` or, in \
                     upload mode, `stage`)"
                );
                continue;
            }
        }
        let answered = dms
            .calls()
            .iter()
            .filter(|call| {
                call.action.as_deref() == Some(QUERY_STATUS_ACTION)
                    && call.status == Some(200)
                    && call.error_code.is_none()
            })
            .count();
        announce(
            "BENCH_FIXTURE_QUERIES",
            &serde_json::json!({
                "queries": dms.action_count(QUERY_STATUS_ACTION),
                "answered": answered,
            }),
        );
    }
}

/// The zip for `spec`, generated on the first run and reused after (the name holds
/// everything that shapes its bytes).
fn cached_zip(dir: &Path, spec: &SampleSpec, size: bytesize::ByteSize) -> Result<PathBuf, String> {
    let name = format!(
        "export-{}-{}files-seed{}.zip",
        size.as_u64(),
        spec.files.len(),
        spec.seed
    );
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!(
        "bench_fixture: generating {} bytes of SQL into {} (once; later runs reuse it)…",
        size.as_u64(),
        path.display()
    );
    let started = Instant::now();
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write_sample_zip(&mut out, spec).map_err(|e| format!("generating the zip: {e}"))?;
        out.flush()
            .map_err(|e| format!("generating the zip: {e}"))?;
    }
    tmp.persist(&path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
    eprintln!(
        "bench_fixture: generated in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// A file of `size` random bytes (seeded, so every run makes the same), generated on the first
/// run and reused after, with the manifest's `source` for it (its SHA-256 and CRC-64, kept in
/// a `.json` beside it).
fn cached_random_zip(
    dir: &Path,
    size: u64,
    seed: u64,
) -> Result<(PathBuf, ManifestSource), String> {
    use sha2::Digest as _;

    let path = dir.join(format!("upload-{size}-seed{seed}.zip"));
    let sums_path = path.with_extension("zip.json");
    let source = |sha256: String, crc64: u64| ManifestSource {
        host: "127.0.0.1:9".to_owned(),
        object: format!("bench/{UPLOAD_OBJECT}"),
        bytes: size,
        crc64ecma: crc64.to_string(),
        sha256,
    };
    let same_size = std::fs::metadata(&path).is_ok_and(|m| m.len() == size);
    if same_size && let Ok(text) = std::fs::read_to_string(&sums_path) {
        let sums: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", sums_path.display()))?;
        if let (Some(sha256), Some(crc64)) = (sums["sha256"].as_str(), sums["crc64"].as_u64()) {
            return Ok((path, source(sha256.to_owned(), crc64)));
        }
    }
    eprintln!(
        "bench_fixture: writing {size} random bytes into {} (once; later runs reuse it)…",
        path.display()
    );
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut sha = sha2::Sha256::new();
    let mut crc = Crc64::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let chunk = &mut buf[..left.min(1 << 20) as usize];
        rng.fill(chunk);
        sha.update(&*chunk);
        crc.update(chunk);
        tmp.as_file_mut()
            .write_all(chunk)
            .map_err(|e| format!("writing the file: {e}"))?;
        left -= chunk.len() as u64;
    }
    tmp.persist(&path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
    let sha256 = dmstrack::net::signer::hex_lower(&sha.finalize());
    let sums = serde_json::json!({"sha256": sha256, "crc64": crc.value()});
    std::fs::write(&sums_path, sums.to_string())
        .map_err(|e| format!("{}: {e}", sums_path.display()))?;
    Ok((path, source(sha256, crc.value())))
}

/// The upload mode's archive: the cached file, published as one ticket's zip.
#[derive(Debug, Clone)]
struct UploadStage {
    /// The fixture's folder (the config's `archive` and `state` are inside).
    dir: PathBuf,
    /// The cached random file.
    zip: PathBuf,
    /// The manifest's `source` for it.
    source: ManifestSource,
}

impl UploadStage {
    /// Deletes `archive/` and `state/`, then publishes the ticket's archive with the real
    /// `publish` (manifest written and fsynced, one rename): the zip is a hard link to the
    /// cached file (a copy across filesystems), beside an empty `files/`. Blocking.
    fn stage(&self) -> Result<PathBuf, String> {
        for sub in ["archive", "state"] {
            let path = self.dir.join(sub);
            if path.exists() {
                std::fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        let layout = ArchiveLayout::new(&self.dir.join("archive"));
        let staging = layout
            .new_staging("bench-upload")
            .map_err(|e| e.to_string())?;
        let kept = staging.join(kept_zip_name(&self.source.object));
        std::fs::hard_link(&self.zip, &kept)
            .or_else(|_| std::fs::copy(&self.zip, &kept).map(drop))
            .map_err(|e| format!("{}: {e}", kept.display()))?;
        let manifest = Manifest {
            order_id: UPLOAD_ORDER_ID,
            download_key_id: UPLOAD_KEY_ID.to_owned(),
            tid: None,
            label: Some("bench-upload".to_owned()),
            total_count: Some(TOTAL_COUNT as i64),
            archived_at: format_archived_at(jiff::Timestamp::now()),
            source: self.source.clone(),
            files: Vec::new(),
        };
        let final_dir = layout.final_dir(UPLOAD_ORDER_ID, UPLOAD_KEY_ID);
        publish(&staging, &final_dir, &manifest).map_err(|e| e.to_string())?;
        Ok(final_dir)
    }
}

/// `[upload]` for the upload mode, with the secret written to `DIR/s3_secret`.
fn upload_section(dir: &Path, args: &Args) -> Result<String, String> {
    let secret_path = dir.join("s3_secret");
    let secret = std::env::var("BENCH_S3_SECRET")
        .map_err(|_| "upload mode needs the S3 secret in BENCH_S3_SECRET".to_owned())?;
    dmstrack::sim::write_secret_file(&secret_path, &secret)
        .map_err(|e| format!("{}: {e}", secret_path.display()))?;
    let (endpoint, bucket, key_id) = (
        args.s3_endpoint.as_deref().unwrap_or_default(),
        args.s3_bucket.as_deref().unwrap_or_default(),
        args.s3_access_key_id.as_deref().unwrap_or_default(),
    );
    Ok(format!(
        "[upload]\nurl = \"s3://{bucket}/{}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
         content = \"zip\"\npart_size = \"{}\"\nconcurrency = {}\n\n\
         [upload.credentials]\naccess_key_id = \"{key_id}\"\nsecret_access_key_file = \"{}\"\n\n",
        args.s3_prefix.trim_matches('/'),
        args.part_size,
        args.upload_concurrency,
        secret_path.display()
    ))
}

/// A distinct, UUID-shaped key per waiting ticket.
fn waiting_key(index: usize) -> String {
    format!("0000beef-0000-4000-8000-{index:012x}")
}

/// Poll settings of the written config.
#[derive(Debug, Clone, Copy)]
enum PollPlan<'a> {
    /// The export is ready at once: poll fast so start-up is not measured as waiting.
    Fast,
    /// Many tickets that stay INIT: query each once quickly, then wait long between polls,
    /// so what remains is the daemon's idle cost.
    Idle,
    /// One ticket polled at this fixed interval (a humantime string), without jitter: the
    /// same work every time, to measure the cost of one poll.
    Every(&'a str),
}

/// What the written config says besides the poll plan and the tickets.
#[derive(Debug)]
struct ConfigSettings {
    endpoint: String,
    http_listen: Option<String>,
    max_rps: Option<f64>,
    /// More sections (`[upload]`), before the tickets.
    extra: String,
}

fn write_config(
    dir: &Path,
    settings: &ConfigSettings,
    poll: PollPlan<'_>,
    tickets: &str,
) -> Result<PathBuf, String> {
    let secret = dir.join("ak_secret");
    dmstrack::sim::write_secret_file(&secret, AK_SECRET)
        .map_err(|e| format!("{}: {e}", secret.display()))?;
    let (initial, max, jitter, default_rps) = match poll {
        PollPlan::Fast => ("100ms", "1s", None, 10.0),
        PollPlan::Idle => ("10m", "1h", None, 200.0),
        PollPlan::Every(interval) => (interval, interval, Some(0.0), 1000.0),
    };
    let rps = settings.max_rps.unwrap_or(default_rps);
    let endpoint = &settings.endpoint;
    let jitter = jitter.map_or(String::new(), |j| {
        format!("jitter = {j:.1}\nmultiplier = 1.0\n")
    });
    let http = settings
        .http_listen
        .as_ref()
        .map_or(String::new(), |listen| {
            format!("[http]\nlisten = \"{listen}\"\n\n")
        });
    let text = format!(
        "# Written by examples/bench_fixture.rs; the simulators it points at stop with it.\n\
         [dms]\nendpoint = \"{endpoint}\"\nsignature = \"v3\"\nmax_requests_per_second = {rps:.1}\n\n\
         [credentials]\nsource = \"static\"\naccess_key_id = \"{AK_ID}\"\n\
         access_key_secret_file = \"{}\"\n\n\
         [poll]\ninitial_interval = \"{initial}\"\nmax_interval = \"{max}\"\n{jitter}\n\
         [download]\nverify_crc64 = true\n\n\
         [archive]\ndir = \"archive\"\n\n[state]\ndir = \"state\"\n\n{http}{}{tickets}",
        secret.display(),
        settings.extra
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
