//! End to end: `ward agent` attests workloads from the kernel and serves
//! them through the SPIFFE Workload API to real clients (the `spiffe` crate,
//! py-spiffe), keeps serving while the server is down, and follows changes.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;
use tokio_stream::StreamExt;

fn register(s: &Server, id: &str, node: &str, selector: &str, ttl: &str) -> String {
    let e = s.ward_json(&[
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent",
        &format!("spiffe://{}/ward/agent/{node}", td(s)),
        "--selector",
        selector,
        "--x509-ttl",
        ttl,
    ]);
    e["id"].as_str().unwrap().to_string()
}

fn td(s: &Server) -> String {
    s.ward_json(&["operator", "status"])["trust_domain"]
        .as_str()
        .unwrap()
        .to_string()
}

fn wait_fetch(a: &Agent, want: &str) {
    let ok = wait_for(Duration::from_secs(10), || a.fetch().as_deref() == Ok(want));
    assert!(
        ok,
        "the agent never served {want}: {:?}\n{}",
        a.fetch(),
        a.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spiffe_crate_fetches_and_its_watch_sees_a_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "agent.test");
    let a = Agent::start(tmp.path(), &s, "n1");
    let id = "spiffe://agent.test/ns/demo/sa/web";
    register(&s, id, "n1", &format!("unix:uid:{}", my_uid()), "4s");
    wait_fetch(&a, id);

    let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", a.socket.display()))
        .await
        .unwrap();
    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), id);
    let bundles = client.fetch_x509_bundles().await.unwrap();
    assert!(format!("{bundles:?}").contains("agent.test"));

    // A 4 s SVID is rotated at 2 s; the watch must see a new leaf.
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let first_leaf = first.default_svid().unwrap().cert_chain()[0]
        .as_ref()
        .to_vec();
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ctx = stream.next().await.unwrap().unwrap();
            let leaf = ctx.default_svid().unwrap().cert_chain()[0]
                .as_ref()
                .to_vec();
            if leaf != first_leaf {
                return ctx;
            }
        }
    })
    .await
    .expect("no rotation seen within 10 s");
    assert_eq!(next.default_svid().unwrap().spiffe_id().to_string(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_callers_are_denied_and_a_missing_header_is_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "agent.test");
    let a = Agent::start(tmp.path(), &s, "n1");
    // An entry for another uid: this process does not match.
    register(
        &s,
        "spiffe://agent.test/other",
        "n1",
        &format!("unix:uid:{}", my_uid() + 4242),
        "1h",
    );
    let err = a.fetch().unwrap_err();
    assert!(err.contains("permission denied"), "{err}");

    let mut raw = ward_agent::client::connect(&a.socket).await.unwrap();
    let status = raw
        .fetch_x509svid(tonic::Request::new(ward_agent::proto::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = raw
        .fetch_jwtsvid(tonic::Request::new(ward_agent::proto::JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = raw
        .fetch_jwtsvid(ward_agent::client::request(
            ward_agent::proto::JwtsvidRequest {
                audience: vec!["a".into()],
                spiffe_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // A process of another user, as root can arrange: denied even though
    // this (root) process has an entry.
    register(
        &s,
        "spiffe://agent.test/mine",
        "n1",
        &format!("unix:uid:{}", my_uid()),
        "1h",
    );
    wait_fetch(&a, "spiffe://agent.test/mine");
    // An entitled workload asking for too many audiences at once.
    let status = raw
        .fetch_jwtsvid(ward_agent::client::request(
            ward_agent::proto::JwtsvidRequest {
                audience: (0..17).map(|i| format!("aud{i}")).collect(),
                spiffe_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most 16"), "{status:?}");
    if my_uid() == 0 && Command::new("runuser").arg("--help").output().is_ok() {
        let socket = a.socket.display().to_string();
        let out = Command::new("runuser")
            .args([
                "-u",
                "nobody",
                "--",
                ward_bin(),
                "agent",
                "api",
                "fetch",
                "--socket",
                &socket,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let text = stderr(&out);
        assert!(text.contains("permission denied"), "{text}");
    } else {
        eprintln!("skipping the other-user half: needs root and runuser");
    }
}

#[test]
fn the_agent_keeps_serving_while_the_server_is_down_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::dev(tmp.path(), "stable.test");
    let mut a = Agent::start(tmp.path(), &s, "n1");
    let id = "spiffe://stable.test/ns/a/sa/web";
    register(&s, id, "n1", &format!("unix:uid:{}", my_uid()), "1h");
    wait_fetch(&a, id);

    s.kill9();
    assert_eq!(
        a.fetch().as_deref(),
        Ok(id),
        "server down: the cached SVID must still be served"
    );
    a.restart();
    assert_eq!(
        a.fetch().as_deref(),
        Ok(id),
        "agent restarted while the server is down: still served"
    );
    // Private keys on disk cannot be opened without the agent's key (and
    // with it they are the keys of the certificates beside them).
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.data_dir.join("state.json")).unwrap()).unwrap();
    let agent_key = std::fs::read_to_string(a.data_dir.join("agent.key")).unwrap();
    let agent_key = ward_store::seal::MasterKey::from_base64(agent_key.trim()).unwrap();
    let mut sealed_keys = vec![("agent/node".to_owned(), &state["node"])];
    for (entry, svid) in state["svids"].as_object().unwrap() {
        sealed_keys.push((format!("agent/svid/{entry}"), svid));
    }
    assert!(sealed_keys.len() >= 2, "the node's key and a workload's");
    let check = a.data_dir.parent().unwrap().join("keycheck");
    std::fs::create_dir_all(&check).unwrap();
    for (name, svid) in sealed_keys {
        use base64::Engine;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(svid["key_sealed"].as_str().unwrap())
            .unwrap();
        assert!(
            !parses_as_der_key(&check, &sealed),
            "{name} parses as a key without the agent's key"
        );
        let other = ward_store::seal::MasterKey::generate().unwrap();
        assert!(
            other.open(&name, &sealed).is_err(),
            "{name}: another key opens it"
        );
        let der = agent_key.open(&name, &sealed).unwrap();
        assert_key_of_cert(&check, &der, svid["chain_pem"].as_str().unwrap());
    }

    // The server returns on the same address: the agent catches up.
    s.start();
    let id2 = "spiffe://stable.test/ns/a/sa/late";
    register(&s, id2, "n1", &format!("unix:uid:{}", my_uid()), "1h");
    let caught_up = wait_for(Duration::from_secs(30), || {
        let out = Command::new(ward_bin())
            .args([
                "agent",
                "api",
                "fetch",
                "--socket",
                a.socket.to_str().unwrap(),
                "--output",
                "json",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(id2)
    });
    assert!(
        caught_up,
        "the agent did not catch up with the returned server:\n{}",
        a.log_text()
    );
}

#[test]
fn a_deleted_entry_stops_being_served_within_five_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "del.test");
    let a = Agent::start(tmp.path(), &s, "n1");
    let id = "spiffe://del.test/ns/a/sa/web";
    let entry = register(&s, id, "n1", &format!("unix:uid:{}", my_uid()), "1h");
    wait_fetch(&a, id);
    s.ward_json(&["entry", "delete", &entry]);
    let start = Instant::now();
    let gone = wait_for(Duration::from_secs(5), || a.fetch().is_err());
    assert!(gone, "still served 5 s after the entry was deleted");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(a.fetch().unwrap_err().contains("permission denied"));
}

#[test]
fn join_tokens_are_single_use_and_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "join.test");
    let token = s.ward_json(&["agent", "token", "create", "--ttl", "10m"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    // An agent in its own data directory `dir`, claiming node `node`.
    let run_as = |dir: &str, node: &str, token: &str| {
        Command::new(ward_bin())
            .args([
                "agent",
                "--data-dir",
                tmp.path().join(dir).to_str().unwrap(),
                "--socket",
                tmp.path().join(format!("{dir}.sock")).to_str().unwrap(),
            ])
            .args(["--node-name", node, "--join-token", token])
            .env("WARD_ADDR", s.addr())
            .env("WARD_CACERT", s.cacert())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let run = |node: &str, token: &str| run_as(node, node, token);
    let mut first = run("n1", &token);
    assert!(
        wait_for(Duration::from_secs(20), || tmp
            .path()
            .join("n1.sock")
            .exists()),
        "first use failed"
    );
    let _ = first.kill();
    let _ = first.wait();
    let out = run("n2", &token).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("n3", "ward_bogus").wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not valid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = s.ward_json(&["agent", "token", "create", "--ttl", "1s"]);
    let expires = short["expires_at"].as_i64().unwrap();
    wait_for(Duration::from_secs(5), || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            > expires
    });
    let out = run("n4", short["token"].as_str().unwrap())
        .wait_with_output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expired"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A fresh token cannot take over an attested node's identity...
    let fresh = s.ward_json(&["agent", "token", "create", "--ttl", "10m"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run_as("thief", "n1", &fresh).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already attested"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...a token bound to n1 refuses any other node, and re-attests n1.
    let bound = s.ward_json(&[
        "agent",
        "token",
        "create",
        "--ttl",
        "10m",
        "--node-name",
        "n1",
    ])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run_as("n6", "n6", &bound).wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bound to spiffe://join.test/ward/agent/n1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut again = run_as("n1-again", "n1", &bound);
    assert!(
        wait_for(Duration::from_secs(20), || tmp
            .path()
            .join("n1-again.sock")
            .exists()),
        "a bound token did not re-attest n1"
    );
    let _ = again.kill();
    let _ = again.wait();
    // The unbound token refused above was not spent: it still attests a new node.
    let mut n7 = run_as("n7", "n7", &fresh);
    assert!(
        wait_for(Duration::from_secs(20), || tmp
            .path()
            .join("n7.sock")
            .exists()),
        "a refused token was spent"
    );
    let _ = n7.kill();
    let _ = n7.wait();
    // A node without a stored identity and without a token says what to do.
    let out = Command::new(ward_bin())
        .args([
            "agent",
            "--data-dir",
            tmp.path().join("n5").to_str().unwrap(),
            "--socket",
            tmp.path().join("n5.sock").to_str().unwrap(),
        ])
        .env("WARD_ADDR", s.addr())
        .env("WARD_CACERT", s.cacert())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--join-token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PY_WORKLOAD: &str = r#"
import sys
from spiffe import WorkloadApiClient, JwtSvid
sock, want = sys.argv[1], sys.argv[2]
client = WorkloadApiClient(socket_path="unix:" + sock, default_timeout=15)
x = client.fetch_x509_svid()
assert str(x.spiffe_id) == want, x.spiffe_id
jwt = client.fetch_jwt_svid(audience={"orders"})
assert str(jwt.spiffe_id) == want, jwt.spiffe_id
bundle = client.fetch_jwt_bundles().get_bundle_for_trust_domain(x.spiffe_id.trust_domain)
assert bundle is not None
local = JwtSvid.parse_and_validate(jwt.token, bundle, {"orders"})
assert str(local.spiffe_id) == want
remote = client.validate_jwt_svid(jwt.token, "orders")
assert str(remote.spiffe_id) == want
try:
    client.validate_jwt_svid(jwt.token, "payments")
    raise SystemExit("a token for another audience validated")
except SystemExit:
    raise
except Exception:
    pass
print("OK", x.spiffe_id)
"#;

#[test]
fn py_spiffe_fetches_x509_and_jwt_svids_and_validates_the_jwt() {
    let Some(python) = required_env("WARD_TEST_PYTHON", "a python with spiffe==0.3.2") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "py.test");
    let a = Agent::start(tmp.path(), &s, "n1");
    let id = "spiffe://py.test/ns/shop/sa/orders";
    register(&s, id, "n1", &format!("unix:uid:{}", my_uid()), "1h");
    wait_fetch(&a, id);
    let script = tmp.path().join("workload.py");
    std::fs::write(&script, PY_WORKLOAD).unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .arg(&a.socket)
        .arg(id)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "py-spiffe failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

/// curl with the client certificate in `cert_dir` (`svid.pem`, `key.pem`):
/// (status, body); status 0 when TLS refused it.
fn curl_as(
    s: &Server,
    cert_dir: Option<&std::path::Path>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let cert = cert_dir.map(|d| (d.join("svid.pem"), d.join("key.pem")));
    curl_with_cert(
        s,
        cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        method,
        path,
        body,
    )
}

/// curl with a client certificate and key: (status, body); status 0 when
/// TLS refused it.
fn curl_with_cert(
    s: &Server,
    cert_and_key: Option<(&std::path::Path, &std::path::Path)>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-w",
        "\n%{http_code}",
        "--cacert",
        s.cacert(),
        "-X",
        method,
    ]);
    if let Some((cert, key)) = cert_and_key {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(format!("{}{path}", s.addr())).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_agent_api_serves_only_a_node_its_own_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "nodes.test");
    let other = Server::dev(tmp.path(), "other.test");
    let entry = register(
        &s,
        "spiffe://nodes.test/ns/a/sa/web",
        "n1",
        "unix:uid:1",
        "1h",
    );
    let mint = |srv: &Server, id: &str, name: &str| {
        let dir = tmp.path().join(name);
        srv.ward_json(&[
            "x509",
            "mint",
            "--spiffe-id",
            id,
            "--out",
            dir.to_str().unwrap(),
        ]);
        dir
    };
    let n1 = mint(&s, "spiffe://nodes.test/ward/agent/n1", "n1");
    let n2 = mint(&s, "spiffe://nodes.test/ward/agent/n2", "n2");
    let workload = mint(&s, "spiffe://nodes.test/ns/a/sa/web", "wl");
    let foreign = mint(&other, "spiffe://other.test/ward/agent/n1", "foreign");

    let (code, body) = curl_as(&s, None, "GET", "/v1/agent/sync", None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl_as(&s, Some(&workload), "GET", "/v1/agent/sync", None);
    assert_eq!(code, 403, "a workload SVID is not a node identity: {body}");
    let (code, _) = curl_as(&s, Some(&foreign), "GET", "/v1/agent/sync", None);
    assert_eq!(
        code, 0,
        "an SVID of another trust domain must fail the TLS handshake"
    );

    let (code, body) = curl_as(&s, Some(&n1), "GET", "/v1/agent/sync", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&entry));
    let (code, body) = curl_as(&s, Some(&n2), "GET", "/v1/agent/sync", None);
    assert_eq!(code, 200);
    assert!(!body.contains(&entry), "n2 sees n1's entry: {body}");
    // Nor in an incremental sync, where other nodes' entries used to come
    // back as "deleted".
    let (code, body) = curl_as(&s, Some(&n2), "GET", "/v1/agent/sync?since=1", None);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains(&entry), "n2 learns of n1's entry: {body}");

    // n2 cannot obtain n1's workload identity, X.509 or JWT.
    let key_csr = openssl_csr(tmp.path(), "k", "URI:spiffe://nodes.test/ns/a/sa/web");
    let batch = serde_json::json!({"requests": [{"entry_id": entry, "csr": key_csr}]}).to_string();
    let (code, body) = curl_as(&s, Some(&n2), "POST", "/v1/agent/svids", Some(&batch));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("not under") && !body.contains("BEGIN CERTIFICATE"),
        "{body}"
    );
    let (code, body) = curl_as(&s, Some(&n1), "POST", "/v1/agent/svids", Some(&batch));
    assert_eq!(code, 200);
    assert!(body.contains("BEGIN CERTIFICATE"), "{body}");
    let jwt = serde_json::json!({"entry_id": entry, "audience": ["x"]}).to_string();
    let (code, _) = curl_as(&s, Some(&n2), "POST", "/v1/agent/jwt", Some(&jwt));
    assert_eq!(code, 403);
    // A node renews only its own SVID.
    let renew = serde_json::json!({"csr": key_csr}).to_string();
    let (code, body) = curl_as(&s, Some(&n1), "POST", "/v1/agent/renew", Some(&renew));
    assert_eq!(code, 403, "{body}");
}

#[test]
fn an_agent_with_more_entries_than_one_batch_serves_them_all() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "many.test");
    let a = Agent::start(tmp.path(), &s, "n1");
    for i in 0..150 {
        register(
            &s,
            &format!("spiffe://many.test/w{i}"),
            "n1",
            &format!("unix:uid:{}", 200000 + i),
            "1h",
        );
    }
    let all = wait_for(Duration::from_secs(30), || {
        std::fs::read(a.data_dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["svids"].as_object().map(|o| o.len()))
            == Some(150)
    });
    assert!(all, "not every entry got an SVID:\n{}", a.log_text());
}

fn pem_body_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_verified_before_a_trust_change_must_reconnect() {
    use ward_client::{Client, ClientError};
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "gen.test");
    let dir = tmp.path().join("node");
    s.ward_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://gen.test/ward/agent/n1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let chain = std::fs::read_to_string(dir.join("svid.pem")).unwrap();
    let key = pem_body_der(&std::fs::read_to_string(dir.join("key.pem")).unwrap());
    let cacert = std::fs::read(s.cacert()).unwrap();
    let client = Client::with_svid(s.addr(), &cacert, Some((&chain, &key))).unwrap();
    client
        .agent_sync(0, Duration::ZERO)
        .await
        .expect("a fresh connection is accepted");
    // The bundle changes (a CA is prepared): the kept-alive connection was
    // verified against the old bundle and is refused until it reconnects.
    s.ward_json(&["ca", "prepare"]);
    let err = client.agent_sync(0, Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 401, message } if message.contains("reconnect")),
        "{err}"
    );
    let fresh = Client::with_svid(s.addr(), &cacert, Some((&chain, &key))).unwrap();
    fresh
        .agent_sync(0, Duration::ZERO)
        .await
        .expect("a new connection is verified against the current bundle");
}

#[test]
fn an_agent_refuses_a_socket_directory_another_user_could_swap() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "sock.test");
    let token = s.ward_json(&["agent", "token", "create", "--ttl", "10m"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let run = |socket: &std::path::Path| {
        Command::new(ward_bin())
            .args(["agent", "--data-dir"])
            .arg(tmp.path().join("agent"))
            .arg("--socket")
            .arg(socket)
            .args(["--node-name", "n1", "--join-token", &token])
            .env("WARD_ADDR", s.addr())
            .env("WARD_CACERT", s.cacert())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // World-writable: refused at once, naming the directory and the mode.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run(&open.join("api.sock")).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        err.contains(open.to_str().unwrap()) && err.contains("0777"),
        "{err}"
    );
    assert!(!open.join("api.sock").exists());
    // Group-writable too.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o775)).unwrap();
    let out = run(&open.join("api.sock")).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("its group"));
    // Owned by another user (needs root to arrange).
    if my_uid() == 0 {
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let out = run(&theirs.join("api.sock")).wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success());
        assert!(err.contains("uid 65534"), "{err}");
        // A symbolic link on the way that another user owns (and so could
        // repoint), even to a safe directory.
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        let out = run(&link.join("api.sock")).wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success());
        assert!(err.contains("symbolic link owned by uid 65534"), "{err}");
    }
    // The refusals spent nothing: the same token still attests, in a safe place.
    let safe = tmp.path().join("safe").join("api.sock");
    let mut agent = run(&safe);
    assert!(
        wait_for(Duration::from_secs(20), || safe.exists()),
        "the join token was spent by a refused start"
    );
    let mode = std::fs::metadata(safe.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "a directory it makes is 0755");
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A node attested again (a rebuilt machine, a new key) ends its old
/// identity: the old node SVID can no longer renew itself.
#[test]
fn attesting_a_node_again_stops_the_old_node_svid_from_renewing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "renew.test");
    let dir = tmp.path().join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    let node = "spiffe://renew.test/ward/agent/rn";
    let csr = |name: &str| openssl_csr(&dir, name, &format!("URI:{node}"));
    let attest = |name: &str| {
        let token = s.ward_json(&[
            "agent",
            "token",
            "create",
            "--ttl",
            "5m",
            "--node-name",
            "rn",
        ])["token"]
            .as_str()
            .unwrap()
            .to_string();
        let body = serde_json::json!({"join_token": token, "csr": csr(name)}).to_string();
        let (code, resp) = s.curl("POST", "/v1/agent/attest", None, Some(&body));
        assert_eq!(code, 200, "{resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        std::fs::write(
            dir.join(format!("{name}.pem")),
            v["cert_chain_pem"].as_str().unwrap(),
        )
        .unwrap();
    };
    // A call to an agent endpoint with `name`'s SVID as the client
    // certificate: (status, body).
    let call = |name: &str, method: &str, path: &str, body: Option<String>| {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        curl_with_cert(&s, Some((&cert, &key)), method, path, body.as_deref())
    };
    // Renews `name`'s SVID; the renewed one is kept as `NAME-next`.
    let renew = |name: &str| -> (u16, String) {
        let next = format!("{name}-next");
        // A key of its own per attempt: a refused renewal must not replace
        // the key of an SVID kept from an earlier one.
        let attempt = format!("{name}-attempt");
        let body = serde_json::json!({"csr": csr(&attempt)}).to_string();
        let (code, resp) = call(name, "POST", "/v1/agent/renew", Some(body));
        if code == 200 {
            let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
            std::fs::write(
                dir.join(format!("{next}.pem")),
                v["cert_chain_pem"].as_str().unwrap(),
            )
            .unwrap();
            std::fs::rename(
                dir.join(format!("{attempt}.key")),
                dir.join(format!("{next}.key")),
            )
            .unwrap();
        }
        (code, resp)
    };
    let sync = |name: &str| call(name, "GET", "/v1/agent/sync?since=0&wait=0", None).0;
    attest("old");
    assert_eq!(renew("old").0, 200, "a node renews its own SVID");
    assert_eq!(
        renew("old-next").0,
        200,
        "and the renewed one renews in turn"
    );
    assert_eq!(sync("old-next-next"), 200);
    attest("new");
    // Every SVID of the old attestation is refused, even one renewed a
    // moment before (no waiting on the clock: the serials say it).
    for old in ["old", "old-next", "old-next-next"] {
        let (code, body) = renew(old);
        assert_eq!(code, 403, "{old}: {body}");
        assert!(body.contains("attested again"), "{body}");
        assert_eq!(sync(old), 403, "{old} can no longer sync");
    }
    assert_eq!(renew("new").0, 200, "the new identity renews");
    assert_eq!(sync("new-next"), 200);
}
