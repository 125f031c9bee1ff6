//! `ward gateway`: the edge gateway.

use std::path::PathBuf;

use clap::Args;
use ward_gateway::config::GatewayConfig;

/// Arguments of `ward gateway`.
#[derive(Args)]
#[command(after_help = "A minimal gateway.toml (the README lists every key):

  listen = \"0.0.0.0:443\"
  [tls]
  cert = \"gateway.pem\"                      # chain, leaf first; client_ca = \"…\" for mtls routes
  key = \"gateway-key.pem\"
  [identity]                                # the gateway's SVID, for upstream mutual TLS
  workload_api = \"/run/ward/agent.sock\"
  [admin]
  listen = \"127.0.0.1:9902\"                 # /healthz /readyz /metrics
  [[issuer]]                                # a token issuer (Ward's token service, or any OIDC issuer)
  name = \"ward\"
  issuer = \"https://ward.internal:8443\"
  ca = \"/var/lib/ward/tls/ca.pem\"
  algorithms = [\"ES256\"]
  audiences = [\"api\"]
  [[route]]
  name = \"orders\"
  path_prefix = \"/api/orders\"
  auth = \"jwt\"                              # or public, api_key, mtls
  upstream = \"10.0.0.7:8443\"
  upstream_spiffe_id = \"spiffe://example.org/ns/shop/sa/orders\"
  policy = 'permit(principal, action, resource) when { principal.scopes.contains(\"orders\") };'
  rate_limit = { rate = 100, per = \"1s\", key = \"subject\" }   # global = true with [redis] url

Refusals carry only a status (401, 403, 404, 405, 429…); why goes to the log and /metrics (ward_gateway_denials_total{route,reason}). SIGTERM drains open connections.")]
pub struct GatewayArgs {
    /// The gateway's configuration file
    #[arg(long, env = "WARD_GATEWAY_CONFIG")]
    config: PathBuf,
    /// Once listening, write the bound addresses here as JSON (for scripts and tests)
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Log as JSON lines
    #[arg(long)]
    log_json: bool,
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&args.config)?;
    crate::init_logging("info", args.log_json);
    ward_gateway::run(config, args.ready_file, crate::shutdown_signal()).await?;
    Ok(())
}
