//! `ward up` as a library (the CLI only parses its arguments): the platform
//! on one machine in dev mode, with a walk-through.
//! It starts the control plane on embedded storage and a node agent beside
//! it, registers a demo workload (this user's uid), fetches the demo SVID
//! through the real Workload API, then runs three demo services (frontend,
//! orders, payments), each behind its own `ward proxy`, under a policy
//! that allows frontend → orders → payments and nothing else, shows one
//! allowed and one denied call, and prints what to try.

mod edge;
mod mesh;
pub mod vault;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ward_agent::AgentConfig;
use ward_agent::client::{connect, fetch_x509_once};
use ward_api::EntryCreate;
use ward_server::config::ServerConfig;
use ward_server::dev;

/// What `ward up` is asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Where everything is kept (reused on the next run).
    pub data_dir: PathBuf,
    /// The control plane's listen address (port 0 picks a free port).
    pub listen: String,
    /// The trust domain.
    pub trust_domain: String,
    /// A PostgreSQL the vault makes orders' dynamic credentials in (its
    /// admin URL); none leaves that part out.
    pub postgres: Option<String>,
}

/// The node name of the agent `ward up` runs.
const NODE: &str = "up-node";

/// Starts everything, prints the walk-through, and runs until `shutdown`
/// resolves; then stops everything it started.
pub async fn run(
    args: UpOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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

    // One stop signal for everything started here.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(devsrv.server.run(stopped(stop_rx.clone())));

    // The node agent, attested with a join token on the first run.
    let client = ward_client::Client::new(&url, Some(token.clone()), &cacert)?;
    // Bound to the node: on later runs the node is known, and only a bound
    // token may attest it again (needed if its stored SVID has lapsed).
    let join = client.create_join_token(600, Some(NODE.into())).await?;
    let socket = data_dir.join("public").join("api.sock");
    let agent_config = AgentConfig {
        server: url.clone(),
        cacert: cacert.clone(),
        join_token: Some(zeroize::Zeroizing::new(join.token)),
        data_dir: data_dir.join("agent"),
        socket: socket.clone(),
        node_name: NODE.into(),
    };
    let agent = tokio::spawn(ward_agent::run(agent_config, stopped(stop_rx.clone())));

    // The demo workload: anything run by this user.
    let demo_id = format!("spiffe://{td}/ns/demo/sa/web");
    let parent = format!("spiffe://{td}/ward/agent/{NODE}");
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0);
    let existing = client.list_entries(Some(&parent), 0).await?;
    if !existing.entries.iter().any(|e| e.spiffe_id == demo_id) {
        client
            .create_entry(&EntryCreate {
                spiffe_id: demo_id.clone(),
                parent_id: parent.clone(),
                selectors: vec![format!("unix:uid:{uid}")],
                x509_ttl: None,
                jwt_ttl: None,
                labels: Default::default(),
            })
            .await?;
    }
    let demo_dir = data_dir.join("demo");
    fetch_demo(&socket, &demo_dir)
        .await
        .context("fetching the demo SVID through the Workload API")?;

    let services = ["frontend", "orders", "payments"];
    let vault_setup = crate::vault::seed(
        &client,
        &td.to_string(),
        &services,
        args.postgres.as_deref(),
    )
    .await
    .context("setting up the demo's vault")?;
    let mesh = crate::mesh::start(crate::mesh::MeshSetup {
        client: &client,
        td: &td.to_string(),
        data_dir: &data_dir,
        parent: &parent,
        uid,
        server_url: &url,
        server_ca: &cacert,
        socket: &socket,
        db_role: vault_setup.db_role.as_deref(),
    })
    .await
    .context("starting the demo services and their proxies")?;
    let frontend = mesh
        .inbound_of("frontend")
        .context("the mesh has no frontend")?;
    let edge = crate::edge::start(crate::edge::EdgeSetup {
        client: &client,
        td: &td.to_string(),
        data_dir: &data_dir,
        server_data_dir: &data_dir.join("server"),
        parent: &parent,
        uid,
        server_url: &url,
        server_ca: &cacert,
        socket: &socket,
        frontend,
    })
    .await
    .context("starting the gateway")?;
    let vault_tour = crate::vault::tour(
        &mesh.app_of("orders").unwrap_or_default(),
        &mesh.app_of("payments").unwrap_or_default(),
        &vault_setup,
    )
    .await;

    let up_json = serde_json::json!({
        "trust_domain": td.to_string(),
        "server": {"addr": url, "token": token, "cacert": cacert},
        "agent": {"socket": socket, "spiffe_id": parent},
        "services": mesh.services_json(),
        "gateway": edge.json(&cacert),
        "vault": {
            "addr": url,
            "cacert": cacert,
            "jwt_audience": "vault",
            "db_role": vault_setup.db_role,
            "db_dsn": vault_setup.db_dsn,
        },
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
  node agent     {parent}
                 Workload API: unix:{sock}
  demo workload  {demo_id}  (any process of uid {uid})
                 its SVID, fetched through the Workload API: {demo}/svid.pem, key.pem, bundle.pem
  data           {data}   (dev.env, up.json; kept for the next `ward up`)

Try it, in another shell:
  source {env}
  {exe} agent api fetch --socket {sock} --out /tmp/web     # as the demo workload
  openssl verify -CAfile /tmp/web/bundle.pem /tmp/web/svid.pem
  {exe} agent api jwt --socket {sock} --audience orders
  SPIFFE_ENDPOINT_SOCKET=unix:{sock} python3 -c 'from spiffe import WorkloadApiClient; print(WorkloadApiClient().fetch_x509_svid().spiffe_id)'   # needs pip install spiffe
  {exe} x509 mint --spiffe-id spiffe://{td}/ns/shop/sa/orders --out /tmp/orders   # as an operator
  {exe} entry list
  {exe} ca prepare && {exe} ca activate      # rotate the CA; old SVIDs keep verifying
  {exe} audit verify                        # the tamper-evident log of all of the above

{mesh}
{edge}{vault_tour}
Try the vault (hvac, the Vault CLI and VAULT_ADDR=$WARD_ADDR work too):
  {exe} secret get {orders_secret}          # as the operator
  {exe} secret policy read demo             # who may read what (Cedar)
  {exe} secret lease list                   # dynamic credentials and their leases
  {exe} audit tail                          # every read above, with who read it

Press Ctrl-C to stop (it stops everything it started)."#,
        mesh = mesh.walkthrough(&exe),
        edge = edge.walkthrough(&cacert, &data_dir.join("up.json")),
        orders_secret = crate::vault::secret_path("orders"),
        sock = socket.display(),
        data = data_dir.display(),
        demo = demo_dir.display(),
        env = env.display(),
    );
    stopped(stop_rx.clone()).await;
    edge.stop().await;
    mesh.stop().await;
    let _ = agent.await?;
    server.await?;
    Ok(())
}

/// Fetches the demo workload's SVID as the workload would, waiting for the
/// agent to come up and receive it.
async fn fetch_demo(socket: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let mut client = connect(socket).await.map_err(anyhow::Error::msg)?;
            fetch_x509_once(&mut client).await?.context("empty answer")
        }
        .await;
        match attempt {
            Ok(resp) => {
                let svid = resp.svids.first().context("no SVID in the answer")?;
                ward_agent::client::write_svid_files(out, svid)
                    .with_context(|| format!("writing the demo SVID to {}", out.display()))?;
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
