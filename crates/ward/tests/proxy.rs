//! The sidecar end to end: real `ward server`, `ward proxy` and app
//! processes on loopback. Allowed calls pass with the verified identity;
//! everything else (no certificate, a foreign CA, an expired or forged
//! certificate, the wrong caller, a spoofed header, an ambiguous path, a
//! wrong upstream) is refused before the app sees it.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::proxy::{DemoApp, Proxy, RecordingApp, Svid, curl_mtls, curl_run, http_get, tls_raw};
use support::raw::Ca;
use support::{Server, openssl, wait_for};

const TD: &str = "proxy.test";
const FE: &str = "spiffe://proxy.test/ns/demo/sa/frontend";
const ORDERS: &str = "spiffe://proxy.test/ns/demo/sa/orders";
const PAY: &str = "spiffe://proxy.test/ns/demo/sa/payments";

fn policy() -> String {
    format!(
        r#"@id("fe-reads-orders")
permit(principal == Ward::Service::"{FE}", action in Ward::Action::"read",
       resource in Ward::Service::"{ORDERS}") when {{ resource.path like "/hello*" }};
@id("fe-grpc")
permit(principal == Ward::Service::"{FE}", action == Ward::Action::"POST",
       resource in Ward::Service::"{ORDERS}") when {{ resource.path like "/grpc.health.v1.Health/*" }};
@id("fe-tcp")
permit(principal == Ward::Service::"{FE}", action == Ward::Action::"connect", resource in Ward::Service::"{ORDERS}");
"#
    )
}

fn push(server: &Server, dir: &Path, text: &str) {
    let file = dir.join("policy.cedar");
    std::fs::write(&file, text).unwrap();
    let out = server.ward(&["policy", "push", &file.display().to_string()]);
    assert!(
        out.status.success(),
        "policy push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `[policy]` from the server, with a cache file.
fn server_policy(server: &Server, dir: &Path, name: &str) -> String {
    format!(
        "[policy]\nserver = {:?}\nserver_ca = {:?}\ncache = {:?}\n[telemetry]\nreport_interval = \"1s\"\n",
        server.addr(),
        server.cacert(),
        dir.join(format!("{name}-policy.json"))
            .display()
            .to_string()
    )
}

fn inbound(app: &str, protocol: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[inbound]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\napp = {app:?}\nprotocol = {protocol:?}\n"
    )
}

fn outbound(name: &str, upstream: &str, id: &str, protocol: &str) -> String {
    format!(
        "[[outbound]]\nname = {name:?}\nlisten = \"127.0.0.1:0\"\nupstream = {upstream:?}\nspiffe_ids = [{id:?}]\nprotocol = {protocol:?}\n"
    )
}

struct Setup {
    dir: tempfile::TempDir,
    server: Server,
    fe: Svid,
    orders: Svid,
    pay: Svid,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), TD);
    let fe = Svid::mint(&server, &dir.path().join("fe"), FE, "1h");
    let orders = Svid::mint(&server, &dir.path().join("orders"), ORDERS, "1h");
    let pay = Svid::mint(&server, &dir.path().join("pay"), PAY, "1h");
    push(&server, dir.path(), &policy());
    Setup {
        dir,
        server,
        fe,
        orders,
        pay,
    }
}

/// The orders proxy in front of `app`, policy from the server.
fn orders_proxy(s: &Setup, app: &str, protocol: &str) -> Proxy {
    let config = format!(
        "{}{}{}",
        s.orders.identity_toml(),
        server_policy(&s.server, s.dir.path(), "orders"),
        inbound(app, protocol)
    );
    let p = Proxy::start(s.dir.path(), "orders", &config);
    p.wait_ready();
    p
}

/// The TLS handshake is refused, not merely the request: curl gets no HTTP
/// status at all and fails in TLS (35: handshake; 55/56: the reset or alert
/// a TLS 1.3 server sends after the client's certificate, which curl sees
/// only when it sends or reads the request), and the proxy logs
/// "TLS handshake refused" with one of `reasons` (case-insensitive).
fn assert_handshake_refused(
    proxy: &Proxy,
    what: &str,
    svid: Option<(&str, &str)>,
    url: &str,
    extra: &[&str],
    reasons: &[&str],
) {
    let mark = proxy.log_mark();
    let run = curl_run(svid, url, extra);
    assert!(
        run.code == 0 && [35, 55, 56].contains(&run.exit),
        "{what}: expected a refused handshake (no HTTP status, curl exit 35/55/56), got {run:?}\n{}",
        proxy.log_tail(20)
    );
    let line = proxy.wait_log_line(mark, "TLS handshake refused", reasons);
    eprintln!("{what}: curl exit {}, logged {line:?}", run.exit);
    assert!(
        line.is_some(),
        "{what}: no \"TLS handshake refused\" line naming one of {reasons:?}; logged since:\n{}",
        proxy.log_since(mark)
    );
}

#[test]
fn callers_are_authorized_and_the_app_sees_only_verified_identity() {
    let s = setup();
    let app = RecordingApp::start();
    let proxy = orders_proxy(&s, &app.addr.to_string(), "http");
    let url = |path: &str| format!("https://{}{path}", proxy.inbound("in"));
    let fe = Some((s.fe.cert(), s.fe.key()));
    let fe = fe.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));

    // Allowed, with spoofed identity headers that must not reach the app.
    let (code, body) = curl_mtls(
        fe,
        &url("/hello"),
        &[
            "-H",
            &format!("x-forwarded-client-cert: By=x;URI={PAY}"),
            "-H",
            &format!("x-ward-caller: {PAY}"),
        ],
    );
    assert_eq!(code, 200, "{body}\n{}", proxy.log_text());
    let seen = app.requests();
    assert_eq!(seen.len(), 1);
    let head = seen[0].to_ascii_lowercase();
    assert!(
        head.contains(&format!("x-forwarded-client-cert: by={ORDERS};hash=")),
        "{head}"
    );
    assert!(head.contains(&format!(";uri={FE}")), "{head}");
    assert!(
        !head.contains("payments") && !head.contains("x-ward-caller"),
        "{head}"
    );

    // Any TLS client can be a peer: the proxy's chain verifies against the bundle
    // (curl's -k above only skips the host-name match an SVID cannot satisfy).
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &proxy.inbound("in"),
            "-CAfile",
            &s.fe.bundle(),
        ])
        .args([
            "-cert",
            &s.fe.cert(),
            "-key",
            &s.fe.key(),
            "-verify_return_error",
            "-brief",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Verification: OK") && text.contains("TLSv1.3"),
        "{text}"
    );

    // Percent-encoded unreserved characters are decoded before the decision and in what the app gets.
    assert_eq!(curl_mtls(fe, &url("/%68ello"), &[]).0, 200);
    assert!(
        app.requests()[1].starts_with("GET /hello HTTP/1.1"),
        "{:?}",
        app.requests()
    );

    let before = app.requests().len();
    // Denied: a write by frontend, another path, another caller. (Over HTTP/2,
    // where a denial must not turn into a stream error for the caller.)
    let run = curl_run(fe, &url("/hello"), &["-X", "POST", "-d", "x"]);
    assert_eq!(run.code, 403, "{run:?}\n{}", proxy.log_tail(10));
    let (code, body) = curl_mtls(fe, &url("/admin"), &[]);
    assert_eq!(
        (code, body.as_str()),
        (403, "forbidden\n"),
        "the body names no policy"
    );
    let pay = (s.pay.cert(), s.pay.key());
    assert_eq!(
        curl_mtls(Some((&pay.0, &pay.1)), &url("/hello"), &[]).0,
        403,
        "the wrong SPIFFE ID"
    );
    // Paths that servers read differently never get a decision.
    for p in [
        "/x/../hello",
        "/%2e%2e/hello",
        "//hello",
        "/hello%2Fx",
        "/hello;x=1",
        "/hello%5c",
    ] {
        let (code, _) = curl_mtls(fe, &url(p), &["--path-as-is"]);
        assert_eq!(code, 400, "{p}");
    }
    // No certificate; a foreign CA's certificate naming frontend; a leaf signed by an SVID.
    assert_handshake_refused(
        &proxy,
        "no certificate",
        None,
        &url("/hello"),
        &[],
        &["NoCertificatesPresented", "no certificate"],
    );
    let d = s.dir.path();
    let p = |f: &str| d.join(f).display().to_string();
    let (ok, err) = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("rk.pem"),
        "-out",
        &p("rc.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=rogue",
        "-addext",
        &format!("subjectAltName=URI:{FE}"),
    ]);
    assert!(ok, "{err}");
    // Self-signed (a CA certificate, as openssl makes it, used as the leaf).
    assert_handshake_refused(
        &proxy,
        "a self-signed certificate",
        Some((&p("rc.pem"), &p("rk.pem"))),
        &url("/hello"),
        &[],
        &["CaUsedAsEndEntity", "UnknownIssuer", "unknown issuer"],
    );
    // A proper leaf (not a CA) naming frontend, issued by a foreign CA.
    let foreign = Ca::new(d, "foreign").leaf("foreign", FE);
    assert_handshake_refused(
        &proxy,
        "a foreign CA",
        Some((&foreign.cert, &foreign.key)),
        &url("/hello"),
        &[],
        &["UnknownIssuer", "unknown issuer"],
    );
    // A leaf naming frontend issued by frontend's own SVID (not a CA), sent
    // with that SVID as its chain.
    let fe_as_issuer = Ca {
        name: "fe-svid".into(),
        dir: d.to_owned(),
        cert: s.fe.cert().into(),
        key: s.fe.key().into(),
    };
    let child = fe_as_issuer.leaf("child", FE);
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(&child.cert).unwrap(),
        std::fs::read_to_string(s.fe.cert()).unwrap()
    );
    std::fs::write(d.join("cchain.pem"), chain).unwrap();
    assert_handshake_refused(
        &proxy,
        "a leaf signed by an SVID",
        Some((&p("cchain.pem"), &child.key)),
        &url("/hello"),
        &[],
        &[
            "UnknownIssuer",
            "unknown issuer",
            "CaUsedAsEndEntity",
            "EndEntityUsedAsCa",
            "not a CA",
            "basic constraints",
        ],
    );
    // An expired SVID of the right identity.
    let old = Svid::mint(&s.server, &d.join("fe-short"), FE, "1s");
    // Past notAfter by a clear margin: in its last second a certificate is
    // still valid to webpki (and denied later, by the proxy, as an expired caller).
    let not_after = old.not_after_unix();
    assert!(
        wait_for(Duration::from_secs(15), || support::proxy::unix_now()
            > not_after + 1),
        "notAfter {not_after}"
    );
    assert_handshake_refused(
        &proxy,
        "an expired SVID",
        Some((&old.cert(), &old.key())),
        &url("/hello"),
        &[],
        &["expired"],
    );
    // None of the refused requests reached the app.
    assert_eq!(app.requests().len(), before, "{:?}", app.requests());

    // Every decision is counted, by edge.
    let (_, metrics) = proxy.admin_get("/metrics");
    assert!(metrics.contains(&format!(
        "ward_proxy_inbound_requests_total{{source=\"{FE}\",destination=\"{ORDERS}\",method=\"POST\",route=\"/hello\",status_class=\"4xx\",decision=\"deny\"}} 1"
    )), "{metrics}");
    // Denials are reported to the server.
    assert!(wait_for(Duration::from_secs(15), || {
        let v = s.server.ward_json(&["telemetry", "edges"]);
        v["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"] == PAY && e["decision"] == "deny")
    }));
}

#[test]
fn a_tls_1_2_caller_is_refused_at_the_handshake() {
    let s = setup();
    let app = RecordingApp::start();
    let proxy = orders_proxy(&s, &app.addr.to_string(), "http");
    let url = format!("https://{}/hello", proxy.inbound("in"));
    let fe = (s.fe.cert(), s.fe.key());
    // The same SVID over TLS 1.3 is let in: only the version is wrong below.
    assert_eq!(curl_mtls(Some((&fe.0, &fe.1)), &url, &[]).0, 200);
    assert_eq!(app.requests().len(), 1);
    assert_handshake_refused(
        &proxy,
        "TLS 1.2 (curl)",
        Some((&fe.0, &fe.1)),
        &url,
        &["--tlsv1.2", "--tls-max", "1.2"],
        // rustls: "peer is incompatible: SupportedVersionsExtensionRequired".
        &["version"],
    );
    let mark = proxy.log_mark();
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-brief",
            "-connect",
            &proxy.inbound("in"),
            "-cert",
            &fe.0,
            "-key",
            &fe.1,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !text.contains("Protocol version: TLSv1.2"),
        "openssl -tls1_2 connected: {text}"
    );
    assert!(
        proxy
            .wait_log_line(mark, "TLS handshake refused", &["version"])
            .is_some(),
        "no refusal logged: {}",
        proxy.log_since(mark)
    );
    assert_eq!(app.requests().len(), 1, "{:?}", app.requests());
}

#[test]
fn a_smuggled_request_never_reaches_the_app() {
    let s = setup();
    let app = RecordingApp::start();
    let proxy = orders_proxy(&s, &app.addr.to_string(), "http");
    // Content-Length and Transfer-Encoding together. Read by Content-Length the
    // body is all of the rest; read as chunked it ends at "0", and a second
    // request follows. Both paths are allowed by policy (/hello*), so only the
    // framing check can stop either one.
    let smuggled = "GET /hello/smuggled HTTP/1.1\r\nHost: orders\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    let raw = format!(
        "GET /hello/outer HTTP/1.1\r\nHost: orders\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let run = tls_raw(
        &proxy.inbound("in"),
        &s.fe.cert(),
        &s.fe.key(),
        raw.as_bytes(),
        Duration::from_secs(10),
    );
    let text = run.output.clone();
    let status = text.lines().next().unwrap_or_default();
    assert!(
        status.starts_with("HTTP/1.1 400"),
        "expected 400 for CL+TE, got {text:?} (closed: {})\napp saw {:?}\n{}",
        run.closed,
        app.requests(),
        proxy.log_tail(20)
    );
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        head.to_ascii_lowercase().contains("\r\nconnection: close"),
        "the 400 does not say Connection: close: {text:?}"
    );
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {text:?}"
    );
    assert!(
        run.closed,
        "the proxy kept the connection open after the 400: {text:?}"
    );
    assert!(
        app.requests().is_empty(),
        "the app saw a request: {:?}",
        app.requests()
    );
    // The recorder works: a plain allowed request is seen (as it arrives).
    let (code, body) = curl_mtls(
        Some((&s.fe.cert(), &s.fe.key())),
        &format!("https://{}/hello/plain", proxy.inbound("in")),
        &[],
    );
    assert_eq!(code, 200, "{body}\n{}", proxy.log_tail(20));
    let seen = app.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("GET /hello/plain HTTP/1.1"), "{seen:?}");
    assert!(!seen[0].contains("smuggled"), "{seen:?}");
    // And it records a head before (without) its body: sent straight to it.
    let mut direct = std::net::TcpStream::connect(app.addr).unwrap();
    std::io::Write::write_all(
        &mut direct,
        b"POST /direct HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\npartial",
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || app.requests().len() == 2),
        "{:?}",
        app.requests()
    );
    assert!(app.requests()[1].starts_with("POST /direct "));
    assert_eq!(app.complete().len(), 1, "the partial body is not complete");
}

#[test]
fn outbound_checks_the_upstream_and_policy_pushes_apply() {
    let s = setup();
    let app = DemoApp::start(s.dir.path(), "orders", &[]);
    let orders = orders_proxy(&s, &app.addr, "http");
    let upstream = orders.inbound("in");
    let config = format!(
        "{}[policy]\nfile = {:?}\n{}{}",
        s.fe.identity_toml(),
        s.dir.path().join("unused.cedar").display().to_string(),
        outbound("orders", &upstream, ORDERS, "http"),
        outbound("wrong", &upstream, PAY, "http"),
    );
    std::fs::write(s.dir.path().join("unused.cedar"), "").unwrap();
    let fe = Proxy::start(s.dir.path(), "fe", &config);
    assert!(wait_for(Duration::from_secs(10), || fe
        .log_text()
        .contains("identity loaded")));

    let (code, body) = http_get(&fe.outbound("orders"), "/hello");
    assert_eq!(
        code,
        200,
        "{body}\n{}\n{}",
        fe.log_text(),
        orders.log_text()
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["service"].as_str(), v["caller"].as_str()),
        (Some("orders"), Some(FE))
    );
    // The upstream is orders, not payments: refused before any request is sent.
    let (code, _) = http_get(&fe.outbound("wrong"), "/hello");
    assert_eq!(code, 502);
    assert!(
        fe.log_text().contains("UnexpectedPeer"),
        "{}",
        fe.log_text()
    );

    // A push that removes the permission applies within 5 s, and one that restores it too.
    push(&s.server, s.dir.path(), "");
    assert!(wait_for(Duration::from_secs(5), || http_get(
        &fe.outbound("orders"),
        "/hello"
    )
    .0 == 403));
    push(&s.server, s.dir.path(), &policy());
    assert!(wait_for(Duration::from_secs(5), || http_get(
        &fe.outbound("orders"),
        "/hello"
    )
    .0 == 200));
    // A policy that does not validate is refused by the server and changes nothing.
    let bad = s.dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "permit(principal, action, resource) when { resource.path == 1 };",
    )
    .unwrap();
    let out = s
        .server
        .ward(&["policy", "push", &bad.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, body) = s.server.curl(
        "PUT",
        "/v1/policy",
        Some(s.server.token()),
        Some("permit(principal, action"),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(http_get(&fe.outbound("orders"), "/hello").0, 200);
}

#[test]
fn svid_rotation_under_traffic_fails_no_request() {
    let s = setup();
    let app = DemoApp::start(s.dir.path(), "orders", &[]);
    let orders = orders_proxy(&s, &app.addr, "http");
    let config = format!(
        "{}[policy]\nfile = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        s.fe.identity_toml(),
        s.dir.path().join("none.cedar").display().to_string(),
        outbound("orders", &orders.inbound("in"), ORDERS, "http"),
    );
    std::fs::write(s.dir.path().join("none.cedar"), "").unwrap();
    let fe = Proxy::start(s.dir.path(), "fe", &config);
    assert!(wait_for(Duration::from_secs(10), || http_get(
        &fe.outbound("orders"),
        "/hello"
    )
    .0 == 200));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let target = fe.outbound("orders");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed, target) =
                (stop.clone(), ok.clone(), failed.clone(), target.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (code, body) = http_get(&target, "/hello");
                    if code == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        eprintln!("failed: {code} {body}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let expiry = |p: &Proxy| {
        let (_, m) = p.admin_get("/metrics");
        m.lines()
            .find(|l| l.starts_with("ward_proxy_svid_expiry_seconds "))
            .unwrap_or_default()
            .to_string()
    };
    for round in 0..3 {
        let (fe_before, orders_before) = (expiry(&fe), expiry(&orders));
        // Each side gets a new SVID (new key, new serial) written in place.
        for (svid, id) in [(&s.fe, FE), (&s.orders, ORDERS)] {
            let fresh = Svid::mint(
                &s.server,
                &s.dir.path().join(format!("fresh-{round}")),
                id,
                &format!("{}m", 30 + round),
            );
            for f in ["key.pem", "svid.pem", "bundle.pem"] {
                let tmp = svid.dir.join(format!("{f}.new"));
                std::fs::copy(fresh.dir.join(f), &tmp).unwrap();
                std::fs::rename(&tmp, svid.dir.join(f)).unwrap();
            }
        }
        assert!(wait_for(Duration::from_secs(10), || expiry(&fe)
            != fe_before
            && expiry(&orders) != orders_before));
    }
    let before = ok.load(Ordering::SeqCst);
    assert!(wait_for(Duration::from_secs(10), || ok
        .load(Ordering::SeqCst)
        > before + 20));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert!(ok.load(Ordering::SeqCst) > 50);
}

#[test]
fn a_rotated_caller_svid_is_presented_on_later_requests() {
    // Through an outbound listener the upstream connection is pooled; once
    // the caller's SVID is rotated, later requests must present the new
    // certificate (the orders proxy names it in XFCC as Hash=).
    let s = setup();
    let app = RecordingApp::start();
    let orders = orders_proxy(&s, &app.addr.to_string(), "http");
    std::fs::write(s.dir.path().join("none.cedar"), "").unwrap();
    let config = format!(
        "{}[policy]\nfile = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        s.fe.identity_toml(),
        s.dir.path().join("none.cedar").display().to_string(),
        outbound("orders", &orders.inbound("in"), ORDERS, "http"),
    );
    let fe = Proxy::start(s.dir.path(), "fe", &config);
    let target = fe.outbound("orders");
    // The certificate hash in the XFCC header of the last request the app saw.
    let last_hash = || -> Option<String> {
        let seen = app.requests();
        let head = seen.last()?.to_ascii_lowercase();
        let xfcc = head
            .lines()
            .find_map(|l| l.strip_prefix("x-forwarded-client-cert:"))?;
        let hash = xfcc
            .split(';')
            .find_map(|p| p.trim().strip_prefix("hash="))?;
        Some(hash.trim().to_string())
    };
    let call = || {
        let (code, body) = http_get(&target, "/hello");
        assert_eq!(
            code,
            200,
            "{body}\n{}\n{}",
            fe.log_tail(20),
            orders.log_tail(20)
        );
        last_hash()
    };
    let old = s.fe.leaf_sha256();
    assert!(wait_for(Duration::from_secs(10), || http_get(
        &target, "/hello"
    )
    .0 == 200));
    // A few requests, so the pooled connection is the one in use.
    for _ in 0..3 {
        assert_eq!(
            call().as_deref(),
            Some(old.as_str()),
            "{:?}",
            app.requests()
        );
    }
    let expiry = || {
        let (_, m) = fe.admin_get("/metrics");
        m.lines()
            .find(|l| l.starts_with("ward_proxy_svid_expiry_seconds "))
            .unwrap_or_default()
            .to_string()
    };
    let before = expiry();
    s.fe.rotate(&s.server, &s.dir.path().join("fe-rotated"), "2h");
    let new = s.fe.leaf_sha256();
    assert_ne!(new, old);
    assert!(
        wait_for(Duration::from_secs(10), || expiry() != before),
        "the fe proxy did not reload its SVID files\n{}",
        fe.log_tail(20)
    );
    // Requests keep flowing (over the pooled connection, if it survives).
    let mut last = None;
    let rotated = wait_for(Duration::from_secs(5), || {
        last = call();
        last.as_deref() == Some(new.as_str())
    });
    assert!(
        rotated,
        "5 s after the SVID was reloaded requests still present {last:?} (old {old}, new {new}): \
         the pooled upstream connection outlived the rotation\n{}",
        fe.log_tail(20)
    );
    // And from then on only the new one.
    for _ in 0..3 {
        assert_eq!(call().as_deref(), Some(new.as_str()));
    }
}

#[test]
fn namespace_and_trust_domain_entities_are_qualified() {
    // A caller's namespace is `Ward::Namespace::"spiffe://td/ns/<ns>"`, under
    // `Ward::TrustDomain::"td"`; the unqualified name matches nothing.
    let s = setup();
    // The old unqualified spelling would match no caller (a silent dead
    // forbid): it is refused at push, with the reason.
    let old = s.dir.path().join("old.cedar");
    std::fs::write(
        &old,
        r#"forbid(principal in Ward::Namespace::"demo", action, resource);"#,
    )
    .unwrap();
    let out = s
        .server
        .ward(&["policy", "push", &old.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("can never match"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = "spiffe://proxy.test/ns/other/sa/frontend";
    let other = Svid::mint(&s.server, &s.dir.path().join("other"), other, "1h");
    push(
        &s.server,
        s.dir.path(),
        &format!(
            r#"@id("ns-demo")
permit(principal in Ward::Namespace::"spiffe://{TD}/ns/demo", action in Ward::Action::"read",
       resource in Ward::Service::"{ORDERS}") when {{ resource.path like "/ns*" }};
@id("td")
permit(principal in Ward::TrustDomain::"{TD}", action in Ward::Action::"read",
       resource in Ward::Service::"{ORDERS}") when {{ resource.path like "/td*" }};
"#
        ),
    );
    let app = RecordingApp::start();
    let proxy = orders_proxy(&s, &app.addr.to_string(), "http");
    let url = |p: &str| format!("https://{}{p}", proxy.inbound("in"));
    let (fe, ot) = ((s.fe.cert(), s.fe.key()), (other.cert(), other.key()));
    let fe = Some((fe.0.as_str(), fe.1.as_str()));
    let ot = Some((ot.0.as_str(), ot.1.as_str()));
    for (who, svid, path, want) in [
        ("demo", fe, "/ns", 200),
        ("other", ot, "/ns", 403),
        ("demo", fe, "/td", 200),
        ("other", ot, "/td", 200),
        ("demo", fe, "/old", 403), // no permit for /old
    ] {
        let (code, body) = curl_mtls(svid, &url(path), &[]);
        assert_eq!(code, want, "{who} {path}: {body}\n{}", proxy.log_tail(20));
    }
}

#[test]
fn traffic_and_decisions_continue_with_the_server_down() {
    let mut s = setup();
    let app = DemoApp::start(s.dir.path(), "orders", &[]);
    let mut orders = orders_proxy(&s, &app.addr, "http");
    let url = format!("https://{}/hello", orders.inbound("in"));
    let fe = (s.fe.cert(), s.fe.key());
    let pay = (s.pay.cert(), s.pay.key());
    assert_eq!(curl_mtls(Some((&fe.0, &fe.1)), &url, &[]).0, 200);
    s.server.kill9();
    assert_eq!(curl_mtls(Some((&fe.0, &fe.1)), &url, &[]).0, 200);
    assert_eq!(curl_mtls(Some((&pay.0, &pay.1)), &url, &[]).0, 403);
    // A restart with the server still down: the cached policy is used.
    orders.terminate();
    assert!(
        orders
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    let config = std::fs::read_to_string(s.dir.path().join("orders.toml")).unwrap();
    let orders = Proxy::start(s.dir.path(), "orders", &config);
    orders.wait_ready();
    let url = format!("https://{}/hello", orders.inbound("in"));
    assert_eq!(curl_mtls(Some((&fe.0, &fe.1)), &url, &[]).0, 200);
    assert_eq!(curl_mtls(Some((&pay.0, &pay.1)), &url, &[]).0, 403);
    assert!(orders.log_text().contains("policy loaded from the cache"));
}

#[test]
fn a_proxy_without_any_policy_denies_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), TD);
    let orders = Svid::mint(&server, &dir.path().join("orders"), ORDERS, "1h");
    let fe = Svid::mint(&server, &dir.path().join("fe"), FE, "1h");
    let app = RecordingApp::start();
    let config = format!(
        "{}{}{}",
        orders.identity_toml(),
        server_policy(&server, dir.path(), "o"),
        inbound(&app.addr.to_string(), "http")
    );
    let proxy = Proxy::start(dir.path(), "orders", &config);
    let (code, body) = proxy.admin_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        wait_for(Duration::from_secs(10), || proxy
            .log_text()
            .contains("no policy has been pushed")),
        "{}",
        proxy.log_text()
    );
    assert_eq!(
        proxy.admin_get("/readyz").0,
        503,
        "still not ready: no policy"
    );
    let (code, _) = curl_mtls(
        Some((&fe.cert(), &fe.key())),
        &format!("https://{}/", proxy.inbound("in")),
        &[],
    );
    assert_eq!(code, 403);
    assert!(app.requests().is_empty());
}

#[test]
fn grpc_works_through_two_proxies() {
    let s = setup();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A real gRPC server (the standard health service) as the app.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let app_addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("orders", tonic_health::ServingStatus::Serving)
            .await;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let orders = orders_proxy(&s, &app_addr.to_string(), "http");
    std::fs::write(s.dir.path().join("none.cedar"), "").unwrap();
    let config = format!(
        "{}[policy]\nfile = {:?}\n{}",
        s.fe.identity_toml(),
        s.dir.path().join("none.cedar").display().to_string(),
        outbound("orders", &orders.inbound("in"), ORDERS, "http"),
    );
    let fe = Proxy::start(s.dir.path(), "fe", &config);
    let out = fe.outbound("orders");
    let status = rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{out}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let a = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: "orders".into(),
            })
            .await
            .map(|r| r.into_inner().status);
        let b = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: "nope".into(),
            })
            .await
            .map(|_| ())
            .map_err(|s| s.code());
        (a, b)
    });
    assert_eq!(
        status.0.unwrap(),
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // A gRPC error status (in trailers) comes back intact.
    assert_eq!(status.1, Err(tonic::Code::NotFound));
}

#[test]
fn tcp_mode_authorizes_each_connection() {
    let s = setup();
    // An echo server as the app.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    std::thread::spawn(move || {
        for conn in echo.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut r = conn.try_clone().unwrap();
                let mut w = conn;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    let orders = orders_proxy(&s, &echo_addr.to_string(), "tcp");
    std::fs::write(s.dir.path().join("none.cedar"), "").unwrap();
    let config = |svid: &Svid| {
        format!(
            "{}[policy]\nfile = {:?}\n{}",
            svid.identity_toml(),
            s.dir.path().join("none.cedar").display().to_string(),
            outbound("orders", &orders.inbound("in"), ORDERS, "tcp"),
        )
    };
    let fe = Proxy::start(s.dir.path(), "fe", &config(&s.fe));
    let pay = Proxy::start(s.dir.path(), "pay", &config(&s.pay));
    let roundtrip = |addr: &str| -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(b"ping");
        let mut buf = [0u8; 4];
        match c.read_exact(&mut buf) {
            Ok(()) => String::from_utf8_lossy(&buf).to_string(),
            Err(_) => String::new(),
        }
    };
    assert!(wait_for(Duration::from_secs(10), || roundtrip(
        &fe.outbound("orders")
    ) == "ping"));
    let before = connections.load(Ordering::SeqCst);
    assert_eq!(
        roundtrip(&pay.outbound("orders")),
        "",
        "payments may not connect"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        before,
        "the app never saw the denied connection"
    );
}

#[test]
fn bad_configuration_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "[identity]\nworkload_api = \"/x\"\n[policy]\nfile = \"p\"\n",
            "no [[inbound]] or [[outbound]]",
        ),
        (
            "[identity]\nworkload_api = \"/x\"\n[policy]\nfile = \"p\"\n[[inbound]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\napp = \"127.0.0.1:1\"\nprotocol = \"quic\"\n",
            "quic",
        ),
        ("not toml at all [", "proxy.toml"),
    ] {
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(support::ward_bin())
            .args(["proxy", "--config", &path.display().to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn sigterm_drains_an_open_request() {
    let s = setup();
    // An app that holds its answer until the test releases it, so a request
    // is in flight at SIGTERM; it says when the request has arrived.
    let slow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let received = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r, g) = (received.clone(), release.clone());
    std::thread::spawn(move || {
        for conn in slow.incoming().flatten() {
            let (r, g) = (r.clone(), g.clone());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                r.store(true, Ordering::SeqCst);
                wait_for(Duration::from_secs(30), || g.load(Ordering::SeqCst));
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
                );
            });
        }
    });
    let mut orders = orders_proxy(&s, &slow_addr.to_string(), "http");
    let inbound = orders.inbound("in");
    let url = format!("https://{inbound}/hello");
    let (cert, key) = (s.fe.cert(), s.fe.key());
    let inflight = std::thread::spawn(move || curl_mtls(Some((&cert, &key)), &url, &[]));
    assert!(
        wait_for(Duration::from_secs(10), || received.load(Ordering::SeqCst)),
        "the request never reached the app\n{}",
        orders.log_tail(20)
    );
    let mark = orders.log_mark();
    orders.terminate();
    // The proxy has taken the signal: it stopped accepting (or says it drains).
    let draining = wait_for(Duration::from_secs(10), || {
        orders.log_since(mark).contains("draining")
            || std::net::TcpStream::connect(&inbound).is_err()
    });
    assert!(
        draining,
        "the proxy never acted on SIGTERM\n{}",
        orders.log_tail(20)
    );
    assert!(
        orders.wait_exit(Duration::ZERO).is_none(),
        "the proxy exited with a request in flight\n{}",
        orders.log_tail(20)
    );
    release.store(true, Ordering::SeqCst);
    let (code, body) = inflight.join().unwrap();
    assert_eq!(
        (code, body.as_str()),
        (200, "slow"),
        "{}",
        orders.log_tail(20)
    );
    assert!(
        orders
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn ward_up_runs_three_services_behind_agent_attested_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("up");
    let mut up = std::process::Command::new(support::ward_bin())
        .args([
            "up",
            "--data-dir",
            &data.display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up_json = data.join("up.json");
    let ready = wait_for(Duration::from_secs(90), || up_json.exists());
    if !ready {
        let _ = up.kill();
        let out = up.wait_with_output().unwrap();
        panic!("no up.json: {}", String::from_utf8_lossy(&out.stdout));
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&up_json).unwrap()).unwrap();
    let td = v["trust_domain"].as_str().unwrap().to_string();
    let svc = |name: &str, key: &str| v["services"][name][key].as_str().unwrap().to_string();
    assert_eq!(
        svc("frontend", "spiffe_id"),
        format!("spiffe://{td}/ns/demo/sa/frontend")
    );
    // frontend → orders is allowed, and orders sees frontend's verified identity.
    let (code, body) = http_get(&svc("frontend", "app"), "/call/orders/hello");
    assert_eq!(code, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(
        answer["response"]["caller"].as_str(),
        Some(svc("frontend", "spiffe_id").as_str())
    );
    // frontend → payments is denied by payments' proxy; orders → payments is allowed.
    let (_, body) = http_get(&svc("frontend", "app"), "/call/payments/hello");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        403,
        "{body}"
    );
    let (_, body) = http_get(&svc("orders", "app"), "/call/payments/charge");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        200,
        "{body}"
    );
    // The gateway in front of the frontend: a client-credentials token gets
    // through, verified with --cacert for the address it listens on (no -k).
    let gw = &v["gateway"];
    let ca = gw["cacert"].as_str().unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert", ca, "-u"])
        .arg(format!(
            "{}:{}",
            gw["client_id"].as_str().unwrap(),
            gw["client_secret"].as_str().unwrap()
        ))
        .args(["-d", "grant_type=client_credentials"])
        .arg(gw["token_endpoint"].as_str().unwrap())
        .output()
        .unwrap();
    let tok: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tok = tok["access_token"].as_str().expect("a token").to_owned();
    let gw_code = |url: &str, token: Option<&str>| -> String {
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca,
        ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        String::from_utf8_lossy(&cmd.arg(url).output().unwrap().stdout).to_string()
    };
    let protected = gw["protected_url"].as_str().unwrap();
    assert_eq!(gw_code(protected, Some(&tok)), "200");
    assert_eq!(gw_code(protected, None), "401");
    assert_eq!(
        gw_code(gw["admin_url"].as_str().unwrap(), Some(&tok)),
        "403"
    );
    let routes = gw["routes"].as_array().unwrap();
    assert!(routes.iter().any(|r| r["auth"] == "public"), "{routes:?}");
    let public = routes.iter().find(|r| r["auth"] == "public").unwrap();
    let public_url = format!(
        "{}{}/hello",
        gw["url"].as_str().unwrap(),
        public["path"].as_str().unwrap()
    );
    assert_eq!(gw_code(&public_url, None), "200");
    // Ctrl-C (SIGTERM) stops everything ward up started.
    let admin = svc("payments", "admin");
    assert_eq!(http_get(&admin, "/readyz").0, 200);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status();
    assert!(wait_for(Duration::from_secs(30), || up
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    assert!(
        wait_for(Duration::from_secs(10), || http_get(&admin, "/readyz").0
            == 0),
        "the payments proxy outlived ward up"
    );
}

#[test]
fn telemetry_reports_need_a_workload_svid_and_name_the_reporter() {
    let s = setup();
    let edge = |source: &str, destination: &str| {
        serde_json::json!({"source": source, "destination": destination, "method": "GET",
            "route": "/hello", "status_class": "2xx", "decision": "allow", "requests": 1,
            "latency_us_sum": 100, "window_start": 1, "window_end": 2})
    };
    let post = |svid: Option<&Svid>, edges: Vec<serde_json::Value>| -> u16 {
        let body = serde_json::json!({ "edges": edges }).to_string();
        let file = s.dir.path().join("batch.json");
        std::fs::write(&file, body).unwrap();
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            s.server.cacert(),
        ]);
        if let Some(v) = svid {
            cmd.args(["--cert", &v.cert(), "--key", &v.key()]);
        }
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(format!("{}/v1/proxy/telemetry", s.server.addr()));
        String::from_utf8_lossy(&cmd.output().unwrap().stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    // A large batch (over the 64 KiB limit of other bodies) from the destination's proxy.
    let many: Vec<_> = (0..400)
        .map(|i| edge(&format!("spiffe://{TD}/ns/demo/sa/c{i}"), ORDERS))
        .collect();
    assert_eq!(post(Some(&s.orders), many), 200);
    // An edge the reporter is not an end of, and no certificate at all.
    assert_eq!(post(Some(&s.orders), vec![edge(FE, PAY)]), 400);
    assert_eq!(post(None, vec![edge(FE, ORDERS)]), 401);
    let v = s.server.ward_json(&["telemetry", "edges"]);
    let edges = v["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 400);
    assert!(edges.iter().all(|e| e["destination"] == ORDERS));
}
