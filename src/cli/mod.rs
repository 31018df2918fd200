//! The command line: argument definitions, dispatch, and the mapping of outcomes to the exit
//! codes of SPEC.md. Each command lives in its own file; `main.rs` only calls [`main`].

mod add;
mod check;
pub mod demo;
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

/// Exit codes (SPEC.md "Exit codes").
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

#[derive(Debug, Parser)]
#[command(
    name = "dmstrack",
    version,
    about = "Archives Alibaba Cloud DMS data-tracking exports unattended"
)]
struct Cli {
    /// Config file [default: $DMSTRACK_CONFIG, else $CONFIGURATION_DIRECTORY/config.toml, else /etc/dmstrack/config.toml]
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Log format: text on a terminal or the journal and JSON lines otherwise (auto), or forced.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    log_format: LogFormat,
    /// Log level or filter (e.g. "debug", "dmstrack=debug"); default: $RUST_LOG, else info.
    #[arg(long, value_name = "LEVEL", global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: watch every ticket until archived or failed.
    Run {
        /// Exit when every ticket is terminal: 0 if all were archived, 1 if any failed.
        #[arg(long)]
        once: bool,
    },
    /// Validate the config; with --online also resolve credentials and query each ticket once.
    Check {
        /// Resolve credentials and query each ticket once.
        #[arg(long)]
        online: bool,
    },
    /// Show each ticket's state from the state directory (no network).
    Status {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One signed QueryDataTrackResultDownloadStatus; prints the response JSON.
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
    Export(Box<export::ExportArgs>),
    /// Add a ticket as a file of the tickets folder; a running daemon picks it up within 5 s.
    Add(Box<add::AddArgs>),
    /// Put a failed ticket (or its failed upload or hooks) back to waiting; polled at once.
    Retry {
        /// The data-tracking ticket id.
        #[arg(long)]
        order_id: i64,
        /// Only this export of the ticket [default: every failed one of the order].
        #[arg(long)]
        download_key_id: Option<String>,
    },
    /// Drop the state of a ticket that is no longer configured (its archive stays).
    Forget {
        /// The data-tracking ticket id.
        #[arg(long)]
        order_id: i64,
        /// Only this export of the ticket [default: every one of the order].
        #[arg(long)]
        download_key_id: Option<String>,
    },
    /// Exit 0 if the local /healthz answers 200 (for exec probes in distroless images).
    Healthcheck {
        /// Address of the listener [default: http.listen from the config, else 127.0.0.1:9464].
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
    },
    /// Archive sample tickets against the built-in DMS and OSS simulators (no cloud account).
    Demo {
        /// Where to write the demo config, state and archive.
        #[arg(long, default_value = "./dmstrack-demo")]
        dir: PathBuf,
    },
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
        Command::Demo { dir } => match crate::cli::demo::run(&dir).await {
            Ok(true) => Exit::Success,
            Ok(false) => Exit::Failure,
            Err(message) => {
                eprintln!("dmstrack demo: {message}");
                Exit::Failure
            }
        },
        Command::Healthcheck { addr } => healthcheck(addr, &config_path, &env).await,
    }
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

/// `REVERSE` / `FORWARD` for clap.
fn parse_rollback_sql_type(value: &str) -> Result<RollbackSqlType, String> {
    match value {
        "REVERSE" => Ok(RollbackSqlType::Reverse),
        "FORWARD" => Ok(RollbackSqlType::Forward),
        other => Err(format!("{other:?} is not REVERSE or FORWARD")),
    }
}
