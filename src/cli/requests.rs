//! `dmstrack retry` and `dmstrack forget`: a request to whoever owns the state. With a daemon
//! running it is a request file the daemon applies and answers (within seconds); with none,
//! this process takes the state lock and applies the waiting requests itself. Either way the
//! state has one writer at a time.

use std::path::Path;
use std::time::Duration;

use super::{Exit, load_config};
use crate::config::{Config, ConfigEnv, TicketSource};
use crate::watch::requests::{self, Action, Outcome, Request};
use crate::watch::state::{DirLock, StateStore, TicketRecord, ticket_id};

/// How long to wait for a running daemon's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Whether a state record belongs to a ticket of the config.
fn configured(config: &Config, record: &TicketRecord) -> bool {
    config
        .tickets
        .iter()
        .any(|spec| ticket_id(spec) == record.id)
}

/// The configured tickets a request names (by order, and key when given).
fn matching_configured<'a>(
    config: &'a Config,
    request: &Request,
    records: &[TicketRecord],
) -> Vec<&'a crate::config::TicketSpec> {
    config
        .tickets
        .iter()
        .filter(|spec| spec.order_id == request.order_id)
        .filter(|spec| match &request.download_key_id {
            None => true,
            Some(key) => match &spec.source {
                TicketSource::Existing { download_key_id } => download_key_id == key,
                TicketSource::Export(_) => {
                    let id = ticket_id(spec);
                    records
                        .iter()
                        .any(|r| r.id == id && r.download_key_id.as_deref() == Some(key))
                }
            },
        })
        .collect()
}

pub(super) async fn run(
    path: &Path,
    env: &ConfigEnv,
    action: Action,
    order_id: i64,
    download_key_id: Option<String>,
) -> Exit {
    let config = match load_config(path, env) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let request = Request {
        action,
        order_id,
        download_key_id,
    };
    let who = requests::describe(&request);
    let state_dir = config.state.dir.clone();
    let records = {
        let dir = state_dir.clone();
        tokio::task::spawn_blocking(move || crate::watch::state::read_all(&dir).0)
            .await
            .unwrap_or_default()
    };
    let configured_matches = matching_configured(&config, &request, &records);
    match action {
        Action::Retry => {
            if configured_matches.is_empty() {
                eprintln!("dmstrack retry: {who}: no such ticket in the config");
                return Exit::Failure;
            }
            let ids: Vec<String> = configured_matches.iter().map(|s| ticket_id(s)).collect();
            let failed = records
                .iter()
                .filter(|r| ids.contains(&r.id))
                .any(requests::has_failed);
            if !failed {
                println!("{who}: nothing has failed; left alone");
                return Exit::Success;
            }
        }
        Action::Forget => {
            if let Some(spec) = configured_matches.first() {
                let place = config.ticket_place(spec).unwrap_or("the config");
                eprintln!(
                    "dmstrack forget: {who} is configured (at {place}); remove it from the config first"
                );
                return Exit::Failure;
            }
            if !records.iter().any(|r| request.matches(r)) {
                eprintln!("dmstrack forget: {who}: no state recorded");
                return Exit::Failure;
            }
        }
    }
    let outcome = match submit_and_wait(&config, &request).await {
        Ok(outcome) => outcome,
        Err(message) => {
            eprintln!("dmstrack: {message}");
            return Exit::Failure;
        }
    };
    if outcome.code == 0 {
        println!("{}", outcome.message);
    } else {
        eprintln!("dmstrack: {}", outcome.message);
    }
    Exit::from_code(outcome.code)
}

/// Leaves the request, then either applies the waiting requests under the state lock (no
/// daemon) or waits for the running daemon's answer.
async fn submit_and_wait(config: &Config, request: &Request) -> Result<Outcome, String> {
    let state_dir = config.state.dir.clone();
    let request_path = {
        let (dir, request) = (state_dir.clone(), request.clone());
        tokio::task::spawn_blocking(move || requests::submit(&dir, &request))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot write the request into {}: {e}", state_dir.display()))?
    };
    let result_path = requests::result_path(&request_path);
    let offline = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || apply_if_stopped(&config))
            .await
            .map_err(|e| e.to_string())?
    };
    offline?;
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    loop {
        if let Ok(bytes) = std::fs::read(&result_path) {
            let _ = std::fs::remove_file(&result_path);
            return serde_json::from_slice(&bytes).map_err(|e| e.to_string());
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Outcome {
                code: 0,
                message: format!(
                    "{}: asked the running daemon; it applies the request within seconds",
                    requests::describe(request)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With no daemon holding the state lock, applies every waiting request now. `Ok` either way
/// (a running daemon answers itself).
fn apply_if_stopped(config: &Config) -> Result<(), String> {
    let Ok(_lock) = DirLock::acquire(&config.state.dir, "state") else {
        return Ok(());
    };
    let mut store = StateStore::open(&config.state.dir).map_err(|e| e.to_string())?;
    let layout = crate::job::archive::ArchiveLayout::new(&config.archive.dir);
    for path in requests::pending(&config.state.dir) {
        let outcome = match requests::read(&path) {
            Ok(request) => requests::apply_offline(
                &mut store,
                &request,
                &|record| configured(config, record),
                &|id| crate::job::download::remove_part(&layout.part_path(id)),
            ),
            Err(problem) => Outcome {
                code: 1,
                message: format!("unreadable request: {problem}"),
            },
        };
        requests::answer(&path, &outcome);
    }
    Ok(())
}
