//! The archive pipeline end to end, in process: the real `Daemon` against the DMS and OSS
//! simulators on paused tokio time (simulators on the same current-thread runtime), from the
//! first status query to the published archive, through every fault the documented behaviour
//! (README "Behaviour in detail", docs/) promises to survive or to refuse.

use std::io::{Cursor, Write as _};
use std::sync::Arc;
use std::time::Duration;

use dmstrack::net::signer::{SignatureVersion, sha256_hex};
use dmstrack::sim::dms::{DOWNLOAD_ACTION, DmsFault, QUERY_STATUS_ACTION, StatusStep};
use dmstrack::sim::oss::{OssFault, OssSimConfig};
use dmstrack::sim::zipgen::{SampleSpec, sample_zip};
use dmstrack::watch::RunOutcome;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::support::world::{REAL_LIMIT, VIRTUAL_LIMIT, World, wait_until};
use crate::support::{
    self, AK_ID, AK_SECRET, LogCapture, assert_files_match_zip, assert_no_secrets, read_json, tree,
};

const KEY: &str = "e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd";
const KEY2: &str = "7d1c2a9e-5b43-4f1a-9c0e-2f6b8a1d3e01";
const OBJECT: &str = "exports/x_REDO_31201_207.zip";

/// A sample export zip of `seed`.
fn export_zip(seed: u64) -> Vec<u8> {
    sample_zip(&SampleSpec::demo(seed))
}

/// Runs `dmstrack status --json` on the world's config.
async fn status_json(world: &World) -> (serde_json::Value, String) {
    let mut cmd = support::dmstrack();
    cmd.args(["--log-level", "trace", "status", "--json", "-c"])
        .arg(world.root().join("config.toml"));
    let (code, stdout, stderr) = support::run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (json, format!("{stdout}{stderr}"))
}

/// Checks every manifest field against what was served.
fn assert_manifest(world: &World, order_id: i64, key: &str, label: &str, zip: &[u8]) {
    let manifest = read_json(&world.final_dir(order_id, key).join("manifest.json"));
    let keys: Vec<&str> = manifest
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "archived_at",
            "download_key_id",
            "files",
            "label",
            "order_id",
            "source",
            "tid",
            "total_count"
        ]
    );
    assert_eq!(manifest["order_id"], order_id);
    assert_eq!(manifest["download_key_id"], key);
    assert_eq!(manifest["tid"], 3);
    assert_eq!(manifest["label"], label);
    assert_eq!(manifest["total_count"], 69);
    let archived_at = manifest["archived_at"].as_str().unwrap();
    assert_eq!(
        archived_at.len(),
        "2026-11-28T12:00:00Z".len(),
        "{archived_at}"
    );
    assert!(archived_at.ends_with('Z'), "{archived_at}");
    let at: jiff::Timestamp = archived_at.parse().unwrap();
    let age = jiff::Timestamp::now().duration_since(at);
    assert!(
        age >= jiff::SignedDuration::ZERO && age < jiff::SignedDuration::from_secs(600),
        "archived_at {archived_at} is not now"
    );
    let source = manifest["source"].as_object().unwrap();
    let mut source_keys: Vec<&str> = source.keys().map(String::as_str).collect();
    source_keys.sort_unstable();
    assert_eq!(
        source_keys,
        ["bytes", "crc64ecma", "host", "object", "sha256"]
    );
    assert_eq!(source["host"], world.oss.addr().to_string());
    // Path-style simulator URLs: the bucket (the first segment) is not part of the key.
    assert_eq!(source["object"], OBJECT);
    assert_eq!(source["bytes"], zip.len());
    let crc = support::crc64ecma(zip);
    assert_eq!(
        world.oss.object_info(OBJECT).unwrap().crc64ecma,
        crc,
        "the simulator's CRC is CRC-64/XZ"
    );
    assert_eq!(source["crc64ecma"], crc.to_string());
    assert_eq!(source["sha256"], sha256_hex(zip));
    assert_files_match_zip(&world.final_dir(order_id, key), zip);
}

// ---- 1. the happy path ----

#[tokio::test(start_paused = true)]
async fn a_ticket_walks_to_archived_with_v3_and_v1_and_status_reports_it() {
    for (signature, version) in [("v3", SignatureVersion::V3), ("v1", SignatureVersion::V1)] {
        let mut world = World::new(signature).await;
        let zip = export_zip(1);
        world.oss.put_object(OBJECT, zip.clone());
        world.dms.script_ticket(11223344, KEY, world.walk(OBJECT));
        world.config.set("archive", "keep_zip", "true");
        world.config.ticket(11223344, KEY, "orders-2026-11-27");

        let outcome = world.run_once().await;
        assert_eq!((outcome.archived, outcome.failed), (1, 0), "{signature}");
        assert!(!outcome.interrupted && outcome.auth_failure.is_none());

        let calls = world.dms.calls();
        assert_eq!(
            calls.len(),
            4,
            "INIT, LISTING, DOWNLOADING, DOWNLOAD_SUCCESS"
        );
        assert!(calls.iter().all(|c| c.signature_version == Some(version)
            && c.status == Some(200)
            && c.params.get("Tid").map(String::as_str) == Some("3")));
        assert_eq!(world.oss.get_count(OBJECT), 1);
        world.assert_gets_clean();

        let dir = world.final_dir(11223344, KEY);
        assert_manifest(&world, 11223344, KEY, "orders-2026-11-27", &zip);
        assert_eq!(
            std::fs::read(dir.join("x_REDO_31201_207.zip")).unwrap(),
            zip,
            "keep_zip keeps the object"
        );
        let top: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(top, ["files", "manifest.json", "x_REDO_31201_207.zip"]);
        world.assert_no_work_left();

        let (status, _) = status_json(&world).await;
        let entries = status.as_array().unwrap();
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        for field in [
            "order_id",
            "download_key_id",
            "label",
            "state",
            "last_status",
            "attempts",
            "next_poll_at",
            "last_error",
            "archive",
        ] {
            assert!(entry.get(field).is_some(), "status lacks {field}: {entry}");
        }
        assert_eq!(entry["order_id"], 11223344);
        assert_eq!(entry["download_key_id"], KEY);
        assert_eq!(entry["label"], "orders-2026-11-27");
        assert_eq!(entry["state"], "archived");
        assert_eq!(entry["last_status"], "DOWNLOAD_SUCCESS");
        assert_eq!(entry["attempts"], 4);
        assert_eq!(entry["next_poll_at"], serde_json::Value::Null);
        assert_eq!(entry["last_error"], serde_json::Value::Null);
        assert_eq!(entry["archive"], dir.display().to_string());
    }
}

// ---- 2. DMS faults while polling ----

#[tokio::test(start_paused = true)]
async fn every_dms_fault_while_polling_is_survived() {
    let faults = [
        DmsFault::Throttling {
            retry_after_ms: 3000,
        },
        DmsFault::ServiceUnavailable,
        DmsFault::InternalError,
        DmsFault::MalformedJson,
        DmsFault::DropConnection,
        DmsFault::BusinessFailure {
            code: "InternalError.Busy".into(),
            message: "the tracking service is busy".into(),
        },
    ];
    for fault in faults {
        let mut world = World::new("v3").await;
        let zip = export_zip(2);
        world.oss.put_object(OBJECT, zip.clone());
        world.dms.script_ticket(7, KEY, world.walk(OBJECT));
        // The second status query of the walk meets the fault.
        world
            .dms
            .inject_for_action(QUERY_STATUS_ACTION, 2, fault.clone());
        world.config.ticket(7, KEY, "faulty");

        let outcome = world.run_once().await;
        assert_eq!((outcome.archived, outcome.failed), (1, 0), "{fault:?}");
        assert_files_match_zip(&world.final_dir(7, KEY), &zip);
        let calls = world.dms.calls();
        let hit = calls
            .iter()
            .position(|c| c.faults.contains(&fault))
            .unwrap_or_else(|| panic!("{fault:?} was never served"));
        assert!(calls.len() > hit + 1, "{fault:?}: no call after the fault");
        assert!(calls[hit + 1..].iter().any(|c| c.status == Some(200)));
        if let DmsFault::Throttling { retry_after_ms } = fault {
            let gap = calls[hit + 1].at - calls[hit].at;
            assert!(
                gap >= Duration::from_millis(retry_after_ms),
                "x-acs-retry-after honoured: waited {gap:?}"
            );
        }
        let record = world.record(7, KEY);
        assert_eq!(record["state"], "archived");
        assert_eq!(record["last_error"], serde_json::Value::Null);
    }
}

#[tokio::test(start_paused = true)]
async fn a_success_false_answer_shows_in_last_error_then_the_ticket_recovers() {
    let mut world = World::new("v3").await;
    let zip = export_zip(3);
    world.oss.put_object(OBJECT, zip.clone());
    world.dms.script_ticket(7, KEY, world.walk(OBJECT));
    world.dms.inject_for_action(
        QUERY_STATUS_ACTION,
        2,
        DmsFault::BusinessFailure {
            code: "InternalError.Busy".into(),
            message: "the tracking service is busy".into(),
        },
    );
    world.config.ticket(7, KEY, "busy");
    let (_, run) = world.spawn(true).await;

    // Between the refused query and the next one, the state file tells why.
    let state = world.state();
    let mut seen = None;
    wait_until("last_error shows the refusal", VIRTUAL_LIMIT, || {
        seen = support::state_record(&state, 7, KEY).filter(|r| {
            r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("InternalError.Busy"))
        });
        seen.is_some()
    })
    .await;
    let seen = seen.unwrap();
    assert_eq!(seen["state"], "waiting");
    assert!(
        seen["last_error"]
            .as_str()
            .unwrap()
            .contains("the tracking service is busy"),
        "{seen}"
    );
    assert_eq!(world.status_calls(), 2, "seen before the next poll");

    let outcome = world.finish(run).await;
    assert_eq!(outcome.archived, 1);
    let record = world.record(7, KEY);
    assert_eq!(record["state"], "archived");
    assert_eq!(record["last_error"], serde_json::Value::Null);
    assert_files_match_zip(&world.final_dir(7, KEY), &zip);
}

// ---- 3. OSS faults ----

/// One ticket, `fault` injected into the first GET; runs to the end.
async fn run_with_oss_fault(world: &mut World, zip: &[u8], fault: OssFault) -> RunOutcome {
    world.oss.put_object(OBJECT, zip.to_vec());
    world.oss.inject(OBJECT, fault);
    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    world.config.ticket(7, KEY, "oss-fault");
    world.run_once().await
}

#[tokio::test(start_paused = true)]
async fn a_cut_download_resumes_with_range_from_the_cut() {
    let mut world = World::new("v3").await;
    let zip = export_zip(4);
    let cut = zip.len() as u64 / 2;
    let outcome = run_with_oss_fault(&mut world, &zip, OssFault::CutAfter(cut)).await;
    assert_eq!(outcome.archived, 1);
    let gets = world.gets();
    assert_eq!(gets.len(), 2);
    assert_eq!((gets[0].range.as_deref(), gets[0].status), (None, 200));
    assert_eq!(gets[0].fault, Some(OssFault::CutAfter(cut)));
    assert_eq!(gets[1].range, Some(format!("bytes={cut}-")));
    assert_eq!(gets[1].status, 206);
    assert_eq!(
        world.status_calls(),
        1,
        "a cut is not a reason to ask DMS again"
    );
    world.assert_gets_clean();
    assert_manifest(&world, 7, KEY, "oss-fault", &zip);
    world.assert_no_work_left();
}

#[tokio::test]
async fn a_stalled_download_times_out_and_resumes() {
    let mut world = World::new("v3").await.real_time();
    world.config.set("download", "read_timeout", "\"1s\"");
    let zip = export_zip(5);
    let stall = zip.len() as u64 / 3;
    let started = tokio::time::Instant::now();
    let outcome = run_with_oss_fault(&mut world, &zip, OssFault::StallAfter(stall)).await;
    assert_eq!(outcome.archived, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the read timeout ended the stall"
    );
    let gets = world.gets();
    assert_eq!(gets.len(), 2);
    assert_eq!(gets[1].range, Some(format!("bytes={stall}-")));
    world.assert_gets_clean();
    assert_manifest(&world, 7, KEY, "oss-fault", &zip);
}

#[tokio::test(start_paused = true)]
async fn a_flipped_byte_or_a_wrong_crc_header_is_downloaded_again() {
    let zip = export_zip(6);
    for fault in [
        OssFault::FlipByte(zip.len() as u64 / 2),
        OssFault::WrongCrcHeader,
    ] {
        let mut world = World::new("v3").await;
        let outcome = run_with_oss_fault(&mut world, &zip, fault).await;
        assert_eq!((outcome.archived, outcome.failed), (1, 0), "{fault:?}");
        let gets = world.gets();
        assert_eq!(gets.len(), 2, "{fault:?}");
        assert_eq!(gets[0].fault, Some(fault));
        assert_eq!(
            gets[1].range, None,
            "{fault:?}: a corrupt file is not resumed"
        );
        assert_eq!(gets[1].status, 200);
        world.assert_gets_clean();
        assert_manifest(&world, 7, KEY, "oss-fault", &zip);
        world.assert_no_work_left();
    }
}

#[tokio::test(start_paused = true)]
async fn an_oss_500_is_retried() {
    let mut world = World::new("v3").await;
    let zip = export_zip(7);
    let outcome = run_with_oss_fault(&mut world, &zip, OssFault::InternalError).await;
    assert_eq!(outcome.archived, 1);
    let gets = world.gets();
    assert_eq!(
        gets.iter().map(|g| g.status).collect::<Vec<_>>(),
        [500, 200]
    );
    assert_eq!(
        gets[0].query.expose(),
        gets[1].query.expose(),
        "a 500 does not need a new URL"
    );
    assert_eq!(world.status_calls(), 1);
    assert_manifest(&world, 7, KEY, "oss-fault", &zip);
}

#[tokio::test(start_paused = true)]
async fn a_refused_url_gets_a_fresh_one_from_dms_and_is_never_retried() {
    // The link expires between answer and GET (403 although the URL looks valid), or DMS
    // hands out a URL that has already expired.
    for expired_first in [false, true] {
        let mut world = World::new("v3").await;
        let zip = export_zip(8);
        world.oss.put_object(OBJECT, zip.clone());
        if !expired_first {
            world.oss.inject(OBJECT, OssFault::Expired);
        }
        let urls = world.url_source(OBJECT, usize::from(expired_first));
        world.dms.script_ticket(
            7,
            KEY,
            [StatusStep::Downloading, StatusStep::success(urls, 69)],
        );
        world.config.ticket(7, KEY, "oss-fault");
        let outcome = world.run_once().await;
        assert_eq!(outcome.archived, 1, "expired_first={expired_first}");

        let gets = world.gets();
        assert_eq!(
            gets.iter().map(|g| g.status).collect::<Vec<_>>(),
            [403, 200]
        );
        assert_eq!(
            world.status_calls(),
            3,
            "DOWNLOADING, DOWNLOAD_SUCCESS, then one fresh query"
        );
        let issued = world.urls.lock().unwrap().clone();
        assert_eq!(issued.len(), 2);
        assert_ne!(issued[0], issued[1]);
        let queries: Vec<&str> = gets.iter().map(|g| g.query.expose()).collect();
        assert_ne!(
            queries[0], queries[1],
            "the refused URL is never sent again"
        );
        world.assert_gets_clean();
        assert_manifest(&world, 7, KEY, "oss-fault", &zip);
    }
}

#[tokio::test(start_paused = true)]
async fn an_object_replaced_after_a_cut_is_downloaded_from_the_start() {
    let mut world = World::new("v3").await;
    let old = export_zip(9);
    let new = export_zip(10);
    assert_ne!(old, new);
    world.oss.put_object(OBJECT, old.clone());
    let cut = old.len() as u64 / 2;
    world.oss.inject(OBJECT, OssFault::CutAfter(cut));
    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    world.config.ticket(7, KEY, "oss-fault");
    let (_, run) = world.spawn(true).await;
    let oss = Arc::clone(&world.oss);
    wait_until("the first GET", VIRTUAL_LIMIT, || {
        oss.get_count(OBJECT) == 1
    })
    .await;
    // Replaced while the downloader backs off before resuming: new ETag.
    let old_etag = world.oss.object_info(OBJECT).unwrap().etag;
    let new_info = world.oss.put_object(OBJECT, new.clone());
    assert_ne!(old_etag, new_info.etag);
    let outcome = world.finish(run).await;
    assert_eq!(outcome.archived, 1);

    let gets = world.gets();
    let ranges: Vec<Option<&str>> = gets.iter().map(|g| g.range.as_deref()).collect();
    let resume = format!("bytes={cut}-");
    assert_eq!(ranges, [None, Some(resume.as_str()), None]);
    assert_eq!(gets[2].status, 200);
    let manifest = read_json(&world.final_dir(7, KEY).join("manifest.json"));
    assert_eq!(manifest["source"]["sha256"], sha256_hex(&new));
    assert_eq!(
        manifest["source"]["crc64ecma"],
        support::crc64ecma(&new).to_string()
    );
    assert_files_match_zip(&world.final_dir(7, KEY), &new);
}

// ---- 4. malicious and corrupt zips ----

/// Offsets of one entry's central-directory and local headers in a non-zip64 zip.
#[derive(Debug, Clone, Copy)]
struct EntryHeaders {
    central: usize,
    local: usize,
}

fn le16(zip: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([zip[at], zip[at + 1]])
}

fn le32(zip: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(zip[at..at + 4].try_into().unwrap())
}

fn entry_headers(zip: &[u8]) -> Vec<EntryHeaders> {
    let end = zip.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let mut central = le32(zip, end + 16) as usize;
    (0..le16(zip, end + 10))
        .map(|_| {
            assert_eq!(&zip[central..central + 4], b"PK\x01\x02");
            let found = EntryHeaders {
                central,
                local: le32(zip, central + 42) as usize,
            };
            central += 46
                + usize::from(le16(zip, central + 28))
                + usize::from(le16(zip, central + 30))
                + usize::from(le16(zip, central + 32));
            found
        })
        .collect()
}

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// A zip of `(name, content)` files; a name ending in `/` is a folder.
fn build_zip(entries: &[(&str, &[u8])], options: SimpleFileOptions) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        if name.ends_with('/') {
            writer.add_directory(*name, options).unwrap();
        } else {
            writer.start_file(*name, options).unwrap();
            writer.write_all(data).unwrap();
        }
    }
    writer.finish().unwrap().into_inner()
}

/// A zip whose second entry is named `name`, a name `ZipWriter` would not write: a
/// placeholder of the same length is patched in both headers.
fn zip_with_raw_name(name: &str) -> Vec<u8> {
    let placeholder = "Q".repeat(name.len());
    let mut zip = build_zip(
        &[("fine.sql", b"select 1;\n"), (&placeholder, b"payload")],
        deflated(),
    );
    let spots: Vec<usize> = zip
        .windows(placeholder.len())
        .enumerate()
        .filter(|(_, w)| *w == placeholder.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(spots.len(), 2, "the placeholder is in both headers");
    for at in spots {
        zip[at..at + name.len()].copy_from_slice(name.as_bytes());
    }
    zip
}

/// Runs one ticket over `zip` (with extra `[archive]` settings) to its end.
async fn run_bad_zip(zip: &[u8], archive_settings: &[(&str, &str)]) -> (World, RunOutcome) {
    let mut world = World::new("v3").await;
    world.oss.put_object(OBJECT, zip.to_vec());
    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    world.config.ticket(7, KEY, "bad-zip");
    for (key, value) in archive_settings {
        world.config.set("archive", key, value);
    }
    let outcome = world.run_once().await;
    (world, outcome)
}

/// The ticket failed for `reason`, and nothing exists but config, state and empty work folders.
fn assert_failed_cleanly(world: &World, outcome: &RunOutcome, case: &str, reason: &str) {
    assert_eq!((outcome.archived, outcome.failed), (0, 1), "{case}");
    let record = world.record(7, KEY);
    assert_eq!(record["state"], "failed", "{case}");
    let error = record["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(reason),
        "{case}: last_error {error:?} lacks {reason:?}"
    );
    assert!(
        !world.archive().join("7").exists(),
        "{case}: something was published"
    );
    assert_eq!(
        tree(world.root()),
        [
            "ak_secret",
            "archive/",
            "archive/.dmstrack/",
            "archive/.dmstrack/downloads/",
            "archive/.dmstrack/lock",
            "archive/.dmstrack/staging/",
            "config.toml",
            "state/",
            "state/.lock",
            "state/state.db",
            "state/state.db-shm",
            "state/state.db-wal",
        ],
        "{case}: nothing else is written, inside or outside the archive"
    );
}

#[tokio::test(start_paused = true)]
async fn unsafe_zips_fail_the_ticket_and_publish_nothing() {
    // From `<archive>/.dmstrack/staging/<x>/files/`, five levels up is the test's root.
    let escape = "../../../../../evil";
    let (world, outcome) = run_bad_zip(&zip_with_raw_name(escape), &[]).await;
    assert_failed_cleanly(
        &world,
        &outcome,
        escape,
        "entry \"../../../../../evil\": path escapes",
    );
    assert_eq!(
        world.oss.get_count(OBJECT),
        1,
        "an unsafe zip is not downloaded again"
    );

    let absolute_root = tempfile::tempdir().unwrap();
    let absolute = format!("{}/abs-evil", absolute_root.path().display());
    for name in ["/abs", absolute.as_str()] {
        let (world, outcome) = run_bad_zip(&zip_with_raw_name(name), &[]).await;
        assert_failed_cleanly(&world, &outcome, name, "path is absolute");
        assert!(tree(absolute_root.path()).is_empty());
    }

    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("before.sql", deflated()).unwrap();
    writer.write_all(b"select 1;\n").unwrap();
    writer
        .add_symlink("link", "/etc/passwd", deflated())
        .unwrap();
    let symlink = writer.finish().unwrap().into_inner();
    let (world, outcome) = run_bad_zip(&symlink, &[]).await;
    assert_failed_cleanly(
        &world,
        &outcome,
        "symlink",
        "symbolic links are not allowed",
    );

    let zeros = vec![0_u8; 8 << 20];
    let bomb = build_zip(&[("small.sql", b"ok"), ("bomb.sql", &zeros)], deflated());
    assert!(bomb.len() < 64 << 10, "a real bomb: {} bytes", bomb.len());
    let (world, outcome) = run_bad_zip(&bomb, &[("max_unpacked_bytes", "\"1MiB\"")]).await;
    assert_failed_cleanly(&world, &outcome, "bomb", "max_unpacked_bytes");

    let many = build_zip(
        &[
            ("1.sql", b"a"),
            ("2.sql", b"b"),
            ("3/", b""),
            ("4.sql", b"d"),
        ],
        deflated(),
    );
    let (world, outcome) = run_bad_zip(&many, &[("max_entries", "3")]).await;
    assert_failed_cleanly(&world, &outcome, "entries", "max_entries");
    // The same zip is fine within the limit: the limit, not the zip, refused it.
    let (world, outcome) = run_bad_zip(&many, &[("max_entries", "4")]).await;
    assert_eq!(outcome.archived, 1);
    assert_files_match_zip(&world.final_dir(7, KEY), &many);
}

#[tokio::test(start_paused = true)]
async fn corrupt_zips_are_downloaded_twice_then_fail() {
    let mut wrong_crc = build_zip(&[("a.sql", b"insert into t values (1);\n")], deflated());
    let entry = entry_headers(&wrong_crc)[0];
    for at in [entry.central + 16, entry.local + 14] {
        wrong_crc[at..at + 4].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
    }
    let whole = build_zip(&[("a.sql", &[b'x'; 10_000]), ("b.sql", b"y")], deflated());
    let truncated = whole[..whole.len() / 2].to_vec();
    for (case, zip, reason) in [
        ("wrong CRC-32", wrong_crc, "CRC-32 mismatch"),
        ("truncated", truncated, "downloaded twice"),
    ] {
        let (world, outcome) = run_bad_zip(&zip, &[]).await;
        assert_failed_cleanly(&world, &outcome, case, reason);
        assert_failed_cleanly(&world, &outcome, case, "downloaded twice, same bytes");
        assert_eq!(
            world.oss.get_count(OBJECT),
            2,
            "{case}: retried as a bad download"
        );
        assert!(
            world
                .gets()
                .iter()
                .all(|g| g.range.is_none() && g.status == 200)
        );
    }
}

// ---- 5. unusual but valid zips ----

#[tokio::test(start_paused = true)]
async fn unusual_but_valid_zips_are_archived_byte_identical() {
    let big: Vec<u8> = (0..300_000_u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut streamed = ZipWriter::new_stream(Vec::new());
    streamed.start_file("big.bin", deflated()).unwrap();
    streamed.write_all(&big).unwrap();
    streamed
        .start_file(
            "dir/small.txt",
            SimpleFileOptions::default().compression_method(CompressionMethod::Stored),
        )
        .unwrap();
    streamed.write_all(b"small").unwrap();
    let data_descriptors = streamed.finish().unwrap().into_inner();
    assert_ne!(
        le16(
            &data_descriptors,
            entry_headers(&data_descriptors)[0].central + 8
        ) & (1 << 3),
        0,
        "the fixture uses data descriptors"
    );

    let payload = b"zip64 payload\n".repeat(1000);
    let zip64 = build_zip(
        &[("a.sql", &payload), ("b.sql", b"")],
        deflated().large_file(true),
    );
    let first = entry_headers(&zip64)[0];
    let name_len = usize::from(le16(&zip64, first.local + 26));
    assert_eq!(
        le16(&zip64, first.local + 30 + name_len),
        0x0001,
        "zip64 extra field"
    );

    let mut chinese = build_zip(
        &[
            ("数据/订单表.sql", b"select 1;\n"),
            ("报表/汇总.csv", b"a,b\n"),
        ],
        deflated(),
    );
    let second = entry_headers(&chinese)[1];
    for at in [second.central + 8, second.local + 6] {
        let flags = le16(&chinese, at) & !(1 << 11);
        chinese[at..at + 2].copy_from_slice(&flags.to_le_bytes());
    }
    assert_eq!(
        le16(&chinese, second.central + 8) & (1 << 11),
        0,
        "no UTF-8 flag"
    );
    assert_ne!(
        le16(&chinese, entry_headers(&chinese)[0].central + 8) & (1 << 11),
        0,
        "UTF-8 flag"
    );

    let folders = build_zip(
        &[
            ("空目录/", b""),
            ("a/b/c/", b""),
            ("a/b/c/d.sql", b"deep"),
            ("x/y/z.sql", b"implicit parents"),
            ("top.sql", b""),
        ],
        deflated(),
    );

    let mut world = World::new("v3").await;
    let cases = [
        (1_i64, "data-descriptors", data_descriptors),
        (2, "zip64", zip64),
        (3, "chinese-names", chinese),
        (4, "empty-folders", folders),
    ];
    for (order_id, label, zip) in &cases {
        let object = format!("exports/{label}.zip");
        world.oss.put_object(&object, zip.clone());
        world.dms.script_ticket(
            *order_id,
            KEY,
            [StatusStep::success(world.fresh_urls(&object), 69)],
        );
        world.config.ticket(*order_id, KEY, label);
    }
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (4, 0));
    for (order_id, label, zip) in &cases {
        let dir = world.final_dir(*order_id, KEY);
        assert_files_match_zip(&dir, zip);
        let manifest = read_json(&dir.join("manifest.json"));
        assert_eq!(manifest["label"], *label);
        assert_eq!(manifest["source"]["sha256"], sha256_hex(zip));
    }
    assert!(world.final_dir(4, KEY).join("files/空目录").is_dir());
    assert!(
        world
            .final_dir(3, KEY)
            .join("files/报表/汇总.csv")
            .is_file()
    );
    world.assert_no_work_left();
}

// ---- 6. restarts ----

#[tokio::test(start_paused = true)]
async fn an_archived_ticket_is_never_fetched_again_after_a_restart() {
    let mut world = World::new("v3").await;
    let zip = export_zip(11);
    world.oss.put_object(OBJECT, zip.clone());
    world.dms.script_ticket(7, KEY, world.walk(OBJECT));
    world.config.ticket(7, KEY, "once");
    assert_eq!(world.run_once().await.archived, 1);
    let calls = world.dms.call_count();
    assert_eq!(world.oss.get_count(OBJECT), 1);
    let manifest = std::fs::read(world.final_dir(7, KEY).join("manifest.json")).unwrap();

    world.oss.clear_requests();
    let again = world.run_once().await;
    assert_eq!((again.archived, again.failed), (1, 0));
    assert_eq!(
        world.dms.call_count(),
        calls,
        "no DMS call for an archived ticket"
    );
    assert!(world.oss.requests().is_empty(), "no request to OSS");
    assert_eq!(
        std::fs::read(world.final_dir(7, KEY).join("manifest.json")).unwrap(),
        manifest,
        "the archive is untouched"
    );

    // Even with a state file that lost track (say, restored from an old backup), the
    // manifest decides.
    let mut record = world.record(7, KEY);
    record["state"] = "waiting".into();
    support::write_state_record(&world.state(), &record);
    assert_eq!(world.run_once().await.archived, 1);
    assert_eq!(world.dms.call_count(), calls);
    assert!(world.oss.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_export_is_requested_once_and_its_key_survives_a_restart() {
    let mut world = World::new("v3").await;
    let zip = export_zip(12);
    world.oss.put_object(OBJECT, zip.clone());
    world.dms.script_export(
        406,
        [
            StatusStep::Init,
            StatusStep::Init,
            StatusStep::Listing,
            StatusStep::success(world.fresh_urls(OBJECT), 69),
        ],
    );
    world.config.raw_ticket(
        "order_id = 406\nlabel = \"started-by-dmstrack\"\ntid = 3\n\
         export = { rollback_sql_type = \"REVERSE\", filter_start_time = \"2026-11-27 00:00:00\", \
         filter_end_time = \"2026-11-27 23:59:59\", filter_tables = [\"orders\"], filter_types = [\"UPDATE\", \"DELETE\"] }",
    );
    let state_file = || {
        let records = support::state_records(&world.state());
        assert!(records.len() <= 1, "{records:?}");
        records.into_iter().next()
    };

    let (shutdown, run) = world.spawn(false).await;
    let mut key_saved_before_first_poll = false;
    wait_until("the first status query", VIRTUAL_LIMIT, || {
        let polled = world.status_calls() > 0;
        if !polled && let (Some(record), [export]) = (state_file(), world.dms.exports().as_slice())
        {
            key_saved_before_first_poll |=
                record["download_key_id"] == export.download_key_id.as_str();
        }
        polled
    })
    .await;
    assert!(
        key_saved_before_first_poll,
        "the key is saved before the first poll"
    );
    wait_until("the first answer is saved", VIRTUAL_LIMIT, || {
        state_file().is_some_and(|r| r["attempts"] == 1)
    })
    .await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(VIRTUAL_LIMIT, run)
        .await
        .unwrap()
        .unwrap();
    assert!(stopped.interrupted);
    let record = state_file().unwrap();
    assert_eq!(record["state"], "waiting");
    let exports = world.dms.exports();
    assert_eq!(exports.len(), 1);
    let key = exports[0].download_key_id.clone();
    assert_eq!(exports[0].rollback_sql_type, "REVERSE");
    assert_eq!(exports[0].tid, Some(3));

    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    assert_eq!(
        world.dms.action_count(DOWNLOAD_ACTION),
        1,
        "never requested again"
    );
    assert_eq!(world.dms.exports().len(), 1);
    assert!(
        world
            .dms
            .calls()
            .iter()
            .filter(|c| c.action.as_deref() == Some(QUERY_STATUS_ACTION))
            .all(|c| c.params.get("DownloadKeyId") == Some(&key))
    );
    assert_files_match_zip(&world.final_dir(406, &key), &zip);
    let (status, _) = status_json(&world).await;
    assert_eq!(status[0]["download_key_id"], key.as_str());
    assert_eq!(status[0]["state"], "archived");
}

// ---- 7. failures DMS reports, and giving up ----

#[tokio::test(start_paused = true)]
async fn download_fail_ends_failed_with_dms_reason() {
    let mut world = World::new("v3").await;
    world.dms.script_ticket(
        7,
        KEY,
        [
            StatusStep::Init,
            StatusStep::fail("binlog of the tracked range is no longer available"),
        ],
    );
    world.config.ticket(7, KEY, "gone");
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (0, 1));
    let record = world.record(7, KEY);
    assert_eq!(record["state"], "failed");
    assert_eq!(record["last_status"], "DOWNLOAD_FAIL");
    assert!(
        record["last_error"]
            .as_str()
            .unwrap()
            .contains("binlog of the tracked range is no longer available"),
        "{record}"
    );
    assert_eq!(world.status_calls(), 2, "no poll after DOWNLOAD_FAIL");
    assert!(world.oss.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn give_up_after_ends_failed() {
    let mut world = World::new("v3").await;
    world.dms.script_ticket(7, KEY, []); // INIT forever
    world.config.set("poll", "give_up_after", "\"30s\"");
    world.config.ticket(7, KEY, "slow");
    let started = tokio::time::Instant::now();
    let outcome = world.run_once().await;
    let took = started.elapsed();
    assert_eq!((outcome.archived, outcome.failed), (0, 1));
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(35),
        "gave up after {took:?}"
    );
    let record = world.record(7, KEY);
    assert_eq!(record["state"], "failed");
    assert!(
        record["last_error"].as_str().unwrap().contains("gave up"),
        "{record}"
    );
    assert!(world.status_calls() >= 10, "it kept polling until then");
}

/// An archive folder with its manifest is the truth (put there by another run or by hand).
fn place_archive(world: &World, order_id: i64, key: &str) {
    let dir = world.final_dir(order_id, key);
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("manifest.json"), b"{}").unwrap();
}

/// An archive that appears while the daemon runs is adopted within seconds, never downloaded.
#[tokio::test(start_paused = true)]
async fn an_archive_appearing_while_the_daemon_runs_is_adopted() {
    let mut world = World::new("v3").await;
    world.dms.script_ticket(7, KEY, []); // INIT forever
    world.config.ticket(7, KEY, "appears");
    let running = world.start(false).await;
    wait_until("the ticket is polled", VIRTUAL_LIMIT, || {
        world.status_calls() >= 1
    })
    .await;
    place_archive(&world, 7, KEY);
    let placed = tokio::time::Instant::now();
    wait_until("the archive is adopted", VIRTUAL_LIMIT, || {
        support::state_record(&world.state(), 7, KEY).is_some_and(|r| r["state"] == "archived")
    })
    .await;
    assert!(
        placed.elapsed() <= Duration::from_secs(65),
        "{:?}",
        placed.elapsed()
    );
    let record = world.record(7, KEY);
    assert_eq!(
        record["archive"].as_str(),
        Some(world.final_dir(7, KEY).to_str().unwrap())
    );
    assert!(world.oss.requests().is_empty(), "never downloaded");
    running.shutdown.cancel();
    running.run.await.unwrap();
}

/// DOWNLOAD_FAIL for a ticket whose archive is on disk: archived, not failed.
#[tokio::test(start_paused = true)]
async fn an_archive_on_disk_is_never_turned_into_a_failure() {
    let mut world = World::new("v3").await;
    world.dms.script_ticket(
        7,
        KEY,
        [StatusStep::Init, StatusStep::fail("the export was removed")],
    );
    world.config.ticket(7, KEY, "failing");
    let (_, run) = world.spawn(true).await;
    wait_until("the ticket is polled", VIRTUAL_LIMIT, || {
        world.status_calls() >= 1
    })
    .await;
    place_archive(&world, 7, KEY);
    let outcome = world.finish(run).await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    assert_eq!(world.record(7, KEY)["state"], "archived");

    // A ticket already failed in the state, whose archive then appears: archived at the
    // next start.
    let mut world = World::new("v3").await;
    world
        .dms
        .script_ticket(8, KEY, [StatusStep::fail("the export was removed")]);
    world.config.ticket(8, KEY, "failed before");
    assert_eq!(world.run_once().await.failed, 1);
    place_archive(&world, 8, KEY);
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    assert_eq!(world.record(8, KEY)["state"], "archived");
}

/// `give_up_after` is kept to time: the ticket fails when it runs out, not at the next
/// backoff step after it.
#[tokio::test(start_paused = true)]
async fn give_up_after_is_kept_to_time() {
    let mut world = World::new("v3").await;
    world.dms.script_ticket(7, KEY, []); // INIT forever
    world
        .config
        .set("poll", "give_up_after", "\"5s\"")
        .set("poll", "initial_interval", "\"4s\"")
        .set("poll", "max_interval", "\"60s\"")
        .set("poll", "jitter", "0.0");
    world.config.ticket(7, KEY, "slow");
    let started = tokio::time::Instant::now();
    let outcome = world.run_once().await;
    let took = started.elapsed();
    assert_eq!((outcome.archived, outcome.failed), (0, 1));
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "gave up after {took:?}"
    );
}

/// A reload that shortens `give_up_after` is kept to time too: a poll queued past the new
/// deadline comes back to it.
#[tokio::test(start_paused = true)]
async fn a_shorter_give_up_after_on_reload_is_kept_to_time() {
    let mut world = World::new("v3").await;
    world.dms.script_ticket(7, KEY, []); // INIT forever
    world
        .config
        .set("poll", "initial_interval", "\"10m\"")
        .set("poll", "max_interval", "\"10m\"")
        .set("poll", "jitter", "0.0");
    world.config.ticket(7, KEY, "slow");
    let running = world.start(false).await;
    wait_until("the first poll", VIRTUAL_LIMIT, || {
        world.status_calls() >= 1
    })
    .await;
    let started = tokio::time::Instant::now();
    world.config.set("poll", "give_up_after", "\"30s\"");
    world.config.write(world.root());
    running.reload.send(()).await.unwrap();
    wait_until("the ticket gives up", VIRTUAL_LIMIT, || {
        support::state_record(&world.state(), 7, KEY).is_some_and(|r| r["state"] == "failed")
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(world.status_calls(), 1, "no second poll before giving up");
    running.shutdown.cancel();
    running.run.await.unwrap();
}

// ---- 8. downloads and polls ----

/// On real time (see [`World::real_time`]).
#[tokio::test]
async fn a_stalled_download_never_delays_other_tickets_polls() {
    let mut world = World::new("v3").await.real_time();
    world
        .config
        .set("download", "concurrency", "1")
        .set("download", "read_timeout", "\"5s\"");
    let stalled = "exports/stalled.zip";
    let other = "exports/other.zip";
    let (stalled_zip, other_zip) = (export_zip(13), export_zip(14));
    world.oss.put_object(stalled, stalled_zip.clone());
    world.oss.put_object(other, other_zip.clone());
    world.oss.inject(stalled, OssFault::StallAfter(1000));
    world
        .dms
        .script_ticket(1, KEY, [StatusStep::success(world.fresh_urls(stalled), 69)]);
    let mut steps = StatusStep::Init.times(6);
    steps.push(StatusStep::success(world.fresh_urls(other), 69));
    world.dms.script_ticket(2, KEY2, steps);
    world
        .config
        .ticket(1, KEY, "stalled")
        .ticket(2, KEY2, "other");

    let (_, run) = world.spawn(true).await;
    let oss = Arc::clone(&world.oss);
    wait_until("the stalled GET", REAL_LIMIT, || {
        oss.get_count(stalled) == 1
    })
    .await;
    let before = world.dms.status_answers(2, KEY2);
    let dms = &world.dms;
    wait_until(
        "the other ticket reaches DOWNLOAD_SUCCESS",
        REAL_LIMIT,
        || dms.status_answers(2, KEY2) >= 7,
    )
    .await;
    // The stalled GET has not timed out (no second GET): every one of these polls happened
    // while the only download slot was taken.
    assert!(before < 7, "{before}");
    assert_eq!(world.oss.get_count(stalled), 1, "still stalled");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.oss.get_count(stalled), 1, "still stalled");
    assert_eq!(
        world.oss.get_count(other),
        0,
        "download.concurrency = 1: the other download waits for the slot"
    );

    let outcome = world.finish(run).await;
    assert_eq!((outcome.archived, outcome.failed), (2, 0));
    let keys: Vec<String> = world.gets().iter().filter_map(|g| g.key.clone()).collect();
    assert_eq!(keys, [stalled, stalled, other], "one download at a time");
    assert_files_match_zip(&world.final_dir(1, KEY), &stalled_zip);
    assert_files_match_zip(&world.final_dir(2, KEY2), &other_zip);
}

/// On real time (see [`World::real_time`]).
#[tokio::test]
async fn download_concurrency_caps_simultaneous_gets() {
    let mut world = World::new("v3").await.real_time();
    world
        .config
        .set("download", "concurrency", "2")
        .set("download", "read_timeout", "\"1s\"");
    let mut zips = Vec::new();
    for order_id in 1..=3_i64 {
        let object = format!("exports/{order_id}.zip");
        let zip = export_zip(20 + order_id as u64);
        world.oss.put_object(&object, zip.clone());
        world.oss.inject(&object, OssFault::StallAfter(500));
        world.dms.script_ticket(
            order_id,
            KEY,
            [StatusStep::success(world.fresh_urls(&object), 69)],
        );
        world.config.ticket(order_id, KEY, &format!("t{order_id}"));
        zips.push(zip);
    }
    let (_, run) = world.spawn(true).await;
    let oss = Arc::clone(&world.oss);
    let gets = || oss.requests().iter().filter(|r| r.method == "GET").count();
    wait_until("two GETs", REAL_LIMIT, || gets() == 2).await;
    // Both stall for the read timeout (1 s), then back off for about a second before they
    // resume: until then no slot is free.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(gets(), 2, "a third GET waits while two are stalled");
    let outcome = world.finish(run).await;
    assert_eq!(outcome.archived, 3);
    let gets = world.gets();
    assert_eq!(gets.len(), 6, "each stalled once, then resumed");
    let first_resume = gets.iter().position(|g| g.range.is_some()).unwrap();
    assert_eq!(first_resume, 2, "the third waited until a slot was free");
    for (i, zip) in zips.iter().enumerate() {
        assert_files_match_zip(&world.final_dir(i as i64 + 1, KEY), zip);
    }
}

// ---- 9. secrets ----

#[tokio::test(start_paused = true)]
async fn no_secret_reaches_logs_state_manifest_or_status() {
    const STS_TOKEN: &str = "CAISsts-token-Zq9Wk2-never-print";
    const OSS_TOKEN: &str = "CAISoss-token+Pq/7Lm=never-print";
    let logs = LogCapture::default();
    let _guard = logs.install();

    let mut world = World::with_oss(
        "v1",
        OssSimConfig::with_security_token(OSS_TOKEN),
        tempfile::tempdir().unwrap(),
    )
    .await;
    world.dms.add_sts_credentials(AK_ID, AK_SECRET, STS_TOKEN);
    world
        .config
        .set("credentials", "security_token", &format!("{STS_TOKEN:?}"));
    let zip = export_zip(30);
    world.oss.put_object(OBJECT, zip.clone());
    world.oss.inject(OBJECT, OssFault::Expired);
    world
        .oss
        .inject(OBJECT, OssFault::CutAfter(zip.len() as u64 / 2));
    world.dms.script_ticket(7, KEY, world.walk(OBJECT));
    world.dms.inject_for_action(
        QUERY_STATUS_ACTION,
        2,
        DmsFault::Throttling {
            retry_after_ms: 100,
        },
    );
    world.dms.script_ticket(8, KEY2, [StatusStep::fail("gone")]);
    world
        .config
        .ticket(7, KEY, "secret-test")
        .ticket(8, KEY2, "failing");
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 1));
    assert_eq!(world.gets().len(), 3, "refused, cut, resumed");

    let mut secrets: Vec<String> = vec![
        AK_SECRET.into(),
        STS_TOKEN.into(),
        OSS_TOKEN.into(),
        world.oss.config().access_key_secret.expose().into(),
    ];
    for url in world.urls.lock().unwrap().iter() {
        let (_, query) = url.split_once('?').unwrap();
        secrets.push(query.into());
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap();
            if ["Signature", "OSSAccessKeyId", "security-token"].contains(&name) {
                secrets.push(value.into());
                let decoded = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .unwrap()
                    .into_owned();
                secrets.push(decoded);
            }
        }
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();

    let log = logs.text();
    assert!(
        log.contains("resuming download with Range"),
        "the capture works: {log}"
    );
    assert!(log.contains("asking DMS for a fresh one"), "{log}");
    assert!(log.contains("DMS call failed; retrying"), "{log}");
    assert_no_secrets(&log, &secrets);

    let mut files = String::new();
    for path in tree(world.root()) {
        let full = world.root().join(&path);
        if full.is_file() && path != "ak_secret" && !path.starts_with("archive/7/") {
            // The state database is binary; its records are JSON text inside it.
            files.push_str(&String::from_utf8_lossy(&std::fs::read(&full).unwrap()));
        }
    }
    files
        .push_str(&std::fs::read_to_string(world.final_dir(7, KEY).join("manifest.json")).unwrap());
    let config_text = std::fs::read_to_string(world.root().join("config.toml")).unwrap();
    let files = files.replace(&config_text, "");
    assert!(files.contains("\"state\":\"archived\""), "{files}");
    assert_no_secrets(&files, &secrets);

    let (status, output) = status_json(&world).await;
    assert_eq!(status.as_array().unwrap().len(), 2);
    assert_no_secrets(&output, &secrets);
}

// ---- 10. scale ----

/// 10,000 watched tickets in one process: the first round of polls runs at exactly the rate
/// limit, and the runtime holds no task per ticket.
#[tokio::test(start_paused = true)]
async fn ten_thousand_tickets_are_polled_at_the_rate_limit_without_a_task_each() {
    const TICKETS: i64 = 10_000;
    const RATE: u64 = 50;
    // On the real disk: state changes are committed in groups by the writer, not one
    // fsynced file per poll.
    let mut world = World::new("v3").await;
    world
        .config
        .set("dms", "max_requests_per_second", &format!("{RATE}.0"))
        .set("poll", "initial_interval", "\"1h\"")
        .set("poll", "max_interval", "\"2h\"");
    let key = |i: i64| format!("{i:08x}-0000-4000-8000-{i:012x}");
    for order_id in 1..=TICKETS {
        world.dms.script_ticket(order_id, key(order_id), []);
        world.config.ticket(order_id, &key(order_id), "bulk");
    }
    let (shutdown, run) = world.spawn(false).await;

    tokio::time::sleep(Duration::from_secs(10)).await;
    let calls = world.dms.calls();
    let first = calls.first().expect("polls started").at;
    let window = Duration::from_secs(10);
    let in_first_window = calls.iter().filter(|c| c.at - first < window).count() as u64;
    assert!(
        in_first_window <= RATE * 10 + 1,
        "{in_first_window} calls in 10 s at {RATE}/s"
    );
    assert!(
        in_first_window >= RATE * 9,
        "{in_first_window} calls in 10 s: the limit is used, not starved"
    );
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(alive < 500, "{alive} tasks for {TICKETS} tickets");

    // It keeps going at the same pace, and every answer is recorded.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let later = world.dms.call_count();
    assert!(
        later >= calls.len() as u64 + RATE * 9,
        "{} then {later}",
        calls.len()
    );
    let polled = support::state_record(&world.state(), 1, &key(1)).unwrap();
    assert_eq!(polled["state"], "waiting");
    assert_eq!(polled["last_status"], "INIT");
    assert!(polled["next_poll_at"].is_string());
    // Not polled yet: its record is written at its first change (`status` shows it pending).
    assert!(support::state_record(&world.state(), 9999, &key(9999)).is_none());

    shutdown.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stops promptly")
        .unwrap();
    assert!(outcome.interrupted);
    assert_eq!(outcome.archived + outcome.failed, 0);
}
