//! Shared test helpers: configs written to temp dirs, the binary, and log capture.

#![allow(dead_code)]

pub(crate) mod moto;
pub(crate) mod world;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dmstrack::config::{Config, ConfigEnv};
use dmstrack::credentials::{CredentialEnv, CredentialProvider};

/// The test AccessKey the simulators accept.
pub(crate) const AK_ID: &str = "LTAItestkey";
/// Its secret: a distinctive string that must never appear in any output.
pub(crate) const AK_SECRET: &str = "s3cr3t-Vy8xQ2-never-print";

/// Writes `body` as `config.toml` in `dir` and returns its path.
pub(crate) fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// A `[dms]` + static `[credentials]` preamble pointing at `endpoint`, with the secret in a
/// file next to the config.
pub(crate) fn preamble(dir: &Path, endpoint: &str, signature: &str, secret: &str) -> String {
    let secret_file = dir.join("ak_secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    format!(
        "[dms]\nendpoint = \"{endpoint}\"\nsignature = \"{signature}\"\nmax_attempts = 3\n\n\
         [credentials]\nsource = \"static\"\naccess_key_id = \"{AK_ID}\"\naccess_key_secret_file = \"{}\"\n\n",
        secret_file.display()
    )
}

/// Parses a config text as if it were `dir/config.toml`.
pub(crate) fn config(dir: &Path, body: &str) -> Config {
    let path = write_config(dir, body);
    Config::load(&path, &ConfigEnv::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The credential provider of a config, without the process environment.
pub(crate) fn credentials(config: &Config) -> CredentialProvider {
    CredentialProvider::new(&config.credentials, CredentialEnv::from_vars([], None)).unwrap()
}

/// The `dmstrack` binary with a clean environment (no proxies, no cloud credentials).
pub(crate) fn dmstrack() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dmstrack"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

/// Runs a command off the async runtime and returns (exit code, stdout, stderr).
pub(crate) async fn run(mut command: std::process::Command) -> (i32, String, String) {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A buffer that collects every log line written on this thread while its guard lives.
///
/// One global subscriber (installed once per test binary) writes each event into the capture
/// of the thread that emitted it. Per-thread `set_default` subscribers are not enough here:
/// tests run in parallel, and tracing caches a callsite's interest across threads, so lines
/// from shared code could be dropped.
#[derive(Clone, Default)]
pub(crate) struct LogCapture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CURRENT_CAPTURE: std::cell::RefCell<Option<LogCapture>> = const { std::cell::RefCell::new(None) };
}

/// Removes the thread's capture when dropped.
pub(crate) struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT_CAPTURE.with(|c| *c.borrow_mut() = None);
    }
}

/// Writes into the current thread's capture, if any.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CURRENT_CAPTURE.with(|c| {
            if let Some(capture) = c.borrow().as_ref() {
                capture.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Starts capturing this thread's log lines (TRACE level, JSON, dmstrack's own targets).
    pub(crate) fn install(&self) -> CaptureGuard {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "dmstrack=trace,integration=trace",
                ))
                .with_writer(|| ThreadWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber");
        });
        CURRENT_CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
        CaptureGuard
    }

    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Asserts that none of `secrets` occurs in `text`.
pub(crate) fn assert_no_secrets(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !text.contains(secret),
            "a secret ({secret:?}) leaked into:\n{text}"
        );
    }
}

// ---- daemon configs, archives and trees (pipeline and process tests) ----

/// A daemon config built section by section, so a test overrides single keys. Defaults suit
/// tests: static credentials from a secret file beside the config, fast polls, a generous
/// rate limit, short download timeouts, `archive` and `state` beside the config.
#[derive(Debug, Clone)]
pub(crate) struct DaemonConfig {
    sections: Vec<(&'static str, Vec<(String, String)>)>,
    tickets: String,
    secret: String,
}

impl DaemonConfig {
    /// Defaults pointing at `endpoint` with `signature` (`"v3"` or `"v1"`).
    pub(crate) fn new(endpoint: &str, signature: &str) -> Self {
        let mut config = Self {
            sections: Vec::new(),
            tickets: String::new(),
            secret: AK_SECRET.to_owned(),
        };
        config
            .set("dms", "endpoint", &format!("{endpoint:?}"))
            .set("dms", "signature", &format!("{signature:?}"))
            .set("dms", "max_attempts", "3")
            .set("dms", "max_requests_per_second", "1000.0")
            .set("dms", "request_timeout", "\"10s\"")
            .set("credentials", "source", "\"static\"")
            .set("credentials", "access_key_id", &format!("{AK_ID:?}"))
            .set("credentials", "access_key_secret_file", "\"ak_secret\"")
            .set("poll", "initial_interval", "\"1s\"")
            .set("poll", "max_interval", "\"2s\"")
            .set("download", "read_timeout", "\"5s\"")
            .set("download", "connect_timeout", "\"2s\"")
            .set("download", "max_attempts", "5")
            .set("archive", "dir", "\"archive\"")
            .set("state", "dir", "\"state\"");
        config
    }

    /// Sets `[section] key = value` (`value` is TOML text), replacing an earlier value.
    pub(crate) fn set(&mut self, section: &'static str, key: &str, value: &str) -> &mut Self {
        let index = match self.sections.iter().position(|(s, _)| *s == section) {
            Some(index) => index,
            None => {
                self.sections.push((section, Vec::new()));
                self.sections.len() - 1
            }
        };
        let keys = &mut self.sections[index].1;
        keys.retain(|(k, _)| k != key);
        keys.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Removes `[section] key`.
    pub(crate) fn unset(&mut self, section: &'static str, key: &str) -> &mut Self {
        for (s, keys) in &mut self.sections {
            if *s == section {
                keys.retain(|(k, _)| k != key);
            }
        }
        self
    }

    /// The secret written to the secret file (the simulator decides whether it is right).
    pub(crate) fn secret(&mut self, secret: &str) -> &mut Self {
        self.secret = secret.to_owned();
        self
    }

    /// Watches an existing export.
    pub(crate) fn ticket(&mut self, order_id: i64, key: &str, label: &str) -> &mut Self {
        self.tickets.push_str(&format!(
            "\n[[tickets]]\norder_id = {order_id}\ndownload_key_id = {key:?}\nlabel = {label:?}\ntid = 3\n"
        ));
        self
    }

    /// Drops every ticket.
    pub(crate) fn clear_tickets(&mut self) -> &mut Self {
        self.tickets.clear();
        self
    }

    /// Adds a `[[tickets]]` table given as TOML text (without the header).
    pub(crate) fn raw_ticket(&mut self, body: &str) -> &mut Self {
        self.tickets.push_str("\n[[tickets]]\n");
        self.tickets.push_str(body);
        self.tickets.push('\n');
        self
    }

    /// The config text.
    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        for (section, keys) in &self.sections {
            text.push_str(&format!("[{section}]\n"));
            for (key, value) in keys {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text.push('\n');
        }
        text.push_str(&self.tickets);
        text
    }

    /// Writes the secret file and `config.toml` into `dir`; returns the config's path.
    pub(crate) fn write(&self, dir: &Path) -> PathBuf {
        std::fs::write(dir.join("ak_secret"), format!("{}\n", self.secret)).unwrap();
        write_config(dir, &self.text())
    }

    /// Writes the files and loads the config as the daemon would.
    pub(crate) fn load(&self, dir: &Path) -> Config {
        let path = self.write(dir);
        Config::load(&path, &ConfigEnv::default()).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Every path under `dir`, relative, `/`-separated, folders ending in `/`, sorted.
pub(crate) fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{relative}/"));
                walk(root, &path, out);
            } else {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// One entry of a zip as the archive must hold it: name (UTF-8 bytes as stored) and content,
/// `None` for a folder.
pub(crate) fn zip_entries(zip: &[u8]) -> Vec<(String, Option<Vec<u8>>)> {
    use std::io::Read as _;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let name = String::from_utf8(entry.name_raw().to_vec()).expect("UTF-8 names");
            if entry.is_dir() {
                (name, None)
            } else {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (name, Some(data))
            }
        })
        .collect()
}

/// Asserts that `final_dir/files` holds exactly the zip's entries, byte for byte (folders,
/// also empty ones, included), and that the manifest's `files` lists each file with its size
/// and SHA-256, sorted by path.
pub(crate) fn assert_files_match_zip(final_dir: &Path, zip: &[u8]) {
    let files_dir = final_dir.join("files");
    let mut expected_tree = std::collections::BTreeSet::new();
    let mut expected_files = Vec::new();
    for (name, data) in zip_entries(zip) {
        let trimmed = name.trim_end_matches('/');
        // Parent folders exist whether or not the zip lists them.
        let parts: Vec<&str> = trimmed.split('/').collect();
        for depth in 1..parts.len() {
            expected_tree.insert(format!("{}/", parts[..depth].join("/")));
        }
        match data {
            None => {
                expected_tree.insert(format!("{trimmed}/"));
            }
            Some(data) => {
                let on_disk = std::fs::read(files_dir.join(trimmed))
                    .unwrap_or_else(|e| panic!("{trimmed}: {e}"));
                assert!(on_disk == data, "{trimmed} differs from the zip's entry");
                expected_tree.insert(trimmed.to_owned());
                expected_files.push(serde_json::json!({
                    "path": trimmed,
                    "bytes": data.len(),
                    "sha256": dmstrack::net::signer::sha256_hex(&data),
                }));
            }
        }
    }
    assert_eq!(
        tree(&files_dir),
        expected_tree.into_iter().collect::<Vec<_>>(),
        "files/ holds exactly the zip's entries"
    );
    expected_files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    let manifest = read_json(&final_dir.join("manifest.json"));
    assert_eq!(manifest["files"], serde_json::Value::Array(expected_files));
}

/// Reads a JSON file.
pub(crate) fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// CRC-64/XZ (what OSS calls crc64ecma) computed independently of the code under test.
pub(crate) fn crc64ecma(data: &[u8]) -> u64 {
    crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(data)
}

/// The committed state record of an existing-export ticket, as JSON (`None` while there is
/// none), read the way `dmstrack status` reads it.
pub(crate) fn state_record(
    state_dir: &Path,
    order_id: i64,
    key: &str,
) -> Option<serde_json::Value> {
    let id = format!("{order_id}-{key}");
    state_records(state_dir)
        .into_iter()
        .find(|r| r["id"] == id.as_str())
}

/// Every committed state record, as JSON.
pub(crate) fn state_records(state_dir: &Path) -> Vec<serde_json::Value> {
    let (records, errors) = dmstrack::watch::state::read_all(state_dir);
    assert!(errors.is_empty(), "{errors:?}");
    records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

/// Replaces a committed state record (the daemon must not be running).
pub(crate) fn write_state_record(state_dir: &Path, record: &serde_json::Value) {
    let record: dmstrack::watch::state::TicketRecord =
        serde_json::from_value(record.clone()).unwrap();
    let mut store = dmstrack::watch::state::StateStore::open(state_dir).unwrap();
    store.commit([&record], []).unwrap();
}

/// Stands in for systemd's notification socket: a unix datagram socket in a temporary folder
/// (pass [`NotifySocket::path`] to `Notifier::to_socket` or as `NOTIFY_SOCKET`).
pub(crate) struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: tokio::net::UnixDatagram,
}

/// One notification and when it arrived (tokio time: virtual under paused time).
#[derive(Debug, Clone)]
pub(crate) struct Notification {
    pub(crate) text: String,
    pub(crate) at: tokio::time::Instant,
}

impl NotifySocket {
    /// Binds the socket; call inside a tokio runtime.
    pub(crate) fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
        Self {
            _dir: dir,
            path,
            socket,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram, or `None` when none arrives within `within`.
    pub(crate) async fn next(&self, within: std::time::Duration) -> Option<Notification> {
        let mut buf = vec![0u8; 4096];
        let len = tokio::time::timeout(within, self.socket.recv(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(Notification {
            text: String::from_utf8(buf[..len].to_vec()).unwrap(),
            at: tokio::time::Instant::now(),
        })
    }

    /// Receives everything that arrives within `within`. Tests that let time pass must keep
    /// reading: a full socket queue (10 datagrams by default) makes the sender block.
    pub(crate) async fn drain_for(&self, within: std::time::Duration) -> Vec<Notification> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return seen;
            }
            if let Some(message) = self.next(left).await {
                seen.push(message);
            }
        }
    }

    /// Receives until a datagram matches `wanted`; returns every datagram received, the match
    /// last. Panics, listing what did arrive, when none matches within `within`.
    pub(crate) async fn until(
        &self,
        within: std::time::Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<Notification> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(message) => {
                    let done = wanted(&message.text);
                    seen.push(message);
                    if done {
                        return seen;
                    }
                }
                None => panic!(
                    "no matching notification within {within:?}; received: {:?}",
                    seen.iter().map(|m| &m.text).collect::<Vec<_>>()
                ),
            }
        }
    }
}

/// A TCP proxy on 127.0.0.1 that holds every new connection for `delay` before connecting it
/// to `target`: a DMS that is slow to answer and, unlike an injected `Delay`, has not even
/// seen (logged) the request meanwhile. Serves on the current runtime until it ends.
pub(crate) async fn delayed_proxy(
    target: std::net::SocketAddr,
    delay: std::time::Duration,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// A port on 127.0.0.1 that nothing listens on (bound once, then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `dmstrack` process started by a test, its stderr collected line by line. Killed when
/// dropped if it is still running.
pub(crate) struct Spawned {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    /// Starts `command` with stderr captured (stdin and stdout are discarded).
    pub(crate) fn start(mut command: std::process::Command) -> Self {
        use std::io::BufRead;
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// Every stderr line so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (real time) until a stderr line matches; panics with the log on timeout.
    pub(crate) async fn wait_for_line(
        &self,
        within: std::time::Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| wanted(l)) {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no matching log line within {within:?}:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` to the process.
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal)
            .unwrap();
    }

    /// Waits (real time) for the exit and returns its code; panics with the log on timeout.
    pub(crate) async fn wait(&mut self, within: std::time::Duration) -> i32 {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return status.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running after {within:?}:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One sample of a parsed exposition.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct PromSample {
    pub(crate) name: String,
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    /// As Python printed it (`repr`), so `inf` and `nan` survive JSON.
    value: String,
}

impl PromSample {
    pub(crate) fn value(&self) -> f64 {
        self.value.parse().unwrap()
    }
}

/// One metric family of a parsed exposition.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct PromFamily {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) samples: Vec<PromSample>,
}

const PROMETHEUS_PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": family.name,
        "type": family.type,
        "samples": [{"name": s.name, "labels": s.labels, "value": repr(float(s.value))} for s in family.samples],
    })
json.dump(families, sys.stdout)
"#;

/// Parses a Prometheus text exposition with the reference Python parser
/// (`prometheus_client`), installing that package with pip first if it is missing. A parse
/// error fails the test with the parser's message.
pub(crate) fn parse_prometheus(text: &str) -> Vec<PromFamily> {
    use std::io::Write;
    static INSTALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        let importable = || {
            std::process::Command::new("python3")
                .args(["-c", "import prometheus_client.parser"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !*installed && !importable() {
            let pip = std::process::Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "prometheus-client"])
                .output()
                .expect("python3 is needed to parse /metrics");
            assert!(
                importable(),
                "cannot install prometheus-client: {}",
                String::from_utf8_lossy(&pip.stderr)
            );
        }
        *installed = true;
    }
    let mut child = std::process::Command::new("python3")
        .args(["-c", PROMETHEUS_PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
