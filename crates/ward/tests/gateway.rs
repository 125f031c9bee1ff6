//! The edge gateway as a client meets it: real `ward gateway` processes in
//! front of a recording app, tokens from the real token service (and
//! `ward token mint` drills signed by its real key), every forgery from the
//! issue's list refused, smuggling over raw sockets, path tricks, rate
//! limits keyed on the real address, and two gateways sharing one limit in
//! Redis.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::proxy::unix_now;
use support::proxy::{RecordingApp, curl_run, http_get, tls_raw};
use support::raw::{Ca, Leaf};
use support::*;

const AUD: &str = "https://api.edge.test";

struct Gateway {
    child: Child,
    dir: PathBuf,
    name: String,
    listen: String,
    admin: String,
}

impl Gateway {
    fn start(dir: &Path, name: &str, config: &str) -> Self {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let ready = dir.join(format!("{name}.ready"));
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(ward_bin())
            .args([
                "gateway",
                "--config",
                &path.display().to_string(),
                "--ready-file",
                &ready.display().to_string(),
            ])
            .env("WARD_LOG", "info,ward_gateway=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ward gateway");
        let mut g = Self {
            child,
            dir: dir.to_owned(),
            name: name.to_owned(),
            listen: String::new(),
            admin: String::new(),
        };
        assert!(
            wait_for(Duration::from_secs(20), || ready.exists()),
            "gateway {name} did not start: {}",
            g.log()
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
        g.listen = v["listen"].as_str().unwrap().to_owned();
        g.admin = v["admin"].as_str().unwrap_or_default().to_owned();
        assert!(
            wait_for(Duration::from_secs(20), || http_get(&g.admin, "/readyz").0
                == 200),
            "gateway {name} not ready: {:?}\n{}",
            http_get(&g.admin, "/readyz"),
            g.log()
        );
        g
    }

    fn log(&self) -> String {
        support::raw::strip_ansi(
            &std::fs::read_to_string(self.dir.join(format!("{}.log", self.name)))
                .unwrap_or_default(),
        )
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.listen)
    }

    fn metrics(&self) -> String {
        http_get(&self.admin, "/metrics").1
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Edge {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: Server,
    app: RecordingApp,
    cert: Leaf,
    issuer: String,
    secret: String,
    api_key: String,
    gateway: Gateway,
}

fn create_client(s: &Server, name: &str, scopes: &[&str], audience: &str) -> String {
    let mut args = vec![
        "client",
        "create",
        name,
        "--audience",
        audience,
        "--output",
        "json",
    ];
    for sc in scopes {
        args.extend(["--scope", sc]);
    }
    let out = s.ward(&args);
    assert!(out.status.success(), "client create: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["client_secret"].as_str().unwrap().to_owned()
}

fn sha256_hex(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k");
    std::fs::write(&f, text).unwrap();
    let (ok, out) = openssl(&["dgst", "-sha256", "-r", &f.display().to_string()]);
    assert!(ok, "{out}");
    out.split_whitespace().next().unwrap().to_owned()
}

fn gateway_config(e: &EdgeParts, extra_routes: &str, redis: Option<(&str, &str)>) -> String {
    let redis = redis.map_or(String::new(), |(url, prefix)| {
        format!("[redis]\nurl = \"{url}\"\nprefix = \"{prefix}\"\ntimeout = \"200ms\"\n")
    });
    format!(
        r#"listen = "127.0.0.1:0"
[tls]
cert = "{cert}"
key = "{key}"
[admin]
listen = "127.0.0.1:0"
[limits]
max_headers = 40
max_uri_bytes = 2048
{redis}
[[issuer]]
name = "ward"
issuer = "{issuer}"
ca = "{ca}"
algorithms = ["ES256", "EdDSA"]
audiences = ["{AUD}"]
leeway = "5s"
revoked_poll = "1s"

[[api_key]]
name = "ci"
sha256 = "{key_hash}"
scopes = ["deploy"]

[[route]]
name = "public"
path_prefix = "/public"
auth = "public"
upstream = "{app}"

[[route]]
name = "orders"
path_prefix = "/orders"
methods = ["GET", "POST"]
auth = "jwt"
upstream = "{app}"
policy = '''
@id("orders-readers")
permit(principal, action, resource) when {{ principal.scopes.contains("orders:read") }};
'''

[[route]]
name = "admin"
path_prefix = "/admin"
auth = "jwt"
upstream = "{app}"
policy = '''
@id("admins")
permit(principal, action, resource) when {{ principal.scopes.contains("orders:admin") }};
'''

[[route]]
name = "deploy"
path_prefix = "/deploy"
auth = "api_key"
upstream = "{app}"
{extra_routes}
"#,
        cert = e.cert.cert,
        key = e.cert.key,
        issuer = e.issuer,
        ca = e.ca,
        key_hash = sha256_hex(&e.api_key),
        app = e.app,
    )
}

struct EdgeParts {
    cert: Leaf,
    issuer: String,
    ca: String,
    api_key: String,
    app: std::net::SocketAddr,
}

fn setup(extra_routes: &str) -> Edge {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let server = Server::dev(&dir, "edge.test");
    let secret = create_client(&server, "shop", &["orders:read"], AUD);
    let (code, body) = server.curl("GET", "/.well-known/openid-configuration", None, None);
    assert_eq!(code, 200, "{body}");
    let issuer = serde_json::from_str::<serde_json::Value>(&body).unwrap()["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca = Ca::new(&dir, "gw");
    let cert = ca.server_leaf("gateway", "IP:127.0.0.1,DNS:localhost");
    let app = RecordingApp::start();
    let api_key = "wk_test_0123456789abcdef0123456789abcdef".to_owned();
    let parts = EdgeParts {
        cert: cert.clone(),
        issuer: issuer.clone(),
        ca: server.cacert().to_owned(),
        api_key: api_key.clone(),
        app: app.addr,
    };
    let gateway = Gateway::start(&dir, "gw", &gateway_config(&parts, extra_routes, None));
    Edge {
        _tmp: tmp,
        dir,
        server,
        app,
        cert,
        issuer,
        secret,
        api_key,
        gateway,
    }
}

impl Edge {
    fn token(&self, client: &str, secret: &str) -> String {
        let out = Command::new("curl")
            .args([
                "-s",
                "--cacert",
                self.server.cacert(),
                "-u",
                &format!("{client}:{secret}"),
                "-d",
                "grant_type=client_credentials",
                &format!("{}/oauth/token", self.issuer),
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("token: {}", String::from_utf8_lossy(&out.stdout)));
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {v}"))
            .to_owned()
    }

    fn mint(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "mint", "--client", "shop"];
        all.extend_from_slice(args);
        let out = self.server.ward(&all);
        assert!(out.status.success(), "token mint: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// GET through the gateway (the gateway's CA is trusted, not skipped).
    fn get(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let ca = PathBuf::from(&self.cert.cert)
            .parent()
            .unwrap()
            .join("gw-ca.pem");
        let mut args = vec!["--cacert", ca.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = curl_run(None, &self.gateway.url(path), &args);
        (out.code, out.body)
    }

    fn bearer(&self, path: &str, token: &str) -> u16 {
        self.get(path, &["-H", &format!("Authorization: Bearer {token}")])
            .0
    }
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, by hand-free means: python is on every machine.
    let out = Command::new(support::raw::python())
        .args([
            "-c",
            "import base64,sys;print(base64.urlsafe_b64encode(bytes.fromhex(sys.argv[1])).rstrip(b'=').decode())",
            &bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn with_header(token: &str, header: serde_json::Value) -> String {
    let (_, rest) = token.split_once('.').unwrap();
    format!("{}.{rest}", b64(header.to_string().as_bytes()))
}

#[test]
fn real_tokens_pass_and_every_forgery_is_refused() {
    let e = setup("");
    let tok = e.token("shop", &e.secret);
    assert_eq!(e.bearer("/orders/1", &tok), 200, "{}", e.gateway.log());
    // The app saw the request, without the credential.
    let seen = e.app.requests();
    let last = seen.last().expect("the app saw the request");
    assert!(last.starts_with("GET /orders/1 HTTP/1.1"), "{last}");
    assert!(
        !last.to_ascii_lowercase().contains("authorization"),
        "the token travelled upstream: {last}"
    );
    let before = e.app.requests().len();

    let (h, p, _) = {
        let mut it = tok.split('.');
        (
            it.next().unwrap().to_owned(),
            it.next().unwrap().to_owned(),
            it.next().unwrap().to_owned(),
        )
    };
    let header: serde_json::Value = {
        let out = Command::new(support::raw::python())
            .args([
                "-c",
                "import base64,sys;s=sys.argv[1];print(base64.urlsafe_b64decode(s+'='*(-len(s)%4)).decode())",
                &h,
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let kid = header["kid"].as_str().unwrap().to_owned();
    let mut forged: Vec<(&str, String)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        forged.push((
            "alg none",
            format!(
                "{}.{p}.",
                b64(serde_json::json!({"alg": alg, "typ": "JWT"})
                    .to_string()
                    .as_bytes())
            ),
        ));
    }
    // HS256/384/512 keyed with the issuer's public key (key confusion).
    let jwks = e.server.curl("GET", "/oauth/jwks", None, None).1;
    for (alg, hash) in [
        ("HS256", "sha256"),
        ("HS384", "sha384"),
        ("HS512", "sha512"),
    ] {
        let head = b64(serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes());
        let out = Command::new(support::raw::python())
            .args([
                "-c",
                "import base64,hmac,hashlib,sys;m=(sys.argv[1]+'.'+sys.argv[2]).encode();k=sys.argv[3].encode();print(base64.urlsafe_b64encode(hmac.new(k,m,getattr(hashlib,sys.argv[4])).digest()).rstrip(b'=').decode())",
                &head,
                &p,
                &jwks,
                hash,
            ])
            .output()
            .unwrap();
        let sig = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        forged.push(("hmac with the public key", format!("{head}.{p}.{sig}")));
    }
    let sig = tok.rsplit('.').next().unwrap().to_owned();
    forged.push((
        "unknown kid",
        with_header(
            &tok,
            serde_json::json!({"alg": "ES256", "kid": "no-such-key"}),
        ),
    ));
    forged.push((
        "kid as a path",
        with_header(
            &tok,
            serde_json::json!({"alg": "ES256", "kid": "../../../../dev/null"}),
        ),
    ));
    for field in ["jku", "x5u"] {
        forged.push((
            field,
            with_header(
                &tok,
                serde_json::json!({"alg": "ES256", "kid": kid, field: "https://evil.example/keys"}),
            ),
        ));
    }
    forged.push((
        "x5c",
        with_header(
            &tok,
            serde_json::json!({"alg": "ES256", "kid": kid, "x5c": ["MIIB"]}),
        ),
    ));
    forged.push(("embedded jwk", with_header(&tok, serde_json::json!({"alg": "ES256", "kid": kid, "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}))));
    // CVE-2022-21449: r = s = 0.
    forged.push(("zero signature", format!("{h}.{p}.{}", b64(&[0u8; 64]))));
    let tampered_sig = format!(
        "{h}.{p}.{}{}",
        if sig.starts_with('A') { "B" } else { "A" },
        &sig[1..]
    );
    forged.push(("tampered signature", tampered_sig));
    // A payload changed under the original signature.
    let payload = {
        let out = Command::new(support::raw::python())
            .args([
                "-c",
                "import base64,json,sys;s=sys.argv[1];c=json.loads(base64.urlsafe_b64decode(s+'='*(-len(s)%4)));c['scope']='orders:read orders:admin';print(base64.urlsafe_b64encode(json.dumps(c).encode()).rstrip(b'=').decode())",
                &p,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    forged.push(("tampered payload", format!("{h}.{payload}.{sig}")));
    // Drills signed by the real key.
    let now = unix_now();
    forged.push((
        "expired",
        e.mint(&["--claims", &format!("{{\"exp\": {}}}", now - 600)]),
    ));
    forged.push(("future nbf", e.mint(&["--not-before", "10m"])));
    forged.push((
        "wrong aud",
        e.mint(&["--audience", "https://other.edge.test"]),
    ));
    forged.push((
        "wrong iss",
        e.mint(&["--claims", "{\"iss\": \"https://evil.example\"}"]),
    ));
    forged.push((
        "no exp",
        e.mint(&[
            "--exact",
            "--claims",
            &format!(
                "{{\"iss\": \"{}\", \"aud\": \"{AUD}\", \"sub\": \"shop\", \"jti\": \"x1\", \"scope\": \"orders:read\"}}",
                e.issuer
            ),
        ]),
    ));
    // A token for another client: another audience.
    let other_secret = create_client(
        &e.server,
        "other",
        &["orders:read"],
        "https://other.edge.test",
    );
    forged.push(("another client's token", e.token("other", &other_secret)));
    for (what, t) in &forged {
        assert_eq!(
            e.bearer("/orders/1", t),
            401,
            "{what} was not refused with 401"
        );
    }
    assert_eq!(e.get("/orders/1", &[]).0, 401, "no token");
    assert_eq!(
        e.app.requests().len(),
        before,
        "a refused request reached the app: {:?}",
        e.app.request_lines()
    );

    // Authorization: the route's Cedar policy decides on the scopes.
    assert_eq!(e.bearer("/admin/users", &tok), 403);
    // A method the route does not allow.
    let (code, _) = e.get(
        "/orders/1",
        &[
            "-X",
            "DELETE",
            "-H",
            &format!("Authorization: Bearer {tok}"),
        ],
    );
    assert_eq!(code, 405);

    // Revocation reaches the gateway within 5 s.
    let fresh = e.token("shop", &e.secret);
    assert_eq!(e.bearer("/orders/2", &fresh), 200);
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            e.server.cacert(),
            "-u",
            &format!("shop:{}", e.secret),
            "-d",
            &format!("token={fresh}"),
            &format!("{}/oauth/revoke", e.issuer),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert!(
        wait_for(Duration::from_secs(5), || e.bearer("/orders/2", &fresh)
            == 401),
        "a revoked token still passes after 5 s"
    );

    // Every denial is counted by reason.
    let m = e.gateway.metrics();
    for reason in [
        "token_expired",
        "token_not_yet_valid",
        "token_audience",
        "token_algorithm",
        "token_kid",
        "token_signature",
        "token_revoked",
        "no_credential",
        "policy",
        "method",
    ] {
        assert!(
            m.lines()
                .any(|l| l.starts_with("ward_gateway_denials_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "no denial counted for {reason}:\n{m}"
        );
    }
    // Nothing secret in the log.
    let log = e.gateway.log();
    assert!(
        !log.contains(&tok) && !log.contains(&fresh),
        "a token is in the log"
    );
}

#[test]
fn credentials_paths_and_keys_are_checked_strictly() {
    let e = setup("");
    let tok = e.token("shop", &e.secret);
    let auth = format!("Authorization: Bearer {tok}");
    // Two credentials that disagree.
    let mint = e.mint(&[]);
    let (code, _) = e.get(&format!("/orders/1?access_token={mint}"), &["-H", &auth]);
    assert_eq!(code, 400, "header and query");
    let (code, _) = e.get(
        "/orders/1",
        &["-H", &auth, "-H", &format!("Authorization: Bearer {mint}")],
    );
    assert_eq!(code, 400, "two Authorization headers");
    let (code, _) = e.get(
        "/orders/1",
        &["-H", &auth, "-H", &format!("Cookie: access_token={mint}")],
    );
    assert_eq!(code, 400, "header and cookie");
    // The same token twice is one credential, and the query's copy stays here.
    let (code, _) = e.get(&format!("/orders/1?a=1&access_token={tok}"), &["-H", &auth]);
    assert_eq!(code, 200);
    let last = e.app.requests().last().cloned().unwrap_or_default();
    assert!(last.starts_with("GET /orders/1?a=1 HTTP/1.1"), "{last}");

    // Public routes, and paths that try to leave them.
    assert_eq!(e.get("/public/hello", &[]).0, 200);
    for path in [
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2E/admin/users",
        "/public/.%2e/admin/users",
        "/public/%2fadmin",
        "/public/..%2fadmin",
        "/public//admin",
        "/public/%5c..%5cadmin",
    ] {
        let (code, _) = e.get(path, &["--path-as-is"]);
        assert_eq!(code, 400, "{path}");
    }
    assert!(!e.app.saw("/admin"), "{:?}", e.app.request_lines());
    // Unknown route, and a target too long.
    assert_eq!(e.get("/nowhere", &[]).0, 404);
    assert_eq!(e.get(&format!("/public/{}", "a".repeat(3000)), &[]).0, 414);
    // Too many header fields.
    let mut many = Vec::new();
    for i in 0..60 {
        many.push("-H".to_string());
        many.push(format!("x-h{i}: v"));
    }
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(e.get("/public/x", &many).0, 431);

    // API keys, by hash.
    assert_eq!(
        e.get("/deploy/now", &["-H", &format!("X-API-Key: {}", e.api_key)])
            .0,
        200
    );
    assert_eq!(
        e.get("/deploy/now", &["-H", "X-API-Key: wk_test_wrong"]).0,
        401
    );
    assert_eq!(e.get("/deploy/now", &[]).0, 401);
    assert_eq!(
        e.get(
            "/deploy/now",
            &["-H", &format!("X-API-Key: {}", e.api_key), "-H", &auth]
        )
        .0,
        400,
        "an API key beside a token"
    );
    // Security headers on every answer, no detail in refusals.
    let out = curl_run(
        None,
        &e.gateway.url("/orders/1"),
        &[
            "--cacert",
            &e.dir.join("gw-ca.pem").display().to_string(),
            "-i",
        ],
    );
    assert_eq!(out.code, 401);
    let text = out.body.to_ascii_lowercase();
    assert!(text.contains("strict-transport-security"), "{}", out.body);
    assert!(
        text.contains("x-content-type-options: nosniff"),
        "{}",
        out.body
    );
    assert!(text.contains("www-authenticate: bearer"), "{}", out.body);
    assert!(text.trim_end().ends_with("unauthorized"), "{}", out.body);
    // HTTP/2 works end to end.
    let out = curl_run(
        None,
        &e.gateway.url("/orders/h2"),
        &[
            "--cacert",
            &e.dir.join("gw-ca.pem").display().to_string(),
            "--http2",
            "-H",
            &auth,
        ],
    );
    assert_eq!(
        (out.code, out.version.as_str()),
        (200, "2"),
        "{}",
        out.brief()
    );
}

#[test]
fn smuggling_never_reaches_the_app() {
    let e = setup("");
    let cases: Vec<(&str, String)> = {
        let smuggled = "GET /public/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n";
        let chunked = format!("0\r\n\r\n{smuggled}");
        vec![
            (
                "CL.TE",
                format!(
                    "POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}",
                    chunked.len()
                ),
            ),
            (
                "TE.CL",
                format!(
                    "POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                    smuggled.len()
                ),
            ),
            (
                "TE.TE (a second coding)",
                format!(
                    "POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: {}\r\n\r\n{chunked}",
                    chunked.len()
                ),
            ),
            (
                "TE.TE (obfuscated)",
                format!(
                    "POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n{chunked}"
                ),
            ),
            (
                "TE.TE (chunked, identity)",
                format!(
                    "POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n{chunked}"
                ),
            ),
            (
                "duplicate Content-Length",
                format!(
                    "POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
                    smuggled.len()
                ),
            ),
        ]
    };
    for (what, raw) in &cases {
        let run = tls_raw(
            &e.gateway.listen,
            &e.cert.cert,
            &e.cert.key,
            raw.as_bytes(),
            Duration::from_secs(5),
        );
        let status = run.output.lines().next().unwrap_or_default().to_owned();
        assert!(
            status.starts_with("HTTP/1.1 400") || status.starts_with("HTTP/1.1 501"),
            "{what}: {status:?} ({:?})",
            run.output
        );
        assert_eq!(
            run.output.matches("HTTP/1.1 ").count(),
            1,
            "{what}: {:?}",
            run.output
        );
    }
    assert!(
        !e.app.saw("SMUGGLED"),
        "a smuggled request reached the app: {:?}",
        e.app.request_lines()
    );
}

#[test]
fn a_spoofed_forwarded_for_does_not_change_the_limit_key() {
    let e = setup(
        r#"
[[route]]
name = "limited"
path_prefix = "/limited"
auth = "public"
upstream = "APP"
rate_limit = { rate = 3, per = "1m", key = "address" }
"#
        .replace("APP", &RecordingApp::start().addr.to_string())
        .as_str(),
    );
    let mut codes = Vec::new();
    for i in 0..6 {
        let xff = format!("X-Forwarded-For: 203.0.113.{i}");
        codes.push(e.get("/limited/x", &["-H", &xff]).0);
    }
    assert_eq!(
        codes,
        [200, 200, 200, 429, 429, 429],
        "the client changed its key"
    );
    let out = curl_run(
        None,
        &e.gateway.url("/limited/x"),
        &[
            "--cacert",
            &e.dir.join("gw-ca.pem").display().to_string(),
            "-i",
        ],
    );
    let head = out.body.to_ascii_lowercase();
    assert_eq!(out.code, 429);
    assert!(head.contains("retry-after: "), "{}", out.body);
    assert!(head.contains("ratelimit-limit: 3"), "{}", out.body);
    assert!(head.contains("ratelimit-remaining: 0"), "{}", out.body);
}

#[test]
fn two_gateways_share_one_redis_limit() {
    let Some(redis) = required_env("WARD_TEST_REDIS_URL", "a Redis for the shared rate limit")
    else {
        return;
    };
    let e = setup("");
    let prefix = format!("ward:test:{}:{}:", std::process::id(), unix_now());
    let route = r#"
[[route]]
name = "shared"
path_prefix = "/shared"
auth = "public"
upstream = "APP"
rate_limit = { rate = 5, per = "1m", key = "address", global = true }
"#
    .replace("APP", &e.app.addr.to_string());
    let parts = EdgeParts {
        cert: e.cert.clone(),
        issuer: e.issuer.clone(),
        ca: e.server.cacert().to_owned(),
        api_key: e.api_key.clone(),
        app: e.app.addr,
    };
    let cfg = gateway_config(&parts, &route, Some((&redis, &prefix)));
    let g1 = Gateway::start(&e.dir, "gw1", &cfg);
    let g2 = Gateway::start(&e.dir, "gw2", &cfg);
    let ca = e.dir.join("gw-ca.pem").display().to_string();
    let mut allowed = 0;
    for i in 0..20 {
        let g = if i % 2 == 0 { &g1 } else { &g2 };
        let out = curl_run(None, &g.url("/shared/x"), &["--cacert", &ca]);
        assert!(out.code == 200 || out.code == 429, "{}", out.brief());
        if out.code == 200 {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 5,
        "two gateways together allowed {allowed}, not the limit of 5"
    );
    for g in [&g1, &g2] {
        assert!(
            !g.metrics()
                .lines()
                .any(|l| l.starts_with("ward_gateway_ratelimit_fallback_total")
                    && !l.ends_with(" 0")),
            "a gateway fell back to its local limit:\n{}",
            g.log()
        );
    }
}

#[test]
fn the_users_identity_travels_inward_as_an_internal_token_the_sidecar_checks() {
    use support::proxy::{Proxy, Svid};
    const GW: &str = "spiffe://edge.test/ns/edge/sa/gateway";
    const ORDERS: &str = "spiffe://edge.test/ns/shop/sa/orders";
    const FE: &str = "spiffe://edge.test/ns/shop/sa/frontend";
    let e = setup("");
    let gw = Svid::mint(&e.server, &e.dir.join("gw-svid"), GW, "1h");
    let orders = Svid::mint(&e.server, &e.dir.join("orders-svid"), ORDERS, "1h");
    let fe = Svid::mint(&e.server, &e.dir.join("fe-svid"), FE, "1h");
    // The gateway's client authenticates with its SVID; the exchange
    // policy lets it get tokens for orders.
    let out = e.server.ward(&[
        "client",
        "create",
        "gateway",
        "--spiffe-id",
        GW,
        "--audience",
        ORDERS,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let policy = e.dir.join("exchange.cedar");
    std::fs::write(
        &policy,
        format!("permit(principal == Token::Client::\"gateway\", action, resource == Token::Audience::\"{ORDERS}\") when {{ context.kind == \"access\" }};"),
    )
    .unwrap();
    let out = e
        .server
        .ward(&["token", "policy", "write", &policy.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The orders sidecar: user-level rules on context.token.
    let mesh_policy = e.dir.join("orders.cedar");
    std::fs::write(
        &mesh_policy,
        format!(
            r#"@id("users-via-gateway")
permit(principal == Ward::Service::"{GW}", action == Ward::Action::"GET", resource)
when {{ context has token && context.token.scopes.contains("orders:read") && context.token.actors.contains("{GW}") }};
@id("frontend-with-a-user")
permit(principal == Ward::Service::"{FE}", action, resource) when {{ context has token }};
"#
        ),
    )
    .unwrap();
    let app = RecordingApp::start();
    let proxy = Proxy::start(
        &e.dir,
        "orders",
        &format!(
            "{}[policy]\nfile = {:?}\n[token]\nname = \"ward\"\nissuer = {:?}\nca = {:?}\naudiences = [{ORDERS:?}]\nrevoked_poll = \"1s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[inbound]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\nprotocol = \"http\"\n",
            orders.identity_toml(),
            mesh_policy.display().to_string(),
            e.issuer,
            e.server.cacert(),
            app.addr
        ),
    );
    proxy.wait_ready();
    let inbound = proxy.inbound("in");
    let routes = format!(
        r#"
[[route]]
name = "shop"
path_prefix = "/shop"
auth = "jwt"
upstream = "{inbound}"
upstream_spiffe_id = "{ORDERS}"

[[route]]
name = "nouser"
path_prefix = "/nouser"
auth = "public"
upstream = "{inbound}"
upstream_spiffe_id = "{ORDERS}"
"#
    );
    let parts = EdgeParts {
        cert: e.cert.clone(),
        issuer: e.issuer.clone(),
        ca: e.server.cacert().to_owned(),
        api_key: e.api_key.clone(),
        app: e.app.addr,
    };
    let cfg = format!(
        "{}{}[exchange]\ntoken_endpoint = \"{}/oauth/token\"\nca = {:?}\nclient_id = \"gateway\"\n[report]\nserver = \"{}\"\nca = {:?}\ninterval = \"1s\"\n",
        gw.identity_toml(),
        gateway_config(&parts, &routes, None),
        e.issuer,
        e.server.cacert(),
        e.server.addr(),
        e.server.cacert()
    );
    // [identity] and [exchange] are tables: they go before the first array of tables.
    let (head, rest) = cfg.split_once("[[issuer]]").unwrap();
    let (ident, rest_head) = head.split_once("listen = \"127.0.0.1:0\"\n[tls]").unwrap();
    let (tail, exchange) = rest.split_once("[exchange]").unwrap();
    let cfg = format!(
        "listen = \"127.0.0.1:0\"\n{ident}[exchange]{exchange}[tls]{rest_head}[[issuer]]{tail}"
    );
    let g = Gateway::start(&e.dir, "gwx", &cfg);
    let ca = e.dir.join("gw-ca.pem").display().to_string();
    let tok = e.token("shop", &e.secret);
    let out = curl_run(
        None,
        &g.url("/shop/orders/1"),
        &[
            "--cacert",
            &ca,
            "-H",
            &format!("Authorization: Bearer {tok}"),
        ],
    );
    assert_eq!(
        out.code,
        200,
        "{}\n{}\n{}",
        out.brief(),
        g.log(),
        proxy.log_tail(20)
    );
    let head = app.requests().last().cloned().unwrap_or_default();
    let internal = head
        .lines()
        .find_map(|l| l.strip_prefix("x-ward-internal-token: "))
        .unwrap_or_else(|| panic!("no internal token reached the app: {head}"))
        .trim()
        .to_owned();
    assert!(
        !head.contains(&tok),
        "the user's own token travelled inward"
    );
    let c = {
        let p = internal.split('.').nth(1).unwrap();
        let out = Command::new(support::raw::python())
            .args([
                "-c",
                "import base64,sys;s=sys.argv[1];print(base64.urlsafe_b64decode(s+'='*(-len(s)%4)).decode())",
                p,
            ])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(c["sub"], "shop", "{c}");
    assert_eq!(c["aud"], ORDERS);
    assert_eq!(c["act"]["sub"], GW);
    assert!(
        c["cnf"]["x5t#S256"].is_string(),
        "not bound to the gateway: {c}"
    );

    // No user, no entry: the sidecar's policy needs context.token.
    let out = curl_run(None, &g.url("/nouser/orders/1"), &["--cacert", &ca]);
    assert_eq!(out.code, 403, "{}", out.brief());
    // The gateway's own refusals reach the audit chain, with their reason,
    // reported with its SVID.
    let tampered = format!(
        "{}{}",
        &tok[..tok.len() - 2],
        if tok.ends_with("AA") { "BB" } else { "AA" }
    );
    let out = curl_run(
        None,
        &g.url("/shop/orders/1"),
        &[
            "--cacert",
            &ca,
            "-H",
            &format!("Authorization: Bearer {tampered}"),
        ],
    );
    assert_eq!(out.code, 401);
    assert!(
        wait_for(Duration::from_secs(10), || {
            let a = e
                .server
                .ward(&["audit", "tail", "--lines", "200", "--output", "json"]);
            let a = String::from_utf8_lossy(&a.stdout).to_string();
            a.contains("gateway.denials") && a.contains("token_signature") && a.contains(GW)
        }),
        "no gateway.denials record in the audit chain:\n{}",
        g.log()
    );

    // The internal token replayed by another workload: bound to the gateway.
    let direct = format!("https://{inbound}/orders/1");
    let hdr = format!("x-ward-internal-token: {internal}");
    let (code, _) =
        support::proxy::curl_mtls(Some((&fe.cert(), &fe.key())), &direct, &["-H", &hdr]);
    assert_eq!(
        code, 403,
        "a token bound to the gateway passed from another workload"
    );
    assert!(
        proxy.log_text().contains("bound to another certificate"),
        "{}",
        proxy.log_tail(10)
    );
    // The user's token itself is not an internal token for orders.
    let user_hdr = format!("x-ward-internal-token: {tok}");
    let (code, _) =
        support::proxy::curl_mtls(Some((&gw.cert(), &gw.key())), &direct, &["-H", &user_hdr]);
    assert_eq!(code, 403);
    // The gateway itself with the internal token: allowed, until revoked.
    let (code, _) =
        support::proxy::curl_mtls(Some((&gw.cert(), &gw.key())), &direct, &["-H", &hdr]);
    assert_eq!(code, 200, "{}", proxy.log_tail(10));
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            e.server.cacert(),
            "-u",
            &format!("shop:{}", e.secret),
            "-d",
            &format!("token={internal}"),
            &format!("{}/oauth/revoke", e.issuer),
        ])
        .output()
        .unwrap();
    // The internal token was issued to the gateway's client: shop may not
    // revoke it (RFC 7009 §2.1); the gateway's client may, with its SVID.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            e.server.cacert(),
            "--cert",
            &gw.cert(),
            "--key",
            &gw.key(),
            "-d",
            "client_id=gateway",
            "-d",
            &format!("token={internal}"),
            &format!("{}/oauth/revoke", e.issuer),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert!(
        wait_for(Duration::from_secs(5), || support::proxy::curl_mtls(
            Some((&gw.cert(), &gw.key())),
            &direct,
            &["-H", &hdr]
        )
        .0 == 403),
        "a revoked internal token still passes the sidecar after 5 s"
    );
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let e = setup("");
    let next = Ca::new(&e.dir, "gw2");
    let renewed = next.server_leaf("gateway2", "IP:127.0.0.1,DNS:localhost");
    let old_ca = e.dir.join("gw-ca.pem").display().to_string();
    let new_ca = e.dir.join("gw2-ca.pem").display().to_string();
    assert_eq!(
        curl_run(None, &e.gateway.url("/public/x"), &["--cacert", &old_ca]).code,
        200
    );
    // A half-written pair (the new key beside the old certificate) keeps
    // the old certificate in service.
    std::fs::copy(&renewed.key, &e.cert.key).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        curl_run(None, &e.gateway.url("/public/x"), &["--cacert", &old_ca]).code,
        200,
        "a mismatched key and certificate were put in service"
    );
    std::fs::copy(&renewed.cert, &e.cert.cert).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || curl_run(
            None,
            &e.gateway.url("/public/x"),
            &["--cacert", &new_ca]
        )
        .code
            == 200),
        "the renewed certificate is not served: {}",
        e.gateway.log()
    );
}
