//! The vault against real clients and real databases: hvac (HashiCorp's
//! Python client) for KV v2, sys, workload logins with real SVIDs, Cedar
//! grants, transit and dynamic PostgreSQL and MariaDB credentials; and,
//! from here, the store attacks hvac cannot make (a row swapped between
//! paths or versions, a tampered ciphertext), sealing and unsealing.

mod support;

use std::process::Command;
use std::time::Duration;

use support::proxy::Svid;
use support::*;

const HVAC_SCRIPT: &str = include_str!("clients/vault_hvac.py");

/// Every check the script makes; each must pass.
const HVAC_CHECKS: &[&str] = &[
    "kv_versions_cas_and_reads",
    "kv_list",
    "kv_delete_undelete_destroy",
    "kv_metadata",
    "sys_seal_status_and_mounts",
    "jwt_login_grants_follow_the_spiffe_id",
    "payments_is_refused_orders_secret",
    "path_tricks_are_refused",
    "bad_jwts_are_refused",
    "cert_login_with_the_x509_svid",
    "workload_tokens_renew_and_revoke",
    "transit_encrypt_rotate_rewrap_and_min_version",
    "transit_sign_and_verify",
    "database_postgres",
    "database_mariadb",
];

fn jwt(s: &Server, id: &str, audience: &str, ttl: &str) -> String {
    let out = s.ward(&[
        "jwt",
        "mint",
        "--spiffe-id",
        id,
        "--audience",
        audience,
        "--ttl",
        ttl,
    ]);
    assert!(out.status.success(), "jwt mint: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn hvac_speaks_to_the_vault() {
    let Some(python) = required_env("WARD_TEST_PYTHON", "a python with hvac==2.4.0") else {
        return;
    };
    let Some(pg) = required_env(
        "WARD_TEST_POSTGRES_URL",
        "PostgreSQL for dynamic credentials",
    ) else {
        return;
    };
    let my = std::env::var("WARD_TEST_MARIADB_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "vault.test");
    let orders = "spiffe://vault.test/ns/shop/sa/orders";
    let payments = "spiffe://vault.test/ns/shop/sa/payments";
    let svid = Svid::mint(&s, &tmp.path().join("orders-svid"), orders, "10m");
    let expired = jwt(&s, orders, "vault", "1s");
    let cfg = serde_json::json!({
        "addr": s.addr(),
        "cacert": s.cacert(),
        "token": s.token(),
        "orders": orders,
        "jwt_orders": jwt(&s, orders, "vault", "5m"),
        "jwt_payments": jwt(&s, payments, "vault", "5m"),
        "jwt_wrong_audience": jwt(&s, orders, "not-vault", "5m"),
        "jwt_expired": expired,
        "svid_cert": svid.cert(),
        "svid_key": svid.key(),
        "pg_url": pg,
        "my_url": my,
    });
    // The 1 s token must be past its lifetime and the 5 s leeway.
    std::thread::sleep(Duration::from_secs(7));
    let script = tmp.path().join("vault_hvac.py");
    std::fs::write(&script, HVAC_SCRIPT).unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .arg(cfg.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty(),
        "hvac checks failed:\n{}\nstderr:\n{}\nserver log:\n{}",
        failed.join("\n"),
        String::from_utf8_lossy(&out.stderr),
        s.log_text()
    );
    for name in HVAC_CHECKS {
        assert!(
            stdout.lines().any(|l| l == format!("PASS {name}")),
            "check {name} did not run:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Values never reach the audit log or the server's log.
    let audit = s.ward(&["audit", "tail", "--lines", "2000", "--output", "json"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    for secret in [
        "orders-pw",
        "root-pw",
        "payments-pw",
        "secret one",
        "c2VjcmV0IG9uZQ==",
    ] {
        assert!(!audit.contains(secret), "{secret} is in the audit log");
        assert!(
            !s.log_text().contains(secret),
            "{secret} is in the server log"
        );
    }
    assert!(
        audit.contains("secret.read") && audit.contains("vault.denied"),
        "reads and denials are audited"
    );
}

/// (status, body) of a vault request with the admin token.
fn vault(s: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    s.curl(method, path, Some(s.token()), body)
}

fn sqlite(s: &Server, sql: &str) -> String {
    let db = s.dir.join("ward.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(sql)
        .output()
        .expect("sqlite3");
    assert!(out.status.success(), "sqlite3 {sql}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn rows_moved_between_paths_or_versions_fail_with_an_integrity_error() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "swap.test");
    for (path, value) in [("a", "alpha-1"), ("a", "alpha-2"), ("b", "bravo-1")] {
        let (code, body) = vault(
            &s,
            "POST",
            &format!("/v1/secret/data/{path}"),
            Some(&format!(r#"{{"data":{{"v":"{value}"}}}}"#)),
        );
        assert_eq!(code, 200, "{body}");
    }
    // Nothing in clear in the database file.
    let raw = std::fs::read(s.dir.join("ward.db")).unwrap();
    let wal = std::fs::read(s.dir.join("ward.db-wal")).unwrap_or_default();
    for hay in [&raw, &wal] {
        assert!(
            !hay.windows(7).any(|w| w == b"alpha-1" || w == b"bravo-1"),
            "a value is stored in clear"
        );
    }
    // A database writer copies b's value over a's version 1 (with b's MAC),
    // and a's version 1 over version 2.
    sqlite(
        &s,
        "UPDATE vault_records SET value = (SELECT value FROM vault_records WHERE key = (SELECT key FROM vault_records WHERE key LIKE 'kv/secret/data/b#%v1')), mac = (SELECT mac FROM vault_records WHERE key = (SELECT key FROM vault_records WHERE key LIKE 'kv/secret/data/b#%v1')) WHERE key = (SELECT key FROM vault_records WHERE key LIKE 'kv/secret/data/a#%v1')",
    );
    let (code, body) = vault(&s, "GET", "/v1/secret/data/a?version=1", None);
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("integrity") && !body.contains("bravo"),
        "{body}"
    );
    // a's metadata (which carries its current version inline) moved onto
    // b's, value and MAC.
    sqlite(
        &s,
        "UPDATE vault_records SET value = (SELECT value FROM vault_records WHERE key = 'kv/secret/meta/a'), mac = (SELECT mac FROM vault_records WHERE key = 'kv/secret/meta/a') WHERE key = 'kv/secret/meta/b'",
    );
    let (code, body) = vault(&s, "GET", "/v1/secret/data/b", None);
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("integrity") && !body.contains("alpha"),
        "{body}"
    );
    // A flipped ciphertext byte (MAC recomputed is impossible without the key).
    sqlite(
        &s,
        "UPDATE vault_records SET value = CAST(substr(value, 1, length(value) - 1) || X'00' AS BLOB) WHERE key = 'kv/secret/meta/a'",
    );
    let (code, body) = vault(&s, "GET", "/v1/secret/data/a", None);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("integrity"), "{body}");
    // The refusals are counted and audited.
    assert!(wait_for(Duration::from_secs(15), || {
        let out = s.ward(&["audit", "tail", "--lines", "200", "--output", "json"]);
        String::from_utf8_lossy(&out.stdout).contains("barrier.reject")
    }));
}

#[test]
fn a_sealed_vault_serves_nothing_and_hvac_unseals_it() {
    let Some(python) = required_env("WARD_TEST_PYTHON", "a python with hvac==2.4.0") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = tmp.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"seal.test\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[seal]\nshares = 3\nthreshold = 2\n",
            tmp.path().join("data").display()
        ),
    )
    .unwrap();
    let init = ward_init(&cfg, &[]);
    let shares: Vec<String> = init["unseal_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let token = init["admin_token"].as_str().unwrap().to_owned();
    let cacert = init["cacert"].as_str().unwrap().to_owned();
    let _s = Server::configured(
        tmp.path(),
        &cfg,
        &format!("https://127.0.0.1:{port}"),
        std::path::Path::new(&cacert),
    );
    let script = r#"
import sys, hvac
addr, ca, tok, s1, s2 = sys.argv[1:6]
c = hvac.Client(url=addr, token=tok, verify=ca)
assert c.sys.read_seal_status()["sealed"] is True
try:
    c.secrets.kv.v2.read_secret_version(path="x", raise_on_deleted_version=True); raise SystemExit("read while sealed")
except hvac.exceptions.VaultDown:
    pass
r = c.sys.submit_unseal_keys([s1, s2])
assert r["sealed"] is False, r
c.secrets.kv.v2.create_or_update_secret(path="after/unseal", secret={"k": "v"})
c.sys.seal()
assert c.sys.read_seal_status()["sealed"] is True
try:
    c.secrets.kv.v2.read_secret_version(path="after/unseal", raise_on_deleted_version=True); raise SystemExit("read after seal")
except hvac.exceptions.VaultDown:
    pass
c.sys.submit_unseal_keys([s1, s2])
assert c.secrets.kv.v2.read_secret_version(path="after/unseal", raise_on_deleted_version=True)["data"]["data"] == {"k": "v"}
print("OK")
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(format!("https://127.0.0.1:{port}"))
        .arg(&cacert)
        .arg(&token)
        .arg(&shares[0])
        .arg(&shares[2])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_operation_whose_audit_record_cannot_be_written_fails_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "closed.test");
    let (code, body) = vault(
        &s,
        "POST",
        "/v1/secret/data/app/db",
        Some(r#"{"data":{"v":"before"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    // The audit table refuses every insert from now on.
    sqlite(
        &s,
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit is down'); END;",
    );
    let (code, body) = vault(&s, "GET", "/v1/secret/data/app/db", None);
    assert_eq!(
        code, 500,
        "a read that cannot be audited is refused: {body}"
    );
    assert!(!body.contains("before"), "{body}");
    let (code, body) = vault(
        &s,
        "POST",
        "/v1/secret/data/app/db",
        Some(r#"{"data":{"v":"after"}}"#),
    );
    assert_eq!(code, 500, "{body}");
    let (code, body) = vault(&s, "POST", "/v1/transit/keys/k", None);
    assert_eq!(code, 500, "{body}");
    // Audit back: the failed write left nothing behind.
    sqlite(&s, "DROP TRIGGER no_audit;");
    let (code, body) = vault(&s, "GET", "/v1/secret/data/app/db", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("before") && !body.contains("after"), "{body}");
    assert!(body.contains(r#""version":1"#), "{body}");
    let (code, _) = vault(&s, "GET", "/v1/transit/keys/k", None);
    assert_eq!(code, 404, "the key was not created");
}

#[test]
fn rotate_root_leaves_a_mariadb_admin_password_only_ward_knows() {
    let my = std::env::var("WARD_TEST_MARIADB_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let (host, port) = ("127.0.0.1", "3306");
    let root_user = my
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .map(|(u, _)| u.split(':').next().unwrap_or("root").to_owned())
        .unwrap_or_else(|| "root".into());
    let mariadb = |user: &str, password: &str, sql: &str| {
        Command::new("mariadb")
            .args(["-h", host, "-P", port, "-u", user, "-N", "-e", sql])
            .arg(format!("-p{password}"))
            .output()
            .expect("mariadb client")
    };
    let admin = format!("ward_rot_{}", std::process::id());
    let setup = Command::new("mariadb")
        .args(["-h", host, "-P", port, "-u", &root_user, "-e"])
        .arg(format!(
            "DROP USER IF EXISTS '{admin}'@'%'; CREATE USER '{admin}'@'%' IDENTIFIED BY 'initial-pw'; GRANT CREATE USER ON *.* TO '{admin}'@'%' WITH GRANT OPTION;"
        ))
        .output()
        .expect("mariadb client");
    if !setup.status.success() {
        assert!(
            std::env::var_os("WARD_TEST_NO_SKIP").is_none(),
            "cannot make a MariaDB admin: {}",
            stderr(&setup)
        );
        eprintln!("skipping: no MariaDB admin ({})", stderr(&setup));
        return;
    }
    assert!(mariadb(&admin, "initial-pw", "select 1").status.success());
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "rotate.test");
    let (code, body) = vault(
        &s,
        "POST",
        "/v1/database/config/my",
        Some(&format!(
            r#"{{"plugin_name":"mysql","connection_url":"mysql://{{{{username}}}}:{{{{password}}}}@{host}:{port}/test","username":"{admin}","password":"initial-pw","allowed_roles":["app"]}}"#
        )),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = vault(&s, "POST", "/v1/database/rotate-root/my", None);
    assert_eq!(code, 204, "{body}");
    assert!(
        !mariadb(&admin, "initial-pw", "select 1").status.success(),
        "the old password still works"
    );
    // Ward knows the new one: it still makes users.
    let (code, _) = vault(
        &s,
        "POST",
        "/v1/database/roles/app",
        Some(r#"{"db_name":"my","default_ttl":"1h"}"#),
    );
    assert_eq!(code, 204);
    let (code, creds) = vault(&s, "GET", "/v1/database/creds/app", None);
    assert_eq!(code, 200, "{creds}");
    let creds: serde_json::Value = serde_json::from_str(&creds).unwrap();
    let (u, p) = (
        creds["data"]["username"].as_str().unwrap(),
        creds["data"]["password"].as_str().unwrap(),
    );
    assert!(mariadb(u, p, "select 1").status.success());
    // The stored connection never shows the password.
    let (_, cfg) = vault(&s, "GET", "/v1/database/config/my", None);
    assert!(
        !cfg.contains("initial-pw") && !cfg.contains(&admin),
        "{cfg}"
    );
    let _ = Command::new("mariadb")
        .args(["-h", host, "-P", port, "-u", &root_user, "-e"])
        .arg(format!(
            "DROP USER IF EXISTS '{admin}'@'%'; DROP USER IF EXISTS '{u}'@'%';"
        ))
        .output();
}

#[test]
fn one_identity_cannot_hold_more_than_a_hundred_live_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "flood.test");
    let id = "spiffe://flood.test/ns/a/sa/looper";
    let token = jwt(&s, id, "vault", "5m");
    let body = format!(r#"{{"jwt":"{token}"}}"#);
    let mut codes = Vec::new();
    for _ in 0..101 {
        let (code, _) = s.curl("POST", "/v1/auth/jwt/login", None, Some(&body));
        codes.push(code);
    }
    assert!(codes[..100].iter().all(|c| *c == 200), "{codes:?}");
    assert_eq!(codes[100], 429, "the 101st live token is refused");
    // Another identity is not affected.
    let other = jwt(&s, "spiffe://flood.test/ns/a/sa/other", "vault", "5m");
    let (code, _) = s.curl(
        "POST",
        "/v1/auth/jwt/login",
        None,
        Some(&format!(r#"{{"jwt":"{other}"}}"#)),
    );
    assert_eq!(code, 200);
}
