//! The vault's records: one table of opaque values under logical keys
//! (`kv/secret/meta/orders/db`, `kv/secret/data/orders/db/3`,
//! `transit/keys/orders`, `sys/policy/orders`, …), as Vault keeps its
//! engines' state in one physical backend behind its barrier.
//!
//! The store never sees a secret: the server seals each value with a data
//! key of its own, wrapped by the master key, with the logical key as
//! associated data, before it gets here. On top of that each row carries the
//! barrier's MAC over its key and value, so a writer of the database who
//! holds no unseal share cannot forge, edit or move a row; a row that fails
//! is an integrity error (never "absent": a secret that silently vanished
//! would read as a fresh path, and `cas: 0` would then succeed on it).
//! Leases live in their own table because expiry is a query by time.

use std::sync::Arc;

use sqlx::{Any, Row, Transaction};

use crate::barrier::{Field, RowKey};
use crate::*;

const TABLE: &str = "vault_records";
const LEASES: &str = "leases";

fn fields(value: &[u8]) -> [Field<'_>; 1] {
    [Field::Bytes(value)]
}

/// `LIKE` pattern for keys starting with `prefix` (`\` escapes). SQLite's
/// `LIKE` ignores ASCII case, so callers filter the rows again exactly.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A dynamic credential's lease as stored: what the store must query on
/// (its expiry, its state) in the clear, the rest sealed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// `database/creds/ROLE/<random>`.
    pub id: String,
    /// When it expires, Unix seconds.
    pub expires_at: i64,
    /// `active`, or `revoking` once expiry or a revocation started.
    pub state: String,
    /// Failed revocation attempts so far.
    pub attempts: i64,
    /// Not before this time is revocation tried again, Unix seconds.
    pub next_attempt: i64,
    /// The sealed details (the username, the role, the revocation SQL).
    pub sealed: Vec<u8>,
}

fn lease_fields(l: &LeaseRow) -> [Field<'_>; 5] {
    [
        Field::Int(l.expires_at),
        Field::Text(&l.state),
        Field::Int(l.attempts),
        Field::Int(l.next_attempt),
        Field::Bytes(&l.sealed),
    ]
}

fn lease_from_row(
    key: &RowKey,
    barrier: &barrier::Barrier,
    r: &sqlx::any::AnyRow,
) -> Result<LeaseRow> {
    let lease = LeaseRow {
        id: r.try_get(0)?,
        expires_at: r.try_get(1)?,
        state: r.try_get(2)?,
        attempts: r.try_get(3)?,
        next_attempt: r.try_get(4)?,
        sealed: r.try_get(5)?,
    };
    let mac: Option<String> = r.try_get(6)?;
    if !key.verify(LEASES, &lease.id, &lease_fields(&lease), mac.as_deref()) {
        barrier.reject(LEASES, &lease.id);
        return Err(StoreError::Integrity(format!("lease {}", lease.id)));
    }
    Ok(lease)
}

/// One vault write: read what it depends on, change it, and commit with its
/// audit records, all in one transaction.
pub struct VaultTx {
    tx: Transaction<'static, Any>,
    key: Arc<RowKey>,
    store: Store,
}

impl std::fmt::Debug for VaultTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultTx")
    }
}

fn verified(
    key: &RowKey,
    barrier: &barrier::Barrier,
    k: &str,
    value: Vec<u8>,
    mac: Option<String>,
) -> Result<Vec<u8>> {
    if key.verify(TABLE, k, &fields(&value), mac.as_deref()) {
        Ok(value)
    } else {
        barrier.reject(TABLE, k);
        Err(StoreError::Integrity(k.to_owned()))
    }
}

impl Store {
    /// The value under `key`, if any; an altered or moved row is an error.
    pub async fn vault_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let rk = self.row_key()?;
        let row = sqlx::query("SELECT value, mac FROM vault_records WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        verified(&rk, &self.barrier, key, r.try_get(0)?, r.try_get(1)?).map(Some)
    }

    /// Every key that starts with `prefix`, in order, with its value
    /// (each row authenticated).
    pub async fn vault_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let rk = self.row_key()?;
        let rows = sqlx::query(
            "SELECT key, value, mac FROM vault_records WHERE key LIKE $1 ESCAPE '\\' ORDER BY key",
        )
        .bind(like_prefix(prefix))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let k: String = r.try_get(0)?;
            if !k.starts_with(prefix) {
                continue;
            }
            let v = verified(&rk, &self.barrier, &k, r.try_get(1)?, r.try_get(2)?)?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// Starts a write. `lock` names the record the write is about: its row
    /// is locked first (SQLite takes its write lock, PostgreSQL the row's),
    /// so two check-and-set writes to one secret run one after the other.
    pub async fn vault_begin(&self, lock: &str) -> Result<VaultTx> {
        let key = self.row_key()?;
        let mut tx = match self.backend {
            // SQLite takes its (database-wide) write lock at once rather
            // than failing to upgrade a read lock later.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        match self.backend {
            Backend::Sqlite => {}
            // A lock on the key itself, held to the end of the transaction,
            // which also covers a record that does not exist yet (a row lock
            // would not: two creators would both see it absent).
            Backend::Postgres => {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7161003))")
                    .bind(lock)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(VaultTx {
            tx,
            key,
            store: self.clone(),
        })
    }

    /// Starts a transaction for a batch of writes (see `VaultTx::lock` and
    /// the savepoint methods): one commit, so one fsync, for the batch.
    pub async fn vault_begin_batch(&self) -> Result<VaultTx> {
        let key = self.row_key()?;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(VaultTx {
            tx,
            key,
            store: self.clone(),
        })
    }

    /// An HMAC of a value for the audit log (tokens, secret values, lease
    /// IDs' secret parts): equal values can be matched across records,
    /// nothing can be read back.
    pub fn audit_hmac(&self, value: &[u8]) -> Result<String> {
        Ok(self.row_key()?.value_hmac(value))
    }

    /// Leases due for revocation at `now` (expired, or being revoked and
    /// due for another attempt), longest due first, at most `limit`, none
    /// of those in `skip`. A row that fails the barrier is never acted on:
    /// it is counted, queued for audit and added to `skip`, so that forged
    /// rows cannot fill every batch and starve the real ones.
    pub async fn due_leases(
        &self,
        now: i64,
        limit: usize,
        skip: &mut std::collections::HashSet<String>,
    ) -> Result<Vec<LeaseRow>> {
        let rk = self.row_key()?;
        let rows = sqlx::query(
            "SELECT id, expires_at, state, attempts, next_attempt, sealed, mac FROM leases WHERE (state = 'active' AND expires_at <= $1) OR (state = 'revoking' AND next_attempt <= $1) ORDER BY CASE WHEN state = 'active' THEN expires_at ELSE next_attempt END, id LIMIT $2",
        )
        .bind(now)
        .bind((limit + skip.len()) as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(limit);
        for r in &rows {
            let id: String = r.try_get(0)?;
            if skip.contains(&id) {
                continue;
            }
            match lease_from_row(&rk, &self.barrier, r) {
                Ok(l) if out.len() < limit => out.push(l),
                Ok(_) => {}
                Err(StoreError::Integrity(_)) => {
                    skip.insert(id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Every lease whose ID starts with `prefix`.
    pub async fn leases(&self, prefix: &str) -> Result<Vec<LeaseRow>> {
        let rk = self.row_key()?;
        let rows = sqlx::query(
            "SELECT id, expires_at, state, attempts, next_attempt, sealed, mac FROM leases WHERE id LIKE $1 ESCAPE '\\' ORDER BY id",
        )
        .bind(like_prefix(prefix))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            match lease_from_row(&rk, &self.barrier, r) {
                Ok(l) if l.id.starts_with(prefix) => out.push(l),
                Ok(_) => {}
                // A forged row is left out (counted and queued for audit):
                // one bad row must not stop a revocation of all the others.
                Err(StoreError::Integrity(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Replaces `prev` by `next` only if the stored row is still exactly
    /// `prev` and active: a renewal that read the lease before a revocation
    /// marked it must not undo that revocation (nor bring back a lease
    /// that was revoked and deleted meanwhile). False if it was not.
    pub async fn renew_lease(
        &self,
        prev: &LeaseRow,
        next: &LeaseRow,
        audit: &[AuditEvent],
    ) -> Result<bool> {
        let rk = self.row_key()?;
        let prev_mac = rk.mac(LEASES, &prev.id, &lease_fields(prev));
        let next_mac = rk.mac(LEASES, &next.id, &lease_fields(next));
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE leases SET expires_at = $1, state = $2, attempts = $3, next_attempt = $4, sealed = $5, mac = $6 WHERE id = $7 AND state = 'active' AND mac = $8",
        )
        .bind(next.expires_at)
        .bind(&next.state)
        .bind(next.attempts)
        .bind(next.next_attempt)
        .bind(next.sealed.clone())
        .bind(next_mac)
        .bind(&prev.id)
        .bind(prev_mac)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Ok(false);
        }
        append_in_tx(&mut tx, &rk, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// One lease.
    pub async fn lease(&self, id: &str) -> Result<Option<LeaseRow>> {
        let rk = self.row_key()?;
        let row = sqlx::query("SELECT id, expires_at, state, attempts, next_attempt, sealed, mac FROM leases WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| lease_from_row(&rk, &self.barrier, &r))
            .transpose()
    }

    /// Stores or replaces a lease (with its audit record).
    pub async fn put_lease(&self, lease: &LeaseRow, audit: &[AuditEvent]) -> Result<()> {
        let rk = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        write_lease(&mut tx, &rk, lease).await?;
        append_in_tx(&mut tx, &rk, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a lease (its credential is gone), with its audit record.
    pub async fn delete_lease(&self, id: &str, audit: &[AuditEvent]) -> Result<()> {
        let rk = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM leases WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        append_in_tx(&mut tx, &rk, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tries to become the one replica that runs lease expiry: a
    /// PostgreSQL advisory lock held by one pooled connection for as long
    /// as it lives (another replica takes over when this one dies and its
    /// session ends). SQLite has one server per file: always the leader.
    pub async fn try_expiry_leadership(&self) -> Result<Option<ExpiryLeader>> {
        match self.backend {
            Backend::Sqlite => Ok(Some(ExpiryLeader { conn: None })),
            Backend::Postgres => {
                let mut conn = self.pool.acquire().await?;
                let row = sqlx::query("SELECT pg_try_advisory_lock(7161002)")
                    .fetch_one(&mut *conn)
                    .await?;
                let got: bool = row.try_get(0)?;
                Ok(got.then(|| ExpiryLeader {
                    conn: Some(conn.detach()),
                }))
            }
        }
    }
}

/// Held by the replica that runs lease expiry (see
/// [`Store::try_expiry_leadership`]). Dropping it closes the session, which
/// releases the lock.
#[derive(Debug)]
pub struct ExpiryLeader {
    conn: Option<sqlx::AnyConnection>,
}

impl ExpiryLeader {
    /// Whether the lock is still held: the session is still alive.
    pub async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(c) => sqlx::query("SELECT 1").execute(&mut *c).await.is_ok(),
        }
    }
}

async fn write_lease(tx: &mut Transaction<'_, Any>, key: &RowKey, l: &LeaseRow) -> Result<()> {
    let mac = key.mac(LEASES, &l.id, &lease_fields(l));
    sqlx::query(
        "INSERT INTO leases (id, expires_at, state, attempts, next_attempt, sealed, mac) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, state = excluded.state, attempts = excluded.attempts, next_attempt = excluded.next_attempt, sealed = excluded.sealed, mac = excluded.mac",
    )
    .bind(&l.id)
    .bind(l.expires_at)
    .bind(&l.state)
    .bind(l.attempts)
    .bind(l.next_attempt)
    .bind(l.sealed.clone())
    .bind(mac)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl VaultTx {
    /// Locks `key` until the end of the transaction (PostgreSQL; a SQLite
    /// transaction already holds the database's write lock).
    pub async fn lock(&mut self, key: &str) -> Result<()> {
        if self.store.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7161003))")
                .bind(key)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Marks where one write of a batch starts.
    pub async fn savepoint(&mut self) -> Result<()> {
        sqlx::raw_sql("SAVEPOINT ward_write")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Keeps the write since the savepoint.
    pub async fn release(&mut self) -> Result<()> {
        sqlx::raw_sql("RELEASE SAVEPOINT ward_write")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Undoes the write since the savepoint (the batch's others stay).
    pub async fn rollback_to(&mut self) -> Result<()> {
        sqlx::raw_sql("ROLLBACK TO SAVEPOINT ward_write; RELEASE SAVEPOINT ward_write")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The value under `key` as of this transaction.
    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value, mac FROM vault_records WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(r) = row else { return Ok(None) };
        verified(
            &self.key,
            &self.store.barrier,
            key,
            r.try_get(0)?,
            r.try_get(1)?,
        )
        .map(Some)
    }

    /// Writes `value` under `key` (replacing any).
    pub async fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let mac = self.key.mac(TABLE, key, &fields(value));
        sqlx::query(
            "INSERT INTO vault_records (key, value, mac) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET value = excluded.value, mac = excluded.mac",
        )
        .bind(key)
        .bind(value.to_vec())
        .bind(mac)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Removes `key`.
    pub async fn delete(&mut self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM vault_records WHERE key = $1")
            .bind(key)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Stores a lease in this transaction (a credential and its lease are
    /// recorded together).
    pub async fn put_lease(&mut self, lease: &LeaseRow) -> Result<()> {
        write_lease(&mut self.tx, &self.key, lease).await
    }

    /// Commits, with the write's audit records in the same transaction: an
    /// acknowledged write always has its record, and a write whose record
    /// cannot be stored does not happen.
    pub async fn commit(mut self, audit: &[AuditEvent]) -> Result<()> {
        append_in_tx(&mut self.tx, &self.key, audit).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::like_prefix;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_prefix("kv/a_b%c\\"), "kv/a\\_b\\%c\\\\%");
    }
}
