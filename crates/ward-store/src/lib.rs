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
mod audit_log;
pub mod barrier;
mod cas;
mod entries;
mod migrations;
mod policy;
mod rows;
pub mod seal;
mod settings;
mod tokens;
mod upgrade;
mod vault;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};

use barrier::{Barrier, RowKey};
use seal::MasterKey;

pub use ward_api::EntryRecord;

pub use audit::{AuditEvent, AuditRecord, ChainError, ChainVerifier, verify_chain};
pub use policy::{EdgeReport, EdgeTotal, PolicyRecord};
pub use vault::{ExpiryLeader, LeaseRow, VaultTx};
pub use writer::AuditWriter;

pub use audit_log::VerifiedHead;
pub(crate) use audit_log::append_records;
pub use cas::CaRecord;
pub(crate) use cas::{CA_COLUMNS, ca_from_row, insert_ca};
pub use entries::EntryChanges;
pub(crate) use entries::{ENTRY_COLUMNS, entry_from_row};
pub use settings::Initialization;
pub(crate) use settings::insert_meta;
pub use tokens::{JoinTokenUse, TokenRecord};
pub use upgrade::BarrierStart;
pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;
pub(crate) use tokens::{NODES_CLAIMED, insert_token, verified_nodes};

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
    /// A vault record or lease fails authentication: it was written,
    /// changed or moved without the master key.
    #[error(
        "the stored record {0} failed its integrity check: it was altered or moved without the master key; restore it from a backup"
    )]
    Integrity(String),
    /// The row that says the barrier is on is missing or forged, and no
    /// upgrade was asked for.
    #[error(
        "the store's barrier marker row is missing or fails authentication: either the store was made by a release before the barrier (start the server once with --upgrade-store, after checking the store's contents), or a database writer removed it (restore the store from a backup)"
    )]
    BarrierMissing,
}

/// The store. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    barrier: Arc<Barrier>,
    /// Woken after every committed write that advances the revision, so
    /// that long polls on this replica answer at once (other replicas'
    /// writes are found by polling the revision).
    changes: Arc<tokio::sync::Notify>,
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
            changes: Arc::default(),
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

    /// Woken after each write (on this handle or its clones) that advances
    /// the revision: register with `notified()` before reading the
    /// revision, so a change in between is not missed.
    pub fn changes(&self) -> &tokio::sync::Notify {
        &self.changes
    }

    /// Commits a transaction that advanced the revision, then wakes the
    /// waiters: every such write signals, so no caller has to remember to.
    async fn commit_change(&self, tx: Transaction<'_, Any>) -> Result<()> {
        tx.commit().await?;
        self.changes.notify_waiters();
        Ok(())
    }

    fn row_key(&self) -> Result<Arc<RowKey>> {
        self.barrier.key().ok_or(StoreError::Sealed)
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
