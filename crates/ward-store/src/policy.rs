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
        tx.commit().await?;
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

    /// Appends one batch of edge reports from `reporter`.
    pub async fn record_edges(&self, reporter: &str, edges: &[EdgeReport]) -> Result<()> {
        if edges.is_empty() {
            return Ok(());
        }
        let now = now_secs();
        let mut tx = self.pool.begin().await?;
        // One multi-row INSERT per chunk (SQLite allows 32,766 binds).
        for chunk in edges.chunks(500) {
            let mut sql = String::from(
                "INSERT INTO edge_reports (received_at, reporter, source, destination, method, route, status_class, decision, requests, latency_us_sum, window_start, window_end) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 12;
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                sql.push_str(
                    &(1..=12)
                        .map(|k| format!("${}", b + k))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                sql.push(')');
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(now)
                    .bind(reporter)
                    .bind(&e.source)
                    .bind(&e.destination)
                    .bind(&e.method)
                    .bind(&e.route)
                    .bind(&e.status_class)
                    .bind(&e.decision)
                    .bind(e.requests)
                    .bind(e.latency_us_sum)
                    .bind(e.window_start)
                    .bind(e.window_end);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Totals per edge over reports received at or after `since` (Unix seconds).
    pub async fn edge_totals(&self, since: i64) -> Result<Vec<EdgeTotal>> {
        let rows = sqlx::query(
            "SELECT source, destination, method, route, status_class, decision, \
             CAST(SUM(requests) AS BIGINT), CAST(SUM(latency_us_sum) AS BIGINT), MAX(window_end) \
             FROM edge_reports WHERE received_at >= $1 \
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
