//! Proxies, apps and SVIDs for the sidecar tests: real `ward proxy` and
//! `ward demo-app` processes, and a recording app that remembers every
//! request head the moment it arrives (to prove what never reached it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Server, openssl, wait_for, ward_bin};

/// SVID files minted through the server's API.
pub struct Svid {
    pub dir: PathBuf,
    pub id: String,
}

impl Svid {
    pub fn mint(server: &Server, dir: &Path, id: &str, ttl: &str) -> Self {
        let out = server.ward(&[
            "x509",
            "mint",
            "--spiffe-id",
            id,
            "--out",
            &dir.display().to_string(),
            "--ttl",
            ttl,
        ]);
        assert!(
            out.status.success(),
            "mint {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_owned(),
            id: id.to_owned(),
        }
    }

    pub fn cert(&self) -> String {
        self.dir.join("svid.pem").display().to_string()
    }
    pub fn key(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }
    pub fn bundle(&self) -> String {
        self.dir.join("bundle.pem").display().to_string()
    }

    /// The lowercase hex SHA-256 of the leaf certificate's DER (what the
    /// proxy puts in `x-forwarded-client-cert` as `Hash=`).
    pub fn leaf_sha256(&self) -> String {
        let der = self.dir.join(format!("leaf-{}.der", std::process::id()));
        let der = der.display().to_string();
        let (ok, out) = openssl(&["x509", "-in", &self.cert(), "-outform", "DER", "-out", &der]);
        assert!(ok, "openssl x509: {out}");
        let (ok, out) = openssl(&["dgst", "-sha256", "-r", &der]);
        assert!(ok, "openssl dgst: {out}");
        let _ = std::fs::remove_file(&der);
        out.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// The leaf's notAfter, in Unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        let (ok, out) = openssl(&["x509", "-in", &self.cert(), "-noout", "-enddate"]);
        assert!(ok, "openssl x509 -enddate: {out}");
        let date = out.trim().trim_start_matches("notAfter=");
        let out = Command::new("date")
            .args(["-u", "-d", date, "+%s"])
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("notAfter {date:?}: {out:?}"))
    }

    /// Replaces these files in place (each renamed over the old one) with a
    /// freshly minted SVID for the same SPIFFE ID: a new key and serial.
    pub fn rotate(&self, server: &Server, scratch: &Path, ttl: &str) {
        let fresh = Svid::mint(server, scratch, &self.id, ttl);
        for f in ["key.pem", "svid.pem", "bundle.pem"] {
            let tmp = self.dir.join(format!("{f}.new"));
            std::fs::copy(fresh.dir.join(f), &tmp).unwrap();
            std::fs::rename(&tmp, self.dir.join(f)).unwrap();
        }
    }

    /// `[identity]` for a proxy using these files.
    pub fn identity_toml(&self) -> String {
        format!(
            "[identity]\nsvid = {:?}\nkey = {:?}\nbundle = {:?}\n",
            self.cert(),
            self.key(),
            self.bundle()
        )
    }
}

/// A running `ward proxy`.
pub struct Proxy {
    child: Child,
    pub dir: PathBuf,
    pub name: String,
    pub bound: serde_json::Value,
}

impl Proxy {
    pub fn start(dir: &Path, name: &str, config: &str) -> Self {
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let ready = dir.join(format!("{name}.ready"));
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(ward_bin())
            .args([
                "proxy",
                "--config",
                &config_path.display().to_string(),
                "--ready-file",
                &ready.display().to_string(),
            ])
            .env("WARD_LOG", "info,ward_proxy=debug,ward_dataplane=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ward proxy");
        let mut p = Self {
            child,
            dir: dir.to_owned(),
            name: name.to_owned(),
            bound: serde_json::Value::Null,
        };
        assert!(
            wait_for(Duration::from_secs(20), || ready.exists()),
            "proxy {name} did not start: {}",
            p.log_text()
        );
        p.bound = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
        p
    }

    pub fn inbound(&self, listener: &str) -> String {
        self.bound["inbound"][listener]
            .as_str()
            .unwrap()
            .to_string()
    }
    pub fn outbound(&self, listener: &str) -> String {
        self.bound["outbound"][listener]
            .as_str()
            .unwrap()
            .to_string()
    }
    pub fn admin(&self) -> String {
        self.bound["admin"].as_str().unwrap().to_string()
    }

    /// The log, without terminal colour codes.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(self.dir.join(format!("{}.log", self.name)))
            .unwrap_or_default();
        strip_ansi(&raw)
    }

    /// How much has been logged so far: a mark for [`Proxy::log_since`].
    pub fn log_mark(&self) -> usize {
        self.log_text().len()
    }

    /// What was logged after `mark`.
    pub fn log_since(&self, mark: usize) -> String {
        self.log_text().get(mark..).unwrap_or_default().to_string()
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits (up to 5 s) for a line logged after `mark` that contains
    /// `needle` and, case-insensitively, one of `reasons`; returns it.
    pub fn wait_log_line(&self, mark: usize, needle: &str, reasons: &[&str]) -> Option<String> {
        let mut found = None;
        wait_for(Duration::from_secs(5), || {
            found = self.log_since(mark).lines().find_map(|l| {
                let lower = l.to_ascii_lowercase();
                (l.contains(needle)
                    && reasons
                        .iter()
                        .any(|r| lower.contains(&r.to_ascii_lowercase())))
                .then(|| l.to_string())
            });
            found.is_some()
        });
        found
    }

    /// The PID of the proxy process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(&self.admin(), path)
    }

    /// Waits until /readyz answers 200 (identity and policy loaded).
    pub fn wait_ready(&self) {
        assert!(
            wait_for(Duration::from_secs(20), || self.admin_get("/readyz").0
                == 200),
            "proxy {} not ready: {:?}\n{}",
            self.name,
            self.admin_get("/readyz"),
            self.log_text()
        );
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_for(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A plain HTTP/1.1 GET with `Connection: close`: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends raw request bytes on a plain connection: (status, body).
pub fn http_request(addr: &str, raw: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = s.write_all(raw.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// What curl got: exit code (35: TLS handshake failed, 56: the peer reset
/// or alerted while receiving), HTTP status (0: none), body, HTTP version,
/// stderr.
#[derive(Debug)]
pub struct CurlOut {
    pub exit: i32,
    pub code: u16,
    pub version: String,
    pub body: String,
    pub stderr: String,
}

impl CurlOut {
    /// A short description for failure messages: status, exit code, body
    /// and the interesting lines of curl's verbose output.
    pub fn brief(&self) -> String {
        let body: String = self.body.chars().take(200).collect();
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("h2h3")
                    || l.contains("alert")
                    || l.contains("error")
                    || l.contains("ssl")
                    || l.starts_with("< http")
                    || l.starts_with("curl:")
            })
            .collect();
        format!(
            "status {} (HTTP/{}), curl exit {}, body {body:?}, curl: {}",
            self.code,
            self.version,
            self.exit,
            super::raw::tail(&lines.join("\n"), 12)
        )
    }
}

/// `curl` over mTLS with an optional client certificate (cert, key); `-k`
/// because an SVID names a SPIFFE ID, not a host.
pub fn curl_run(svid: Option<(&str, &str)>, url: &str, extra: &[&str]) -> CurlOut {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sSk",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{http_version}",
    ]);
    if let Some((cert, key)) = svid {
        cmd.args(["--cert", cert, "--key", key]);
    }
    cmd.args(extra).arg(url);
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tailer) = text.rsplit_once('\n').unwrap_or(("", "000 0"));
    let mut it = tailer.split_whitespace();
    let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let version = it.next().unwrap_or("0").to_string();
    CurlOut {
        exit: out.status.code().unwrap_or(-1),
        code,
        version,
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// [`curl_run`], as (status, body).
pub fn curl_mtls(svid: Option<(&str, &str)>, url: &str, extra: &[&str]) -> (u16, String) {
    let out = curl_run(svid, url, extra);
    (out.code, out.body)
}

/// What a raw exchange over TLS gave: everything the peer sent, and
/// whether it closed the connection before the deadline.
#[derive(Debug)]
pub struct RawRun {
    pub output: String,
    pub closed: bool,
}

/// Sends `raw` over mTLS (`openssl s_client`, TLS 1.3, no ALPN: HTTP/1.1)
/// and reads what comes back until the proxy closes the connection or
/// `timeout` passes (then the client is killed and `closed` is false).
pub fn tls_raw(addr: &str, cert: &str, key: &str, raw: &[u8], timeout: Duration) -> RawRun {
    // -quiet: no session chatter on stdout, and keep reading after stdin ends.
    let mut child = Command::new("openssl")
        .args([
            "s_client", "-quiet", "-tls1_3", "-connect", addr, "-cert", cert, "-key", key,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    let _ = tx.send(());
                }
            }
        }
        out
    });
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(raw);
    // stdin stays open until the proxy closes: s_client must not close first.
    let start = Instant::now();
    let mut closed = false;
    while start.elapsed() < timeout {
        if reader.is_finished() {
            closed = true;
            break;
        }
        let _ = rx.recv_timeout(Duration::from_millis(50));
    }
    if !closed {
        let _ = child.kill();
    }
    drop(stdin);
    let _ = child.wait();
    let out = reader.join().unwrap_or_default();
    RawRun {
        output: String::from_utf8_lossy(&out).to_string(),
        closed,
    }
}

/// A running `ward demo-app`.
pub struct DemoApp {
    child: Child,
    pub addr: String,
}

impl DemoApp {
    pub fn start(dir: &Path, name: &str, calls: &[(&str, &str)]) -> Self {
        let ready = dir.join(format!("{name}-app.ready"));
        let mut args = vec![
            "demo-app".to_string(),
            "--name".into(),
            name.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        for (n, url) in calls {
            args.push("--call".into());
            args.push(format!("{n}={url}"));
        }
        args.push("--ready-file".into());
        args.push(ready.display().to_string());
        let child = Command::new(ward_bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_for(Duration::from_secs(10), || ready.exists()
            && std::fs::metadata(&ready)
                .map(|m| m.len() > 0)
                .unwrap_or(false)));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
        Self {
            child,
            addr: v["listen"].as_str().unwrap().to_string(),
        }
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Complete requests (head, body) a recording app received.
pub type Completed = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An HTTP/1.1 app that records every request head the moment the head has
/// arrived (before any body is read), and separately every complete request
/// with its body; it answers 200 with a small JSON body.
pub struct RecordingApp {
    pub addr: SocketAddr,
    /// Request heads, recorded on arrival.
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Complete requests (head, body), recorded once the body was read.
    pub complete: Completed,
}

impl RecordingApp {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let complete = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (seen.clone(), complete.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, c) = (s.clone(), c.clone());
                std::thread::spawn(move || serve_recorded(conn, s, c));
            }
        });
        Self {
            addr,
            seen,
            complete,
        }
    }

    /// Every request head that arrived, complete or not.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// The request line of every head received so far (for failure messages).
    pub fn request_lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|h| h.lines().next().unwrap_or("").to_string())
            .collect()
    }

    /// Whether any request head received so far contains `marker`.
    pub fn saw(&self, marker: &str) -> bool {
        self.requests().iter().any(|h| h.contains(marker))
    }

    /// The requests whose body was read completely.
    pub fn complete(&self) -> Vec<(String, Vec<u8>)> {
        self.complete.lock().unwrap().clone()
    }
}

fn serve_recorded(conn: TcpStream, seen: Arc<Mutex<Vec<String>>>, complete: Completed) {
    // Bytes, not text: a head with raw non-ASCII bytes is still recorded.
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    // A partial head is still something the app was sent.
                    head.extend_from_slice(&line);
                    if !head.is_empty() {
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).to_string());
                    }
                    return;
                }
                Ok(_) => {}
            }
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            head.extend_from_slice(&line);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        seen.lock().unwrap().push(head.clone());
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if lower
            .lines()
            .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"))
        {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let size = size.trim().split(';').next().unwrap_or("");
                let Ok(n) = usize::from_str_radix(size, 16) else {
                    return;
                };
                if n == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        let mut t = String::new();
                        if reader.read_line(&mut t).unwrap_or(0) == 0 {
                            return;
                        }
                        if t == "\r\n" || t == "\n" {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        complete.lock().unwrap().push((head, body));
        let body = b"{\"app\":\"recording\"}";
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if writer
            .write_all(resp.as_bytes())
            .and_then(|_| writer.write_all(body))
            .is_err()
        {
            return;
        }
    }
}
