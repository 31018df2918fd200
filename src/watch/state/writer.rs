//! The state writer: one task that owns `state.db` for the daemon. The watch loop hands it
//! records and never waits on the disk; the writer commits them in groups, each commit on a
//! blocking thread (`spawn_blocking`), so no state I/O ever runs on the async workers.
//!
//! - A [`Durability::Now`] record (a state change, a new error, an export key, `archived`) is
//!   committed at once, together with everything else queued; the caller gets a [`Committed`]
//!   future and starts the next step only when it resolves ("the key is durable before the
//!   first poll", "`archived` is durable before the hook runs").
//! - A [`Durability::Lazy`] record (attempts, next poll, an unchanged status, download
//!   progress) waits up to the flush interval, so a poll costs no disk write at all.
//! - Only the latest version of a record is kept while it waits: a ticket polled 100 times
//!   between two commits is written once.
//!
//! Reads ([`StateWriter::load`]) go through the same task, so they see records still
//! waiting to be committed.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, warn};

use super::{StateError, StateStore, TicketRecord};
use crate::telemetry::Metrics;

/// How long a lazy change may wait before it is committed.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(3);

/// Whether a change must be durable before the caller's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Something depends on it: commit now.
    Now,
    /// Bookkeeping that may be lost in a crash (it is recomputed): commit with the next batch.
    Lazy,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Op {
    Put(Box<TicketRecord>, Durability, Option<Reply<()>>),
    Remove(String, Reply<()>),
    Load(Vec<String>, Reply<Vec<TicketRecord>>),
    LoadAll(Reply<Vec<TicketRecord>>),
    Flush(Reply<()>),
    /// Commit, answer, and end the thread (other handles stop working).
    Stop(Reply<()>),
}

/// Resolves when a change is durable (or its commit failed). Dropping it does not cancel the
/// write.
#[derive(Debug)]
pub struct Committed(oneshot::Receiver<Result<(), String>>);

impl Future for Committed {
    type Output = Result<(), String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(StateError::WriterGone.to_string())))
    }
}

impl Committed {
    /// Already durable (nothing to wait for).
    pub fn done() -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        Self(rx)
    }
}

/// A handle to the writer task. Cheap to clone; the task commits what is queued and stops
/// when the last handle is dropped or [`close`](Self::close) is called.
#[derive(Debug, Clone)]
pub struct StateWriter {
    tx: mpsc::UnboundedSender<Op>,
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl StateWriter {
    /// Starts the writer task (on the current runtime) over an open store.
    pub fn start(store: StateStore, flush_every: Duration, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            Writer {
                store: Arc::new(std::sync::Mutex::new(store)),
                flush_every,
                metrics,
                pending: BTreeMap::new(),
                waiters: Vec::new(),
                dirty_since: None,
            }
            .run(rx),
        );
        Self {
            tx,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        }
    }

    /// Queues a record. With [`Durability::Now`] the returned future resolves once it is
    /// committed; with `Lazy` it resolves at once (the change waits for the next commit).
    pub fn put(&self, record: TicketRecord, durability: Durability) -> Committed {
        let (reply, rx) = oneshot::channel();
        let reply = match durability {
            Durability::Now => Some(reply),
            Durability::Lazy => {
                let _ = reply.send(Ok(()));
                None
            }
        };
        if self
            .tx
            .send(Op::Put(Box::new(record), durability, reply))
            .is_err()
        {
            error!("the state writer has stopped; a ticket change was not saved");
        }
        Committed(rx)
    }

    /// Deletes a record (committed at once).
    pub fn remove(&self, id: String) -> Committed {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Op::Remove(id, reply));
        Committed(rx)
    }

    /// Commits everything queued.
    pub fn flush(&self) -> Committed {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Op::Flush(reply));
        Committed(rx)
    }

    /// The current records of `ids` that exist, including changes not committed yet.
    pub async fn load(&self, ids: Vec<String>) -> Result<Vec<TicketRecord>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Load(ids, reply))
            .map_err(|_| StateError::WriterGone.to_string())?;
        rx.await
            .unwrap_or_else(|_| Err(StateError::WriterGone.to_string()))
    }

    /// Every record, including changes not committed yet.
    pub async fn load_all(&self) -> Result<Vec<TicketRecord>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::LoadAll(reply))
            .map_err(|_| StateError::WriterGone.to_string())?;
        rx.await
            .unwrap_or_else(|_| Err(StateError::WriterGone.to_string()))
    }

    /// Commits what is queued and ends the task; other handles stop working.
    pub async fn close(self) {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Op::Stop(reply));
        if let Err(err) = Committed(rx).await {
            error!(error = %err, "could not save ticket state on the way out");
        }
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// What the operations taken in so far ask of the writer, in rising order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wanted {
    Nothing,
    Commit,
    Stop,
}

/// The writer task's state. It runs on the async runtime but never touches the disk there:
/// every commit and read goes to `spawn_blocking`, one at a time.
struct Writer {
    store: Arc<std::sync::Mutex<StateStore>>,
    flush_every: Duration,
    metrics: Arc<Metrics>,
    /// Latest version of each changed record (`None`: delete).
    pending: BTreeMap<String, Option<TicketRecord>>,
    waiters: Vec<Reply<()>>,
    /// When the oldest uncommitted change arrived.
    dirty_since: Option<Instant>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        loop {
            let flush_at = self.dirty_since.map(|since| since + self.flush_every);
            let mut wanted = Wanted::Nothing;
            tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => wanted = wanted.max(self.absorb(op).await),
                    None => wanted = Wanted::Stop,
                },
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    wanted = Wanted::Commit;
                }
            }
            // Everything already queued joins this batch.
            while wanted != Wanted::Stop
                && let Ok(op) = rx.try_recv()
            {
                wanted = wanted.max(self.absorb(op).await);
            }
            if wanted != Wanted::Nothing {
                self.commit().await;
            }
            if wanted == Wanted::Stop {
                return;
            }
        }
    }

    /// Takes one operation in and says what it asks for.
    async fn absorb(&mut self, op: Op) -> Wanted {
        match op {
            Op::Put(record, durability, reply) => {
                self.pending.insert(record.id.clone(), Some(*record));
                self.dirty_since.get_or_insert_with(Instant::now);
                if let Some(reply) = reply {
                    self.waiters.push(reply);
                }
                match durability {
                    Durability::Now => Wanted::Commit,
                    Durability::Lazy => Wanted::Nothing,
                }
            }
            Op::Remove(id, reply) => {
                self.pending.insert(id, None);
                self.dirty_since.get_or_insert_with(Instant::now);
                self.waiters.push(reply);
                Wanted::Commit
            }
            Op::Flush(reply) => {
                self.waiters.push(reply);
                Wanted::Commit
            }
            Op::Stop(reply) => {
                self.waiters.push(reply);
                Wanted::Stop
            }
            Op::LoadAll(reply) => {
                // Commit first: the database then holds every change, pending ones included.
                self.commit().await;
                let store = Arc::clone(&self.store);
                let loaded = tokio::task::spawn_blocking(move || {
                    store.lock().expect("not poisoned").load_all()
                })
                .await;
                let _ = reply.send(match loaded {
                    Ok((records, _)) => Ok(records),
                    Err(err) => Err(format!("reading ticket state failed: {err}")),
                });
                Wanted::Nothing
            }
            Op::Load(ids, reply) => {
                let mut found = Vec::with_capacity(ids.len());
                let mut from_disk = Vec::new();
                for id in ids {
                    match self.pending.get(&id) {
                        Some(Some(record)) => found.push(record.clone()),
                        Some(None) => {}
                        None => from_disk.push(id),
                    }
                }
                let store = Arc::clone(&self.store);
                let loaded = tokio::task::spawn_blocking(move || {
                    store.lock().expect("not poisoned").load(&from_disk)
                })
                .await;
                match loaded {
                    Ok((records, errors)) => {
                        for err in &errors {
                            warn!(error = %err, "unreadable ticket state; that ticket starts afresh");
                        }
                        found.extend(records);
                        let _ = reply.send(Ok(found));
                    }
                    Err(err) => {
                        let _ = reply.send(Err(format!("reading ticket state failed: {err}")));
                    }
                }
                Wanted::Nothing
            }
        }
    }

    async fn commit(&mut self) {
        if !self.pending.is_empty() {
            let started = std::time::Instant::now();
            let batch = std::mem::take(&mut self.pending);
            let store = Arc::clone(&self.store);
            let (batch, result) = tokio::task::spawn_blocking(move || {
                let result = {
                    let mut store = store.lock().expect("not poisoned");
                    let puts = batch.values().flatten();
                    let removes = batch
                        .iter()
                        .filter(|(_, record)| record.is_none())
                        .map(|(id, _)| id.as_str());
                    store.commit(puts, removes)
                };
                (batch, result)
            })
            .await
            .expect("the commit task does not panic");
            match result {
                Ok(()) => {
                    self.metrics
                        .state_commit(batch.len(), started.elapsed().as_secs_f64());
                    self.dirty_since = None;
                }
                Err(err) => {
                    error!(error = %err, records = batch.len(), "cannot save ticket state; will retry");
                    self.metrics.state_commit_failed();
                    // Keep the records (newer versions that arrived meanwhile win) and try
                    // again after the flush interval.
                    for (id, record) in batch {
                        self.pending.entry(id).or_insert(record);
                    }
                    self.dirty_since = Some(Instant::now());
                    for waiter in self.waiters.drain(..) {
                        let _ = waiter.send(Err(err.to_string()));
                    }
                    return;
                }
            }
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TicketSource, TicketSpec};
    use crate::watch::state::TicketState;

    fn record(order_id: i64) -> TicketRecord {
        let spec = TicketSpec {
            order_id,
            tid: None,
            label: None,
            source: TicketSource::Existing {
                download_key_id: "k".into(),
            },
        };
        TicketRecord::new(&spec, jiff::Timestamp::now())
    }

    fn commits(metrics: &Metrics) -> u64 {
        metrics.state_commits()
    }

    #[tokio::test]
    async fn lazy_changes_wait_and_are_coalesced_durable_ones_go_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let writer = StateWriter::start(
            StateStore::open(dir.path()).unwrap(),
            Duration::from_secs(3600),
            Arc::clone(&metrics),
        );
        let mut a = record(1);
        for attempt in 1..=100 {
            a.attempts = attempt;
            writer.put(a.clone(), Durability::Lazy);
        }
        // Nothing committed yet, but reads see the latest version.
        assert_eq!(
            writer.load(vec![a.id.clone()]).await.unwrap()[0].attempts,
            100
        );
        assert_eq!(commits(&metrics), 0, "lazy changes wait for the interval");
        let reader = StateStore::open_read_only(dir.path()).unwrap().unwrap();
        assert_eq!(reader.load_one(&a.id).unwrap(), None);

        let mut b = record(2);
        b.state = TicketState::Waiting;
        writer.put(b.clone(), Durability::Now).await.unwrap();
        assert_eq!(commits(&metrics), 1, "one commit for the whole batch");
        assert_eq!(reader.load_one(&a.id).unwrap().unwrap().attempts, 100);
        assert_eq!(reader.load_one(&b.id).unwrap(), Some(b.clone()));

        writer.remove(b.id.clone()).await.unwrap();
        assert_eq!(reader.load_one(&b.id).unwrap(), None);
        a.attempts = 101;
        writer.put(a.clone(), Durability::Lazy);
        writer.close().await;
        assert_eq!(
            reader.load_one(&a.id).unwrap().unwrap().attempts,
            101,
            "close commits what waits"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lazy_changes_are_committed_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let writer = StateWriter::start(
            StateStore::open(dir.path()).unwrap(),
            Duration::from_secs(3),
            Arc::clone(&metrics),
        );
        writer.put(record(1), Durability::Lazy);
        tokio::time::sleep(Duration::from_millis(2900)).await;
        assert_eq!(commits(&metrics), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The commit runs on a blocking thread; paused time does not advance meanwhile.
        writer.flush().await.unwrap();
        assert_eq!(commits(&metrics), 1, "one commit, at the interval");
        writer.close().await;
    }
}
