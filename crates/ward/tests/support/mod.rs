//! The end-to-end harness: starts real `ward` processes on loopback (port 0,
//! the real port read back from dev.env), runs the CLI against them, and
//! kills what it started. Waits poll for a condition, never a fixed sleep.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn ward_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ward")
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
/// Reads a variable a test needs, or says why the test is skipped. Where
/// `WARD_TEST_NO_SKIP` is set (CI sets it) a missing variable is a failure.
pub fn required_env(name: &str, what: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) => Some(v),
        Err(_) => {
            assert!(
                std::env::var_os("WARD_TEST_NO_SKIP").is_none(),
                "WARD_TEST_NO_SKIP is set but {name} ({what}) is not: this test must run"
            );
            eprintln!("skipping: {name} ({what}) is not set; .ci/run sets it");
            None
        }
    }
}

pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A running `ward server` (dev mode or configured) and its environment.
pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
    args: Vec<String>,
    log: PathBuf,
}

impl Server {
    /// `ward server --dev` on a fresh directory inside `parent`.
    pub fn dev(parent: &Path, td: &str) -> Self {
        let dir = parent.join(format!("server-{td}"));
        let args = vec![
            "server".into(),
            "--dev".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--trust-domain".into(),
            td.into(),
        ];
        let mut s = Self {
            child: None,
            log: parent.join(format!("server-{td}.log")),
            dir,
            env: HashMap::new(),
            args,
        };
        s.start();
        s
    }

    /// `ward server --dev --config FILE`: dev mode on a full configuration
    /// whose data_dir is `data_dir`.
    pub fn dev_config(parent: &Path, data_dir: &Path, config: &Path) -> Self {
        let mut s = Self {
            child: None,
            log: parent.join("server-dev-config.log"),
            dir: data_dir.to_owned(),
            env: HashMap::new(),
            args: vec![
                "server".into(),
                "--dev".into(),
                "--config".into(),
                config.display().to_string(),
            ],
        };
        s.start();
        s
    }

    /// Starts (or restarts) the process and waits for dev.env.
    pub fn start(&mut self) {
        // A restart keeps its address, as a real server's does.
        if let Some(addr) = self.env.get("WARD_ADDR")
            && let Some(i) = self.args.iter().position(|a| a == "--listen")
        {
            self.args[i + 1] = addr.trim_start_matches("https://").to_string();
        }
        let env_file = self.dir.join("dev.env");
        let _ = std::fs::remove_file(&env_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(ward_bin())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ward server");
        self.child = Some(child);
        let ok = wait_for(Duration::from_secs(30), || env_file.exists());
        assert!(ok, "the server wrote no dev.env; log:\n{}", self.log_text());
        self.env = parse_env(&std::fs::read_to_string(&env_file).unwrap());
    }

    /// A configured (non-dev) server: `ward server --config FILE`; waits
    /// until it answers on `addr`.
    pub fn configured(parent: &Path, config: &Path, addr: &str, cacert: &Path) -> Self {
        Self::configured_with(parent, config, addr, cacert, &[])
    }

    /// As [`Server::configured`], with more arguments for `ward server`.
    pub fn configured_with(
        parent: &Path,
        config: &Path,
        addr: &str,
        cacert: &Path,
        extra: &[&str],
    ) -> Self {
        let mut s = Self {
            child: None,
            log: parent.join("server-configured.log"),
            dir: parent.to_owned(),
            env: HashMap::from([
                ("WARD_ADDR".to_string(), addr.to_string()),
                ("WARD_CACERT".to_string(), cacert.display().to_string()),
            ]),
            args: ["server", "--config", &config.display().to_string()]
                .iter()
                .chain(extra)
                .map(|a| a.to_string())
                .collect(),
        };
        let log = std::fs::File::create(&s.log).unwrap();
        s.child = Some(
            Command::new(ward_bin())
                .args(&s.args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let up = wait_for(Duration::from_secs(30), || {
            s.ward(&["operator", "status", "--output", "json"])
                .status
                .success()
        });
        assert!(
            up,
            "configured server did not answer; log:\n{}",
            s.log_text()
        );
        s
    }

    /// Starts a configured server again with the same arguments (after
    /// [`Server::kill9`]); it comes back sealed.
    pub fn restart_configured(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(ward_bin())
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let up = wait_for(Duration::from_secs(30), || {
            self.ward(&["operator", "status", "--output", "json"])
                .status
                .success()
        });
        assert!(
            up,
            "the server did not come back; log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn addr(&self) -> &str {
        &self.env["WARD_ADDR"]
    }

    pub fn cacert(&self) -> &str {
        &self.env["WARD_CACERT"]
    }

    pub fn token(&self) -> &str {
        self.env.get("WARD_TOKEN").map(String::as_str).unwrap_or("")
    }

    /// Runs the ward CLI against this server.
    pub fn ward(&self, args: &[&str]) -> Output {
        Command::new(ward_bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .output()
            .expect("run ward")
    }

    /// Runs the CLI, asserts success, parses stdout as JSON.
    pub fn ward_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.ward(&all);
        assert!(
            out.status.success(),
            "ward {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ward {args:?}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `curl` against the API: returns (status, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
            self.cacert(),
            "-X",
            method,
        ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if body.is_some() {
            // Through stdin: a large body would not fit in one argument.
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        cmd.arg(format!("{}{path}", self.addr()));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("curl");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(body.unwrap_or("").as_bytes());
        }
        let out = child.wait_with_output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn audit_head(&self) -> i64 {
        let (code, body) = self.curl("GET", "/v1/audit?limit=1", Some(self.token()), None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["head_seq"]
            .as_i64()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs openssl; returns (success, stdout + stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs one SQL statement with `psql` against `url`, asserting success;
/// its output, unaligned and trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-Atq", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether the database user `name` exists (in `pg_roles`).
pub fn pg_role_exists(url: &str, name: &str) -> bool {
    psql(
        url,
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"),
    ) == "1"
}

/// A free loopback port (bound, read back, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ward server init --config CFG EXTRA… --output json`, asserted to succeed.
pub fn ward_init(cfg: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(ward_bin())
        .args(["server", "init", "--config", cfg.to_str().unwrap()])
        .args(extra)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ward server init: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A running `ward agent` attached to a server.
pub struct Agent {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    log: PathBuf,
    server_env: HashMap<String, String>,
    pub node: String,
}

impl Agent {
    /// Creates a join token on `server` and starts an agent for node `node`
    /// under `parent`; waits until its socket is up.
    pub fn start(parent: &Path, server: &Server, node: &str) -> Self {
        let token = server.ward_json(&["agent", "token", "create", "--ttl", "10m"])["token"]
            .as_str()
            .unwrap()
            .to_string();
        let mut a = Self {
            child: None,
            data_dir: parent.join(format!("agent-{node}")),
            socket: parent.join(format!("sock-{node}")).join("api.sock"),
            log: parent.join(format!("agent-{node}.log")),
            server_env: server.env.clone(),
            node: node.to_string(),
        };
        a.spawn(Some(&token));
        a
    }

    /// Runs `ward agent` with these arguments and the server's environment.
    pub fn run_once(&self, join_token: Option<&str>) -> Child {
        let mut cmd = Command::new(ward_bin());
        cmd.args([
            "agent",
            "--data-dir",
            self.data_dir.to_str().unwrap(),
            "--socket",
            self.socket.to_str().unwrap(),
            "--node-name",
            &self.node,
        ]);
        if let Some(t) = join_token {
            cmd.args(["--join-token", t]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WARD_ADDR", &self.server_env["WARD_ADDR"])
            .env("WARD_CACERT", &self.server_env["WARD_CACERT"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ward agent")
    }

    fn spawn(&mut self, join_token: Option<&str>) {
        let _ = std::fs::remove_file(&self.socket);
        self.child = Some(self.run_once(join_token));
        let up = wait_for(Duration::from_secs(30), || self.socket.exists());
        assert!(
            up,
            "the agent never opened its socket; log:\n{}",
            self.log_text()
        );
    }

    /// Restarts with the stored identity (no join token).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn(None);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ward agent api fetch` as this test process: the first SPIFFE ID, or the error text.
    pub fn fetch(&self) -> Result<String, String> {
        let out = Command::new(ward_bin())
            .args([
                "agent",
                "api",
                "fetch",
                "--socket",
                self.socket.to_str().unwrap(),
                "--output",
                "json",
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(stderr(&out));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        Ok(v["svids"][0]["spiffe_id"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The uid of this test process.
pub fn my_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
pub mod proxy;
pub mod raw;

/// A fresh P-256 key (`DIR/NAME.key`) and a CSR for it with subjectAltName
/// `san` (such as `URI:spiffe://td/x`), as PEM.
pub fn openssl_csr(dir: &std::path::Path, name: &str, san: &str) -> String {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let (ok, out) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-subj",
        "/CN=test",
        "-addext",
        &format!("subjectAltName={san}"),
        "-out",
        csr.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    std::fs::read_to_string(csr).unwrap()
}

/// Asserts that `key_der` (PKCS#8) is the private key of the first
/// certificate in `cert_pem`: the public keys openssl derives agree.
pub fn assert_key_of_cert(dir: &Path, key_der: &[u8], cert_pem: &str) {
    let key = dir.join("opened.der");
    std::fs::write(&key, key_der).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, cert_pem.trim_end()).unwrap();
    let (ok, from_key) = openssl(&[
        "pkey",
        "-inform",
        "DER",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
    ]);
    assert!(ok, "{from_key}");
    let (ok, from_cert) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    assert!(ok, "{from_cert}");
    assert_eq!(
        from_key.trim(),
        from_cert.trim(),
        "the key is not the certificate's"
    );
}

/// True when `bytes` parse as a DER private key.
pub fn parses_as_der_key(dir: &Path, bytes: &[u8]) -> bool {
    let path = dir.join("stored.der");
    std::fs::write(&path, bytes).unwrap();
    openssl(&["pkey", "-inform", "DER", "-in", path.to_str().unwrap()]).0
}
