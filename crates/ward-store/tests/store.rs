//! The storage suite: every test runs against SQLite and against the real
//! PostgreSQL named by `WARD_TEST_POSTGRES_URL` (each test in a database of
//! its own). Without that variable the PostgreSQL half is skipped with a
//! printed reason; CI always sets it.

use ward_store::{
    AuditEvent, AuditWriter, CaRecord, EntryRecord, Initialization, JoinTokenUse, Store,
    StoreError, now_secs, verify_chain,
};

struct Db {
    store: Store,
    /// The database's URL, for tests that write to it as a hostile
    /// database writer would (raw SQL, no master key).
    url: String,
    _dir: Option<tempfile::TempDir>,
    /// The server URL and the per-test database to drop afterwards.
    pg: Option<(String, String)>,
}

impl Db {
    async fn cleanup(self) {
        self.store.close().await;
        if let Some((base, name)) = self.pg {
            use sqlx::Connection;
            let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

/// This test process's master key, made at start (so that a test can open
/// a second handle on its store).
fn test_master() -> ward_store::seal::MasterKey {
    static KEY: std::sync::OnceLock<zeroize::Zeroizing<String>> = std::sync::OnceLock::new();
    let b64 = KEY.get_or_init(|| ward_store::seal::MasterKey::generate().unwrap().to_base64());
    ward_store::seal::MasterKey::from_base64(b64).unwrap()
}

/// A store unlocked with the master key, as after an unseal.
fn unlocked(store: Store) -> Store {
    store.unlock(&test_master());
    store
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ward.db", dir.path().display());
    Db {
        store: unlocked(Store::connect(&url).await.unwrap()),
        url,
        _dir: Some(dir),
        pg: None,
    }
}

/// A fresh database on the test PostgreSQL server, or `None` (with the
/// reason printed) when `WARD_TEST_POSTGRES_URL` is unset.
async fn postgres() -> Option<Db> {
    let Ok(base) = std::env::var("WARD_TEST_POSTGRES_URL") else {
        // CI sets WARD_TEST_NO_SKIP: there a skipped backend is a failure.
        assert!(
            std::env::var_os("WARD_TEST_NO_SKIP").is_none(),
            "WARD_TEST_NO_SKIP is set but WARD_TEST_POSTGRES_URL is not: the PostgreSQL half must run"
        );
        eprintln!("skipping the PostgreSQL half: WARD_TEST_POSTGRES_URL is not set");
        return None;
    };
    let (url, name) = fresh_pg_database(&base).await;
    Some(Db {
        store: unlocked(
            Store::connect(&url)
                .await
                .expect("connect to the fresh PostgreSQL database"),
        ),
        url,
        _dir: None,
        pg: Some((base, name)),
    })
}

async fn fresh_pg_database(base: &str) -> (String, String) {
    use sqlx::Connection;
    let mut name_bytes = [0u8; 8];
    getrandom(&mut name_bytes);
    let name = format!("ward_test_{}", hex(&name_bytes));
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(base)
        .await
        .expect("WARD_TEST_POSTGRES_URL must be reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let prefix = &head[..head.rfind('/').unwrap()];
    (format!("{prefix}/{name}{query}"), name)
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = super::sqlite().await;
                super::$name(db.store.clone()).await;
                db.cleanup().await;
            })*
        }
        mod postgres_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(db) = super::postgres().await {
                    super::$name(db.store.clone()).await;
                    db.cleanup().await;
                }
            })*
        }
    };
}

macro_rules! both_backends_with_url {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend_raw {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = super::sqlite().await;
                super::$name(db.store.clone(), db.url.clone()).await;
                db.cleanup().await;
            })*
        }
        mod postgres_backend_raw {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(db) = super::postgres().await {
                    super::$name(db.store.clone(), db.url.clone()).await;
                    db.cleanup().await;
                }
            })*
        }
    };
}

/// Long polls wait on the store's signal: every write that advances the
/// revision sends it (no handler has to), and others do not.
async fn writes_that_advance_the_revision_wake_waiters(store: Store) {
    use std::time::Duration;
    store.initialize(initialization()).await.unwrap();
    let woken = store.changes().notified();
    store
        .create_entry(
            entry("e1", "spiffe://td/agent/n1"),
            ev("entry.create", "e1"),
        )
        .await
        .unwrap();
    assert!(signalled(woken, Duration::from_secs(5)).await);
    let woken = store.changes().notified();
    store
        .push_policy(
            "permit(principal, action, resource);",
            "h",
            "t",
            ev("policy.push", "1"),
        )
        .await
        .unwrap();
    assert!(signalled(woken, Duration::from_secs(5)).await);
    // A clone shares the signal (the server hands clones to its tasks).
    let other = store.clone();
    let woken = other.changes().notified();
    store
        .delete_entry("e1", ev("entry.delete", "e1"))
        .await
        .unwrap();
    assert!(signalled(woken, Duration::from_secs(5)).await);
    // An audit record alone changes no revision and wakes no one.
    let woken = store.changes().notified();
    store.append_audit(&[ev("x", "y")]).await.unwrap();
    assert!(!signalled(woken, Duration::from_millis(200)).await);
}

/// True when `n` is woken within `within`.
async fn signalled(n: tokio::sync::futures::Notified<'_>, within: std::time::Duration) -> bool {
    tokio::time::timeout(within, n).await.is_ok()
}

both_backends_with_url!(
    rows_forged_by_a_database_writer_are_refused,
    migrations_are_recorded_and_idempotent,
    a_deleted_node_row_gives_its_name_to_no_unbound_token,
    names_claimed_with_bound_tokens_or_at_once_are_all_counted,
    a_store_from_before_the_barrier_is_upgraded_once,
    a_removed_barrier_marker_is_no_old_store,
    an_edited_audit_record_is_found,
    a_reordered_audit_pair_is_found,
    a_recomputed_unkeyed_audit_chain_is_found,
    a_truncated_audit_tail_is_found_by_the_head_and_by_a_checkpoint,
    a_wiped_audit_log_is_no_fresh_start,
    junk_above_the_audit_head_cannot_stall_verification,
    vault_records_round_trip_and_a_moved_row_is_an_integrity_error,
    forged_leases_are_never_due,
    one_replica_at_a_time_holds_expiry_leadership,
);

/// Five audit records in a store that was initialized (one more record).
async fn five_records(store: &Store) {
    store.initialize(initialization()).await.unwrap();
    for i in 0..5 {
        store
            .append_audit(&[ev("entry.create", &format!("e{i}"))])
            .await
            .unwrap();
    }
    assert_eq!(store.verify_audit().await.unwrap().unwrap().records, 6);
}

async fn first_bad(store: &Store) -> i64 {
    store
        .verify_audit()
        .await
        .unwrap()
        .expect_err("the chain must fail")
        .seq
}

async fn an_edited_audit_record_is_found(store: Store, url: String) {
    five_records(&store).await;
    raw(
        &url,
        "UPDATE audit SET target = 'someone-else' WHERE seq = 3",
    )
    .await;
    assert_eq!(first_bad(&store).await, 3);
}

async fn a_reordered_audit_pair_is_found(store: Store, url: String) {
    five_records(&store).await;
    // Records 3 and 4 swap places (every column moves with its record).
    raw(&url, "UPDATE audit SET seq = -3 WHERE seq = 3").await;
    raw(&url, "UPDATE audit SET seq = 3 WHERE seq = 4").await;
    raw(&url, "UPDATE audit SET seq = 4 WHERE seq = -3").await;
    assert_eq!(first_bad(&store).await, 3);
}

async fn a_recomputed_unkeyed_audit_chain_is_found(store: Store, url: String) {
    five_records(&store).await;
    // The writer edits record 3 and recomputes every hash after it, and the
    // head: the unkeyed chain is consistent again...
    let records = store.audit_records(0, 100).await.unwrap();
    let mut prev = records[1].hash.clone();
    for r in &records[2..] {
        let target = if r.seq == 3 {
            "rewritten"
        } else {
            r.target.as_str()
        };
        let hash = ward_store::audit::record_hash(
            r.seq, r.ts_ms, &r.actor, &r.action, target, &r.detail, &prev,
        );
        raw(&url, &format!("UPDATE audit SET target = '{target}', prev_hash = '{prev}', hash = '{hash}' WHERE seq = {}", r.seq)).await;
        prev = hash;
    }
    raw(&url, &format!("UPDATE audit_head SET hash = '{prev}'")).await;
    let rewritten = store.audit_records(0, 100).await.unwrap();
    let (seq, head) = store.audit_head().await.unwrap();
    assert!(
        verify_chain(&rewritten, seq, &head).is_ok(),
        "the unkeyed chain alone passes"
    );
    // ...but not the keyed one.
    assert_eq!(first_bad(&store).await, 3);
}

async fn a_truncated_audit_tail_is_found_by_the_head_and_by_a_checkpoint(
    store: Store,
    url: String,
) {
    five_records(&store).await;
    let master = ward_store::seal::MasterKey::generate().unwrap();
    let signer = ward_store::barrier::CheckpointSigner::derive(&master, "td");
    let (seq, head) = store.audit_head().await.unwrap();
    let cp = signer.sign(seq, &head, 1);
    // Cut after record 3 and point the head at it.
    let kept = store.audit_records(2, 1).await.unwrap().remove(0);
    raw(&url, "DELETE FROM audit WHERE seq > 3").await;
    raw(
        &url,
        &format!("UPDATE audit_head SET seq = 3, hash = '{}'", kept.hash),
    )
    .await;
    let records = store.audit_records(0, 100).await.unwrap();
    assert!(
        verify_chain(&records, 3, &kept.hash).is_ok(),
        "the unkeyed chain alone passes"
    );
    assert_eq!(
        first_bad(&store).await,
        4,
        "the head was not written by the server"
    );
    // The checkpoint names the first missing record too.
    let hashes: Vec<String> = records.iter().map(|r| r.hash.clone()).collect();
    let err = ward_store::audit::check_against(&hashes, &[cp]).unwrap_err();
    assert_eq!(err.seq, 4);
    // Appending on top does not hide it: the break is recorded first.
    // (And a chain wiped back to its genesis is no fresh start either.)
    store
        .append_audit(&[ev("entry.create", "later")])
        .await
        .unwrap();
    let after = store.audit_records(3, 10).await.unwrap();
    assert_eq!(after[0].action, "audit.head_mismatch");
    assert_eq!(after[1].target, "later");
    assert_eq!(first_bad(&store).await, 4);
}

/// Runs SQL directly, as a database writer without the master key would.
async fn raw(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

fn initialization() -> Initialization {
    Initialization {
        meta: vec![("trust_domain".into(), "td".into())],
        sealed: vec![("upstream_key".into(), vec![9, 9])],
        admin_token: ("t1".into(), "adminhash".into()),
        ca: ca("ca1", "active"),
        audit: ev("server.init", "td"),
    }
}

async fn rows_forged_by_a_database_writer_are_refused(store: Store, url: String) {
    store.initialize(initialization()).await.unwrap();
    assert_eq!(
        store.enable_barrier(false).await.unwrap(),
        ward_store::BarrierStart::On
    );
    store
        .create_entry(
            entry("e1", "spiffe://td/agent/n1"),
            ev("entry.create", "e1"),
        )
        .await
        .unwrap();
    store
        .push_policy(
            "permit(principal, action, resource);",
            "h",
            "token:t1",
            ev("policy.push", "1"),
        )
        .await
        .unwrap();
    store
        .create_join_token(
            "j1",
            "joinhash",
            now_secs() + 600,
            None,
            ev("join.create", "j1"),
        )
        .await
        .unwrap();
    assert!(store.token_by_hash("adminhash").await.unwrap().is_some());
    let before = store.barrier().rejected();

    // 1. An admin token: the admin's row copied under a new ID and the
    // hash of a token the writer knows, with the MAC copied too.
    raw(&url, "INSERT INTO tokens (id, hash, role, created_at, expires_at, mac) SELECT 'forged', 'forgedhash', role, created_at, expires_at, mac FROM tokens WHERE id = 't1'").await;
    assert_eq!(
        store.token_by_hash("forgedhash").await.unwrap(),
        None,
        "a copied token row"
    );
    raw(
        &url,
        "INSERT INTO tokens (id, hash, role, created_at) VALUES ('new', 'newhash', 'admin', 1)",
    )
    .await;
    assert_eq!(
        store.token_by_hash("newhash").await.unwrap(),
        None,
        "a token row without a MAC"
    );
    // 2. An edited role.
    raw(
        &url,
        "UPDATE tokens SET role = 'superadmin' WHERE id = 't1'",
    )
    .await;
    assert_eq!(
        store.token_by_hash("adminhash").await.unwrap(),
        None,
        "an edited role"
    );

    // 3. An entry copied under another ID and SPIFFE ID, and one edited.
    raw(&url, "INSERT INTO entries (id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, created_at, updated_at, revision, labels, mac) SELECT 'evil', 'spiffe://td/ns/evil/sa/x', parent_id, selectors, x509_ttl, jwt_ttl, created_at, updated_at, revision + 100, labels, mac FROM entries WHERE id = 'e1'").await;
    raw(&url, "INSERT INTO entries (id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, created_at, updated_at, revision, labels, mac) SELECT 'e1-copy', spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, created_at, updated_at, revision, labels, mac FROM entries WHERE id = 'e1'").await;
    let listed = store.entry_changes(None, 0).await.unwrap();
    let ids: Vec<&str> = listed.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e1"], "forged and moved entries are never listed");
    assert!(matches!(
        store.entry("evil").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.entry("e1-copy").await,
        Err(StoreError::NotFound { .. })
    ));
    raw(
        &url,
        "UPDATE entries SET parent_id = 'spiffe://td/agent/attacker' WHERE id = 'e1'",
    )
    .await;
    assert!(
        store
            .entry_changes(Some("spiffe://td/agent/attacker"), 0)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert!(matches!(
        store.entry("e1").await,
        Err(StoreError::NotFound { .. })
    ));

    // 4. A root appended to the CA's bundle: the CA is not trusted at all.
    assert_eq!(store.cas().await.unwrap().len(), 1);
    raw(
        &url,
        "UPDATE cas SET bundle_pem = '[\"pem\",\"attacker-root\"]' WHERE id = 'ca1'",
    )
    .await;
    assert!(
        store.cas().await.unwrap().is_empty(),
        "an edited bundle is refused"
    );

    // 5. A changed policy text: an error, never the text (nor an older version).
    raw(
        &url,
        "UPDATE policies SET text = 'forbid(principal, action, resource);'",
    )
    .await;
    assert!(matches!(
        store.current_policy().await,
        Err(StoreError::Invalid(_))
    ));

    // 6. A join token inserted by SQL is unknown; an edited expiry too.
    raw(&url, "INSERT INTO join_tokens (id, hash, created_at, expires_at) VALUES ('jf', 'joinforged', 1, 99999999999)").await;
    assert_eq!(
        store
            .consume_join_token(
                "joinforged",
                "spiffe://td/agent/n9",
                now_secs(),
                ev("join.use", "jf")
            )
            .await
            .unwrap(),
        JoinTokenUse::Unknown
    );
    raw(
        &url,
        "UPDATE join_tokens SET node_id = 'spiffe://td/agent/n9' WHERE id = 'j1'",
    )
    .await;
    assert_eq!(
        store
            .consume_join_token(
                "joinhash",
                "spiffe://td/agent/n9",
                now_secs(),
                ev("join.use", "j1")
            )
            .await
            .unwrap(),
        JoinTokenUse::Unknown
    );

    // 7. Sealed blobs and authenticated settings.
    let other_blob = if url.starts_with("sqlite") {
        "X'0909FF'"
    } else {
        "'\\x0909ff'::bytea"
    };
    raw(
        &url,
        &format!("UPDATE sealed_blobs SET blob = {other_blob}"),
    )
    .await;
    assert_eq!(store.sealed_blob("upstream_key").await.unwrap(), None);
    raw(
        &url,
        "UPDATE meta SET value = 'other' WHERE key = 'trust_domain'",
    )
    .await;
    assert_eq!(store.meta_verified("trust_domain").await.unwrap(), None);

    // Every refusal was counted and queued for the audit log (by place, once each).
    assert!(store.barrier().rejected() >= before + 10);
    let queued = store.barrier().take_rejections();
    for (table, key) in [
        ("tokens", "forged"),
        ("tokens", "t1"),
        ("entries", "evil"),
        ("entries", "e1"),
        ("cas", "ca1"),
        ("policies", "1"),
        ("join_tokens", "jf"),
        ("sealed_blobs", "upstream_key"),
    ] {
        assert!(
            queued.iter().any(|r| r.table == table && r.key == key),
            "{table}/{key} in {queued:?}"
        );
    }
    // And a locked store reads nothing at all.
    store.lock();
    assert!(matches!(
        store.token_by_hash("adminhash").await,
        Err(StoreError::Sealed)
    ));
}

async fn a_deleted_node_row_gives_its_name_to_no_unbound_token(store: Store, url: String) {
    store.initialize(initialization()).await.unwrap();
    let now = now_secs();
    for (id, hash, bound) in [
        ("j1", "h1", None),
        ("j2", "h2", None),
        ("j3", "h3", Some("spiffe://td/ward/agent/n1")),
    ] {
        store
            .create_join_token(id, hash, now + 600, bound, ev("join.create", id))
            .await
            .unwrap();
    }
    let n1 = "spiffe://td/ward/agent/n1";
    let use_ = |hash: &'static str, node: &'static str| {
        let store = store.clone();
        async move {
            store
                .consume_join_token(hash, node, now_secs(), ev("agent.attest", node))
                .await
                .unwrap()
        }
    };
    assert_eq!(use_("h1", n1).await, JoinTokenUse::Consumed("j1".into()));
    // The writer deletes n1's record so that the name looks new.
    raw(&url, "DELETE FROM nodes").await;
    let before = store.barrier().rejected();
    assert_eq!(use_("h2", n1).await, JoinTokenUse::NodeRecordsMissing);
    // Nor another name: the store is known to have lost a record.
    assert_eq!(
        use_("h2", "spiffe://td/ward/agent/n2").await,
        JoinTokenUse::NodeRecordsMissing
    );
    assert!(store.barrier().rejected() > before);
    // Forging the count down is refused too (the row fails the barrier).
    raw(
        &url,
        "UPDATE meta SET value = '0' WHERE key = 'nodes.claimed'",
    )
    .await;
    assert_eq!(use_("h2", n1).await, JoinTokenUse::NodeRecordsMissing);
    // An operator's bound token still attests the node, and the refused
    // token was never spent.
    assert_eq!(use_("h3", n1).await, JoinTokenUse::Consumed("j3".into()));
    raw(&url, "DELETE FROM meta WHERE key = 'nodes.claimed'").await;
    assert_eq!(use_("h2", n1).await, JoinTokenUse::NodeRecordsMissing);
}

/// A name first claimed with a bound token is counted like any other, so
/// that deleting its row frees it for no unbound token either; and the
/// count is kept under a lock (many nodes joining at once).
async fn names_claimed_with_bound_tokens_or_at_once_are_all_counted(store: Store, url: String) {
    store.initialize(initialization()).await.unwrap();
    let now = now_secs();
    let n5 = "spiffe://td/ward/agent/n5";
    for (id, hash, bound) in [("j5", "h5", Some(n5)), ("j6", "h6", None)] {
        store
            .create_join_token(id, hash, now + 600, bound, ev("join.create", id))
            .await
            .unwrap();
    }
    // Twelve unbound tokens spent at once for twelve names.
    for i in 0..12 {
        store
            .create_join_token(
                &format!("c{i}"),
                &format!("ch{i}"),
                now + 600,
                None,
                ev("join.create", "c"),
            )
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("spiffe://td/ward/agent/c{i}");
            store
                .consume_join_token(
                    &format!("ch{i}"),
                    &node,
                    now_secs(),
                    ev("agent.attest", &node),
                )
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), JoinTokenUse::Consumed(_)));
    }
    assert_eq!(
        store
            .meta_verified("nodes.claimed")
            .await
            .unwrap()
            .as_deref(),
        Some("12"),
        "every concurrent claim was counted"
    );
    assert_eq!(
        store
            .consume_join_token("h5", n5, now_secs(), ev("agent.attest", n5))
            .await
            .unwrap(),
        JoinTokenUse::Consumed("j5".into())
    );
    assert_eq!(
        store
            .meta_verified("nodes.claimed")
            .await
            .unwrap()
            .as_deref(),
        Some("13")
    );
    raw(&url, &format!("DELETE FROM nodes WHERE spiffe_id = '{n5}'")).await;
    assert_eq!(
        store
            .consume_join_token("h6", n5, now_secs(), ev("agent.attest", n5))
            .await
            .unwrap(),
        JoinTokenUse::NodeRecordsMissing
    );
}

/// Removing the barrier's marker row does not make a store look old: its
/// audit head was written under the key, so even the operator's flag does
/// not re-authenticate what the writer slipped in.
async fn a_removed_barrier_marker_is_no_old_store(store: Store, url: String) {
    store.initialize(initialization()).await.unwrap();
    raw(&url, "DELETE FROM meta WHERE key = 'barrier'").await;
    raw(
        &url,
        "INSERT INTO tokens (id, hash, role, created_at) VALUES ('evil', 'evilhash', 'admin', 1)",
    )
    .await;
    assert!(matches!(
        store.enable_barrier(true).await,
        Err(StoreError::BarrierMissing)
    ));
    assert!(store.token_by_hash("evilhash").await.unwrap().is_none());
}

async fn a_store_from_before_the_barrier_is_upgraded_once(store: Store, url: String) {
    store.initialize(initialization()).await.unwrap();
    store
        .create_entry(
            entry("e1", "spiffe://td/agent/n1"),
            ev("entry.create", "e1"),
        )
        .await
        .unwrap();
    store
        .push_policy(
            "permit(principal, action, resource);",
            "h",
            "token:t1",
            ev("policy.push", "1"),
        )
        .await
        .unwrap();
    store.close().await;
    // Back to the schema of the release before the barrier: no MAC
    // columns, no barrier marker, migration 4 not applied.
    for t in [
        "tokens",
        "join_tokens",
        "nodes",
        "entries",
        "cas",
        "policies",
        "sealed_blobs",
        "meta",
        "audit",
        "audit_head",
    ] {
        raw(&url, &format!("ALTER TABLE {t} DROP COLUMN mac")).await;
    }
    raw(&url, "DROP TABLE entry_tombstones").await;
    raw(
        &url,
        "CREATE TABLE entry_tombstones (id TEXT PRIMARY KEY, revision BIGINT NOT NULL)",
    )
    .await;
    raw(
        &url,
        "CREATE INDEX entry_tombstones_revision ON entry_tombstones (revision)",
    )
    .await;
    raw(&url, "DROP TABLE edge_windows").await;
    raw(&url, "CREATE TABLE edge_reports (received_at BIGINT NOT NULL, reporter TEXT NOT NULL, source TEXT NOT NULL, destination TEXT NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, status_class TEXT NOT NULL, decision TEXT NOT NULL, requests BIGINT NOT NULL, latency_us_sum BIGINT NOT NULL, window_start BIGINT NOT NULL, window_end BIGINT NOT NULL)").await;
    raw(&url, "INSERT INTO edge_reports VALUES (100, 'spiffe://td/b', 'spiffe://td/a', 'spiffe://td/b', 'GET', '/x', '2xx', 'allow', 3, 300, 1, 2), (110, 'spiffe://td/b', 'spiffe://td/a', 'spiffe://td/b', 'GET', '/x', '2xx', 'allow', 4, 400, 2, 3)").await;
    raw(&url, "DELETE FROM meta WHERE key = 'barrier'").await;
    raw(&url, "DELETE FROM ward_schema_migrations WHERE version = 4").await;

    let master = ward_store::seal::MasterKey::generate().unwrap();
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        5,
        "the migration ran again"
    );
    store.unlock(&master);
    // Nothing passes before the upgrade...
    assert_eq!(store.token_by_hash("adminhash").await.unwrap(), None);
    // ...and a server that already upgraded once refuses to do it again.
    assert!(matches!(
        store.enable_barrier(false).await,
        Err(StoreError::BarrierMissing)
    ));
    let ward_store::BarrierStart::Upgraded { rows } = store.enable_barrier(true).await.unwrap()
    else {
        panic!("expected an upgrade");
    };
    assert!(
        rows >= 6,
        "tokens, entries, CAs, policies, blobs, settings: {rows}"
    );
    // Everything the old release stored is there, authenticated.
    assert_eq!(
        store
            .token_by_hash("adminhash")
            .await
            .unwrap()
            .unwrap()
            .role,
        "admin"
    );
    assert_eq!(
        store.entry("e1").await.unwrap().parent_id,
        "spiffe://td/agent/n1"
    );
    assert_eq!(store.cas().await.unwrap().len(), 1);
    assert!(store.current_policy().await.unwrap().is_some());
    assert_eq!(
        store.sealed_blob("upstream_key").await.unwrap(),
        Some(vec![9, 9])
    );
    assert_eq!(
        store
            .meta_verified("trust_domain")
            .await
            .unwrap()
            .as_deref(),
        Some("td")
    );
    // Old telemetry reports are summed into their minute.
    let totals = store.edge_totals(0).await.unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!((totals[0].requests, totals[0].latency_us_sum), (7, 700));
    // Once on, it stays on; a row edited afterwards is refused.
    assert_eq!(
        store.enable_barrier(false).await.unwrap(),
        ward_store::BarrierStart::On
    );
    raw(
        &url,
        "UPDATE entries SET spiffe_id = 'spiffe://td/ns/evil/sa/x'",
    )
    .await;
    assert!(
        store
            .entry_changes(None, 0)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    // The upgrade is in the audit log, and the old records are keyed now.
    let records = store.audit_records(0, 100).await.unwrap();
    assert!(records.iter().any(|r| r.action == "barrier.enable"));
    assert!(!records.iter().any(|r| r.action == "audit.head_mismatch"));
    assert_eq!(
        store.verify_audit().await.unwrap().unwrap().records,
        records.len() as i64
    );
    store.close().await;
}

both_backends!(
    writes_that_advance_the_revision_wake_waiters,
    a_node_learns_only_of_its_own_entries_deletions,
    entries_advance_the_revision_and_report_changes,
    join_tokens_are_single_use_and_expire,
    audit_chain_stays_intact_under_concurrent_writers,
    initialization_happens_once_and_ca_rotation_keeps_one_active,
    policies_are_versioned_and_advance_the_revision,
    edge_reports_are_summed_per_edge,
    concurrent_writes_to_one_vault_record_serialize,
);

async fn policies_are_versioned_and_advance_the_revision(store: Store) {
    assert_eq!(store.current_policy().await.unwrap(), None);
    let before = store.revision().await.unwrap();
    let one = store
        .push_policy(
            "permit(principal, action, resource);",
            "aa",
            "token:t",
            ev("policy.push", "1"),
        )
        .await
        .unwrap();
    assert_eq!((one.version, one.revision), (1, before + 1));
    let two = store
        .push_policy("", "bb", "token:t", ev("policy.push", "2"))
        .await
        .unwrap();
    assert_eq!(two.version, 2);
    assert_eq!(store.current_policy().await.unwrap().unwrap(), two);
    assert_eq!(store.revision().await.unwrap(), two.revision);
    // The label map survives a round trip through the entries table.
    store
        .create_entry(entry("labelled", "p"), ev("entry.create", "l"))
        .await
        .unwrap();
    assert_eq!(
        store.entry("labelled").await.unwrap().labels["team"],
        "shop"
    );
}

async fn edge_reports_are_summed_per_edge(store: Store) {
    let edge = |decision: &str, n: i64| ward_store::EdgeReport {
        source: "spiffe://td/a".into(),
        destination: "spiffe://td/b".into(),
        method: "GET".into(),
        route: "/x".into(),
        status_class: if decision == "allow" {
            "2xx".into()
        } else {
            "none".into()
        },
        decision: decision.into(),
        requests: n,
        latency_us_sum: n * 100,
        window_start: 1,
        window_end: 2,
    };
    store
        .record_edges("spiffe://td/b", &[edge("allow", 3), edge("deny", 1)], 1000)
        .await
        .unwrap();
    store
        .record_edges("spiffe://td/b", &[edge("allow", 4)], 1000)
        .await
        .unwrap();
    let totals = store.edge_totals(0).await.unwrap();
    assert_eq!(totals.len(), 2);
    let allow = totals.iter().find(|t| t.decision == "allow").unwrap();
    assert_eq!((allow.requests, allow.latency_us_sum), (7, 700));
    assert!(store.edge_totals(now_secs() + 10).await.unwrap().is_empty());
    // A flood of batches adds nothing but counts: one row per edge and minute.
    let rows = store.edge_rows().await.unwrap();
    for _ in 0..200 {
        store
            .record_edges("spiffe://td/b", &[edge("allow", 1), edge("deny", 1)], 1000)
            .await
            .unwrap();
    }
    assert!(
        store.edge_rows().await.unwrap() <= rows + 2,
        "a minute boundary adds one row per edge at most"
    );
    // A reporter inventing routes is bounded too: the rest fold into (other).
    let many: Vec<_> = (0..300)
        .map(|i| ward_store::EdgeReport {
            route: format!("/r{i}"),
            ..edge("allow", 1)
        })
        .collect();
    let folded = store
        .record_edges("spiffe://td/c", &many, 50)
        .await
        .unwrap();
    assert!(folded >= 250, "{folded}");
    let totals = store.edge_totals(0).await.unwrap();
    let other = totals
        .iter()
        .find(|t| t.route == "(other)")
        .expect("an (other) edge");
    assert!(other.requests >= 250);
    assert!(store.edge_rows().await.unwrap() <= rows + 2 + 50 + 2);
    // Retention: everything older than now + 2 minutes goes.
    assert!(store.prune_edges(now_secs() + 120).await.unwrap() > 0);
    assert_eq!(store.edge_rows().await.unwrap(), 0);
}

fn ev(action: &str, target: &str) -> AuditEvent {
    AuditEvent::new(
        "token:test",
        action,
        target,
        serde_json::json!({"k": target}),
    )
}

fn entry(id: &str, parent: &str) -> EntryRecord {
    EntryRecord {
        id: id.into(),
        spiffe_id: format!("spiffe://td/{id}"),
        parent_id: parent.into(),
        selectors: vec!["unix:uid:1000".into()],
        x509_ttl: 3600,
        jwt_ttl: 300,
        labels: [("team".to_string(), "shop".to_string())].into(),
        created_at: now_secs(),
        updated_at: now_secs(),
        revision: 0,
    }
}

async fn migrations_are_recorded_and_idempotent(store: Store, url: String) {
    assert_eq!(store.schema_version().await.unwrap(), 5);
    assert!(!store.is_initialized().await.unwrap());
    assert_eq!(store.audit_head().await.unwrap().0, 0);
    store.initialize(initialization()).await.unwrap();
    store
        .create_entry(
            entry("e1", "spiffe://td/agent/n1"),
            ev("entry.create", "e1"),
        )
        .await
        .unwrap();
    // Connecting again runs the migrations again: nothing is applied
    // twice, nothing is lost, and the chain still verifies.
    for _ in 0..2 {
        let again = unlocked(Store::connect(&url).await.unwrap());
        assert_eq!(again.schema_version().await.unwrap(), 5);
        assert!(again.is_initialized().await.unwrap());
        assert_eq!(again.entry("e1").await.unwrap().id, "e1");
        again.close().await;
    }
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM ward_schema_migrations").await,
        5,
        "one row per migration"
    );
    assert_eq!(store.verify_audit().await.unwrap().unwrap().records, 2);
}

/// Reads one integer with raw SQL.
async fn count(url: &str, sql: &str) -> i64 {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let _ = conn.close().await;
    n
}

async fn entries_advance_the_revision_and_report_changes(store: Store) {
    store.initialize(initialization()).await.unwrap();
    let a = store
        .create_entry(entry("a", "spiffe://td/agent/n1"), ev("entry.create", "a"))
        .await
        .unwrap();
    let b = store
        .create_entry(entry("b", "spiffe://td/agent/n2"), ev("entry.create", "b"))
        .await
        .unwrap();
    assert!(b.revision > a.revision);
    let dup = store
        .create_entry(entry("a", "x"), ev("entry.create", "a"))
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");

    let all = store.entry_changes(None, 0).await.unwrap();
    assert_eq!(all.entries.len(), 2);
    assert_eq!(all.revision, b.revision);
    let n1 = store
        .entry_changes(Some("spiffe://td/agent/n1"), 0)
        .await
        .unwrap();
    assert_eq!(
        n1.entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );

    let mut a2 = a.clone();
    a2.selectors = vec!["unix:uid:0".into()];
    let a2 = store
        .update_entry(a2, ev("entry.update", "a"))
        .await
        .unwrap();
    store
        .delete_entry("b", ev("entry.delete", "b"))
        .await
        .unwrap();
    let since = store.entry_changes(None, b.revision).await.unwrap();
    assert_eq!(since.entries, vec![a2.clone()]);
    assert_eq!(since.deleted, vec!["b".to_string()]);
    assert_eq!(
        store.entry("a").await.unwrap().selectors,
        vec!["unix:uid:0"]
    );
    assert!(matches!(
        store.entry("b").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_entry("b", ev("entry.delete", "b")).await,
        Err(StoreError::NotFound { .. })
    ));
    // A refused write appends no audit record (after initialization's one).
    let (seq, hash) = store.audit_head().await.unwrap();
    assert_eq!(seq, 1 + 4);
    let records = store.audit_records(0, 100).await.unwrap();
    assert_eq!(verify_chain(&records, seq, &hash), Ok(1 + 4));
}

async fn join_tokens_are_single_use_and_expire(store: Store) {
    store.initialize(initialization()).await.unwrap();
    let now = now_secs();
    let ev_ = |t: &str| ev("jointoken.create", t);
    store
        .create_join_token("j1", "hash1", now + 600, None, ev_("j1"))
        .await
        .unwrap();
    store
        .create_join_token("j2", "hash2", now - 1, None, ev_("j2"))
        .await
        .unwrap();
    store
        .create_join_token("j3", "hash3", now + 600, None, ev_("j3"))
        .await
        .unwrap();
    store
        .create_join_token(
            "j4",
            "hash4",
            now + 600,
            Some("spiffe://td/ward/agent/n1"),
            ev_("j4"),
        )
        .await
        .unwrap();
    let n1 = "spiffe://td/ward/agent/n1";
    let n2 = "spiffe://td/ward/agent/n2";
    assert_eq!(
        store
            .consume_join_token("hash1", n1, now, ev("agent.attest", n1))
            .await
            .unwrap(),
        JoinTokenUse::Consumed("j1".into())
    );
    assert_eq!(
        store
            .consume_join_token("hash1", n2, now, ev("x", "j1"))
            .await
            .unwrap(),
        JoinTokenUse::Spent
    );
    assert_eq!(
        store
            .consume_join_token("hash2", n2, now, ev("x", "j2"))
            .await
            .unwrap(),
        JoinTokenUse::Expired
    );
    assert_eq!(
        store
            .consume_join_token("nope", n2, now, ev("x", "n"))
            .await
            .unwrap(),
        JoinTokenUse::Unknown
    );
    // Another token cannot take over n1; the refused token stays usable.
    assert_eq!(
        store
            .consume_join_token("hash3", n1, now, ev("x", "j3"))
            .await
            .unwrap(),
        JoinTokenUse::NodeExists
    );
    assert_eq!(
        store
            .consume_join_token("hash3", n2, now, ev("agent.attest", n2))
            .await
            .unwrap(),
        JoinTokenUse::Consumed("j3".into())
    );
    // A token bound to n1 attests n1 again, and nothing else.
    assert_eq!(
        store
            .consume_join_token("hash4", n2, now, ev("x", "j4"))
            .await
            .unwrap(),
        JoinTokenUse::WrongNode(n1.into())
    );
    assert_eq!(
        store
            .consume_join_token("hash4", n1, now, ev("agent.attest", n1))
            .await
            .unwrap(),
        JoinTokenUse::Consumed("j4".into())
    );
    // Only the initialization, the creations and the successful uses were audited.
    assert_eq!(store.audit_head().await.unwrap().0, 1 + 4 + 3);
}

async fn audit_chain_stays_intact_under_concurrent_writers(store: Store) {
    store.initialize(initialization()).await.unwrap();
    let writer = AuditWriter::spawn(store.clone());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move {
            w.append(ev("svid.x509", &format!("w{i}"))).await.unwrap()
        }));
    }
    for i in 0..10 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.create_entry(
                entry(&format!("e{i}"), "p"),
                ev("entry.create", &format!("e{i}")),
            )
            .await
            .unwrap()
            .revision
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (seq, hash) = store.audit_head().await.unwrap();
    assert_eq!(seq, 1 + 210);
    let records = store.audit_records(0, 1000).await.unwrap();
    assert_eq!(verify_chain(&records, seq, &hash), Ok(1 + 210));
    let page = store.audit_records(200, 5).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [201, 202, 203, 204, 205]
    );
}

fn ca(id: &str, state: &str) -> CaRecord {
    CaRecord {
        id: id.into(),
        generation: 1,
        state: state.into(),
        cert_pem: "pem".into(),
        chain_pem: vec![],
        bundle_pem: vec!["pem".into()],
        key_sealed: vec![1, 2, 3],
        jwt_kid: "kid".into(),
        jwt_key_sealed: vec![4, 5, 6],
        not_after: now_secs() + 86400,
        created_at: now_secs(),
        activated_at: Some(now_secs()),
        drop_after: None,
        revision: 0,
    }
}

async fn initialization_happens_once_and_ca_rotation_keeps_one_active(store: Store) {
    let init = || Initialization {
        meta: vec![("trust_domain".into(), "td".into())],
        sealed: vec![("upstream_key".into(), vec![9, 9])],
        admin_token: ("t1".into(), "tokenhash".into()),
        ca: ca("ca1", "active"),
        audit: ev("server.init", "td"),
    };
    store.initialize(init()).await.unwrap();
    assert!(matches!(
        store.initialize(init()).await,
        Err(StoreError::AlreadyInitialized)
    ));
    assert!(store.is_initialized().await.unwrap());
    assert_eq!(
        store.meta("trust_domain").await.unwrap().as_deref(),
        Some("td")
    );
    assert_eq!(
        store.sealed_blob("upstream_key").await.unwrap(),
        Some(vec![9, 9])
    );
    let tok = store.token_by_hash("tokenhash").await.unwrap().unwrap();
    assert_eq!((tok.id.as_str(), tok.role.as_str()), ("t1", "admin"));
    assert!(store.token_by_hash("other").await.unwrap().is_none());

    assert!(matches!(
        store
            .activate_prepared_ca(now_secs(), 0, ev("ca.activate", "-"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let p = store
        .insert_prepared_ca(ca("ca2", "prepared"), ev("ca.prepare", "ca2"))
        .await
        .unwrap();
    assert_eq!(p.generation, 2);
    assert!(matches!(
        store
            .insert_prepared_ca(ca("ca3", "prepared"), ev("ca.prepare", "ca3"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let active = store
        .activate_prepared_ca(now_secs(), 12345, ev("ca.activate", "ca2"))
        .await
        .unwrap();
    assert_eq!(active.id, "ca2");
    let cas = store.cas().await.unwrap();
    let states: Vec<_> = cas
        .iter()
        .map(|c| (c.id.as_str(), c.state.as_str(), c.drop_after))
        .collect();
    assert_eq!(
        states,
        [("ca1", "retired", Some(12345)), ("ca2", "active", None)]
    );
    assert_eq!(cas[0].key_sealed, vec![1, 2, 3]);
}

#[tokio::test]
async fn sqlite_keeps_committed_writes_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ward.db", dir.path().display());
    let master = ward_store::seal::MasterKey::generate().unwrap();
    {
        let store = Store::connect(&url).await.unwrap();
        store.unlock(&master);
        store
            .create_entry(entry("kept", "p"), ev("entry.create", "kept"))
            .await
            .unwrap();
        store.close().await;
    }
    let store = Store::connect(&url).await.unwrap();
    assert!(
        matches!(store.entry("kept").await, Err(StoreError::Sealed)),
        "nothing is read through the barrier before an unlock"
    );
    store.unlock(&master);
    assert_eq!(store.entry("kept").await.unwrap().id, "kept");
    assert_eq!(store.schema_version().await.unwrap(), 5);
}

#[tokio::test]
async fn a_corrupted_sqlite_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let err = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("not a valid database"), "{err}");
}

#[tokio::test]
async fn unknown_schemes_are_refused_without_echoing_passwords() {
    let err = Store::connect("mysql://u:hunter2@h/db").await.unwrap_err();
    assert!(matches!(err, StoreError::BadUrl(_)));
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

async fn a_wiped_audit_log_is_no_fresh_start(store: Store, url: String) {
    five_records(&store).await;
    raw(&url, "DELETE FROM audit").await;
    raw(&url, "UPDATE audit_head SET seq = 0, hash = '0000000000000000000000000000000000000000000000000000000000000000', mac = NULL").await;
    assert_eq!(first_bad(&store).await, 1);
    // Nor does removing the "initialized" setting pass it off as a new store.
    raw(&url, "DELETE FROM meta WHERE key = 'initialized_at'").await;
    assert_eq!(first_bad(&store).await, 1);
    store
        .append_audit(&[ev("entry.create", "after-wipe")])
        .await
        .unwrap();
    let records = store.audit_records(0, 10).await.unwrap();
    assert_eq!(
        records[0].action, "audit.head_mismatch",
        "the wipe is recorded first"
    );
    assert_eq!(first_bad(&store).await, 1);
}

async fn junk_above_the_audit_head_cannot_stall_verification(store: Store, url: String) {
    five_records(&store).await;
    // 1,200 rows far above the head, and the head moved past the last record.
    let values: Vec<String> = (0..1200)
        .map(|i| format!("({}, 0, 'a', 'b', 'c', '{{}}', 'p', 'h')", 1_000_000 + i))
        .collect();
    raw(&url, &format!("INSERT INTO audit (seq, ts_ms, actor, action, target, detail, prev_hash, hash) VALUES {}", values.join(", "))).await;
    raw(&url, "UPDATE audit_head SET seq = 7").await;
    let checked =
        tokio::time::timeout(std::time::Duration::from_secs(20), store.verify_audit()).await;
    let result = checked.expect("verification must end").unwrap();
    assert_eq!(
        result.unwrap_err().seq,
        7,
        "the head names a record that is not there"
    );
}

async fn a_node_learns_only_of_its_own_entries_deletions(store: Store) {
    let (a, b) = ("spiffe://td/agent/a", "spiffe://td/agent/b");
    let ea = store
        .create_entry(entry("ea", a), ev("entry.create", "ea"))
        .await
        .unwrap();
    let eb = store
        .create_entry(entry("eb", b), ev("entry.create", "eb"))
        .await
        .unwrap();
    let since = eb.revision;
    store
        .delete_entry("eb", ev("entry.delete", "eb"))
        .await
        .unwrap();
    let for_a = store.entry_changes(Some(a), since).await.unwrap();
    assert!(
        for_a.deleted.is_empty(),
        "node a must not learn of b's entries: {for_a:?}"
    );
    let for_b = store.entry_changes(Some(b), since).await.unwrap();
    assert_eq!(for_b.deleted, ["eb"]);
    // An entry moved from a to b is a deletion for a and a change for b.
    let since = for_b.revision;
    let mut moved = ea.clone();
    moved.parent_id = b.into();
    store
        .update_entry(moved, ev("entry.update", "ea"))
        .await
        .unwrap();
    let for_a = store.entry_changes(Some(a), since).await.unwrap();
    assert_eq!(for_a.deleted, ["ea"]);
    assert!(for_a.entries.is_empty());
    let for_b = store.entry_changes(Some(b), since).await.unwrap();
    assert!(for_b.deleted.is_empty());
    assert_eq!(
        for_b
            .entries
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["ea"]
    ); // Moved on again (b to c) while a was away: a still learns it lost it.
    let mut again = store.entry("ea").await.unwrap();
    again.parent_id = "spiffe://td/agent/c".into();
    store
        .update_entry(again, ev("entry.update", "ea"))
        .await
        .unwrap();
    assert_eq!(
        store.entry_changes(Some(a), since).await.unwrap().deleted,
        ["ea"]
    );
    assert_eq!(
        store.entry_changes(Some(b), since).await.unwrap().deleted,
        ["ea"]
    );
}

// ---- the vault's records and leases ----------------------------------------

async fn vault_put(store: &Store, key: &str, value: &[u8]) {
    let mut tx = store.vault_begin(key).await.unwrap();
    tx.put(key, value).await.unwrap();
    tx.commit(&[ev("secret.write", key)]).await.unwrap();
}

async fn vault_records_round_trip_and_a_moved_row_is_an_integrity_error(store: Store, url: String) {
    for (k, v) in [
        ("kv/a_b", b"one".as_slice()),
        ("kv/aXb", b"two"),
        ("kv/a%c/d", b"three"),
    ] {
        vault_put(&store, k, v).await;
    }
    assert_eq!(store.vault_get("kv/a_b").await.unwrap().unwrap(), b"one");
    assert_eq!(store.vault_get("kv/none").await.unwrap(), None);
    // LIKE's wildcards and SQLite's case folding never widen a prefix.
    let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(store.vault_scan("kv/a_").await.unwrap()), ["kv/a_b"]);
    assert_eq!(keys(store.vault_scan("kv/a%").await.unwrap()), ["kv/a%c/d"]);
    assert!(store.vault_scan("KV/").await.unwrap().is_empty());
    assert_eq!(store.vault_scan("kv/").await.unwrap().len(), 3);
    // The write's audit record is in the chain, in the same transaction.
    let records = store.audit_records(0, 100).await.unwrap();
    assert_eq!(
        records
            .iter()
            .filter(|r| r.action == "secret.write")
            .count(),
        3
    );
    // A writer without the master key moves a's row (value and MAC) onto b.
    raw(
        &url,
        "UPDATE vault_records SET value = (SELECT value FROM vault_records WHERE key = 'kv/a_b'), mac = (SELECT mac FROM vault_records WHERE key = 'kv/a_b') WHERE key = 'kv/aXb'",
    )
    .await;
    let before = store.barrier().rejected();
    assert!(matches!(
        store.vault_get("kv/aXb").await,
        Err(StoreError::Integrity(_))
    ));
    assert!(matches!(
        store.vault_scan("kv/").await,
        Err(StoreError::Integrity(_))
    ));
    assert!(store.barrier().rejected() > before);
    // A forged row inside a write fails it, and nothing is written.
    let mut tx = store.vault_begin("kv/aXb").await.unwrap();
    assert!(matches!(
        tx.get("kv/aXb").await,
        Err(StoreError::Integrity(_))
    ));
    drop(tx);
    assert_eq!(store.vault_get("kv/a_b").await.unwrap().unwrap(), b"one");
}

/// Read-modify-write of one record from many tasks loses no update: the
/// record's lock (SQLite's write lock, PostgreSQL's advisory lock) holds
/// from the read to the commit.
async fn concurrent_writes_to_one_vault_record_serialize(store: Store) {
    let key = "kv/counter";
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let mut tx = store.vault_begin(key).await.unwrap();
                    let n: u64 = match tx.get(key).await.unwrap() {
                        Some(v) => String::from_utf8(v).unwrap().parse().unwrap(),
                        None => 0,
                    };
                    tx.put(key, (n + 1).to_string().as_bytes()).await.unwrap();
                    tx.commit(&[]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.vault_get(key).await.unwrap().unwrap(), b"60");
}

async fn forged_leases_are_never_due(store: Store, url: String) {
    use ward_store::LeaseRow;
    let now = now_secs();
    let lease = |id: &str, expires_at: i64| LeaseRow {
        id: id.into(),
        expires_at,
        state: "active".into(),
        attempts: 0,
        next_attempt: expires_at,
        sealed: vec![1, 2, 3],
    };
    store
        .put_lease(
            &lease("database/creds/r/past", now - 5),
            &[ev("database.creds", "x")],
        )
        .await
        .unwrap();
    store
        .put_lease(&lease("database/creds/r/future", now + 3600), &[])
        .await
        .unwrap();
    store
        .put_lease(&lease("database/creds/r/victim", now + 3600), &[])
        .await
        .unwrap();
    let due: Vec<String> = store
        .due_leases(now, 10, &mut Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(due, ["database/creds/r/past"]);
    // A writer pulls a lease's expiry forward without the key: never acted on.
    raw(
        &url,
        "UPDATE leases SET expires_at = 0 WHERE id = 'database/creds/r/victim'",
    )
    .await;
    let due: Vec<String> = store
        .due_leases(now, 10, &mut Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(due, ["database/creds/r/past"]);
    assert!(matches!(
        store.lease("database/creds/r/victim").await,
        Err(StoreError::Integrity(_))
    ));
    store
        .delete_lease("database/creds/r/past", &[])
        .await
        .unwrap();
    assert!(
        store
            .due_leases(now, 10, &mut Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.leases("database/creds/r/f").await.unwrap().len(), 1);
}

async fn one_replica_at_a_time_holds_expiry_leadership(store: Store, url: String) {
    let other = unlocked(Store::connect(&url).await.unwrap());
    let mut first = store
        .try_expiry_leadership()
        .await
        .unwrap()
        .expect("the first replica leads");
    assert!(first.alive().await);
    match store.backend() {
        ward_store::Backend::Sqlite => {
            // One server per SQLite file: it always runs expiry.
            assert!(other.try_expiry_leadership().await.unwrap().is_some());
        }
        ward_store::Backend::Postgres => {
            assert!(
                other.try_expiry_leadership().await.unwrap().is_none(),
                "only one leader"
            );
            drop(first);
            let mut taken = None;
            for _ in 0..50 {
                taken = other.try_expiry_leadership().await.unwrap();
                if taken.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            assert!(
                taken.is_some(),
                "the other replica takes over once the leader's session ends"
            );
        }
    }
    other.close().await;
}
