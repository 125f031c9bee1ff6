//! End to end: authentication, bad input, sealing, configuration errors and
//! the help text of the real binary.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn missing_token_is_401_and_a_wrong_one_403() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "td.test");
    let (code, body) = s.curl("GET", "/v1/entries", None, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("missing token"), "{body}");
    let (code, body) = s.curl("GET", "/v1/entries", Some("ward_not-a-real-token"), None);
    assert_eq!(code, 403, "{body}");
    let (code, _) = s.curl(
        "POST",
        "/v1/svid/jwt",
        Some("wrong"),
        Some(r#"{"spiffe_id":"spiffe://td.test/a","audience":["x"]}"#),
    );
    assert_eq!(code, 403);
    let out = Command::new(ward_bin())
        .args(["entry", "list"])
        .envs(&s.env)
        .env("WARD_TOKEN", "wrong-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    // Two different tokens in one request are refused, not resolved by precedence.
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--cacert",
            s.cacert(),
            "-H",
            &format!("Authorization: Bearer {}", s.token()),
            "-H",
            "X-Vault-Token: other",
        ])
        .arg(format!("{}/v1/entries", s.addr()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("400"), "{text}");
    // The error body is Vault-shaped with an exact content type.
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--cacert", s.cacert()])
        .arg(format!("{}/v1/entries", s.addr()))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        headers.contains("content-type: application/json\r\n"),
        "{headers}"
    );
}

#[test]
fn malformed_json_is_400_naming_the_field_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "td.test");
    let before = s.audit_head();
    let cases = [
        (
            r#"{"spiffe_id": 5, "parent_id": "spiffe://td.test/n", "selectors": ["a:b"]}"#,
            "spiffe_id",
        ),
        (
            r#"{"parent_id": "spiffe://td.test/n", "selectors": ["a:b"]}"#,
            "missing field `spiffe_id`",
        ),
        (
            r#"{"spiffe_id": "spiffe://td.test/a", "parent_id": "spiffe://td.test/n", "selectors": ["a:b"], "ttl": 5}"#,
            "unknown field `ttl`",
        ),
        (
            r#"{"spiffe_id": "spiffe://td.test/a", "parent_id": "spiffe://td.test/n", "selectors": []}"#,
            "selectors",
        ),
        (
            r#"{"spiffe_id": "spiffe://td.test/a", "parent_id": "spiffe://td.test/n", "selectors": ["nocolon"]}"#,
            "selectors",
        ),
        (
            r#"{"spiffe_id": "spiffe://td.test/a", "parent_id": "spiffe://td.test/n", "selectors": ["a:b"], "x509_ttl": 99999999}"#,
            "x509_ttl",
        ),
        (r#"{"spiffe_id": "#, "invalid JSON body"),
    ];
    for (body, want) in cases {
        let (code, text) = s.curl("POST", "/v1/entries", Some(s.token()), Some(body));
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: wanted {want:?} in {text}");
    }
    // Node identities are not for entries: a workload holding one could act as that node.
    let (code, text) = s.curl(
        "POST",
        "/v1/entries",
        Some(s.token()),
        Some(r#"{"spiffe_id": "spiffe://td.test/ward/agent/n2", "parent_id": "spiffe://td.test/ward/agent/n1", "selectors": ["unix:uid:1"]}"#),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("reserved"), "{text}");
    let (code, text) = s.curl(
        "POST",
        "/v1/join-tokens",
        Some(s.token()),
        Some(r#"{"ttl": 0}"#),
    );
    assert_eq!(code, 400, "{text}");
    let (code, _) = s.curl("GET", "/v1/entries/does-not-exist", Some(s.token()), None);
    assert_eq!(code, 404);
    let (code, _) = s.curl("GET", "/v1/nope", Some(s.token()), None);
    assert_eq!(code, 404);
    // An oversized body is refused from its Content-Length, before it is
    // read. Over HTTP/1.1 with Expect: 100-continue the client reads the 413
    // before uploading; over HTTP/2 the server also resets the unread stream
    // (RFC 9113 §8.1), which curl reports as a failed transfer.
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        big.path(),
        format!(r#"{{"csr": "{}"}}"#, "A".repeat(200_000)),
    )
    .unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            s.cacert(),
            "-H",
            "Expect: 100-continue",
        ])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", s.token()),
            "-H",
            "Content-Type: application/json",
        ])
        .args(["--data-binary", &format!("@{}", big.path().display())])
        .arg(format!("{}/v1/svid/x509", s.addr()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "413");
    assert_eq!(s.audit_head(), before);
    let list = s.ward_json(&["entry", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 0);
}

#[test]
fn entries_can_be_created_listed_updated_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "td.test");
    let e = s.ward_json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://td.test/ns/a/sa/web",
        "--parent",
        "spiffe://td.test/ward/agent/n1",
        "--selector",
        "unix:uid:1000",
        "--selector",
        "unix:gid:1000",
        "--x509-ttl",
        "30m",
    ]);
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(e["x509_ttl"], 1800);
    assert_eq!(e["selectors"].as_array().unwrap().len(), 2);
    let shown = s.ward_json(&["entry", "show", &id]);
    assert_eq!(shown["spiffe_id"], "spiffe://td.test/ns/a/sa/web");
    let updated = s.ward_json(&["entry", "update", &id, "--selector", "unix:uid:0"]);
    assert_eq!(updated["selectors"], serde_json::json!(["unix:uid:0"]));
    assert!(updated["revision"].as_i64() > e["revision"].as_i64());
    let under_n2 = s.ward_json(&[
        "entry",
        "list",
        "--parent",
        "spiffe://td.test/ward/agent/n2",
    ]);
    assert_eq!(under_n2.as_array().unwrap().len(), 0);
    s.ward_json(&["entry", "delete", &id]);
    let out = s.ward(&["entry", "show", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    // The changes feed reports the deletion.
    let (code, body) = s.curl(
        "GET",
        &format!("/v1/entries?since={}", updated["revision"]),
        Some(s.token()),
        None,
    );
    assert_eq!(code, 200);
    assert!(body.contains(&id), "{body}");
}

#[test]
fn join_tokens_are_printed_once_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "td.test");
    let t = s.ward_json(&["agent", "token", "create", "--ttl", "10m"]);
    let token = t["token"].as_str().unwrap();
    assert!(token.len() >= 40);
    let t2 = s.ward_json(&["agent", "token", "create", "--ttl", "10m"]);
    assert_ne!(t2["token"], t["token"]);
    // The token never appears in the audit log.
    let (_, audit) = s.curl("GET", "/v1/audit", Some(s.token()), None);
    assert!(audit.contains("jointoken.create"));
    assert!(
        !audit.contains(token),
        "a join token leaked into the audit log"
    );
    assert!(
        !audit.contains(s.token()),
        "the admin token leaked into the audit log"
    );
    let out = s.ward(&["agent", "token", "create", "--ttl", "48h"]);
    assert!(!out.status.success());
}

fn write_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"sealed.test\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[seal]\nshares = 5\nthreshold = 3\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn a_sealed_server_refuses_requests_until_the_threshold_of_right_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(tmp.path(), port);
    let init_out = ward_init(&cfg, &[]);
    let shares: Vec<String> = init_out["unseal_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(shares.len(), 5);
    let token = init_out["admin_token"].as_str().unwrap().to_string();
    // Init twice is refused and changes nothing.
    let again = Command::new(ward_bin())
        .args(["server", "init", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already initialized"),
        "{}",
        stderr(&again)
    );
    // Shares from another server.
    let other_dir = tempfile::tempdir().unwrap();
    let other_cfg = write_config(other_dir.path(), free_port());
    let foreign: Vec<String> = ward_init(&other_cfg, &[])["unseal_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();

    let mut s = Server::configured(
        tmp.path(),
        &cfg,
        &format!("https://127.0.0.1:{port}"),
        std::path::Path::new(init_out["cacert"].as_str().unwrap()),
    );
    s.env.insert("WARD_TOKEN".into(), token.clone());
    let (code, body) = s.curl("GET", "/v1/entries", Some(&token), None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("sealed"), "{body}");
    let (code, _) = s.curl("GET", "/v1/bundle", None, None);
    assert_eq!(code, 503);

    let status = s.ward_json(&["operator", "status"]);
    assert_eq!(
        (
            status["sealed"].as_bool(),
            status["t"].as_u64(),
            status["n"].as_u64()
        ),
        (Some(true), Some(3), Some(5))
    );
    let out = s.ward(&["operator", "unseal", "not-base64!"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("malformed"), "{}", stderr(&out));

    // Two right shares and a foreign one: refused, progress reset.
    assert_eq!(
        s.ward_json(&["operator", "unseal", &shares[0]])["progress"],
        1
    );
    assert_eq!(
        s.ward_json(&["operator", "unseal", &shares[0]])["progress"],
        1,
        "a repeated share does not count twice"
    );
    assert_eq!(
        s.ward_json(&["operator", "unseal", &shares[1]])["progress"],
        2
    );
    let out = s.ward(&["operator", "unseal", &foreign[2]]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("do not reconstruct"),
        "{}",
        stderr(&out)
    );
    let status = s.ward_json(&["operator", "status"]);
    assert_eq!(
        (status["sealed"].as_bool(), status["progress"].as_u64()),
        (Some(true), Some(0))
    );

    // Any three right shares open it.
    for share in [&shares[4], &shares[2], &shares[1]] {
        s.ward_json(&["operator", "unseal", share]);
    }
    let status = s.ward_json(&["operator", "status"]);
    assert_eq!(status["sealed"].as_bool(), Some(false));
    let out_dir = tmp.path().join("svid");
    s.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://sealed.test/w",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        out_dir.join("bundle.pem").to_str().unwrap(),
        out_dir.join("svid.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");

    // Sealing needs the admin token, then everything is refused again.
    let out = Command::new(ward_bin())
        .args(["operator", "seal"])
        .envs(&s.env)
        .env("WARD_TOKEN", "bad")
        .output()
        .unwrap();
    assert!(!out.status.success());
    s.ward_json(&["operator", "seal"]);
    let (code, body) = s.curl(
        "POST",
        "/v1/svid/jwt",
        Some(&token),
        Some(r#"{"spiffe_id":"spiffe://sealed.test/w","audience":["a"]}"#),
    );
    assert_eq!(code, 503, "{body}");
    // The stored database holds no share or token in the clear, and the
    // CA's private key cannot be opened without the master key.
    s.kill9();
    let db_path = tmp.path().join("data").join("ward.db");
    let db = std::fs::read(&db_path).expect("the server's database is where the config says");
    assert!(db.len() > 4096, "a real database, not an empty file");
    let wal = match std::fs::read(tmp.path().join("data").join("ward.db-wal")) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading the WAL: {e}"),
    };
    for secret in shares.iter().chain([&token]) {
        for bytes in [&db, &wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret is stored in the clear"
            );
        }
    }
    let out = Command::new("sqlite3")
        .arg(&db_path)
        .arg("SELECT id, hex(key_sealed), cert_pem FROM cas WHERE state = 'active'")
        .output()
        .expect("sqlite3 is installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (id, rest) = text.split_once('|').expect("an active CA row");
    let (sealed_hex, cert_pem) = rest.split_once('|').unwrap();
    let sealed: Vec<u8> = (0..sealed_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&sealed_hex[i..i + 2], 16).unwrap())
        .collect();
    let dir = tmp.path().join("keycheck");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        !parses_as_der_key(&dir, &sealed),
        "the stored CA key parses as a private key without the seal"
    );
    let name = format!("ca/{id}/key");
    let other = ward_store::seal::MasterKey::generate().unwrap();
    assert!(other.open(&name, &sealed).is_err(), "another key opens it");
    let master = ward_store::seal::MasterKey::combine(
        &shares[..3]
            .iter()
            .map(|s| zeroize::Zeroizing::new(s.clone()))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(
        master.open("ca/other/key", &sealed).is_err(),
        "the seal is bound to the key's name"
    );
    // With the master key it opens, and it is the CA certificate's key:
    // the check above was made on the real thing.
    let key_der = master.open(&name, &sealed).unwrap();
    assert_key_of_cert(&dir, &key_der, cert_pem);
}

#[test]
fn bad_configuration_and_corrupted_storage_fail_start_up_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "trust_domain = \"x.test\"\ndata_dir = \"/tmp/x\"\n[ca]\nvalidity = \"soon\"\n",
    )
    .unwrap();
    let out = Command::new(ward_bin())
        .args(["server", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ca.validity") && stderr(&out).contains("bad.toml"),
        "{}",
        stderr(&out)
    );

    let out = Command::new(ward_bin())
        .args(["server", "--config", "/nonexistent/ward.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/ward.toml"),
        "{}",
        stderr(&out)
    );

    let dir = tmp.path().join("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ward.db"), vec![0x5a; 16384]).unwrap();
    let out = Command::new(ward_bin())
        .args([
            "server",
            "--dev",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a valid database"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("dev.env").exists());

    let out = Command::new(ward_bin())
        .args([
            "server",
            "--config",
            write_config(tmp.path(), free_port()).to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not initialized"), "{}", stderr(&out));
}

#[test]
fn every_command_has_complete_help() {
    let top = Command::new(ward_bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&top.stdout).to_string();
    for cmd in [
        "server",
        "up",
        "operator",
        "entry",
        "agent",
        "x509",
        "jwt",
        "ca",
        "bundle",
        "audit",
        "proxy",
        "policy",
        "telemetry",
        "demo-app",
    ] {
        assert!(text.contains(cmd), "ward --help does not list {cmd}");
    }
    let paths: &[&[&str]] = &[
        &["server"],
        &["server", "init"],
        &["up"],
        &["operator", "unseal"],
        &["operator", "seal"],
        &["operator", "status"],
        &["entry", "create"],
        &["entry", "list"],
        &["entry", "show"],
        &["entry", "update"],
        &["entry", "delete"],
        &["agent"],
        &["agent", "token", "create"],
        &["agent", "api", "fetch"],
        &["agent", "api", "jwt"],
        &["x509", "mint"],
        &["jwt", "mint"],
        &["ca", "prepare"],
        &["ca", "activate"],
        &["ca", "list"],
        &["bundle", "show"],
        &["audit", "verify"],
        &["audit", "tail"],
        &["proxy"],
        &["policy", "push"],
        &["policy", "validate"],
        &["policy", "show"],
        &["policy", "schema"],
        &["telemetry", "edges"],
        &["demo-app"],
    ];
    for path in paths {
        let out = Command::new(ward_bin())
            .args(*path)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{path:?} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Usage:"), "{path:?}");
        assert!(
            help.lines()
                .next()
                .is_some_and(|l| !l.trim().is_empty() && !l.starts_with("Usage")),
            "{path:?} has no description: {help}"
        );
    }
    let client_help = String::from_utf8_lossy(
        &Command::new(ward_bin())
            .args(["entry", "list", "--help"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    for flag in [
        "--addr",
        "--token",
        "--cacert",
        "--output",
        "WARD_ADDR",
        "WARD_TOKEN",
        "WARD_CACERT",
    ] {
        assert!(client_help.contains(flag), "entry list --help lacks {flag}");
    }
}

/// Opens a TLS connection to `addr` (`openssl s_client`, HTTP/1.1), sends
/// `raw`, and returns whether the server closed the connection within
/// `limit`, with what it answered.
fn send_and_wait_for_close(addr: &str, raw: &[u8], limit: Duration) -> (bool, String) {
    use std::io::{Read, Write};
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-tls1_3", "-connect", addr])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(raw).unwrap();
    // stdin stays open: only the server may end the connection.
    let closed = wait_for(limit, || reader.is_finished());
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let out = reader.join().unwrap_or_default();
    (closed, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn slow_and_idle_clients_are_cut_off_while_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(tmp.path(), port);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[api]\nheader_timeout = \"2s\"\nidle_timeout = \"3s\"\n");
    std::fs::write(&cfg, text).unwrap();
    let init_out = ward_init(&cfg, &[]);
    let addr = format!("127.0.0.1:{port}");
    let s = Server::configured(
        tmp.path(),
        &cfg,
        &format!("https://{addr}"),
        std::path::Path::new(init_out["cacert"].as_str().unwrap()),
    );
    // Half a request head, then nothing: closed by the header timeout,
    // while another client is answered meanwhile.
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            send_and_wait_for_close(
                &addr,
                b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n",
                Duration::from_secs(20),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = s.curl("GET", "/v1/sys/seal-status", None, None);
    assert_eq!(code, 200, "another client is served while one dawdles");
    let (closed, answer) = slow.join().unwrap();
    assert!(closed, "a half-sent head must be cut off; got {answer:?}");
    assert!(
        !answer.contains("200 OK"),
        "a head that never ended must not be answered: {answer:?}"
    );
    // A full request, answered, then silence: the connection is closed
    // once idle (it is not held open for as long as the client likes).
    let (closed, answer) = send_and_wait_for_close(
        &addr,
        b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(20),
    );
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the request is answered first: {answer:?}"
    );
    assert!(closed, "an idle connection must be closed");
}

#[test]
fn api_limits_in_the_config_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    for (bad, key) in [
        ("[api]\nheader_timeout = \"soon\"\n", "api.header_timeout"),
        ("[api]\nmax_connections = 0\n", "api.max_connections"),
        ("[api]\nmax_handshakes = 0\n", "api.max_handshakes"),
        ("[api]\nheader_timout = \"1s\"\n", "header_timout"),
    ] {
        let cfg = write_config(tmp.path(), free_port());
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(bad);
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(ward_bin())
            .args(["server", "init", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} must be refused");
        assert!(
            stderr(&out).contains(key),
            "the error names {key}: {}",
            stderr(&out)
        );
        assert!(
            !tmp.path().join("data").join("ward.db").exists(),
            "a refused config changes nothing"
        );
    }
}

#[test]
fn a_store_from_before_the_barrier_is_upgraded_only_when_the_operator_asks() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(tmp.path(), port);
    let init_out = ward_init(&cfg, &[]);
    let shares: Vec<String> = init_out["unseal_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let token = init_out["admin_token"].as_str().unwrap().to_string();
    let cacert = std::path::PathBuf::from(init_out["cacert"].as_str().unwrap());
    let addr = format!("https://127.0.0.1:{port}");
    let start = |extra: &[&str]| {
        let mut s = Server::configured_with(tmp.path(), &cfg, &addr, &cacert, extra);
        s.env.insert("WARD_TOKEN".into(), token.clone());
        s
    };
    let unseal = |s: &Server| {
        let mut last = None;
        for share in &shares[..3] {
            last = Some(s.ward(&["operator", "unseal", share]));
        }
        last.unwrap()
    };
    let mut s = start(&[]);
    assert!(unseal(&s).status.success());
    let out = s.ward(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://sealed.test/ns/shop/sa/kept",
        "--parent",
        "spiffe://sealed.test/ward/agent/n1",
        "--selector",
        "unix:uid:1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.kill9();
    // The store as the release before the barrier left it: no MACs, no
    // marker row, migration 4 not applied.
    let db = tmp.path().join("data").join("ward.db");
    let strip = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for t in ["tokens", "join_tokens", "nodes", "entries", "cas", "policies", "sealed_blobs", "meta", "audit", "audit_head"]:
    c.execute(f"ALTER TABLE {t} DROP COLUMN mac")
c.execute("DROP TABLE entry_tombstones")
c.execute("CREATE TABLE entry_tombstones (id TEXT PRIMARY KEY, revision BIGINT NOT NULL)")
c.execute("CREATE INDEX entry_tombstones_revision ON entry_tombstones (revision)")
c.execute("DROP TABLE edge_windows")
c.execute("CREATE TABLE edge_reports (received_at BIGINT NOT NULL, reporter TEXT NOT NULL, source TEXT NOT NULL, destination TEXT NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, status_class TEXT NOT NULL, decision TEXT NOT NULL, requests BIGINT NOT NULL, latency_us_sum BIGINT NOT NULL, window_start BIGINT NOT NULL, window_end BIGINT NOT NULL)")
c.execute("DELETE FROM meta WHERE key = 'barrier'")
c.execute("DELETE FROM ward_schema_migrations WHERE version = 4")
c.commit()
"#;
    let ok = Command::new("python3")
        .args(["-c", strip, db.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    // An old release's data folder has never seen the barrier.
    std::fs::remove_file(tmp.path().join("data").join("barrier-seen")).unwrap();
    // Without the flag: refused, and it stays sealed.
    let mut s = start(&[]);
    let out = unseal(&s);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--upgrade-store"), "{}", stderr(&out));
    assert_eq!(
        s.ward_json(&["operator", "status"])["sealed"].as_bool(),
        Some(true)
    );
    s.kill9();
    // With it: upgraded, and everything the old store held is there.
    let s = start(&["--upgrade-store"]);
    let out = unseal(&s);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = s.ward_json(&["entry", "list"]);
    assert!(entries.to_string().contains("ns/shop/sa/kept"), "{entries}");
    let out = s.ward(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.log_text().contains("predated the barrier"));
    // The flag left in place (a unit file) does not make the next unseal
    // authenticate what a writer slipped in meanwhile: the marker row
    // deleted and an admin token row of their own.
    let mut s = s;
    s.kill9();
    let forge = r#"
import sqlite3, sys, hashlib
c = sqlite3.connect(sys.argv[1])
c.execute("DELETE FROM meta WHERE key = 'barrier'")
c.execute("INSERT INTO tokens (id, hash, role, created_at) VALUES ('evil', ?, 'admin', 1)", (hashlib.sha256(b"ward_forged").hexdigest(),))
c.commit()
"#;
    let ok = Command::new("python3")
        .args(["-c", forge, db.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    let s = start(&["--upgrade-store"]);
    assert!(
        s.log_text().contains("--upgrade-store is ignored"),
        "{}",
        s.log_text()
    );
    let out = unseal(&s);
    assert!(!out.status.success(), "the second upgrade was refused");
    assert_eq!(
        s.curl("GET", "/v1/entries", Some("ward_forged"), None).0,
        503
    );
}

#[test]
fn a_replaced_database_is_refused_at_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(tmp.path(), port);
    ward_init(&cfg, &[]);
    let addr = format!("https://127.0.0.1:{port}");
    let cacert = tmp.path().join("data").join("tls").join("ca.pem");
    let mut s = Server::configured(tmp.path(), &cfg, &addr, &cacert);
    s.kill9();
    // Another store, same trust domain, initialized by someone else (with
    // shares of their own), copied over this server's database.
    let other = tempfile::tempdir().unwrap();
    let other_cfg = write_config(other.path(), free_port());
    ward_init(&other_cfg, &[]);
    std::fs::copy(
        other.path().join("data").join("ward.db"),
        tmp.path().join("data").join("ward.db"),
    )
    .unwrap();
    let _ = std::fs::remove_file(tmp.path().join("data").join("ward.db-wal"));
    let out = Command::new(ward_bin())
        .args(["server", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the server started on a swapped store"
    );
    let err = stderr(&out);
    assert!(
        err.contains("not the one this server was set up with"),
        "{err}"
    );
}

#[test]
fn newest_policy_versions_removed_from_the_store_are_refused_not_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "roll.test");
    for (i, text) in [
        "permit(principal, action, resource);",
        "forbid(principal, action, resource);",
    ]
    .iter()
    .enumerate()
    {
        let f = tmp.path().join(format!("p{i}.cedar"));
        std::fs::write(&f, text).unwrap();
        let out = s.ward(&["policy", "push", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = s.ward(&["policy", "show"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("forbid"));
    // A database writer removes the newest version (the older, looser one
    // still passes the barrier).
    let db = s.dir.join("ward.db");
    let ok = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM policies WHERE version = 2'); c.execute('UPDATE revision SET value = value + 1'); c.commit()",
            db.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = s.ward(&["policy", "show"]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !out.status.success(),
        "the older version must not be served: {shown}"
    );
    assert!(!shown.contains("permit(principal, action, resource)"));
    assert!(
        stderr(&out).contains("removed from the store"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn checkpoints_written_by_the_server_expose_a_log_cut_back_behind_them() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(tmp.path(), port);
    let cp_file = tmp.path().join("checkpoints.jsonl");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[audit]\ncheckpoint_file = \"{}\"\ncheckpoint_interval = \"1s\"\n",
        cp_file.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    let init_out = ward_init(&cfg, &[]);
    let shares: Vec<String> = init_out["unseal_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let token = init_out["admin_token"].as_str().unwrap().to_string();
    let cacert = std::path::PathBuf::from(init_out["cacert"].as_str().unwrap());
    let addr = format!("https://127.0.0.1:{port}");
    let start = || {
        let mut s = Server::configured(tmp.path(), &cfg, &addr, &cacert);
        s.env.insert("WARD_TOKEN".into(), token.clone());
        for share in &shares[..3] {
            let _ = s.ward(&["operator", "unseal", share]);
        }
        s
    };
    let mut s = start();
    for i in 0..3 {
        let out = s.ward(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://sealed.test/ns/shop/sa/a{i}"),
            "--parent",
            "spiffe://sealed.test/ward/agent/n1",
            "--selector",
            "unix:uid:1000",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let head = s.audit_head();
    let covered = || {
        std::fs::read_to_string(&cp_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["seq"].as_i64())
            .max()
            .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(20), || covered() >= head),
        "the server appended no checkpoint covering record {head}; log:\n{}",
        s.log_text()
    );
    let cps = cp_file.to_str().unwrap();
    let out = s.ward(&["audit", "verify", "--checkpoints", cps]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A forged checkpoint (its sequence number edited) is refused.
    let forged = tmp.path().join("forged.jsonl");
    let line = std::fs::read_to_string(&cp_file)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["seq"] = serde_json::json!(1);
    std::fs::write(&forged, format!("{v}\n")).unwrap();
    let out = s.ward(&["audit", "verify", "--checkpoints", forged.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
    s.kill9();
    // Cut the log back by two records and point the head at the last one kept.
    let db = tmp.path().join("data").join("ward.db");
    let cut = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
top = c.execute("SELECT max(seq) FROM audit").fetchone()[0]
keep = top - 2
row = c.execute("SELECT seq, hash FROM audit WHERE seq = ?", (keep,)).fetchone()
c.execute("DELETE FROM audit WHERE seq > ?", (keep,))
c.execute("UPDATE audit_head SET seq = ?, hash = ?", row)
c.commit()
print(keep)
"#;
    let out = Command::new("python3")
        .args(["-c", cut, db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let keep: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let s = start();
    let out = s.ward(&["audit", "verify", "--checkpoints", cps]);
    assert!(
        !out.status.success(),
        "a log cut behind a checkpoint must fail"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("record {}", keep + 1)),
        "names the first missing record: {err}"
    );
    // The server's own check finds it too, without the file.
    let out = s.ward(&["audit", "verify"]);
    assert!(!out.status.success());
}

#[test]
fn guessing_tokens_or_shares_from_one_address_is_slowed_to_a_halt() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(tmp.path(), port);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[api]\nmax_failed_auth_per_minute = 5\nmax_unauthenticated_per_minute = 4\n");
    std::fs::write(&cfg, text).unwrap();
    let init_out = ward_init(&cfg, &[]);
    let cacert = std::path::PathBuf::from(init_out["cacert"].as_str().unwrap());
    let s = Server::configured(
        tmp.path(),
        &cfg,
        &format!("https://127.0.0.1:{port}"),
        &cacert,
    );
    // Unseal shares: four tries a minute, then 429 with Retry-After.
    let bad_share = serde_json::json!({"key": "AAAA"}).to_string();
    let codes: Vec<u16> = (0..6)
        .map(|_| s.curl("POST", "/v1/sys/unseal", None, Some(&bad_share)).0)
        .collect();
    assert_eq!(&codes[..4], [400, 400, 400, 400], "{codes:?}");
    assert_eq!(codes[4], 429, "{codes:?}");
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(&cacert)
        .arg(format!("https://127.0.0.1:{port}/v1/sys/seal-status"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        head.contains(" 429") && head.contains("retry-after:"),
        "{head}"
    );
    // Another server, tokens: once the address has spent its quota of
    // failures it is turned away from the open endpoints and tokenless
    // requests, but a neighbour behind the same address who holds a valid
    // token is still served (a block must not be a lockout), and wrong
    // tokens are still refused as wrong.
    let tmp2 = tempfile::tempdir().unwrap();
    let port2 = free_port();
    let cfg2 = write_config(tmp2.path(), port2);
    let mut text = std::fs::read_to_string(&cfg2).unwrap();
    text.push_str("[api]\nmax_failed_auth_per_minute = 5\n");
    std::fs::write(&cfg2, text).unwrap();
    let init2 = ward_init(&cfg2, &[]);
    let cacert2 = std::path::PathBuf::from(init2["cacert"].as_str().unwrap());
    let s2 = Server::configured(
        tmp2.path(),
        &cfg2,
        &format!("https://127.0.0.1:{port2}"),
        &cacert2,
    );
    for share in init2["unseal_shares"].as_array().unwrap().iter().take(3) {
        assert!(
            s2.ward(&["operator", "unseal", share.as_str().unwrap()])
                .status
                .success()
        );
    }
    let token = init2["admin_token"].as_str().unwrap();
    assert_eq!(s2.curl("GET", "/v1/entries", Some(token), None).0, 200);
    let codes: Vec<u16> = (0..7)
        .map(|i| {
            s2.curl("GET", "/v1/entries", Some(&format!("ward_guess{i}")), None)
                .0
        })
        .collect();
    assert_eq!(codes, [403; 7], "{codes:?}");
    assert_eq!(
        s2.curl("GET", "/v1/sys/seal-status", None, None).0,
        429,
        "tokenless requests from the address are turned away"
    );
    let attest = serde_json::json!({"join_token": "guess", "csr": "x"}).to_string();
    assert_eq!(
        s2.curl("POST", "/v1/agent/attest", None, Some(&attest)).0,
        429,
        "so are the open endpoints"
    );
    assert_eq!(
        s2.curl("GET", "/v1/entries", Some(token), None).0,
        200,
        "a valid token from the same address is served"
    );
}
