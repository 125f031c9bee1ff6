//! Group commit for vault writes on SQLite: every write must be durable
//! (with its audit record) before it is acknowledged, and one fsync per
//! write would cap writes at the disk's fsync rate, as one transaction per
//! write on SQLite's single writer does. The batcher takes every write that
//! is waiting, runs each inside a savepoint of one transaction (a write that
//! fails is rolled back alone; the others stay), commits once with all
//! their audit records, and only then answers each: durability per write,
//! fsync per batch. PostgreSQL writes run in their own transactions, since
//! PostgreSQL serves concurrent ones and commits them in groups itself.

use std::future::Future;
use std::pin::Pin;

use axum::response::Response;
use tokio::sync::{mpsc, oneshot};
use ward_store::{AuditEvent, Store, VaultTx};

use crate::error::ApiError;

/// The most writes in one transaction.
const MAX_BATCH: usize = 64;

/// What a write gives back.
pub(crate) enum Outcome {
    /// Written: the answer, and the audit records to commit with it.
    Written(Response, Vec<AuditEvent>),
    /// Not written: the caller's grant for this capability must be checked
    /// first (the write was decided as a create and the secret exists by
    /// now, or as an update and it is gone).
    NeedsGrant(&'static str),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// One write, run against the batch's transaction.
pub(crate) type Op =
    Box<dyn for<'a> FnOnce(&'a mut VaultTx) -> BoxFuture<'a, Result<Outcome, ApiError>> + Send>;
type Job = (Op, oneshot::Sender<Result<Outcome, ApiError>>);

/// A handle to the write batcher. Cheap to clone.
#[derive(Clone)]
pub(crate) struct WriteBatcher {
    tx: mpsc::Sender<Job>,
}

impl WriteBatcher {
    /// Starts the batcher task on the current runtime.
    pub(crate) fn spawn(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut jobs = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
                // Each batch in a task of its own: a panic in one write ends
                // that batch (its writers get an error), not the batcher.
                let mut batch = std::mem::take(&mut jobs);
                let store = store.clone();
                let ran = tokio::spawn(async move { run_batch(&store, &mut batch).await }).await;
                if let Err(e) = ran {
                    tracing::error!(error = %e, "a batch of vault writes failed; its writes were answered with errors");
                }
            }
        });
        Self { tx }
    }

    /// Runs `op` in the next batch; answers once the batch is committed.
    pub(crate) async fn write(&self, op: Op) -> Result<Outcome, ApiError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((op, reply))
            .await
            .map_err(|_| ApiError::Internal("the vault's write batcher has stopped".into()))?;
        wait.await
            .map_err(|_| ApiError::Internal("the vault's write batcher dropped a write".into()))?
    }
}

async fn run_batch(store: &Store, jobs: &mut Vec<Job>) {
    let mut tx = match store.vault_begin_batch().await {
        Ok(t) => t,
        Err(e) => {
            let msg = e.to_string();
            for (_, reply) in jobs.drain(..) {
                let _ = reply.send(Err(ApiError::from(ward_store::StoreError::Invalid(
                    msg.clone(),
                ))));
            }
            return;
        }
    };
    let mut written = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    // A savepoint that cannot be set, released or rolled back leaves the
    // transaction in a state nobody can vouch for: nothing of it commits.
    let mut broken = false;
    let aborted =
        || ApiError::Internal("a batch of vault writes was abandoned; retry the write".into());
    for (op, reply) in jobs.drain(..) {
        if broken {
            let _ = reply.send(Err(aborted()));
            continue;
        }
        if let Err(e) = tx.savepoint().await {
            broken = true;
            let _ = reply.send(Err(e.into()));
            continue;
        }
        match op(&mut tx).await {
            Ok(Outcome::Written(resp, ev)) => match tx.release().await {
                Ok(()) => {
                    events.extend(ev);
                    written.push((reply, resp));
                }
                Err(e) => {
                    broken = true;
                    let _ = reply.send(Err(e.into()));
                }
            },
            other => {
                // Not written (refused, or to be decided again): undo what
                // it may have begun, and answer.
                if let Err(e) = tx.rollback_to().await {
                    tracing::error!(error = %e, "rolling back one write of a batch failed; abandoning the batch");
                    broken = true;
                }
                let _ = reply.send(other);
            }
        }
    }
    if broken {
        drop(tx);
        for (reply, _) in written {
            let _ = reply.send(Err(aborted()));
        }
        return;
    }
    match tx.commit(&events).await {
        Ok(()) => {
            for (reply, resp) in written {
                let _ = reply.send(Ok(Outcome::Written(resp, Vec::new())));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = written.len(), "a batch of vault writes could not be committed");
            let msg = e.to_string();
            for (reply, _) in written {
                let _ = reply.send(Err(ApiError::from(ward_store::StoreError::Invalid(
                    msg.clone(),
                ))));
            }
        }
    }
}
