//! `ward audit`: verify the hash chain, read the latest records.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use ward_store::ChainVerifier;

use crate::client::ClientArgs;

/// Audit commands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain: every record present, in order, unedited; names the first bad record
    Verify {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the latest records
    Tail {
        /// How many
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        /// Keep printing new records as they are appended
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

const PAGE: i64 = 1000;

pub async fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify { client } => {
            let c = client.client()?;
            let mut verifier = ChainVerifier::default();
            let first = c.audit_page(0, PAGE).await?;
            let (head_seq, head_hash) = (first.head_seq, first.head_hash.clone());
            let mut page = first;
            let mut after = 0;
            'pages: loop {
                for r in &page.records {
                    if r.seq > head_seq {
                        break 'pages;
                    }
                    if let Err(e) = verifier.push(r) {
                        bail!("{e}");
                    }
                    after = r.seq;
                }
                if page.records.len() < PAGE as usize || after >= head_seq {
                    break;
                }
                page = c.audit_page(after, PAGE).await?;
            }
            match verifier.finish(head_seq, &head_hash) {
                Ok(n) => client.print(
                    &serde_json::json!({"intact": true, "records": n, "head_hash": head_hash}),
                    |_| println!("audit chain intact: {n} records, head {head_hash}"),
                ),
                Err(e) => bail!("{e}"),
            }
        }
        AuditCommand::Tail {
            lines,
            follow,
            client,
        } => {
            let c = client.client()?;
            let head = c.audit_page(0, 1).await?.head_seq;
            let mut after = (head - lines.max(0)).max(0);
            loop {
                let page = c.audit_page(after, PAGE).await?;
                for r in &page.records {
                    client.print(r, |r| {
                        let secs = r.ts_ms / 1000;
                        println!(
                            "{:>6}  {}  {:<20}  {:<18}  {}  {}",
                            r.seq,
                            crate::client::rfc3339(secs),
                            r.actor,
                            r.action,
                            r.target,
                            r.detail
                        );
                    });
                    after = r.seq;
                }
                if !follow {
                    break;
                }
                if page.records.is_empty() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    Ok(())
}
