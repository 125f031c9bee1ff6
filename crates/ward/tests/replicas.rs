//! End to end: two `ward server` replicas sharing one PostgreSQL database
//! (and nothing else: each has its own data folder, TLS CA and log) are
//! interchangeable. Needs WARD_TEST_POSTGRES_URL (CI sets it); without it
//! the test says so and returns (where WARD_TEST_NO_SKIP is set, it fails).

mod support;

use std::process::Command;

use support::*;

#[test]
fn two_replicas_on_one_postgres_share_entries_audit_chain_and_ca_rotation() {
    let Some(base) = required_env("WARD_TEST_POSTGRES_URL", "a PostgreSQL server") else {
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
    let home = |port: u16| tmp.path().join(format!("replica-{port}"));
    let config = |port: u16| {
        std::fs::create_dir_all(home(port)).unwrap();
        let p = home(port).join("ward.toml");
        std::fs::write(
            &p,
            format!(
                "trust_domain = \"ha.test\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nstorage = \"{db_url}\"\n[seal]\nshares = 3\nthreshold = 2\n",
                home(port).join("data").display()
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
    let token = init["admin_token"].as_str().unwrap().to_string();

    let mut replicas = Vec::new();
    for (cfg, p) in [(&ca, pa), (&cb, pb)] {
        // Each replica makes its own API TLS CA in its own data folder.
        let cacert = home(p).join("data").join("tls").join("ca.pem");
        let mut s = Server::configured(&home(p), cfg, &format!("https://127.0.0.1:{p}"), &cacert);
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

    // Two replicas spending one join token at the same moment: one node
    // attests, the other is refused.
    let csr_dir = tmp.path().join("csr");
    std::fs::create_dir_all(&csr_dir).unwrap();
    let csr = |node: &str| {
        openssl_csr(
            &csr_dir,
            node,
            &format!("URI:spiffe://ha.test/ward/agent/{node}"),
        )
    };
    for round in 0..3 {
        let join = a.ward_json(&["agent", "token", "create", "--ttl", "5m"])["token"]
            .as_str()
            .unwrap()
            .to_string();
        let bodies: Vec<String> = ["a", "b"]
            .iter()
            .map(|r| {
                serde_json::json!({"join_token": join, "csr": csr(&format!("race{round}{r}"))})
                    .to_string()
            })
            .collect();
        let barrier = std::sync::Barrier::new(2);
        let codes: Vec<u16> = std::thread::scope(|scope| {
            let handles: Vec<_> = [a, b]
                .into_iter()
                .zip(&bodies)
                .map(|(s, body)| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        s.curl("POST", "/v1/agent/attest", None, Some(body)).0
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = codes.clone();
        sorted.sort();
        assert_eq!(sorted, [200, 403], "round {round}: {codes:?}");
    }

    // A change made on one replica wakes a long poll held by the other: an
    // agent attached to B gets an SVID for an entry created on A.
    let agent = Agent::start(&home(pb), b, "n-cross");
    let cross = "spiffe://ha.test/cross/w";
    let before = std::time::Instant::now();
    a.ward_json(&[
        "entry",
        "create",
        "--spiffe-id",
        cross,
        "--parent",
        "spiffe://ha.test/ward/agent/n-cross",
        "--selector",
        &format!("unix:uid:{}", my_uid()),
    ]);
    let served = wait_for(std::time::Duration::from_secs(20), || {
        agent.fetch().as_deref() == Ok(cross)
    });
    assert!(
        served,
        "B's agent never got A's entry; log:\n{}",
        agent.log_text()
    );
    eprintln!(
        "cross-replica entry reached the agent in {:?}",
        before.elapsed()
    );
    drop(agent);

    // A rotation on one replica reaches the other without a restart: B
    // reports the new CA active, and both sign with it (not merely with the
    // same CA).
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
    let out_old = tmp.path().join("svid-old");
    b.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://ha.test/w",
        "--out",
        out_old.to_str().unwrap(),
    ]);
    let old_issuer = issuer(&out_old);
    a.ward_json(&["ca", "prepare"]);
    a.ward_json(&["ca", "activate"]);
    let active = |s: &Server| {
        let list = s.ward_json(&["ca", "list"]);
        list["cas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == "active")
            .map(|c| c["generation"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let on_a = active(a);
    assert_eq!(on_a.len(), 1);
    assert_eq!(on_a[0], 2, "A activated generation 2");
    let rotated = wait_for(std::time::Duration::from_secs(15), || active(b) == on_a);
    assert!(
        rotated,
        "replica B never saw generation 2 active: {:?}",
        active(b)
    );
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
    assert_eq!(
        issuer(&out_a),
        issuer(&out_b),
        "both replicas sign with the same CA"
    );
    assert_ne!(issuer(&out_a), old_issuer, "the new CA, not the old one");

    drop(replicas);
    psql(
        &base,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}
