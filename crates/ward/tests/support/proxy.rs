//! Proxies, apps and SVIDs for the sidecar tests: real `ward proxy` and
//! `ward demo-app` processes, and a recording app that remembers every
//! request it was sent (to prove what never reached it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Server, wait_for, ward_bin};

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
            .env("WARD_LOG", "info,ward_proxy=debug")
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
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

/// `curl` over mTLS to a proxy's inbound listener: (status, body).
/// The server's SVID names a SPIFFE ID, not a host, so curl's host check is off (-k).
pub fn curl_mtls(svid: Option<(&str, &str)>, url: &str, extra: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some((cert, key)) = svid {
        cmd.args(["--cert", cert, "--key", key]);
    }
    cmd.args(extra).arg(url);
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
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

/// An HTTP/1.1 app that records every request head it receives and
/// answers 200 with a small JSON body.
pub struct RecordingApp {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl RecordingApp {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve_recorded(conn, s));
            }
        });
        Self { addr, seen }
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_recorded(conn: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
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
        if lower.contains("transfer-encoding: chunked") {
            // Read chunks until the zero-size one.
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
            }
        }
        seen.lock().unwrap().push(head);
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
