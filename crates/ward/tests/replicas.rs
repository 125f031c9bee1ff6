//! End to end: two `ward server` replicas sharing one PostgreSQL database
//! are interchangeable. Needs WARD_TEST_POSTGRES_URL (CI sets it); without
//! it the test says so and returns.

mod support;

use std::process::Command;

use support::*;

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-q", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_replicas_on_one_postgres_share_entries_audit_chain_and_ca_rotation() {
    let Ok(base) = std::env::var("WARD_TEST_POSTGRES_URL") else {
        eprintln!("skipping: WARD_TEST_POSTGRES_URL is not set");
        return;
    };
    let name = format!("ward_e2e_{}", std::process::id());
    psql(
        &base,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    psql(&base, &format!("CREATE DATABASE {name}"));
    let db_url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = |port: u16| {
        let p = tmp.path().join(format!("replica-{port}.toml"));
        std::fs::write(
            &p,
            format!(
                "trust_domain = \"ha.test\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nstorage = \"{db_url}\"\n[seal]\nshares = 3\nthreshold = 2\n",
                data.display()
            ),
        )
        .unwrap();
        p
    };
    let port = |_: ()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (pa, pb) = (port(()), port(()));
    let (ca, cb) = (config(pa), config(pb));
    let out = Command::new(ward_bin())
        .args([
            "server",
            "init",
            "--config",
            ca.to_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let init: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cacert = std::path::PathBuf::from(init["cacert"].as_str().unwrap());
    let token = init["admin_token"].as_str().unwrap().to_string();

    let mut replicas = Vec::new();
    for (cfg, p) in [(&ca, pa), (&cb, pb)] {
        let mut s = Server::configured(tmp.path(), cfg, &format!("https://127.0.0.1:{p}"), &cacert);
        s.env.insert("WARD_TOKEN".into(), token.clone());
        // Each replica is unsealed on its own.
        s.ward_json(&[
            "operator",
            "unseal",
            init["unseal_shares"][0].as_str().unwrap(),
        ]);
        s.ward_json(&[
            "operator",
            "unseal",
            init["unseal_shares"][2].as_str().unwrap(),
        ]);
        replicas.push(s);
    }
    let (a, b) = (&replicas[0], &replicas[1]);

    // Writes on both at once land in one gap-free chain.
    std::thread::scope(|scope| {
        for (i, s) in [a, b].into_iter().enumerate() {
            scope.spawn(move || {
                for j in 0..8 {
                    s.ward_json(&[
                        "entry",
                        "create",
                        "--spiffe-id",
                        &format!("spiffe://ha.test/r{i}/w{j}"),
                        "--parent",
                        "spiffe://ha.test/ward/agent/n1",
                        "--selector",
                        "unix:uid:1",
                    ]);
                    s.ward_json(&[
                        "jwt",
                        "mint",
                        "--spiffe-id",
                        &format!("spiffe://ha.test/r{i}/w{j}"),
                        "--audience",
                        "x",
                    ]);
                }
            });
        }
    });
    assert_eq!(
        a.ward_json(&["entry", "list"]).as_array().unwrap().len(),
        16
    );
    assert_eq!(
        b.ward_json(&["entry", "list"]).as_array().unwrap().len(),
        16
    );
    let v = b.ward_json(&["audit", "verify"]);
    assert_eq!(v["intact"], true);
    assert_eq!(v["records"], 1 + 32);

    // A rotation on one replica reaches the other without a restart.
    a.ward_json(&["ca", "prepare"]);
    a.ward_json(&["ca", "activate"]);
    let rotated = wait_for(std::time::Duration::from_secs(15), || {
        let list = b.ward_json(&["ca", "list"]);
        list["cas"].as_array().map(|c| c.len()) == Some(2)
    });
    assert!(rotated, "replica B never saw the rotation");
    let out_a = tmp.path().join("svid-a");
    let out_b = tmp.path().join("svid-b");
    a.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://ha.test/w",
        "--out",
        out_a.to_str().unwrap(),
    ]);
    b.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://ha.test/w",
        "--out",
        out_b.to_str().unwrap(),
    ]);
    let issuer = |d: &std::path::Path| {
        openssl(&[
            "x509",
            "-in",
            d.join("svid.pem").to_str().unwrap(),
            "-noout",
            "-issuer",
        ])
        .1
    };
    assert_eq!(
        issuer(&out_a),
        issuer(&out_b),
        "both replicas sign with the new CA"
    );

    drop(replicas);
    psql(
        &base,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}
