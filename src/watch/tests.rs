//! Tests of the loop's own bookkeeping, driven by hand: task ownership across a removal and
//! re-adding of a ticket, and tasks that panic. No API call is made (the endpoint is closed).

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::state::{StateStore, StateWriter, TicketState, ticket_id};
use super::tasks::{TaskKind, TaskOwner, TaskResult};
use super::{LoadedTicket, Scheduler, Services};
use crate::config::{Config, ConfigEnv, TicketSpec};
use crate::credentials::{CredentialEnv, CredentialProvider};
use crate::job::pipeline::JobOutcome;
use crate::telemetry::{Summary, Telemetry};

const KEY: &str = "e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd";

fn config(dir: &Path) -> Config {
    std::fs::write(dir.join("ak_secret"), "secret\n").unwrap();
    let text = format!(
        "[dms]\nendpoint = \"http://127.0.0.1:1\"\n\
         [credentials]\nsource = \"static\"\naccess_key_id = \"LTAI5tTest\"\naccess_key_secret_file = \"ak_secret\"\n\
         [[tickets]]\norder_id = 7\ndownload_key_id = \"{KEY}\"\n"
    );
    Config::from_toml_str(&text, &dir.join("config.toml"), &ConfigEnv::default()).unwrap()
}

fn services(config: &Config) -> Services {
    let credentials =
        CredentialProvider::new(&config.credentials, CredentialEnv::from_vars([], None)).unwrap();
    crate::service::services::build_services(
        config,
        credentials,
        &CredentialEnv::from_vars([], None),
        &crate::service::services::Limits::new(config),
        Telemetry::default(),
    )
    .unwrap()
}

/// A scheduler over the config's one ticket, not running: the test drives it.
fn scheduler(dir: &Path) -> (Scheduler, TicketSpec, Services) {
    let config = config(dir);
    let services = services(&config);
    let writer = StateWriter::start(
        StateStore::open(&dir.join("state")).unwrap(),
        std::time::Duration::from_secs(3),
        Arc::clone(&services.telemetry.metrics),
    );
    let spec = config.tickets[0].clone();
    let loaded = LoadedTicket {
        spec: spec.clone(),
        record: None,
        archived_on_disk: false,
    };
    let (summary, _) = watch::channel(Summary::default());
    let scheduler = Scheduler::new(vec![loaded], services.clone(), writer, false, summary);
    (scheduler, spec, services)
}

/// Spawns a job task owned by the ticket's current generation; it ends with what is sent.
fn fake_job(scheduler: &mut Scheduler, id: &str) -> oneshot::Sender<TaskResult> {
    let (tx, rx) = oneshot::channel::<TaskResult>();
    let ticket = scheduler.tickets.get_mut(id).unwrap();
    ticket.busy = true;
    ticket.job_cancel = Some(CancellationToken::new());
    let generation = ticket.generation;
    let handle = scheduler.jobs.spawn(async move { rx.await.unwrap() });
    scheduler.owners.insert(
        handle.id(),
        TaskOwner {
            ticket: id.to_owned(),
            generation,
            kind: TaskKind::Job,
        },
    );
    tx
}

/// Removing a ticket and adding it again (two reloads) while its job runs: the old job's
/// result belongs to the old generation and is dropped, and until that job has ended the new
/// generation starts no job of its own (both would write one partial download).
#[tokio::test(start_paused = true)]
async fn a_removed_tickets_late_result_never_lands_on_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let (mut scheduler, spec, services) = scheduler(dir.path());
    let id = ticket_id(&spec);
    let finish_old_job = fake_job(&mut scheduler, &id);
    let old_generation = scheduler.tickets[&id].generation;

    scheduler.reload(Vec::new(), services.clone(), None);
    assert!(!scheduler.tickets.contains_key(&id));
    assert_eq!(scheduler.draining.get(&id), Some(&1));
    scheduler.reload(vec![spec], services, None);
    let (loaded, _) = scheduler.loads.join_next().await.unwrap().unwrap();
    scheduler.loaded(loaded);
    let successor = &scheduler.tickets[&id];
    assert_ne!(successor.generation, old_generation);
    assert!(!successor.busy);

    // The successor's DOWNLOAD_SUCCESS while the old job still runs: no second job.
    let url = crate::net::signed_url::SignedUrl::parse(
        "http://127.0.0.1:1/b/x.zip?Expires=9999999999&Signature=s",
    )
    .unwrap();
    scheduler.on_poll(
        &id,
        Ok(crate::dms::ExportStatus {
            request_id: "r".into(),
            status: crate::dms::DownloadStatus::Success,
            url: Some(url),
            status_desc: None,
            total_count: Some(1),
            body: serde_json::Value::Null,
        }),
    );
    assert!(
        scheduler.tickets[&id].job_cancel.is_none(),
        "no job started"
    );
    assert_eq!(scheduler.jobs.len(), 1, "only the old job runs");

    // The old job ends "archived": that is not the successor's archive.
    let _ = finish_old_job.send(TaskResult::Job(JobOutcome::Archived {
        dir: dir.path().join("elsewhere"),
        files: 1,
        bytes: 1,
        adopted: false,
    }));
    let joined = scheduler.jobs.join_next_with_id().await.unwrap();
    scheduler.joined(joined);
    let successor = &scheduler.tickets[&id];
    assert_ne!(successor.record.state, TicketState::Archived);
    assert_eq!(successor.record.archive, None);
    assert!(
        !scheduler.draining.contains_key(&id),
        "the successor may start its job now"
    );
}

/// A task that panics turns into an error of its ticket: the ticket is not left busy forever
/// (which also kept `run --once` from ever ending), and it is polled again later.
#[tokio::test(start_paused = true)]
async fn a_panicking_task_becomes_an_error_of_its_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let (mut scheduler, spec, _) = scheduler(dir.path());
    let id = ticket_id(&spec);
    scheduler.timers.cancel(&id);
    for kind in [TaskKind::Poll, TaskKind::Job] {
        let ticket = scheduler.tickets.get_mut(&id).unwrap();
        ticket.busy = true;
        let generation = ticket.generation;
        let handle = scheduler.polls.spawn(async { panic!("boom") });
        scheduler.owners.insert(
            handle.id(),
            TaskOwner {
                ticket: id.clone(),
                generation,
                kind,
            },
        );
        let joined = scheduler.polls.join_next_with_id().await.unwrap();
        scheduler.joined(joined);
        let ticket = &scheduler.tickets[&id];
        assert!(!ticket.busy, "{kind:?}");
        assert!(
            ticket
                .record
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("panicked")),
            "{kind:?}: {:?}",
            ticket.record.last_error
        );
        assert!(scheduler.timers.next().is_some(), "{kind:?}: polled again");
        scheduler.timers.cancel(&id);
    }
}
