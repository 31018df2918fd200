//! Benchmark fixture: serves a generated DMS export from the built-in DMS and OSS simulators
//! on 127.0.0.1 and writes a dmstrack config pointing at them, for `scripts/bench.py`.
//!
//! ```text
//! cargo run --release --example bench_fixture -- --size 512MiB --dir DIR
//! cargo run --release --example bench_fixture -- --waiting 10000 --dir DIR
//! ```
//!
//! Archive mode (the default) generates `SampleSpec::rollback(size, files, seed)` once into
//! `DIR/export-….zip` (kept and reused on later runs), serves it from the OSS simulator, and
//! scripts one ticket whose every status query answers `DOWNLOAD_SUCCESS` with a freshly
//! presigned URL. Waiting mode (`--waiting N`) scripts N tickets that answer `INIT` forever,
//! for idle-CPU and memory measurements.
//!
//! Either way it writes `DIR/config.toml` (static credentials with a secret file, state and
//! archive under `DIR`), prints one line `BENCH_FIXTURE {json}` on stdout (config path, a
//! presigned URL for curl, sizes), and serves until SIGINT/SIGTERM, or until stdin reaches its
//! end when stdin is a pipe (so the fixture dies with the script that started it). In waiting
//! mode it also prints `BENCH_FIXTURE_POLLED {json}` once every ticket has been queried.
//! Human-readable notes go to stderr.

use std::io::{BufWriter, Read as _, Write as _};
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
    #[arg(long)]
    waiting: Option<usize>,
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

    let announcement = match args.waiting {
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
            let config = write_config(&dir, &dms.endpoint(), PollPlan::Fast, &tickets)?;
            Announcement {
                config,
                dms_endpoint: dms.endpoint(),
                url: Some(url),
                zip: Some(zip),
                zip_bytes: Some(zip_bytes),
                sql_bytes: Some(spec.total_bytes()),
                files: Some(spec.files.len()),
                tickets: 1,
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
            let config = write_config(&dir, &dms.endpoint(), PollPlan::Idle, &tickets)?;
            Announcement {
                config,
                dms_endpoint: dms.endpoint(),
                url: None,
                zip: None,
                zip_bytes: None,
                sql_bytes: None,
                files: None,
                tickets: count,
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
        _ = stdin_closed() => {}
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

/// Resolves when stdin is a pipe and its writer has gone; never otherwise (a terminal or
/// `/dev/null` would end at once or on a stray Ctrl-D).
async fn stdin_closed() {
    let is_pipe = std::fs::metadata("/proc/self/fd/0").is_ok_and(|m| m.file_type().is_fifo());
    if !is_pipe {
        return std::future::pending().await;
    }
    // A plain thread, not `spawn_blocking`: the runtime would wait for it on the way out.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0_u8; 256];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        drop(closed_tx);
    });
    let _ = closed_rx.await;
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
enum PollPlan {
    /// The export is ready at once: poll fast so start-up is not measured as waiting.
    Fast,
    /// Many tickets that stay INIT: query each once quickly, then wait long between polls,
    /// so what remains is the daemon's idle cost.
    Idle,
}

fn write_config(
    dir: &Path,
    endpoint: &str,
    poll: PollPlan,
    tickets: &str,
) -> Result<PathBuf, String> {
    let secret = dir.join("ak_secret");
    dmstrack::sim::write_secret_file(&secret, AK_SECRET)
        .map_err(|e| format!("{}: {e}", secret.display()))?;
    let (initial, max, rps) = match poll {
        PollPlan::Fast => ("100ms", "1s", 10.0),
        PollPlan::Idle => ("10m", "1h", 200.0),
    };
    let text = format!(
        "# Written by examples/bench_fixture.rs; the simulators it points at stop with it.\n\
         [dms]\nendpoint = \"{endpoint}\"\nsignature = \"v3\"\nmax_requests_per_second = {rps:.1}\n\n\
         [credentials]\nsource = \"static\"\naccess_key_id = \"{AK_ID}\"\n\
         access_key_secret_file = \"{}\"\n\n\
         [poll]\ninitial_interval = \"{initial}\"\nmax_interval = \"{max}\"\n\n\
         [download]\nverify_crc64 = true\n\n\
         [archive]\ndir = \"archive\"\n\n[state]\ndir = \"state\"\n{tickets}",
        secret.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
