//! CA generations: their rows, preparation and activation.

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::barrier::RowKey;
use crate::*;

/// One CA generation as stored. Private keys are sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRecord {
    /// ID.
    pub id: String,
    /// 1, 2, … in creation order.
    pub generation: i64,
    /// `prepared`, `active` or `retired`.
    pub state: String,
    /// The signing CA certificate, PEM.
    pub cert_pem: String,
    /// Certificates sent after each leaf, PEM.
    pub chain_pem: Vec<String>,
    /// Trust anchors this CA contributes to the bundle, PEM.
    pub bundle_pem: Vec<String>,
    /// The CA key, sealed under the master key.
    pub key_sealed: Vec<u8>,
    /// The JWT signing key's ID.
    pub jwt_kid: String,
    /// The JWT signing key, sealed.
    pub jwt_key_sealed: Vec<u8>,
    /// The CA certificate's notAfter, Unix seconds.
    pub not_after: i64,
    /// Created, Unix seconds.
    pub created_at: i64,
    /// When it started signing.
    pub activated_at: Option<i64>,
    /// When a retired CA may leave the bundle (its last SVID has expired).
    pub drop_after: Option<i64>,
    /// Revision of its last change.
    pub revision: i64,
}

pub(crate) const CA_COLUMNS: &str = "id, generation, state, cert_pem, chain_pem, bundle_pem, key_sealed, jwt_kid, jwt_key_sealed, not_after, created_at, activated_at, drop_after, revision";

pub(crate) fn ca_from_row(r: &AnyRow) -> Result<CaRecord> {
    let list = |i: usize| -> Result<Vec<String>> {
        let s: String = r.try_get(i)?;
        serde_json::from_str(&s)
            .map_err(|e| StoreError::Invalid(format!("CA certificate list: {e}")))
    };
    Ok(CaRecord {
        id: r.try_get(0)?,
        generation: r.try_get(1)?,
        state: r.try_get(2)?,
        cert_pem: r.try_get(3)?,
        chain_pem: list(4)?,
        bundle_pem: list(5)?,
        key_sealed: r.try_get(6)?,
        jwt_kid: r.try_get(7)?,
        jwt_key_sealed: r.try_get(8)?,
        not_after: r.try_get(9)?,
        created_at: r.try_get(10)?,
        activated_at: r.try_get(11)?,
        drop_after: r.try_get(12)?,
        revision: r.try_get(13)?,
    })
}

pub(crate) async fn insert_ca(
    tx: &mut Transaction<'_, Any>,
    key: &RowKey,
    ca: &CaRecord,
) -> Result<()> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO cas ({CA_COLUMNS}, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    )))
    .bind(&ca.id)
    .bind(ca.generation)
    .bind(&ca.state)
    .bind(&ca.cert_pem)
    .bind(serde_json::to_string(&ca.chain_pem).unwrap_or_default())
    .bind(serde_json::to_string(&ca.bundle_pem).unwrap_or_default())
    .bind(ca.key_sealed.clone())
    .bind(&ca.jwt_kid)
    .bind(ca.jwt_key_sealed.clone())
    .bind(ca.not_after)
    .bind(ca.created_at)
    .bind(ca.activated_at)
    .bind(ca.drop_after)
    .bind(ca.revision)
    .bind(rows::ca_mac(key, ca))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// All CA generations, oldest first.
    pub async fn cas(&self) -> Result<Vec<CaRecord>> {
        let key = self.row_key()?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CA_COLUMNS}, mac FROM cas ORDER BY generation"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| self.verified_ca(&key, r))
            .collect())
    }

    /// A CA row that parses and passes the barrier, or `None` (counted).
    pub(crate) fn verified_ca(&self, key: &RowKey, r: &AnyRow) -> Option<CaRecord> {
        let id: String = r.try_get(0).unwrap_or_default();
        let mac: Option<String> = r.try_get(14).ok().flatten();
        match ca_from_row(r) {
            Ok(c) if rows::ca_ok(key, &c, mac.as_deref()) => Some(c),
            _ => {
                self.barrier.reject("cas", &id);
                None
            }
        }
    }

    /// Adds a prepared CA (in the bundle, not yet signing).
    pub async fn insert_prepared_ca(
        &self,
        mut ca: CaRecord,
        audit: AuditEvent,
    ) -> Result<CaRecord> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        ca.revision = bump_revision(&mut tx).await?;
        let pending = sqlx::query("SELECT id FROM cas WHERE state = 'prepared'")
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(r) = pending {
            let id: String = r.try_get(0)?;
            return Err(StoreError::Conflict(format!(
                "CA {id} is already prepared; activate it before preparing another"
            )));
        }
        let next: i64 = sqlx::query("SELECT COALESCE(MAX(generation), 0) + 1 FROM cas")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        ca.generation = next;
        insert_ca(&mut tx, &key, &ca).await?;
        append_in_tx(&mut tx, &key, &[audit]).await?;
        self.commit_change(tx).await?;
        Ok(ca)
    }

    /// Makes the prepared CA the signing one; the previous active CA is
    /// retired and stays in the bundle until `old_drop_after`.
    pub async fn activate_prepared_ca(
        &self,
        now: i64,
        old_drop_after: i64,
        audit: AuditEvent,
    ) -> Result<CaRecord> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        let rev = bump_revision(&mut tx).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CA_COLUMNS}, mac FROM cas WHERE state IN ('prepared', 'active')"
        )))
        .fetch_all(&mut *tx)
        .await?;
        let verified: Vec<CaRecord> = rows
            .iter()
            .filter_map(|r| self.verified_ca(&key, r))
            .collect();
        let Some(mut ca) = verified.iter().find(|c| c.state == "prepared").cloned() else {
            return Err(StoreError::Conflict(
                "no CA is prepared; run `ward ca prepare` first".into(),
            ));
        };
        // Each authentic active CA is retired (rows that fail the barrier
        // are ignored everywhere, so they are left as they are).
        for mut old in verified.into_iter().filter(|c| c.state == "active") {
            old.state = "retired".into();
            old.drop_after = Some(old_drop_after);
            old.revision = rev;
            sqlx::query(
                "UPDATE cas SET state = 'retired', drop_after = $1, revision = $2, mac = $3 WHERE id = $4",
            )
            .bind(old_drop_after)
            .bind(rev)
            .bind(rows::ca_mac(&key, &old))
            .bind(&old.id)
            .execute(&mut *tx)
            .await?;
        }
        ca.state = "active".into();
        ca.activated_at = Some(now);
        ca.revision = rev;
        sqlx::query(
            "UPDATE cas SET state = 'active', activated_at = $1, revision = $2, mac = $3 WHERE id = $4",
        )
        .bind(now)
        .bind(rev)
        .bind(rows::ca_mac(&key, &ca))
        .bind(&ca.id)
        .execute(&mut *tx)
        .await?;
        append_in_tx(&mut tx, &key, &[audit]).await?;
        self.commit_change(tx).await?;
        Ok(ca)
    }
}
