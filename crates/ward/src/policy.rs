//! `ward policy` (Cedar policies: validate, push, show, schema) and
//! `ward telemetry` (call edges reported by proxies).

use std::time::Duration;

use clap::Subcommand;

use crate::client::{ClientArgs, parse_duration, rfc3339};

/// Policy commands.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate FILE against Ward's schema and store it as the new policy version; proxies pick it up within seconds
    #[command(
        after_help = "Example (frontend may read anything on orders):\n  permit(principal == Ward::Service::\"spiffe://ward.local/ns/demo/sa/frontend\",\n         action in Ward::Action::\"read\",\n         resource in Ward::Service::\"spiffe://ward.local/ns/demo/sa/orders\");\n\nEverything not permitted is denied. `ward policy schema` shows what policies can use."
    )]
    Push {
        /// A Cedar policy file (`-` reads standard input)
        file: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check FILE against Ward's schema without a server
    Validate {
        /// A Cedar policy file (`-` reads standard input)
        file: String,
    },
    /// Print the current policy set and its version
    Show {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the Cedar schema policies are validated against
    Schema,
    /// Decide one request offline, exactly as a proxy would, and say why
    #[command(
        after_help = "Evaluates the request with the same strict HTTP checks, path canonicalisation and \
Cedar engine as an inbound listener, against --policy FILE or (without it) the server's current policy.\n\n\
Exit status: 0 allowed, 3 denied, 1 on a usage or connection error.\n\n\
Example:\n  ward policy explain --policy policy.cedar \\\n    --principal spiffe://ward.local/ns/demo/sa/frontend \\\n    --service spiffe://ward.local/ns/demo/sa/orders --method GET --path /orders/1"
    )]
    Explain(Box<ExplainArgs>),
}

/// Arguments of `ward policy explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The caller's SPIFFE ID
    #[arg(long)]
    principal: String,
    /// The called service's SPIFFE ID (the proxy's own); its trust domain is the listener's
    #[arg(long)]
    service: Option<String>,
    /// The HTTP method, exactly as sent (methods are case-sensitive)
    #[arg(long)]
    method: String,
    /// The request target's path (and query), as sent
    #[arg(long)]
    path: String,
    /// A request header, NAME=VALUE; repeatable
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The caller's address (context.source)
    #[arg(long, default_value = "127.0.0.1")]
    source: std::net::IpAddr,
    /// "http/1.1" or "h2"
    #[arg(long, default_value = "http/1.1", value_parser = ["http/1.1", "h2"])]
    protocol: String,
    /// A federated trust domain the listener accepts; repeatable
    #[arg(long = "federated")]
    federated: Vec<String>,
    /// An extension method the listener accepts (`[http] extension_methods`); repeatable
    #[arg(long = "extension-method")]
    extension_methods: Vec<String>,
    /// Decide on this Cedar file instead of the server's current policy
    #[arg(long)]
    policy: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

/// Telemetry commands.
#[derive(Subcommand)]
pub enum TelemetryCommand {
    /// Calls per edge (caller → callee, method, route, status, decision) reported by proxies
    Edges {
        /// How far back to look
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        since: Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn read(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))
    }
}

pub async fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Push { file, client } => {
            let text = read(&file)?;
            // Check locally first: the same validation, with no round trip.
            ward_policy::validate(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            let v = client.client()?.push_policy(&text).await?;
            client.print(&v, |v| {
                println!(
                    "policy version {} stored ({} policies, sha256 {})",
                    v.version,
                    v.policies,
                    &v.sha256[..16]
                )
            });
        }
        PolicyCommand::Validate { file } => {
            let set =
                ward_policy::validate(&read(&file)?).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            println!("{file}: valid ({} policies)", set.policies().count());
        }
        PolicyCommand::Show { client } => {
            let p = client.client()?.current_policy().await?;
            client.print(&p, |p| {
                if p.version == 0 {
                    println!("no policy pushed yet: every proxy denies every call");
                } else {
                    println!("// version {} (sha256 {})", p.version, p.sha256);
                    print!("{}", p.text);
                }
            });
        }
        PolicyCommand::Schema => print!("{}", ward_policy::SCHEMA_TEXT),
        PolicyCommand::Explain(args) => {
            let args = *args;
            let (text, origin) = match &args.policy {
                Some(file) => (read(file)?, file.clone()),
                None => {
                    let p = args.client.client()?.current_policy().await?;
                    (p.text, format!("the server's policy version {}", p.version))
                }
            };
            let engine = ward_policy::Engine::new(&text, Default::default())
                .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
            let federated = args
                .federated
                .iter()
                .map(|t| {
                    ward_identity::TrustDomain::parse(t)
                        .map_err(|e| anyhow::anyhow!("--federated {t:?}: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let q = ward_dataplane::explain::Question {
                principal: args.principal,
                service: args.service,
                method: args.method,
                path: args.path,
                headers: args.headers,
                source: args.source,
                protocol: args.protocol,
                federated,
                extension_methods: args.extension_methods,
            };
            let client = args.client;
            let e = ward_dataplane::explain::explain(engine, &q)?;
            client.print(&e, |e| {
                println!("decision: {}", if e.allowed { "allow" } else { "deny" });
                println!("reason: {}", e.reason);
                println!("status a caller gets: {}", e.status);
                if e.policies.is_empty() {
                    println!("determining policies: none");
                } else {
                    println!("determining policies: {}", e.policies.join(", "));
                }
                for err in &e.errors {
                    println!("error: {err}");
                }
                println!("decided on: {origin}");
            });
            if !e.allowed {
                std::process::exit(3);
            }
        }
    }
    Ok(())
}

pub async fn run_telemetry(cmd: TelemetryCommand) -> anyhow::Result<()> {
    match cmd {
        TelemetryCommand::Edges { since, client } => {
            let since = ward_store::now_secs() - since.as_secs() as i64;
            let t = client.client()?.edge_totals(since).await?;
            client.print(&t, |t| {
                if t.edges.is_empty() {
                    println!("no calls reported");
                    return;
                }
                println!(
                    "{:<40} {:<40} {:<7} {:<20} {:<6} {:<6} {:>8} {:>9}  LAST",
                    "SOURCE",
                    "DESTINATION",
                    "METHOD",
                    "ROUTE",
                    "STATUS",
                    "DECIDE",
                    "CALLS",
                    "MEAN µs"
                );
                for e in &t.edges {
                    println!(
                        "{:<40} {:<40} {:<7} {:<20} {:<6} {:<6} {:>8} {:>9}  {}",
                        e.source,
                        e.destination,
                        e.method,
                        e.route,
                        e.status_class,
                        e.decision,
                        e.requests,
                        e.latency_us_sum / e.requests.max(1),
                        rfc3339(e.last_seen)
                    );
                }
            });
        }
    }
    Ok(())
}
