//! Settings (`meta`), sealed blobs, and the initialization that writes them.

use sqlx::{Any, Row, Transaction};

use crate::barrier::{BARRIER_META, BARRIER_ON, RowKey};
use crate::*;

/// Everything `ward server init` writes, in one transaction.
pub struct Initialization {
    /// Key/value settings (trust domain, seal parameters, key check, …).
    pub meta: Vec<(String, String)>,
    /// Sealed blobs (the upstream CA key, if any).
    pub sealed: Vec<(String, Vec<u8>)>,
    /// The initial admin token's ID and hash.
    pub admin_token: (String, String),
    /// The first CA, already `active`.
    pub ca: CaRecord,
    /// The audit record of the initialization.
    pub audit: AuditEvent,
}

/// Writes (or replaces) one authenticated setting.
pub(crate) async fn insert_meta(
    tx: &mut Transaction<'_, Any>,
    key: &RowKey,
    name: &str,
    value: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO meta (key, value, mac) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET value = excluded.value, mac = excluded.mac",
    )
    .bind(name)
    .bind(value)
    .bind(key.mac("meta", name, &rows::setting(value)))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Reads a setting.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Reads a setting that must pass the barrier (set after the store is
    /// unlocked, such as the upstream certificates); a forged or edited
    /// value is treated as absent.
    pub async fn meta_verified(&self, key: &str) -> Result<Option<String>> {
        let row_key = self.row_key()?;
        let row = sqlx::query("SELECT value, mac FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let (value, mac): (String, Option<String>) = (r.try_get(0)?, r.try_get(1)?);
        if !row_key.verify("meta", key, &rows::setting(&value), mac.as_deref()) {
            if key != BARRIER_META {
                self.barrier.reject("meta", key);
            }
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// True once `ward server init` (or dev mode) has run.
    pub async fn is_initialized(&self) -> Result<bool> {
        Ok(self.meta("initialized_at").await?.is_some())
    }

    /// Reads a sealed blob.
    pub async fn sealed_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let key = self.row_key()?;
        let row = sqlx::query("SELECT blob, mac FROM sealed_blobs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let (blob, mac): (Vec<u8>, Option<String>) = (r.try_get(0)?, r.try_get(1)?);
        if !key.verify("sealed_blobs", name, &rows::blob(&blob), mac.as_deref()) {
            self.barrier.reject("sealed_blobs", name);
            return Ok(None);
        }
        Ok(Some(blob))
    }

    /// Writes everything `ward server init` creates, atomically; refuses if
    /// the store is already initialized.
    pub async fn initialize(&self, init: Initialization) -> Result<()> {
        let key = self.row_key()?;
        let mut tx = self.pool.begin().await?;
        let rev = bump_revision(&mut tx).await?;
        let already = sqlx::query("SELECT 1 FROM meta WHERE key = 'initialized_at'")
            .fetch_optional(&mut *tx)
            .await?;
        if already.is_some() {
            return Err(StoreError::AlreadyInitialized);
        }
        for (k, v) in &init.meta {
            insert_meta(&mut tx, &key, k, v).await?;
        }
        insert_meta(&mut tx, &key, "initialized_at", &now_secs().to_string()).await?;
        insert_meta(&mut tx, &key, BARRIER_META, BARRIER_ON).await?;
        insert_meta(&mut tx, &key, NODES_CLAIMED, "0").await?;
        for (name, blob) in &init.sealed {
            sqlx::query("INSERT INTO sealed_blobs (name, blob, mac) VALUES ($1, $2, $3)")
                .bind(name)
                .bind(blob.clone())
                .bind(key.mac("sealed_blobs", name, &rows::blob(blob)))
                .execute(&mut *tx)
                .await?;
        }
        insert_token(
            &mut tx,
            &key,
            &init.admin_token.0,
            &init.admin_token.1,
            "admin",
            None,
        )
        .await?;
        let mut ca = init.ca;
        ca.revision = rev;
        insert_ca(&mut tx, &key, &ca).await?;
        append_records(&mut tx, &key, std::slice::from_ref(&init.audit), true).await?;
        self.commit_change(tx).await?;
        Ok(())
    }
}
