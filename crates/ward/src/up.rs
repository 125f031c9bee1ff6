//! `ward up`: the platform on one machine in dev mode, with a walk-through.
//! It starts the control plane on embedded storage, mints a demo SVID
//! through the real API to show the path works, and prints what to try.

use std::path::PathBuf;

use clap::Args;
use ward_server::config::ServerConfig;
use ward_server::dev;

/// Arguments of `ward up`.
#[derive(Args)]
pub struct UpArgs {
    /// Where everything is kept (reused on the next `ward up`)
    #[arg(long, default_value = "ward-data")]
    data_dir: PathBuf,
    /// The control plane's listen address (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// The trust domain
    #[arg(long, default_value = "ward.test")]
    trust_domain: String,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    crate::init_logging("warn", false);
    let config = ServerConfig::dev(
        &args.data_dir.join("server"),
        Some(&args.listen),
        &args.trust_domain,
    )?;
    let td = config.trust_domain.clone();
    let devsrv = dev::start(config).await.map_err(anyhow::Error::msg)?;
    let env = devsrv.write_env_file().map_err(anyhow::Error::msg)?;
    let url = devsrv.server.url();
    let cacert = devsrv.server.cacert.clone();
    let token = devsrv.token.to_string();
    let data_dir = std::fs::canonicalize(&args.data_dir).unwrap_or(args.data_dir.clone());
    let server = tokio::spawn(devsrv.server.run(crate::shutdown_signal()));

    // Exercise the real issuance path once, as a user would.
    let demo_id = format!("spiffe://{td}/ns/demo/sa/web");
    let demo_dir = data_dir.join("demo");
    let client = ward_client::Client::new(&url, Some(token.clone()), &cacert)?;
    crate::svid::mint_x509_to(&client, &demo_id, &demo_dir, None).await?;

    let up_json = serde_json::json!({
        "trust_domain": td.to_string(),
        "server": {"addr": url, "token": token, "cacert": cacert},
        "services": {},
    });
    std::fs::write(
        data_dir.join("up.json"),
        serde_json::to_vec_pretty(&up_json)?,
    )?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "ward".into());
    println!(
        r#"Ward is up (dev mode; never for production)

  control plane  {url}   trust domain {td}
  data           {data}   (dev.env, up.json; kept for the next `ward up`)
  demo SVID      {demo}/svid.pem, key.pem, bundle.pem  for {demo_id}

Try it, in another shell:
  source {env}
  {exe} x509 mint --spiffe-id spiffe://{td}/ns/shop/sa/orders --out /tmp/orders
  openssl verify -CAfile /tmp/orders/bundle.pem /tmp/orders/svid.pem
  openssl x509 -in /tmp/orders/svid.pem -noout -ext subjectAltName,keyUsage,basicConstraints
  {exe} jwt mint --spiffe-id spiffe://{td}/ns/shop/sa/orders --audience payments
  {exe} entry create --spiffe-id spiffe://{td}/ns/shop/sa/orders --parent spiffe://{td}/ward/agent/node1 --selector unix:uid:1000
  {exe} entry list
  {exe} ca prepare && {exe} ca activate      # rotate the CA; old SVIDs keep verifying
  {exe} audit verify                        # the tamper-evident log of all of the above

Press Ctrl-C to stop."#,
        data = data_dir.display(),
        demo = demo_dir.display(),
        env = env.display(),
    );
    server.await?;
    Ok(())
}
