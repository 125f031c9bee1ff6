//! The edge of `ward up`: OAuth clients in the token service, and a
//! `ward gateway` in front of the frontend with its own SVID (from the
//! agent, attested by its own link of the binary) and an HTTPS certificate
//! from the server's TLS CA, so `curl --cacert` verifies both. Routes: a
//! public one, one that needs a token with `demo:read`, an admin-only one
//! (`demo:admin`). The walk-through gets a token with client credentials
//! and calls through the gateway with it, without it and with it tampered.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use ward_api::{EntryCreate, EntryUpdate};

use crate::mesh::{free_addr, link_exe, spawn};

/// The audience the demo's tokens are for (the gateway accepts it).
pub const AUDIENCE: &str = "ward-up-demo-api";
pub const SHOP_CLIENT: &str = "demo-shop";
pub const ADMIN_CLIENT: &str = "demo-admin";
/// The gateway's own client: it authenticates with its SVID and exchanges
/// users' tokens for internal tokens (RFC 8693).
pub const GATEWAY_CLIENT: &str = "gateway";

pub struct EdgeSetup<'a> {
    pub client: &'a ward_client::Client,
    pub td: &'a str,
    pub data_dir: &'a Path,
    pub server_data_dir: &'a Path,
    pub parent: &'a str,
    pub uid: u32,
    pub server_url: &'a str,
    pub server_ca: &'a Path,
    pub socket: &'a Path,
    /// The frontend's SPIFFE ID and mTLS inbound address.
    pub frontend: (String, SocketAddr),
}

pub struct Edge {
    child: tokio::process::Child,
    pub url: String,
    pub admin: SocketAddr,
    pub token_endpoint: String,
    pub shop_secret: String,
    pub admin_secret: String,
    pub spiffe_id: String,
    routes: Vec<(&'static str, &'static str, String)>,
    tried: Vec<String>,
    log: PathBuf,
}

/// Creates `name` or, when it exists, rotates its secret (the secret is
/// shown once, so a new run needs a new one); returns the secret.
async fn ensure_client(
    client: &ward_client::Client,
    name: &str,
    scopes: &[&str],
) -> anyhow::Result<String> {
    let (status, _) = client
        .vault_any_status("GET", &format!("/v1/oauth/clients/{name}"), None)
        .await?;
    let (_, v) = if status == 200 {
        client
            .vault(
                "POST",
                &format!("/v1/oauth/clients/{name}/rotate-secret"),
                None,
            )
            .await?
    } else {
        let body =
            serde_json::json!({"client_id": name, "scopes": scopes, "audiences": [AUDIENCE]});
        client
            .vault("POST", "/v1/oauth/clients", Some(&body))
            .await?
    };
    v["client_secret"]
        .as_str()
        .map(str::to_owned)
        .context("the token service returned no client secret")
}

fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data.as_bytes())?;
    Ok(())
}

fn gateway_toml(
    setup: &EdgeSetup<'_>,
    listen: SocketAddr,
    admin: SocketAddr,
    cert: &Path,
    key: &Path,
    spiffe_id: &str,
) -> String {
    let (fe_id, fe_addr) = &setup.frontend;
    format!(
        r#"# ward up's gateway: in front of the frontend, tokens from the token service.
listen = "{listen}"
[tls]
cert = "{cert}"
key = "{key}"
[identity]
workload_api = "{socket}"
spiffe_id = "{spiffe_id}"
[admin]
listen = "{admin}"
[exchange]
token_endpoint = "{issuer}/oauth/token"
ca = "{ca}"
client_id = "{GATEWAY_CLIENT}"

[[issuer]]
name = "ward"
issuer = "{issuer}"
ca = "{ca}"
algorithms = ["ES256", "EdDSA"]
audiences = ["{AUDIENCE}"]

[[route]]
name = "public"
path_prefix = "/public"
auth = "public"
methods = ["GET", "HEAD"]
upstream = "{fe_addr}"
upstream_spiffe_id = "{fe_id}"
rate_limit = {{ rate = 50, per = "1s", key = "address" }}

[[route]]
name = "api"
path_prefix = "/api"
auth = "jwt"
upstream = "{fe_addr}"
upstream_spiffe_id = "{fe_id}"
policy = '''
@id("demo-readers")
permit(principal, action in Edge::Action::"read", resource)
when {{ principal.scopes.contains("demo:read") }};
'''
rate_limit = {{ rate = 100, per = "1s", key = "subject" }}

[[route]]
name = "admin"
path_prefix = "/admin"
auth = "jwt"
upstream = "{fe_addr}"
upstream_spiffe_id = "{fe_id}"
policy = '''
@id("demo-admins")
permit(principal, action, resource)
when {{ principal.scopes.contains("demo:admin") }};
'''
"#,
        cert = cert.display(),
        key = key.display(),
        socket = setup.socket.display(),
        issuer = setup.server_url,
        ca = setup.server_ca.display(),
    )
}

/// The exchange policy: the gateway may exchange users' tokens for
/// internal tokens for the frontend, and nothing else may.
fn exchange_policy(frontend: &str) -> String {
    format!(
        r#"// ward up's exchange policy (RFC 8693): who may exchange which token for which audience.
@id("gateway-for-frontend")
permit(
  principal == Token::Client::"{GATEWAY_CLIENT}",
  action == Token::Action::"exchange",
  resource == Token::Audience::"{frontend}"
) when {{ context.kind == "access" }};
"#
    )
}

pub async fn start(setup: EdgeSetup<'_>) -> anyhow::Result<Edge> {
    let client = setup.client;
    let shop_secret = ensure_client(client, SHOP_CLIENT, &["demo:read"]).await?;
    let admin_secret = ensure_client(client, ADMIN_CLIENT, &["demo:read", "demo:admin"]).await?;
    let spiffe_id = format!("spiffe://{}/ns/edge/sa/gateway", setup.td);
    let (status, _) = client
        .vault_any_status("GET", &format!("/v1/oauth/clients/{GATEWAY_CLIENT}"), None)
        .await?;
    if status != 200 {
        let body = serde_json::json!({"client_id": GATEWAY_CLIENT, "spiffe_id": spiffe_id, "scopes": [], "audiences": [setup.frontend.0]});
        client
            .vault("POST", "/v1/oauth/clients", Some(&body))
            .await?;
    }
    client
        .vault(
            "PUT",
            "/v1/oauth/exchange-policy",
            Some(&serde_json::json!({"policy": exchange_policy(&setup.frontend.0)})),
        )
        .await?;

    let dir = setup.data_dir.join("gateway");
    let logs = setup.data_dir.join("logs");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&logs)?;
    let exe = link_exe(&setup.data_dir.join("bin").join("ward-gateway"))?;
    let selectors = vec![
        format!("unix:uid:{}", setup.uid),
        format!("unix:path:{}", exe.display()),
    ];
    let existing = client.list_entries(Some(setup.parent), 0).await?.entries;
    match existing.iter().find(|e| e.spiffe_id == spiffe_id) {
        Some(e) if e.selectors != selectors => {
            let update = EntryUpdate {
                selectors: Some(selectors),
                ..Default::default()
            };
            client.update_entry(&e.id, &update).await?;
        }
        Some(_) => {}
        None => {
            client
                .create_entry(&EntryCreate {
                    spiffe_id: spiffe_id.clone(),
                    parent_id: setup.parent.to_string(),
                    selectors,
                    x509_ttl: None,
                    jwt_ttl: None,
                    labels: [("app".to_string(), "gateway".to_string())].into(),
                })
                .await?;
        }
    }

    // HTTPS from the server's TLS CA: the same --cacert verifies both.
    let (leaf, ca, key) = ward_server::tls::issue_server_cert(setup.server_data_dir, &[])
        .map_err(anyhow::Error::msg)?;
    let cert_path = dir.join("gateway.pem");
    let key_path = dir.join("gateway-key.pem");
    std::fs::write(&cert_path, format!("{leaf}{ca}"))?;
    write_private(&key_path, &key)?;

    let listen = free_addr()?;
    let admin = free_addr()?;
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        gateway_toml(&setup, listen, admin, &cert_path, &key_path, &spiffe_id),
    )?;
    let log = logs.join("gateway.log");
    let child = spawn(
        &exe,
        &[
            "gateway".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &log,
    )?;
    let (fe_id, _) = &setup.frontend;
    let mut edge = Edge {
        child,
        url: format!("https://{listen}"),
        admin,
        token_endpoint: format!("{}/oauth/token", setup.server_url),
        shop_secret,
        admin_secret,
        spiffe_id,
        routes: vec![
            ("/public", "public", fe_id.clone()),
            ("/api", "jwt", fe_id.clone()),
            ("/admin", "jwt", fe_id.clone()),
        ],
        tried: Vec::new(),
        log,
    };
    edge.wait_ready().await?;
    edge.try_calls(setup.server_ca).await;
    Ok(edge)
}

impl Edge {
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
                .get(format!("http://{}/readyz", self.admin))
                .send()
                .await;
            if matches!(&ready, Ok(r) if r.status().is_success()) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                anyhow::bail!("the gateway exited ({status}); see {}", self.log.display());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the gateway is not ready after 60 s; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The walk-through's calls: a token by client credentials, then the
    /// protected route with it, without it and with it tampered, the
    /// admin route with it, and the public route.
    async fn try_calls(&mut self, ca: &Path) {
        let Ok(http) = https_client(ca) else {
            self.tried.push("cannot build an HTTPS client".into());
            return;
        };
        let token = async {
            let v: serde_json::Value = http
                .post(&self.token_endpoint)
                .basic_auth(SHOP_CLIENT, Some(&self.shop_secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, reqwest::Error>(v["access_token"].as_str().unwrap_or_default().to_owned())
        }
        .await
        .unwrap_or_default();
        self.tried.push(format!(
            "token from {} for {SHOP_CLIENT}: {}",
            self.token_endpoint,
            if token.is_empty() { "failed" } else { "issued" }
        ));
        let tampered = {
            let mut t = token.clone();
            if let Some(last) = t.pop() {
                t.push(if last == 'A' { 'B' } else { 'A' });
            }
            t
        };
        let url = format!("{}/api/hello", self.url);
        for (what, path, bearer) in [
            ("with the token", url.as_str(), Some(token.as_str())),
            ("without a token", url.as_str(), None),
            (
                "with the token tampered",
                url.as_str(),
                Some(tampered.as_str()),
            ),
        ] {
            self.tried.push(format!(
                "GET {path} {what}: {}",
                call(&http, path, bearer).await
            ));
        }
        let admin = format!("{}/admin/users", self.url);
        self.tried.push(format!(
            "GET {admin} with the {SHOP_CLIENT} token (no demo:admin): {}",
            call(&http, &admin, Some(&token)).await
        ));
        let public = format!("{}/public/hello", self.url);
        self.tried.push(format!(
            "GET {public} (public): {}",
            call(&http, &public, None).await
        ));
    }

    /// `gateway` in up.json.
    pub fn json(&self, ca: &Path) -> serde_json::Value {
        serde_json::json!({
            "url": self.url,
            "cacert": ca,
            "token_endpoint": self.token_endpoint,
            "client_id": SHOP_CLIENT,
            "client_secret": self.shop_secret,
            "admin_client_id": ADMIN_CLIENT,
            "admin_client_secret": self.admin_secret,
            "protected_url": format!("{}/api/hello", self.url),
            "admin_url": format!("{}/admin/users", self.url),
            "metrics_url": format!("http://{}/metrics", self.admin),
            "spiffe_id": self.spiffe_id,
            "routes": self.routes.iter().map(|(path, auth, upstream)| serde_json::json!({
                "path": path, "auth": auth, "upstream": upstream,
            })).collect::<Vec<_>>(),
        })
    }

    /// The part of the banner about the edge.
    pub fn walkthrough(&self, ca: &Path, up_json: &Path) -> String {
        let mut s = format!(
            "The edge: `ward gateway` at {url} (its own SVID {id}) in front of the frontend\n  routes: /public (no token), /api (token with demo:read), /admin (token with demo:admin)\n\nCalls made just now, through the gateway:\n",
            url = self.url,
            id = self.spiffe_id
        );
        for line in &self.tried {
            s.push_str(&format!("  {line}\n"));
        }
        s.push_str(&format!(
            r#"
Try the edge:
  TOKEN=$(curl -s --cacert {ca} -u {SHOP_CLIENT}:$(jq -r .gateway.client_secret {upj}) -d grant_type=client_credentials {te} | jq -r .access_token)
  curl --cacert {ca} -H "Authorization: Bearer $TOKEN" {url}/api/hello     # 200
  curl --cacert {ca} {url}/api/hello                                        # 401
  curl --cacert {ca} -H "Authorization: Bearer $TOKEN" {url}/admin/users   # 403: no demo:admin
  curl -s http://{admin}/metrics | grep ward_gateway_denials                # every refusal, by reason
"#,
            ca = ca.display(),
            upj = up_json.display(),
            te = self.token_endpoint,
            url = self.url,
            admin = self.admin,
        ));
        s
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

async fn call(http: &reqwest::Client, url: &str, bearer: Option<&str>) -> String {
    let mut req = http.get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            match status {
                200 => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let t = &v["token"];
                    if t.is_object() {
                        format!(
                            "200 (the frontend saw caller {} with an internal token: sub {}, aud {}, scope {:?}, act {})",
                            v["caller"].as_str().unwrap_or("?"),
                            t["sub"].as_str().unwrap_or("?"),
                            t["aud"].as_str().unwrap_or("?"),
                            t["scope"].as_str().unwrap_or(""),
                            t["act"]["sub"].as_str().unwrap_or("?"),
                        )
                    } else {
                        format!(
                            "200 (the frontend saw caller {}, no user)",
                            v["caller"].as_str().unwrap_or("?")
                        )
                    }
                }
                s => format!("{s} {}", body.trim()),
            }
        }
        Err(e) => format!("failed: {e}"),
    }
}

fn https_client(ca: &Path) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()?)
}
