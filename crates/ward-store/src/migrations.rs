//! Versioned schema migrations, applied in order at start-up. Each version
//! has one script for both backends (see [`Migration::script`]);
//! the applied versions are recorded in `ward_schema_migrations`. Never edit
//! a released migration: add a new version.

/// One schema version. The script is shared by both backends; the only
/// dialect difference, the binary column type, is written `{blob}`.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The script for one backend.
    pub fn script(&self, backend: crate::Backend) -> String {
        let blob = match backend {
            crate::Backend::Sqlite => "BLOB",
            crate::Backend::Postgres => "BYTEA",
        };
        self.sql.replace("{blob}", blob)
    }
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sql: r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sealed_blobs (name TEXT PRIMARY KEY, blob {blob} NOT NULL);
CREATE TABLE revision (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL);
INSERT INTO revision (id, value) VALUES (1, 0);
CREATE TABLE entries (
  id TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, parent_id TEXT NOT NULL, selectors TEXT NOT NULL,
  x509_ttl BIGINT NOT NULL, jwt_ttl BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
  revision BIGINT NOT NULL);
CREATE INDEX entries_parent ON entries (parent_id);
CREATE INDEX entries_revision ON entries (revision);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE TABLE entry_tombstones (id TEXT PRIMARY KEY, revision BIGINT NOT NULL);
CREATE INDEX entry_tombstones_revision ON entry_tombstones (revision);
CREATE TABLE tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
  created_at BIGINT NOT NULL, expires_at BIGINT);
CREATE TABLE join_tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL, used_at BIGINT);
CREATE TABLE cas (id TEXT PRIMARY KEY, generation BIGINT NOT NULL UNIQUE, state TEXT NOT NULL,
  cert_pem TEXT NOT NULL, chain_pem TEXT NOT NULL, bundle_pem TEXT NOT NULL, key_sealed {blob} NOT NULL,
  jwt_kid TEXT NOT NULL, jwt_key_sealed {blob} NOT NULL, not_after BIGINT NOT NULL, created_at BIGINT NOT NULL,
  activated_at BIGINT, drop_after BIGINT, revision BIGINT NOT NULL);
CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TABLE audit (seq BIGINT PRIMARY KEY, ts_ms BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  target TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
"#,
    },
    Migration {
        version: 2,
        name: "node identities",
        // A join token may be bound to one node; a node name, once attested,
        // can only be attested again with a token bound to it.
        sql: r#"
ALTER TABLE join_tokens ADD COLUMN node_id TEXT;
CREATE TABLE nodes (spiffe_id TEXT PRIMARY KEY, join_token_id TEXT NOT NULL, attested_at BIGINT NOT NULL);
"#,
    },
    Migration {
        version: 3,
        name: "policies and telemetry",
        // Labels of a workload (Cedar tags on its Service entity); policy
        // versions (each push advances the store revision, which proxies
        // watch); call edges reported by proxies, one row per edge per report.
        sql: r#"
ALTER TABLE entries ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
CREATE TABLE policies (version BIGINT PRIMARY KEY, revision BIGINT NOT NULL, text TEXT NOT NULL,
  sha256 TEXT NOT NULL, created_at BIGINT NOT NULL, actor TEXT NOT NULL);
CREATE TABLE edge_reports (received_at BIGINT NOT NULL, reporter TEXT NOT NULL, source TEXT NOT NULL,
  destination TEXT NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, status_class TEXT NOT NULL,
  decision TEXT NOT NULL, requests BIGINT NOT NULL, latency_us_sum BIGINT NOT NULL,
  window_start BIGINT NOT NULL, window_end BIGINT NOT NULL);
CREATE INDEX edge_reports_received ON edge_reports (received_at);
"#,
    },
    Migration {
        version: 4,
        name: "barrier",
        // A MAC per row (see `barrier`) on every table that decides who gets
        // what. NULL until the first unseal after the upgrade computes it.
        sql: r#"
ALTER TABLE tokens ADD COLUMN mac TEXT;
ALTER TABLE join_tokens ADD COLUMN mac TEXT;
ALTER TABLE nodes ADD COLUMN mac TEXT;
ALTER TABLE entries ADD COLUMN mac TEXT;
ALTER TABLE cas ADD COLUMN mac TEXT;
ALTER TABLE policies ADD COLUMN mac TEXT;
ALTER TABLE sealed_blobs ADD COLUMN mac TEXT;
ALTER TABLE meta ADD COLUMN mac TEXT;
ALTER TABLE audit ADD COLUMN mac TEXT;
ALTER TABLE audit_head ADD COLUMN mac TEXT;
CREATE TABLE entry_tombstones_by_parent (id TEXT NOT NULL, parent_id TEXT NOT NULL, revision BIGINT NOT NULL,
  PRIMARY KEY (id, parent_id));
INSERT INTO entry_tombstones_by_parent (id, parent_id, revision) SELECT id, '', revision FROM entry_tombstones;
DROP TABLE entry_tombstones;
ALTER TABLE entry_tombstones_by_parent RENAME TO entry_tombstones;
CREATE INDEX entry_tombstones_revision ON entry_tombstones (revision);
CREATE TABLE edge_windows (reporter TEXT NOT NULL, source TEXT NOT NULL, destination TEXT NOT NULL,
  method TEXT NOT NULL, route TEXT NOT NULL, status_class TEXT NOT NULL, decision TEXT NOT NULL,
  window_start BIGINT NOT NULL, requests BIGINT NOT NULL, latency_us_sum BIGINT NOT NULL,
  last_seen BIGINT NOT NULL, last_received BIGINT NOT NULL,
  PRIMARY KEY (reporter, source, destination, method, route, status_class, decision, window_start));
CREATE INDEX edge_windows_received ON edge_windows (last_received);
INSERT INTO edge_windows (reporter, source, destination, method, route, status_class, decision,
  window_start, requests, latency_us_sum, last_seen, last_received)
  SELECT reporter, source, destination, method, route, status_class, decision, (received_at / 60) * 60,
    SUM(requests), SUM(latency_us_sum), MAX(window_end), MAX(received_at)
  FROM edge_reports
  GROUP BY reporter, source, destination, method, route, status_class, decision, (received_at / 60) * 60;
DROP TABLE edge_reports;
"#,
    },
    Migration {
        version: 5,
        name: "vault",
        // The vault's records under logical keys (values sealed by the
        // server, rows MACed by the barrier), and dynamic credentials'
        // leases, queried by expiry.
        sql: r#"
CREATE TABLE vault_records (key TEXT PRIMARY KEY, value {blob} NOT NULL, mac TEXT NOT NULL);
CREATE TABLE leases (id TEXT PRIMARY KEY, expires_at BIGINT NOT NULL, state TEXT NOT NULL,
  attempts BIGINT NOT NULL, next_attempt BIGINT NOT NULL, sealed {blob} NOT NULL, mac TEXT NOT NULL);
CREATE INDEX leases_expiry ON leases (state, expires_at);
CREATE INDEX tokens_role ON tokens (role);
"#,
    },
];
