//! `ward server`: run the control plane, or initialize its store.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ward_server::config::ServerConfig;
use ward_server::{dev, init};
use ward_store::Store;

use crate::client::Output;

/// Arguments of `ward server`.
#[derive(Args)]
#[command(
    after_help = "Production: `ward server init --config server.toml` once (prints unseal shares and an admin token), then `ward server --config server.toml` and `ward operator unseal SHARE` until the threshold.\nDevelopment: `ward server --dev --data-dir DIR` initializes and unseals itself and writes DIR/dev.env; `ward server --dev --config server.toml` does the same with a full configuration (its data_dir, storage, listen, [oauth] trusted issuers…)."
)]
pub struct ServerArgs {
    #[command(subcommand)]
    action: Option<ServerAction>,
    /// Configuration file (TOML; see the README's configuration reference); with --dev, dev mode on that configuration
    #[arg(long, conflicts_with_all = ["data_dir", "listen"])]
    config: Option<PathBuf>,
    /// Development mode: self-initializing, self-unsealing (key file in --data-dir), never for production
    #[arg(long)]
    dev: bool,
    /// Dev mode: where the store, TLS files, key file and dev.env live
    #[arg(long, requires = "dev")]
    data_dir: Option<PathBuf>,
    /// Dev mode: listen address (port 0 picks a free port; dev.env has the real one)
    #[arg(long, requires = "dev")]
    listen: Option<String>,
    /// Dev mode: the trust domain
    #[arg(long, requires = "dev", default_value = "ward.test")]
    trust_domain: String,
    /// Log format on stderr
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Once, after upgrading from a release without the barrier: on the next unseal, authenticate
    /// every row of the store as it is now. Check the store first (entries, tokens, CAs,
    /// policies): a row a database writer forged before this unseal becomes trusted. Never needed
    /// for a store made by this release; without it, such a store is refused, not upgraded
    #[arg(long, conflicts_with = "dev")]
    upgrade_store: bool,
}

#[derive(Subcommand)]
enum ServerAction {
    /// Initialize the store: create the CA, the master key and its unseal shares, and the first admin token
    Init(InitArgs),
}

#[derive(Args)]
struct InitArgs {
    /// Configuration file (the same one `ward server --config` will use)
    #[arg(long)]
    config: PathBuf,
    /// Run as an intermediate CA under this upstream CA certificate (PEM; may be followed by its chain, root last)
    #[arg(long, requires = "upstream_key")]
    upstream_cert: Option<PathBuf>,
    /// The upstream CA's private key (PKCS#8 PEM, ECDSA P-256)
    #[arg(long, requires = "upstream_cert")]
    upstream_key: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    crate::init_logging("info", args.log_format == "json");
    if let Some(ServerAction::Init(init_args)) = args.action {
        return run_init(init_args).await;
    }
    if args.dev {
        let config = match (&args.config, &args.data_dir) {
            (Some(path), _) => ServerConfig::from_file(path)?,
            (None, Some(dir)) => {
                ServerConfig::dev(dir, args.listen.as_deref(), &args.trust_domain)?
            }
            (None, None) => bail!("--dev needs --data-dir DIR (or --config FILE)"),
        };
        let devsrv = dev::start(config).await.map_err(anyhow::Error::msg)?;
        eprintln!("{}", dev::WARNING);
        let env = devsrv.write_env_file().map_err(anyhow::Error::msg)?;
        tracing::info!(addr = %devsrv.server.url(), env = %env.display(), "dev server ready");
        devsrv.server.run(crate::shutdown_signal()).await;
        return Ok(());
    }
    let Some(path) = args.config else {
        bail!("pass --config FILE (or --dev --data-dir DIR for development)");
    };
    let mut config = ServerConfig::from_file(&path)?;
    config.upgrade_store = args.upgrade_store;
    let ready = ward_server::prepare(config)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(addr = %ready.url(), "server listening, sealed: unseal it with `ward operator unseal`");
    ready.run(crate::shutdown_signal()).await;
    Ok(())
}

async fn run_init(args: InitArgs) -> anyhow::Result<()> {
    let config = ServerConfig::from_file(&args.config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let upstream = match (&args.upstream_cert, &args.upstream_key) {
        (Some(c), Some(k)) => Some((
            std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?,
            zeroize::Zeroizing::new(
                std::fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?,
            ),
        )),
        _ => None,
    };
    let store = Store::connect(&config.storage).await?;
    let out = init::initialize(
        &store,
        &config,
        upstream.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
    )
    .await?;
    store.close().await;
    // Also make the API's TLS CA now, so operators can hand out WARD_CACERT.
    ward_server::tls::ensure_ca(&config.data_dir).map_err(anyhow::Error::msg)?;
    let cacert = ward_server::tls::ca_cert_path(&config.data_dir);
    match args.output {
        Output::Json => {
            let shares: Vec<&str> = out.shares.iter().map(|s| s.as_str()).collect();
            println!(
                "{}",
                serde_json::json!({
                    "unseal_shares": shares,
                    "threshold": out.threshold,
                    "admin_token": out.admin_token.as_str(),
                    "cacert": cacert,
                    "trust_domain": config.trust_domain.to_string(),
                })
            );
        }
        Output::Text => {
            println!(
                "Ward initialized for trust domain {}.\n",
                config.trust_domain
            );
            for (i, s) in out.shares.iter().enumerate() {
                println!("Unseal share {}: {}", i + 1, s.as_str());
            }
            println!("\nInitial admin token: {}", out.admin_token.as_str());
            println!("API CA certificate (WARD_CACERT): {}", cacert.display());
            println!(
                "\nThese are shown once and are not stored. Give each share to a different operator;\n{} of {} shares unseal the server: `ward operator unseal SHARE`.",
                out.threshold,
                out.shares.len()
            );
        }
    }
    Ok(())
}
