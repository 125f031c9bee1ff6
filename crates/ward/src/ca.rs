//! `ward ca` (rotation) and `ward bundle`.

use clap::Subcommand;

use crate::client::{ClientArgs, rfc3339};

/// CA commands.
#[derive(Subcommand)]
pub enum CaCommand {
    /// Create the next CA and publish it in the bundle; it does not sign yet
    Prepare {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Switch signing to the prepared CA; the old one stays in the bundle until its last SVID expires
    Activate {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the CAs in the bundle
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Bundle commands.
#[derive(Subcommand)]
pub enum BundleCommand {
    /// Print the trust bundle
    Show {
        /// pem (CA certificates) or spiffe (JWKS with X.509 and JWT keys)
        #[arg(long, value_parser = ["pem", "spiffe"], default_value = "pem")]
        format: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Prepare { client } => {
            let r = client.client()?.prepare_ca().await?;
            client.print(&r, |r| {
                println!("prepared CA {} (generation {}); it is in the bundle and signs after `ward ca activate`", r["id"].as_str().unwrap_or(""), r["generation"]);
            });
        }
        CaCommand::Activate { client } => {
            let r = client.client()?.activate_ca().await?;
            client.print(&r, |r| {
                println!(
                    "CA {} (generation {}) now signs",
                    r["id"].as_str().unwrap_or(""),
                    r["generation"]
                );
            });
        }
        CaCommand::List { client } => {
            let list = client.client()?.cas().await?;
            client.print(&list, |l| {
                println!(
                    "{:<4}  {:<9}  {:<20}  {:<20}  SUBJECT",
                    "GEN", "STATE", "NOT AFTER", "LEAVES BUNDLE"
                );
                for c in &l.cas {
                    println!(
                        "{:<4}  {:<9}  {:<20}  {:<20}  {}",
                        c.generation,
                        c.state,
                        rfc3339(c.not_after),
                        c.drop_after.map(rfc3339).unwrap_or_else(|| "-".into()),
                        c.subject
                    );
                }
            });
        }
    }
    Ok(())
}

pub async fn run_bundle(cmd: BundleCommand) -> anyhow::Result<()> {
    let BundleCommand::Show { format, client } = cmd;
    let c = client.client()?;
    if format == "spiffe" {
        let b = c.bundle_spiffe().await?;
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", c.bundle_pem().await?);
    }
    Ok(())
}
