//! `ward proxy` (the sidecar) and `ward demo-app` (a service to put behind it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ward_proxy::config::ProxyConfig;

/// Arguments of `ward proxy`.
#[derive(Args)]
#[command(after_help = "A minimal proxy.toml (see the README for every key):

  [identity]
  workload_api = \"/run/ward/agent.sock\"     # or svid/key/bundle PEM files
  [policy]
  server = \"https://127.0.0.1:8443\"        # or file = \"policy.cedar\"
  server_ca = \"/var/lib/ward/tls/ca.pem\"
  cache = \"/var/lib/ward/proxy/policy.json\"
  [admin]
  listen = \"127.0.0.1:9901\"               # /healthz /readyz /metrics
  [[inbound]]                               # callers → this service
  name = \"http\"
  listen = \"0.0.0.0:8443\"
  app = \"127.0.0.1:8080\"
  protocol = \"http\"                        # or tcp
  [[outbound]]                              # this service → another
  name = \"payments\"
  listen = \"127.0.0.1:15001\"
  upstream = \"10.0.0.7:8443\"
  spiffe_ids = [\"spiffe://example.org/ns/shop/sa/payments\"]
  protocol = \"http\"

Every inbound request needs a client SVID of the trust domain and a Cedar policy that permits it; until the first policy arrives, everything is denied. SIGTERM drains open connections.")]
pub struct ProxyArgs {
    /// The proxy's configuration file
    #[arg(long, env = "WARD_PROXY_CONFIG")]
    config: PathBuf,
    /// Once listening, write the bound addresses here as JSON (for scripts and tests)
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Log as JSON lines
    #[arg(long)]
    log_json: bool,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let config = ProxyConfig::load(&args.config)?;
    crate::init_logging("info", args.log_json);
    ward_proxy::run(config, args.ready_file, crate::shutdown_signal()).await?;
    Ok(())
}

/// Arguments of `ward demo-app`.
#[derive(Args)]
pub struct DemoAppArgs {
    /// The service name it reports
    #[arg(long)]
    name: String,
    /// Where to listen (HTTP/1.1 and h2c; port 0 picks one)
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// NAME=URL: `GET /call/NAME/PATH` calls URL/PATH (an outbound proxy listener); repeatable
    #[arg(long = "call", value_parser = parse_call)]
    calls: Vec<(String, String)>,
    /// Once listening, write the bound address here
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// The vault (`https://HOST:PORT`): `GET /vault` logs in with this process's JWT-SVID and reads from it
    #[arg(long, requires_all = ["vault_cacert", "workload_socket", "vault_secret"])]
    vault_addr: Option<String>,
    /// The CA certificate of the vault's HTTPS certificate
    #[arg(long)]
    vault_cacert: Option<PathBuf>,
    /// The Workload API socket this process gets its JWT-SVID from
    #[arg(long)]
    workload_socket: Option<PathBuf>,
    /// The audience of the JWT-SVID for the vault
    #[arg(long, default_value = "vault")]
    vault_audience: String,
    /// The KV path (below secret/) `GET /vault` reads
    #[arg(long)]
    vault_secret: Option<String>,
    /// A database role `GET /vault` gets a dynamic credential from
    #[arg(long)]
    vault_db_role: Option<String>,
}

fn parse_call(s: &str) -> Result<(String, String), String> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=URL"))?;
    if !url.starts_with("http://") {
        return Err(format!(
            "{url:?}: the URL must start with http:// (the local outbound listener)"
        ));
    }
    Ok((name.to_string(), url.to_string()))
}

pub async fn run_demo_app(args: DemoAppArgs) -> anyhow::Result<()> {
    crate::init_logging("warn", false);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if let Some(path) = &args.ready_file {
        std::fs::write(
            path,
            serde_json::to_vec(&serde_json::json!({"listen": addr}))?,
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!("demo app {:?} listening on {addr}", args.name);
    let calls: BTreeMap<String, String> = args.calls.into_iter().collect();
    let vault = match (
        &args.vault_addr,
        &args.vault_cacert,
        &args.workload_socket,
        &args.vault_secret,
    ) {
        (Some(addr), Some(ca), Some(socket), Some(secret)) => Some(ward_proxy::demo::VaultDemo {
            addr: addr.trim_end_matches('/').to_owned(),
            cacert_pem: std::fs::read(ca)
                .with_context(|| format!("cannot read {}", ca.display()))?,
            socket: format!("unix:{}", socket.display()),
            audience: args.vault_audience.clone(),
            secret: secret.clone(),
            db_role: args.vault_db_role.clone(),
        }),
        _ => None,
    };
    ward_proxy::demo::run(listener, args.name, calls, vault, crate::shutdown_signal()).await;
    Ok(())
}
