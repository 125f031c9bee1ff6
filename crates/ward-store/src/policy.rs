//! Policy versions and the call edges proxies report.

use serde::{Deserialize, Serialize};
use sqlx::Row;

pub use ward_api::{EdgeReport, EdgeTotal};

use crate::{AuditEvent, Result, Store, StoreError, append_in_tx, bump_revision, now_secs};

/// One stored version of the policy set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// 1, 2, 3… in push order.
    pub version: i64,
    /// The store revision the push advanced to.
    pub revision: i64,
    /// The Cedar text, as pushed.
    pub text: String,
    /// Hex SHA-256 of the text.
    pub sha256: String,
    pub created_at: i64,
    /// Who pushed it (`token:<id>`).
    pub actor: String,
}

/// The largest count one report may add (a proxy reporting every 5 s at
/// this rate for the whole retention would still sum within 64 bits).
const MAX_COUNT: i64 = 1 << 40;

impl Store {
    /// Stores a new policy version (the text was validated by the caller)
    /// and advances the revision, in one transaction with its audit record.
    pub async fn push_policy(
        &self,
        text: &str,
        sha256: &str,
        actor: &str,
        audit: AuditEvent,
    ) -> Result<PolicyRecord> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        let revision = bump_revision(&mut tx).await?;
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM policies")
            .fetch_one(&mut *tx)
            .await?;
        let version: i64 = row.try_get::<i64, _>(0)? + 1;
        let record = PolicyRecord {
            version,
            revision,
            text: text.to_owned(),
            sha256: sha256.to_owned(),
            created_at: now_secs(),
            actor: actor.to_owned(),
        };
        sqlx::query(
            "INSERT INTO policies (version, revision, text, sha256, created_at, actor, mac) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(record.version)
        .bind(record.revision)
        .bind(&record.text)
        .bind(&record.sha256)
        .bind(record.created_at)
        .bind(&record.actor)
        .bind(crate::rows::policy_mac(&key, &record))
        .execute(&mut *tx)
        .await
        .map_err(|e| match e.as_database_error() {
            Some(d) if d.is_unique_violation() => {
                StoreError::Conflict("another policy was pushed at the same time; push again".into())
            }
            _ => StoreError::Database(e),
        })?;
        append_in_tx(&mut tx, &key, &[audit]).await?;
        self.commit_change(tx).await?;
        Ok(record)
    }

    /// The newest policy version, if any was pushed.
    ///
    /// If the newest version fails the barrier (its text was changed, or
    /// it was inserted, without the master key), this is an error rather
    /// than an older version: proxies keep the last good policy they have,
    /// and nothing rolls back to a version an attacker chose.
    pub async fn current_policy(&self) -> Result<Option<PolicyRecord>> {
        let key = self.row_key()?;
        let row = sqlx::query(
            "SELECT version, revision, text, sha256, created_at, actor, mac FROM policies ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let record = policy_from_row(&r)?;
        let mac: Option<String> = r.try_get(6)?;
        if !crate::rows::policy_ok(&key, &record, mac.as_deref()) {
            self.barrier.reject("policies", &record.version.to_string());
            return Err(StoreError::Invalid(format!(
                "policy version {} fails authentication (changed without the master key); push the policy again",
                record.version
            )));
        }
        Ok(Some(record))
    }

    /// The store's current revision (entries and policies).
    pub async fn revision(&self) -> Result<i64> {
        let row = sqlx::query("SELECT value FROM revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Adds one batch of edge reports from `reporter` into its per-minute
    /// windows (one row per edge per minute, however many reports arrive:
    /// a flood of batches cannot grow the table). A reporter's distinct
    /// edges per minute are bounded by `max_edges`; the rest are counted
    /// under one `(other)` edge. Returns how many edges were folded so.
    pub async fn record_edges(
        &self,
        reporter: &str,
        edges: &[EdgeReport],
        max_edges: usize,
    ) -> Result<usize> {
        if edges.is_empty() {
            return Ok(0);
        }
        let now = now_secs();
        let window = now - now.rem_euclid(60);
        let mut tx = self.pool.begin().await?;
        // A write first: SQLite takes its write lock at once.
        bump_edge_lock(&mut tx).await?;
        let known: i64 = sqlx::query(
            "SELECT COUNT(*) FROM edge_windows WHERE reporter = $1 AND window_start = $2",
        )
        .bind(reporter)
        .bind(window)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let mut room = max_edges.saturating_sub(known as usize);
        // Summed per edge first: one upsert per distinct edge.
        type Key = (String, String, String, String, String, String);
        let mut sums: std::collections::BTreeMap<Key, (i64, i64, i64)> = Default::default();
        let mut folded = 0;
        for e in edges {
            let mut key: Key = (
                e.source.clone(),
                e.destination.clone(),
                e.method.clone(),
                e.route.clone(),
                e.status_class.clone(),
                e.decision.clone(),
            );
            if !sums.contains_key(&key) {
                if room > 1 {
                    room -= 1;
                } else {
                    // Everything but the reporter's own end, so invented
                    // peers cannot make rows either.
                    if key.0 != reporter {
                        key.0 = "(other)".into();
                    }
                    if key.1 != reporter {
                        key.1 = "(other)".into();
                    }
                    key.2 = "(other)".into();
                    key.3 = "(other)".into();
                    key.4 = "(other)".into();
                    folded += 1;
                }
            }
            // Bounded per report, so that sums over the retention period
            // stay far from overflowing 64 bits.
            let s = sums.entry(key).or_default();
            s.0 = s.0.saturating_add(e.requests.clamp(0, MAX_COUNT));
            s.1 = s.1.saturating_add(e.latency_us_sum.clamp(0, MAX_COUNT));
            s.2 = s.2.max(e.window_end);
        }
        for ((source, destination, method, route, status_class, decision), (n, lat, seen)) in sums {
            sqlx::query(
                "INSERT INTO edge_windows (reporter, source, destination, method, route, status_class, decision, window_start, requests, latency_us_sum, last_seen, last_received) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (reporter, source, destination, method, route, status_class, decision, window_start) DO UPDATE SET \
                 requests = edge_windows.requests + excluded.requests, \
                 latency_us_sum = edge_windows.latency_us_sum + excluded.latency_us_sum, \
                 last_seen = CASE WHEN excluded.last_seen > edge_windows.last_seen THEN excluded.last_seen ELSE edge_windows.last_seen END, \
                 last_received = excluded.last_received",
            )
            .bind(reporter)
            .bind(source)
            .bind(destination)
            .bind(method)
            .bind(route)
            .bind(status_class)
            .bind(decision)
            .bind(window)
            .bind(n)
            .bind(lat)
            .bind(seen)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(folded)
    }

    /// Deletes telemetry windows that ended before `before` (retention).
    pub async fn prune_edges(&self, before: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM edge_windows WHERE window_start + 60 <= $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// How many telemetry rows are stored.
    pub async fn edge_rows(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM edge_windows")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    /// Totals per edge over reports received at or after `since` (Unix seconds).
    pub async fn edge_totals(&self, since: i64) -> Result<Vec<EdgeTotal>> {
        let rows = sqlx::query(
            "SELECT source, destination, method, route, status_class, decision, \
             CAST(SUM(requests) AS BIGINT), CAST(SUM(latency_us_sum) AS BIGINT), MAX(last_seen) \
             FROM edge_windows WHERE last_received >= $1 \
             GROUP BY source, destination, method, route, status_class, decision \
             ORDER BY source, destination, method, route, status_class, decision",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EdgeTotal {
                    source: r.try_get(0)?,
                    destination: r.try_get(1)?,
                    method: r.try_get(2)?,
                    route: r.try_get(3)?,
                    status_class: r.try_get(4)?,
                    decision: r.try_get(5)?,
                    requests: r.try_get(6)?,
                    latency_us_sum: r.try_get(7)?,
                    last_seen: r.try_get(8)?,
                })
            })
            .collect()
    }
}

/// A `policies` row (version, revision, text, sha256, created_at, actor).
pub(crate) fn policy_from_row(r: &sqlx::any::AnyRow) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        version: r.try_get(0)?,
        revision: r.try_get(1)?,
        text: r.try_get(2)?,
        sha256: r.try_get(3)?,
        created_at: r.try_get(4)?,
        actor: r.try_get(5)?,
    })
}

/// Takes SQLite's write lock before the first read of a telemetry write
/// (a no-op row update; PostgreSQL serializes on the upserts).
async fn bump_edge_lock(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
    sqlx::query("UPDATE revision SET value = value WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}
