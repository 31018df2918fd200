//! The review's findings, each as the situation that went wrong: an archive already there,
//! a kept zip and a failed publish, a download limit across reloads, unbounded bodies,
//! redirects of signed requests, secrets echoed by STS, two daemons on one archive folder,
//! and a resume that blocked the runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dmstrack::config::ConfigEnv;
use dmstrack::credentials::{CredentialEnv, CredentialProvider};
use dmstrack::service::daemon::{Daemon, RunOptions, StartError};
use dmstrack::service::notify::Notifier;
use dmstrack::sim::dms::{StatusStep, UrlSource};
use dmstrack::sim::oss::OssFault;
use dmstrack::sim::zipgen::{SampleSpec, sample_zip};

use crate::support::world::{VIRTUAL_LIMIT, World, wait_until};
use crate::support::{self, tree};

const KEY: &str = "e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd";
const KEY2: &str = "7d1c2a9e-5b43-4f1a-9c0e-2f6b8a1d3e01";
const OBJECT: &str = "exports/x_REDO_31201_207.zip";
const OBJECT2: &str = "exports/x_REDO_31201_208.zip";

/// A loopback HTTP server answering every request with `answer`, counting requests.
async fn serve(
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move || {
        let answer = answer.clone();
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            answer()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

/// A 302 to `target`.
fn redirect_to(target: SocketAddr) -> impl Fn() -> axum::response::Response + Clone {
    move || {
        axum::response::Response::builder()
            .status(302)
            .header("location", format!("http://{target}/collect?x=1"))
            .body(axum::body::Body::empty())
            .unwrap()
    }
}

// ---- 1. an archive already there is success ----

/// An archive that appears while the ticket waits (another daemon, a restore, a pinned ticket
/// with the same key) is adopted at the next DOWNLOAD_SUCCESS: nothing is downloaded, nothing
/// is re-extracted, and the ticket never turns failed. Before the fix the publish answered
/// "occupied" and the ticket re-extracted at every poll.
#[tokio::test(start_paused = true)]
async fn an_archive_that_appears_while_waiting_is_adopted_not_downloaded() {
    let mut world = World::new("v3").await;
    world
        .oss
        .put_object(OBJECT, sample_zip(&SampleSpec::demo(3)));
    world.dms.script_ticket(
        7,
        KEY,
        [
            StatusStep::Init,
            StatusStep::Init,
            StatusStep::success(world.fresh_urls(OBJECT), 69),
        ],
    );
    world.config.ticket(7, KEY, "adopt");
    let running = world.start(false).await;
    wait_until("the first poll", VIRTUAL_LIMIT, || {
        world.status_calls() >= 1
    })
    .await;
    let dir = world.final_dir(7, KEY);
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("manifest.json"), b"{}\n").unwrap();
    wait_until("adopted", VIRTUAL_LIMIT, || {
        support::state_record(&world.state(), 7, KEY).is_some_and(|r| r["state"] == "archived")
    })
    .await;
    running.shutdown.cancel();
    running.run.await.unwrap();
    assert!(world.gets().is_empty(), "nothing was downloaded");
    let record = world.record(7, KEY);
    assert_eq!(record["archive"], dir.display().to_string());
    assert_eq!(record["last_error"], serde_json::Value::Null);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        b"{}\n",
        "the archive is untouched"
    );
    assert!(
        running
            .telemetry
            .metrics
            .encode()
            .contains("dmstrack_downloads_total{result=\"adopted\"} 1")
    );
}

// ---- 5. keep_zip keeps the only copy until the publish succeeded ----

/// With `keep_zip`, a publish that fails (here: a folder without a manifest sits where the
/// archive goes) leaves the downloaded zip in place for the next attempt. Before the fix the
/// zip was moved into the staging folder, which the failure deleted.
#[tokio::test(start_paused = true)]
async fn keep_zip_and_a_failed_publish_keep_the_download() {
    let mut world = World::new("v3").await;
    let zip = sample_zip(&SampleSpec::demo(5));
    world.oss.put_object(OBJECT, zip.clone());
    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    world
        .config
        .ticket(7, KEY, "keep")
        .set("archive", "keep_zip", "true");
    let occupied = world.final_dir(7, KEY);
    std::fs::create_dir_all(&occupied).unwrap();
    let running = world.start(false).await;
    wait_until("the failed publish", VIRTUAL_LIMIT, || {
        support::state_record(&world.state(), 7, KEY).is_some_and(|r| {
            r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("holds no manifest.json"))
        })
    })
    .await;
    let part = world
        .archive()
        .join(format!(".dmstrack/downloads/7-{KEY}.zip.part"));
    assert_eq!(
        std::fs::read(&part).ok().as_deref(),
        Some(zip.as_slice()),
        "the download is kept"
    );
    // Once the folder is moved away, the next attempt publishes from the kept bytes.
    std::fs::remove_dir(&occupied).unwrap();
    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    wait_until("archived", VIRTUAL_LIMIT, || {
        world.final_dir(7, KEY).join("manifest.json").exists()
    })
    .await;
    running.shutdown.cancel();
    running.run.await.unwrap();
    let kept = std::fs::read(occupied.join("x_REDO_31201_207.zip")).unwrap();
    assert_eq!(kept, zip);
}

// ---- 4. one download limit across reloads ----

/// `download.concurrency = 1`: a reload while one download runs must not let a second one
/// start beside it. Before the fix a reload built a new semaphore, so jobs started after it
/// ran next to the ones holding the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_one_download_limit() {
    let mut world = World::new("v3").await.real_time();
    let zip = sample_zip(&SampleSpec::demo(6));
    world.oss.put_object(OBJECT, zip.clone());
    world.oss.put_object(OBJECT2, zip);
    // The first download stalls until the read timeout; the second ticket is ready later.
    world.oss.inject(OBJECT, OssFault::StallAfter(1000));
    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    world.dms.script_ticket(
        8,
        KEY2,
        [
            StatusStep::Init,
            StatusStep::Init,
            StatusStep::success(world.fresh_urls(OBJECT2), 69),
        ],
    );
    world
        .config
        .ticket(7, KEY, "first")
        .ticket(8, KEY2, "second")
        .set("download", "concurrency", "1")
        .set("download", "read_timeout", "\"3s\"");
    let running = world.start(false).await;
    let gets_of = |object: &str| {
        world
            .gets()
            .iter()
            .filter(|g| g.key.as_deref() == Some(object))
            .count()
    };
    wait_until("the first download", Duration::from_secs(20), || {
        gets_of(OBJECT) == 1
    })
    .await;
    running.reload.send(()).await.unwrap();
    // The second ticket turns ready while the first download still stalls.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2000);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(
            gets_of(OBJECT2),
            0,
            "a second download started beside the first one after the reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown.cancel();
    running.run.await.unwrap();
}

// ---- 6. bounded bodies ----

/// An OSS answer without `Content-Length` (chunked) is refused instead of streamed without
/// bound, and an endless error body is read only up to a limit. Before the fix the first was
/// written whatever its size and the second was read until memory ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_unknown_or_endless_length_are_refused() {
    let chunked = || {
        let chunks = futures_chunks(3);
        axum::response::Response::builder()
            .status(200)
            .body(axum::body::Body::new(chunks))
            .unwrap()
    };
    let endless_error = || {
        axum::response::Response::builder()
            .status(500)
            .body(axum::body::Body::new(futures_chunks(usize::MAX)))
            .unwrap()
    };
    for (case, answer, expected) in [
        (
            "chunked",
            Box::new(chunked) as Box<dyn Fn() -> axum::response::Response + Send + Sync>,
            "no Content-Length",
        ),
        ("endless error", Box::new(endless_error), "HTTP 500"),
    ] {
        let answer = Arc::new(answer);
        let (addr, _) = serve(move || answer()).await;
        let mut world = World::new("v3").await.real_time();
        world.dms.script_ticket(
            7,
            KEY,
            [StatusStep::success(
                UrlSource::fixed(format!("http://{addr}/bucket/x.zip?Expires=1&Signature=s")),
                1,
            )],
        );
        world
            .config
            .ticket(7, KEY, case)
            .set("download", "max_attempts", "1");
        let running = world.start(false).await;
        wait_until(case, Duration::from_secs(30), || {
            support::state_record(&world.state(), 7, KEY).is_some_and(|r| {
                r["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(expected))
            })
        })
        .await;
        running.shutdown.cancel();
        running.run.await.unwrap();
        let downloads = world.archive().join(".dmstrack/downloads");
        let written: u64 = std::fs::read_dir(&downloads)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(written < 1 << 20, "{case}: {written} bytes written");
    }
}

/// A body of `count` 64 KiB chunks, sent chunked (no length known in advance).
fn futures_chunks(count: usize) -> Chunks {
    Chunks(count)
}

struct Chunks(usize);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b'x';
            64 << 10
        ])))))
    }
}

// ---- 8. no redirects for signed requests ----

/// The API client does not follow a redirect: the signed request never reaches the other
/// host, and the error names that host. Before the fix reqwest followed it and trusted the
/// answer from there.
#[tokio::test]
async fn the_api_client_never_follows_a_redirect() {
    let (collector, collected) = serve(|| axum::response::Response::new("{}".into())).await;
    let (redirector, _) = serve(redirect_to(collector)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::DaemonConfig::new(&format!("http://{redirector}"), "v1");
    config.set("dms", "max_attempts", "1");
    let config = config.load(dir.path());
    let credentials =
        CredentialProvider::new(&config.credentials, CredentialEnv::from_vars([], None)).unwrap();
    let client = dmstrack::dms::DmsClient::new(
        &config.dms,
        credentials,
        Arc::new(dmstrack::net::ratelimit::RateLimiter::new(100.0)),
        dmstrack::telemetry::Telemetry::default(),
    )
    .unwrap();
    let err = client.query_status(7, KEY, None).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&collector.to_string()) && text.contains("not followed"),
        "{text}"
    );
    assert!(!err.is_auth());
    assert_eq!(
        collected.load(Ordering::SeqCst),
        0,
        "the signed request went nowhere else"
    );
}

/// STS and the credentials URI do not follow redirects either (the first would carry the
/// signed AssumeRole query with the source's token, the second the caller's identity).
#[tokio::test]
async fn credential_services_never_follow_a_redirect() {
    let (collector, collected) = serve(|| axum::response::Response::new("{}".into())).await;
    let (redirector, _) = serve(redirect_to(collector)).await;
    let home = tempfile::tempdir().unwrap();
    let env = CredentialEnv::from_vars([], Some(home.path().to_owned()));
    let sts = dmstrack::config::CredentialsSettings {
        source: dmstrack::config::CredentialSource::RamRoleArn,
        access_key_id: Some("LTAI5tSourceKey".into()),
        access_key_secret: Some(dmstrack::net::secret::Secret::new("SourceSecret0001")),
        role_arn: Some("acs:ram::1:role/r".into()),
        sts_endpoint: Some(format!("http://{redirector}/").parse().unwrap()),
        ..Default::default()
    };
    let uri = dmstrack::config::CredentialsSettings {
        source: dmstrack::config::CredentialSource::Uri,
        credentials_uri: Some(format!("http://{redirector}/creds").parse().unwrap()),
        ..Default::default()
    };
    for settings in [&sts, &uri] {
        let provider = CredentialProvider::new(settings, env.clone()).unwrap();
        let err = provider.get().await.unwrap_err().to_string();
        assert!(
            err.contains(&collector.to_string()) && err.contains("not followed"),
            "{err}"
        );
    }
    assert_eq!(collected.load(Ordering::SeqCst), 0);
}

// ---- 9. STS errors never carry the source's secrets ----

/// STS answers a bad signature with the string it signed, which holds the source's STS token
/// (twice percent-encoded); a careless STS could echo the secret itself. Neither reaches the
/// error. Before the fix AssumeRole errors were scrubbed with an empty list of secrets.
#[tokio::test]
async fn assume_role_errors_never_carry_the_source_secrets() {
    const SECRET: &str = "SourceSecretNeverShown0001";
    const TOKEN: &str = "CAIS+token/with=chars0002";
    let once = dmstrack::net::signer::percent_encode(TOKEN);
    let twice = dmstrack::net::signer::percent_encode(&once);
    let message = format!(
        "Specified signature is not matched with our calculation (key {SECRET}, token {TOKEN}). \
         server string to sign is:GET&%2F&AccessKeyId%3DSTS.x%26SecurityToken%3D{twice}"
    );
    let (sts, _) = serve(move || {
        let body = serde_json::json!({
            "RequestId": "r-1", "Code": "SignatureDoesNotMatch", "Message": message
        });
        axum::response::Response::builder()
            .status(400)
            .body(body.to_string().into())
            .unwrap()
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let settings = dmstrack::config::CredentialsSettings {
        source: dmstrack::config::CredentialSource::RamRoleArn,
        access_key_id: Some("STS.source".into()),
        access_key_secret: Some(dmstrack::net::secret::Secret::new(SECRET)),
        security_token: Some(dmstrack::net::secret::Secret::new(TOKEN)),
        role_arn: Some("acs:ram::1:role/r".into()),
        sts_endpoint: Some(format!("http://{sts}/").parse().unwrap()),
        ..Default::default()
    };
    let provider = CredentialProvider::new(
        &settings,
        CredentialEnv::from_vars([], Some(home.path().to_owned())),
    )
    .unwrap();
    let err = provider.get().await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("SignatureDoesNotMatch"), "{shown}");
    for secret in [SECRET, TOKEN, once.as_str(), twice.as_str()] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

// ---- 10. one daemon per archive folder ----

/// Two daemons with different state folders but one archive folder would delete each other's
/// staging folders and partial downloads: the second one does not start.
#[tokio::test]
async fn a_second_daemon_on_the_same_archive_folder_does_not_start() {
    let mut world = World::new("v3").await;
    world.config.ticket(7, KEY, "one");
    let first = world.start(false).await;
    let mut second = world.config.clone();
    second.set("state", "dir", "\"state2\"");
    let err = Daemon::start(
        second.load(world.root()),
        ConfigEnv::default(),
        CredentialEnv::from_vars([], None),
        RunOptions { once: false },
        Notifier::disabled(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::Locked(_)), "{err}");
    assert!(err.to_string().contains("archive directory"), "{err}");
    assert_eq!(err.exit_code(), 75);
    first.shutdown.cancel();
    first.run.await.unwrap();
    assert!(
        !tree(world.root())
            .iter()
            .any(|p| p.starts_with("state2/tickets")),
        "the second daemon wrote no state"
    );
}

// ---- resume without blocking ----

/// Resuming a large partial download re-hashes the kept bytes; that must not stop the async
/// runtime. On a single-threaded runtime, a ticker beside the download keeps its rhythm while
/// the prefix is hashed (before the fix, the hash ran on the runtime's only thread and the
/// ticker stopped for the whole hash).
#[tokio::test(flavor = "current_thread")]
async fn resuming_a_large_part_does_not_stop_the_runtime() {
    use dmstrack::job::download::{Downloader, Progress, TicketTag};
    let oss = dmstrack::sim::oss::OssSimulator::start().await.unwrap();
    let size = 48 << 20;
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let info = oss.put_object("big.zip", body.clone());
    let url = oss.presign_at("big.zip", jiff::Timestamp::now().as_second() + 3600);
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("t.zip.part");
    // A part of all but the last MiB, with its meta, as a cut download leaves it.
    std::fs::write(&part, &body[..size - (1 << 20)]).unwrap();
    std::fs::write(
        dir.path().join("t.zip.part.json"),
        serde_json::json!({ "etag": info.etag, "total": size }).to_string(),
    )
    .unwrap();
    let settings = support::DaemonConfig::new("http://127.0.0.1:1", "v3")
        .load(dir.path())
        .download;
    let downloader =
        Downloader::new(&settings, Arc::new(dmstrack::telemetry::Metrics::new())).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut last = std::time::Instant::now();
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(2)).await;
                longest = longest.max(last.elapsed());
                last = std::time::Instant::now();
            }
            longest
        })
    };
    let started = std::time::Instant::now();
    let fetched = downloader
        .fetch(
            &dmstrack::net::signed_url::SignedUrl::parse(&url).unwrap(),
            &part,
            &Progress::default(),
            &tokio_util::sync::CancellationToken::new(),
            TicketTag {
                order_id: 1,
                download_key_id: "k",
                label: "",
            },
        )
        .await
        .unwrap();
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let longest = ticker.await.unwrap();
    assert!(fetched.resumed);
    assert_eq!(fetched.bytes, size as u64);
    assert!(
        longest < Duration::from_millis(250).max(took / 4),
        "the runtime stood still for {longest:?} of a {took:?} resume"
    );
}

// ---- state that costs nothing per poll ----

/// 50 tickets polled every second for 20 seconds (1,000 polls, status unchanged after the
/// first): the state database sees a handful of commits, not one (with two fsyncs) per poll
/// as before. The first poll of each ticket is a state change (pending → waiting) and is
/// committed at once, together with whatever else is queued; the rest is batched.
#[tokio::test(start_paused = true)]
async fn unchanged_polls_cost_no_state_write_each() {
    let mut world = World::new("v3").await;
    for n in 0..50 {
        let key = format!("key-{n}");
        world
            .dms
            .script_ticket(100 + n, &key, StatusStep::Init.times(40));
        world.config.ticket(100 + n, &key, "");
    }
    world
        .config
        .set("poll", "initial_interval", "\"1s\"")
        .set("poll", "max_interval", "\"1s\"")
        .set("poll", "jitter", "0.0");
    let running = world.start(false).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    running.shutdown.cancel();
    running.run.await.unwrap();
    let polls = world.status_calls();
    let commits = running.telemetry.metrics.state_commits();
    assert!(polls >= 900, "{polls} polls");
    assert!(
        commits <= 100,
        "{commits} state commits for {polls} polls of 50 tickets"
    );
    // Nothing was lost: the last attempts are saved at shutdown.
    let records = support::state_records(&world.state());
    assert_eq!(records.len(), 50);
    assert!(records.iter().all(|r| r["attempts"].as_u64() >= Some(18)));
}
