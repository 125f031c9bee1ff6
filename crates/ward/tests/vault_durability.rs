//! The vault under failure: every write the server acknowledged is there
//! after SIGKILL in the middle of a write load (SQLite and PostgreSQL);
//! a revocation against a database that is down keeps being retried and
//! succeeds when the database is back; mass expiry never stalls the API;
//! with two replicas on one PostgreSQL exactly one runs expiry, and the
//! other takes over when it dies.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

/// Writes one secret per request from 4 threads until the server goes
/// away, appending `path` to the ack file after each 200 (flushed before
/// the next write). Then exits.
const WRITER: &str = r#"
import sys, threading, requests
addr, ca, token, ack = sys.argv[1:5]
lock = threading.Lock()
out = open(ack, "a", buffering=1)
def run(t):
    # verify= on each request: a session's own is overridden by REQUESTS_CA_BUNDLE.
    s = requests.Session(); s.headers["X-Vault-Token"] = token
    n = 0
    while True:
        path = f"load/t{t}/s{n}"
        try:
            r = s.post(f"{addr}/v1/secret/data/{path}", json={"data": {"v": f"{path}-value"}}, timeout=5, verify=ca)
        except Exception:
            return
        if r.status_code == 200:
            with lock:
                out.write(path + "\n"); out.flush()
        elif r.status_code >= 500:
            return
        n += 1
ts = [threading.Thread(target=run, args=(t,)) for t in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
"#;

/// Reads every acknowledged path back; prints `MISSING path` for any that
/// is not there with its value, then `CHECKED n`.
const CHECKER: &str = r#"
import sys, requests
addr, ca, token, ack = sys.argv[1:5]
s = requests.Session(); s.headers["X-Vault-Token"] = token
paths = [l.strip() for l in open(ack) if l.strip()]
for p in paths:
    r = s.get(f"{addr}/v1/secret/data/{p}", timeout=10, verify=ca)
    if r.status_code != 200 or r.json()["data"]["data"]["v"] != f"{p}-value":
        print("MISSING", p, r.status_code, flush=True)
print("CHECKED", len(paths), flush=True)
"#;

fn python() -> Option<String> {
    required_env("WARD_TEST_PYTHON", "a python with requests")
}

fn load_then_kill(s: &mut Server, python: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let ack = dir.join("acked.txt");
    let mut writer = Command::new(python)
        .args(["-c", WRITER, s.addr(), s.cacert(), s.token()])
        .arg(&ack)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let enough = wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(&ack).is_ok_and(|t| t.lines().count() >= 300)
    });
    assert!(
        enough,
        "the write load did not get going:\n{}",
        s.log_text()
    );
    // In the middle of the load.
    s.kill9();
    let done = wait_for(Duration::from_secs(30), || {
        matches!(writer.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = writer.kill();
    }
    ack
}

fn check_all(s: &Server, python: &str, ack: &std::path::Path) {
    let out = Command::new(python)
        .args(["-c", CHECKER, s.addr(), s.cacert(), s.token()])
        .arg(ack)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("MISSING"),
        "acknowledged writes were lost:\n{text}"
    );
    let checked: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("CHECKED "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        checked >= 300,
        "only {checked} writes checked: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn acknowledged_vault_writes_survive_sigkill_on_sqlite() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::dev(tmp.path(), "crashkv.test");
    let ack = load_then_kill(&mut s, &py, tmp.path());
    s.start();
    check_all(&s, &py, &ack);
    let v = s.ward_json(&["audit", "verify"]);
    assert_eq!(v["intact"], true, "{v}");
}

/// A fresh database on the test PostgreSQL: its URL.
fn fresh_db(base: &str, tag: &str) -> String {
    let name = format!("ward_vault_{tag}_{}", std::process::id());
    psql(
        base,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    psql(base, &format!("CREATE DATABASE {name}"));
    format!("{}/{name}", &base[..base.rfind('/').unwrap()])
}

/// Configured replicas on one PostgreSQL store, each unsealed.
struct Replicas {
    servers: Vec<Server>,
    shares: Vec<String>,
}

fn pg_replicas(tmp: &std::path::Path, db_url: &str, n: usize) -> Replicas {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let home = |p: u16| tmp.join(format!("replica-{p}"));
    let cfgs: Vec<_> = ports
        .iter()
        .map(|&p| {
            std::fs::create_dir_all(home(p)).unwrap();
            let c = home(p).join("ward.toml");
            std::fs::write(
                &c,
                format!(
                    "trust_domain = \"vha.test\"\nlisten = \"127.0.0.1:{p}\"\ndata_dir = \"{}\"\nstorage = \"{db_url}\"\n[seal]\nshares = 1\nthreshold = 1\n",
                    home(p).join("data").display()
                ),
            )
            .unwrap();
            c
        })
        .collect();
    let init = ward_init(&cfgs[0], &[]);
    let token = init["admin_token"].as_str().unwrap().to_owned();
    let shares: Vec<String> = init["unseal_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut servers = Vec::new();
    for (cfg, &p) in cfgs.iter().zip(&ports) {
        let cacert = home(p).join("data").join("tls").join("ca.pem");
        let mut s = Server::configured(&home(p), cfg, &format!("https://127.0.0.1:{p}"), &cacert);
        s.env.insert("WARD_TOKEN".into(), token.clone());
        s.ward_json(&["operator", "unseal", &shares[0]]);
        servers.push(s);
    }
    Replicas { servers, shares }
}

#[test]
fn acknowledged_vault_writes_survive_sigkill_on_postgres() {
    let Some(py) = python() else { return };
    let Some(base) = required_env("WARD_TEST_POSTGRES_URL", "a PostgreSQL server") else {
        return;
    };
    let db = fresh_db(&base, "crash");
    let tmp = tempfile::tempdir().unwrap();
    let mut r = pg_replicas(tmp.path(), &db, 1);
    let s = &mut r.servers[0];
    let ack = load_then_kill(s, &py, tmp.path());
    s.restart_configured();
    s.ward_json(&["operator", "unseal", &r.shares[0]]);
    check_all(s, &py, &ack);
}

/// A TCP forwarder to PostgreSQL that can be stopped (the database is
/// "down": connections are refused) and started again on the same port.
struct Forwarder {
    port: u16,
    up: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(target: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if !flag.load(Ordering::SeqCst) {
                    // Down: the connection is dropped at once.
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let flag = flag.clone();
                pipe(client, server, flag);
            }
        });
        Self { port, up }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// Copies both ways until either side closes or the forwarder goes down
/// (then both are shut, as a database restart would).
fn pipe(a: TcpStream, b: TcpStream, up: Arc<AtomicBool>) {
    for (mut from, mut to) in [
        (a.try_clone().unwrap(), b.try_clone().unwrap()),
        (b.try_clone().unwrap(), a.try_clone().unwrap()),
    ] {
        let up = up.clone();
        std::thread::spawn(move || {
            let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 16384];
            loop {
                if !up.load(Ordering::SeqCst) {
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    return;
                }
                match from.read(&mut buf) {
                    Ok(0) => {
                        let _ = to.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
    }
}

fn vault(s: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let (code, text) = s.curl(method, path, Some(s.token()), body);
    (code, serde_json::from_str(&text).unwrap_or_default())
}

/// A PostgreSQL connection `pg` at `url` allowing `allowed`, and a role
/// `role` on it with `role_body`'s settings (its `db_name` is added).
fn pg_role(s: &Server, url: &str, allowed: &str, role: &str, role_body: &str) {
    let (code, body) = vault(
        s,
        "POST",
        "/v1/database/config/pg",
        Some(&format!(
            r#"{{"plugin_name":"postgresql","connection_url":"{url}","allowed_roles":["{allowed}"]}}"#
        )),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = vault(
        s,
        "POST",
        &format!("/v1/database/roles/{role}"),
        Some(&format!(r#"{{"db_name":"pg",{role_body}}}"#)),
    );
    assert_eq!(code, 204, "{body}");
}

#[test]
fn revocation_against_a_database_that_is_down_keeps_retrying_and_succeeds_when_it_returns() {
    let Some(base) = required_env("WARD_TEST_POSTGRES_URL", "a PostgreSQL server") else {
        return;
    };
    let host = base
        .split_once('@')
        .map(|(_, h)| h.split('/').next().unwrap_or("127.0.0.1:5432").to_owned())
        .unwrap_or_else(|| "127.0.0.1:5432".into());
    let target: &'static str = Box::leak(host.into_boxed_str());
    let fwd = Forwarder::start(target);
    let user = base
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .map(|(u, _)| u.to_owned())
        .unwrap_or_else(|| "postgres".into());
    let db = base.rsplit('/').next().unwrap_or("test");
    let via = format!("postgres://{user}@127.0.0.1:{}/{db}", fwd.port);
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "down.test");
    pg_role(&s, &via, "app", "app", r#""default_ttl":"1h""#);
    let (code, creds) = vault(&s, "GET", "/v1/database/creds/app", None);
    assert_eq!(code, 200, "{creds}");
    let name = creds["data"]["username"].as_str().unwrap().to_owned();
    let lease = creds["lease_id"].as_str().unwrap().to_owned();
    let exists = || pg_role_exists(&base, &name);
    assert!(exists());
    // The database goes down; the revocation is accepted, not done.
    fwd.set_up(false);
    let (code, body) = vault(
        &s,
        "PUT",
        "/v1/sys/leases/revoke",
        Some(&format!(r#"{{"lease_id":"{lease}"}}"#)),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("keeps retrying"),
        "{body}"
    );
    assert!(exists(), "nothing could have dropped the user");
    // It keeps failing, and keeps being retried (attempts grow), for well
    // past Vault's six tries' worth of time at this backoff.
    let retried = wait_for(Duration::from_secs(40), || {
        let (_, l) = vault(&s, "GET", "/v1/sys/leases", None);
        l["data"]["leases"][0]["revocation_attempts"]
            .as_i64()
            .unwrap_or(0)
            >= 4
    });
    assert!(retried, "the revocation was not retried:\n{}", s.log_text());
    let (_, listed) = vault(&s, "GET", "/v1/sys/leases", None);
    assert_eq!(listed["data"]["leases"][0]["state"], "revoking", "{listed}");
    // The database is back: the next attempt succeeds and the lease goes.
    fwd.set_up(true);
    let gone = wait_for(Duration::from_secs(90), || !exists());
    assert!(gone, "the user was never dropped:\n{}", s.log_text());
    assert!(wait_for(Duration::from_secs(10), || {
        let (_, l) = vault(&s, "GET", "/v1/sys/leases", None);
        l["data"]["leases"].as_array().is_some_and(|a| a.is_empty())
    }));
    let out = s.ward(&["audit", "tail", "--lines", "100", "--output", "json"]);
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit.contains("lease.revoke_failed") && audit.contains("lease.revoked"),
        "{audit}"
    );
}

#[test]
fn mass_expiry_never_stalls_the_api() {
    let Some(base) = required_env("WARD_TEST_POSTGRES_URL", "a PostgreSQL server") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::dev(tmp.path(), "mass.test");
    // Cheap statements: the test is about the server's expiry, not the database.
    pg_role(
        &s,
        &base,
        "*",
        "bulk",
        r#""default_ttl":2,"max_ttl":2,"creation_statements":"SELECT '{{name}}'","revocation_statements":"SELECT '{{name}}'""#,
    );
    let count = 10_000;
    // Issue from a few parallel curl loops (one process each, HTTP keep-alive).
    let url = format!("{}/v1/database/creds/bulk", s.addr());
    let per = count / 4;
    let started = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let mut cmd = Command::new("curl");
            cmd.args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}\n",
                "--cacert",
                s.cacert(),
                "-H",
            ])
            .arg(format!("X-Vault-Token: {}", s.token()));
            for _ in 0..per {
                cmd.arg(&url).args(["-o", "/dev/null"]);
            }
            cmd.stdout(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        let out = h.wait_with_output().unwrap();
        ok += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| *l == "200")
            .count();
    }
    assert_eq!(ok, count, "not every credential was issued");
    eprintln!("issued {count} credentials in {:?}", started.elapsed());
    let (code, body) = vault(
        &s,
        "POST",
        "/v1/secret/data/during",
        Some(r#"{"data":{"v":"x"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    // While they all expire, health and a secret read answer promptly.
    let mut worst = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let t = Instant::now();
        let (code, _) = s.curl("GET", "/v1/sys/health", None, None);
        worst = worst.max(t.elapsed());
        assert_eq!(code, 200);
        let t = Instant::now();
        let (code, _) = vault(&s, "GET", "/v1/secret/data/during", None);
        worst = worst.max(t.elapsed());
        assert_eq!(code, 200);
        let (_, l) = vault(&s, "GET", "/v1/sys/leases", None);
        let left = l["data"]["leases"].as_array().map_or(usize::MAX, Vec::len);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} leases still not expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        worst < Duration::from_secs(2),
        "the API took {worst:?} to answer during mass expiry"
    );
}

#[test]
fn one_replica_runs_expiry_and_another_takes_over_when_it_dies() {
    let Some(base) = required_env("WARD_TEST_POSTGRES_URL", "a PostgreSQL server") else {
        return;
    };
    let db = fresh_db(&base, "ha");
    let tmp = tempfile::tempdir().unwrap();
    let mut r = pg_replicas(tmp.path(), &db, 2);
    let leader_of = |r: &Replicas| -> Vec<usize> {
        r.servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.log_text().contains("this replica runs lease expiry"))
            .map(|(i, _)| i)
            .collect()
    };
    assert!(wait_for(Duration::from_secs(20), || leader_of(&r).len() == 1));
    std::thread::sleep(Duration::from_secs(3));
    let leaders = leader_of(&r);
    assert_eq!(leaders.len(), 1, "exactly one replica runs expiry");
    let leader = leaders[0];
    let other = 1 - leader;
    // Leases issued on the other replica expire through the leader.
    let s = &r.servers[other];
    pg_role(s, &base, "app", "app", r#""default_ttl":2,"max_ttl":2"#);
    let (_, c1) = vault(s, "GET", "/v1/database/creds/app", None);
    let u1 = c1["data"]["username"].as_str().unwrap().to_owned();
    let exists = |u: &str| pg_role_exists(&base, u);
    assert!(exists(&u1));
    assert!(
        wait_for(Duration::from_secs(30), || !exists(&u1)),
        "the leader did not expire it"
    );
    assert!(
        !r.servers[other]
            .log_text()
            .contains("this replica runs lease expiry"),
        "the follower must not have run expiry"
    );
    // The leader dies; the other takes over and expires the next one.
    r.servers[leader].kill9();
    let (_, c2) = vault(&r.servers[other], "GET", "/v1/database/creds/app", None);
    let u2 = c2["data"]["username"].as_str().unwrap().to_owned();
    assert!(exists(&u2));
    assert!(
        wait_for(Duration::from_secs(30), || r.servers[other]
            .log_text()
            .contains("this replica runs lease expiry")),
        "the other replica never took over:\n{}",
        r.servers[other].log_text()
    );
    assert!(
        wait_for(Duration::from_secs(30), || !exists(&u2)),
        "nobody expired the lease after the leader died"
    );
}

#[test]
fn a_credential_whose_lease_lapsed_while_the_server_was_down_is_dropped_when_it_returns() {
    let Some(base) = required_env("WARD_TEST_POSTGRES_URL", "a PostgreSQL server") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::dev(tmp.path(), "lapse.test");
    pg_role(&s, &base, "app", "app", r#""default_ttl":3,"max_ttl":3"#);
    let (code, creds) = vault(&s, "GET", "/v1/database/creds/app", None);
    assert_eq!(code, 200, "{creds}");
    let user = creds["data"]["username"].as_str().unwrap().to_owned();
    let exists = || pg_role_exists(&base, &user);
    assert!(exists());
    // Down before the lease ends, back after it.
    s.kill9();
    std::thread::sleep(Duration::from_secs(5));
    assert!(exists(), "nothing dropped it while the server was down");
    s.start();
    assert!(
        wait_for(Duration::from_secs(30), || !exists()),
        "the lapsed credential was not dropped after the restart"
    );
}
