//! `ward operator`: unseal, seal and status of a server.

use std::io::BufRead;

use anyhow::Context;
use clap::Subcommand;
use ward_api::UnsealRequest;

use crate::client::ClientArgs;

/// Operator commands.
#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Submit one unseal share (omit SHARE, or pass -, to read it from stdin and keep it out of shell history)
    Unseal {
        /// The share, as printed by `ward server init`
        share: Option<String>,
        /// Forget the shares submitted so far
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Seal the server: it forgets its keys and refuses requests until unsealed
    Seal {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show whether the server is sealed and the unseal progress
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(cmd: OperatorCommand) -> anyhow::Result<()> {
    match cmd {
        OperatorCommand::Unseal {
            share,
            reset,
            client,
        } => {
            let key = match share.as_deref() {
                Some("-") | None if !reset => {
                    use std::io::IsTerminal;
                    if std::io::stdin().is_terminal() {
                        eprint!("Unseal share: ");
                    }
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the share from stdin")?;
                    Some(line.trim().to_owned())
                }
                Some(s) => Some(s.to_owned()),
                None => None,
            };
            let st = client
                .client()?
                .unseal(&UnsealRequest {
                    key,
                    reset,
                    migrate: false,
                })
                .await?;
            client.print(&st, |st| {
                if st.sealed {
                    println!("sealed: {}/{} shares received", st.progress, st.t);
                } else {
                    println!("unsealed");
                }
            });
        }
        OperatorCommand::Seal { client } => {
            client.client()?.seal().await?;
            client.print(&serde_json::json!({"sealed": true}), |_| println!("sealed"));
        }
        OperatorCommand::Status { client } => {
            let st = client.client()?.seal_status().await?;
            client.print(&st, |st| {
                println!("trust domain  {}", st.trust_domain);
                println!("sealed        {}", st.sealed);
                println!(
                    "shares        {} of {} needed, {} received",
                    st.t, st.n, st.progress
                );
                println!("version       {}", st.version);
            });
        }
    }
    Ok(())
}
