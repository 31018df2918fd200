//! Proxies: API, STS and OSS traffic all go through `HTTP_PROXY` (and `NO_PROXY` exempts
//! hosts), while the ECS metadata service is always reached directly, as the SDKs do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmstrack::net::secret::Secret;
use dmstrack::sim::credentials::{ImdsFake, ImdsOptions, StsFake, StsOptions};
use dmstrack::sim::dms::{DmsSimulator, StatusStep, UrlSource};
use dmstrack::sim::oss::OssSimulator;
use dmstrack::sim::zipgen::{SampleSpec, sample_zip};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::{AK_ID, AK_SECRET, DaemonConfig, dmstrack, run};

const KEY: &str = "5b2c7d1e-proxy";
const OBJECT: &str = "exports/proxy.zip";

/// A minimal forward proxy for plain-http requests: it reads the request line (absolute form,
/// as clients send to a proxy), records the target authority, connects there, replays the
/// request and pipes both ways.
async fn forward_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut client = BufReader::new(client);
                let mut line = String::new();
                if client.read_line(&mut line).await.is_err() {
                    return;
                }
                let Some(target) = line.split_whitespace().nth(1) else {
                    return;
                };
                let Some(authority) = target
                    .strip_prefix("http://")
                    .and_then(|t| t.split('/').next())
                else {
                    return;
                };
                log.lock().unwrap().push(authority.to_owned());
                let Ok(mut upstream) = tokio::net::TcpStream::connect(authority).await else {
                    return;
                };
                if upstream.write_all(line.as_bytes()).await.is_err()
                    || upstream.write_all(client.buffer()).await.is_err()
                {
                    return;
                }
                let mut client = client.into_inner();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, seen)
}

struct World {
    dms: DmsSimulator,
    oss: Arc<OssSimulator>,
    dir: tempfile::TempDir,
}

async fn world() -> World {
    let oss = Arc::new(OssSimulator::start().await.unwrap());
    oss.put_object(OBJECT, sample_zip(&SampleSpec::demo(5)));
    let dms = DmsSimulator::start().await.unwrap();
    dms.add_access_key(AK_ID, AK_SECRET);
    let presign = Arc::clone(&oss);
    dms.script_ticket(
        9,
        KEY,
        [StatusStep::success(
            UrlSource::generated(move || presign.presign(OBJECT, Duration::from_secs(600))),
            3,
        )],
    );
    World {
        dms,
        oss,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn host(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_sts_and_oss_traffic_goes_through_the_proxy() {
    let w = world().await;
    let sts = StsFake::start(StsOptions {
        access_keys: HashMap::from([(AK_ID.to_owned(), Secret::new(AK_SECRET))]),
        ..StsOptions::default()
    })
    .await
    .unwrap();
    w.dms
        .add_sts_credentials("STS.fake.1", "fake-secret-1", "fake-token-1");
    let (proxy, seen) = forward_proxy().await;
    let mut config = DaemonConfig::new(&w.dms.endpoint(), "v3");
    config
        .set("credentials", "source", "\"ram_role_arn\"")
        .set("credentials", "role_arn", "\"acs:ram::1:role/archiver\"")
        .set(
            "credentials",
            "sts_endpoint",
            &format!("{:?}", sts.endpoint().as_str()),
        )
        .ticket(9, KEY, "via-proxy");
    let path = config.write(w.dir.path());
    let mut cmd = dmstrack();
    cmd.args(["run", "--once", "-c"])
        .arg(&path)
        .env("HTTP_PROXY", format!("http://{proxy}"));
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    let seen = seen.lock().unwrap().clone();
    for (what, authority) in [
        ("DMS API", host(&w.dms.endpoint())),
        ("STS", host(sts.endpoint().as_str())),
        ("OSS", host(&w.oss.base_url())),
    ] {
        assert!(
            seen.contains(&authority),
            "{what} traffic did not use the proxy: {seen:?}"
        );
    }
    assert!(
        w.dir
            .path()
            .join("archive/9")
            .join(KEY)
            .join("manifest.json")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_exempts_hosts() {
    let w = world().await;
    let (proxy, seen) = forward_proxy().await;
    let mut config = DaemonConfig::new(&w.dms.endpoint(), "v3");
    config.ticket(9, KEY, "direct");
    let path = config.write(w.dir.path());
    let mut cmd = dmstrack();
    cmd.args(["run", "--once", "-c"])
        .arg(&path)
        .env("HTTP_PROXY", format!("http://{proxy}"))
        .env("NO_PROXY", "127.0.0.1");
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        seen.lock().unwrap().len(),
        0,
        "NO_PROXY=127.0.0.1 must bypass the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_service_is_reached_directly() {
    let w = world().await;
    let imds = ImdsFake::start(ImdsOptions::default()).await.unwrap();
    w.dms
        .add_sts_credentials("STS.imds.1", "imds-secret-1", "imds-token-1");
    let (proxy, seen) = forward_proxy().await;
    let mut config = DaemonConfig::new(&w.dms.endpoint(), "v3");
    config
        .unset("credentials", "access_key_id")
        .unset("credentials", "access_key_secret_file")
        .set("credentials", "source", "\"ecs_ram_role\"")
        .set(
            "credentials",
            "metadata_endpoint",
            &format!("{:?}", imds.endpoint().as_str()),
        )
        .ticket(9, KEY, "on-ecs");
    let path = config.write(w.dir.path());
    let mut cmd = dmstrack();
    cmd.args(["run", "--once", "-c"])
        .arg(&path)
        .env("HTTP_PROXY", format!("http://{proxy}"));
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.contains(&host(imds.endpoint().as_str())),
        "metadata went through the proxy: {seen:?}"
    );
    assert!(
        seen.contains(&host(&w.dms.endpoint())),
        "the API still uses the proxy: {seen:?}"
    );
    assert!(!imds.requests().is_empty());
}
