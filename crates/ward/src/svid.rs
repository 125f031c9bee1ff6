//! `ward x509 mint` and `ward jwt mint`, for operators and tests (like
//! `spire-server x509 mint`). The private key is generated here and written
//! to disk with mode 0600; only the CSR travels.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use ward_api::{JwtSvidRequest, X509SvidRequest, X509SvidResponse};
use ward_client::Client;
use ward_identity::SpiffeId;
use ward_identity::csr::generate_key_and_csr;

use crate::client::{ClientArgs, parse_duration, rfc3339};

/// X.509-SVID commands.
#[derive(Subcommand)]
pub enum X509Command {
    /// Mint an X.509-SVID: writes OUT/svid.pem (leaf first), OUT/key.pem, OUT/bundle.pem
    Mint {
        /// The SPIFFE ID to certify
        #[arg(long)]
        spiffe_id: String,
        /// Output directory (created if needed)
        #[arg(long)]
        out: std::path::PathBuf,
        /// Lifetime (default 1h)
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// JWT-SVID commands.
#[derive(Subcommand)]
pub enum JwtCommand {
    /// Mint a JWT-SVID (ES256) and print it
    Mint {
        /// The SPIFFE ID for `sub`
        #[arg(long)]
        spiffe_id: String,
        /// Audience; repeat for more
        #[arg(long = "audience", required = true)]
        audience: Vec<String>,
        /// Lifetime (default 5m)
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn write_file(path: &Path, data: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Generates a key, has the server sign a CSR for `id`, and writes
/// `svid.pem`, `key.pem` and `bundle.pem` into `out`.
pub async fn mint_x509_to(
    client: &Client,
    id: &str,
    out: &Path,
    ttl: Option<Duration>,
) -> anyhow::Result<X509SvidResponse> {
    let id = SpiffeId::parse(id).map_err(|e| anyhow::anyhow!("--spiffe-id {id:?}: {e}"))?;
    let (key_pem, csr_pem) = generate_key_and_csr(&id).context("generating the key and CSR")?;
    let resp = client
        .sign_x509(&X509SvidRequest {
            csr: csr_pem,
            entry_id: None,
            ttl: ttl.map(|d| d.as_secs()),
        })
        .await?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_file(&out.join("key.pem"), &key_pem, 0o600)?;
    write_file(&out.join("svid.pem"), &resp.cert_chain_pem, 0o644)?;
    write_file(&out.join("bundle.pem"), &resp.bundle_pem, 0o644)?;
    Ok(resp)
}

pub async fn run_x509(cmd: X509Command) -> anyhow::Result<()> {
    let X509Command::Mint {
        spiffe_id,
        out,
        ttl,
        client,
    } = cmd;
    // Refuse a malformed ID before touching the network.
    SpiffeId::parse(&spiffe_id).map_err(|e| anyhow::anyhow!("--spiffe-id {spiffe_id:?}: {e}"))?;
    let resp = mint_x509_to(&client.client()?, &spiffe_id, &out, ttl).await?;
    client.print(&resp, |r| {
        println!(
            "{} (serial {}, expires {})",
            r.spiffe_id,
            r.serial,
            rfc3339(r.expires_at)
        );
        println!("wrote {}/svid.pem, key.pem, bundle.pem", out.display());
    });
    Ok(())
}

pub async fn run_jwt(cmd: JwtCommand) -> anyhow::Result<()> {
    let JwtCommand::Mint {
        spiffe_id,
        audience,
        ttl,
        client,
    } = cmd;
    SpiffeId::parse(&spiffe_id).map_err(|e| anyhow::anyhow!("--spiffe-id {spiffe_id:?}: {e}"))?;
    let resp = client
        .client()?
        .sign_jwt(&JwtSvidRequest {
            spiffe_id,
            audience,
            ttl: ttl.map(|d| d.as_secs()),
        })
        .await?;
    client.print(&resp, |r| println!("{}", r.token));
    Ok(())
}
