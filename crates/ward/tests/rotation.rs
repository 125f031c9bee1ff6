//! End to end: CA rotation without an outage, and running as an
//! intermediate under an upstream CA.

mod support;

use std::process::Command;

use support::*;

fn issuer(svid: &std::path::Path) -> String {
    openssl(&["x509", "-in", svid.to_str().unwrap(), "-noout", "-issuer"]).1
}

fn verify(bundle: &std::path::Path, svid: &std::path::Path) -> (bool, String) {
    openssl(&[
        "verify",
        "-CAfile",
        bundle.to_str().unwrap(),
        "-untrusted",
        svid.to_str().unwrap(),
        svid.to_str().unwrap(),
    ])
}

#[test]
fn svids_of_the_old_and_the_new_ca_both_verify_across_a_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "rot.test");
    let mint = |name: &str| {
        let dir = tmp.path().join(name);
        s.ward_json(&[
            "x509",
            "mint",
            "--spiffe-id",
            &format!("spiffe://rot.test/{name}"),
            "--out",
            dir.to_str().unwrap(),
        ]);
        dir
    };
    let before = mint("before");
    let prepared = s.ward_json(&["ca", "prepare"]);
    assert_eq!(prepared["generation"], 2);
    // A second prepare before activation is refused.
    assert!(!s.ward(&["ca", "prepare"]).status.success());
    let (_, bundle) = s.curl("GET", "/v1/bundle", None, None);
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        2,
        "the prepared CA is published before it signs"
    );
    let during = mint("during");
    assert_eq!(
        issuer(&before.join("svid.pem")),
        issuer(&during.join("svid.pem")),
        "the prepared CA must not sign yet"
    );

    s.ward_json(&["ca", "activate"]);
    let after = mint("after");
    assert_ne!(
        issuer(&before.join("svid.pem")),
        issuer(&after.join("svid.pem")),
        "the new CA signs after activation"
    );
    // Verifiers holding the current bundle accept both generations.
    let current = after.join("bundle.pem");
    for svid in [&before, &during, &after] {
        let (ok, text) = verify(&current, &svid.join("svid.pem"));
        assert!(ok, "{}: {text}", svid.display());
    }
    // Verifiers still holding the bundle from before the prepare accept only the old CA.
    let (ok, _) = verify(&before.join("bundle.pem"), &after.join("svid.pem"));
    assert!(!ok);
    let list = s.ward_json(&["ca", "list"]);
    let states: Vec<&str> = list["cas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retired", "active"]);
    assert!(list["cas"][0]["drop_after"].as_i64().unwrap() > after_expiry(&before));
    // JWT keys rotate too, and both stay in the SPIFFE bundle.
    let (_, spiffe) = s.curl("GET", "/v1/bundle?format=spiffe", None, None);
    let spiffe: serde_json::Value = serde_json::from_str(&spiffe).unwrap();
    let jwt_keys = spiffe["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .count();
    assert_eq!(jwt_keys, 2);
}

fn after_expiry(dir: &std::path::Path) -> i64 {
    let (_, end) = openssl(&[
        "x509",
        "-in",
        dir.join("svid.pem").to_str().unwrap(),
        "-noout",
        "-enddate",
    ]);
    let end = end.trim().trim_start_matches("notAfter=");
    let out = Command::new("date")
        .args(["-d", end, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn an_intermediate_under_an_upstream_ca_chains_to_the_upstream_root_and_rotates() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("upstream-key.pem");
    let cert = tmp.path().join("upstream.pem");
    let (ok, text) = openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        key.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=Upstream Root",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        cert.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = tmp.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!("trust_domain = \"up.test\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[seal]\nshares = 1\nthreshold = 1\n", tmp.path().join("data").display()),
    )
    .unwrap();
    // A key that is not the certificate's is refused, and nothing is initialized.
    let other_key = tmp.path().join("other-key.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        other_key.to_str().unwrap(),
    ]);
    let out = Command::new(ward_bin())
        .args([
            "server",
            "init",
            "--config",
            cfg.to_str().unwrap(),
            "--upstream-cert",
            cert.to_str().unwrap(),
            "--upstream-key",
            other_key.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));

    let out = Command::new(ward_bin())
        .args([
            "server",
            "init",
            "--config",
            cfg.to_str().unwrap(),
            "--upstream-cert",
            cert.to_str().unwrap(),
            "--upstream-key",
            key.to_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let init: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut s = Server::configured(
        tmp.path(),
        &cfg,
        &format!("https://127.0.0.1:{port}"),
        std::path::Path::new(init["cacert"].as_str().unwrap()),
    );
    s.env.insert(
        "WARD_TOKEN".into(),
        init["admin_token"].as_str().unwrap().into(),
    );
    s.ward_json(&[
        "operator",
        "unseal",
        init["unseal_shares"][0].as_str().unwrap(),
    ]);

    let first = tmp.path().join("first");
    s.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://up.test/w",
        "--out",
        first.to_str().unwrap(),
    ]);
    // The bundle is the upstream root; the SVID file carries leaf + intermediate.
    assert_eq!(
        std::fs::read_to_string(first.join("bundle.pem")).unwrap(),
        std::fs::read_to_string(&cert).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(first.join("svid.pem"))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    let (ok, text) = verify(&cert, &first.join("svid.pem"));
    assert!(ok, "{text}");

    s.ward_json(&["ca", "prepare"]);
    s.ward_json(&["ca", "activate"]);
    let second = tmp.path().join("second");
    s.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://up.test/w",
        "--out",
        second.to_str().unwrap(),
    ]);
    for dir in [&first, &second] {
        let (ok, text) = verify(&cert, &dir.join("svid.pem"));
        assert!(ok, "{text}");
    }
    assert_ne!(
        issuer(&first.join("svid.pem")),
        issuer(&second.join("svid.pem"))
    );
    s.kill9();
}
