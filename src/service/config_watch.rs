//! Noticing changes without a signal: the config file, the tickets folder and the requests
//! folder of `dmstrack retry` / `forget`.
//!
//! inotify (the `notify` crate) watches the folders, not the files, so an editor's atomic
//! rename and a Kubernetes ConfigMap update (the `..data` symlink swapped by a rename inside
//! the mounted folder) are seen like any write. Events are debounced; then a fingerprint of
//! the config file's and the tickets files' contents decides whether anything changed (a
//! reload does exactly what SIGHUP does). A rescan every few seconds is the safety net where
//! inotify is unavailable or misses something (network filesystems). File reads run on
//! blocking threads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::fingerprint_on_disk;

/// How long events settle before they are acted on (an editor writes in several steps).
const DEBOUNCE: Duration = Duration::from_millis(300);
/// The safety-net rescan.
const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// What the watcher watches.
#[derive(Debug, Clone)]
pub struct WatchedPaths {
    /// The config file (possibly a symlink).
    pub config: PathBuf,
    /// The tickets folder (may not exist yet).
    pub tickets_dir: PathBuf,
    /// `<state.dir>/requests`.
    pub requests_dir: PathBuf,
}

/// A change to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The config or a tickets file changed (to contents with this fingerprint): reload.
    Config([u8; 32]),
    /// A request file is waiting.
    Requests,
}

fn fingerprint(paths: &WatchedPaths) -> [u8; 32] {
    fingerprint_on_disk(&paths.config, &paths.tickets_dir)
}

fn requests_waiting(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") && !name.starts_with('.')
        })
    })
}

/// Starts the watcher task; changes go to `changes` until `stop`. `loaded` is the fingerprint
/// of the config in force ([`crate::config::Config::fingerprint`]), so a change made between
/// loading it and starting the watcher is not missed.
pub fn spawn(
    paths: WatchedPaths,
    loaded: [u8; 32],
    changes: mpsc::Sender<Change>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
        let watcher = start_inotify(&paths, events_tx);
        if watcher.is_none() {
            info!("no inotify: config changes are noticed by a rescan every 2 s");
        }
        let mut last = loaded;
        let mut rescan = tokio::time::interval(RESCAN_EVERY);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(()) = events.recv() => {
                    // Let the burst settle, then look once.
                    tokio::time::sleep(DEBOUNCE).await;
                    while events.try_recv().is_ok() {}
                }
                _ = rescan.tick() => {}
            }
            let (now, waiting) = {
                let paths = paths.clone();
                match tokio::task::spawn_blocking(move || {
                    (fingerprint(&paths), requests_waiting(&paths.requests_dir))
                })
                .await
                {
                    Ok(result) => result,
                    Err(_) => continue,
                }
            };
            if last != now {
                debug!("the config or a tickets file changed");
                if changes.send(Change::Config(now)).await.is_err() {
                    break;
                }
                last = now;
            }
            if waiting && changes.send(Change::Requests).await.is_err() {
                break;
            }
        }
        drop(watcher);
    });
}

/// Watches the folders of the config, the tickets folder (and its parent, to see it appear)
/// and the requests folder. `None` where inotify is not available.
fn start_inotify(
    paths: &WatchedPaths,
    events: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (ours included: the rescan reads the config) are no change.
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            let _ = events.send(());
        }
    })
    .map_err(|err| warn!(error = %err, "cannot start inotify"))
    .ok()?;
    let mut folders: Vec<&Path> = Vec::new();
    if let Some(parent) = paths.config.parent() {
        folders.push(parent);
    }
    folders.push(&paths.tickets_dir);
    if let Some(parent) = paths.tickets_dir.parent() {
        folders.push(parent);
    }
    folders.push(&paths.requests_dir);
    folders.sort();
    folders.dedup();
    let mut watching = 0;
    for folder in folders {
        if folder.is_dir()
            && watcher
                .watch(folder, notify::RecursiveMode::NonRecursive)
                .is_ok()
        {
            watching += 1;
        }
    }
    (watching > 0).then_some(watcher)
}
