//! `dmstrack demo`: the whole job on the built-in simulators, no cloud account needed.
//!
//! Starts the DMS and OSS simulators on 127.0.0.1, writes a config into the demo folder, and
//! runs the daemon with `--once` over sample tickets that show what dmstrack is for: an export
//! that walks `INIT → LISTING → DOWNLOADING → DOWNLOAD_SUCCESS`, one whose first signed URL
//! has already expired (dmstrack asks DMS for a fresh one), one whose download is cut
//! mid-body (it resumes with `Range`), one that DMS reports as `DOWNLOAD_FAIL`, and one export
//! that dmstrack starts itself. Every archive is then uploaded to a bucket of the built-in OSS
//! simulator (header-signed OSS V4, manifest last). Then it says what happened and where the
//! archive and the uploads are.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigEnv};
use crate::credentials::CredentialEnv;
use crate::service::daemon::{Daemon, RunOptions};
use crate::service::notify::Notifier;
use crate::sim::dms::{DmsSimulator, StatusStep, UrlSource};
use crate::sim::oss::{OssFault, OssSimulator};
use crate::sim::zipgen::{SampleSpec, sample_zip};
use crate::watch::state::{TicketState, UploadState};

/// Marks a folder as made by `dmstrack demo`, so a re-run may clear its state and archive.
const MARKER: &str = ".dmstrack-demo";
const AK_ID: &str = "LTAI5demoAccessKey";
/// Only valid against the simulator started by this process.
const AK_SECRET: &str = "demo-secret-for-the-local-simulator-only";
/// The simulator's bucket the archives are uploaded to.
const DEMO_BUCKET: &str = "dmstrack-demo-archive";
/// How long the whole demo may take before it is stopped.
const DEADLINE: Duration = Duration::from_secs(60);

/// A sample ticket and what the demo expects of it.
struct Sample {
    order_id: i64,
    key: &'static str,
    label: &'static str,
    story: &'static str,
    expect: TicketState,
}

const SAMPLES: [Sample; 4] = [
    Sample {
        order_id: 20261101,
        key: "7d1c2a9e-5b43-4f1a-9c0e-2f6b8a1d3e01",
        label: "orders-rollback",
        story: "INIT → LISTING → DOWNLOADING → DOWNLOAD_SUCCESS, then downloaded, verified, extracted, published",
        expect: TicketState::Archived,
    },
    Sample {
        order_id: 20261102,
        key: "3f8e6d21-0c7b-4a55-8e19-6d2c4b7a9f02",
        label: "expired-link",
        story: "the first signed URL had expired (OSS 403); dmstrack asked DMS for a fresh one",
        expect: TicketState::Archived,
    },
    Sample {
        order_id: 20261103,
        key: "a4b9c0d3-7e21-4c8f-b6a5-1e9d0f3c7b03",
        label: "cut-download",
        story: "the download was cut mid-body; dmstrack resumed it with Range and checked the CRC-64",
        expect: TicketState::Archived,
    },
    Sample {
        order_id: 20261104,
        key: "c2e7f1a8-9d36-4b0e-a7c4-5f8b2d6e1a04",
        label: "failed-export",
        story: "DMS reported DOWNLOAD_FAIL; the ticket ended failed with DMS's reason",
        expect: TicketState::Failed,
    },
];

/// The export ticket dmstrack starts itself.
const EXPORT_ORDER: i64 = 20261105;

/// Runs the demo in `dir`; returns whether everything went as the demo expects.
pub async fn run(dir: &Path) -> Result<bool, String> {
    let started = tokio::time::Instant::now();
    prepare_dir(dir)?;
    let oss = Arc::new(
        OssSimulator::start()
            .await
            .map_err(|e| format!("cannot start the OSS simulator: {e}"))?,
    );
    let dms = DmsSimulator::start()
        .await
        .map_err(|e| format!("cannot start the DMS simulator: {e}"))?;
    dms.add_access_key(AK_ID, AK_SECRET);
    // OSS signs uploads with the same credentials as the DMS API.
    oss.create_bucket(DEMO_BUCKET);
    oss.add_access_key(AK_ID, AK_SECRET);
    script(&oss, &dms);
    let config_path = write_config(dir, &dms.endpoint(), &oss.base_url())?;
    let config = Config::load(&config_path, &ConfigEnv::default()).map_err(|e| e.to_string())?;

    println!(
        "dmstrack demo: DMS simulator at {}, OSS simulator at {}",
        dms.endpoint(),
        oss.base_url()
    );
    println!("config: {}\n", config_path.display());
    let daemon = Daemon::start(
        config.clone(),
        ConfigEnv::default(),
        CredentialEnv::from_vars([], None),
        RunOptions { once: true },
        Notifier::disabled(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let shutdown = CancellationToken::new();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let run = daemon.run(shutdown.clone(), reload_rx);
    let outcome = tokio::select! {
        outcome = run => outcome,
        _ = tokio::time::sleep(DEADLINE) => return Err(format!("the demo did not finish within {}s", DEADLINE.as_secs())),
        _ = tokio::signal::ctrl_c() => {
            shutdown.cancel();
            return Err("interrupted".into());
        }
    };
    if let Some(err) = outcome.auth_failure {
        return Err(err.to_string());
    }
    Ok(report(&config, &config_path, &oss, started.elapsed()))
}

fn prepare_dir(dir: &Path) -> Result<(), String> {
    let marker = dir.join(MARKER);
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .next()
            .is_some()
    {
        if !marker.exists() {
            return Err(format!(
                "{} exists and was not made by `dmstrack demo`; choose another --dir",
                dir.display()
            ));
        }
        // A fresh run: the simulators are new, so old state and archives would not match.
        for sub in ["state", "archive"] {
            let path = dir.join(sub);
            if path.exists() {
                std::fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(&marker, b"made by dmstrack demo\n")
        .map_err(|e| format!("{}: {e}", marker.display()))
}

/// Puts the sample zips into the OSS simulator and scripts DMS's answers.
fn script(oss: &Arc<OssSimulator>, dms: &DmsSimulator) {
    let fresh_url = |object: &str| {
        let oss = Arc::clone(oss);
        let object = object.to_owned();
        UrlSource::generated(move || oss.presign(&object, Duration::from_secs(3600)))
    };
    let walk = |object: &str| {
        [
            StatusStep::Init,
            StatusStep::Listing,
            StatusStep::Downloading,
            StatusStep::success(fresh_url(object), 69),
        ]
    };
    for (i, sample) in SAMPLES.iter().enumerate() {
        let object = format!("demo/{}_REDO_{}.zip", sample.order_id, i + 1);
        let zip = sample_zip(&SampleSpec::demo(i as u64 + 1));
        let half = zip.len() as u64 / 2;
        oss.put_object(&object, zip);
        match sample.label {
            "orders-rollback" => dms.script_ticket(sample.order_id, sample.key, walk(&object)),
            "expired-link" => {
                let first = Arc::new(AtomicUsize::new(0));
                let oss = Arc::clone(oss);
                let url = UrlSource::generated(move || {
                    if first.fetch_add(1, Ordering::Relaxed) == 0 {
                        oss.presign_expired(&object)
                    } else {
                        oss.presign(&object, Duration::from_secs(3600))
                    }
                });
                dms.script_ticket(
                    sample.order_id,
                    sample.key,
                    [StatusStep::Downloading, StatusStep::success(url, 69)],
                );
            }
            "cut-download" => {
                oss.inject(&object, OssFault::CutAfter(half));
                dms.script_ticket(sample.order_id, sample.key, walk(&object));
            }
            _ => dms.script_ticket(
                sample.order_id,
                sample.key,
                [
                    StatusStep::Init,
                    StatusStep::Listing,
                    StatusStep::fail("binlog of the tracked range is no longer available"),
                ],
            ),
        }
    }
    let object = format!("demo/{EXPORT_ORDER}_UNDO.zip");
    oss.put_object(&object, sample_zip(&SampleSpec::demo(99)));
    dms.script_export(EXPORT_ORDER, walk(&object));
}

fn write_config(dir: &Path, endpoint: &str, oss: &str) -> Result<PathBuf, String> {
    let secret = dir.join("ak_secret");
    crate::sim::write_secret_file(&secret, AK_SECRET)
        .map_err(|e| format!("{}: {e}", secret.display()))?;
    let mut text = format!(
        "# Written by `dmstrack demo`: the simulators it points at are gone when the demo ends.\n\
         [dms]\nendpoint = \"{endpoint}\"\nsignature = \"v3\"\n\n\
         [credentials]\nsource = \"static\"\naccess_key_id = \"{AK_ID}\"\naccess_key_secret_file = \"ak_secret\"\n\n\
         [poll]\ninitial_interval = \"200ms\"\nmax_interval = \"1s\"\n\n\
         [download]\nconcurrency = 2\n\n\
         [archive]\ndir = \"archive\"\n\n[state]\ndir = \"state\"\n\n\
         [upload]\nurl = \"oss://{DEMO_BUCKET}/dms-archive\"\nendpoint = \"{oss}\"\nregion = \"cn-hangzhou\"\n"
    );
    for sample in &SAMPLES {
        text.push_str(&format!(
            "\n[[tickets]]\norder_id = {}\ndownload_key_id = \"{}\"\nlabel = \"{}\"\n",
            sample.order_id, sample.key, sample.label
        ));
    }
    text.push_str(&format!(
        "\n[[tickets]]\norder_id = {EXPORT_ORDER}\nlabel = \"started-by-dmstrack\"\n\
         export = {{ rollback_sql_type = \"REVERSE\", filter_start_time = \"2026-11-27 00:00:00\", filter_end_time = \"2026-11-27 23:59:59\", filter_tables = [\"orders\"], filter_types = [\"UPDATE\", \"DELETE\"] }}\n"
    ));
    let path = dir.join("config.toml");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Prints what happened; true when every ticket ended as the demo expects.
fn report(config: &Config, config_path: &Path, oss: &OssSimulator, elapsed: Duration) -> bool {
    let (records, _) = crate::watch::state::read_all(&config.state.dir);
    let mut as_expected = true;
    println!("\nWhat happened ({:.1}s):", elapsed.as_secs_f64());
    let stories = SAMPLES
        .iter()
        .map(|s| (s.order_id, s.story, s.expect))
        .chain([(
            EXPORT_ORDER,
            "dmstrack called DownloadDataTrackResult once, kept the new key, then polled it",
            TicketState::Archived,
        )]);
    for (order_id, story, expect) in stories {
        let Some(record) = records.iter().find(|r| r.order_id == order_id) else {
            println!("  {order_id}: no state recorded");
            as_expected = false;
            continue;
        };
        as_expected &= record.state == expect;
        let label = record.label.as_deref().unwrap_or("");
        println!(
            "  {order_id} {label:<20} {:<9} {story}",
            record.state.as_str()
        );
        match (&record.archive, &record.last_error) {
            (Some(archive), _) if record.state == TicketState::Archived => {
                println!("  {:30} → {}", "", archive.display())
            }
            (_, Some(error)) => println!("  {:30} reason: {error}", ""),
            _ => {}
        }
        if record.state == TicketState::Archived {
            match &record.upload {
                Some(upload) if upload.state == UploadState::Uploaded => {
                    println!("  {:30} ↑ {}", "", upload.url)
                }
                Some(upload) => {
                    as_expected = false;
                    println!(
                        "  {:30} upload {}: {}",
                        "",
                        upload.state.as_str(),
                        upload.last_error.as_deref().unwrap_or("")
                    );
                }
                None => as_expected = false,
            }
        }
    }
    println!("\nThe archive is in {}", config.archive.dir.display());
    let objects = oss.objects(DEMO_BUCKET);
    println!(
        "Uploaded to oss://{DEMO_BUCKET}/dms-archive/ on the OSS simulator at {}: {} objects \
         (each ticket's zip, then its manifest.json last)",
        oss.base_url(),
        objects.len()
    );
    println!(
        "Each ticket folder holds manifest.json (sizes and SHA-256 of every file) and files/."
    );
    println!(
        "Look at it again with:  dmstrack status -c {}",
        config_path.display()
    );
    if !as_expected {
        println!("\nSomething did not go as the demo expects: see the log lines above.");
    }
    as_expected
}
