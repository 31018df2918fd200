//! Benchmark fixture: serves a generated DMS export from the built-in DMS and OSS simulators
//! on 127.0.0.1 and writes a dmstrack config pointing at them, for `scripts/bench.py`.
//!
//! ```text
//! cargo run --release --example bench_fixture -- --size 512MiB --dir DIR
//! cargo run --release --example bench_fixture -- --waiting 10000 --max-rps 1000 --dir DIR
//! cargo run --release --example bench_fixture -- --polling --poll-interval 20ms --dir DIR
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
//! official SDK) can poll the same simulator.
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

use std::io::{BufRead as _, BufWriter, Write as _};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
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
}

/// The machine-readable line for the benchmark script.
#[derive(Debug, serde::Serialize)]
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

    let settings = ConfigSettings {
        endpoint: dms.endpoint(),
        http_listen: args.http_listen.clone(),
        max_rps: args.max_rps,
    };
    let announcement = match args.waiting {
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
                url: None,
                zip: None,
                zip_bytes: None,
                sql_bytes: None,
                files: None,
                tickets: 1,
                access_key_id: Some(AK_ID),
                access_key_secret: Some(AK_SECRET),
                order_id: Some(POLLING_ORDER_ID),
                download_key_id: Some(POLLING_KEY_ID),
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
                access_key_id: None,
                access_key_secret: None,
                order_id: None,
                download_key_id: None,
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
                url: None,
                zip: None,
                zip_bytes: None,
                sql_bytes: None,
                files: None,
                tickets: count,
                access_key_id: None,
                access_key_secret: None,
                order_id: None,
                download_key_id: None,
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
        _ = answer_commands(&dms) => {}
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
async fn answer_commands(dms: &DmsSimulator) {
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
                eprintln!("bench_fixture: unknown command {line:?} (want `count` or `await N`)");
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
         [archive]\ndir = \"archive\"\n\n[state]\ndir = \"state\"\n\n{http}{tickets}",
        secret.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
