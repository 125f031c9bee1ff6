//! The data plane end to end: a real `ward proxy` with file identity (a CA
//! made with openssl here, never committed) in front of apps written in the
//! test. Who may even finish a handshake (trust domains, federation, workload
//! IDs), strict HTTP/1.1 parsing before the app, HTTP/2 floods, connections
//! that end when trust or time runs out, and `ward policy explain` deciding
//! exactly as the proxy does.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::proxy::{Proxy, RecordingApp};
use support::raw::{
    Ca, CurlOut, EchoApp, Holder, Leaf, curl, h2, metric_sum, raw_http, strip_ansi, tail, unix_now,
    write_atomic,
};
use support::wait_for;

const TD: &str = "dp.test";
const ORDERS: &str = "spiffe://dp.test/ns/demo/sa/orders";
const FE: &str = "spiffe://dp.test/ns/demo/sa/frontend";
const PAY: &str = "spiffe://dp.test/ns/demo/sa/payments";
const ALLOW_ALL: &str = "@id(\"allow-everyone\")\npermit(principal, action, resource);\n";
const DENIALS: &str = "ward_proxy_denials_total";
/// How a refusal for a chain that does not lead to the ID's own trust domain's bundle may read.
/// How a refusal for a trust domain that is neither ours nor federated may read.
const OTHER_TD: &[&str] = &["trust domain", "other.test"];
const ISSUER: &[&str] = &["issuer", "bundle", "chain"];

/// A test directory, the dp.test CA, the proxy's SVID (orders) and the frontend's.
struct Env {
    dir: tempfile::TempDir,
    ca: Ca,
    orders: Leaf,
    fe: Leaf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "dp");
    let orders = ca.leaf("orders", ORDERS);
    let fe = ca.leaf("frontend", FE);
    Env {
        dir,
        ca,
        orders,
        fe,
    }
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The bundle file the proxy reads (the dp.test CA unless replaced).
    fn bundle(&self) -> PathBuf {
        let p = self.path("bundle.pem");
        if !p.exists() {
            std::fs::write(&p, self.ca.cert_pem()).unwrap();
        }
        p
    }

    /// `[identity]` with the orders SVID and `federation` = [(trust domain, bundle file)].
    fn identity(&self, federation: &[(&str, &Path)]) -> String {
        let mut t = format!(
            "[identity]\nsvid = {:?}\nkey = {:?}\nbundle = {:?}\n",
            self.orders.cert,
            self.orders.key,
            self.bundle().display().to_string()
        );
        for (td, bundle) in federation {
            t.push_str(&format!(
                "[[identity.federation]]\ntrust_domain = {td:?}\nbundle = {:?}\n",
                bundle.display().to_string()
            ));
        }
        t
    }

    /// Starts proxy `name` (policy file `<name>.cedar` with `policy`) in front
    /// of `app`, and waits until it is ready. `extra` is appended to the config.
    fn proxy(
        &self,
        name: &str,
        federation: &[(&str, &Path)],
        policy: &str,
        app: &str,
        protocol: &str,
        extra: &str,
    ) -> Proxy {
        let policy_file = self.policy_file(name);
        write_atomic(&policy_file, policy);
        let config = format!(
            "{}[policy]\nfile = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[inbound]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\napp = {app:?}\nprotocol = {protocol:?}\n{extra}",
            self.identity(federation),
            policy_file.display().to_string(),
        );
        let p = Proxy::start(self.dir.path(), name, &config);
        p.wait_ready();
        p
    }

    fn policy_file(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.cedar"))
    }
}

fn url(proxy: &Proxy, path: &str) -> String {
    format!("https://{}{path}", proxy.inbound("in"))
}

fn log(proxy: &Proxy) -> String {
    strip_ansi(&proxy.log_text())
}

fn log_tail(proxy: &Proxy) -> String {
    tail(&log(proxy), 40)
}

fn refused_lines(proxy: &Proxy) -> Vec<String> {
    log(proxy)
        .lines()
        .filter(|l| l.contains("TLS handshake refused"))
        .map(str::to_string)
        .collect()
}

fn metrics(proxy: &Proxy) -> String {
    let (code, body) = proxy.admin_get("/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// Asserts that `leaf` (or no certificate) gets no HTTP answer at all from
/// `proxy`, and that the proxy logged a refused handshake naming one of `reasons`.
fn assert_refused_at_handshake(
    proxy: &Proxy,
    leaf: Option<&Leaf>,
    path: &str,
    extra: &[&str],
    reasons: &[&str],
) {
    let before = refused_lines(proxy).len();
    let out = curl(leaf, &url(proxy, path), extra);
    let who = leaf.map(|l| l.id.as_str()).unwrap_or("no certificate");
    assert!(
        out.code == 0 && out.exit != 0,
        "{who}: expected a refused handshake (no HTTP status, curl failing), got {}\n{}",
        out.brief(),
        log_tail(proxy)
    );
    if reasons.is_empty() {
        return;
    }
    let logged = wait_for(Duration::from_secs(5), || {
        refused_lines(proxy).len() > before
    });
    assert!(
        logged,
        "{who}: no new \"TLS handshake refused\" line in the proxy log:\n{}",
        log_tail(proxy)
    );
    let new = refused_lines(proxy)[before..].join("\n");
    let lower = new.to_ascii_lowercase();
    assert!(
        reasons
            .iter()
            .any(|r| lower.contains(&r.to_ascii_lowercase())),
        "{who}: the refusal does not name the reason (any of {reasons:?}):\n{new}"
    );
}

fn expect_status(out: &CurlOut, code: u16, what: &str, proxy: &Proxy) {
    assert_eq!(
        out.code,
        code,
        "{what}: {}\nproxy log:\n{}",
        out.brief(),
        log_tail(proxy)
    );
}

#[test]
fn only_workloads_of_our_own_or_a_federated_trust_domain_complete_the_handshake() {
    let e = env();
    let partner = Ca::new(e.dir.path(), "partner");
    let partner_bundle = e.path("partner-bundle.pem");
    std::fs::write(&partner_bundle, partner.cert_pem()).unwrap();
    let partner_fe = partner.leaf("frontend", "spiffe://partner.test/ns/demo/sa/frontend");
    // The same CA as ours, another trust domain; no workload path; partner IDs
    // from the wrong anchor, and our IDs from the partner's anchor.
    let other =
        e.ca.leaf("other", "spiffe://other.test/ns/demo/sa/frontend");
    let bare = e.ca.leaf("bare", "spiffe://dp.test");
    let forged_partner = e.ca.leaf(
        "forged-partner",
        "spiffe://partner.test/ns/demo/sa/frontend",
    );
    let forged_ours = partner.leaf("forged-ours", FE);
    let app = RecordingApp::start();
    let proxy = e.proxy(
        "fed",
        &[("partner.test", &partner_bundle)],
        ALLOW_ALL,
        &app.addr.to_string(),
        "http",
        "",
    );

    expect_status(
        &curl(Some(&e.fe), &url(&proxy, "/td-own"), &[]),
        200,
        "our frontend under allow-all",
        &proxy,
    );
    expect_status(
        &curl(Some(&partner_fe), &url(&proxy, "/td-partner"), &[]),
        200,
        "a federated partner caller under allow-all",
        &proxy,
    );
    assert!(
        app.saw("/td-own") && app.saw("/td-partner"),
        "{:?}",
        app.request_lines()
    );

    assert_refused_at_handshake(&proxy, Some(&other), "/td-other", &[], OTHER_TD);
    assert_refused_at_handshake(&proxy, Some(&bare), "/td-bare", &[], &["workload"]);
    assert_refused_at_handshake(
        &proxy,
        Some(&forged_partner),
        "/td-forged-partner",
        &[],
        ISSUER,
    );
    assert_refused_at_handshake(&proxy, Some(&forged_ours), "/td-forged-ours", &[], ISSUER);
    assert_refused_at_handshake(
        &proxy,
        None,
        "/td-none",
        &[],
        &["no certificate", "NoCertificatesPresented"],
    );
    // TLS 1.3 only.
    assert_refused_at_handshake(&proxy, Some(&e.fe), "/td-tls12", &["--tls-max", "1.2"], &[]);
    for marker in [
        "/td-other",
        "/td-bare",
        "/td-forged-partner",
        "/td-forged-ours",
        "/td-none",
        "/td-tls12",
    ] {
        assert!(
            !app.saw(marker),
            "{marker} reached the app: {:?}",
            app.request_lines()
        );
    }

    // Namespaces are trust-domain qualified: dp.test's "demo" is not partner.test's "demo".
    // (The other.test permit must not matter: its callers never finish a handshake.)
    write_atomic(
        &e.policy_file("fed"),
        "@id(\"demo-ns\")\npermit(principal in Ward::Namespace::\"spiffe://dp.test/ns/demo\", action, resource);\n\
         @id(\"other-ns\")\npermit(principal in Ward::Namespace::\"spiffe://other.test/ns/demo\", action, resource);\n",
    );
    assert!(
        wait_for(Duration::from_secs(10), || curl(
            Some(&partner_fe),
            &url(&proxy, "/ns-partner"),
            &[]
        )
        .code
            == 403),
        "partner.test/ns/demo is not in Namespace spiffe://dp.test/ns/demo\n{}",
        log_tail(&proxy)
    );
    // (The polls above may have passed under allow-all before the reload.)
    expect_status(
        &curl(Some(&partner_fe), &url(&proxy, "/ns-partner-denied"), &[]),
        403,
        "partner.test/ns/demo under a dp.test namespace permit",
        &proxy,
    );
    expect_status(
        &curl(Some(&e.fe), &url(&proxy, "/ns-own"), &[]),
        200,
        "our frontend is in Namespace spiffe://dp.test/ns/demo",
        &proxy,
    );
    // The policy even permits the namespace other.test's caller claims: still no handshake.
    assert_refused_at_handshake(&proxy, Some(&other), "/ns-other", &[], OTHER_TD);
    // A whole trust domain as the principal's ancestor.
    write_atomic(
        &e.policy_file("fed"),
        "@id(\"partner-td\")\npermit(principal in Ward::TrustDomain::\"partner.test\", action, resource);\n",
    );
    assert!(
        wait_for(Duration::from_secs(10), || curl(
            Some(&partner_fe),
            &url(&proxy, "/tdp-partner"),
            &[]
        )
        .code
            == 200),
        "principal in Ward::TrustDomain::\"partner.test\"\n{}",
        log_tail(&proxy)
    );
    expect_status(
        &curl(Some(&e.fe), &url(&proxy, "/tdp-own"), &[]),
        403,
        "dp.test's frontend is not in TrustDomain partner.test",
        &proxy,
    );
    for marker in ["/ns-partner-denied", "/tdp-own", "/ns-other"] {
        assert!(
            !app.saw(marker),
            "{marker} reached the app: {:?}",
            app.request_lines()
        );
    }
    assert!(app.saw("/ns-own"), "{:?}", app.request_lines());

    // Without the federation entry the partner is just another trust domain.
    let plain = e.proxy("plain", &[], ALLOW_ALL, &app.addr.to_string(), "http", "");
    expect_status(
        &curl(Some(&e.fe), &url(&plain, "/plain-own"), &[]),
        200,
        "our frontend on the proxy without federation",
        &plain,
    );
    assert_refused_at_handshake(
        &plain,
        Some(&partner_fe),
        "/plain-partner",
        &[],
        &["trust domain", "partner.test"],
    );
    assert!(!app.saw("/plain-partner"));
}

/// One raw HTTP/1.1 case: the bytes, the expected status, and whether the app
/// must have seen a head containing `marker` (only for the well-formed controls).
struct Case {
    marker: &'static str,
    request: Vec<u8>,
    status: u16,
    reaches_app: bool,
}

fn case(marker: &'static str, request: &[u8], status: u16) -> Case {
    Case {
        marker,
        request: request.to_vec(),
        status,
        reaches_app: status == 200,
    }
}

#[test]
fn malformed_http1_is_refused_before_the_app_sees_anything() {
    let e = env();
    let app = RecordingApp::start();
    let proxy = e.proxy(
        "strict",
        &[],
        ALLOW_ALL,
        &app.addr.to_string(),
        "http",
        "[limits]\nmax_body_bytes = 1024\n",
    );
    let addr = proxy.inbound("in");
    let mut late_bad = b"POST /chunk-late-bad HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n".to_vec();
    late_bad.extend(std::iter::repeat_n(b'a', 0x200));
    late_bad.extend_from_slice(b"\r\nzz\r\nhello\r\n0\r\n\r\n");
    let mut at_limit =
        b"POST /body-at-limit HTTP/1.1\r\nHost: orders\r\nContent-Length: 1024\r\n\r\n".to_vec();
    at_limit.extend(std::iter::repeat_n(b'b', 1024));
    let cases = vec![
        // Well-formed controls: they must pass, or the refusals below prove nothing.
        case(
            "/ok-plain",
            b"GET /ok-plain HTTP/1.1\r\nHost: orders\r\n\r\n",
            200,
        ),
        case(
            "/ok-chunked",
            b"POST /ok-chunked HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            200,
        ),
        case(
            "/ok-length",
            b"POST /ok-length HTTP/1.1\r\nHost: orders\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            200,
        ),
        Case {
            marker: "/body-at-limit",
            request: at_limit,
            status: 200,
            reaches_app: true,
        },
        // Refused.
        case(
            "/dup-host",
            b"GET /dup-host HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        case(
            "/te-double-chunked",
            b"POST /te-double-chunked HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        case(
            "/te-gzip-chunked",
            b"POST /te-gzip-chunked HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            501,
        ),
        // Chunked not final: the body length cannot be determined, 400 (RFC 9112 §6.3).
        case(
            "/te-identity",
            b"POST /te-identity HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: identity\r\n\r\n",
            400,
        ),
        case(
            "/cl-and-te",
            b"POST /cl-and-te HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "/te-and-cl",
            b"POST /te-and-cl HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "/chunk-hex-prefix",
            b"POST /chunk-hex-prefix HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        case(
            "/chunk-overlong",
            b"POST /chunk-overlong HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        case(
            "/chunk-bare-lf",
            b"POST /chunk-bare-lf HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            400,
        ),
        Case {
            marker: "/chunk-late-bad",
            request: late_bad,
            status: 400,
            reaches_app: false,
        },
        case(
            "/lower-connect",
            b"connect /lower-connect HTTP/1.1\r\nHost: orders\r\n\r\n",
            501,
        ),
        case(
            "/lower-get",
            b"get /lower-get HTTP/1.1\r\nHost: orders\r\n\r\n",
            501,
        ),
        case(
            "/brew",
            b"BREW /brew HTTP/1.1\r\nHost: orders\r\n\r\n",
            501,
        ),
        case(
            "connect-target.test",
            b"CONNECT connect-target.test:443 HTTP/1.1\r\nHost: connect-target.test:443\r\n\r\n",
            501,
        ),
        // The body is never sent: the answer must come from the declared length alone.
        case(
            "/too-big-body",
            b"POST /too-big-body HTTP/1.1\r\nHost: orders\r\nContent-Length: 100000\r\n\r\n",
            413,
        ),
        case(
            "/raw-byte-",
            b"GET /raw-byte-\xff HTTP/1.1\r\nHost: orders\r\n\r\n",
            400,
        ),
        case(
            "/dup-content-type",
            b"POST /dup-content-type HTTP/1.1\r\nHost: orders\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            400,
        ),
        case(
            "/dup-user-agent",
            b"GET /dup-user-agent HTTP/1.1\r\nHost: orders\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n",
            400,
        ),
        case(
            "/abs-host",
            b"GET https://a.test/abs-host HTTP/1.1\r\nHost: b.test\r\n\r\n",
            400,
        ),
    ];

    let mut failures = Vec::new();
    let mut table = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let started = Instant::now();
        let answer = raw_http(&addr, &e.fe, &c.request);
        let took = started.elapsed();
        table.push(format!(
            "{:<22} expected {} got {} ({:.1}s) {}",
            c.marker,
            c.status,
            answer.status,
            took.as_secs_f64(),
            answer.error
        ));
        if answer.status != c.status {
            failures.push(format!(
                "{}: expected {}, got {} {:?} {}",
                c.marker, c.status, answer.status, answer.head, answer.error
            ));
        }
        if c.status == 400
            && answer.status == 400
            && !answer
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            failures.push(format!(
                "{}: a 400 without `Connection: close`: {:?}",
                c.marker, answer.head
            ));
        }
        if c.status == 413 && took > Duration::from_secs(5) {
            failures.push(format!(
                "{}: the 413 waited for a body that was never sent ({took:?})",
                c.marker
            ));
        }
        // A valid request on a new connection afterwards: served and recorded.
        let after = format!("/after-{i}");
        let next = raw_http(
            &addr,
            &e.fe,
            format!("GET {after} HTTP/1.1\r\nHost: orders\r\n\r\n").as_bytes(),
        );
        if next.status != 200 {
            failures.push(format!(
                "after {}: the next valid request got {} {:?} {}",
                c.marker, next.status, next.head, next.error
            ));
        } else if !wait_for(Duration::from_secs(5), || {
            app.saw(&format!("{after} HTTP/1.1"))
        }) {
            failures.push(format!(
                "after {}: {after} was answered 200 but never recorded",
                c.marker
            ));
        }
        let saw = app.saw(c.marker);
        if saw != c.reaches_app {
            failures.push(format!(
                "{}: the app {} the request",
                c.marker,
                if saw { "saw" } else { "never saw" }
            ));
        }
    }
    // Nothing refused showed up late either.
    for c in cases.iter().filter(|c| !c.reaches_app) {
        if app.saw(c.marker) {
            failures.push(format!("{}: reached the app (seen at the end)", c.marker));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}\n\nall cases:\n{}\n\nrequests the app saw:\n{:#?}\n\nproxy log:\n{}",
        failures.len(),
        failures.join("\n"),
        table.join("\n"),
        app.request_lines(),
        log_tail(&proxy)
    );
}

#[test]
fn a_body_that_stalls_after_its_checked_start_is_refused_and_never_completes_at_the_app() {
    let e = env();
    let app = RecordingApp::start();
    // Bodies over 64 KiB stream after their checked start; a 2 s pause
    // in the rest breaks the body.
    let proxy = e.proxy(
        "stall",
        &[],
        ALLOW_ALL,
        &app.addr.to_string(),
        "http",
        "[limits]\nheader_timeout = \"2s\"\n",
    );
    let addr = proxy.inbound("in");
    let mut request =
        b"POST /stalled HTTP/1.1\r\nHost: orders\r\nContent-Length: 100000\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'a', 70_000));
    let started = Instant::now();
    let answer = raw_http(&addr, &e.fe, &request);
    assert_eq!(
        answer.status,
        400,
        "{answer:?}\n{}",
        tail(&proxy.log_text(), 20)
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        answer
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close")),
        "{answer:?}"
    );
    // The app got the start of it, and never a complete request.
    assert!(app.saw("/stalled"), "{:?}", app.request_lines());
    assert!(
        app.complete().iter().all(|(h, _)| !h.contains("/stalled")),
        "the app got the whole stalled request"
    );
    // A body that keeps coming is forwarded whole.
    let mut whole =
        b"POST /whole HTTP/1.1\r\nHost: orders\r\nContent-Length: 70000\r\n\r\n".to_vec();
    whole.extend(std::iter::repeat_n(b'b', 70_000));
    assert_eq!(raw_http(&addr, &e.fe, &whole).status, 200);
    assert!(wait_for(Duration::from_secs(5), || app
        .complete()
        .iter()
        .any(|(h, b)| h.contains("/whole") && b.len() == 70_000)));
}

#[test]
fn requests_the_http_layer_refuses_itself_are_counted() {
    let e = env();
    let app = RecordingApp::start();
    let proxy = e.proxy(
        "layer",
        &[],
        ALLOW_ALL,
        &app.addr.to_string(),
        "http",
        "[limits]\nmax_header_bytes = 8192\n",
    );
    let addr = proxy.inbound("in");
    let mut request = b"GET /huge-head HTTP/1.1\r\nHost: orders\r\nx-filler: ".to_vec();
    request.extend(std::iter::repeat_n(b'f', 20_000));
    request.extend_from_slice(b"\r\n\r\n");
    let answer = raw_http(&addr, &e.fe, &request);
    assert_eq!(answer.status, 431, "{answer:?}");
    assert!(!app.saw("/huge-head"));
    let counted = || {
        let (_, m) = proxy.admin_get("/metrics");
        metric_sum(
            &m,
            "ward_proxy_rejected_requests_total",
            &[("reason", "head_too_large")],
        )
    };
    assert!(
        wait_for(Duration::from_secs(5), || counted() == Some(1.0)),
        "{:?}\n{}",
        counted(),
        tail(&proxy.log_text(), 10)
    );
}

/// An app that answers each request and then closes its connection
/// without saying so (as an app with a short keep-alive does); counts the
/// connections it accepted.
fn closing_app() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let mut conn = conn;
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                // Dropped: closed after one answer.
            });
        }
    });
    (addr, accepted)
}

#[test]
fn a_caller_connection_gets_a_new_app_connection_when_the_app_closed_its_own() {
    let e = env();
    let (app, accepted) = closing_app();
    let proxy = e.proxy("closing", &[], ALLOW_ALL, &app, "http", "");
    let mut caller = Holder::open(&proxy.inbound("in"), &e.fe);
    for i in 0..3 {
        let before = accepted.load(Ordering::SeqCst);
        let (code, line) = caller.request(&format!("/again-{i}"));
        assert_eq!(
            code,
            200,
            "request {i}: {line}\n{}",
            tail(&proxy.log_text(), 10)
        );
        assert_eq!(accepted.load(Ordering::SeqCst), before + 1, "request {i}");
    }
}

#[test]
fn a_forbid_on_host_applies_to_http2_authority_and_duplicate_hosts_are_refused() {
    let e = env();
    let app = RecordingApp::start();
    let policy = format!(
        "{ALLOW_ALL}@id(\"no-evil-host\")\nforbid(principal, action, resource) when {{ context.headers has \"host\" && context.headers[\"host\"] == \"evil.test\" }};\n"
    );
    let proxy = e.proxy("host", &[], &policy, &app.addr.to_string(), "http", "");
    let addr = proxy.inbound("in");

    // HTTP/2: curl turns a custom Host into :authority and sends no host header.
    let ok = curl(
        Some(&e.fe),
        &url(&proxy, "/h2-ok"),
        &["--http2", "-v", "-H", "Host: ok.test"],
    );
    assert_eq!(
        (ok.code, ok.version.as_str()),
        (200, "2"),
        "{}\n{}",
        ok.brief(),
        log_tail(&proxy)
    );
    let evil = curl(
        Some(&e.fe),
        &url(&proxy, "/h2-evil"),
        &["--http2", "-v", "-H", "Host: evil.test"],
    );
    assert!(
        evil.stderr.contains("[:authority: evil.test]") && !evil.stderr.contains("[host:"),
        "curl did not send :authority evil.test alone: {}",
        evil.brief()
    );
    assert_eq!(
        (evil.code, evil.version.as_str(), evil.body.as_str()),
        (403, "2", "forbidden\n"),
        "{}\n{}",
        evil.brief(),
        log_tail(&proxy)
    );
    // The same over raw frames, and :authority disagreeing with a host header.
    let raw = h2(
        &addr,
        &e.fe,
        "request",
        serde_json::json!({"headers": [[":method", "GET"], [":scheme", "https"],
            [":path", "/h2-raw-evil"], [":authority", "evil.test"]]}),
    );
    assert_eq!(raw["alpn"], "h2", "{raw}");
    assert_eq!(raw["status"], 403, "{raw}\n{}", log_tail(&proxy));
    let split = h2(
        &addr,
        &e.fe,
        "request",
        serde_json::json!({"headers": [[":method", "GET"], [":scheme", "https"],
            [":path", "/h2-split"], [":authority", "ok.test"], ["host", "evil.test"]]}),
    );
    assert_eq!(split["status"], 400, "{split}\n{}", log_tail(&proxy));

    // HTTP/1.1: one evil Host is denied by the policy; two hosts never get a decision.
    let one = raw_http(
        &addr,
        &e.fe,
        b"GET /h1-evil HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    );
    assert_eq!(one.status, 403, "{one:?}\n{}", log_tail(&proxy));
    for (marker, req) in [
        (
            "/h1-two-hosts",
            &b"GET /h1-two-hosts HTTP/1.1\r\nHost: ok\r\nHost: evil.test\r\n\r\n"[..],
        ),
        (
            "/h1-two-hosts-rev",
            &b"GET /h1-two-hosts-rev HTTP/1.1\r\nHost: evil.test\r\nHost: ok\r\n\r\n"[..],
        ),
    ] {
        let a = raw_http(&addr, &e.fe, req);
        assert_eq!(a.status, 400, "{marker}: {a:?}\n{}", log_tail(&proxy));
    }
    let fine = raw_http(&addr, &e.fe, b"GET /h1-ok HTTP/1.1\r\nHost: ok\r\n\r\n");
    assert_eq!(fine.status, 200, "{fine:?}");
    assert!(
        app.saw("/h2-ok") && app.saw("/h1-ok"),
        "{:?}",
        app.request_lines()
    );
    for marker in [
        "/h2-evil",
        "/h2-raw-evil",
        "/h2-split",
        "/h1-evil",
        "/h1-two-hosts",
    ] {
        assert!(
            !app.saw(marker),
            "{marker} reached the app: {:?}",
            app.request_lines()
        );
    }

    // The three policy denials name the forbid, in /metrics and in the log.
    let m = metrics(&proxy);
    assert_eq!(
        metric_sum(
            &m,
            DENIALS,
            &[("reason", "policy"), ("policy", "no-evil-host")]
        ),
        Some(3.0),
        "{DENIALS}{{reason=\"policy\",policy=\"no-evil-host\"}} should be 3:\n{}",
        m.lines()
            .filter(|l| l.contains("denials"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let text = log(&proxy);
    assert!(
        text.lines()
            .any(|l| l.contains("denied") && l.contains("no-evil-host") && l.contains(FE)),
        "no log line with \"denied\", the caller and no-evil-host:\n{}",
        log_tail(&proxy)
    );
}

#[test]
fn http2_continuation_and_rapid_reset_floods_end_the_connection() {
    let e = env();
    let app = RecordingApp::start();
    let proxy = e.proxy("flood", &[], ALLOW_ALL, &app.addr.to_string(), "http", "");
    let addr = proxy.inbound("in");
    let h2_ok = |path: &str| {
        let out = curl(Some(&e.fe), &url(&proxy, path), &["--http2"]);
        assert_eq!(
            (out.code, out.version.as_str()),
            (200, "2"),
            "{path}: {}\n{}",
            out.brief(),
            log_tail(&proxy)
        );
    };
    h2_ok("/before");

    // (a) HEADERS without END_HEADERS, then CONTINUATION frames of header bytes (~1 KB each).
    let started = Instant::now();
    let r = h2(
        &addr,
        &e.fe,
        "continuation",
        serde_json::json!({"frames": 10000}),
    );
    let took = started.elapsed();
    assert_eq!(r["alpn"], "h2", "{r}");
    assert_eq!(
        r["server_settings"], true,
        "no HTTP/2 SETTINGS from the proxy: {r}"
    );
    let how = r["closed"].as_str().unwrap_or("");
    assert!(
        !how.is_empty() && r["send_error"] != "stalled",
        "the CONTINUATION flood did not end the connection (GOAWAY or EOF): {r}\n{}",
        log_tail(&proxy)
    );
    assert!(
        r["sent"].as_u64().unwrap() < r["total"].as_u64().unwrap(),
        "all {} CONTINUATION frames (~10 MB of header block) were accepted before the close: {r}",
        r["total"]
    );
    assert!(took < Duration::from_secs(30), "{took:?}: {r}");
    eprintln!(
        "CONTINUATION flood: closed by {how} (GOAWAY code {}) after {} of {} frames in {took:?}",
        r["goaway_code"], r["sent"], r["total"]
    );
    assert!(!app.saw("/flood"), "the flooded request reached the app");
    h2_ok("/after-continuation");

    // (b) Rapid reset: HEADERS (END_STREAM) + RST_STREAM(CANCEL), 1000 times.
    let started = Instant::now();
    let r = h2(
        &addr,
        &e.fe,
        "rapid-reset",
        serde_json::json!({"streams": 1000}),
    );
    let took = started.elapsed();
    assert_eq!(r["alpn"], "h2", "{r}");
    let how = r["closed"].as_str().unwrap_or("");
    assert!(
        !how.is_empty() && r["send_error"] != "stalled",
        "rapid reset did not end the connection (GOAWAY or EOF): {r}\n{}",
        log_tail(&proxy)
    );
    assert!(took < Duration::from_secs(30), "{took:?}: {r}");
    eprintln!(
        "rapid reset: closed by {how} (GOAWAY code {}) after {} of {} streams",
        r["goaway_code"], r["sent"], r["total"]
    );

    // The proxy keeps serving, over both protocols.
    h2_ok("/after-reset");
    let out = curl(Some(&e.fe), &url(&proxy, "/after-reset-h1"), &["--http1.1"]);
    assert_eq!(out.code, 200, "{}", out.brief());
    assert!(app.saw("/after-continuation") && app.saw("/after-reset"));
}

#[test]
fn an_open_connection_is_closed_when_the_callers_certificate_expires() {
    let e = env();
    let app = RecordingApp::start();
    // Long header/idle timeouts: nothing but the expiry may close the connection.
    let proxy = e.proxy(
        "expiry",
        &[],
        ALLOW_ALL,
        &app.addr.to_string(),
        "http",
        "[limits]\nheader_timeout = \"5m\"\nidle_timeout = \"5m\"\n",
    );
    let addr = proxy.inbound("in");
    let (short, not_after) =
        e.ca.leaf_expiring_in("short", "spiffe://dp.test/ns/demo/sa/short", 20);
    let mut held = Holder::open(&addr, &short);
    assert!(held.connected, "{}\n{}", held.first_line, log_tail(&proxy));
    let (code, line) = held.request("/exp-1");
    assert_eq!(code, 200, "{line}\n{}", log_tail(&proxy));
    let (code, line) = held.request("/exp-2");
    assert_eq!(code, 200, "keep-alive: {line}");
    // A caller whose certificate stays valid, on its own connection.
    let mut control = Holder::open(&addr, &e.fe);
    assert_eq!(control.request("/ctl-1").0, 200);

    let wait = (not_after as f64 - unix_now()) + 10.0;
    let closed = held.wait_closed(wait);
    let Some((at, how)) = closed else {
        panic!(
            "the connection of a caller whose certificate expired at {not_after} is still open at {}\n{}",
            unix_now(),
            log_tail(&proxy)
        );
    };
    assert!(
        at >= not_after as f64 - 1.0,
        "closed ({how}) at {at:.1}, before the certificate expired ({not_after})"
    );
    assert!(
        at <= not_after as f64 + 5.0,
        "closed ({how}) only at {at:.1}, {:.1}s after the certificate expired",
        at - not_after as f64
    );
    let (code, line) = control.request("/ctl-2");
    assert_eq!(
        code, 200,
        "a caller with a valid certificate lost its connection: {line}"
    );
    // A new connection with the expired certificate gets nowhere.
    assert_refused_at_handshake(&proxy, Some(&short), "/exp-new", &[], &["expired"]);
}

#[test]
fn an_open_connection_is_closed_when_an_intermediate_of_the_callers_chain_expires() {
    let e = env();
    let app = RecordingApp::start();
    let proxy = e.proxy(
        "intermediate",
        &[],
        ALLOW_ALL,
        &app.addr.to_string(),
        "http",
        "[limits]\nheader_timeout = \"5m\"\nidle_timeout = \"5m\"\n",
    );
    let addr = proxy.inbound("in");
    // The leaf is valid for a day; the intermediate that issued it for 20 s.
    let (intermediate, not_after) = e.ca.intermediate_expiring_in("short-ica", 20);
    let caller = intermediate.chain_leaf("via-ica", "spiffe://dp.test/ns/demo/sa/via-ica");
    let mut held = Holder::open(&addr, &caller);
    assert!(held.connected, "{}\n{}", held.first_line, log_tail(&proxy));
    let (code, line) = held.request("/ica-1");
    assert_eq!(code, 200, "{line}\n{}", log_tail(&proxy));
    let wait = (not_after as f64 - unix_now()) + 10.0;
    let Some((at, how)) = held.wait_closed(wait) else {
        panic!(
            "the connection is still open after the intermediate expired at {not_after}\n{}",
            log_tail(&proxy)
        );
    };
    assert!(
        at >= not_after as f64 - 1.0 && at <= not_after as f64 + 5.0,
        "closed ({how}) at {at:.1}; the intermediate expired at {not_after}"
    );
}

#[test]
fn an_open_connection_is_closed_when_the_bundle_stops_trusting_the_caller() {
    let e = env();
    let retiring = Ca::new(e.dir.path(), "retiring");
    // The bundle trusts both CAs at first.
    std::fs::write(
        e.bundle(),
        format!("{}{}", e.ca.cert_pem(), retiring.cert_pem()),
    )
    .unwrap();
    let legacy = retiring.leaf("legacy", "spiffe://dp.test/ns/demo/sa/legacy");
    let app = RecordingApp::start();
    let proxy = e.proxy(
        "bundle",
        &[],
        ALLOW_ALL,
        &app.addr.to_string(),
        "http",
        "[limits]\nheader_timeout = \"5m\"\nidle_timeout = \"5m\"\n",
    );
    let addr = proxy.inbound("in");
    let mut old = Holder::open(&addr, &legacy);
    assert!(old.connected, "{}\n{}", old.first_line, log_tail(&proxy));
    assert_eq!(old.request("/legacy-1").0, 200, "{}", log_tail(&proxy));
    let mut kept = Holder::open(&addr, &e.fe);
    assert_eq!(kept.request("/kept-1").0, 200);

    // The retiring CA leaves the bundle.
    let replaced = unix_now();
    write_atomic(&e.bundle(), &e.ca.cert_pem());
    let closed = old.wait_closed(10.0);
    let Some((at, how)) = closed else {
        panic!(
            "the connection of a caller the bundle no longer trusts is still open 10 s later\n{}",
            log_tail(&proxy)
        );
    };
    assert!(
        at - replaced <= 6.0,
        "closed ({how}) {:.1}s after the bundle changed",
        at - replaced
    );
    let (code, line) = kept.request("/kept-2");
    assert_eq!(
        code, 200,
        "a caller the new bundle still trusts lost its connection: {line}"
    );
    assert_refused_at_handshake(&proxy, Some(&legacy), "/legacy-new", &[], ISSUER);
    assert!(!app.saw("/legacy-new"));
}

#[test]
fn a_tcp_connection_is_closed_when_the_policy_stops_allowing_it() {
    let e = env();
    let pay = e.ca.leaf("payments", PAY);
    let echo = EchoApp::start();
    let permit_both = format!(
        "@id(\"fe-tcp\")\npermit(principal == Ward::Service::\"{FE}\", action == Ward::Action::\"connect\", resource);\n\
         @id(\"pay-tcp\")\npermit(principal == Ward::Service::\"{PAY}\", action == Ward::Action::\"connect\", resource);\n"
    );
    let proxy = e.proxy("tcp", &[], &permit_both, &echo.addr.to_string(), "tcp", "");
    let addr = proxy.inbound("in");
    let mut fe = Holder::open(&addr, &e.fe);
    assert!(fe.connected, "{}", fe.first_line);
    let (ok, line) = fe.echo("ping-fe");
    assert!(
        ok,
        "echo through the TCP listener: {line}\n{}",
        log_tail(&proxy)
    );
    let mut p = Holder::open(&addr, &pay);
    let (ok, line) = p.echo("ping-pay");
    assert!(ok, "{line}");

    // frontend loses its permission; payments keeps its own.
    let changed = unix_now();
    write_atomic(
        &e.policy_file("tcp"),
        &format!(
            "@id(\"pay-tcp\")\npermit(principal == Ward::Service::\"{PAY}\", action == Ward::Action::\"connect\", resource);\n\
             @id(\"fe-cut\")\nforbid(principal == Ward::Service::\"{FE}\", action, resource);\n"
        ),
    );
    let closed = fe.wait_closed(10.0);
    let Some((at, how)) = closed else {
        panic!(
            "the TCP connection the policy no longer allows is still open 10 s later\n{}",
            log_tail(&proxy)
        );
    };
    assert!(
        at - changed <= 6.0,
        "closed ({how}) {:.1}s after the policy changed",
        at - changed
    );
    let (ok, line) = p.echo("still-pay");
    assert!(ok, "an allowed TCP connection was cut too: {line}");
    // A new frontend connection gets no echo.
    let before = echo.accepted.load(std::sync::atomic::Ordering::SeqCst);
    let mut again = Holder::open(&addr, &e.fe);
    let (ok, line) = again.echo("again");
    assert!(!ok, "a denied TCP connection echoed: {line}");
    assert_eq!(
        echo.accepted.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "the app saw the denied connection"
    );
}

/// `ward policy explain` offline: (exit code, stdout + stderr).
fn explain(policy: &Path, method: &str, path: &str) -> (i32, String) {
    let out = Command::new(support::ward_bin())
        .args([
            "policy",
            "explain",
            "--policy",
            &policy.display().to_string(),
            "--principal",
            FE,
            "--service",
            ORDERS,
            "--method",
            method,
            "--path",
            path,
        ])
        .output()
        .expect("ward policy explain");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn explain_decides_every_call_as_the_proxy_does_and_names_the_same_policy() {
    let e = env();
    let app = RecordingApp::start();
    let policy = format!(
        r#"@id("read-api")
permit(principal == Ward::Service::"{FE}", action in Ward::Action::"read", resource)
  when {{ resource.path like "/api/*" }};
@id("no-admin")
forbid(principal, action, resource) when {{ resource.path like "/api/admin*" }};
@id("write-orders")
permit(principal in Ward::Namespace::"spiffe://{TD}/ns/demo", action == Ward::Action::"POST", resource)
  when {{ resource.path like "/orders/*" }};
@id("put-orders")
permit(principal, action == Ward::Action::"PUT", resource) when {{ resource.path like "/orders/*" }};
@id("no-put")
forbid(principal, action == Ward::Action::"PUT", resource);
@id("delete-drafts")
permit(principal, action == Ward::Action::"DELETE", resource) when {{ resource.path like "/drafts/*" }};
@id("no-delete-locked")
forbid(principal, action == Ward::Action::"DELETE", resource) when {{ resource.path like "/drafts/locked*" }};
"#
    );
    let proxy = e.proxy("explain", &[], &policy, &app.addr.to_string(), "http", "");
    let file = e.policy_file("explain");
    let forbids = ["no-admin", "no-put", "no-delete-locked"];
    // (method, path, allowed, the forbid that denies it)
    let table: [(&str, &str, bool, Option<&str>); 10] = [
        ("GET", "/api/items", true, None),
        ("HEAD", "/api/items", true, None),
        ("GET", "/api/admin/users", false, Some("no-admin")),
        ("OPTIONS", "/api/admin", false, Some("no-admin")),
        ("POST", "/api/items", false, None),
        ("POST", "/orders/7", true, None),
        ("PUT", "/orders/7", false, Some("no-put")),
        ("DELETE", "/drafts/1", true, None),
        (
            "DELETE",
            "/drafts/locked-1",
            false,
            Some("no-delete-locked"),
        ),
        ("GET", "/other", false, None),
    ];
    let mut problems = Vec::new();
    let mut report = Vec::new();
    for (method, path, allowed, forbid) in table {
        // No request bodies: a denial answered before a body is read ends the
        // HTTP/2 stream with RST_STREAM(NO_ERROR) after the 403, which curl
        // 7.88 sometimes reports as error 92 instead of the status.
        let args: Vec<&str> = match method {
            "GET" => vec![],
            "HEAD" => vec!["-I"],
            _ => vec!["-X", method],
        };
        let got = curl(Some(&e.fe), &url(&proxy, path), &args);
        let (exit, text) = explain(&file, method, path);
        report.push(format!(
            "{method:<7} {path:<18} proxy {} explain exit {exit}: {}",
            got.code,
            text.lines().collect::<Vec<_>>().join(" | ")
        ));
        let proxy_allows = match got.code {
            200 => Some(true),
            403 => Some(false),
            _ => None,
        };
        let explain_allows = match exit {
            0 => Some(true),
            3 => Some(false),
            _ => None,
        };
        if proxy_allows != Some(allowed) {
            problems.push(format!(
                "{method} {path}: the proxy answered {} (expected {}): {}",
                got.code,
                if allowed { 200 } else { 403 },
                got.brief()
            ));
        }
        if explain_allows != Some(allowed) {
            problems.push(format!(
                "{method} {path}: explain exited {exit} (expected {})",
                if allowed { 0 } else { 3 }
            ));
        }
        if proxy_allows != explain_allows {
            problems.push(format!(
                "{method} {path}: proxy {} but explain exit {exit}",
                got.code
            ));
        }
        let want = if allowed {
            "decision: allow"
        } else {
            "decision: deny"
        };
        if !text.contains(want) {
            problems.push(format!("{method} {path}: explain does not say {want:?}"));
        }
        match forbid {
            Some(id) if !text.contains(id) => {
                problems.push(format!("{method} {path}: explain does not name {id}"))
            }
            None if !allowed => {
                for f in forbids.iter().filter(|f| text.contains(**f)) {
                    problems.push(format!(
                        "{method} {path}: no forbid applies, yet explain names {f}"
                    ));
                }
            }
            _ => {}
        }
    }
    // The proxy's metrics name the same forbids, as many times as they decided.
    let m = metrics(&proxy);
    for id in forbids {
        let want = table.iter().filter(|r| r.3 == Some(id)).count() as f64;
        let got = metric_sum(&m, DENIALS, &[("reason", "policy"), ("policy", id)]);
        if got != Some(want) {
            problems.push(format!(
                "{DENIALS}{{reason=\"policy\",policy=\"{id}\"}}: {got:?}, expected {want}"
            ));
        }
    }
    let permitless = table.iter().filter(|r| !r.2 && r.3.is_none()).count() as f64;
    let got = metric_sum(&m, DENIALS, &[("reason", "policy"), ("policy", "")]);
    if got != Some(permitless) {
        problems.push(format!(
            "{DENIALS}{{reason=\"policy\",policy=\"\"}} (no permit): {got:?}, expected {permitless}"
        ));
    }
    // The same validation: a path or method the proxy would refuse is a denial offline.
    for (method, path) in [("GET", "/x/../api/items"), ("get", "/api/items")] {
        let (exit, text) = explain(&file, method, path);
        if exit != 3 {
            problems.push(format!(
                "explain {method} {path}: exit {exit}, expected 3 (deny): {text}"
            ));
        }
    }
    let traversal = curl(
        Some(&e.fe),
        &url(&proxy, "/x/../api/items"),
        &["--path-as-is"],
    );
    if traversal.code != 400 {
        problems.push(format!(
            "GET /x/../api/items: proxy answered {}",
            traversal.code
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\n\ndecisions:\n{}\n\ndenial metrics:\n{}\n\nproxy log:\n{}",
        problems.len(),
        problems.join("\n"),
        report.join("\n"),
        m.lines()
            .filter(|l| l.contains("denials"))
            .collect::<Vec<_>>()
            .join("\n"),
        log_tail(&proxy)
    );
}
