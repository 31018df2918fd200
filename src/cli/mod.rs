//! The command line: argument definitions, dispatch, and the mapping of outcomes to the exit
//! codes of docs/reference/commands.md. Each command lives in its own file; `main.rs` only
//! calls [`main`]. Shell completions and the man pages are generated from these definitions
//! ([`docs`]), so a new command or flag reaches them without further work.

mod add;
mod check;
#[cfg(feature = "sim")]
pub mod demo;
mod docs;
mod export;
mod query;
mod requests;
mod run;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigEnv, RollbackSqlType};
use crate::service::logging::LogFormat;

/// Exit codes (docs/reference/commands.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; also a daemon stopped by SIGTERM/SIGINT with its state saved.
    Success = 0,
    /// `run --once`: a ticket failed. `check`: a ticket or credential problem was found.
    Failure = 1,
    /// Command-line usage error.
    Usage = 2,
    /// The API or the network could not be reached.
    TempFail = 75,
    /// The config or the credentials are invalid: restarting will not help.
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

impl Exit {
    /// The exit for a numeric code computed elsewhere (e.g. [`crate::dms::DmsError::exit_code`]).
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Success,
            2 => Self::Usage,
            75 => Self::TempFail,
            78 => Self::Config,
            _ => Self::Failure,
        }
    }
}

/// The root command's closing text in `--help` and the man page.
const ROOT_AFTER_HELP: &str = "\
Examples:
  dmstrack demo                      # try it: built-in simulators, no cloud account
  dmstrack check -c /etc/dmstrack/config.toml
  dmstrack status

Exit codes:
  0   success (also a daemon stopped by SIGTERM/SIGINT with its state saved)
  1   run --once: a ticket ended failed; check: a ticket or credential problem
  2   command-line usage error
  75  temporary: the API or the network could not be reached, or another daemon holds the state
  78  the config or the credentials are invalid: restarting will not help

Environment:
  DMSTRACK_CONFIG       config file when -c is not given
  DMSTRACK_LOG_FORMAT   auto, text or json when --log-format is not given
  DMSTRACK_LOG_LEVEL    log level or filter when --log-level is not given (then RUST_LOG, then info)
  STATE_DIRECTORY       default state folder ($STATE_DIRECTORY/archive for the archive); systemd sets it
  CREDENTIALS_DIRECTORY systemd's credential folder, for access_key_secret_file = \"$CREDENTIALS_DIRECTORY/ak_secret\"
  ALIBABA_CLOUD_*       the Alibaba Cloud SDKs' credential variables, with their precedence
  HTTPS_PROXY, HTTP_PROXY, NO_PROXY   proxies for the API, STS and OSS traffic

Documentation: /usr/share/doc/dmstrack/ (installed) or docs/ in the source tree.";

#[derive(Debug, Parser)]
#[command(
    name = "dmstrack",
    version,
    about = "Archives Alibaba Cloud DMS data-tracking exports unattended",
    long_about = "Archives Alibaba Cloud DMS data-tracking exports unattended: polls each ticket's \
                  export, downloads the zip when DMS has it ready, verifies it, extracts it and \
                  publishes it atomically with a manifest, once per ticket.",
    after_help = ROOT_AFTER_HELP
)]
struct Cli {
    /// Config file [default: $DMSTRACK_CONFIG, else $CONFIGURATION_DIRECTORY/config.toml, else /etc/dmstrack/config.toml]
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Log format: text on a terminal or the journal and JSON lines otherwise (auto), or forced.
    #[arg(
        long,
        value_enum,
        default_value_t = LogFormat::Auto,
        env = "DMSTRACK_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
    /// Log level or filter (e.g. "debug", "dmstrack=debug") [default: $RUST_LOG, else info]
    #[arg(long, value_name = "LEVEL", env = "DMSTRACK_LOG_LEVEL", global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// `--rollback-sql-type`: which SQL DMS prepares. Case-insensitive on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RollbackSqlTypeArg {
    /// Rollback (UNDO) SQL: statements that undo what ran.
    #[value(name = "REVERSE")]
    Reverse,
    /// Rebuild (REDO) SQL: statements that replay what ran.
    #[value(name = "FORWARD")]
    Forward,
}

impl From<RollbackSqlTypeArg> for RollbackSqlType {
    fn from(arg: RollbackSqlTypeArg) -> Self {
        match arg {
            RollbackSqlTypeArg::Reverse => Self::Reverse,
            RollbackSqlTypeArg::Forward => Self::Forward,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: watch every ticket until archived or failed.
    #[command(after_help = "\
Examples:
  dmstrack run                       # the daemon (systemd: dmstrack.service)
  dmstrack run --once -c job.toml    # archive what is ready, exit when every ticket is done")]
    Run {
        /// Exit when every ticket is terminal: 0 if all were archived, 1 if any failed.
        #[arg(long)]
        once: bool,
    },
    /// Validate the config; with --online also resolve credentials and query each ticket once.
    #[command(after_help = "\
Examples:
  dmstrack check -c /etc/dmstrack/config.toml
  dmstrack check --online            # also: which credentials answer, and each ticket's status")]
    Check {
        /// Resolve credentials and query each ticket once.
        #[arg(long)]
        online: bool,
    },
    /// Show each ticket's state from the state directory (no network).
    #[command(after_help = "\
Examples:
  dmstrack status
  dmstrack status --json | jq '.[] | select(.state == \"failed\")'
  sudo STATE_DIRECTORY=/var/lib/dmstrack dmstrack status   # the systemd service's state

The state folder read is named on stderr; a warning says when it does not exist.")]
    Status {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One signed QueryDataTrackResultDownloadStatus; prints the response JSON.
    #[command(after_help = "\
Example:
  dmstrack query --order-id 11223344 --download-key-id e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd --tid 3")]
    Query {
        /// The data-tracking ticket id.
        #[arg(long)]
        order_id: i64,
        /// The export's DownloadKeyId.
        #[arg(long)]
        download_key_id: String,
        /// Tenant id [default: dms.tid from the config].
        #[arg(long)]
        tid: Option<i64>,
    },
    /// One DownloadDataTrackResult; prints the new DownloadKeyId.
    #[command(after_help = "\
Examples:
  dmstrack export --order-id 11223345 --rollback-sql-type reverse \\
      --filter-start-time '2026-11-27 00:00:00' --filter-end-time '2026-11-27 23:59:59' \\
      --filter-table orders --filter-type UPDATE,DELETE
  dmstrack export --order-id 11223345 --rollback-sql-type FORWARD \\
      --column-filter '{ column_name = \"id\", operator = \"IN\", in_list = [\"1\", \"2\"] }'")]
    Export(Box<export::ExportArgs>),
    /// Add a ticket as a file of the tickets folder; a running daemon picks it up within 5 s.
    #[command(after_help = "\
Examples:
  dmstrack add --order-id 11223344 --download-key-id e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd --label orders
  dmstrack add --order-id 11223345 --rollback-sql-type reverse \\
      --filter-start-time '2026-11-27 00:00:00' --filter-end-time '2026-11-27 23:59:59' --filter-table orders
  dmstrack export --order-id 11223346 --rollback-sql-type reverse --add   # start an export and add it")]
    Add(Box<add::AddArgs>),
    /// Put a failed ticket (or its failed upload or hooks) back to waiting; polled at once.
    #[command(after_help = "\
Examples:
  dmstrack retry --order-id 11223344            # every failed ticket of the order
  dmstrack retry --order-id 11223344 --download-key-id e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd")]
    Retry {
        /// The data-tracking ticket id.
        #[arg(long)]
        order_id: i64,
        /// Only this export of the ticket [default: every failed one of the order].
        #[arg(long)]
        download_key_id: Option<String>,
    },
    /// Drop the state of a ticket that is no longer configured (its archive stays).
    #[command(after_help = "\
Examples:
  dmstrack status                               # tickets no longer configured are marked
  dmstrack forget --order-id 11223344")]
    Forget {
        /// The data-tracking ticket id.
        #[arg(long)]
        order_id: i64,
        /// Only this export of the ticket [default: every one of the order].
        #[arg(long)]
        download_key_id: Option<String>,
    },
    /// Exit 0 if the local /healthz answers 200 (for exec probes in distroless images).
    #[command(after_help = "\
Examples:
  dmstrack healthcheck                       # http.listen from the config
  dmstrack healthcheck --addr 127.0.0.1:9464")]
    Healthcheck {
        /// Address of the listener [default: http.listen from the config, else 127.0.0.1:9464].
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
    },
    /// Archive sample tickets against the built-in DMS and OSS simulators (no cloud account).
    #[command(after_help = "\
Examples:
  dmstrack demo
  dmstrack demo --dir /tmp/dmstrack-demo")]
    Demo {
        /// Where to write the demo config, state and archive.
        #[arg(long, default_value = "./dmstrack-demo")]
        dir: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "\
Examples:
  dmstrack completions bash > /etc/bash_completion.d/dmstrack
  dmstrack completions zsh > \"${fpath[1]}/_dmstrack\"
  dmstrack completions fish > ~/.config/fish/completions/dmstrack.fish

The Debian package installs them already.")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (dmstrack.1 and one per command) into a folder; for packaging.
    #[command(hide = true)]
    Manpages {
        /// The folder to write into (created when missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The clap definition of the whole command line, for completions and man pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = err.print();
            return if err.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Success.into()
            };
        }
    };
    if let Err(message) = crate::service::logging::init(cli.log_format, cli.log_level.as_deref()) {
        eprintln!("dmstrack: {message}");
        return Exit::Usage.into();
    }
    // One thread for everything async: the daemon's work on it is short (polls, HTTP, the
    // loop), everything blocking (fsync, hashing, extraction, SQLite) runs on the blocking
    // pool, and a single thread spares every poll the cross-thread wake-ups of a work-stealing
    // pool (measured: a third of a poll's CPU).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dmstrack: cannot start the async runtime: {err}");
            return Exit::Failure.into();
        }
    };
    let env = ConfigEnv::from_process();
    let exit = runtime.block_on(dispatch(cli, env));
    // Do not wait for lingering blocking tasks (e.g. a stuck DNS lookup) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit.into()
}

async fn dispatch(cli: Cli, env: ConfigEnv) -> Exit {
    let config_path = env.config_path(cli.config.as_deref());
    match cli.command {
        Command::Query {
            order_id,
            download_key_id,
            tid,
        } => match load_config(&config_path, &env) {
            Ok(config) => query::run(&config, order_id, &download_key_id, tid).await,
            Err(exit) => exit,
        },
        Command::Export(args) => match load_config(&config_path, &env) {
            Ok(config) => export::run(&config, &args).await,
            Err(exit) => exit,
        },
        Command::Check { online } => check::run(&config_path, &env, online).await,
        Command::Add(args) => add::run(&config_path, &env, &args),
        Command::Retry {
            order_id,
            download_key_id,
        } => {
            requests::run(
                &config_path,
                &env,
                crate::watch::requests::Action::Retry,
                order_id,
                download_key_id,
            )
            .await
        }
        Command::Forget {
            order_id,
            download_key_id,
        } => {
            requests::run(
                &config_path,
                &env,
                crate::watch::requests::Action::Forget,
                order_id,
                download_key_id,
            )
            .await
        }
        Command::Run { once } => run::run(&config_path, &env, once).await,
        Command::Status { json } => status::run(&config_path, &env, json),
        Command::Demo { dir } => demo(&dir).await,
        Command::Healthcheck { addr } => healthcheck(addr, &config_path, &env).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Manpages { dir } => docs::manpages(&dir),
    }
}

/// `dmstrack demo`, when this build has the simulators.
#[cfg(feature = "sim")]
async fn demo(dir: &std::path::Path) -> Exit {
    match crate::cli::demo::run(dir).await {
        Ok(true) => Exit::Success,
        Ok(false) => Exit::Failure,
        Err(message) => {
            eprintln!("dmstrack demo: {message}");
            Exit::Failure
        }
    }
}

/// `dmstrack demo` in a build without the simulators (`--no-default-features`).
#[cfg(not(feature = "sim"))]
async fn demo(_dir: &std::path::Path) -> Exit {
    eprintln!(
        "dmstrack demo: not in this build: it was built without the simulators \
         (cargo feature \"sim\"); the Debian package and `cargo build` include them"
    );
    Exit::Failure
}

/// `dmstrack healthcheck`: probes `--addr`, else the config's `[http] listen`, else the default.
async fn healthcheck(addr: Option<String>, config_path: &std::path::Path, env: &ConfigEnv) -> Exit {
    let addr = addr.unwrap_or_else(|| {
        let listen = Config::load(config_path, env)
            .ok()
            .and_then(|c| c.http)
            .map_or_else(
                || std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
                |h| h.listen,
            );
        crate::service::http::probe_address(listen)
    });
    match crate::service::http::probe(&addr).await {
        Ok(()) => Exit::Success,
        Err(message) => {
            eprintln!("dmstrack healthcheck: {message}");
            Exit::Failure
        }
    }
}

/// Loads the config or prints why not (`file:line:column: …`) and returns exit 78.
fn load_config(path: &std::path::Path, env: &ConfigEnv) -> Result<Config, Exit> {
    Config::load(path, env).map_err(|err| {
        eprintln!("{err}");
        Exit::Config
    })
}

/// Builds the DMS client for a one-shot command; errors are printed and mapped to exit codes.
async fn one_shot_client(config: &Config) -> Result<crate::dms::DmsClient, Exit> {
    let credentials = crate::credentials::CredentialProvider::new(
        &config.credentials,
        crate::credentials::CredentialEnv::from_process(),
    )
    .map_err(|err| {
        eprintln!("dmstrack: credentials: {err}");
        if err.is_config() {
            Exit::Config
        } else {
            Exit::TempFail
        }
    })?;
    let limiter = std::sync::Arc::new(crate::net::ratelimit::RateLimiter::new(
        config.dms.max_requests_per_second,
    ));
    crate::dms::DmsClient::new(
        &config.dms,
        credentials,
        limiter,
        crate::telemetry::metrics::Telemetry::default(),
    )
    .map_err(|err| {
        eprintln!(
            "dmstrack: cannot build the HTTP client: {}",
            crate::net::transport_error_text(err)
        );
        Exit::Failure
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definitions_are_consistent() {
        command().debug_assert();
    }

    #[test]
    fn rollback_sql_type_is_case_insensitive_and_listed_in_help() {
        for spelling in ["REVERSE", "reverse", "Reverse"] {
            let cli = Cli::try_parse_from([
                "dmstrack",
                "export",
                "--order-id",
                "1",
                "--rollback-sql-type",
                spelling,
            ])
            .unwrap();
            let Command::Export(args) = cli.command else {
                panic!("not export");
            };
            assert_eq!(args.rollback_sql_type(), RollbackSqlType::Reverse);
        }
        let err = Cli::try_parse_from([
            "dmstrack",
            "export",
            "--order-id",
            "1",
            "--rollback-sql-type",
            "SIDEWAYS",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("REVERSE, FORWARD"), "{err}");
        let help = command()
            .find_subcommand_mut("export")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("REVERSE") && help.contains("FORWARD"),
            "{help}"
        );
    }

    #[test]
    fn log_settings_come_from_the_environment_too() {
        // clap reads `env` attributes from the process environment; a Command built here
        // sees the variables of this test process only through `mut_arg`, so check the
        // definitions instead of mutating the environment of a multi-threaded test.
        let cmd = command();
        let env_of = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(env_of("log_format").as_deref(), Some("DMSTRACK_LOG_FORMAT"));
        assert_eq!(env_of("log_level").as_deref(), Some("DMSTRACK_LOG_LEVEL"));
    }

    #[test]
    fn every_visible_command_has_an_example() {
        for sub in command().get_subcommands().filter(|s| !s.is_hide_set()) {
            let after = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                after.contains("dmstrack "),
                "`dmstrack {}` has no example in its --help",
                sub.get_name()
            );
        }
    }
}
