//! `ward agent`: run the node agent, create join tokens, and query the
//! Workload API as a workload would (`ward agent api …`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ward_agent::AgentConfig;
use ward_agent::client::{connect, fetch_x509_once, request};
use ward_agent::proto::JwtsvidRequest;

use crate::client::{ClientArgs, Output, parse_duration, rfc3339};

/// The default Workload API socket.
pub const DEFAULT_SOCKET: &str = "/run/ward/api.sock";

/// Arguments of `ward agent`.
#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Run: ward agent --join-token TOKEN --data-dir /var/lib/ward-agent --socket /run/ward/api.sock\n(the first start spends the single-use join token; later starts use the stored node identity)."
)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Server address, https://HOST:PORT
    #[arg(long, env = "WARD_ADDR")]
    server: Option<String>,
    /// The server's API CA certificate (DATA_DIR/tls/ca.pem on the server)
    #[arg(long, env = "WARD_CACERT")]
    cacert: Option<PathBuf>,
    /// Single-use join token (first start only), from `ward agent token create`
    #[arg(long, env = "WARD_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Where the agent keeps its key, node identity and cached SVIDs
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The Workload API socket (reachable by every local user)
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// This node's name in its SPIFFE ID spiffe://TD/ward/agent/NAME (default: the host name)
    #[arg(long)]
    node_name: Option<String>,
    /// Log format on stderr
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Single-use join tokens that let a new node attest to the server
    #[command(subcommand)]
    Token(TokenCommand),
    /// Call the local Workload API as a workload (like `spire-agent api`)
    #[command(subcommand)]
    Api(ApiCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a single-use join token (printed once)
    Create {
        /// How long the token stays valid
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        ttl: Duration,
        /// Bind the token to this node name (needed to re-attest a node that is already known)
        #[arg(long)]
        node_name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum ApiCommand {
    /// Fetch this process's X.509-SVIDs; with --out, write svid.pem, key.pem and bundle.pem of the first
    Fetch {
        /// The Workload API socket
        #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET", default_value = DEFAULT_SOCKET, value_parser = socket_path)]
        socket: PathBuf,
        /// Directory to write the first SVID to
        #[arg(long)]
        out: Option<PathBuf>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Fetch a JWT-SVID for this process
    Jwt {
        /// Audience; repeat for more
        #[arg(long = "audience", required = true)]
        audience: Vec<String>,
        /// Only this SPIFFE ID (when the process has several)
        #[arg(long)]
        spiffe_id: Option<String>,
        /// The Workload API socket
        #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET", default_value = DEFAULT_SOCKET, value_parser = socket_path)]
        socket: PathBuf,
    },
}

/// Accepts a path or a `unix:` URI, as SPIFFE_ENDPOINT_SOCKET holds.
fn socket_path(s: &str) -> Result<PathBuf, String> {
    let p = s
        .strip_prefix("unix://")
        .or_else(|| s.strip_prefix("unix:"))
        .unwrap_or(s);
    if p.is_empty() {
        return Err("empty socket path".into());
    }
    Ok(PathBuf::from(p))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into())
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.command {
        Some(AgentCommand::Token(TokenCommand::Create {
            ttl,
            node_name,
            client,
        })) => {
            let t = client
                .client()?
                .create_join_token(ttl.as_secs(), node_name)
                .await?;
            client.print(&t, |t| {
                println!("{}", t.token);
                eprintln!(
                    "single use, expires {} (token ID {})",
                    rfc3339(t.expires_at),
                    t.id
                );
            });
            Ok(())
        }
        Some(AgentCommand::Api(cmd)) => run_api(cmd).await,
        None => run_agent(args.run).await,
    }
}

async fn run_agent(a: RunArgs) -> anyhow::Result<()> {
    crate::init_logging("info", a.log_format == "json");
    let Some(server) = a.server else {
        bail!("no server address: pass --server https://HOST:PORT or set WARD_ADDR")
    };
    let Some(cacert) = a.cacert else {
        bail!("no server CA certificate: pass --cacert FILE or set WARD_CACERT")
    };
    let Some(data_dir) = a.data_dir else {
        bail!("pass --data-dir DIR (where the agent keeps its identity and cache)")
    };
    let config = AgentConfig {
        server,
        cacert,
        join_token: a.join_token.map(zeroize::Zeroizing::new),
        data_dir,
        socket: a.socket,
        node_name: a.node_name.unwrap_or_else(host_name),
    };
    ward_agent::run(config, crate::shutdown_signal()).await?;
    Ok(())
}

async fn run_api(cmd: ApiCommand) -> anyhow::Result<()> {
    match cmd {
        ApiCommand::Fetch {
            socket,
            out,
            output,
        } => {
            let mut client = connect(&socket).await.map_err(anyhow::Error::msg)?;
            let first = fetch_x509_once(&mut client)
                .await
                .map_err(|s| anyhow::anyhow!("{}: {}", code_name(s.code()), s.message()))?
                .context("the agent closed the stream without an answer")?;
            let mut summary = Vec::new();
            for svid in &first.svids {
                let chain = ward_identity::ca::split_der_certs(&svid.x509_svid);
                let expires = chain
                    .first()
                    .and_then(|c| x509_not_after(c))
                    .unwrap_or_default();
                summary
                    .push(serde_json::json!({"spiffe_id": svid.spiffe_id, "expires_at": expires}));
            }
            if let (Some(dir), Some(svid)) = (&out, first.svids.first()) {
                ward_agent::client::write_svid_files(dir, svid)
                    .with_context(|| format!("writing the SVID files to {}", dir.display()))?;
            }
            match output {
                Output::Json => println!("{}", serde_json::json!({"svids": summary})),
                Output::Text => {
                    for s in &summary {
                        println!(
                            "{}  expires {}",
                            s["spiffe_id"].as_str().unwrap_or(""),
                            rfc3339(s["expires_at"].as_i64().unwrap_or(0))
                        );
                    }
                    if let Some(dir) = out {
                        println!("wrote {}/svid.pem, key.pem, bundle.pem", dir.display());
                    }
                }
            }
        }
        ApiCommand::Jwt {
            audience,
            spiffe_id,
            socket,
        } => {
            let mut client = connect(&socket).await.map_err(anyhow::Error::msg)?;
            let resp = client
                .fetch_jwtsvid(request(JwtsvidRequest {
                    audience,
                    spiffe_id: spiffe_id.unwrap_or_default(),
                }))
                .await
                .map_err(|s| anyhow::anyhow!("{}: {}", code_name(s.code()), s.message()))?
                .into_inner();
            for s in resp.svids {
                println!("{}", s.svid);
            }
        }
    }
    Ok(())
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => {
            "permission denied (no registration entry matches this process)"
        }
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    }
}

fn x509_not_after(der: &[u8]) -> Option<i64> {
    ward_identity::ca::not_after_of_cert(der)
}
