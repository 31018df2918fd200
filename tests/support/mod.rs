//! Shared test helpers: configs written to temp dirs, the binary, and log capture.

#![allow(dead_code)]

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
