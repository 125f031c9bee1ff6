//! End to end: SVIDs minted by a real dev server verify with standard tools,
//! carry exactly the SPIFFE profile, and everything malformed is refused
//! without changing anything.

mod support;

use support::*;

#[test]
fn minted_svid_verifies_with_openssl_and_has_exactly_the_spiffe_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "one.test");
    let out = tmp.path().join("mint");
    let id = "spiffe://one.test/ns/default/sa/web";
    let r = s.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        id,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r["spiffe_id"], id);
    let svid = out.join("svid.pem");
    let bundle = out.join("bundle.pem");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        bundle.to_str().unwrap(),
        svid.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (_, text) = openssl(&["x509", "-in", svid.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains(&format!("URI:{id}")), "{text}");
    assert!(
        !text.contains("DNS:"),
        "an SVID must not carry a DNS SAN: {text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(
        text.contains("TLS Web Client Authentication")
            && text.contains("TLS Web Server Authentication")
    );
    // key.pem is private to its owner and matches the certificate.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let (_, cert_pub) = openssl(&["x509", "-in", svid.to_str().unwrap(), "-noout", "-pubkey"]);
    let (_, key_pub) = openssl(&[
        "pkey",
        "-in",
        out.join("key.pem").to_str().unwrap(),
        "-pubout",
    ]);
    assert_eq!(cert_pub.trim(), key_pub.trim());
    // Default lifetime: one hour (plus the 10 s backdate).
    let (_, dates) = openssl(&[
        "x509",
        "-in",
        svid.to_str().unwrap(),
        "-noout",
        "-startdate",
        "-enddate",
    ]);
    assert!(dates.contains("notBefore") && dates.contains("notAfter"));
    let expires = r["expires_at"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expires - now - 3600).abs() <= 30,
        "expires_at {expires}, now {now}"
    );
}

#[test]
fn an_svid_of_one_trust_domain_fails_against_another_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Server::dev(tmp.path(), "a.test");
    let b = Server::dev(tmp.path(), "b.test");
    let out_a = tmp.path().join("a");
    let out_b = tmp.path().join("b");
    a.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://a.test/w",
        "--out",
        out_a.to_str().unwrap(),
    ]);
    b.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://b.test/w",
        "--out",
        out_b.to_str().unwrap(),
    ]);
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        out_b.join("bundle.pem").to_str().unwrap(),
        out_a.join("svid.pem").to_str().unwrap(),
    ]);
    assert!(
        !ok,
        "a.test's SVID verified against b.test's bundle: {text}"
    );
    // And a server refuses to certify an ID of another trust domain.
    let out = a.ward(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://b.test/w",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not in trust domain a.test"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn malformed_spiffe_ids_are_refused_by_the_cli_and_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "td.test");
    let before = s.audit_head();
    for bad in [
        "spiffe://td.test/ns/../x",
        "spiffe://td.test/ns//x",
        "spiffe://td.test/ns/%61dmin",
        "spiffe://td.test:8443/x",
        "spiffe://user@td.test/x",
        "spiffe://td.test/x/",
        "spiffe://td.test/x?q=1",
        "spiffe://TD.test/x",
        "http://td.test/x",
    ] {
        let out = s.ward(&[
            "x509",
            "mint",
            "--spiffe-id",
            bad,
            "--out",
            tmp.path().join("bad").to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{bad} was accepted");
        let out = s.ward(&[
            "entry",
            "create",
            "--spiffe-id",
            bad,
            "--parent",
            "spiffe://td.test/ward/agent/n",
            "--selector",
            "unix:uid:1",
        ]);
        assert!(!out.status.success(), "{bad} was accepted as an entry");
        // Straight to the API, past the CLI's own check.
        let body = serde_json::json!({"spiffe_id": bad, "parent_id": "spiffe://td.test/ward/agent/n", "selectors": ["unix:uid:1"]});
        let (code, text) = s.curl(
            "POST",
            "/v1/entries",
            Some(s.token()),
            Some(&body.to_string()),
        );
        assert_eq!(code, 400, "{bad}: {text}");
        assert!(text.contains("spiffe_id"), "{text}");
        let body = serde_json::json!({"spiffe_id": bad, "audience": ["a"]});
        let (code, _) = s.curl(
            "POST",
            "/v1/svid/jwt",
            Some(s.token()),
            Some(&body.to_string()),
        );
        assert_eq!(code, 400, "{bad}");
    }
    assert_eq!(
        s.audit_head(),
        before,
        "a refused request changed the audit log"
    );
    assert!(
        !tmp.path().join("bad").exists(),
        "a refused mint wrote files"
    );
}

#[test]
fn hostile_csrs_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "td.test");
    let entry = s.ward_json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://td.test/ns/a/sa/web",
        "--parent",
        "spiffe://td.test/ward/agent/n1",
        "--selector",
        "unix:uid:1000",
    ]);
    let entry_id = entry["id"].as_str().unwrap().to_string();
    let before = s.audit_head();
    let cases = [
        (
            "dns beside uri",
            openssl_csr(
                tmp.path(),
                "c1",
                "URI:spiffe://td.test/ns/a/sa/web,DNS:web.example.org",
            ),
            None,
            "exactly one SAN",
        ),
        (
            "dns only",
            openssl_csr(tmp.path(), "c2", "DNS:web.example.org"),
            None,
            "exactly one SAN",
        ),
        (
            "two uris",
            openssl_csr(
                tmp.path(),
                "c3",
                "URI:spiffe://td.test/a,URI:spiffe://td.test/b",
            ),
            None,
            "exactly one SAN",
        ),
        (
            "other domain",
            openssl_csr(tmp.path(), "c4", "URI:spiffe://evil.test/a"),
            None,
            "not in trust domain",
        ),
        (
            "dot segment",
            openssl_csr(tmp.path(), "c5", "URI:spiffe://td.test/a/../b"),
            None,
            "not a valid SPIFFE ID",
        ),
        (
            "bare domain",
            openssl_csr(tmp.path(), "c6", "URI:spiffe://td.test"),
            None,
            "no path",
        ),
        (
            "san differs from entry",
            openssl_csr(tmp.path(), "c7", "URI:spiffe://td.test/ns/a/sa/admin"),
            Some(entry_id.clone()),
            "differs from entry",
        ),
        (
            "not a csr",
            "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .to_string(),
            None,
            "not a valid PKCS#10",
        ),
        ("garbage", "hello".to_string(), None, "not a valid PKCS#10"),
    ];
    for (name, csr, entry_id, want) in cases {
        let body = serde_json::json!({"csr": csr, "entry_id": entry_id});
        let (code, text) = s.curl(
            "POST",
            "/v1/svid/x509",
            Some(s.token()),
            Some(&body.to_string()),
        );
        assert_eq!(code, 400, "{name}: {text}");
        assert!(text.contains(want), "{name}: wanted {want:?} in {text}");
    }
    // A CSR matching the entry is signed, with the entry's TTL.
    let good = openssl_csr(tmp.path(), "ok", "URI:spiffe://td.test/ns/a/sa/web");
    let body = serde_json::json!({"csr": good, "entry_id": entry_id});
    let (code, text) = s.curl(
        "POST",
        "/v1/svid/x509",
        Some(s.token()),
        Some(&body.to_string()),
    );
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        s.audit_head(),
        before + 1,
        "only the accepted CSR is audited"
    );
    // A TTL beyond the server's maximum is refused.
    let body = serde_json::json!({"csr": good, "ttl": 10 * 86400});
    let (code, text) = s.curl(
        "POST",
        "/v1/svid/x509",
        Some(s.token()),
        Some(&body.to_string()),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("maximum"), "{text}");
}

#[test]
fn jwt_svid_is_es256_with_kid_and_verifies_against_the_spiffe_bundle() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "td.test");
    let r = s.ward_json(&[
        "jwt",
        "mint",
        "--spiffe-id",
        "spiffe://td.test/ns/a/sa/web",
        "--audience",
        "orders",
    ]);
    let token = r["token"].as_str().unwrap();
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    let kid = header["kid"].as_str().unwrap();
    let (code, bundle) = s.curl("GET", "/v1/bundle?format=spiffe", None, None);
    assert_eq!(code, 200);
    let bundle: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    let key = bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["use"] == "jwt-svid" && k["kid"] == kid)
        .expect("the token's kid is in the bundle");
    let dk = jsonwebtoken::DecodingKey::from_ec_components(
        key["x"].as_str().unwrap(),
        key["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["orders"]);
    v.set_required_spec_claims(&["exp", "sub", "aud"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &dk, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "spiffe://td.test/ns/a/sa/web");
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 300);
    assert!(
        bundle["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["use"] == "x509-svid" && k["x5c"].is_array())
    );
    // An audience is required.
    let (code, text) = s.curl(
        "POST",
        "/v1/svid/jwt",
        Some(s.token()),
        Some(r#"{"spiffe_id":"spiffe://td.test/a","audience":[]}"#),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("audience"), "{text}");
}
