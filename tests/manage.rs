//! Managing tickets while the daemon runs: the tickets folder (a file added, changed, broken
//! and fixed), reloads without a signal (a config rewritten by an atomic rename, a
//! Kubernetes-style symlink swap), and `dmstrack add`, `retry` and `forget` with the daemon
//! running and stopped. Real time: inotify and the rescan are the subject.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dmstrack::config::{Config, ConfigEnv};
use dmstrack::credentials::CredentialEnv;
use dmstrack::service::daemon::{Daemon, RunOptions};
use dmstrack::service::notify::Notifier;
use dmstrack::sim::dms::StatusStep;
use dmstrack::sim::oss::OssFault;
use dmstrack::sim::zipgen::{SampleSpec, sample_zip};
use tokio_util::sync::CancellationToken;

use crate::support::world::World;
use crate::support::{self, dmstrack};

const OBJECT: &str = "exports/x_REDO_31201_207.zip";
/// The promise is 5 s; the tests allow for a loaded CI machine.
const NOTICE: Duration = Duration::from_secs(15);

/// Waits on real time until `done`, failing after `limit`.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ticket(order_id: i64, key: &str, label: &str) -> String {
    format!(
        "[[tickets]]\norder_id = {order_id}\ndownload_key_id = \"{key}\"\nlabel = \"{label}\"\n"
    )
}

fn state_of(world: &World, order_id: i64, key: &str) -> Option<String> {
    support::state_record(&world.state(), order_id, key)
        .map(|r| r["state"].as_str().unwrap_or_default().to_owned())
}

/// A world on real time whose tickets are archived at their first poll.
async fn world() -> World {
    let world = World::new("v3").await.real_time();
    world
        .oss
        .put_object(OBJECT, sample_zip(&SampleSpec::demo(7)));
    world
}

fn ready(world: &World, order_id: i64, key: &str) {
    world.dms.script_ticket(
        order_id,
        key,
        [StatusStep::success(world.fresh_urls(OBJECT), 69)],
    );
}

/// Writes `text` to `path` the way editors and `dmstrack add` do: temp file, then rename.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-edit");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn cli(world: &World, args: &[&str]) -> std::process::Command {
    let mut command = dmstrack();
    command
        .args(args)
        .arg("-c")
        .arg(world.root().join("config.toml"));
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tickets_file_added_changed_broken_fixed_and_removed() {
    let mut world = world().await;
    world
        .dms
        .script_ticket(1, "main", StatusStep::Init.times(1000));
    world.config.ticket(1, "main", "in the main file");
    let tickets = world.root().join("tickets.d");
    std::fs::create_dir(&tickets).unwrap();
    let running = world.start(false).await;

    // Added: archived without any signal.
    ready(&world, 2, "k2");
    std::fs::write(tickets.join("a.toml"), ticket(2, "k2", "from a file")).unwrap();
    until("the added ticket is archived", NOTICE, || {
        state_of(&world, 2, "k2").as_deref() == Some("archived")
    })
    .await;

    // Changed: the new label reaches its record.
    replace(&tickets.join("a.toml"), &ticket(2, "k2", "relabelled"));
    until("the label changes", NOTICE, || {
        support::state_record(&world.state(), 2, "k2").is_some_and(|r| r["label"] == "relabelled")
    })
    .await;

    // Broken: reported (metrics), skipped; the other tickets go on.
    std::fs::write(tickets.join("b.toml"), "[[tickets]]\norder_idd = 3\n").unwrap();
    until("the broken file is reported", NOTICE, || {
        running
            .telemetry
            .metrics
            .encode()
            .contains("dmstrack_ticket_files{state=\"invalid\"} 1")
    })
    .await;
    let polls = world.status_calls();
    until("the main ticket is still polled", NOTICE, || {
        world.status_calls() > polls + 2
    })
    .await;

    // Fixed: its ticket comes in.
    ready(&world, 3, "k3");
    replace(&tickets.join("b.toml"), &ticket(3, "k3", "fixed"));
    until("the fixed file's ticket is archived", NOTICE, || {
        state_of(&world, 3, "k3").as_deref() == Some("archived")
    })
    .await;
    assert!(
        running
            .telemetry
            .metrics
            .encode()
            .contains("dmstrack_ticket_files{state=\"invalid\"} 0")
    );

    // Removed: its tickets are no longer watched (status marks them).
    std::fs::remove_file(tickets.join("a.toml")).unwrap();
    until("the removal is applied", NOTICE, || {
        running
            .telemetry
            .metrics
            .encode()
            .contains("dmstrack_tickets{state=\"archived\"} 1")
    })
    .await;
    let (code, out, err) = support::run(cli(&world, &["status", "--json"])).await;
    assert_eq!(code, 0, "{err}");
    let entries: serde_json::Value = serde_json::from_str(&out).unwrap();
    let k2 = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["download_key_id"] == "k2")
        .unwrap();
    assert_eq!(k2["configured"], false);
    running.shutdown.cancel();
    running.run.await.unwrap();
}

/// A reload that moves `watch.tickets_dir` watches the new folder from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tickets_folder_moved_by_a_reload_is_watched_there() {
    let mut world = world().await;
    world
        .dms
        .script_ticket(1, "main", StatusStep::Init.times(1000));
    world.config.ticket(1, "main", "in the main file");
    let running = world.start(false).await;
    let other = world.root().join("other.d");
    std::fs::create_dir(&other).unwrap();
    ready(&world, 2, "k2");
    std::fs::write(other.join("a.toml"), ticket(2, "k2", "moved folder")).unwrap();

    let config = world.root().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    replace(
        &config,
        &format!("{text}\n[watch]\ntickets_dir = \"other.d\"\n"),
    );
    until("the moved folder's ticket is archived", NOTICE, || {
        state_of(&world, 2, "k2").as_deref() == Some("archived")
    })
    .await;

    // A file added to the new folder later is noticed without a signal.
    ready(&world, 3, "k3");
    std::fs::write(other.join("b.toml"), ticket(3, "k3", "added later")).unwrap();
    until(
        "the ticket added to the new folder is archived",
        NOTICE,
        || state_of(&world, 3, "k3").as_deref() == Some("archived"),
    )
    .await;
    running.shutdown.cancel();
    running.run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_rewritten_by_rename_and_a_configmap_symlink_swap_are_reloaded() {
    let mut world = world().await;
    world
        .dms
        .script_ticket(1, "k1", StatusStep::Init.times(1000));
    world.config.ticket(1, "k1", "first");
    // A ConfigMap volume: config.toml -> ..data/config.toml, ..data -> ..2026_11_28_a.
    let volume = world.root().join("cm");
    let first = volume.join("..2026_11_28_a");
    std::fs::create_dir_all(&first).unwrap();
    world.config.write(world.root());
    let text = std::fs::read_to_string(world.root().join("config.toml"))
        .unwrap()
        .replace(
            "\"ak_secret\"",
            &format!("{:?}", world.root().join("ak_secret").display().to_string()),
        )
        .replace(
            "dir = \"archive\"",
            &format!("dir = {:?}", world.archive().display().to_string()),
        )
        .replace(
            "dir = \"state\"",
            &format!("dir = {:?}", world.state().display().to_string()),
        );
    std::fs::write(first.join("config.toml"), &text).unwrap();
    std::os::unix::fs::symlink("..2026_11_28_a", volume.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.toml", volume.join("config.toml")).unwrap();
    let config = Config::load(&volume.join("config.toml"), &ConfigEnv::default()).unwrap();
    let daemon = Daemon::start(
        config,
        ConfigEnv::default(),
        CredentialEnv::from_vars([], None),
        RunOptions { once: false },
        Notifier::disabled(),
    )
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let (_reload, reloads) = tokio::sync::mpsc::channel(1);
    let run = tokio::spawn(daemon.run(shutdown.clone(), reloads));

    // The kubelet's update: a new folder, a new ..data link renamed over the old one.
    ready(&world, 2, "k2");
    let second = volume.join("..2026_11_28_b");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(
        second.join("config.toml"),
        format!("{text}\n{}", ticket(2, "k2", "swapped in")),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_28_b", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    until("the swapped config's ticket is archived", NOTICE, || {
        state_of(&world, 2, "k2").as_deref() == Some("archived")
    })
    .await;

    // An editor's atomic rename of the file itself (inside the current data folder).
    ready(&world, 3, "k3");
    replace(
        &second.join("config.toml"),
        &format!(
            "{text}\n{}\n{}",
            ticket(2, "k2", "swapped in"),
            ticket(3, "k3", "renamed in")
        ),
    );
    until("the renamed config's ticket is archived", NOTICE, || {
        state_of(&world, 3, "k3").as_deref() == Some("archived")
    })
    .await;
    shutdown.cancel();
    run.await.unwrap();
}

/// `add`, `retry` and `forget` against a running daemon: no signal, seen within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_retry_and_forget_with_the_daemon_running() {
    let mut world = world().await;
    // Order 9 has two exports: one that fails, one still being prepared (polled meanwhile).
    world
        .dms
        .script_ticket(9, "fails", [StatusStep::fail("binlog gone")]);
    world
        .dms
        .script_ticket(9, "waits", StatusStep::Init.times(1000));
    world.config.ticket(9, "fails", "f").ticket(9, "waits", "w");
    let running = world.start(false).await;

    // add: a new ticket file, picked up and archived.
    ready(&world, 8, "k8");
    let (code, out, err) = support::run(cli(
        &world,
        &[
            "add",
            "--order-id",
            "8",
            "--download-key-id",
            "k8",
            "--label",
            "added",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let path = PathBuf::from(out.trim());
    assert!(
        path.is_absolute() && path.starts_with(world.root().join("tickets.d")),
        "{out}"
    );
    until("the added ticket is archived", NOTICE, || {
        state_of(&world, 8, "k8").as_deref() == Some("archived")
    })
    .await;
    let (code, _, err) = support::run(cli(
        &world,
        &["add", "--order-id", "8", "--download-key-id", "k8"],
    ))
    .await;
    assert_eq!(code, 1, "a ticket already configured is refused");
    assert!(err.contains("already listed at"), "{err}");
    let (code, _, err) = support::run(cli(&world, &["add", "--order-id", "8"])).await;
    assert_eq!(code, 2, "neither a key nor an export: usage: {err}");
    // Export filters belong to an export, not to an existing key: usage, nothing written.
    for filter in [
        &["--filter-table", "orders"][..],
        &["--filter-type", "UPDATE"],
        &["--event-id", "3"],
        &["--filter-start-time", "2026-01-01 00:00:00"],
    ] {
        let mut args = vec!["add", "--order-id", "12", "--download-key-id", "k12"];
        args.extend_from_slice(filter);
        let (code, _, err) = support::run(cli(&world, &args)).await;
        assert_eq!(code, 2, "{filter:?} with a key: usage: {err}");
    }
    assert!(!world.root().join("tickets.d/12-k12.toml").exists());

    // retry: the failed export goes back to waiting; the waiting one is left alone.
    until("the failing export fails", NOTICE, || {
        state_of(&world, 9, "fails").as_deref() == Some("failed")
    })
    .await;
    let waits_polls = || world.dms.status_answers(9, "waits");
    ready(&world, 9, "fails");
    let before = waits_polls();
    let (code, out, err) = support::run(cli(&world, &["retry", "--order-id", "9"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 ticket(s) back to waiting"), "{out}");
    until("the retried export is archived", NOTICE, || {
        state_of(&world, 9, "fails").as_deref() == Some("archived")
    })
    .await;
    assert_eq!(state_of(&world, 9, "waits").as_deref(), Some("waiting"));
    assert!(
        waits_polls() >= before,
        "the other export keeps its own schedule"
    );
    let (code, out, _) = support::run(cli(&world, &["retry", "--order-id", "9"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("nothing has failed"), "{out}");
    let (code, _, err) = support::run(cli(&world, &["retry", "--order-id", "404"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("no such ticket"), "{err}");

    // forget: refused while configured; once removed from the config, its state goes.
    let (code, _, err) = support::run(cli(&world, &["forget", "--order-id", "8"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("is configured"), "{err}");
    std::fs::remove_file(&path).unwrap();
    until("the removal is applied", NOTICE, || {
        running
            .telemetry
            .metrics
            .encode()
            .contains("dmstrack_tickets{state=\"archived\"} 1")
    })
    .await;
    let (code, out, err) = support::run(cli(&world, &["forget", "--order-id", "8"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dropped"), "{out}");
    assert!(support::state_record(&world.state(), 8, "k8").is_none());
    assert!(
        world.final_dir(8, "k8").join("manifest.json").exists(),
        "the archive stays"
    );
    running.shutdown.cancel();
    running.run.await.unwrap();
}

/// The same commands with no daemon running: `add` writes the file, `retry` and `forget`
/// apply under the state lock, and the next start goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_retry_and_forget_with_the_daemon_stopped() {
    let mut world = world().await;
    world
        .dms
        .script_ticket(9, "fails", [StatusStep::fail("binlog gone")]);
    world
        .config
        .ticket(9, "fails", "f")
        .ticket(5, "gone", "soon removed");
    ready(&world, 5, "gone");
    assert_eq!(world.run_once().await.failed, 1);

    ready(&world, 9, "fails");
    let (code, out, err) = support::run(cli(&world, &["retry", "--order-id", "9"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("back to waiting"), "{out}");
    assert_eq!(state_of(&world, 9, "fails").as_deref(), Some("waiting"));

    ready(&world, 8, "k8");
    let (code, _, err) = support::run(cli(
        &world,
        &["add", "--order-id", "8", "--download-key-id", "k8"],
    ))
    .await;
    assert_eq!(code, 0, "{err}");

    // Ticket 5 leaves the config; its state can be forgotten.
    world.config.clear_tickets().ticket(9, "fails", "f");
    world.config.write(world.root());
    let (code, out, err) = support::run(cli(&world, &["forget", "--order-id", "5"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dropped"), "{out}");
    assert!(support::state_record(&world.state(), 5, "gone").is_none());

    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (2, 0));
    assert_eq!(state_of(&world, 8, "k8").as_deref(), Some("archived"));
}

/// A reload while a ticket downloads leaves that download alone: same connection, no
/// restart, no second GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_download_does_not_restart_it() {
    let mut world = world().await;
    world.oss.inject(OBJECT, OssFault::StallAfter(4096));
    ready(&world, 1, "k1");
    world
        .config
        .ticket(1, "k1", "downloading")
        .set("download", "read_timeout", "\"30s\"");
    let running = world.start(false).await;
    until("the download stalls", NOTICE, || world.gets().len() == 1).await;
    until("it is downloading", NOTICE, || {
        state_of(&world, 1, "k1").as_deref() == Some("downloading")
    })
    .await;
    world
        .dms
        .script_ticket(2, "k2", StatusStep::Init.times(1000));
    world.config.ticket(2, "k2", "added meanwhile");
    world.config.write(world.root());
    running.reload.send(()).await.unwrap();
    until("the added ticket is polled", NOTICE, || {
        world.dms.status_answers(2, "k2") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.gets().len(), 1, "the download was not restarted");
    assert_eq!(state_of(&world, 1, "k1").as_deref(), Some("downloading"));
    running.shutdown.cancel();
    running.run.await.unwrap();
}

/// A ticket removed from the config while it downloads keeps its partial download, through a
/// restart too: added back, it resumes with a Range request instead of starting over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_tickets_partial_download_survives_a_restart() {
    let mut world = world().await;
    world.oss.inject(OBJECT, OssFault::StallAfter(4096));
    world
        .dms
        .script_ticket(1, "main", StatusStep::Init.times(1000));
    world
        .config
        .ticket(1, "main", "stays")
        .set("download", "read_timeout", "\"30s\"");
    let tickets = world.root().join("tickets.d");
    std::fs::create_dir(&tickets).unwrap();
    ready(&world, 2, "k2");
    std::fs::write(tickets.join("a.toml"), ticket(2, "k2", "removed")).unwrap();
    let running = world.start(false).await;
    until("the download stalls", NOTICE, || world.gets().len() == 1).await;
    let part = world
        .archive()
        .join(".dmstrack/downloads")
        .join("2-k2.zip.part");
    until("the part is on disk", NOTICE, || part.is_file()).await;

    std::fs::remove_file(tickets.join("a.toml")).unwrap();
    until("the removal is applied", NOTICE, || {
        running
            .telemetry
            .metrics
            .encode()
            .contains("dmstrack_tickets{state=\"downloading\"} 0")
    })
    .await;
    running.shutdown.cancel();
    running.run.await.unwrap();
    assert!(part.is_file(), "kept when the ticket was removed");

    // A restart without the ticket keeps its part (its record is there until `forget`).
    let running = world.start(false).await;
    until("the main ticket is polled again", NOTICE, || {
        world.dms.status_answers(1, "main") >= 2
    })
    .await;
    assert!(part.is_file(), "kept through a restart");
    running.shutdown.cancel();
    running.run.await.unwrap();
}

/// A ticket is (order_id, download_key_id): an export ticket whose key turned out to equal a
/// pinned ticket's is that ticket, and `status` shows it once, as the pinned one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_key_equals_a_pinned_tickets_is_shown_once() {
    let mut world = world().await;
    world.config.ticket(7, "same-key", "pinned");
    world.config.raw_ticket(
        "order_id = 7\nlabel = \"exported\"\nexport = { rollback_sql_type = \"REVERSE\" }",
    );
    world.config.write(world.root());
    assert_eq!(
        status_entries(&world).await.len(),
        2,
        "the export has no key yet"
    );

    let config = world.load();
    let export = config
        .tickets
        .iter()
        .find(|t| t.label.as_deref() == Some("exported"))
        .unwrap();
    let mut record = dmstrack::watch::state::TicketRecord::new(export, jiff::Timestamp::now());
    record.download_key_id = Some("same-key".into());
    support::write_state_record(&world.state(), &serde_json::to_value(&record).unwrap());
    let entries = status_entries(&world).await;
    let same: Vec<_> = entries
        .iter()
        .filter(|e| e["order_id"] == 7 && e["download_key_id"] == "same-key")
        .collect();
    assert_eq!(same.len(), 1, "{entries:?}");
    assert_eq!(same[0]["label"], "pinned");
    assert_eq!(entries.len(), 1, "{entries:?}");

    // A twin with something of its own to report (here: failed) is shown.
    record.state = dmstrack::watch::state::TicketState::Failed;
    support::write_state_record(&world.state(), &serde_json::to_value(&record).unwrap());
    assert_eq!(status_entries(&world).await.len(), 2);

    // A pinned key that happens to read like an export ticket's id is never taken for a twin.
    world.config.ticket(8, "nightly-export-1", "pinned too");
    world.config.write(world.root());
    let entries = status_entries(&world).await;
    assert!(
        entries
            .iter()
            .any(|e| e["download_key_id"] == "nightly-export-1"),
        "{entries:?}"
    );
}

async fn status_entries(world: &World) -> Vec<serde_json::Value> {
    let (code, out, err) = support::run(cli(world, &["status", "--json"])).await;
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}
