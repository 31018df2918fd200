//! `dmstrack run [--once]`: the daemon, with SIGTERM/SIGINT handling.
//!
//! The first SIGTERM or SIGINT cancels the shutdown token: jobs stop at a safe point (partial
//! downloads kept, nothing half-published), state is saved, and the process exits 0. A second
//! signal exits at once.

use std::path::Path;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Exit, load_config};
use crate::config::ConfigEnv;
use crate::daemon::{self, RunOptions};

pub(super) async fn run(path: &Path, env: &ConfigEnv, once: bool) -> Exit {
    let config = match load_config(path, env) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let prepared = match daemon::prepare(&config, RunOptions { once }) {
        Ok(prepared) => prepared,
        Err(err) => {
            error!(error = %err, "cannot start");
            eprintln!("dmstrack: {err}");
            return Exit::from_code(err.exit_code());
        }
    };
    let shutdown = CancellationToken::new();
    if let Err(err) = watch_signals(shutdown.clone()) {
        eprintln!("dmstrack: cannot install signal handlers: {err}");
        return Exit::Failure;
    }
    info!(config = %config.source.display(), tickets = config.tickets.len(), once, "dmstrack started");
    let outcome = prepared.run(shutdown).await;
    if let Some(err) = &outcome.auth_failure {
        eprintln!("dmstrack: {err}");
        return Exit::Config;
    }
    info!(
        archived = outcome.archived,
        failed = outcome.failed,
        interrupted = outcome.interrupted,
        "dmstrack stopped"
    );
    if outcome.interrupted || !once {
        Exit::Success
    } else if outcome.failed > 0 {
        Exit::Failure
    } else {
        Exit::Success
    }
}

fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut received = 0;
        loop {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            received += 1;
            if received == 1 {
                info!(
                    signal = name,
                    "stopping: saving state and keeping partial downloads"
                );
                shutdown.cancel();
            } else {
                warn!(signal = name, "second signal: exiting now");
                std::process::exit(1);
            }
        }
    });
    Ok(())
}
