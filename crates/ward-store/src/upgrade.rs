//! Turning the barrier on, and upgrading a store that predates it.

use sqlx::{AssertSqlSafe, Row};

use crate::barrier::{BARRIER_META, BARRIER_ON};
use crate::*;

/// What turning the barrier on found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarrierStart {
    /// The store was already authenticated.
    On,
    /// The store predated the barrier: this many rows were authenticated
    /// as they are now.
    Upgraded {
        /// Rows given a MAC.
        rows: u64,
    },
}

impl Store {
    /// Turns the barrier on after an unlock. A store written by this
    /// version is already on. A store that predates it (its marker row
    /// absent) is upgraded only when `allow_upgrade`: every row is
    /// authenticated as it is now, in one transaction, with an audit
    /// record. Without `allow_upgrade` a missing or forged marker is
    /// [`StoreError::BarrierMissing`]: a writer who deletes the marker must
    /// not get its forged rows authenticated by the next unseal, so only an
    /// operator may ask for the upgrade.
    pub async fn enable_barrier(&self, allow_upgrade: bool) -> Result<BarrierStart> {
        let key = self.row_key()?;
        if self.meta_verified(BARRIER_META).await?.as_deref() == Some(BARRIER_ON) {
            return Ok(BarrierStart::On);
        }
        if !allow_upgrade {
            return Err(StoreError::BarrierMissing);
        }
        // A store the barrier was on for still holds rows this key wrote
        // (unless a writer stripped every MAC, which nothing can tell from
        // an old store): then the marker was removed, and this is no upgrade.
        let head = sqlx::query("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        if let Some(h) = head {
            let (seq, hash, mac): (i64, String, Option<String>) =
                (h.try_get(0)?, h.try_get(1)?, h.try_get(2)?);
            if barrier::same_mac(&key.head_mac(seq, &hash), mac.as_deref()) {
                tracing::error!(
                    "the store's barrier marker is gone but its audit head was written under this key: the marker was removed; refusing to upgrade"
                );
                return Err(StoreError::BarrierMissing);
            }
        }
        let mut tx = self.pool.begin().await?;
        bump_revision(&mut tx).await?;
        let mut rows = 0u64;
        let set = |table: &'static str, pk_col: &'static str, pk: String, mac: String| {
            (table, pk_col, pk, mac)
        };
        let mut updates = Vec::new();
        for r in sqlx::query("SELECT id, hash, role, created_at, expires_at FROM tokens")
            .fetch_all(&mut *tx)
            .await?
        {
            let (id, hash, role): (String, String, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            let f = rows::token(&hash, &role, r.try_get(3)?, r.try_get(4)?);
            let mac = key.mac("tokens", &id, &f);
            updates.push(set("tokens", "id", id, mac));
        }
        for r in sqlx::query(
            "SELECT id, hash, created_at, expires_at, used_at, node_id FROM join_tokens",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let (id, hash): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            let node: Option<String> = r.try_get(5)?;
            let f = rows::join_token(
                &hash,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                node.as_deref(),
            );
            let mac = key.mac("join_tokens", &id, &f);
            updates.push(set("join_tokens", "id", id, mac));
        }
        for r in sqlx::query("SELECT spiffe_id, join_token_id, attested_at FROM nodes")
            .fetch_all(&mut *tx)
            .await?
        {
            let (id, token): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            let mac = key.mac("nodes", &id, &rows::node(&token, r.try_get(2)?));
            updates.push(set("nodes", "spiffe_id", id, mac));
        }
        for r in sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM entries"
        )))
        .fetch_all(&mut *tx)
        .await?
        {
            // A row that does not even parse stays unauthenticated (absent).
            if let Ok(e) = entry_from_row(&r) {
                let mac = rows::entry_mac(&key, &e);
                updates.push(set("entries", "id", e.id, mac));
            }
        }
        for r in sqlx::query(AssertSqlSafe(format!("SELECT {CA_COLUMNS} FROM cas")))
            .fetch_all(&mut *tx)
            .await?
        {
            if let Ok(c) = ca_from_row(&r) {
                let mac = rows::ca_mac(&key, &c);
                updates.push(set("cas", "id", c.id, mac));
            }
        }
        for r in
            sqlx::query("SELECT version, revision, text, sha256, created_at, actor FROM policies")
                .fetch_all(&mut *tx)
                .await?
        {
            let p = policy::policy_from_row(&r)?;
            let mac = rows::policy_mac(&key, &p);
            updates.push(set("policies", "version", p.version.to_string(), mac));
        }
        for r in sqlx::query("SELECT name, blob FROM sealed_blobs")
            .fetch_all(&mut *tx)
            .await?
        {
            let (name, blob): (String, Vec<u8>) = (r.try_get(0)?, r.try_get(1)?);
            let mac = key.mac("sealed_blobs", &name, &rows::blob(&blob));
            updates.push(set("sealed_blobs", "name", name, mac));
        }
        for r in sqlx::query("SELECT key, value FROM meta")
            .fetch_all(&mut *tx)
            .await?
        {
            let (k, v): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            let mac = key.mac("meta", &k, &rows::setting(&v));
            updates.push(set("meta", "key", k, mac));
        }
        for (table, pk_col, pk, mac) in &updates {
            let sql = if *table == "policies" {
                // The only integer primary key.
                format!("UPDATE {table} SET mac = $1 WHERE CAST({pk_col} AS TEXT) = $2")
            } else {
                format!("UPDATE {table} SET mac = $1 WHERE {pk_col} = $2")
            };
            sqlx::query(AssertSqlSafe(sql))
                .bind(mac)
                .bind(pk)
                .execute(&mut *tx)
                .await?;
            rows += 1;
        }
        // The audit log, record by record, and its head: as they are.
        for r in sqlx::query("SELECT seq, hash FROM audit")
            .fetch_all(&mut *tx)
            .await?
        {
            let (seq, hash): (i64, String) = (r.try_get(0)?, r.try_get(1)?);
            sqlx::query("UPDATE audit SET mac = $1 WHERE seq = $2")
                .bind(key.audit_mac(&hash))
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            rows += 1;
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let (seq, hash): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
        sqlx::query("UPDATE audit_head SET mac = $1 WHERE id = 1")
            .bind(key.head_mac(seq, &hash))
            .execute(&mut *tx)
            .await?;
        insert_meta(&mut tx, &key, BARRIER_META, BARRIER_ON).await?;
        let nodes = verified_nodes(&mut tx, &key).await?;
        insert_meta(&mut tx, &key, NODES_CLAIMED, &nodes.to_string()).await?;
        append_in_tx(
            &mut tx,
            &key,
            &[AuditEvent::new(
                "system",
                "barrier.enable",
                "store",
                serde_json::json!({ "rows_authenticated": rows }),
            )],
        )
        .await?;
        self.commit_change(tx).await?;
        Ok(BarrierStart::Upgraded { rows })
    }
}
