//! Group commit for audit records on the hot path (SVID issuance).
//!
//! Each issuance must have its audit record durably stored before the SVID
//! is returned, but one fsync per issuance would cap issuance at the disk's
//! fsync rate. The writer takes every record that is waiting, appends them
//! all in one transaction, and only then answers each caller: durability per
//! record, fsync cost per batch.

use tokio::sync::{mpsc, oneshot};

use crate::{AuditEvent, Store, StoreError};

/// The most records appended in one transaction.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<i64, String>>;

/// A handle to the background audit writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<(AuditEvent, Reply)>,
}

impl AuditWriter {
    /// Starts the writer task on the current Tokio runtime.
    pub fn spawn(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<(AuditEvent, Reply)>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (events, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                match store.append_audit(&events).await {
                    Ok(seqs) => {
                        for (reply, seq) in replies.into_iter().zip(seqs) {
                            let _ = reply.send(Ok(seq));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, records = events.len(), "audit append failed");
                        for reply in replies {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Appends one record and waits until it is committed; returns its
    /// sequence number.
    pub async fn append(&self, event: AuditEvent) -> Result<i64, StoreError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match wait.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(StoreError::Invalid(format!("audit append failed: {e}"))),
            Err(_) => Err(StoreError::WriterGone),
        }
    }
}
