//! The demo services of `ward up`: frontend, orders and payments, each a
//! `ward demo-app` behind its own `ward proxy`, with identities from the
//! node agent. Each proxy runs from its own hard link of the `ward`
//! binary, so the agent tells them apart by executable path (the
//! `unix:path` selector) as it would distinct programs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use ward_api::{EntryCreate, EntryUpdate};
use ward_proxy::config::{
    AdminConfig, AppProtocol, HttpConfig, IdentityConfig, InboundConfig, Limits, OutboundConfig,
    PolicyConfig, Protocol, ProxyConfig, TelemetryConfig,
};

const SERVICES: [&str; 3] = ["frontend", "orders", "payments"];
/// Who may call whom: each pair gets an outbound listener on the caller's proxy.
const CALLS: [(&str, &str); 3] = [
    ("frontend", "orders"),
    ("frontend", "payments"),
    ("orders", "payments"),
];

pub struct MeshSetup<'a> {
    pub client: &'a ward_client::Client,
    pub td: &'a str,
    pub data_dir: &'a Path,
    pub parent: &'a str,
    pub uid: u32,
    pub server_url: &'a str,
    pub server_ca: &'a Path,
    pub socket: &'a Path,
    /// The database role orders reads credentials from, if configured.
    pub db_role: Option<&'a str>,
}

struct Service {
    name: &'static str,
    spiffe_id: String,
    app: SocketAddr,
    inbound: SocketAddr,
    admin: SocketAddr,
    outbound: BTreeMap<&'static str, SocketAddr>,
}

pub struct Mesh {
    services: Vec<Service>,
    children: Vec<tokio::process::Child>,
    /// (caller, callee, status, caller the callee saw)
    tried: Vec<(String, String, String)>,
    logs: PathBuf,
}

/// The demo policy: the gateway → frontend → orders → payments, nothing else.
pub fn demo_policy(td: &str) -> String {
    format!(
        r#"// ward up's demo policy. Anything not permitted here is denied.
// The gateway, for a user: every call but /public carries the user's
// internal token, and the frontend's sidecar checks it (context.token).
@id("gateway-calls-frontend")
permit(
  principal == Ward::Service::"spiffe://{td}/ns/edge/sa/gateway",
  action in [Ward::Action::"read", Ward::Action::"write"],
  resource in Ward::Service::"spiffe://{td}/ns/demo/sa/frontend"
) when {{ resource.path like "/public*" || (context has token && context.token.scopes.contains("demo:read")) }};

@id("frontend-calls-orders")
permit(
  principal == Ward::Service::"spiffe://{td}/ns/demo/sa/frontend",
  action,
  resource in Ward::Service::"spiffe://{td}/ns/demo/sa/orders"
);

@id("orders-calls-payments")
permit(
  principal == Ward::Service::"spiffe://{td}/ns/demo/sa/orders",
  action in [Ward::Action::"read", Ward::Action::"write"],
  resource in Ward::Service::"spiffe://{td}/ns/demo/sa/payments"
);
"#
    )
}

pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    // Bound and released: another process could take it in between, which
    // a local demo can live with.
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A hard link of the running binary (a copy across file systems).
pub(crate) fn link_exe(dst: &Path) -> anyhow::Result<PathBuf> {
    let src = std::env::current_exe().context("cannot find the ward binary")?;
    let _ = std::fs::remove_file(dst);
    if std::fs::hard_link(&src, dst).is_err() {
        std::fs::copy(&src, dst)
            .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    }
    Ok(std::fs::canonicalize(dst)?)
}

pub(crate) fn spawn(
    exe: &Path,
    args: &[String],
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let log =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    // SAFETY: set_pdeathsig is async-signal-safe (one prctl call); it makes
    // the child stop if `ward up` dies without stopping it.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

/// The sidecar configuration of one demo service, typed as `ward proxy`
/// reads it (so that it cannot drift from what the proxy accepts).
fn proxy_config(
    s: &Service,
    services: &[Service],
    setup: &MeshSetup<'_>,
    proxies: &Path,
) -> ProxyConfig {
    let outbound = s
        .outbound
        .iter()
        .map(|(to, listen)| {
            let callee = services.iter().find(|c| c.name == *to);
            OutboundConfig {
                name: (*to).to_owned(),
                listen: *listen,
                upstream: callee.map_or(*listen, |c| c.inbound),
                spiffe_ids: callee.map(|c| c.spiffe_id.clone()).into_iter().collect(),
                protocol: Protocol::Http,
            }
        })
        .collect();
    ProxyConfig {
        identity: IdentityConfig {
            workload_api: Some(setup.socket.display().to_string()),
            spiffe_id: Some(s.spiffe_id.clone()),
            svid: None,
            key: None,
            bundle: None,
            federation: Vec::new(),
        },
        policy: PolicyConfig {
            server: Some(setup.server_url.to_owned()),
            server_ca: Some(setup.server_ca.to_owned()),
            file: None,
            cache: Some(proxies.join(format!("{}-policy.json", s.name))),
        },
        admin: Some(AdminConfig { listen: s.admin }),
        inbound: vec![InboundConfig {
            name: "http".into(),
            listen: s.inbound,
            app: s.app,
            protocol: Protocol::Http,
            app_protocol: AppProtocol::default(),
        }],
        outbound,
        limits: Limits::default(),
        http: HttpConfig::default(),
        telemetry: TelemetryConfig {
            report_interval: Duration::from_secs(2),
            ..TelemetryConfig::default()
        },
        // Internal tokens from the gateway, for this service.
        token: Some(ward_oidc::Settings {
            name: "ward".into(),
            issuer: setup.server_url.to_owned(),
            ca: setup.server_ca.to_owned(),
            jwks_uri: None,
            revoked_uri: None,
            algorithms: vec!["ES256".into(), "EdDSA".into()],
            audiences: vec![s.spiffe_id.clone()],
            leeway: Duration::from_secs(30),
            revoked_poll: Duration::from_secs(2),
            revoked_max_stale: Duration::from_secs(30),
        }),
    }
}

pub async fn start(setup: MeshSetup<'_>) -> anyhow::Result<Mesh> {
    let client = setup.client;
    // Pushed on the first run, and again when an older `ward up` left a
    // policy without the gateway in it.
    let current = client.current_policy().await?;
    if current.version == 0
        || !current
            .text
            .contains("context.token.scopes.contains(\"demo:read\")")
    {
        client.push_policy(&demo_policy(setup.td)).await?;
    }
    let bin = setup.data_dir.join("bin");
    let logs = setup.data_dir.join("logs");
    let proxies = setup.data_dir.join("proxies");
    for d in [&bin, &logs, &proxies] {
        std::fs::create_dir_all(d)?;
    }
    let existing = client.list_entries(Some(setup.parent), 0).await?.entries;
    let mut services = Vec::new();
    let mut exes = BTreeMap::new();
    for name in SERVICES {
        let spiffe_id = format!("spiffe://{}/ns/demo/sa/{name}", setup.td);
        let exe = link_exe(&bin.join(format!("ward-proxy-{name}")))?;
        let selectors = vec![
            format!("unix:uid:{}", setup.uid),
            format!("unix:path:{}", exe.display()),
        ];
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
                        labels: [("app".to_string(), name.to_string())].into(),
                    })
                    .await?;
            }
        }
        exes.insert(name, exe);
        services.push(Service {
            name,
            spiffe_id,
            app: free_addr()?,
            inbound: free_addr()?,
            admin: free_addr()?,
            outbound: BTreeMap::new(),
        });
    }
    for (from, to) in CALLS {
        let addr = free_addr()?;
        if let Some(s) = services.iter_mut().find(|s| s.name == from) {
            s.outbound.insert(to, addr);
        }
    }

    let mut children = Vec::new();
    for s in &services {
        let config = proxy_config(s, &services, &setup, &proxies);
        let config_path = proxies.join(format!("{}.toml", s.name));
        std::fs::write(&config_path, toml::to_string(&config)?)?;
        let mut app_args = vec![
            "demo-app".to_string(),
            "--name".into(),
            s.name.into(),
            "--listen".into(),
            s.app.to_string(),
            // Its own secret, read with its own JWT-SVID.
            "--vault-addr".into(),
            setup.server_url.to_string(),
            "--vault-cacert".into(),
            setup.server_ca.display().to_string(),
            "--workload-socket".into(),
            setup.socket.display().to_string(),
            "--vault-secret".into(),
            crate::vault::secret_path(s.name),
        ];
        if s.name == "orders"
            && let Some(role) = setup.db_role
        {
            app_args.push("--vault-db-role".into());
            app_args.push(role.to_string());
        }
        for (to, listen) in &s.outbound {
            app_args.push("--call".into());
            app_args.push(format!("{to}=http://{listen}"));
        }
        // From the service's own link of the binary, as its proxy: the
        // agent attests both as the service (a pod's app and sidecar share
        // its identity), so the app's JWT-SVID is the service's.
        children.push(spawn(
            &exes[s.name],
            &app_args,
            &logs.join(format!("{}-app.log", s.name)),
        )?);
        let proxy_args = vec![
            "proxy".to_string(),
            "--config".into(),
            config_path.display().to_string(),
        ];
        children.push(spawn(
            &exes[s.name],
            &proxy_args,
            &logs.join(format!("{}-proxy.log", s.name)),
        )?);
    }
    let mut mesh = Mesh {
        services,
        children,
        tried: Vec::new(),
        logs,
    };
    mesh.wait_ready().await?;
    mesh.try_calls().await;
    Ok(mesh)
}

impl Mesh {
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for s in &self.services {
            loop {
                let ready = http.get(format!("http://{}/readyz", s.admin)).send().await;
                let app = tokio::net::TcpStream::connect(s.app).await;
                if matches!(&ready, Ok(r) if r.status().is_success()) && app.is_ok() {
                    break;
                }
                for c in &mut self.children {
                    if let Ok(Some(status)) = c.try_wait() {
                        anyhow::bail!(
                            "a demo process exited ({status}); see the logs in {}",
                            self.logs.display()
                        );
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "the {} proxy is not ready after 60 s; see {}",
                        s.name,
                        self.logs.join(format!("{}-proxy.log", s.name)).display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// One allowed and one denied call, to show in the walk-through.
    async fn try_calls(&mut self) {
        let Ok(http) = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        else {
            return;
        };
        for (from, to) in CALLS {
            let Some(app) = self.services.iter().find(|s| s.name == from).map(|s| s.app) else {
                continue;
            };
            let answer = async {
                let v: serde_json::Value = http
                    .get(format!("http://{app}/call/{to}/hello"))
                    .send()
                    .await?
                    .json()
                    .await?;
                Ok::<_, reqwest::Error>(v)
            }
            .await;
            let line = match answer {
                Ok(v) => match v["status"].as_u64() {
                    Some(200) => format!(
                        "200 allowed   ({to} saw caller {})",
                        v["response"]["caller"].as_str().unwrap_or("?")
                    ),
                    Some(403) => "403 denied by policy".to_string(),
                    Some(code) => format!("{code}"),
                    None => format!("failed: {}", v["error"]),
                },
                Err(e) => format!("failed: {e}"),
            };
            self.tried.push((from.to_string(), to.to_string(), line));
        }
    }

    /// A service's SPIFFE ID and mTLS inbound address.
    pub fn inbound_of(&self, name: &str) -> Option<(String, SocketAddr)> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| (s.spiffe_id.clone(), s.inbound))
    }

    /// A demo app's address (`HOST:PORT`).
    pub fn app_of(&self, name: &str) -> Option<String> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.app.to_string())
    }

    /// `services` in up.json.
    pub fn services_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for s in &self.services {
            out.insert(
                s.name.to_string(),
                serde_json::json!({
                    "spiffe_id": s.spiffe_id,
                    "inbound": s.inbound.to_string(),
                    "app": s.app.to_string(),
                    "admin": s.admin.to_string(),
                    "outbound": s.outbound.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                    "secrets": [format!("secret/data/{}", crate::vault::secret_path(s.name))],
                }),
            );
        }
        serde_json::Value::Object(out)
    }

    /// The part of the banner about the services.
    pub fn walkthrough(&self, exe: &str) -> String {
        let mut s = String::from(
            "Demo services, each behind its own `ward proxy` (policy: frontend → orders → payments):\n",
        );
        for svc in &self.services {
            s.push_str(&format!(
                "  {:<9} {}  app {}  mTLS inbound {}  admin http://{}/metrics\n",
                svc.name, svc.spiffe_id, svc.app, svc.inbound, svc.admin
            ));
        }
        s.push_str("\nCalls made just now, through the sidecars:\n");
        for (from, to, line) in &self.tried {
            s.push_str(&format!("  {from:>8} → {to:<9} {line}\n"));
        }
        let fe = self
            .services
            .iter()
            .find(|s| s.name == "frontend")
            .map(|s| s.app.to_string())
            .unwrap_or_default();
        let pay = self
            .services
            .iter()
            .find(|s| s.name == "payments")
            .map(|s| s.inbound.to_string())
            .unwrap_or_default();
        s.push_str(&format!(
            r#"
Try:
  curl http://{fe}/call/orders/hello       # frontend → orders: allowed
  curl http://{fe}/call/payments/hello     # frontend → payments: 403 from payments' proxy
  curl -k https://{pay}/hello              # no client certificate: the handshake fails
  {exe} policy show                         # the Cedar policy in force; edit it and `{exe} policy push FILE`
  {exe} telemetry edges                     # every call edge the proxies reported, allowed and denied
  logs: {logs}
"#,
            logs = self.logs.display()
        ));
        s
    }

    /// Stops the demo processes: SIGTERM (they drain), then SIGKILL.
    pub async fn stop(mut self) {
        for c in &self.children {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for c in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(5), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_proxy_configs_are_what_ward_proxy_accepts() {
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let services: Vec<Service> = SERVICES
            .iter()
            .enumerate()
            .map(|(i, name)| Service {
                name,
                spiffe_id: format!("spiffe://up.test/ns/demo/sa/{name}"),
                app: addr(1000 + i as u16),
                inbound: addr(2000 + i as u16),
                admin: addr(3000 + i as u16),
                outbound: CALLS
                    .iter()
                    .filter(|(from, _)| from == name)
                    .enumerate()
                    .map(|(j, (_, to))| (*to, addr(4000 + 10 * i as u16 + j as u16)))
                    .collect(),
            })
            .collect();
        let client = ward_client::Client::with_tls(
            "https://127.0.0.1:1",
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .unwrap();
        let setup = MeshSetup {
            client: &client,
            td: "up.test",
            data_dir: Path::new("/tmp/up"),
            parent: "spiffe://up.test/ward/agent/up-node",
            uid: 1000,
            server_url: "https://127.0.0.1:8443",
            server_ca: Path::new("/tmp/up/ca.pem"),
            socket: Path::new("/tmp/up/api.sock"),
            db_role: None,
        };
        for s in &services {
            let text = toml::to_string(&proxy_config(
                s,
                &services,
                &setup,
                Path::new("/tmp/up/proxies"),
            ))
            .unwrap();
            let parsed = ProxyConfig::parse(&text, Path::new("demo.toml"))
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", s.name));
            assert_eq!(
                parsed.identity.spiffe_id.as_deref(),
                Some(s.spiffe_id.as_str())
            );
            assert_eq!(parsed.telemetry.report_interval, Duration::from_secs(2));
            assert_eq!(parsed.outbound.len(), s.outbound.len());
            for o in &parsed.outbound {
                let callee = services.iter().find(|c| c.name == o.name).unwrap();
                assert_eq!(o.upstream, callee.inbound);
                assert_eq!(o.spiffe_ids, std::slice::from_ref(&callee.spiffe_id));
            }
        }
    }
}
