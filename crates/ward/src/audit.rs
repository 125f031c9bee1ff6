//! `ward audit`: verify the chain (its hashes, the server's keyed check,
//! and signed checkpoints kept outside the store), sign checkpoints, read
//! the latest records.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use ward_store::ChainVerifier;
use ward_store::audit::{ChainError, check_against, read_checkpoints};

use crate::client::ClientArgs;

/// Audit commands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain: every record present, in order, unedited and written by the server
    /// (its keyed MACs), and, with --checkpoints, still the chain each signed checkpoint vouches
    /// for (no edit, gap, reordering, rewrite or truncation behind it). Names the first bad record;
    /// exits 1 when the chain is broken
    Verify {
        /// A checkpoint file (one JSON checkpoint per line, from `ward audit checkpoint --out` or
        /// `[audit] checkpoint_file`)
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<std::path::PathBuf>,
        /// The public key the checkpoints must be signed with (base64; default: the key the
        /// server publishes now). Pin it to verify without trusting the server
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Sign a checkpoint of the chain as it is now (sequence number, head hash, time) and print
    /// it; with --out, append it to FILE as one line
    Checkpoint {
        /// Append to this file instead of printing
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
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
        AuditCommand::Checkpoint { out, client } => {
            let c = client.client()?;
            let cp = c.audit_checkpoint().await?;
            match out {
                Some(path) => {
                    append_line(&path, &serde_json::to_string(&cp)?)?;
                    client.print(&cp, |cp| {
                        println!(
                            "checkpoint of record {} appended to {}",
                            cp.seq,
                            path.display()
                        )
                    });
                }
                None => println!("{}", serde_json::to_string(&cp)?),
            }
        }
        AuditCommand::Verify {
            checkpoints,
            public_key,
            client,
        } => {
            let c = client.client()?;
            // Read the checkpoints first: a file that does not verify is an
            // error of its own, before any chain is read.
            let signed = match &checkpoints {
                None => Vec::new(),
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        anyhow::anyhow!("cannot read the checkpoint file {}: {e}", path.display())
                    })?;
                    // The key comes from the operator or from the server,
                    // never from the file itself.
                    let key = match public_key {
                        Some(k) => k,
                        None => c.audit_checkpoint_key().await.map_err(|e| {
                            anyhow::anyhow!("cannot read the server's checkpoint key ({e}); pass --public-key KEY")
                        })?.public_key,
                    };
                    read_checkpoints(&text, Some(&key))
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                }
            };
            let mut failures: Vec<ChainError> = Vec::new();
            let mut hashes: Vec<String> = Vec::new();
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
                        failures.push(e);
                        break 'pages;
                    }
                    hashes.push(r.hash.clone());
                    after = r.seq;
                }
                if page.records.len() < PAGE as usize || after >= head_seq {
                    break;
                }
                page = c.audit_page(after, PAGE).await?;
            }
            if failures.is_empty()
                && let Err(e) = verifier.finish(head_seq, &head_hash)
            {
                failures.push(e);
            }
            if let Err(e) = check_against(&hashes, &signed) {
                failures.push(e);
            }
            // The server's check of the keyed chain (MACs only it can make).
            let keyed = c.audit_verify().await?;
            if !keyed.intact {
                failures.push(ChainError {
                    seq: keyed.first_bad_seq.unwrap_or(0),
                    reason: keyed.reason.unwrap_or_default(),
                });
            }
            if let Some(first) = failures.iter().min_by_key(|e| e.seq) {
                bail!("{first}");
            }
            let n = hashes.len();
            client.print(
                &serde_json::json!({"intact": true, "records": n, "head_hash": head_hash, "checkpoints": signed.len()}),
                |_| {
                    println!("audit chain intact: {n} records, head {head_hash}");
                    if !signed.is_empty() {
                        println!("every one of {} checkpoints matches", signed.len());
                    }
                },
            );
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

/// Appends one line to a file (created if needed) and syncs it.
fn append_line(path: &std::path::Path, line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()?;
    Ok(())
}
