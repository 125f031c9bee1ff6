//! Ward's storage: one [`Store`] over two backends chosen by URL,
//! `sqlite://PATH` (embedded, WAL, fsync on commit) and `postgres://…`
//! (shared by several server replicas).
//!
//! Both backends run the same queries through sqlx's `Any` driver; only the
//! migration scripts differ. Every write that changes registrations or CAs
//! advances one global revision number, so that agents can later ask for
//! "changes since R" instead of the full list; every admin write appends its
//! audit record in the same transaction, so an acknowledged change always has
//! its record. Write transactions start with a write (`UPDATE … RETURNING`) so
//! that SQLite takes its write lock at once instead of failing on upgrade,
//! and PostgreSQL replicas serialize on the same row.

pub mod audit;
pub mod barrier;
mod migrations;
mod policy;
mod rows;
pub mod seal;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};

use barrier::{BARRIER_META, BARRIER_ON, Barrier, RowKey};
use seal::MasterKey;

pub use ward_api::EntryRecord;

pub use audit::{AuditEvent, AuditRecord, ChainError, ChainVerifier, verify_chain};
pub use policy::{EdgeReport, EdgeTotal, PolicyRecord};
pub use writer::AuditWriter;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL's scheme is neither `sqlite://` nor `postgres://`.
    #[error("unsupported storage URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    /// The database could not be opened or reached.
    #[error("cannot open the store at {url}: {reason}")]
    Open {
        /// The URL with any password removed.
        url: String,
        /// Why.
        reason: String,
    },
    /// The database file exists but is not a database (corrupted or foreign).
    #[error(
        "the store at {url} is not a valid database ({reason}); restore it from a backup or point the server at another path"
    )]
    Corrupt {
        /// The URL with any password removed.
        url: String,
        /// What the database said.
        reason: String,
    },
    /// A migration failed.
    #[error("schema migration {version} ({name}) failed: {reason}")]
    Migration {
        /// Version number.
        version: i64,
        /// Its name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The schema is newer than this binary knows.
    #[error("the store's schema version {0} is newer than this ward binary supports; upgrade ward")]
    SchemaTooNew(i64),
    /// No such record.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of record.
        what: &'static str,
        /// Its ID.
        id: String,
    },
    /// A uniqueness rule was violated.
    #[error("{0}")]
    Conflict(String),
    /// The store is already initialized.
    #[error("the store is already initialized")]
    AlreadyInitialized,
    /// A stored value does not parse.
    #[error("a stored value is invalid: {0}")]
    Invalid(String),
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The audit writer has stopped.
    #[error("the audit log writer has stopped")]
    WriterGone,
    /// Rows cannot be read or written without the master key.
    #[error("the store is sealed: unseal the server first")]
    Sealed,
    /// The row that says the barrier is on is missing or forged, and no
    /// upgrade was asked for.
    #[error(
        "the store's barrier marker row is missing or fails authentication: either the store was made by a release before the barrier (start the server once with --upgrade-store, after checking the store's contents), or a database writer removed it (restore the store from a backup)"
    )]
    BarrierMissing,
}

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

type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// An API token (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public token ID, used in audit records.
    pub id: String,
    /// What it may do.
    pub role: String,
    /// Expiry, Unix seconds; `None` never expires.
    pub expires_at: Option<i64>,
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

/// The store. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    barrier: Arc<Barrier>,
}

/// A storage URL with any password hidden, for messages and logs:
/// `postgres://user:***@host/db`, and `password=***` in the query.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // The last '@' ends the user info, even when the password contains '@'.
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((creds, host)) => {
                let user = creds.split_once(':').map(|(u, _)| u).unwrap_or(creds);
                if creds.contains(':') {
                    format!("{scheme}://{user}:***@{host}")
                } else {
                    format!("{scheme}://{user}@{host}")
                }
            }
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl Store {
    /// Opens the store at `url`, creating an SQLite file if needed, and runs
    /// pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, url_full) = if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::BadUrl(url.to_owned()));
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            let full = if path.contains("mode=") {
                url.to_owned()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (Backend::Sqlite, full)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::BadUrl(redact_url(url)));
        };
        let shown = redact_url(url);
        let opts: AnyConnectOptions =
            url_full
                .parse()
                .map_err(|e: sqlx::Error| StoreError::Open {
                    url: shown.clone(),
                    reason: e.to_string(),
                })?;
        if backend == Backend::Sqlite {
            // Open one connection first: a pool retries failed connections
            // until its timeout and would hide "file is not a database".
            let mut probe = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&opts)
                .await
                .map_err(|e| classify_open_error(&shown, e))?;
            sqlx::query("SELECT COUNT(*) FROM sqlite_master")
                .fetch_one(&mut probe)
                .await
                .map_err(|e| classify_open_error(&shown, e))?;
            let _ = sqlx::Connection::close(probe).await;
        }
        let pool_opts = match backend {
            // One writer at a time is SQLite's rule anyway; a few readers
            // beside it keep reads from queueing behind writes.
            Backend::Sqlite => AnyPoolOptions::new().max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(16),
        };
        let pool = pool_opts
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| classify_open_error(&shown, e))?;
        let store = Self {
            pool,
            backend,
            barrier: Arc::default(),
        };
        store.migrate().await.map_err(|e| match e {
            StoreError::Database(err) => classify_open_error(&shown, err),
            other => other,
        })?;
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Derives the row key from the master key: rows can be read and
    /// written from now on (on unseal, and at init).
    pub fn unlock(&self, master: &MasterKey) {
        self.barrier.unlock(RowKey::derive(master));
    }

    /// Forgets the row key (on seal).
    pub fn lock(&self) {
        self.barrier.lock();
    }

    /// Rows refused so far and the queue of those not yet audited.
    pub fn barrier(&self) -> &Barrier {
        &self.barrier
    }

    fn row_key(&self) -> Result<Arc<RowKey>> {
        self.barrier.key().ok_or(StoreError::Sealed)
    }

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
        tx.commit().await?;
        Ok(BarrierStart::Upgraded { rows })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            // Several replicas may start at once: one migrates, the others wait.
            sqlx::query("SELECT pg_advisory_lock(7161001)")
                .execute(&mut *conn)
                .await?;
        }
        let result = self.migrate_locked(&mut conn).await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock(7161001)")
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    async fn migrate_locked(&self, conn: &mut sqlx::AnyConnection) -> Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS ward_schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        let applied: Vec<i64> =
            sqlx::query("SELECT version FROM ward_schema_migrations ORDER BY version")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<_, _>>()?;
        let known = migrations::MIGRATIONS
            .last()
            .map(|m| m.version)
            .unwrap_or(0);
        if let Some(&newest) = applied.last()
            && newest > known
        {
            return Err(StoreError::SchemaTooNew(newest));
        }
        for m in migrations::MIGRATIONS
            .iter()
            .filter(|m| !applied.contains(&m.version))
        {
            let script = m.script(self.backend);
            let fail = |e: sqlx::Error| StoreError::Migration {
                version: m.version,
                name: m.name,
                reason: e.to_string(),
            };
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(AssertSqlSafe(script))
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            sqlx::query("INSERT INTO ward_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(now_secs())
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            tracing::info!(
                version = m.version,
                name = m.name,
                "applied schema migration"
            );
        }
        Ok(())
    }

    /// The newest applied schema version.
    pub async fn schema_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT MAX(version) FROM ward_schema_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
    }

    // ---- settings and sealed blobs -------------------------------------

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
        tx.commit().await?;
        Ok(())
    }

    // ---- tokens -----------------------------------------------------------

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
        };
        let mac: Option<String> = r.try_get(4)?;
        let fields = rows::token(hash, &token.role, r.try_get(3)?, token.expires_at);
        if !key.verify("tokens", &token.id, &fields, mac.as_deref()) {
            self.barrier.reject("tokens", &token.id);
            return Ok(None);
        }
        Ok(Some(token))
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
        tx.commit().await?;
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
        if bound.is_some() {
            // A bound token may re-attest its node.
            sqlx::query(
                "INSERT INTO nodes (spiffe_id, join_token_id, attested_at, mac) VALUES ($1, $2, $3, $4) ON CONFLICT (spiffe_id) DO UPDATE SET join_token_id = excluded.join_token_id, attested_at = excluded.attested_at, mac = excluded.mac",
            )
            .bind(node_id)
            .bind(&id)
            .bind(now)
            .bind(&node_mac)
            .execute(&mut *tx)
            .await?;
        } else {
            // An unbound one only claims a new name. A writer could make an
            // attested name "new" again by deleting its row; the
            // authenticated count of claimed names exposes that, and then
            // no unbound token claims anything until an operator binds one.
            let recorded = claimed_nodes(&mut tx, &key).await?;
            let present = verified_nodes(&mut tx, &key).await?;
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
            // Two claims racing may both count from the same value: the
            // count then lags, which only makes the check above looser by
            // one, never refuses a legitimate claim.
            let next = recorded.unwrap_or(0).max(present) + 1;
            insert_meta(&mut tx, &key, NODES_CLAIMED, &next.to_string()).await?;
        }
        append_in_tx(&mut tx, &key, &[audit]).await?;
        tx.commit().await?;
        Ok(JoinTokenUse::Consumed(id))
    }

    // ---- entries ----------------------------------------------------------

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
        tx.commit().await?;
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
        tx.commit().await?;
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
        tx.commit().await?;
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
    fn verified_entry(&self, key: &RowKey, r: &AnyRow) -> Option<EntryRecord> {
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

    // ---- certificate authorities -------------------------------------------

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
    fn verified_ca(&self, key: &RowKey, r: &AnyRow) -> Option<CaRecord> {
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
        tx.commit().await?;
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
        tx.commit().await?;
        Ok(ca)
    }

    // ---- audit --------------------------------------------------------------

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
        rows.iter()
            .map(|r| {
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
            })
            .collect()
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
                let rec = AuditRecord {
                    seq: r.try_get(0)?,
                    ts_ms: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    detail: r.try_get(5)?,
                    prev_hash: r.try_get(6)?,
                    hash: r.try_get(7)?,
                };
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
        // An empty chain has no head MAC only before `initialize`; after it,
        // every head is one the server wrote.
        let fresh = head_seq == 0 && head_mac.is_none() && !self.is_initialized().await?;
        if !fresh && !barrier::same_mac(&key.head_mac(head_seq, &head_hash), head_mac.as_deref()) {
            return Ok(Err(ChainError {
                seq: head_seq + 1,
                reason: format!(
                    "the head (record {head_seq}) was not written by this server: records after {head_seq} were removed, or the head was reset"
                ),
            }));
        }
        if head_seq == 0 && self.is_initialized().await? {
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

fn classify_open_error(url: &str, e: sqlx::Error) -> StoreError {
    let msg = e.to_string();
    if msg.contains("not a database")
        || msg.contains("malformed")
        || msg.contains("file is encrypted")
    {
        StoreError::Corrupt {
            url: url.to_owned(),
            reason: msg,
        }
    } else {
        StoreError::Open {
            url: url.to_owned(),
            reason: msg,
        }
    }
}

fn conflict(e: sqlx::Error, what: &str) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::Conflict(what.to_owned()),
        _ => StoreError::Database(e),
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn bump_revision(tx: &mut Transaction<'_, Any>) -> Result<i64> {
    let row = sqlx::query("UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value")
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get(0)?)
}

/// Records that entry `id` is gone from `parent`'s view at `revision`.
async fn tombstone(
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

async fn insert_token(
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

/// The setting that counts node names ever claimed by an unbound join
/// token or an upgrade (nodes are never deleted, so it only grows).
const NODES_CLAIMED: &str = "nodes.claimed";

/// The authenticated count of claimed node names; `None` when the row is
/// missing or fails the barrier.
async fn claimed_nodes(tx: &mut Transaction<'_, Any>, key: &RowKey) -> Result<Option<u64>> {
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

/// How many node rows pass the barrier.
async fn verified_nodes(tx: &mut Transaction<'_, Any>, key: &RowKey) -> Result<u64> {
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

/// Writes (or replaces) one authenticated setting.
async fn insert_meta(
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

fn join_token_mac(
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

/// Appends events to the chain inside `tx`. The first statement locks the
/// head row, so concurrent appenders (other connections, other replicas)
/// queue instead of forking the chain.
pub(crate) async fn append_in_tx(
    tx: &mut Transaction<'_, Any>,
    key: &RowKey,
    events: &[AuditEvent],
) -> Result<Vec<i64>> {
    append_records(tx, key, events, false).await
}

/// As [`append_in_tx`]; `genesis` is true only for the first record of a
/// new store: an empty chain anywhere else is a wiped one.
async fn append_records(
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
    // An empty chain is a fresh start only before the store is initialized
    // (or for its first record); after that it is a wiped one.
    let empty = head_seq == 0 && prev == audit::GENESIS_HASH && head_mac.is_none();
    let fresh = empty
        && (genesis
            || sqlx::query("SELECT 1 FROM meta WHERE key = 'initialized_at'")
                .fetch_optional(&mut **tx)
                .await?
                .is_none());
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

const ENTRY_COLUMNS: &str = "id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, created_at, updated_at, revision, labels";

fn entry_from_row(r: &AnyRow) -> Result<EntryRecord> {
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

const CA_COLUMNS: &str = "id, generation, state, cert_pem, chain_pem, bundle_pem, key_sealed, jwt_kid, jwt_key_sealed, not_after, created_at, activated_at, drop_after, revision";

fn ca_from_row(r: &AnyRow) -> Result<CaRecord> {
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

async fn insert_ca(tx: &mut Transaction<'_, Any>, key: &RowKey, ca: &CaRecord) -> Result<()> {
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

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive() {
        assert_eq!(
            redact_url("postgres://u:s3cret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=s3cret&sslmode=disable"),
            "postgres://u@h/db?password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/ward/ward.db"),
            "sqlite:///var/lib/ward/ward.db"
        );
    }
}
