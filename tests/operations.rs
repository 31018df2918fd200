//! Running dmstrack in production: systemd notifications (READY, STATUS, WATCHDOG, RELOADING,
//! STOPPING), SIGHUP reloads of the real binary, Prometheus metrics checked with the reference
//! parser, `/healthz` and `/readyz` and `dmstrack healthcheck`, JSON logs, the `on_archived`
//! hook, and a container-like run where only the state and archive folders are writable.
//!
//! In-process daemons run on paused tokio time; tests of the real binary use real time with
//! short intervals, and the simulators serve from the test process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dmstrack::config::{Config, ConfigEnv};
use dmstrack::credentials::CredentialEnv;
use dmstrack::service::daemon::{Daemon, RunOptions};
use dmstrack::service::notify::Notifier;
use dmstrack::sim::dms::{DmsFault, DmsSimulator, QUERY_STATUS_ACTION, StatusStep, UrlSource};
use dmstrack::sim::oss::{OssFault, OssSimulator};
use dmstrack::sim::zipgen::{SampleSpec, sample_zip};
use dmstrack::watch::RunOutcome;
use rustix::process::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{self, AK_SECRET, NotifySocket, Spawned, dmstrack};

const KEY_A: &str = "0a1b2c3d-1111-4a69-8eb3-8ffd26e6a001";
const KEY_B: &str = "0a1b2c3d-2222-4a69-8eb3-8ffd26e6a002";
const KEY_C: &str = "0a1b2c3d-3333-4a69-8eb3-8ffd26e6a003";
const KEY_D: &str = "0a1b2c3d-4444-4a69-8eb3-8ffd26e6a004";
const KEY_E: &str = "0a1b2c3d-5555-4a69-8eb3-8ffd26e6a005";

/// Simulators and a folder for the config, state and archive.
struct Fixture {
    dir: tempfile::TempDir,
    dms: DmsSimulator,
    oss: Arc<OssSimulator>,
}

impl Fixture {
    async fn start() -> Self {
        let dms = DmsSimulator::start().await.unwrap();
        dms.add_access_key(support::AK_ID, AK_SECRET);
        Self {
            dir: tempfile::tempdir().unwrap(),
            dms,
            oss: Arc::new(OssSimulator::start().await.unwrap()),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Puts a sample zip for this ticket into OSS and scripts DMS to answer `before`, then
    /// `DOWNLOAD_SUCCESS` with a freshly signed URL. Returns the zip's size.
    fn archivable(&self, order_id: i64, key: &str, before: Vec<StatusStep>) -> u64 {
        let object = format!("exports/{order_id}_UNDO.zip");
        let zip = sample_zip(&SampleSpec::rollback(20_000, 3, order_id as u64));
        let size = zip.len() as u64;
        self.oss.put_object(&object, zip);
        let oss = Arc::clone(&self.oss);
        let url = UrlSource::generated(move || oss.presign(&object, Duration::from_secs(3600)));
        let mut steps = before;
        steps.push(StatusStep::success(url, 69));
        self.dms.script_ticket(order_id, key, steps);
        size
    }

    /// A config: the simulators (DMS through `endpoint` when given), `archive` and `state`
    /// next to it, fast polls, then `extra` sections and the tickets.
    fn config_text(&self, endpoint: Option<&str>, extra: &str, tickets: &[(i64, &str)]) -> String {
        let endpoint = endpoint.map_or_else(|| self.dms.endpoint(), str::to_owned);
        let mut text = support::preamble(self.path(), &endpoint, "v3", AK_SECRET).replace(
            "max_attempts = 3",
            "max_attempts = 3\nrequest_timeout = \"120s\"",
        );
        text.push_str("[archive]\ndir = \"archive\"\n\n[state]\ndir = \"state\"\n\n");
        if !extra.contains("[poll]") {
            text.push_str(
                "[poll]\ninitial_interval = \"1s\"\nmax_interval = \"1s\"\njitter = 0.0\n\n",
            );
        }
        text.push_str(extra);
        for (order_id, key) in tickets {
            text.push_str(&ticket(*order_id, key));
        }
        text
    }

    fn write_config(&self, text: &str) -> PathBuf {
        support::write_config(self.path(), text)
    }

    fn archive_dir(&self, order_id: i64, key: &str) -> PathBuf {
        self.path()
            .join("archive")
            .join(order_id.to_string())
            .join(key)
    }

    fn is_archived(&self, order_id: i64, key: &str) -> bool {
        self.archive_dir(order_id, key)
            .join("manifest.json")
            .is_file()
    }

    fn is_archived_in(&self, archive: &Path, order_id: i64, key: &str) -> bool {
        archive
            .join(order_id.to_string())
            .join(key)
            .join("manifest.json")
            .is_file()
    }

    /// Status answers DMS gave this ticket so far.
    fn polls(&self, order_id: i64, key: &str) -> usize {
        self.dms.status_answers(order_id, key)
    }
}

fn ticket(order_id: i64, key: &str) -> String {
    format!(
        "\n[[tickets]]\norder_id = {order_id}\ndownload_key_id = \"{key}\"\nlabel = \"t{order_id}\"\n"
    )
}

/// A daemon started in-process from the config file, and the handles to drive it.
struct Running {
    shutdown: CancellationToken,
    reload: mpsc::Sender<()>,
    http: Option<std::net::SocketAddr>,
    task: JoinHandle<RunOutcome>,
}

async fn run_daemon(config: &Path, notifier: Notifier) -> Running {
    let config = Config::load(config, &ConfigEnv::default()).unwrap();
    let daemon = Daemon::start(
        config,
        ConfigEnv::default(),
        CredentialEnv::from_vars([], None),
        RunOptions { once: false },
        notifier,
    )
    .await
    .unwrap();
    let http = daemon.http_addr;
    let shutdown = CancellationToken::new();
    let (reload, reloads) = mpsc::channel(1);
    let task = tokio::spawn(daemon.run(shutdown.clone(), reloads));
    Running {
        shutdown,
        reload,
        http,
        task,
    }
}

fn texts(messages: &[support::Notification]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

fn statuses(messages: &[support::Notification]) -> Vec<&str> {
    messages
        .iter()
        .filter_map(|m| m.text.strip_prefix("STATUS="))
        .collect()
}

/// `N waiting, N downloading, N archived, N failed` and an optional `; …` tail.
fn assert_status_shape(line: &str) {
    assert!(!line.contains('\n'), "STATUS spans lines: {line:?}");
    let (counts, _) = line.split_once("; ").unwrap_or((line, ""));
    let words: Vec<&str> = counts.split(", ").collect();
    let names: Vec<&str> = words
        .iter()
        .map(|w| {
            let (n, name) = w.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            n.parse::<usize>()
                .unwrap_or_else(|_| panic!("not a count in {line:?}"));
            name
        })
        .collect();
    assert_eq!(
        names,
        ["waiting", "downloading", "archived", "failed"],
        "{line:?}"
    );
}

fn monotonic_usec() -> i128 {
    match sd_notify::NotifyState::monotonic_usec_now().unwrap() {
        sd_notify::NotifyState::MonotonicUsec(usec) => usec,
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// sd_notify
// ---------------------------------------------------------------------------------------

/// READY=1 once config, state and credentials are in place, while the (slow) DMS has not
/// even seen a request; then STATUS lines with the counts and the last error; STOPPING=1.
#[tokio::test(start_paused = true)]
async fn ready_comes_before_any_dms_call_and_status_follows_the_counts() {
    let fx = Fixture::start().await;
    fx.archivable(1001, KEY_A, vec![StatusStep::Init]);
    // Cut once: the ticket stays `downloading` while the download backs off and resumes.
    // (Not a stall: the download's blocking writer would keep paused time from advancing.)
    fx.oss
        .inject("exports/1001_UNDO.zip", OssFault::CutAfter(100));
    fx.dms.script_ticket(
        1002,
        KEY_B,
        [
            StatusStep::Init,
            StatusStep::fail("the binlog of this range was purged"),
        ],
    );
    fx.dms.inject_for_action(
        QUERY_STATUS_ACTION,
        1,
        DmsFault::BusinessFailure {
            code: "InvalidStatus".into(),
            message: "the ticket is not approved yet".into(),
        },
    );
    let proxy = support::delayed_proxy(fx.dms.addr(), Duration::from_secs(5)).await;
    let config = fx.write_config(&fx.config_text(
        Some(&format!("http://{proxy}")),
        "",
        &[(1001, KEY_A), (1002, KEY_B)],
    ));
    let notify = NotifySocket::bind();
    let started = tokio::time::Instant::now();
    let daemon = run_daemon(&config, Notifier::to_socket(notify.path(), None)).await;

    let first = notify.next(Duration::from_secs(60)).await.unwrap();
    assert_eq!(first.text, "READY=1");
    assert!(
        fx.dms.calls().is_empty(),
        "READY=1 waited for DMS: {:?}",
        fx.dms.calls()
    );
    assert!(first.at - started < Duration::from_secs(5));

    let messages = notify
        .until(Duration::from_secs(300), |m| {
            m.starts_with("STATUS=") && m.contains("1 archived")
        })
        .await;
    assert!(
        texts(&messages)
            .iter()
            .all(|m| m.starts_with("STATUS=") || *m == "WATCHDOG=1"),
        "{:?}",
        texts(&messages)
    );
    let lines = statuses(&messages);
    for line in &lines {
        assert_status_shape(line);
    }
    assert!(
        lines[0].starts_with("2 waiting, 0 downloading, 0 archived, 0 failed"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("last error: ") && l.contains("the ticket is not approved yet")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(" 1 downloading")),
        "{lines:?}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("0 waiting, 0 downloading, 1 archived, 1 failed; last error: "),
        "{last:?}"
    );
    assert!(fx.is_archived(1001, KEY_A));

    daemon.shutdown.cancel();
    notify
        .until(Duration::from_secs(30), |m| m == "STOPPING=1")
        .await;
    let outcome = daemon.task.await.unwrap();
    let after: Vec<_> = notify.drain_for(Duration::from_secs(1)).await;
    assert!(
        after.iter().all(|m| m.text != "STOPPING=1"),
        "STOPPING=1 twice"
    );
    assert!(outcome.interrupted);
    assert_eq!((outcome.archived, outcome.failed), (1, 1));
}

/// With a watchdog timeout, WATCHDOG=1 comes from the main loop every half timeout.
#[tokio::test(start_paused = true)]
async fn watchdog_pings_every_half_timeout() {
    let fx = Fixture::start().await;
    // INIT forever: the daemon just waits and polls.
    fx.dms.script_ticket(1001, KEY_A, []);
    let config = fx.write_config(&fx.config_text(None, "", &[(1001, KEY_A)]));
    let notify = NotifySocket::bind();
    let daemon = run_daemon(
        &config,
        Notifier::to_socket(notify.path(), Some(Duration::from_secs(4))),
    )
    .await;
    let started = tokio::time::Instant::now();
    let mut pings = Vec::new();
    while let Some(message) = notify.next(Duration::from_secs(30)).await {
        if message.text == "WATCHDOG=1" {
            pings.push(message.at - started);
        }
        if message.at - started >= Duration::from_secs(21) {
            break;
        }
    }
    assert!(
        fx.polls(1001, KEY_A) >= 15,
        "the loop kept polling meanwhile"
    );
    assert!((10..=12).contains(&pings.len()), "{pings:?}");
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1900) && gap <= Duration::from_millis(2100),
            "{pings:?}"
        );
    }
    daemon.shutdown.cancel();
    daemon.task.await.unwrap();
}

/// A reload is RELOADING=1 with MONOTONIC_USEC, then READY=1; a bad file says so in STATUS
/// and the running config stays.
#[tokio::test(start_paused = true)]
async fn reload_sends_reloading_with_monotonic_usec_then_ready() {
    let fx = Fixture::start().await;
    fx.dms.script_ticket(1001, KEY_A, []);
    fx.archivable(1002, KEY_B, vec![]);
    let config = fx.write_config(&fx.config_text(None, "", &[(1001, KEY_A)]));
    let notify = NotifySocket::bind();
    let daemon = run_daemon(&config, Notifier::to_socket(notify.path(), None)).await;
    notify
        .until(Duration::from_secs(5), |m| m == "READY=1")
        .await;

    fx.write_config(&fx.config_text(None, "", &[(1001, KEY_A), (1002, KEY_B)]));
    let before = monotonic_usec();
    daemon.reload.send(()).await.unwrap();
    let messages = notify
        .until(Duration::from_secs(5), |m| m == "READY=1")
        .await;
    let after = monotonic_usec();
    let reloading = messages
        .iter()
        .find(|m| m.text.starts_with("RELOADING=1"))
        .unwrap_or_else(|| panic!("{:?}", texts(&messages)));
    let (first, second) = reloading.text.split_once('\n').unwrap();
    assert_eq!(first, "RELOADING=1");
    let usec: i128 = second
        .strip_prefix("MONOTONIC_USEC=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        before <= usec && usec <= after,
        "{before} <= {usec} <= {after}"
    );
    // RELOADING comes before READY, and nothing else claims readiness in between.
    let order = texts(&messages);
    let at = |wanted: &str| order.iter().position(|m| m.starts_with(wanted)).unwrap();
    assert!(at("RELOADING=1") < at("READY=1"));
    notify
        .until(Duration::from_secs(60), |m| m.contains("1 archived"))
        .await;
    assert!(fx.is_archived(1002, KEY_B), "the reloaded config applies");

    std::fs::write(&config, "[poll]\nbogus = 1\n").unwrap();
    daemon.reload.send(()).await.unwrap();
    let messages = notify
        .until(Duration::from_secs(5), |m| m == "READY=1")
        .await;
    assert!(texts(&messages)[0].starts_with("RELOADING=1\nMONOTONIC_USEC="));
    let failure = statuses(&messages)
        .into_iter()
        .find(|s| s.contains("config reload failed"))
        .unwrap_or_else(|| panic!("{:?}", texts(&messages)));
    assert_status_shape(failure);
    assert!(
        failure.contains(&format!("{}:2:1", config.display())),
        "{failure}"
    );
    assert!(
        failure.starts_with("1 waiting, 0 downloading, 1 archived, 0 failed"),
        "the running config stays: {failure}"
    );
    let polls = fx.polls(1001, KEY_A);
    notify.drain_for(Duration::from_secs(5)).await;
    assert!(fx.polls(1001, KEY_A) > polls, "polling goes on");

    daemon.shutdown.cancel();
    notify
        .until(Duration::from_secs(30), |m| m == "STOPPING=1")
        .await;
    daemon.task.await.unwrap();
}

/// The binary takes `NOTIFY_SOCKET` and `WATCHDOG_USEC` from its environment: READY=1 before
/// DMS saw a request, WATCHDOG=1 at half the timeout, STOPPING=1 and exit 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_notifies_the_socket_named_by_its_environment() {
    let fx = Fixture::start().await;
    fx.archivable(1001, KEY_A, StatusStep::Init.times(2));
    let proxy = support::delayed_proxy(fx.dms.addr(), Duration::from_secs(2)).await;
    let config = fx.write_config(&fx.config_text(
        Some(&format!("http://{proxy}")),
        "[poll]\ninitial_interval = \"100ms\"\nmax_interval = \"100ms\"\n\n",
        &[(1001, KEY_A)],
    ));
    let notify = NotifySocket::bind();
    let mut command = dmstrack();
    command
        .args(["--log-format", "json", "run", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "1000000");
    let mut daemon = Spawned::start(command);

    let first = notify.next(Duration::from_secs(20)).await.unwrap();
    assert_eq!(first.text, "READY=1", "{:?}", daemon.lines());
    assert!(fx.dms.calls().is_empty(), "READY=1 waited for DMS");

    let messages = notify
        .until(Duration::from_secs(20), |m| m.contains("1 archived"))
        .await;
    let pings: Vec<_> = messages
        .iter()
        .filter(|m| m.text == "WATCHDOG=1")
        .map(|m| m.at)
        .collect();
    assert!(pings.len() >= 3, "{:?}", texts(&messages));
    let mut gaps: Vec<Duration> = pings.windows(2).map(|p| p[1] - p[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_millis(350) && median <= Duration::from_millis(700),
        "WATCHDOG_USEC=1s wants a ping every ~500ms: {gaps:?}"
    );
    assert!(fx.is_archived(1001, KEY_A));

    daemon.signal(Signal::TERM);
    notify
        .until(Duration::from_secs(15), |m| m == "STOPPING=1")
        .await;
    assert_eq!(daemon.wait(Duration::from_secs(15)).await, 0);
}

/// JSON log lines of a spawned binary, each parsed (panics on a line that is not JSON).
fn json_lines(daemon: &Spawned) -> Vec<serde_json::Value> {
    daemon
        .lines()
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn wait_until(within: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGHUP on the real binary: added tickets are archived, removed ones stop being polled
/// (their archives stay), changed settings apply, and a broken file is reported with
/// file:line:column while the running config goes on; a later good file applies. SIGTERM
/// then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_of_the_running_binary() {
    let fx = Fixture::start().await;
    fx.archivable(2001, KEY_A, vec![]);
    fx.dms.script_ticket(2002, KEY_B, []);
    fx.archivable(2003, KEY_C, vec![]);
    fx.dms.script_ticket(2004, KEY_D, []);
    fx.archivable(2005, KEY_E, vec![]);
    let slow = "[poll]\ninitial_interval = \"1s\"\nmax_interval = \"1s\"\njitter = 0.0\n\n";
    let fast = "[poll]\ninitial_interval = \"100ms\"\nmax_interval = \"100ms\"\njitter = 0.0\n\n";
    let config = fx.write_config(&fx.config_text(
        None,
        slow,
        &[(2001, KEY_A), (2002, KEY_B), (2004, KEY_D)],
    ));
    let notify = NotifySocket::bind();
    let mut command = dmstrack();
    command
        .args(["--log-format", "json", "run", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", notify.path());
    let mut daemon = Spawned::start(command);
    notify
        .until(Duration::from_secs(20), |m| m == "READY=1")
        .await;
    wait_until(Duration::from_secs(20), "2001 archived", || {
        fx.is_archived(2001, KEY_A)
    })
    .await;

    let reload = |text: String| {
        fx.write_config(&text);
        daemon.signal(Signal::HUP);
        async {
            let messages = notify
                .until(Duration::from_secs(10), |m| m == "READY=1")
                .await;
            assert!(
                texts(&messages)
                    .iter()
                    .any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC=")),
                "{:?}",
                texts(&messages)
            );
            messages
        }
    };

    // A ticket added to the file is archived.
    reload(fx.config_text(
        None,
        slow,
        &[(2001, KEY_A), (2002, KEY_B), (2004, KEY_D), (2003, KEY_C)],
    ))
    .await;
    wait_until(Duration::from_secs(20), "added 2003 archived", || {
        fx.is_archived(2003, KEY_C)
    })
    .await;

    // Removed tickets: 2002 is no longer polled; 2001's archive stays.
    reload(fx.config_text(None, slow, &[(2004, KEY_D), (2003, KEY_C)])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (b_before, d_before) = (fx.polls(2002, KEY_B), fx.polls(2004, KEY_D));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fx.polls(2002, KEY_B),
        b_before,
        "a removed ticket is still polled"
    );
    let slow_polls = fx.polls(2004, KEY_D) - d_before;
    assert!(
        (1..=4).contains(&slow_polls),
        "1s interval: {slow_polls} polls in 2.5s"
    );
    assert!(
        fx.is_archived(2001, KEY_A),
        "a removed ticket's archive stays"
    );

    // A changed poll interval takes effect (after the poll already scheduled).
    reload(fx.config_text(None, fast, &[(2004, KEY_D), (2003, KEY_C)])).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let d_before = fx.polls(2004, KEY_D);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fast_polls = fx.polls(2004, KEY_D) - d_before;
    assert!(fast_polls >= 5, "100ms interval: {fast_polls} polls in 1s");

    // A broken file: reported with file:line:column, the running config goes on.
    let good = fx.config_text(None, fast, &[(2004, KEY_D), (2003, KEY_C), (2005, KEY_E)]);
    let broken = good.replace("jitter = 0.0\n", "jitter = 0.0\nbogus_setting = true\n");
    let line = broken
        .lines()
        .position(|l| l.starts_with("bogus_setting"))
        .unwrap()
        + 1;
    let messages = reload(broken).await;
    let failure = statuses(&messages)
        .into_iter()
        .find(|s| s.contains("config reload failed"))
        .unwrap_or_else(|| panic!("{:?}", texts(&messages)));
    let location = format!("{}:{line}:1", config.display());
    assert!(failure.contains(&location), "{failure}");
    let logged = daemon
        .wait_for_line(Duration::from_secs(5), |l| {
            l.contains("\"ERROR\"") && l.contains("config reload failed")
        })
        .await;
    let logged: serde_json::Value = serde_json::from_str(&logged).unwrap();
    assert_eq!(logged["level"], "ERROR", "{logged}");
    assert!(
        logged["error"]
            .as_str()
            .is_some_and(|e| e.contains(&location) && e.contains("bogus_setting")),
        "{logged}"
    );
    let d_before = fx.polls(2004, KEY_D);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        fx.polls(2004, KEY_D) - d_before >= 5,
        "the running (fast) config goes on"
    );
    assert!(
        !fx.is_archived(2005, KEY_E),
        "a ticket of the broken file was taken"
    );

    // A good file after the broken one applies.
    let messages = reload(good).await;
    assert!(
        statuses(&messages)
            .iter()
            .all(|s| !s.contains("config reload failed")),
        "{:?}",
        texts(&messages)
    );
    wait_until(Duration::from_secs(20), "2005 archived", || {
        fx.is_archived(2005, KEY_E)
    })
    .await;

    daemon.signal(Signal::TERM);
    notify
        .until(Duration::from_secs(15), |m| m == "STOPPING=1")
        .await;
    assert_eq!(daemon.wait(Duration::from_secs(15)).await, 0);
    let logs = json_lines(&daemon);
    assert!(logs.iter().any(|l| l["message"] == "config reloaded"));
    support::assert_no_secrets(&daemon.lines().join("\n"), &[AK_SECRET]);
}

// ---------------------------------------------------------------------------------------
// Metrics and health
// ---------------------------------------------------------------------------------------

const HTTP: &str = "[http]\nlisten = \"127.0.0.1:0\"\n\n";

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// GET `path`: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = http_client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The families of a parsed exposition, by name.
fn families(text: &str) -> std::collections::HashMap<String, support::PromFamily> {
    support::parse_prometheus(text)
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect()
}

fn label_names(sample: &support::PromSample) -> Vec<&str> {
    sample.labels.keys().map(String::as_str).collect()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value_of(
    families: &std::collections::HashMap<String, support::PromFamily>,
    family: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let family = families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    let matching: Vec<_> = family
        .samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{name}{labels:?} in {:?}",
        family.samples
    );
    matching[0].value()
}

/// `/metrics` of a daemon that archived a ticket, parsed by Prometheus' own Python parser:
/// the documented families with their label sets and values, and no identifying label.
#[tokio::test(start_paused = true)]
async fn metrics_parse_with_the_prometheus_parser_and_carry_no_identifiers() {
    let fx = Fixture::start().await;
    let zip_size = fx.archivable(1001, KEY_A, vec![StatusStep::Init]);
    // One retried API attempt, so a second outcome shows.
    fx.dms.inject(1, DmsFault::ServiceUnavailable);
    let config = fx.write_config(&fx.config_text(None, HTTP, &[(1001, KEY_A)]));
    let notify = NotifySocket::bind();
    let daemon = run_daemon(&config, Notifier::to_socket(notify.path(), None)).await;
    notify
        .until(Duration::from_secs(60), |m| m.contains("1 archived"))
        .await;
    let response = http_client()
        .get(format!("http://{}/metrics", daemon.http.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    daemon.shutdown.cancel();
    daemon.task.await.unwrap();

    let families = families(&text);
    let query = QUERY_STATUS_ACTION;
    let kinds: std::collections::BTreeMap<&str, &str> = families
        .values()
        .map(|f| (f.name.as_str(), f.kind.as_str()))
        .collect();
    for (name, kind) in [
        ("dmstrack_api_requests", "counter"),
        ("dmstrack_api_request_duration_seconds", "histogram"),
        ("dmstrack_polls", "counter"),
        ("dmstrack_downloads", "counter"),
        ("dmstrack_download_bytes", "counter"),
        ("dmstrack_tickets", "gauge"),
        ("dmstrack_last_archive_timestamp_seconds", "gauge"),
        ("dmstrack_build_info", "gauge"),
    ] {
        assert_eq!(kinds.get(name), Some(&kind), "{kinds:?}");
    }

    // API attempts by action and outcome; the histogram counts the same attempts.
    let requests = &families["dmstrack_api_requests"];
    for sample in &requests.samples {
        assert_eq!(label_names(sample), ["action", "outcome"], "{sample:?}");
    }
    let success = value_of(
        &families,
        "dmstrack_api_requests",
        "dmstrack_api_requests_total",
        &[("action", query), ("outcome", "success")],
    );
    assert_eq!(success, 2.0, "INIT, then DOWNLOAD_SUCCESS");
    let attempts: f64 = requests
        .samples
        .iter()
        .filter(|s| s.name == "dmstrack_api_requests_total" && s.labels["action"] == query)
        .map(support::PromSample::value)
        .sum();
    assert_eq!(attempts, 3.0, "two answers and one retried 503");
    let histogram = &families["dmstrack_api_request_duration_seconds"];
    for sample in &histogram.samples {
        let expected: &[&str] = if sample.name.ends_with("_bucket") {
            &["action", "le"]
        } else {
            &["action"]
        };
        assert_eq!(label_names(sample), expected, "{sample:?}");
    }
    let name = "dmstrack_api_request_duration_seconds";
    let count = value_of(
        &families,
        name,
        &format!("{name}_count"),
        &[("action", query)],
    );
    assert_eq!(count, attempts);
    let inf = value_of(
        &families,
        name,
        &format!("{name}_bucket"),
        &[("action", query), ("le", "+Inf")],
    );
    assert_eq!(inf, attempts);

    for sample in &families["dmstrack_polls"].samples {
        assert_eq!(label_names(sample), ["status"]);
    }
    for status in ["INIT", "DOWNLOAD_SUCCESS"] {
        let polls = value_of(
            &families,
            "dmstrack_polls",
            "dmstrack_polls_total",
            &[("status", status)],
        );
        assert_eq!(polls, 1.0, "{status}");
    }
    let archived = value_of(
        &families,
        "dmstrack_downloads",
        "dmstrack_downloads_total",
        &[("result", "archived")],
    );
    assert_eq!(archived, 1.0);
    let bytes = value_of(
        &families,
        "dmstrack_download_bytes",
        "dmstrack_download_bytes_total",
        &[],
    );
    assert_eq!(bytes, zip_size as f64);
    for (state, expected) in [("archived", 1.0), ("waiting", 0.0), ("failed", 0.0)] {
        let tickets = value_of(
            &families,
            "dmstrack_tickets",
            "dmstrack_tickets",
            &[("state", state)],
        );
        assert_eq!(tickets, expected, "{state}");
    }
    let last = value_of(
        &families,
        "dmstrack_last_archive_timestamp_seconds",
        "dmstrack_last_archive_timestamp_seconds",
        &[],
    );
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(now - 600.0 < last && last <= now + 1.0, "{last} vs {now}");
    let build = value_of(
        &families,
        "dmstrack_build_info",
        "dmstrack_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
    );
    assert_eq!(build, 1.0);

    // Labels are small fixed sets: no ticket id, key, order id or URL.
    for family in families.values() {
        for sample in &family.samples {
            for value in sample.labels.values() {
                assert!(
                    !value.contains(KEY_A)
                        && !value.contains("1001")
                        && !value.contains("://")
                        && !value.contains('/')
                        && !value.contains('?')
                        && !value.contains("127.0.0.1"),
                    "identifying label value {value:?} in {sample:?}"
                );
            }
        }
    }
}

/// `/healthz` follows the main loop; `/readyz` is 503 until DMS answered, 200 after, stays
/// 200 with nothing pending however long DMS is silent, and turns 503 when a new ticket
/// is pending and DMS has been silent too long.
#[tokio::test(start_paused = true)]
async fn health_endpoints_follow_the_loop_and_the_api() {
    let fx = Fixture::start().await;
    fx.archivable(1001, KEY_A, StatusStep::Init.times(2));
    let proxy = support::delayed_proxy(fx.dms.addr(), Duration::from_secs(60)).await;
    let endpoint = format!("http://{proxy}");
    let poll = "[poll]\ninitial_interval = \"10s\"\nmax_interval = \"10s\"\njitter = 0.0\n\n";
    let config = fx.write_config(&fx.config_text(
        Some(&endpoint),
        &format!("{poll}{HTTP}"),
        &[(1001, KEY_A)],
    ));
    let notify = NotifySocket::bind();
    let daemon = run_daemon(&config, Notifier::to_socket(notify.path(), None)).await;
    let addr = daemon.http.unwrap();

    assert_eq!(get(addr, "/healthz").await.0, 200);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "ready before DMS answered: {body}");
    assert!(body.contains("not answered"), "{body}");

    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(fx.polls(1001, KEY_A) >= 1);
    assert!(!fx.is_archived(1001, KEY_A), "still pending");
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));

    notify
        .until(Duration::from_secs(120), |m| m.contains("1 archived"))
        .await;
    fx.dms.shutdown();
    let pings = notify.drain_for(Duration::from_secs(600)).await;
    assert!(
        pings.len() >= 55,
        "the loop ticks every 10s: {}",
        pings.len()
    );
    assert_eq!(get(addr, "/healthz").await.0, 200, "the loop still ticks");
    assert_eq!(
        get(addr, "/readyz").await.0,
        200,
        "nothing pending: nothing to wait for"
    );

    // A new ticket is pending, and DMS (now gone) last answered ten minutes ago.
    fx.write_config(&fx.config_text(
        Some(&endpoint),
        &format!("{poll}{HTTP}"),
        &[(1001, KEY_A), (1002, KEY_B)],
    ));
    daemon.reload.send(()).await.unwrap();
    notify
        .until(Duration::from_secs(5), |m| m == "READY=1")
        .await;
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("has not answered for"), "{body}");
    assert_eq!(get(addr, "/healthz").await.0, 200);
    daemon.shutdown.cancel();
    daemon.task.await.unwrap();
}

/// `dmstrack healthcheck --addr`: 0 against a live daemon, 1 against a closed port or a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_by_the_answer_of_healthz() {
    let fx = Fixture::start().await;
    fx.dms.script_ticket(1001, KEY_A, []);
    let config = fx.write_config(&fx.config_text(None, HTTP, &[(1001, KEY_A)]));
    let daemon = run_daemon(&config, Notifier::disabled()).await;
    let healthcheck = |addr: String| {
        let mut command = dmstrack();
        command.args(["healthcheck", "--addr", &addr]);
        support::run(command)
    };

    let (code, _, stderr) = healthcheck(daemon.http.unwrap().to_string()).await;
    assert_eq!(code, 0, "{stderr}");

    let closed = format!("127.0.0.1:{}", support::free_port());
    let (code, _, stderr) = healthcheck(closed.clone()).await;
    assert_eq!(code, 1);
    assert!(stderr.contains(&closed), "{stderr}");

    let unhealthy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let unhealthy_addr = unhealthy.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(|| async {
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the main loop has not ticked for 99s",
            )
        }),
    );
    tokio::spawn(async move { axum::serve(unhealthy, app).await });
    let (code, _, stderr) = healthcheck(unhealthy_addr.to_string()).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("503") && stderr.contains("has not ticked"),
        "{stderr}"
    );

    daemon.shutdown.cancel();
    daemon.task.await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------

/// Runs `dmstrack [format…] run --once -c config` to its end; returns the stderr lines.
async fn run_once(config: &Path, format: &[&str]) -> Vec<String> {
    let mut command = dmstrack();
    command
        .args(format)
        .args(["run", "--once", "-c"])
        .arg(config);
    let (code, _, stderr) = support::run(command).await;
    assert_eq!(code, 0, "{stderr}");
    stderr.lines().map(str::to_owned).collect()
}

fn parse_json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| {
            let value: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(value.is_object(), "{l}");
            value
        })
        .collect()
}

/// `--log-format json`: one object per line; every line about the ticket names it by
/// order_id, download_key_id and label; one info line per state change however many polls;
/// retries at info with the attempt and the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_ticket_and_log_changes_not_polls() {
    let fx = Fixture::start().await;
    fx.archivable(3001, KEY_A, StatusStep::Init.times(8));
    fx.dms.inject(3, DmsFault::ServiceUnavailable);
    let config = fx.write_config(&fx.config_text(
        None,
        "[poll]\ninitial_interval = \"20ms\"\nmax_interval = \"20ms\"\njitter = 0.0\n\n",
        &[(3001, KEY_A)],
    ));
    let lines = run_once(&config, &["--log-format", "json"]).await;
    let polls = fx.polls(3001, KEY_A);
    assert_eq!(polls, 9, "eight INIT answers, then DOWNLOAD_SUCCESS");
    let logs = parse_json_lines(&lines);
    for line in &logs {
        assert!(
            line["level"].is_string() && line["message"].is_string(),
            "{line}"
        );
    }

    let about_ticket: Vec<_> = logs.iter().filter(|l| l["order_id"] == 3001).collect();
    assert!(!about_ticket.is_empty());
    for line in &about_ticket {
        assert_eq!(line["download_key_id"], KEY_A, "{line}");
        assert_eq!(line["label"], "t3001", "{line}");
    }

    let changes: Vec<(&str, &str)> = about_ticket
        .iter()
        .filter(|l| l["message"] == "ticket state changed")
        .map(|l| {
            assert_eq!(l["level"], "INFO", "{l}");
            (l["from"].as_str().unwrap(), l["to"].as_str().unwrap())
        })
        .collect();
    assert_eq!(changes.first().map(|c| c.0), Some("pending"), "{changes:?}");
    assert_eq!(changes.last().map(|c| c.1), Some("archived"), "{changes:?}");
    for (i, (from, to)) in changes.iter().enumerate() {
        assert_ne!(from, to, "{changes:?}");
        if i > 0 {
            assert_eq!(changes[i - 1].1, *from, "a chain of changes: {changes:?}");
        }
    }
    let info_about_ticket = about_ticket.iter().filter(|l| l["level"] == "INFO").count();
    assert!(
        info_about_ticket < polls,
        "{info_about_ticket} info lines for {polls} polls: {about_ticket:#?}"
    );

    let retry = logs
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("retrying"))
        })
        .unwrap_or_else(|| panic!("no retry line in {logs:#?}"));
    assert_eq!(retry["level"], "INFO", "{retry}");
    assert_eq!(retry["attempt"], 1, "{retry}");
    assert!(retry["delay_ms"].is_u64(), "{retry}");
    assert!(fx.is_archived(3001, KEY_A));
}

/// `--log-format text` is not JSON; `auto` with stderr not a terminal is JSON lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_auto_log_formats() {
    let fx = Fixture::start().await;
    fx.archivable(3001, KEY_A, vec![]);
    let config = fx.write_config(&fx.config_text(None, "", &[(3001, KEY_A)]));

    let text = run_once(&config, &["--log-format", "text"]).await;
    assert!(
        text.iter()
            .any(|l| l.contains("INFO") && l.contains("dmstrack started")),
        "{text:?}"
    );
    for line in &text {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "a JSON line in text mode: {line}"
        );
    }

    // Piped stderr, no JOURNAL_STREAM: auto means JSON.
    let auto = run_once(&config, &[]).await;
    let logs = parse_json_lines(&auto);
    assert!(
        logs.iter().any(|l| l["message"] == "dmstrack started"),
        "{auto:?}"
    );
}

/// Lines of the retry paths name the ticket too: a status query that fails after every API
/// attempt, and a download cut mid-body. Each retry line at info carries its attempt number
/// and its delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_lines_name_the_ticket_with_attempt_and_delay() {
    let fx = Fixture::start().await;
    fx.archivable(3001, KEY_A, StatusStep::Init.times(2));
    // The second poll fails after all three API attempts; the first GET is cut.
    for call in 2..=4 {
        fx.dms.inject(call, DmsFault::ServiceUnavailable);
    }
    fx.oss
        .inject("exports/3001_UNDO.zip", OssFault::CutAfter(100));
    let config = fx.write_config(&fx.config_text(
        None,
        "[poll]\ninitial_interval = \"20ms\"\nmax_interval = \"20ms\"\njitter = 0.0\n\n",
        &[(3001, KEY_A)],
    ));
    let logs = parse_json_lines(&run_once(&config, &["--log-format", "json"]).await);
    let retries: Vec<_> = logs
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.contains("retry")))
        .collect();
    let messages: std::collections::BTreeSet<&str> = retries
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.len() >= 3,
        "API, poll and download retries: {messages:?}"
    );
    for line in retries.iter().filter(|l| l.get("order_id").is_some()) {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["order_id"], 3001, "{line}");
        assert_eq!(line["download_key_id"], KEY_A, "{line}");
        assert_eq!(line["label"], "t3001", "{line}");
        assert!(line["attempt"].is_u64(), "{line}");
        assert!(
            line["delay_ms"].is_u64() || line["retry_in_ms"].is_u64(),
            "{line}"
        );
    }
    assert!(fx.is_archived(3001, KEY_A));
}

// ---------------------------------------------------------------------------------------
// Hooks
// ---------------------------------------------------------------------------------------

/// Records its arguments; fails for order 4002; hangs (as the same process) for 4003.
const HOOK: &str = r#"#!/bin/sh
here="$(dirname "$0")"
printf '%s\n' "$@" > "$here/args-$2"
case "$2" in
  4002) echo "uploading" ; echo "upload refused: quota" >&2; exit 3 ;;
  4003) echo $$ > "$here/hang.pid"; exec sleep 30 ;;
esac
exit 0
"#;

/// `status --json` of a config, parsed.
async fn status_json(config: &Path) -> Vec<serde_json::Value> {
    let mut command = dmstrack();
    command.args(["status", "--json", "-c"]).arg(config);
    let (code, stdout, stderr) = support::run(command).await;
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn gone_or_zombie(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// `hooks.on_archived` gets `{dir}`, `{order_id}`, `{download_key_id}`; its outcome shows in
/// `status` and in `dmstrack_hook_runs_total`; a failing hook leaves the archive alone; a
/// hanging one is killed at `hooks.timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_archived_hook_runs_and_its_outcome_is_reported() {
    let fx = Fixture::start().await;
    let hooks = fx.path().join("hooks");
    std::fs::create_dir(&hooks).unwrap();
    let script = hooks.join("hook.sh");
    dmstrack::sim::write_executable(&script, HOOK).unwrap();
    let tickets = [(4001, KEY_A), (4002, KEY_B), (4003, KEY_C)];
    for (order_id, key) in tickets {
        fx.archivable(order_id, key, vec![]);
    }
    let extra = format!(
        "{HTTP}[hooks]\non_archived = [\"{}\", \"{{dir}}\", \"{{order_id}}\", \"{{download_key_id}}\"]\ntimeout = \"1s\"\n\n",
        script.display()
    );
    let config = fx.write_config(&fx.config_text(None, &extra, &tickets));
    let started = std::time::Instant::now();
    let daemon = run_daemon(&config, Notifier::disabled()).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let entries = status_json(&config).await;
        if entries.iter().all(|e| !e["hook"].is_null()) {
            break entries;
        }
        assert!(std::time::Instant::now() < deadline, "{entries:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the hanging hook was not cut at 1s"
    );
    let metrics = get(daemon.http.unwrap(), "/metrics").await.1;
    daemon.shutdown.cancel();
    daemon.task.await.unwrap();

    for (order_id, key) in tickets {
        let dir = fx.archive_dir(order_id, key);
        let args = std::fs::read_to_string(hooks.join(format!("args-{order_id}"))).unwrap();
        assert_eq!(
            args,
            format!("{}\n{order_id}\n{key}\n", dir.display()),
            "{order_id}"
        );
        assert!(fx.is_archived(order_id, key), "{order_id}: archive undone");
        let entry = entries.iter().find(|e| e["order_id"] == order_id).unwrap();
        assert_eq!(entry["state"], "archived", "{entry}");
        assert_eq!(entry["archive"], dir.display().to_string(), "{entry}");
    }
    let hook_of = |order_id: i64| {
        let entry = entries.iter().find(|e| e["order_id"] == order_id).unwrap();
        (
            entry["hook"]["result"].as_str().unwrap().to_owned(),
            entry["hook"]["detail"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(hook_of(4001), ("ok".into(), "exit status 0".into()));
    assert_eq!(
        hook_of(4002),
        (
            "failed".into(),
            "exit status 3: upload refused: quota".into()
        )
    );
    let (result, detail) = hook_of(4003);
    assert_eq!(result, "timeout");
    assert!(detail.starts_with("killed after 1s"), "{detail}");

    let pid = std::fs::read_to_string(hooks.join("hang.pid")).unwrap();
    wait_until(Duration::from_secs(5), "the hanging hook is gone", || {
        gone_or_zombie(pid.trim())
    })
    .await;

    let families = families(&metrics);
    for (result, expected) in [("ok", 1.0), ("failed", 1.0), ("timeout", 1.0)] {
        let runs = value_of(
            &families,
            "dmstrack_hook_runs",
            "dmstrack_hook_runs_total",
            &[("hook", "on_archived"), ("result", result)],
        );
        assert_eq!(runs, expected, "{result}");
    }

    // The table shows the outcome too.
    let mut command = dmstrack();
    command.args(["status", "-c"]).arg(&config);
    let (code, table, _) = support::run(command).await;
    assert_eq!(code, 0);
    let row = table.lines().find(|l| l.starts_with("4002 ")).unwrap();
    assert!(
        row.contains("hook failed: exit status 3: upload refused: quota"),
        "{table}"
    );
}

// ---------------------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------------------

/// New paths under `root` since `before` that are outside `var/state` and `var/archive`.
fn stray_writes(root: &Path, before: &[String]) -> Vec<String> {
    support::tree(root)
        .into_iter()
        .filter(|p| !before.contains(p))
        .filter(|p| !p.starts_with("var/state") && !p.starts_with("var/archive"))
        .collect()
}

/// Like a container with `readOnlyRootFilesystem`: the working directory and the config
/// folder are read-only, `HOME` is unset and `TMPDIR` is watched; the state and archive
/// folders are the only places written. `run --once` archives and exits 0; a daemon in the
/// middle of a download exits 0 on SIGTERM well within a pod's grace period, keeping the
/// partial download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_state_and_archive_folders_are_written() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::start().await;
    fx.archivable(5001, KEY_A, vec![StatusStep::Init]);
    fx.archivable(5002, KEY_B, vec![]);
    // A stall: the download hangs mid-body until the read timeout (60s by default).
    fx.oss
        .inject("exports/5002_UNDO.zip", OssFault::StallAfter(1000));
    let root = fx.path().join("root");
    let (cwd, etc, tmp) = (root.join("ro"), root.join("etc"), root.join("tmp"));
    for dir in [
        &cwd,
        &etc,
        &tmp,
        &root.join("var/state"),
        &root.join("var/archive"),
    ] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let write = |name: &str, tickets: &[(i64, &str)]| {
        let text = fx
            .config_text(None, "", tickets)
            .replace(
                "dir = \"archive\"",
                &format!("dir = \"{}\"", root.join("var/archive").display()),
            )
            .replace(
                "dir = \"state\"",
                &format!("dir = \"{}\"", root.join("var/state").display()),
            );
        let path = etc.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let once = write("once.toml", &[(5001, KEY_A)]);
    let daemon_config = write("daemon.toml", &[(5001, KEY_A), (5002, KEY_B)]);
    for dir in [&cwd, &etc] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let command = |config: &Path, once: bool| {
        let mut command = dmstrack();
        command
            .current_dir(&cwd)
            .env("TMPDIR", &tmp)
            .args(["--log-format", "json", "run", "-c"])
            .arg(config);
        if once {
            command.arg("--once");
        }
        command
    };

    let before = support::tree(&root);
    let (code, _, stderr) = support::run(command(&once, true)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(fx.is_archived_in(&root.join("var/archive"), 5001, KEY_A));
    assert_eq!(stray_writes(&root, &before), Vec::<String>::new());

    let before = support::tree(&root);
    let mut daemon = Spawned::start(command(&daemon_config, false));
    let part = root
        .join("var/archive/.dmstrack/downloads")
        .join(format!("5002-{KEY_B}.zip.part"));
    wait_until(Duration::from_secs(20), "the download has begun", || {
        part.is_file()
    })
    .await;
    // Into the stall (the writer buffers, so the file's size does not tell).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = std::time::Instant::now();
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait(Duration::from_secs(15)).await, 0);
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        stopping.elapsed()
    );
    assert_eq!(
        std::fs::metadata(&part).map(|m| m.len()).ok(),
        Some(1000),
        "the partial download is kept for resume"
    );
    assert_eq!(stray_writes(&root, &before), Vec::<String>::new());
    // The read-only folders were never the daemon's business: leave them writable for the
    // temp dir's cleanup.
    for dir in [&cwd, &etc] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
