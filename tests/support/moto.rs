//! A real S3 server for tests: moto's standalone server (S3, IAM and STS) with authentication
//! on, so a wrong signature is refused the way AWS refuses it.
//!
//! `scripts/moto-venv.sh` installs the pinned moto into `target/moto-venv` on first use (one
//! install even when tests run in parallel or in several processes). The server is started
//! with `INITIAL_NO_AUTH_ACTION_COUNT=3`: exactly the three IAM calls that create an admin user,
//! its allow-all policy and its access key go through unsigned; every request after them must
//! carry a valid SigV4 signature. Set-up steps (buckets, roles) run in small boto3 scripts with
//! that admin key, so the code under test is never used to prepare its own test.
//!
//! One server is shared by the test binary ([`moto_s3`], [`MotoServer::shared`]) and each test
//! gets its own bucket. A test that needs other server settings starts its own
//! ([`MotoServer::start`]), which is killed when the handle drops. Either way the server also
//! exits when the test process ends (it watches its stdin pipe), so a killed test run leaves
//! no server behind.
//!
//! Moto 5.2.5 as observed by `tests/s3_moto.rs`: wrong secret → 403 `SignatureDoesNotMatch`;
//! unknown key → 403 `InvalidAccessKeyId`; temporary key without its token → 403
//! `InvalidAccessKeyId`, altered token → 400 `InvalidToken`; `Content-MD5` is NOT checked (a
//! wrong one gets 200, unlike AWS's 400 `BadDigest`); a non-last part smaller than the minimum
//! gets 400 `EntityTooSmall` at Complete; ETags are `"<md5 hex>"` and `"<hex>-<parts>"`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The region every test uses (moto accepts any).
pub(crate) const MOTO_REGION: &str = "us-east-1";

/// The smallest non-last multipart part the shared server accepts (`S3_UPLOAD_PART_MIN_SIZE`):
/// 5 KiB instead of S3's 5 MiB, so multipart tests stay small and fast.
pub(crate) const SHARED_MIN_PART_SIZE: u64 = 5 * 1024;

/// S3's own minimum part size, for a server started with [`MotoServer::start`]`(None)`.
pub(crate) const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// An access key moto issued (long-term), or temporary credentials from STS.
#[derive(Clone, Debug)]
pub(crate) struct MotoKey {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    /// Set for `AssumeRole` credentials.
    pub(crate) session_token: Option<String>,
}

/// What a test needs to talk to its bucket.
#[derive(Clone, Debug)]
pub(crate) struct MotoS3 {
    /// `http://127.0.0.1:<port>` (path style).
    pub(crate) endpoint: String,
    /// A bucket of this test's own, empty at first.
    pub(crate) bucket: String,
    /// An access key allowed everything.
    pub(crate) access_key_id: String,
    /// Its secret.
    pub(crate) secret_access_key: String,
    /// [`MOTO_REGION`].
    pub(crate) region: String,
}

/// A running moto server. Dropping it kills the server.
#[derive(Debug)]
pub(crate) struct MotoServer {
    child: Child,
    endpoint: String,
    admin: MotoKey,
    log: PathBuf,
}

/// The shared server plus a fresh bucket named after `test` (any text; it is sanitised).
/// Runs the blocking set-up off the async runtime.
pub(crate) async fn moto_s3(test: &str) -> MotoS3 {
    let test = test.to_owned();
    tokio::task::spawn_blocking(move || MotoServer::shared().new_bucket(&test))
        .await
        .unwrap()
}

impl MotoServer {
    /// The server shared by every test of this binary, started on first use, with
    /// [`SHARED_MIN_PART_SIZE`]. Blocking.
    pub(crate) fn shared() -> &'static MotoServer {
        static SHARED: OnceLock<MotoServer> = OnceLock::new();
        SHARED.get_or_init(|| MotoServer::start(Some(SHARED_MIN_PART_SIZE)))
    }

    /// Starts a server of its own: `min_part_size` sets `S3_UPLOAD_PART_MIN_SIZE` (`None`:
    /// moto's default, S3's 5 MiB). Blocking; panics with the reason when it cannot.
    pub(crate) fn start(min_part_size: Option<u64>) -> MotoServer {
        let python = moto_python();
        let mut last_error = String::new();
        // The port is free when chosen but another process may take it before moto binds it.
        for _ in 0..3 {
            match Self::try_start(&python, min_part_size) {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("moto server did not start: {last_error}");
    }

    fn try_start(python: &Path, min_part_size: Option<u64>) -> Result<MotoServer, String> {
        let port = free_port();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(python);
        command
            .args(["-c", SERVE, "-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file);
        for proxy in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
        ] {
            command.env_remove(proxy);
        }
        if let Some(size) = min_part_size {
            command.env("S3_UPLOAD_PART_MIN_SIZE", size.to_string());
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut server = MotoServer {
            child,
            endpoint,
            admin: MotoKey {
                access_key_id: String::new(),
                secret_access_key: String::new(),
                session_token: None,
            },
            log,
        };
        server.wait_ready(port)?;
        let admin = server.run_setup(&serde_json::json!({"command": "admin"}))?;
        server.admin = MotoKey {
            access_key_id: admin["access_key_id"].as_str().unwrap().to_owned(),
            secret_access_key: admin["secret_access_key"].as_str().unwrap().to_owned(),
            session_token: None,
        };
        Ok(server)
    }

    /// Polls `/moto-api/data.json` (not an AWS action: it does not use up the unsigned
    /// allowance) until the server answers 200.
    fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "moto exited with {status} before answering; log {}:\n{}",
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            if http_get_status(port, "/moto-api/data.json") == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "moto did not answer within 60 s; log {}",
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn run_setup(&self, args: &serde_json::Value) -> Result<serde_json::Value, String> {
        let mut args = args.clone();
        args["endpoint"] = self.endpoint.clone().into();
        args["region"] = MOTO_REGION.into();
        args["admin"] = serde_json::json!({
            "access_key_id": self.admin.access_key_id,
            "secret_access_key": self.admin.secret_access_key,
        });
        let output = Command::new(moto_python())
            .args(["-c", SETUP, &args.to_string()])
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("AWS_PROFILE")
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!(
                "moto set-up {} failed: {}",
                args["command"],
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| format!("set-up output: {e}"))
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The admin key (allowed everything).
    pub(crate) fn admin_key(&self) -> &MotoKey {
        &self.admin
    }

    /// The server's log (werkzeug's request lines and moto's errors), for failure messages.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// Creates a bucket for `test` (a unique name derived from it) and hands out the admin
    /// key with it. Blocking.
    pub(crate) fn new_bucket(&self, test: &str) -> MotoS3 {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let mut stem: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        stem.truncate(40);
        let bucket = format!(
            "t{}-{}",
            NEXT.fetch_add(1, Ordering::Relaxed),
            stem.trim_matches('-')
        );
        self.run_setup(&serde_json::json!({"command": "bucket", "bucket": bucket}))
            .unwrap_or_else(|e| panic!("{e}"));
        MotoS3 {
            endpoint: self.endpoint.clone(),
            bucket,
            access_key_id: self.admin.access_key_id.clone(),
            secret_access_key: self.admin.secret_access_key.clone(),
            region: MOTO_REGION.to_owned(),
        }
    }

    /// Temporary credentials from STS `AssumeRole` on a role allowed everything. Blocking.
    pub(crate) fn assume_role(&self) -> MotoKey {
        let creds = self
            .run_setup(&serde_json::json!({"command": "assume_role"}))
            .unwrap_or_else(|e| panic!("{e}"));
        MotoKey {
            access_key_id: creds["access_key_id"].as_str().unwrap().to_owned(),
            secret_access_key: creds["secret_access_key"].as_str().unwrap().to_owned(),
            session_token: Some(creds["session_token"].as_str().unwrap().to_owned()),
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv's python, installing the venv on first use (once per process; `moto-venv.sh`
/// locks across processes). Panics with pip's reason when PyPI cannot be reached: S3 tests
/// must fail loudly rather than pass without a server.
fn moto_python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PYTHON.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/moto-venv.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} failed (S3 tests need moto from PyPI):\n{}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        ))
    });
    result.clone().unwrap_or_else(|e| panic!("{e}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of a plain HTTP/1.0 GET, or None when nothing answers yet.
fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Runs moto's server and exits as soon as stdin reaches EOF, i.e. when the test process
/// that holds the pipe ends, however it ends.
const SERVE: &str = r#"
import os, sys, threading
def watch_parent():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=watch_parent, daemon=True).start()
from moto.server import main
main(sys.argv[1:])
"#;

/// Set-up steps with boto3; argv[1] is JSON {command, endpoint, region, admin, ...}; prints JSON.
/// `admin` must be the first call on a new server: its three IAM calls are the unsigned
/// allowance, and it checks that authentication is on afterwards.
const SETUP: &str = r#"
import json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

args = json.loads(sys.argv[1])
config = Config(retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"})
ALLOW_ALL = json.dumps({"Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})

def client(service, key):
    return boto3.client(service, endpoint_url=args["endpoint"], region_name=args["region"],
                        aws_access_key_id=key["access_key_id"],
                        aws_secret_access_key=key["secret_access_key"],
                        aws_session_token=key.get("session_token"), config=config)

command = args["command"]
if command == "admin":
    anyone = {"access_key_id": "AKIAUNSIGNEDSETUP000", "secret_access_key": "unused"}
    iam = client("iam", anyone)
    iam.create_user(UserName="dmstrack-admin")
    iam.put_user_policy(UserName="dmstrack-admin", PolicyName="allow-all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName="dmstrack-admin")["AccessKey"]
    try:
        client("s3", anyone).list_buckets()
        sys.exit("moto still accepts unsigned requests after set-up")
    except ClientError as error:
        if error.response["Error"]["Code"] != "InvalidAccessKeyId":
            raise
    out = {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
elif command == "bucket":
    client("s3", args["admin"]).create_bucket(Bucket=args["bucket"])
    out = {"bucket": args["bucket"]}
elif command == "assume_role":
    iam = client("iam", args["admin"])
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
    try:
        arn = iam.create_role(RoleName="dmstrack-upload", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    except ClientError as error:  # another test made it first
        if error.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        arn = iam.get_role(RoleName="dmstrack-upload")["Role"]["Arn"]
    iam.put_role_policy(RoleName="dmstrack-upload", PolicyName="allow-all", PolicyDocument=ALLOW_ALL)
    creds = client("sts", args["admin"]).assume_role(RoleArn=arn, RoleSessionName="dmstrack-test")["Credentials"]
    out = {"access_key_id": creds["AccessKeyId"], "secret_access_key": creds["SecretAccessKey"],
           "session_token": creds["SessionToken"]}
else:
    sys.exit("unknown command " + command)
print(json.dumps(out))
"#;
