//! The token service against real clients (Authlib, PyJWT's PyJWKClient
//! through discovery), and from the command line: `ward client` and
//! `ward token mint|verify`, with the tokens a drill makes (expired,
//! not yet valid, wrong audience, no `exp`) refused offline.

mod support;

use std::process::Command;

use support::*;

const SCRIPT: &str = include_str!("clients/oauth_clients.py");

const CHECKS: &[&str] = &[
    "authlib_client_credentials_and_pyjwt_discovery",
    "scopes_are_down_scoped_and_bounded",
    "bad_client_authentication_is_refused",
    "introspection_and_revocation",
    "authlib_private_key_jwt_and_replay",
];

fn create_client(s: &Server, name: &str) -> String {
    let out = s.ward(&[
        "client",
        "create",
        name,
        "--scope",
        "orders:read",
        "--scope",
        "orders:write",
        "--audience",
        "https://api.oauth.test",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "client create: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = v["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43, "a 256-bit secret, base64url");
    secret
}

#[test]
fn real_oauth_clients_speak_to_the_token_service() {
    let Some(python) = required_env("WARD_TEST_PYTHON", "a python with Authlib and PyJWT") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "oauth.test");
    let secret = create_client(&s, "reports");
    let cfg = serde_json::json!({
        "addr": s.addr(), "cacert": s.cacert(), "token": s.token(),
        "client_id": "reports", "client_secret": secret, "audience": "https://api.oauth.test",
    });
    let script = tmp.path().join("oauth_clients.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .arg(cfg.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty(),
        "checks failed:\n{}\nstderr:\n{}",
        failed.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in CHECKS {
        assert!(
            stdout.lines().any(|l| l == format!("PASS {name}")),
            "check {name} did not run:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Issuance, failures and revocations are audited; secrets never are.
    let audit = s.ward(&["audit", "tail", "--lines", "2000", "--output", "json"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    for action in [
        "oauth.client.create",
        "oauth.token.issue",
        "oauth.client.auth-failed",
        "oauth.token.revoke",
    ] {
        assert!(audit.contains(action), "{action} is not in the audit log");
    }
    assert!(
        !audit.contains(&secret),
        "the client secret is in the audit log"
    );
    assert!(
        !s.log_text().contains(&secret),
        "the client secret is in the server log"
    );
}

fn mint(s: &Server, args: &[&str]) -> String {
    let mut all = vec!["token", "mint", "--client", "drill"];
    all.extend_from_slice(args);
    let out = s.ward(&all);
    assert!(out.status.success(), "token mint: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn verify(s: &Server, token: &str, audience: &str) -> (bool, String) {
    let out = s.ward(&["token", "verify", token, "--audience", audience]);
    (out.status.success(), stderr(&out))
}

#[test]
fn minted_drill_tokens_are_refused_offline_and_clients_are_managed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "drill.test");
    let out = s.ward(&["client", "create", "drill", "--audience", "orders"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(first.contains("client_secret "), "{first}");
    let good = mint(&s, &[]);
    let (ok, why) = verify(&s, &good, "orders");
    assert!(ok, "a normal minted token verifies: {why}");
    let now = ward_now();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            mint(&s, &["--claims", &format!("{{\"exp\": {}}}", now - 600)]),
            "orders",
            "expired",
        ),
        (mint(&s, &["--not-before", "1h"]), "orders", "not valid yet"),
        (mint(&s, &[]), "payments", "aud"),
        (
            mint(&s, &["--claims", "{\"iss\": \"https://evil.test\"}"]),
            "orders",
            "iss",
        ),
        (
            mint(
                &s,
                &[
                    "--exact",
                    "--claims",
                    "{\"iss\": \"x\", \"aud\": \"orders\"}",
                ],
            ),
            "orders",
            "exp",
        ),
    ];
    for (token, aud, reason) in cases {
        let (ok, why) = verify(&s, &token, aud);
        assert!(!ok, "a token that should fail on {reason} verified");
        assert!(why.contains(reason), "the refusal names {reason}: {why}");
    }
    // Rotating the secret: the old one is refused at once, the new one works.
    let out = s.ward(&["client", "rotate-secret", "drill"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = s.ward_json(&["client", "list"]);
    assert_eq!(list["clients"][0]["client_id"], "drill");
    assert!(
        !list.to_string().contains("secret_sha256"),
        "hashes are not listed"
    );
    let out = s.ward(&["client", "create", "drill", "--audience", "orders"]);
    assert!(
        !out.status.success(),
        "a second client with the same ID is refused"
    );
    let out = s.ward(&["client", "create", "bad/id", "--audience", "orders"]);
    assert!(!out.status.success(), "a client ID with a slash is refused");
    let out = s.ward(&["client", "delete", "drill"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.ward(&["token", "mint", "--client", "drill"]);
    assert!(!out.status.success(), "no minting for a deleted client");
}

fn ward_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_flood_of_wrong_client_secrets_is_cut_off_even_with_basic_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "flood.test");
    let _secret = create_client(&s, "victim");
    let url = format!("{}/oauth/token", s.addr());
    let mut codes = Vec::new();
    for i in 0..45 {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                s.cacert(),
                "-u",
                &format!("victim:wrong-{i}"),
                "-d",
                "grant_type=client_credentials",
                &url,
            ])
            .output()
            .unwrap();
        codes.push(String::from_utf8_lossy(&out.stdout).to_string());
    }
    assert!(codes[0] == "401", "{codes:?}");
    assert!(
        codes.iter().skip(35).all(|c| c == "429"),
        "a blocked address kept trying secrets: {codes:?}"
    );
    // Each refused attempt costs no audit record.
    let audit = s.ward(&["audit", "tail", "--lines", "2000", "--output", "json"]);
    let failures = String::from_utf8_lossy(&audit.stdout)
        .matches("oauth.client.auth-failed")
        .count();
    assert!(
        failures <= 32,
        "{failures} failed authentications were recorded"
    );
}
