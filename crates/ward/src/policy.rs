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
