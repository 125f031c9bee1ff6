//! API tokens, join tokens, and the node names they claim.

use sqlx::{Any, Row, Transaction};

use crate::barrier::RowKey;
use crate::*;

/// An API token (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public token ID, used in audit records.
    pub id: String,
    /// What it may do.
    pub role: String,
    /// Expiry, Unix seconds; `None` never expires.
    pub expires_at: Option<i64>,
    /// When it was made, Unix seconds.
    pub created_at: i64,
}

/// What happened when a join token was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinTokenUse {
    /// The token was valid and is now spent; its ID.
    Consumed(String),
    /// No such token.
    Unknown,
    /// Already used.
    Spent,
    /// Past its expiry.
    Expired,
    /// Bound to another node (the token stays unspent).
    WrongNode(String),
    /// This node name is already attested, and the token is not bound to it
    /// (the token stays unspent).
    NodeExists,
    /// Fewer node records than names ever claimed: a writer deleted one,
    /// so an unbound token could take over its name. Unbound tokens are
    /// refused until then (the token stays unspent); bound ones still work.
    NodeRecordsMissing,
}

pub(crate) async fn insert_token(
    tx: &mut Transaction<'_, Any>,
    key: &RowKey,
    id: &str,
    hash: &str,
    role: &str,
    expires_at: Option<i64>,
) -> Result<()> {
    let created_at = now_secs();
    let mac = key.mac(
        "tokens",
        id,
        &rows::token(hash, role, created_at, expires_at),
    );
    sqlx::query(
        "INSERT INTO tokens (id, hash, role, created_at, expires_at, mac) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(hash)
    .bind(role)
    .bind(created_at)
    .bind(expires_at)
    .bind(mac)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The settings (one per node) naming its current node SVIDs' serials.
const NODE_SVID: &str = "node.svid/";

/// The setting that counts node names ever claimed by an unbound join
/// token or an upgrade (nodes are never deleted, so it only grows).
pub(crate) const NODES_CLAIMED: &str = "nodes.claimed";

/// The authenticated count of claimed node names; `None` when the row is
/// missing or fails the barrier.
pub(crate) async fn claimed_nodes(
    tx: &mut Transaction<'_, Any>,
    key: &RowKey,
) -> Result<Option<u64>> {
    let row = sqlx::query("SELECT value, mac FROM meta WHERE key = $1")
        .bind(NODES_CLAIMED)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let (value, mac): (String, Option<String>) = (r.try_get(0)?, r.try_get(1)?);
    if !key.verify(
        "meta",
        NODES_CLAIMED,
        &rows::setting(&value),
        mac.as_deref(),
    ) {
        return Ok(None);
    }
    Ok(value.parse().ok())
}

/// A node's row: missing, failing the barrier, or verified (with its
/// attestation time).
enum NodeRow {
    Absent,
    Forged,
    Verified(i64),
}

async fn node_row<'e, E: sqlx::Executor<'e, Database = Any>>(
    exec: E,
    key: &RowKey,
    node_id: &str,
) -> Result<NodeRow> {
    let row = sqlx::query("SELECT join_token_id, attested_at, mac FROM nodes WHERE spiffe_id = $1")
        .bind(node_id)
        .fetch_optional(exec)
        .await?;
    let Some(r) = row else {
        return Ok(NodeRow::Absent);
    };
    let (token, at, mac): (String, i64, Option<String>) =
        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
    Ok(
        if key.verify("nodes", node_id, &rows::node(&token, at), mac.as_deref()) {
            NodeRow::Verified(at)
        } else {
            NodeRow::Forged
        },
    )
}

/// How many node rows pass the barrier.
pub(crate) async fn verified_nodes(tx: &mut Transaction<'_, Any>, key: &RowKey) -> Result<u64> {
    let mut n = 0;
    for r in sqlx::query("SELECT spiffe_id, join_token_id, attested_at, mac FROM nodes")
        .fetch_all(&mut **tx)
        .await?
    {
        let (id, token, at, mac): (String, String, i64, Option<String>) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        if key.verify("nodes", &id, &rows::node(&token, at), mac.as_deref()) {
            n += 1;
        }
    }
    Ok(n)
}

pub(crate) fn join_token_mac(
    key: &RowKey,
    id: &str,
    hash: &str,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    node_id: Option<&str>,
) -> String {
    key.mac(
        "join_tokens",
        id,
        &rows::join_token(hash, created_at, expires_at, used_at, node_id),
    )
}

impl Store {
    /// Looks up an API token by the hash of its value.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let key = self.row_key()?;
        let row =
            sqlx::query("SELECT id, role, expires_at, created_at, mac FROM tokens WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        let Some(r) = row else { return Ok(None) };
        let token = TokenRecord {
            id: r.try_get(0)?,
            role: r.try_get(1)?,
            expires_at: r.try_get(2)?,
            created_at: r.try_get(3)?,
        };
        let mac: Option<String> = r.try_get(4)?;
        let fields = rows::token(hash, &token.role, token.created_at, token.expires_at);
        if !key.verify("tokens", &token.id, &fields, mac.as_deref()) {
            self.barrier.reject("tokens", &token.id);
            return Ok(None);
        }
        Ok(Some(token))
    }

    /// Stores a new API token (its hash only) with its audit record.
    pub async fn create_token(
        &self,
        id: &str,
        hash: &str,
        role: &str,
        expires_at: Option<i64>,
        audit: &[AuditEvent],
    ) -> Result<()> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        insert_token(&mut tx, &key, id, hash, role, expires_at).await?;
        append_in_tx(&mut tx, &key, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a token's expiry to `expires_at` (a renewal). `verified` is
    /// the token as the caller was authenticated with it (read through the
    /// barrier): the row is changed only if it is still exactly that row, MAC
    /// and all, so a row a database writer edited (another role, another
    /// creation time) is never re-signed with the master key's MAC.
    pub async fn renew_token(
        &self,
        hash: &str,
        verified: &TokenRecord,
        expires_at: i64,
        audit: &[AuditEvent],
    ) -> Result<TokenRecord> {
        let key = self.row_key()?;
        let old_mac = key.mac(
            "tokens",
            &verified.id,
            &rows::token(
                hash,
                &verified.role,
                verified.created_at,
                verified.expires_at,
            ),
        );
        let new_mac = key.mac(
            "tokens",
            &verified.id,
            &rows::token(hash, &verified.role, verified.created_at, Some(expires_at)),
        );
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE tokens SET expires_at = $1, mac = $2 WHERE hash = $3 AND id = $4 AND role = $5 AND created_at = $6 AND mac = $7",
        )
        .bind(expires_at)
        .bind(new_mac)
        .bind(hash)
        .bind(&verified.id)
        .bind(&verified.role)
        .bind(verified.created_at)
        .bind(old_mac)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            // Revoked meanwhile, or the row is no longer the one verified.
            return Err(StoreError::NotFound {
                what: "token",
                id: verified.id.clone(),
            });
        }
        append_in_tx(&mut tx, &key, audit).await?;
        tx.commit().await?;
        Ok(TokenRecord {
            expires_at: Some(expires_at),
            ..verified.clone()
        })
    }

    /// Deletes a token, with its audit record.
    pub async fn revoke_token(&self, hash: &str, audit: &[AuditEvent]) -> Result<()> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM tokens WHERE hash = $1")
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        append_in_tx(&mut tx, &key, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many tokens of `role` are still live at `now` (to bound what
    /// one identity can hold).
    pub async fn live_tokens(&self, role: &str, now: i64) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM tokens WHERE role = $1 AND expires_at > $2")
            .bind(role)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Removes tokens that expired before `before` (never the admin's,
    /// which do not expire).
    pub async fn prune_tokens(&self, before: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// When the node was last attested (with a join token), if its record
    /// is there and passes the barrier.
    pub async fn node_attested_at(&self, node_id: &str) -> Result<Option<i64>> {
        let key = self.row_key()?;
        Ok(match node_row(&self.pool, &key, node_id).await? {
            NodeRow::Verified(at) => Some(at),
            NodeRow::Forged => {
                self.barrier.reject("nodes", node_id);
                None
            }
            NodeRow::Absent => None,
        })
    }

    /// The serials of the node SVIDs that are the node's own now: the
    /// newest and the one it replaced (whose renewal answer may have been
    /// lost), or `None` when none is recorded (or the record fails the
    /// barrier).
    pub async fn node_svids(&self, node_id: &str) -> Result<Option<Vec<String>>> {
        let value = self.meta_verified(&format!("{NODE_SVID}{node_id}")).await?;
        Ok(value.map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }))
    }

    /// Records the node SVIDs that are the node's own: `current`, and the
    /// one it replaced if it was renewed (`None` after an attestation,
    /// which ends every earlier one).
    pub async fn record_node_svid(
        &self,
        node_id: &str,
        current: &str,
        replaced: Option<&str>,
    ) -> Result<()> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        let value = match replaced {
            Some(r) => format!("{current},{r}"),
            None => current.to_owned(),
        };
        insert_meta(&mut tx, &key, &format!("{NODE_SVID}{node_id}"), &value).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a new join token (its hash only).
    pub async fn create_join_token(
        &self,
        id: &str,
        hash: &str,
        expires_at: i64,
        node_id: Option<&str>,
        audit: AuditEvent,
    ) -> Result<()> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        bump_revision(&mut tx).await?;
        let created_at = now_secs();
        let mac = join_token_mac(&key, id, hash, created_at, expires_at, None, node_id);
        sqlx::query(
            "INSERT INTO join_tokens (id, hash, created_at, expires_at, node_id, mac) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(hash)
        .bind(created_at)
        .bind(expires_at)
        .bind(node_id)
        .bind(mac)
        .execute(&mut *tx)
        .await?;
        append_in_tx(&mut tx, &key, &[audit]).await?;
        self.commit_change(tx).await?;
        Ok(())
    }

    /// Spends a join token for the node `node_id`: succeeds once, before
    /// its expiry, for the node it is bound to (if any), and never for a node
    /// name already attested unless the token is bound to it: a join token
    /// must not let anyone take over an existing node's identity. Atomic, so
    /// two agents racing with one token get one success.
    pub async fn consume_join_token(
        &self,
        hash: &str,
        node_id: &str,
        now: i64,
        audit: AuditEvent,
    ) -> Result<JoinTokenUse> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE join_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING id, node_id, created_at, expires_at, mac",
        )
        .bind(now)
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let row = sqlx::query("SELECT used_at FROM join_tokens WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&mut *tx)
                .await?;
            return Ok(match row {
                None => JoinTokenUse::Unknown,
                Some(r) if r.try_get::<Option<i64>, _>(0)?.is_some() => JoinTokenUse::Spent,
                Some(_) => JoinTokenUse::Expired,
            });
        };
        let id: String = row.try_get(0)?;
        let bound: Option<String> = row.try_get(1)?;
        let (created_at, expires_at): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
        let mac: Option<String> = row.try_get(4)?;
        // The row as it was before this use must be one the server wrote.
        if !key.verify(
            "join_tokens",
            &id,
            &rows::join_token(hash, created_at, expires_at, None, bound.as_deref()),
            mac.as_deref(),
        ) {
            // Dropping the transaction rolls the use back.
            self.barrier.reject("join_tokens", &id);
            return Ok(JoinTokenUse::Unknown);
        }
        sqlx::query("UPDATE join_tokens SET mac = $1 WHERE id = $2")
            .bind(join_token_mac(
                &key,
                &id,
                hash,
                created_at,
                expires_at,
                Some(now),
                bound.as_deref(),
            ))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let node_mac = key.mac("nodes", node_id, &rows::node(&id, now));
        // Returning without commit rolls back: the token stays unspent.
        if let Some(b) = &bound
            && b != node_id
        {
            return Ok(JoinTokenUse::WrongNode(b.clone()));
        }
        // The count of claimed names is read and written under its row's
        // lock (taken by this no-op update), so concurrent attestations
        // count one after another instead of all from the same value.
        sqlx::query("UPDATE meta SET value = value WHERE key = $1")
            .bind(NODES_CLAIMED)
            .execute(&mut *tx)
            .await?;
        let recorded = claimed_nodes(&mut tx, &key).await?;
        let present = verified_nodes(&mut tx, &key).await?;
        if bound.is_some() {
            // A bound token may re-attest its node, or claim a new name
            // (which is counted like any other).
            let new_name = !matches!(
                node_row(&mut *tx, &key, node_id).await?,
                NodeRow::Verified(_)
            );
            sqlx::query(
                "INSERT INTO nodes (spiffe_id, join_token_id, attested_at, mac) VALUES ($1, $2, $3, $4) ON CONFLICT (spiffe_id) DO UPDATE SET join_token_id = excluded.join_token_id, attested_at = excluded.attested_at, mac = excluded.mac",
            )
            .bind(node_id)
            .bind(&id)
            .bind(now)
            .bind(&node_mac)
            .execute(&mut *tx)
            .await?;
            // A missing or forged count stays missing: unbound tokens stay
            // refused rather than trust a count rebuilt from what is left.
            if let Some(n) = recorded
                && new_name
            {
                insert_meta(
                    &mut tx,
                    &key,
                    NODES_CLAIMED,
                    &(n.max(present) + 1).to_string(),
                )
                .await?;
            }
        } else {
            // An unbound one only claims a new name. A writer could make an
            // attested name "new" again by deleting its row; the
            // authenticated count of claimed names exposes that, and then
            // no unbound token claims anything until an operator binds one.
            if recorded.is_none_or(|n| present < n) {
                self.barrier.reject("nodes", NODES_CLAIMED);
                return Ok(JoinTokenUse::NodeRecordsMissing);
            }
            // The insert itself is the check, so two racing tokens cannot
            // both claim one name (a SELECT first would let both pass under
            // READ COMMITTED).
            let claimed = sqlx::query(
                "INSERT INTO nodes (spiffe_id, join_token_id, attested_at, mac) VALUES ($1, $2, $3, $4) ON CONFLICT (spiffe_id) DO NOTHING",
            )
            .bind(node_id)
            .bind(&id)
            .bind(now)
            .bind(&node_mac)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                return Ok(JoinTokenUse::NodeExists);
            }
            let next = recorded.unwrap_or(0).max(present) + 1;
            insert_meta(&mut tx, &key, NODES_CLAIMED, &next.to_string()).await?;
        }
        append_in_tx(&mut tx, &key, &[audit]).await?;
        tx.commit().await?;
        Ok(JoinTokenUse::Consumed(id))
    }
}
