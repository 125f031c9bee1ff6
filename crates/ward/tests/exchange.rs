//! Token exchange (RFC 8693) against a real server: a user's token from a
//! test OIDC issuer (discovery + JWKS over HTTPS) exchanged by an actor for
//! a down-scoped, audience-bound token with an `act` chain, as the Cedar
//! exchange policy allows and no further; an event token for queued work
//! that still verifies offline (`ward token verify`) after the user's own
//! token expired.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::proxy::unix_now;
use support::raw::Ca;
use support::*;

const TD: &str = "exchange.test";
const ORDERS: &str = "spiffe://exchange.test/ns/shop/sa/orders";
const PAYMENTS: &str = "spiffe://exchange.test/ns/shop/sa/payments";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

struct Idp {
    child: Child,
    issuer: String,
    ca: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> Option<String> {
    required_env(
        "WARD_TEST_PYTHON",
        "a python with PyJWT[crypto] for the test OIDC issuer",
    )
}

fn start_idp(dir: &Path, python: &str) -> Idp {
    let ca = Ca::new(dir, "idp");
    let leaf = ca.server_leaf("idp", "IP:127.0.0.1");
    let script = dir.join("oidc_issuer.py");
    std::fs::write(&script, include_str!("clients/oidc_issuer.py")).unwrap();
    let ready = dir.join("idp.ready");
    let child = Command::new(python)
        .args([
            script.display().to_string(),
            leaf.cert.clone(),
            leaf.key.clone(),
            ready.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || ready.exists()),
        "the test issuer did not start"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    Idp {
        child,
        issuer: v["issuer"].as_str().unwrap().to_owned(),
        ca: ca.cert.display().to_string(),
    }
}

fn post(
    url: &str,
    ca: &str,
    user: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--cacert", ca]);
    if let Some((u, p)) = user {
        cmd.args(["-u", &format!("{u}:{p}")]);
    }
    for (k, v) in form {
        cmd.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn claims_of(token: &str) -> serde_json::Value {
    let p = token.split('.').nth(1).unwrap();
    let out = Command::new(support::raw::python())
        .args([
            "-c",
            "import base64,sys;s=sys.argv[1];print(base64.urlsafe_b64decode(s+'='*(-len(s)%4)).decode())",
            p,
        ])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

struct World {
    _tmp: tempfile::TempDir,
    server: Server,
    idp: Idp,
    secrets: std::collections::HashMap<&'static str, String>,
}

impl World {
    fn user_token(&self, claims: serde_json::Value) -> String {
        let (code, v) = {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-w",
                    "\n%{http_code}",
                    "--cacert",
                    &self.idp.ca,
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    &claims.to_string(),
                    &format!("{}/mint", self.idp.issuer),
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let (body, code) = text.rsplit_once('\n').unwrap();
            (
                code.to_owned(),
                serde_json::from_str::<serde_json::Value>(body).unwrap(),
            )
        };
        assert_eq!(code, "200", "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    fn exchange(&self, actor: &'static str, extra: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let mut form = vec![("grant_type", TOKEN_EXCHANGE)];
        form.extend_from_slice(extra);
        post(
            &format!("{}/oauth/token", self.server.addr()),
            self.server.cacert(),
            Some((actor, &self.secrets[actor])),
            &form,
        )
    }
}

fn world(python: &str) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let idp = start_idp(&dir, python);
    let data = dir.join("server");
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            r#"trust_domain = "{TD}"
listen = "127.0.0.1:0"
data_dir = "{data}"
[[oauth.trusted_issuer]]
name = "idp"
issuer = "{issuer}"
ca = "{ca}"
audiences = ["ward"]
revoked_uri = "none"
leeway = "1s"
"#,
            data = data.display(),
            issuer = idp.issuer,
            ca = idp.ca,
        ),
    )
    .unwrap();
    let server = Server::dev_config(&dir, &data, &config);
    let mut secrets = std::collections::HashMap::new();
    for (name, aud) in [
        ("gateway", ORDERS),
        ("orders-svc", PAYMENTS),
        ("producer", "billing"),
    ] {
        let out = server.ward(&[
            "client",
            "create",
            name,
            "--audience",
            aud,
            "--output",
            "json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        secrets.insert(name, v["client_secret"].as_str().unwrap().to_owned());
    }
    let policy = dir.join("exchange.cedar");
    std::fs::write(
        &policy,
        format!(
            r#"
@id("gateway-for-orders")
permit(principal == Token::Client::"gateway", action, resource == Token::Audience::"{ORDERS}")
when {{ context.kind == "access" }};
@id("orders-for-payments")
permit(principal == Token::Client::"orders-svc", action, resource == Token::Audience::"{PAYMENTS}")
when {{ context.kind == "access" && context.subject.actors.contains("gateway") }};
@id("producer-events")
permit(principal == Token::Client::"producer", action, resource == Token::Audience::"billing")
when {{ context.kind == "event" && context.lifetime <= 7200 }};
"#
        ),
    )
    .unwrap();
    let out = server.ward(&["token", "policy", "write", &policy.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    World {
        _tmp: tmp,
        server,
        idp,
        secrets,
    }
}

#[test]
fn a_users_token_is_exchanged_down_scoped_with_the_delegation_chain() {
    let Some(python) = python() else { return };
    let w = world(&python);
    let now = unix_now();
    let user = w.user_token(serde_json::json!({
        "sub": "alice", "aud": "ward", "exp": now + 300, "iat": now, "jti": "u1",
        "scope": "orders:read orders:write profile", "tenant": "acme",
    }));
    let subject = [
        ("subject_token", user.as_str()),
        ("subject_token_type", ACCESS),
    ];
    let mut form = subject.to_vec();
    form.extend([("audience", ORDERS), ("scope", "orders:read")]);
    let (code, v) = w.exchange("gateway", &form);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["issued_token_type"], ACCESS);
    let t = v["access_token"].as_str().unwrap().to_owned();
    let c = claims_of(&t);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], ORDERS);
    assert_eq!(c["scope"], "orders:read", "down-scoped to what was asked");
    assert_eq!(c["act"]["sub"], "gateway");
    assert_eq!(c["tenant"], "acme");
    assert_eq!(c["subject_issuer"], w.idp.issuer.as_str());
    assert!(
        c["exp"].as_i64().unwrap() <= now + 300,
        "outlives the user's token"
    );
    // It verifies offline for its audience, and only for it.
    let ok = w
        .server
        .ward(&["token", "verify", &t, "--audience", ORDERS]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let wrong = w
        .server
        .ward(&["token", "verify", &t, "--audience", PAYMENTS]);
    assert!(!wrong.status.success());

    // Onward: orders-svc exchanges that token for payments; the chain grows.
    let (code, v) = w.exchange(
        "orders-svc",
        &[
            ("subject_token", &t),
            ("subject_token_type", ACCESS),
            ("audience", PAYMENTS),
        ],
    );
    assert_eq!(code, 200, "{v}");
    let c2 = claims_of(v["access_token"].as_str().unwrap());
    assert_eq!(c2["sub"], "alice");
    assert_eq!(c2["act"]["sub"], "orders-svc");
    assert_eq!(c2["act"]["act"]["sub"], "gateway");
    // Straight from the user's token, orders-svc may not (no gateway in the chain).
    let (code, v) = w.exchange(
        "orders-svc",
        &[subject[0], subject[1], ("audience", PAYMENTS)],
    );
    assert_eq!(
        (code, v["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{v}"
    );

    // Refused: more scope than the subject has, an audience the policy does
    // not name, an actor it does not name, a subject token that is not valid.
    let mut up = subject.to_vec();
    up.extend([("audience", ORDERS), ("scope", "orders:admin")]);
    assert_eq!(w.exchange("gateway", &up).1["error"], "invalid_scope");
    let mut other = subject.to_vec();
    other.push(("audience", PAYMENTS));
    assert_eq!(
        w.exchange("gateway", &other).1["error"],
        "unauthorized_client"
    );
    let mut not_actor = subject.to_vec();
    not_actor.push(("audience", ORDERS));
    assert_eq!(
        w.exchange("producer", &not_actor).1["error"],
        "unauthorized_client"
    );
    let tampered = format!("{}x", &user[..user.len() - 1]);
    assert_eq!(
        w.exchange(
            "gateway",
            &[
                ("subject_token", &tampered),
                ("subject_token_type", ACCESS),
                ("audience", ORDERS)
            ]
        )
        .1["error"],
        "invalid_grant"
    );
    let wrong_aud = w.user_token(serde_json::json!({"sub": "alice", "aud": "not-ward", "exp": now + 300, "scope": "orders:read"}));
    assert_eq!(
        w.exchange(
            "gateway",
            &[
                ("subject_token", &wrong_aud),
                ("subject_token_type", ACCESS),
                ("audience", ORDERS)
            ]
        )
        .1["error"],
        "invalid_grant"
    );
    // No audience, or an actor token: refused as malformed.
    assert_eq!(w.exchange("gateway", &subject).1["error"], "invalid_target");
    let audit = w
        .server
        .ward(&["audit", "tail", "--lines", "500", "--output", "json"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("oauth.token.exchange\""),
        "no exchange in the audit log"
    );
    assert!(
        audit.contains("oauth.token.exchange-denied"),
        "no denial in the audit log"
    );
    assert!(
        !audit.contains(&user),
        "a subject token is in the audit log"
    );
}

#[test]
fn an_event_token_outlives_the_users_token_and_verifies_offline() {
    let Some(python) = python() else { return };
    let w = world(&python);
    let now = unix_now();
    let user = w.user_token(serde_json::json!({
        "sub": "bob", "aud": "ward", "exp": now + 3, "iat": now, "scope": "billing:charge",
    }));
    let base = [
        ("subject_token", user.as_str()),
        ("subject_token_type", ACCESS),
        ("audience", "billing"),
        (
            "requested_token_type",
            "urn:ward:params:oauth:token-type:event",
        ),
    ];
    let mut form = base.to_vec();
    form.push(("max_delay", "1h"));
    let (code, v) = w.exchange("producer", &form);
    assert_eq!(code, 200, "{v}");
    let event = v["access_token"].as_str().unwrap().to_owned();
    let c = claims_of(&event);
    assert_eq!(
        (c["token_use"].as_str(), c["sub"].as_str()),
        (Some("event"), Some("bob"))
    );
    assert_eq!(c["act"]["sub"], "producer");
    assert!(
        c["exp"].as_i64().unwrap() >= now + 3500,
        "lives the queue's delay: {c}"
    );
    // An event token is never a subject token (it would renew itself).
    let relaunder = w.exchange(
        "producer",
        &[
            ("subject_token", &event),
            ("subject_token_type", ACCESS),
            ("audience", "billing"),
            (
                "requested_token_type",
                "urn:ward:params:oauth:token-type:event",
            ),
            ("max_delay", "1h"),
        ],
    );
    assert_eq!(relaunder.1["error"], "invalid_grant", "{:?}", relaunder);
    // Bounded by the policy (2 h) and by oauth.event_max_ttl (24 h).
    let mut long = base.to_vec();
    long.push(("max_delay", "3h"));
    assert_eq!(
        w.exchange("producer", &long).1["error"],
        "unauthorized_client"
    );
    let mut longer = base.to_vec();
    longer.push(("max_delay", "48h"));
    assert_eq!(
        w.exchange("producer", &longer).1["error"],
        "invalid_request"
    );
    // The user's token expires; the event token still verifies offline.
    std::thread::sleep(Duration::from_secs(5));
    let mut again = base.to_vec();
    again.push(("max_delay", "1h"));
    assert_eq!(
        w.exchange("producer", &again).1["error"],
        "invalid_grant",
        "the expired user token is no longer exchanged"
    );
    let out = w
        .server
        .ward(&["token", "verify", &event, "--audience", "billing"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"token_use\": \"event\""));
}
