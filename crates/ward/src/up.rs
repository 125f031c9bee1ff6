//! `ward up`: parses its arguments and hands over to the `ward-up` library.

use std::path::PathBuf;

use clap::Args;

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
    /// PostgreSQL (its admin URL) in which the vault makes the demo's dynamic credentials; if it does not answer, that part is left out with the reason
    #[arg(
        long,
        env = "WARD_UP_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// Leave out the dynamic database credentials
    #[arg(long)]
    no_postgres: bool,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    crate::init_logging("warn", false);
    ward_up::run(
        ward_up::UpOptions {
            data_dir: args.data_dir,
            listen: args.listen,
            trust_domain: args.trust_domain,
            postgres: (!args.no_postgres).then_some(args.postgres),
        },
        crate::shutdown_signal(),
    )
    .await
}
