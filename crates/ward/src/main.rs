//! The `ward` binary: argument parsing and one module per role; the work
//! itself lives in the library crates.

mod agent;
mod audit;
mod ca;
mod client;
mod entry;
mod gateway;
mod oauth;
mod operator;
mod policy;
mod proxy;
mod scan;
mod secret;
mod server;
mod svid;
mod up;

use clap::{Parser, Subcommand};

/// Ward gives every service a short-lived cryptographic identity (SPIFFE),
/// and keeps the registrations, certificate authority and audit log that
/// stand behind it — in one binary.
#[derive(Parser)]
#[command(
    name = "ward",
    version,
    about = "Zero-trust security for microservices: workload identity (SPIFFE), mTLS sidecars that authorize every call with Cedar, a certificate authority and a tamper-evident audit log, in one binary",
    long_about = None,
    after_help = "Roles:\n  server    the control plane (CA, registrations, issuance, seal, audit)\n  agent     the node agent: attests workloads, serves the SPIFFE Workload API\n  proxy     the sidecar: mTLS between services, Cedar authorization per request\n  gateway   the edge: HTTPS for clients, tokens and API keys checked, Cedar per route, rate limits\n  up        the whole platform locally in dev mode, with a walk-through\n\nOperator commands (talk to a server; read WARD_ADDR, WARD_TOKEN, WARD_CACERT):\n  operator, entry, agent token, x509, jwt, ca, bundle, audit, policy, telemetry, secret, client, token\n\nCI:\n  scan      misconfigured manifests, Dockerfiles and Ward configs, secrets, vulnerable dependencies\n\nStart here: `ward up`, then follow what it prints."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane, or initialize its store (`ward server init`)
    Server(server::ServerArgs),
    /// Run the platform locally in dev mode and print a walk-through
    Up(up::UpArgs),
    /// Unseal, seal and inspect a server
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Manage registration entries (which workload gets which SPIFFE ID)
    #[command(subcommand)]
    Entry(entry::EntryCommand),
    /// Run the node agent (SPIFFE Workload API), create join tokens, query the Workload API
    Agent(agent::AgentArgs),
    /// Mint X.509-SVIDs (the key is generated locally; only a CSR is sent)
    #[command(subcommand)]
    X509(svid::X509Command),
    /// Mint JWT-SVIDs
    #[command(subcommand)]
    Jwt(svid::JwtCommand),
    /// Rotate the certificate authority without an outage (prepare, then activate)
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Show the trust bundle (CA certificates and JWT keys)
    #[command(subcommand)]
    Bundle(ca::BundleCommand),
    /// Verify and read the tamper-evident audit log
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run the sidecar proxy: mutual TLS between services, Cedar authorization of every call
    Proxy(proxy::ProxyArgs),
    /// Run the edge gateway: HTTPS for clients, JWT/API-key/certificate authentication, Cedar per route, rate limits, upstream mTLS
    Gateway(gateway::GatewayArgs),
    /// Validate, push and show Cedar policies (who may call what)
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Secrets: versioned KV, vault policies, dynamic database credentials, leases, transit encryption
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// OAuth clients of the token service: create, list, show, rotate-secret, delete
    #[command(subcommand)]
    Client(oauth::ClientCommand),
    /// Mint tokens for tests and drills (admin), verify a token offline against the issuer's JWKS
    #[command(subcommand)]
    Token(oauth::TokenCommand),
    /// Read the call edges proxies report (the service graph's raw data)
    #[command(subcommand)]
    Telemetry(policy::TelemetryCommand),
    /// Scan Kubernetes manifests, Dockerfiles, Ward configs, secrets and dependencies (CI-ready: SARIF, baselines)
    Scan(scan::ScanArgs),
    /// A small HTTP service for demos and tests: answers JSON naming itself and its verified caller
    DemoApp(proxy::DemoAppArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The scanner is synchronous and needs no runtime or TLS provider.
    let cli = match cli.command {
        Command::Scan(a) => return scan::run(a),
        other => Cli { command: other },
    };
    // One crypto provider for every TLS client and server in the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // WARD_THREADS caps the worker threads (default: one per core), e.g. to
    // give a sidecar one core, as a like-for-like benchmark needs.
    if let Some(n) = std::env::var("WARD_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(a) => server::run(a).await,
            Command::Up(a) => up::run(a).await,
            Command::Operator(c) => operator::run(c).await,
            Command::Entry(c) => entry::run(c).await,
            Command::Agent(a) => agent::run(a).await,
            Command::X509(c) => svid::run_x509(c).await,
            Command::Jwt(c) => svid::run_jwt(c).await,
            Command::Ca(c) => ca::run(c).await,
            Command::Bundle(c) => ca::run_bundle(c).await,
            Command::Audit(c) => audit::run(c).await,
            Command::Proxy(a) => proxy::run(a).await,
            Command::Gateway(a) => gateway::run(a).await,
            Command::Policy(c) => policy::run(c).await,
            Command::Secret(c) => secret::run(c).await,
            Command::Telemetry(c) => policy::run_telemetry(c).await,
            Command::Client(c) => oauth::run_client(c).await,
            Command::Token(c) => oauth::run_token(c).await,
            Command::DemoApp(a) => proxy::run_demo_app(a).await,
            Command::Scan(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Initializes logging to stderr: `WARD_LOG` sets the filter (default
/// `info` for long-running roles), `json` picks structured output.
pub(crate) fn init_logging(default_level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
