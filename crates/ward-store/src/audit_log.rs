//! The audit log as stored: appending (keyed chain), reading, verifying
//! up to the authenticated head.

use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::barrier::RowKey;
use crate::*;

/// The head of an audit chain that passed [`Store::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHead {
    /// Records checked.
    pub records: i64,
    /// The last sequence number.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

/// A record from a row whose first eight columns are `seq, ts_ms, actor,
/// action, target, detail, prev_hash, hash`.
fn audit_record(r: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get(0)?,
        ts_ms: r.try_get(1)?,
        actor: r.try_get(2)?,
        action: r.try_get(3)?,
        target: r.try_get(4)?,
        detail: r.try_get(5)?,
        prev_hash: r.try_get(6)?,
        hash: r.try_get(7)?,
    })
}

/// As [`append_in_tx`]; `genesis` is true only for the first record of a
/// new store: an empty chain anywhere else is a wiped one.
pub(crate) async fn append_records(
    tx: &mut Transaction<'_, Any>,
    key: &RowKey,
    events: &[AuditEvent],
    genesis: bool,
) -> Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // A write first (SQLite takes its write lock; replicas serialize here).
    let head = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash, mac")
        .fetch_one(&mut **tx)
        .await?;
    let head_seq: i64 = head.try_get(0)?;
    let mut prev: String = head.try_get(1)?;
    let head_mac: Option<String> = head.try_get(2)?;
    // The head must be one this server wrote. If it is not (the log was
    // truncated or rewritten and the head reset), the break is recorded in
    // the chain itself, under the key, before anything else is appended:
    // appending on top must not make the break disappear.
    // An empty chain is a fresh start only for the first record of
    // `initialize`; anywhere else it is a wiped one. (Nothing stored can say
    // "not initialized yet": a writer would delete it to pass a wipe off as
    // a fresh start.)
    let empty = head_seq == 0 && prev == audit::GENESIS_HASH && head_mac.is_none();
    let fresh = empty && genesis;
    let broken = !fresh && !barrier::same_mac(&key.head_mac(head_seq, &prev), head_mac.as_deref());
    let marker;
    let mut batch: Vec<&AuditEvent> = Vec::with_capacity(events.len() + 1);
    if broken {
        tracing::error!(
            head_seq,
            "the audit log's head fails authentication: records were truncated or rewritten without the master key"
        );
        marker = AuditEvent::new(
            "system",
            "audit.head_mismatch",
            "audit",
            serde_json::json!({ "head_seq": head_seq, "reason": "the stored head was not written by this server: records after it were removed or rewritten" }),
        );
        batch.push(&marker);
    }
    batch.extend(events.iter());
    let ts = now_ms();
    // (seq, detail, prev_hash, hash, mac) per record.
    let mut rows = Vec::with_capacity(batch.len());
    for (i, ev) in batch.iter().enumerate() {
        let seq = head_seq + 1 + i as i64;
        let detail = ev.detail.to_string();
        let hash = audit::record_hash(seq, ts, &ev.actor, &ev.action, &ev.target, &detail, &prev);
        let mac = key.audit_mac(&hash);
        let prev_hash = std::mem::replace(&mut prev, hash.clone());
        rows.push((seq, detail, prev_hash, hash, mac));
    }
    // One multi-row INSERT per batch: a round trip per record would cost
    // more than the records themselves under load.
    let placeholders: Vec<String> = (0..rows.len())
        .map(|i| {
            let b = i * 9;
            let cols: Vec<String> = (1..=9).map(|c| format!("${}", b + c)).collect();
            format!("({})", cols.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO audit (seq, ts_ms, actor, action, target, detail, prev_hash, hash, mac) VALUES {}",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for ((seq, detail, prev_hash, hash, mac), ev) in rows.iter().zip(&batch) {
        query = query
            .bind(*seq)
            .bind(ts)
            .bind(&ev.actor)
            .bind(&ev.action)
            .bind(&ev.target)
            .bind(detail)
            .bind(prev_hash)
            .bind(hash)
            .bind(mac);
    }
    query.execute(&mut **tx).await?;
    let last_seq = head_seq + rows.len() as i64;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2, mac = $3 WHERE id = 1")
        .bind(last_seq)
        .bind(&prev)
        .bind(key.head_mac(last_seq, &prev))
        .execute(&mut **tx)
        .await?;
    let skip = usize::from(broken);
    Ok(rows[skip..].iter().map(|r| r.0).collect())
}

impl Store {
    /// Appends events in one transaction; returns their sequence numbers.
    pub async fn append_audit(&self, events: &[AuditEvent]) -> Result<Vec<i64>> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        let seqs = append_in_tx(&mut tx, &key, events).await?;
        tx.commit().await?;
        Ok(seqs)
    }

    /// Records with `seq > after`, oldest first, at most `limit`.
    pub async fn audit_records(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, ts_ms, actor, action, target, detail, prev_hash, hash FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_record).collect()
    }

    /// Checks the keyed chain: every record present, in order, unedited
    /// (its hash) and written by this server (its MAC), no break recorded
    /// (`audit.head_mismatch`), and the head written by this server. Returns
    /// the number of records, or where the chain first fails.
    pub async fn verify_audit(&self) -> Result<std::result::Result<VerifiedHead, ChainError>> {
        let key = self.row_key()?;
        let head = sqlx::query("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let (head_seq, head_hash, head_mac): (i64, String, Option<String>) =
            (head.try_get(0)?, head.try_get(1)?, head.try_get(2)?);
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        'pages: loop {
            let rows = sqlx::query(
                "SELECT seq, ts_ms, actor, action, target, detail, prev_hash, hash, mac FROM audit WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT 1000",
            )
            .bind(after)
            .bind(head_seq)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let rec = audit_record(r)?;
                let mac: Option<String> = r.try_get(8)?;
                if rec.seq > head_seq {
                    break 'pages;
                }
                if let Err(e) = verifier.push(&rec) {
                    return Ok(Err(e));
                }
                if !barrier::same_mac(&key.audit_mac(&rec.hash), mac.as_deref()) {
                    return Ok(Err(ChainError {
                        seq: rec.seq,
                        reason: "its MAC does not match: the record (or the chain up to it) was written without the master key".into(),
                    }));
                }
                if rec.action == "audit.head_mismatch" {
                    let lost = serde_json::from_str::<serde_json::Value>(&rec.detail)
                        .ok()
                        .and_then(|d| d["head_seq"].as_i64())
                        .unwrap_or(rec.seq - 1);
                    return Ok(Err(ChainError {
                        seq: lost + 1,
                        reason: format!(
                            "at record {}, the server found the head it had written replaced: records after {lost} were removed or rewritten",
                            rec.seq
                        ),
                    }));
                }
                after = rec.seq;
            }
            if rows.len() < 1000 || after >= head_seq {
                break;
            }
        }
        let counted = match verifier.finish(head_seq, &head_hash) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        // Every head is one the server wrote, the empty one included (an
        // initialized store's chain is never empty; see `append_records`).
        if !barrier::same_mac(&key.head_mac(head_seq, &head_hash), head_mac.as_deref()) {
            return Ok(Err(ChainError {
                seq: head_seq + 1,
                reason: format!(
                    "the head (record {head_seq}) was not written by this server: records after {head_seq} were removed, or the head was reset"
                ),
            }));
        }
        if head_seq == 0 {
            return Ok(Err(ChainError {
                seq: 1,
                reason:
                    "the log is empty, but the store was initialized (its first record is gone)"
                        .into(),
            }));
        }
        Ok(Ok(VerifiedHead {
            records: counted,
            seq: head_seq,
            hash: head_hash,
        }))
    }

    /// The chain's head: last sequence number and hash.
    pub async fn audit_head(&self) -> Result<(i64, String)> {
        let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }
}
