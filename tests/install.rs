//! The shipped files as an operator installs them: `config/dmstrack.example.toml` as
//! `/etc/dmstrack/config.toml`, started with the environment that the units in `systemd/`
//! give the process (`STATE_DIRECTORY`, `CONFIGURATION_DIRECTORY`, `CREDENTIALS_DIRECTORY`,
//! `DMSTRACK_CONFIG`), laid out under a scratch root. The units' directives are read from the
//! unit files, so a change there is tested here.
//!
//! What no test here can do is start the units under a live systemd (none runs on the CI
//! machines); `scripts/verify-systemd-units.sh` checks them with `systemd-analyze`.

use std::path::{Path, PathBuf};

use dmstrack::config::{Config, ConfigEnv, HttpSettings};
use dmstrack::credentials::CredentialEnv;
use dmstrack::service::daemon::{Daemon, RunOptions};
use dmstrack::service::notify::Notifier;
use tokio_util::sync::CancellationToken;

use crate::support::{dmstrack, run, tree};

const EXAMPLE: &str = include_str!("../config/dmstrack.example.toml");

/// The directives of a unit file that decide where dmstrack reads and writes.
#[derive(Debug)]
struct Unit {
    /// `StateDirectory=`, `%i` expanded.
    state_directory: String,
    /// `ConfigurationDirectory=`.
    configuration_directory: String,
    /// `Environment=DMSTRACK_CONFIG=…`, when set.
    dmstrack_config: Option<String>,
    /// `LoadCredential=ID:PATH`.
    load_credential: (String, String),
    /// `SetCredential=ID:VALUE`, unescaped.
    set_credential: (String, String),
}

impl Unit {
    fn read(file: &str, instance: &str) -> Self {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
            .unwrap()
            .replace("%i", instance);
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{file} has no {key}"))
        };
        let split = |pair: String| {
            let (id, rest) = pair.split_once(':').unwrap();
            (id.to_owned(), rest.to_owned())
        };
        let (id, escaped) = split(value("SetCredential="));
        Unit {
            state_directory: value("StateDirectory="),
            configuration_directory: value("ConfigurationDirectory="),
            dmstrack_config: text
                .lines()
                .find_map(|l| l.strip_prefix("Environment=DMSTRACK_CONFIG="))
                .map(str::to_owned),
            load_credential: split(value("LoadCredential=")),
            set_credential: (id, escaped.replace("\\n", "\n")),
        }
    }
}

/// A scratch root laid out as systemd prepares it before `ExecStart=`: the config installed
/// where the package puts it, the state directory created, and the credentials folder
/// holding what `LoadCredential=` found or, without the key file, the `SetCredential=`
/// fallback.
struct Installed {
    root: tempfile::TempDir,
    env: ConfigEnv,
    /// `CONFIGURATION_DIRECTORY` etc. as the process sees them.
    vars: Vec<(String, PathBuf)>,
    config_path: PathBuf,
}

impl Installed {
    fn new(unit: &Unit, config_name: &str, config_text: &str, key_file: Option<&str>) -> Self {
        let root = tempfile::tempdir().unwrap();
        let at = |absolute: &str| root.path().join(absolute.trim_start_matches('/'));
        let state = at(&format!("/var/lib/{}", unit.state_directory));
        let configuration = at(&format!("/etc/{}", unit.configuration_directory));
        let credentials = at("/run/credentials/dmstrack.service");
        for dir in [&state, &configuration, &credentials] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let config_path = configuration.join(config_name);
        std::fs::write(&config_path, config_text).unwrap();
        let (id, fallback) = &unit.set_credential;
        assert_eq!(id, &unit.load_credential.0, "one credential, one fallback");
        if let Some(secret) = key_file {
            std::fs::write(at(&unit.load_credential.1), secret).unwrap();
        }
        let loaded = key_file.unwrap_or(fallback);
        std::fs::write(credentials.join(id), loaded).unwrap();
        let mut vars = vec![
            ("STATE_DIRECTORY".to_owned(), state.clone()),
            ("CONFIGURATION_DIRECTORY".to_owned(), configuration.clone()),
            ("CREDENTIALS_DIRECTORY".to_owned(), credentials.clone()),
        ];
        if let Some(path) = &unit.dmstrack_config {
            vars.push(("DMSTRACK_CONFIG".to_owned(), at(path)));
        }
        let env = ConfigEnv {
            dmstrack_config: unit.dmstrack_config.as_deref().map(at),
            state_directory: Some(state),
            configuration_directory: Some(configuration),
            credentials_directory: Some(credentials),
        };
        Self {
            root,
            env,
            vars,
            config_path,
        }
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root.path().join(absolute.trim_start_matches('/'))
    }

    /// The binary with the unit's environment and nothing else (no cloud credentials, the
    /// metadata service off so that nothing could leave the machine).
    fn command(&self) -> std::process::Command {
        let mut command = dmstrack();
        command.env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true");
        for (name, value) in &self.vars {
            command.env(name, value);
        }
        command
    }
}

/// The trap of dmstrack 0.1: an example that set `state.dir`/`archive.dir` explicitly put
/// them under /etc/dmstrack, read-only under `ProtectSystem=strict`. As shipped now, the
/// config found through the unit's environment keeps state and archive in
/// `$STATE_DIRECTORY`, and a daemon started on it writes nothing anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_keeps_state_and_archive_in_the_state_directory() {
    for (file, instance, config_name) in [
        ("systemd/dmstrack.service", "", "config.toml"),
        ("systemd/dmstrack@.service", "orders", "orders.toml"),
    ] {
        let unit = Unit::read(file, instance);
        let installed = Installed::new(&unit, config_name, EXAMPLE, None);
        let state = installed.path(&format!("/var/lib/{}", unit.state_directory));
        // The file the daemon picks without -c, as `ExecStart=dmstrack run` does.
        let path = installed.env.config_path(None);
        assert_eq!(path, installed.config_path, "{file}");
        let mut config = Config::load(&path, &installed.env).unwrap();
        assert_eq!(config.state.dir, state, "{file}");
        assert_eq!(config.archive.dir, state.join("archive"), "{file}");
        assert!(config.tickets.is_empty(), "the package ships no ticket");

        // Start it: the shipped listener address is swapped for a free port (the only
        // change), and credentials come from variables so no provider goes looking.
        config.http = Some(HttpSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
        });
        let before = tree(installed.root.path());
        let credentials = CredentialEnv::from_vars(
            [
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIinstalltest"),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "install-test-secret"),
                ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
            None,
        );
        let daemon = Daemon::start(
            config,
            installed.env.clone(),
            credentials,
            RunOptions { once: true },
            Notifier::disabled(),
        )
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        let (_reload, reloads) = tokio::sync::mpsc::channel(1);
        let outcome = daemon.run(CancellationToken::new(), reloads).await;
        assert_eq!((outcome.archived, outcome.failed), (0, 0));
        assert!(state.join("state.db").is_file(), "{file}");
        assert!(state.join("archive").is_dir(), "{file}");
        let written: Vec<String> = tree(installed.root.path())
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        let state_prefix = format!("var/lib/{}", unit.state_directory);
        let elsewhere: Vec<&String> = written
            .iter()
            .filter(|p| !p.starts_with(&state_prefix))
            .collect();
        assert!(
            elsewhere.is_empty(),
            "{file}: written outside the state directory: {elsewhere:?}"
        );
    }
}

/// A host with a RAM role has no key file: systemd falls back to `SetCredential=`, and the
/// shipped config (default chain) passes `check` (the `ExecReload=` step). A static config whose key file is missing
/// reads the fallback as an empty secret and says so, with exit 78 from `run` (no restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_hosts_start_and_a_missing_key_file_is_named() {
    let unit = Unit::read("systemd/dmstrack.service", "");
    let keyless = Installed::new(&unit, "config.toml", EXAMPLE, None);
    let mut cmd = keyless.command();
    // Stand-ins for the instance's RAM role, which the default chain would get from the
    // metadata service (never reached from a test): the environment, the chain's first source.
    cmd.env("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIinstalltest")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "install-test-secret")
        .arg("check");
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("credentials: "), "{stdout}");

    let static_config = "[credentials]\nsource = \"static\"\naccess_key_id = \"LTAIinstalltest\"\n\
                         access_key_secret_file = \"$CREDENTIALS_DIRECTORY/ak_secret\"\n";
    let missing_key = Installed::new(&unit, "config.toml", static_config, None);
    let mut cmd = missing_key.command();
    cmd.arg("check");
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the AccessKey secret file is empty"),
        "{stderr}"
    );
    let mut cmd = missing_key.command();
    cmd.args(["run", "--once"]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 78, "{stderr}");

    let with_key = Installed::new(&unit, "config.toml", static_config, Some("a-secret\n"));
    let mut cmd = with_key.command();
    cmd.arg("check");
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("a-secret"));
}

/// `status` says which state folder it read: under the unit's environment the service's
/// own; by hand without `STATE_DIRECTORY`, a folder beside the config that does not exist,
/// with a warning that tells how to read the service's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_state_folder_it_read() {
    let unit = Unit::read("systemd/dmstrack.service", "");
    let installed = Installed::new(&unit, "config.toml", EXAMPLE, None);
    let state = installed.path("/var/lib/dmstrack");
    let mut cmd = installed.command();
    cmd.args(["status", "--json"]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "[]");
    assert!(
        stderr.contains(&format!("state folder: {}", state.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");

    // As root on the host, by hand: only -c, no systemd variables.
    let mut cmd = dmstrack();
    cmd.args(["status", "-c"]).arg(&installed.config_path);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    let beside = installed.path("/etc/dmstrack/state");
    assert!(
        stderr.contains(&format!("state folder: {}", beside.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("does not exist") && stderr.contains("STATE_DIRECTORY=/var/lib/dmstrack"),
        "{stderr}"
    );
    assert!(!beside.exists(), "status creates nothing");
    assert!(stdout.contains("(no tickets)"), "{stdout}");
}

/// `DMSTRACK_LOG_FORMAT` and `DMSTRACK_LOG_LEVEL` stand in for the flags (as
/// `/etc/default/dmstrack` sets them for the units); the flags still win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_settings_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let mut cmd = dmstrack();
    cmd.env("DMSTRACK_LOG_LEVEL", "dmstrack=[")
        .args(["check", "-c"])
        .arg(&config);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid log level"), "{stderr}");
    let mut cmd = dmstrack();
    cmd.env("DMSTRACK_LOG_LEVEL", "dmstrack=[")
        .args(["--log-level", "info", "check", "-c"])
        .arg(&config);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 0, "the flag wins: {stderr}");

    let mut cmd = dmstrack();
    cmd.env("DMSTRACK_LOG_FORMAT", "yaml")
        .args(["check", "-c"])
        .arg(&config);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("auto, text, json"), "{stderr}");
}

/// `dmstrack completions` prints each shell's script with every command, flag and value
/// (checked by its shape: the shells themselves may not be installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_cover_every_command() {
    for (shell, marker) in [
        ("bash", "complete -F _dmstrack"),
        ("zsh", "#compdef dmstrack"),
        ("fish", "complete -c dmstrack"),
    ] {
        let mut cmd = dmstrack();
        cmd.args(["completions", shell]);
        let (code, stdout, stderr) = run(cmd).await;
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(stdout.contains(marker), "{shell}: {stdout}");
        for command in [
            "run",
            "check",
            "status",
            "export",
            "rollback-sql-type",
            "REVERSE",
        ] {
            assert!(stdout.contains(command), "{shell} lacks {command}");
        }
    }
}
