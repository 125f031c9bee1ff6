//! Registration entries and the per-node change feed agents sync from.

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::barrier::RowKey;
use crate::*;

/// Entries changed after a revision, and those deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryChanges {
    /// Entries created or updated (all entries when asked from revision 0).
    pub entries: Vec<EntryRecord>,
    /// IDs of entries deleted since.
    pub deleted: Vec<String>,
    /// The store's revision when read.
    pub revision: i64,
}

/// Records that entry `id` is gone from `parent`'s view at `revision`.
pub(crate) async fn tombstone(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    parent: &str,
    revision: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO entry_tombstones (id, revision, parent_id) VALUES ($1, $2, $3) ON CONFLICT (id, parent_id) DO UPDATE SET revision = excluded.revision")
        .bind(id)
        .bind(revision)
        .bind(parent)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) const ENTRY_COLUMNS: &str = "id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, created_at, updated_at, revision, labels";

pub(crate) fn entry_from_row(r: &AnyRow) -> Result<EntryRecord> {
    let selectors: String = r.try_get(3)?;
    Ok(EntryRecord {
        id: r.try_get(0)?,
        spiffe_id: r.try_get(1)?,
        parent_id: r.try_get(2)?,
        selectors: serde_json::from_str(&selectors)
            .map_err(|e| StoreError::Invalid(format!("entry selectors: {e}")))?,
        x509_ttl: r.try_get(4)?,
        jwt_ttl: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        revision: r.try_get(8)?,
        labels: {
            let labels: String = r.try_get(9)?;
            serde_json::from_str(&labels)
                .map_err(|e| StoreError::Invalid(format!("entry labels: {e}")))?
        },
    })
}

impl Store {
    /// Creates an entry; its `revision` is set by the store.
    pub async fn create_entry(
        &self,
        mut entry: EntryRecord,
        audit: AuditEvent,
    ) -> Result<EntryRecord> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        entry.revision = bump_revision(&mut tx).await?;
        sqlx::query(
            "INSERT INTO entries (id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, created_at, updated_at, revision, labels, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&entry.id)
        .bind(&entry.spiffe_id)
        .bind(&entry.parent_id)
        .bind(serde_json::to_string(&entry.selectors).unwrap_or_default())
        .bind(entry.x509_ttl)
        .bind(entry.jwt_ttl)
        .bind(entry.created_at)
        .bind(entry.updated_at)
        .bind(entry.revision)
        .bind(serde_json::to_string(&entry.labels).unwrap_or_default())
        .bind(rows::entry_mac(&key, &entry))
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, "an entry with this ID already exists"))?;
        append_in_tx(&mut tx, &key, &[audit]).await?;
        self.commit_change(tx).await?;
        Ok(entry)
    }

    /// Replaces an entry's mutable fields. An entry moved to another
    /// parent leaves a tombstone for the old one, so that node stops
    /// serving it.
    pub async fn update_entry(
        &self,
        mut entry: EntryRecord,
        audit: AuditEvent,
    ) -> Result<EntryRecord> {
        // `entry.revision` is the revision it was read at: if the stored
        // entry changed since, this update would silently undo that change.
        let read_at = entry.revision;
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        entry.revision = bump_revision(&mut tx).await?;
        let old_parent: Option<String> =
            sqlx::query("SELECT parent_id FROM entries WHERE id = $1 AND revision = $2")
                .bind(&entry.id)
                .bind(read_at)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        let done = sqlx::query(
            "UPDATE entries SET spiffe_id = $2, parent_id = $3, selectors = $4, x509_ttl = $5, jwt_ttl = $6, updated_at = $7, revision = $8, labels = $10, created_at = $11, mac = $12 WHERE id = $1 AND revision = $9",
        )
        .bind(&entry.id)
        .bind(&entry.spiffe_id)
        .bind(&entry.parent_id)
        .bind(serde_json::to_string(&entry.selectors).unwrap_or_default())
        .bind(entry.x509_ttl)
        .bind(entry.jwt_ttl)
        .bind(entry.updated_at)
        .bind(entry.revision)
        .bind(read_at)
        .bind(serde_json::to_string(&entry.labels).unwrap_or_default())
        .bind(entry.created_at)
        .bind(rows::entry_mac(&key, &entry))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0
            && let Some(old) = old_parent.filter(|p| *p != entry.parent_id)
        {
            tombstone(&mut tx, &entry.id, &old, entry.revision).await?;
        }
        if done.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM entries WHERE id = $1")
                .bind(&entry.id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            return Err(if exists {
                StoreError::Conflict(format!(
                    "entry {} changed since it was read; read it again and retry",
                    entry.id
                ))
            } else {
                StoreError::NotFound {
                    what: "entry",
                    id: entry.id,
                }
            });
        }
        append_in_tx(&mut tx, &key, &[audit]).await?;
        self.commit_change(tx).await?;
        Ok(entry)
    }

    /// Deletes an entry, leaving a tombstone so that watchers learn of it.
    pub async fn delete_entry(&self, id: &str, audit: AuditEvent) -> Result<()> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        let rev = bump_revision(&mut tx).await?;
        let gone = sqlx::query("DELETE FROM entries WHERE id = $1 RETURNING parent_id")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(gone) = gone else {
            return Err(StoreError::NotFound {
                what: "entry",
                id: id.to_owned(),
            });
        };
        let parent: String = gone.try_get(0)?;
        tombstone(&mut tx, id, &parent, rev).await?;
        append_in_tx(&mut tx, &key, &[audit]).await?;
        self.commit_change(tx).await?;
        Ok(())
    }

    /// Reads one entry.
    pub async fn entry(&self, id: &str) -> Result<EntryRecord> {
        let key = self.row_key()?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS}, mac FROM entries WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row.and_then(|r| self.verified_entry(&key, &r)) {
            Some(e) => Ok(e),
            None => Err(StoreError::NotFound {
                what: "entry",
                id: id.to_owned(),
            }),
        }
    }

    /// An entry row that parses and passes the barrier, or `None` (counted).
    pub(crate) fn verified_entry(&self, key: &RowKey, r: &AnyRow) -> Option<EntryRecord> {
        let id: String = r.try_get(0).unwrap_or_default();
        let mac: Option<String> = r.try_get(10).ok().flatten();
        match entry_from_row(r) {
            Ok(e) if rows::entry_ok(key, &e, mac.as_deref()) => Some(e),
            _ => {
                self.barrier.reject("entries", &id);
                None
            }
        }
    }

    /// Entries (optionally only those under `parent`) changed after
    /// `since`, with the IDs deleted after it. `since = 0` is a full snapshot.
    pub async fn entry_changes(&self, parent: Option<&str>, since: i64) -> Result<EntryChanges> {
        // Read the revision first, in the same transaction, so a change that
        // lands while we read is either included or has a higher revision.
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        let revision: i64 = sqlx::query("SELECT value FROM revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let rows = match parent {
            Some(p) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {ENTRY_COLUMNS}, mac FROM entries WHERE parent_id = $1 AND revision > $2 ORDER BY spiffe_id, id"
                )))
                .bind(p)
                .bind(since)
                .fetch_all(&mut *tx)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS}, mac FROM entries WHERE revision > $1 ORDER BY spiffe_id, id")))
                    .bind(since)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        let entries = rows
            .iter()
            .filter_map(|r| self.verified_entry(&key, r))
            .collect();
        // A node learns only of its own entries' deletions (one tombstone
        // per entry and parent it left, so a second move cannot erase the
        // first; tombstones from before parents were recorded, with an
        // empty parent, go to every node).
        let deleted = if since > 0 {
            let rows = match parent {
                Some(p) => {
                    sqlx::query("SELECT DISTINCT id FROM entry_tombstones WHERE revision > $1 AND (parent_id = $2 OR parent_id = '') ORDER BY id")
                        .bind(since)
                        .bind(p)
                        .fetch_all(&mut *tx)
                        .await?
                }
                None => {
                    sqlx::query("SELECT DISTINCT id FROM entry_tombstones WHERE revision > $1 ORDER BY id")
                        .bind(since)
                        .fetch_all(&mut *tx)
                        .await?
                }
            };
            rows.iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok(EntryChanges {
            entries,
            deleted,
            revision,
        })
    }
}
