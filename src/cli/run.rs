//! `dmstrack run [--once]`: the daemon, with signals: SIGTERM/SIGINT stop it, SIGHUP reloads
//! the config.
//!
//! The first SIGTERM or SIGINT cancels the shutdown token: jobs stop at a safe point (partial
//! downloads kept, nothing half-published), state is saved, and the process exits 0. A second
//! one exits at once (code 1: state may not be saved).

use std::path::Path;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Exit, load_config};
use crate::config::ConfigEnv;
use crate::credentials::CredentialEnv;
use crate::service::daemon::{Daemon, RunOptions};
use crate::service::notify::Notifier;

pub(super) async fn run(path: &Path, env: &ConfigEnv, once: bool) -> Exit {
    let config = match load_config(path, env) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(1);
    if let Err(err) = watch_signals(shutdown.clone(), reload_tx) {
        eprintln!("dmstrack: cannot install signal handlers: {err}");
        return Exit::Failure;
    }
    let source = config.source.clone();
    let tickets = config.tickets.len();
    let daemon = match Daemon::start(
        config,
        env.clone(),
        CredentialEnv::from_process(),
        RunOptions { once },
        Notifier::from_env(),
    )
    .await
    {
        Ok(daemon) => daemon,
        Err(err) => {
            error!(error = %err, "cannot start");
            eprintln!("dmstrack: {err}");
            return Exit::from_code(err.exit_code());
        }
    };
    info!(config = %source.display(), tickets, once, "dmstrack started");
    let outcome = daemon.run(shutdown, reload_rx).await;
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
    if once && !outcome.interrupted && outcome.failed > 0 {
        Exit::Failure
    } else {
        Exit::Success
    }
}

fn watch_signals(shutdown: CancellationToken, reload: mpsc::Sender<()>) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut stops = 0;
        loop {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
                _ = hangup.recv() => {
                    info!("SIGHUP: reloading the config");
                    // A reload already queued covers this one too.
                    let _ = reload.try_send(());
                    continue;
                }
            };
            stops += 1;
            if stops == 1 {
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
