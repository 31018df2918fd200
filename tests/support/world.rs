//! `World`: a temp folder with config, state and archive, the DMS and OSS simulators, and the
//! real `Daemon` run in process on paused time; shared by the pipeline, review and upload
//! tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmstrack::config::{Config, ConfigEnv};
use dmstrack::credentials::CredentialEnv;
use dmstrack::service::daemon::{Daemon, RunOptions};
use dmstrack::service::notify::Notifier;
use dmstrack::sim::dms::{DmsSimulator, QUERY_STATUS_ACTION, StatusStep, UrlSource};
use dmstrack::sim::oss::{OssSimConfig, OssSimulator};
use dmstrack::watch::RunOutcome;
use tokio_util::sync::CancellationToken;

use super::{AK_ID, AK_SECRET, DaemonConfig, tree};

/// Far beyond anything a test needs, in paused (virtual) time: a hang fails, it does not block.
pub(crate) const VIRTUAL_LIMIT: Duration = Duration::from_secs(600);
/// The same for the few tests on real time.
pub(crate) const REAL_LIMIT: Duration = Duration::from_secs(60);

/// A temp folder with config, state and archive, the two simulators, and the URLs DMS handed
/// out (each one distinct, so a retried URL is recognisable in the OSS request log).
/// A daemon started by [`World::start`].
pub(crate) struct Running {
    /// Cancel to stop it.
    pub(crate) shutdown: CancellationToken,
    /// Send to make it re-read `config.toml` (as SIGHUP does).
    pub(crate) reload: tokio::sync::mpsc::Sender<()>,
    /// Its end.
    pub(crate) run: tokio::task::JoinHandle<RunOutcome>,
    /// Its metrics and health.
    pub(crate) telemetry: dmstrack::telemetry::Telemetry,
}

pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) dms: DmsSimulator,
    pub(crate) oss: Arc<OssSimulator>,
    pub(crate) config: DaemonConfig,
    pub(crate) urls: Arc<Mutex<Vec<String>>>,
    pub(crate) serial: Arc<AtomicI64>,
    /// How long a run may take before the test fails.
    pub(crate) limit: Duration,
}

impl World {
    pub(crate) async fn new(signature: &str) -> Self {
        Self::with_oss(
            signature,
            OssSimConfig::default(),
            tempfile::tempdir().unwrap(),
        )
        .await
    }

    pub(crate) async fn with_oss(
        signature: &str,
        oss: OssSimConfig,
        dir: tempfile::TempDir,
    ) -> Self {
        let oss = Arc::new(OssSimulator::start_with(oss).await.unwrap());
        let dms = DmsSimulator::start().await.unwrap();
        dms.add_access_key(AK_ID, AK_SECRET);
        let config = DaemonConfig::new(&dms.endpoint(), signature);
        Self {
            dir,
            dms,
            oss,
            config,
            urls: Arc::default(),
            serial: Arc::default(),
            limit: VIRTUAL_LIMIT,
        }
    }

    /// For tests on real time: fast polls, a short limit.
    ///
    /// A stalled download can only be tested on real time: the downloader's writer thread
    /// (`spawn_blocking`) waits for the next chunk, and tokio never auto-advances paused time
    /// while a blocking task runs, so the read timeout would never come.
    pub(crate) fn real_time(mut self) -> Self {
        self.limit = REAL_LIMIT;
        self.config
            .set("poll", "initial_interval", "\"100ms\"")
            .set("poll", "max_interval", "\"200ms\"");
        self
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn archive(&self) -> PathBuf {
        self.root().join("archive")
    }

    pub(crate) fn state(&self) -> PathBuf {
        self.root().join("state")
    }

    pub(crate) fn final_dir(&self, order_id: i64, key: &str) -> PathBuf {
        self.archive().join(order_id.to_string()).join(key)
    }

    pub(crate) fn load(&self) -> Config {
        self.config.load(self.root())
    }

    /// A URL source that presigns `object` anew at every answer, each URL distinct.
    pub(crate) fn fresh_urls(&self, object: &str) -> UrlSource {
        self.url_source(object, 0)
    }

    /// Like [`World::fresh_urls`], but the first `expired` URLs lie in the past.
    pub(crate) fn url_source(&self, object: &str, expired: usize) -> UrlSource {
        let (oss, urls, serial) = (
            Arc::clone(&self.oss),
            Arc::clone(&self.urls),
            Arc::clone(&self.serial),
        );
        let object = object.to_owned();
        UrlSource::generated(move || {
            let n = serial.fetch_add(1, Ordering::Relaxed);
            let url = if (n as usize) < expired {
                oss.presign_at(&object, jiff::Timestamp::now().as_second() - 3600 - n)
            } else {
                oss.presign_at(&object, jiff::Timestamp::now().as_second() + 3600 + n)
            };
            urls.lock().unwrap().push(url.clone());
            url
        })
    }

    /// INIT → LISTING → DOWNLOADING → DOWNLOAD_SUCCESS with fresh URLs of `object`.
    pub(crate) fn walk(&self, object: &str) -> Vec<StatusStep> {
        vec![
            StatusStep::Init,
            StatusStep::Listing,
            StatusStep::Downloading,
            StatusStep::success(self.fresh_urls(object), 69),
        ]
    }

    /// Runs `dmstrack run --once` in process to its end.
    pub(crate) async fn run_once(&self) -> RunOutcome {
        let (_, run) = self.spawn(true).await;
        tokio::time::timeout(self.limit, run)
            .await
            .expect("the run ends")
            .unwrap()
    }

    /// Waits for a spawned run to end.
    pub(crate) async fn finish(&self, run: tokio::task::JoinHandle<RunOutcome>) -> RunOutcome {
        tokio::time::timeout(self.limit, run)
            .await
            .expect("the run ends")
            .unwrap()
    }

    /// Starts the daemon as a task; cancel the token to stop it.
    pub(crate) async fn spawn(
        &self,
        once: bool,
    ) -> (CancellationToken, tokio::task::JoinHandle<RunOutcome>) {
        let running = self.start(once).await;
        (running.shutdown, running.run)
    }

    /// Starts the daemon as a task, with a handle to reload it and its metrics.
    pub(crate) async fn start(&self, once: bool) -> Running {
        let daemon = Daemon::start(
            self.load(),
            ConfigEnv::default(),
            CredentialEnv::from_vars([], None),
            RunOptions { once },
            Notifier::disabled(),
        )
        .await
        .unwrap();
        let telemetry = daemon.telemetry().clone();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (reload, reload_rx) = tokio::sync::mpsc::channel(1);
        let run = tokio::spawn(async move { daemon.run(token, reload_rx).await });
        Running {
            shutdown,
            reload,
            run,
            telemetry,
        }
    }

    /// The OSS GETs, in order.
    pub(crate) fn gets(&self) -> Vec<dmstrack::sim::oss::OssRequestRecord> {
        self.oss
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect()
    }

    /// Every GET carried a URL exactly as DMS gave it (raw path and query) and no header
    /// that would break a V1 presigned signature.
    pub(crate) fn assert_gets_clean(&self) {
        let issued = self.urls.lock().unwrap().clone();
        let gets = self.gets();
        assert!(!gets.is_empty());
        for get in gets {
            for (name, _) in &get.headers {
                assert!(
                    !name.starts_with("x-oss-") && name != "content-type" && name != "content-md5",
                    "the GET carried a {name} header"
                );
            }
            let sent = format!("{}{}?{}", self.oss.base_url(), get.path, get.query.expose());
            assert!(
                issued.contains(&sent),
                "the GET's path and query are not exactly one presigned by OSS"
            );
        }
    }

    /// No partial download and no staging folder is left.
    pub(crate) fn assert_no_work_left(&self) {
        let work = self.archive().join(".dmstrack");
        assert_eq!(
            tree(&work),
            ["downloads/", "lock", "staging/"],
            "leftovers in {work:?}"
        );
    }

    pub(crate) fn status_calls(&self) -> u64 {
        self.dms.action_count(QUERY_STATUS_ACTION)
    }

    pub(crate) fn record(&self, order_id: i64, key: &str) -> serde_json::Value {
        super::state_record(&self.state(), order_id, key).expect("a state file")
    }
}

/// Sleeps in small virtual steps until `done`, failing after `limit` of virtual time.
pub(crate) async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
