//! End to end: what the server acknowledged survives SIGKILL, and the audit
//! chain catches tampering with the stored log.

mod support;

use std::process::Command;

use support::*;

#[test]
fn acknowledged_entries_issuances_and_audit_records_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::dev(tmp.path(), "crash.test");
    let mut ids = Vec::new();
    for i in 0..15 {
        let e = s.ward_json(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://crash.test/ns/a/sa/w{i}"),
            "--parent",
            "spiffe://crash.test/ward/agent/n1",
            "--selector",
            &format!("unix:uid:{i}"),
        ]);
        ids.push(e["id"].as_str().unwrap().to_string());
        s.ward_json(&[
            "x509",
            "mint",
            "--spiffe-id",
            &format!("spiffe://crash.test/w{i}"),
            "--out",
            tmp.path().join(format!("m{i}")).to_str().unwrap(),
        ]);
    }
    let head = s.audit_head();
    assert_eq!(head, 1 + 30, "init + 15 entries + 15 issuances");
    let old_bundle = std::fs::read_to_string(tmp.path().join("m0").join("bundle.pem")).unwrap();
    // SIGKILL right after the last acknowledgement.
    s.kill9();
    s.start();
    let list = s.ward_json(&["entry", "list"]);
    let found: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(found.contains(&id.as_str()), "entry {id} was lost");
    }
    assert_eq!(s.audit_head(), head, "audit records were lost");
    let v = s.ward_json(&["audit", "verify"]);
    assert_eq!(v["intact"], true);
    assert_eq!(v["records"], head);
    // Same CA after the restart: old SVIDs still verify against the bundle.
    let (_, bundle) = s.curl("GET", "/v1/bundle", None, None);
    assert_eq!(bundle, old_bundle);
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        tmp.path().join("m0/bundle.pem").to_str().unwrap(),
        tmp.path().join("m14/svid.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
}

fn sql(db: &std::path::Path, statement: &str) {
    let out = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
        .arg(db)
        .arg(statement)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn audit_verify_names_the_first_edited_or_missing_record() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::dev(tmp.path(), "audit.test");
    for i in 0..5 {
        s.ward_json(&[
            "jwt",
            "mint",
            "--spiffe-id",
            &format!("spiffe://audit.test/w{i}"),
            "--audience",
            "a",
        ]);
    }
    assert_eq!(s.ward_json(&["audit", "verify"])["records"], 6);
    let tail = s.ward(&["audit", "tail", "-n", "3"]);
    assert!(tail.status.success());
    assert_eq!(String::from_utf8_lossy(&tail.stdout).lines().count(), 3);
    let db = s.dir.join("ward.db");

    // Edit record 3 behind the server's back.
    s.kill9();
    sql(
        &db,
        "UPDATE audit SET target = 'spiffe://audit.test/forged' WHERE seq = 3",
    );
    s.start();
    let out = s.ward(&["audit", "verify"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("record 3") && stderr(&out).contains("edited"),
        "{}",
        stderr(&out)
    );

    // Delete record 4 instead (after undoing nothing: record 3 stays bad, so
    // check deletion on a fresh server).
    let tmp2 = tempfile::tempdir().unwrap();
    let mut s2 = Server::dev(tmp2.path(), "audit.test");
    for i in 0..5 {
        s2.ward_json(&[
            "jwt",
            "mint",
            "--spiffe-id",
            &format!("spiffe://audit.test/w{i}"),
            "--audience",
            "a",
        ]);
    }
    s2.kill9();
    sql(&s2.dir.join("ward.db"), "DELETE FROM audit WHERE seq = 4");
    s2.start();
    let out = s2.ward(&["audit", "verify"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("record 4") && stderr(&out).contains("missing"),
        "{}",
        stderr(&out)
    );

    // Truncating the tail is caught by the head.
    s2.kill9();
    sql(&s2.dir.join("ward.db"), "DELETE FROM audit WHERE seq >= 4");
    s2.start();
    let out = s2.ward(&["audit", "verify"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
}
