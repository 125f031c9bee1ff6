//! What every operator command shares: the connection flags (also read from
//! `WARD_ADDR`, `WARD_TOKEN`, `WARD_CACERT`) and the output format.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ward_client::Client;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// Machine-readable JSON on stdout.
    Json,
}

/// Connection and output flags of operator commands.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Server address, https://HOST:PORT
    #[arg(long, env = "WARD_ADDR", global = true)]
    pub addr: Option<String>,
    /// Admin token
    #[arg(long, env = "WARD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// CA certificate file that signs the server's HTTPS certificate (DATA_DIR/tls/ca.pem)
    #[arg(long, env = "WARD_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub output: Output,
}

impl ClientArgs {
    /// A client from the flags; says which one is missing.
    pub fn client(&self) -> anyhow::Result<Client> {
        let Some(addr) = &self.addr else {
            bail!(
                "no server address: set WARD_ADDR or pass --addr https://HOST:PORT (for a dev server: source DATA_DIR/dev.env)"
            );
        };
        let Some(cacert) = &self.cacert else {
            bail!(
                "no CA certificate: set WARD_CACERT or pass --cacert FILE (the server's DATA_DIR/tls/ca.pem)"
            );
        };
        Client::new(addr, self.token.clone(), cacert).context("configuring the client")
    }

    /// Prints `value` as JSON when asked, else runs `text`.
    pub fn print<T: serde::Serialize>(&self, value: &T, text: impl FnOnce(&T)) {
        match self.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            ),
            Output::Text => text(value),
        }
    }
}

/// Parses a duration such as `10m`, `1h`, `90s`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 10m or 1h: {e}"))
}

/// Formats Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
