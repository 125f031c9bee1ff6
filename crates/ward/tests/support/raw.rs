//! Raw-socket tools for the data-plane tests: a CA and leaves made with
//! openssl at test time (never committed), HTTP/1.1 and HTTP/2 bytes sent
//! over mTLS by small python programs (python's `ssl`), long-lived
//! connections driven line by line, an app that records each request head
//! the moment it arrives, and a TCP echo app.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::openssl;

/// The python interpreter (the system one has `ssl` with ALPN and TLS 1.3).
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `YYMMDDHHMMSSZ` (UTC) for `openssl ca -startdate/-enddate`.
fn asn1_time(epoch: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{epoch}"), "+%y%m%d%H%M%SZ"])
        .output()
        .expect("date");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A certificate authority made with openssl in a test directory.
pub struct Ca {
    pub name: String,
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A leaf certificate (an X.509 SVID when `id` is a SPIFFE ID) and its key.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub id: String,
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        let (ok, text) = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}-ca"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        assert!(ok, "openssl CA {name}: {text}");
        Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            cert,
            key,
        }
    }

    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.cert).unwrap()
    }

    fn csr(&self, leaf: &str) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{}-{leaf}.key", self.name));
        let csr = self.dir.join(format!("{}-{leaf}.csr", self.name));
        let (ok, text) = openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
            "-subj",
            &format!("/CN={leaf}"),
        ]);
        assert!(ok, "openssl csr {leaf}: {text}");
        (key, csr)
    }

    fn ext(uri: &str) -> String {
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:{uri}\n"
        )
    }

    /// A leaf valid for a day, with one URI SAN.
    pub fn leaf(&self, leaf: &str, uri: &str) -> Leaf {
        self.signed_leaf(leaf, uri, &Self::ext(uri))
    }

    /// A server certificate valid for a day with the given subjectAltName
    /// (`IP:127.0.0.1,DNS:localhost`), for HTTPS listeners.
    pub fn server_leaf(&self, leaf: &str, san: &str) -> Leaf {
        let ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
        );
        self.signed_leaf(leaf, san, &ext)
    }

    /// A new key and a day-long certificate for it with extensions `ext`.
    fn signed_leaf(&self, leaf: &str, id: &str, ext_text: &str) -> Leaf {
        let (key, csr) = self.csr(leaf);
        let ext = self.dir.join(format!("{}-{leaf}.ext", self.name));
        std::fs::write(&ext, ext_text).unwrap();
        let cert = self.dir.join(format!("{}-{leaf}.pem", self.name));
        let (ok, text) = openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.cert.to_str().unwrap(),
            "-CAkey",
            self.key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        assert!(ok, "openssl leaf {leaf}: {text}");
        Leaf {
            id: id.to_owned(),
            cert: cert.display().to_string(),
            key: key.display().to_string(),
        }
    }

    /// A leaf whose notAfter is `secs` seconds from now (`openssl ca`
    /// takes exact dates, `openssl x509` of OpenSSL 3.0 only days).
    /// Returns the leaf and its notAfter (Unix seconds).
    pub fn leaf_expiring_in(&self, leaf: &str, uri: &str, secs: u64) -> (Leaf, u64) {
        let (key, csr) = self.csr(leaf);
        let (cert, not_after) = self.sign_until(leaf, &csr, &Self::ext(uri), secs);
        (
            Leaf {
                id: uri.to_owned(),
                cert: cert.display().to_string(),
                key: key.display().to_string(),
            },
            not_after,
        )
    }

    /// An intermediate CA under this one whose notAfter is `secs` seconds
    /// from now; returns it and its notAfter. Its leaves' chain files are
    /// made with [`Self::chain_leaf`].
    pub fn intermediate_expiring_in(&self, name: &str, secs: u64) -> (Ca, u64) {
        let (key, csr) = self.csr(name);
        let ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
        let (cert, not_after) = self.sign_until(name, &csr, ext, secs);
        (
            Ca {
                name: format!("{}-{name}", self.name),
                dir: self.dir.clone(),
                cert,
                key,
            },
            not_after,
        )
    }

    /// A leaf of this (intermediate) CA whose certificate file holds the
    /// chain: the leaf, then this CA.
    pub fn chain_leaf(&self, leaf: &str, uri: &str) -> Leaf {
        let mut l = self.leaf(leaf, uri);
        let chain = self.dir.join(format!("{}-{leaf}-chain.pem", self.name));
        let text = std::fs::read_to_string(&l.cert).unwrap() + &self.cert_pem();
        std::fs::write(&chain, text).unwrap();
        l.cert = chain.display().to_string();
        l
    }

    /// Signs `csr` with extensions `ext`, valid until `secs` from now.
    fn sign_until(&self, name: &str, csr: &Path, ext: &str, secs: u64) -> (PathBuf, u64) {
        let db = self.dir.join(format!("{}-{name}-db", self.name));
        std::fs::create_dir_all(db.join("new")).unwrap();
        std::fs::write(db.join("index.txt"), "").unwrap();
        std::fs::write(
            db.join("serial"),
            // openssl reads the serial as hex bytes: an even number of digits.
            format!("{:08X}\n", 0x1000 + now_epoch() % 0xffff),
        )
        .unwrap();
        let cnf = db.join("ca.cnf");
        std::fs::write(
            &cnf,
            format!(
                "[ca]\ndefault_ca = cad\n[cad]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}/new\n\
                 serial = {db}/serial\ndefault_md = sha256\npolicy = pol\nunique_subject = no\n\
                 copy_extensions = none\n[pol]\ncommonName = supplied\n[ext]\n{ext}",
                db = db.display(),
            ),
        )
        .unwrap();
        let not_before = now_epoch() - 120;
        let not_after = now_epoch() + secs;
        let cert = self.dir.join(format!("{}-{name}.pem", self.name));
        let (ok, text) = openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            cnf.to_str().unwrap(),
            "-cert",
            self.cert.to_str().unwrap(),
            "-keyfile",
            self.key.to_str().unwrap(),
            "-in",
            csr.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-extensions",
            "ext",
            "-startdate",
            &asn1_time(not_before),
            "-enddate",
            &asn1_time(not_after),
        ]);
        assert!(ok, "openssl ca {name}: {text}");
        (cert, not_after)
    }
}

/// Replaces `path` atomically (write aside, rename over).
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Removes terminal color codes (the proxy's log may carry them).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The last `n` lines of a log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The sum of the samples of `name` whose labels include all of `labels`.
/// `None` when no sample matched.
pub fn metric_sum(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.rsplit_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        if labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
            && let Ok(v) = value.trim().split(' ').next().unwrap_or("").parse::<f64>()
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

pub use super::proxy::CurlOut;

/// curl with an optional client certificate (see [`super::proxy::curl_run`]).
pub fn curl(leaf: Option<&Leaf>, url: &str, extra: &[&str]) -> CurlOut {
    super::proxy::curl_run(leaf.map(|l| (l.cert.as_str(), l.key.as_str())), url, extra)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const RAW_HTTP: &str = r#"
import socket, ssl, sys, json
addr, cert, key = sys.argv[1:4]
request = sys.stdin.buffer.read()
host, port = addr.rsplit(":", 1)
out = {"status": 0, "head": "", "error": "", "closed": False}
try:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10))
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            out["closed"] = True
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    out["head"] = head
    parts = head.split("\r\n", 1)[0].split()
    if len(parts) > 1 and parts[0].startswith("HTTP/"):
        out["status"] = int(parts[1])
except Exception as e:
    out["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"#;

/// The first answer to raw request bytes sent on a new mTLS connection.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// 0 when no HTTP answer came (refused handshake, closed, timeout).
    pub status: u16,
    /// The response head (status line and headers).
    pub head: String,
    pub error: String,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends `request` on a new mTLS connection to `addr` and reads the first answer's head.
pub fn raw_http(addr: &str, leaf: &Leaf, request: &[u8]) -> RawAnswer {
    let mut child = Command::new(python())
        .args(["-c", RAW_HTTP, addr, &leaf.cert, &leaf.key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    // The request goes on stdin: it can be larger than an argument may be.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request)
        .expect("write the request");
    let out = child.wait_with_output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "raw http client: {e}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    RawAnswer {
        status: v["status"].as_u64().unwrap_or(0) as u16,
        head: v["head"].as_str().unwrap_or("").to_string(),
        error: v["error"].as_str().unwrap_or("").to_string(),
    }
}

const H2: &str = r#"
import socket, ssl, sys, struct, time, select, json
addr, cert, key, mode = sys.argv[1:5]
extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
host, port = addr.rsplit(":", 1)
out = {"mode": mode, "alpn": None, "server_settings": False, "closed": None, "goaway_code": None,
       "send_error": None, "sent": 0, "total": 0, "secs": 0.0, "frames": {}, "status": None,
       "status_raw": None, "rst_code": None, "error": ""}
HUFF_DIGITS = {"00000": "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4",
               "011011": "5", "011100": "6", "011101": "7", "011110": "8", "011111": "9"}
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
def frame(t, fl, sid, p):
    return struct.pack(">I", len(p))[1:] + bytes([t, fl]) + struct.pack(">I", sid) + p
def lit(name, value):
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v
def lit_idx(idx, value):
    v = value.encode()
    assert idx < 15 and len(v) < 127
    return bytes([idx, len(v)]) + v
def decode_status(block):
    i = 0
    while i < len(block) and 0x20 <= block[i] < 0x40:
        i += 1
    if i >= len(block):
        return None
    b = block[i]
    if b & 0x80:
        return STATIC_STATUS.get(b & 0x7f)
    if (b & 0xc0) == 0x40 and (b & 0x3f) == 8 or (b & 0xf0) in (0x00, 0x10) and (b & 0x0f) == 8:
        n = block[i + 1] & 0x7f
        raw = block[i + 2:i + 2 + n]
        if block[i + 1] & 0x80:
            bits = "".join(format(x, "08b") for x in raw)
            text, cur = "", ""
            for bit in bits:
                cur += bit
                if cur in HUFF_DIGITS:
                    text += HUFF_DIGITS[cur]
                    cur = ""
            raw = text.encode()
        try:
            return int(raw.decode())
        except Exception:
            return None
    return None
buf = b""
s = None
def handle(t, fl, sid, p):
    out["frames"][str(t)] = out["frames"].get(str(t), 0) + 1
    if t == 4 and not (fl & 1):
        out["server_settings"] = True
        send(frame(4, 1, 0, b""))
    elif t == 7 and len(p) >= 8:
        out["goaway_code"] = struct.unpack(">I", p[4:8])[0]
        out["closed"] = out["closed"] or "goaway"
    elif t == 3 and len(p) >= 4:
        out["rst_code"] = struct.unpack(">I", p[:4])[0]
    elif t == 1 and out["status_raw"] is None:
        if fl & 0x8:
            pad = p[0]
            p = p[1:len(p) - pad]
        if fl & 0x20:
            p = p[5:]
        out["status_raw"] = p[:8].hex()
        out["status"] = decode_status(p)
def pump(timeout, until=lambda: False):
    global buf
    end = time.time() + timeout
    while out["closed"] is None and not until():
        left = end - time.time()
        if s.pending() == 0:
            r, _, _ = select.select([s], [], [], max(0.0, left))
            if not r:
                return
        try:
            s.settimeout(5)
            d = s.recv(65536)
        except ssl.SSLWantReadError:
            continue
        except Exception as e:
            out["closed"] = out["closed"] or ("recv:" + type(e).__name__)
            return
        if not d:
            out["closed"] = out["closed"] or "eof"
            return
        buf += d
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            t, fl = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7fffffff
            p = buf[9:9 + n]
            buf = buf[9 + n:]
            handle(t, fl, sid, p)
        if time.time() >= end:
            return
def send(b):
    if out["send_error"]:
        return False
    try:
        s.settimeout(5)
        s.sendall(b)
        return True
    except (socket.timeout, TimeoutError):
        out["send_error"] = "stalled"
        return False
    except Exception as e:
        out["send_error"] = type(e).__name__
        out["closed"] = out["closed"] or ("send:" + type(e).__name__)
        return False
t0 = time.time()
try:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10))
    out["alpn"] = s.selected_alpn_protocol()
    send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))
    pump(5, until=lambda: out["server_settings"])
    if mode == "continuation":
        hb = b"\x82\x87" + lit_idx(4, "/flood") + lit_idx(1, "orders")
        send(frame(1, 0x1, 1, hb))
        piece = b"".join(lit("x-flood-%02d" % i, "v" * 100) for i in range(8))
        total = extra.get("frames", 10000)
        out["total"] = total
        for i in range(total):
            if out["closed"] or not send(frame(9, 0, 1, piece)):
                break
            out["sent"] = i + 1
            if i % 16 == 0:
                pump(0)
        pump(15)
    elif mode == "rapid-reset":
        hb = b"\x82\x87" + lit_idx(4, "/reset") + lit_idx(1, "orders")
        total = extra.get("streams", 1000)
        out["total"] = total
        batch = b""
        for i in range(total):
            sid = 2 * i + 1
            batch += frame(1, 0x5, sid, hb) + frame(3, 0, sid, struct.pack(">I", 8))
            if (i + 1) % 10 == 0 or i + 1 == total:
                if out["closed"] or not send(batch):
                    break
                batch = b""
                out["sent"] = i + 1
                pump(0)
        pump(15)
    elif mode == "request":
        hb = b"".join(lit(n, v) for n, v in extra["headers"])
        send(frame(1, 0x5, 1, hb))
        pump(10, until=lambda: out["status"] is not None or out["status_raw"] is not None or out["rst_code"] is not None)
except Exception as e:
    out["error"] = type(e).__name__ + ": " + str(e)
out["secs"] = time.time() - t0
print(json.dumps(out))
"#;

/// Runs the raw HTTP/2 client: `mode` is "continuation", "rapid-reset" or
/// "request" (`extra` = {"headers": [[name, value], ...]}). Returns its JSON report.
pub fn h2(addr: &str, leaf: &Leaf, mode: &str, extra: serde_json::Value) -> serde_json::Value {
    let out = Command::new(python())
        .args([
            "-c",
            H2,
            addr,
            &leaf.cert,
            &leaf.key,
            mode,
            &extra.to_string(),
        ])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "h2 client: {e}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

const HOLDER: &str = r#"
import socket, ssl, sys, time
addr, cert, key = sys.argv[1:4]
host, port = addr.rsplit(":", 1)
def say(*a):
    print(*a, flush=True)
try:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10))
    say("CONNECTED")
except Exception as e:
    say("FAILED", type(e).__name__, str(e).replace("\n", " "))
    sys.exit(0)
buf = b""
def more():
    global buf
    d = s.recv(65536)
    if not d:
        raise EOFError("closed by the peer")
    buf += d
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "REQ":
        try:
            s.settimeout(10)
            s.sendall(("GET %s HTTP/1.1\r\nHost: orders\r\n\r\n" % cmd[1]).encode())
            while b"\r\n\r\n" not in buf:
                more()
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            n, chunked = 0, False
            for h in lines[1:]:
                k, _, v = h.partition(":")
                if k.strip().lower() == "content-length":
                    n = int(v.strip())
                if k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
                    chunked = True
            if chunked:
                while b"0\r\n\r\n" not in buf:
                    more()
                buf = buf.split(b"0\r\n\r\n", 1)[1]
            else:
                while len(buf) < n:
                    more()
                buf = buf[n:]
            say("STATUS", status)
        except Exception as e:
            say("STATUS", 0, type(e).__name__, str(e).replace("\n", " "))
    elif cmd[0] == "ECHO":
        data = cmd[1].encode()
        try:
            s.settimeout(10)
            s.sendall(data)
            got = b""
            while len(got) < len(data):
                d = s.recv(65536)
                if not d:
                    raise EOFError("closed by the peer")
                got += d
            say("ECHO", got.decode("latin-1"))
        except Exception as e:
            say("ECHOFAIL", type(e).__name__, str(e).replace("\n", " "))
    elif cmd[0] == "WAIT":
        deadline = time.time() + float(cmd[1])
        how = None
        while how is None and time.time() < deadline:
            try:
                s.settimeout(max(0.05, deadline - time.time()))
                d = s.recv(65536)
                if not d:
                    how = "eof"
            except (socket.timeout, TimeoutError):
                pass
            except Exception as e:
                how = type(e).__name__
        if how:
            say("CLOSED", repr(time.time()), how)
        else:
            say("OPEN")
    elif cmd[0] == "QUIT":
        break
"#;

/// A long-lived mTLS connection held by a python process, driven by commands:
/// HTTP/1.1 keep-alive requests, echo round trips (TCP mode), waiting for
/// the proxy to close it.
pub struct Holder {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    pub connected: bool,
    pub first_line: String,
}

impl Holder {
    pub fn open(addr: &str, leaf: &Leaf) -> Self {
        let mut child = Command::new(python())
            .args(["-u", "-c", HOLDER, addr, &leaf.cert, &leaf.key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut h = Self {
            child,
            stdin,
            lines,
            connected: false,
            first_line: String::new(),
        };
        h.first_line = h.line(Duration::from_secs(15)).unwrap_or_default();
        h.connected = h.first_line == "CONNECTED";
        h
    }

    fn line(&self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    fn send(&mut self, cmd: &str) {
        let _ = writeln!(self.stdin, "{cmd}");
        let _ = self.stdin.flush();
    }

    /// A GET on this connection: the status, or 0 with the reason.
    pub fn request(&mut self, path: &str) -> (u16, String) {
        self.send(&format!("REQ {path}"));
        let line = self.line(Duration::from_secs(15)).unwrap_or_default();
        let code = line
            .strip_prefix("STATUS ")
            .and_then(|r| r.split(' ').next())
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, line)
    }

    /// Sends `data` (no spaces) and reads it back: true when echoed.
    pub fn echo(&mut self, data: &str) -> (bool, String) {
        self.send(&format!("ECHO {data}"));
        let line = self.line(Duration::from_secs(15)).unwrap_or_default();
        (line == format!("ECHO {data}"), line)
    }

    /// Waits up to `secs` for the peer to close: (Unix time of the close, how).
    pub fn wait_closed(&mut self, secs: f64) -> Option<(f64, String)> {
        self.send(&format!("WAIT {secs}"));
        let line = self.line(Duration::from_secs_f64(secs + 10.0))?;
        let rest = line.strip_prefix("CLOSED ")?;
        let (t, how) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((t.parse().ok()?, how.to_string()))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Now, in Unix seconds (fractional).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A TCP echo app; counts the connections it accepted.
pub struct EchoApp {
    pub addr: SocketAddr,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl EchoApp {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut r = conn.try_clone().unwrap();
                    let mut w = conn;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        Self { addr, accepted }
    }
}
