//! `ward secret`: the vault from the command line. KV secrets at `secret/`
//! (versions, check-and-set, soft delete, undelete, destroy, metadata), the
//! vault's Cedar policies, dynamic database credentials and their leases,
//! and transit encryption. Each command is one or two calls of the vault's
//! Vault-compatible HTTP API, named in its help, so that anything done
//! here can be repeated with any Vault client.
//!
//! Secret values reach stdout only where they were asked for (`get`,
//! `db creds`, `transit decrypt`) and never stderr: no error or warning
//! quotes an argument that could be a value, since terminals, CI logs and
//! shell histories keep stderr.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};
use ward_client::{Client, ClientError};

use crate::client::{ClientArgs, parse_duration, rfc3339};

mod db;
mod kv;
mod lease;
mod policy;
mod transit;

pub use db::DbCommand;
pub use lease::LeaseCommand;
pub use policy::PolicyCommand;
pub use transit::TransitCommand;

/// KV, policy, database, lease and transit commands.
#[derive(Subcommand)]
#[command(
    after_help = "Every command speaks the vault's Vault-compatible API (/v1/secret, /v1/sys/policies/cedar,\n/v1/database, /v1/sys/leases, /v1/transit) with WARD_ADDR, WARD_TOKEN and WARD_CACERT.\nPATH is below the `secret/` mount: `orders/db` is the API path secret/data/orders/db.\n\nExample:\n  ward secret put orders/db username=orders password=@db-password.txt\n  ward secret get orders/db --field password"
)]
pub enum SecretCommand {
    /// Write a new version of a secret (POST /v1/secret/data/PATH); values are never echoed
    #[command(
        after_help = "KEY=VALUE takes the value as written, KEY=@FILE the exact contents of FILE, KEY=- standard\ninput (once). Values on the command line land in shell history: prefer @FILE or - for passwords.\nWith --json the whole data object comes from FILE (or - for standard input), for values that\nare not strings or that start with @.\n\nExample:\n  ward secret put orders/db username=orders password=@db-password.txt\n  ward secret put orders/db --cas 1 password=- < new-password.txt\n  ward secret put orders/config --json config.json"
    )]
    Put(PutArgs),
    /// Read a secret, or one field of it (GET /v1/secret/data/PATH)
    #[command(
        after_help = "A deleted or destroyed version is reported as such (with when) and the exit status is 1;\nso is a path that holds no secret.\n\nExample:\n  ward secret get orders/db\n  ward secret get orders/db --version 2 --output json\n  PGPASSWORD=$(ward secret get orders/db --field password) psql …"
    )]
    Get(GetArgs),
    /// List the secrets and folders under PATH, or at the root (LIST /v1/secret/metadata/PATH)
    #[command(
        after_help = "Folders end in `/`. Listing an empty or unknown folder prints nothing found and succeeds.\n\nExample:\n  ward secret list\n  ward secret list orders"
    )]
    List {
        /// The folder below the `secret/` mount (none: the root)
        path: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Soft-delete the latest version, or the versions given (undelete brings them back)
    #[command(
        after_help = "Without --versions: DELETE /v1/secret/data/PATH (the latest version).\nWith --versions: POST /v1/secret/delete/PATH.\nThe data stays until the versions are destroyed: `ward secret undelete` restores them.\n\nExample:\n  ward secret delete orders/db\n  ward secret delete orders/db --versions 1,2"
    )]
    Delete {
        /// The secret's path below the `secret/` mount
        path: String,
        /// Version numbers, comma-separated
        #[arg(long, value_delimiter = ',', value_name = "N,N")]
        versions: Vec<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Restore soft-deleted versions (POST /v1/secret/undelete/PATH)
    #[command(after_help = "Example:\n  ward secret undelete orders/db --versions 2")]
    Undelete {
        /// The secret's path below the `secret/` mount
        path: String,
        /// Version numbers, comma-separated
        #[arg(long, value_delimiter = ',', value_name = "N,N", required = true)]
        versions: Vec<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Destroy versions for good: their data is erased and cannot be restored (POST /v1/secret/destroy/PATH)
    #[command(after_help = "Example:\n  ward secret destroy orders/db --versions 1,2")]
    Destroy {
        /// The secret's path below the `secret/` mount
        path: String,
        /// Version numbers, comma-separated
        #[arg(long, value_delimiter = ',', value_name = "N,N", required = true)]
        versions: Vec<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One line per version, newest first: created, and whether it is deleted or destroyed (GET /v1/secret/metadata/PATH)
    #[command(after_help = "Example:\n  ward secret history orders/db")]
    History {
        /// The secret's path below the `secret/` mount
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a secret's metadata, change its settings, or delete it with every version
    #[command(
        after_help = "Without flags: GET /v1/secret/metadata/PATH. With settings: POST /v1/secret/metadata/PATH\n(only the settings given change; --custom replaces all custom metadata). --delete: DELETE\n/v1/secret/metadata/PATH, which erases every version and the metadata.\n\nExample:\n  ward secret metadata orders/db\n  ward secret metadata orders/db --max-versions 5 --cas-required true --delete-version-after 720h --custom owner=team-orders\n  ward secret metadata orders/db --delete"
    )]
    Metadata(MetadataArgs),
    /// Manage the vault's Cedar policies: which workload may do what on which path
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Dynamic database credentials: connections, roles, credentials
    #[command(subcommand)]
    Db(DbCommand),
    /// The leases of dynamic credentials: list, look up, renew, revoke
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Encryption as a service: named keys that never leave Ward
    #[command(subcommand)]
    Transit(TransitCommand),
}

/// Arguments of `ward secret put`.
#[derive(clap::Args)]
pub struct PutArgs {
    /// The secret's path below the `secret/` mount, such as orders/db
    path: String,
    /// The data: KEY=VALUE, KEY=@FILE (the file's contents) or KEY=- (standard input)
    #[arg(value_name = "KEY=VALUE", conflicts_with = "json")]
    pairs: Vec<String>,
    /// The whole data object as JSON, from FILE (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Write only if the current version is N (0: only if the secret does not exist yet)
    #[arg(long, value_name = "N")]
    cas: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `ward secret get`.
#[derive(clap::Args)]
pub struct GetArgs {
    /// The secret's path below the `secret/` mount, such as orders/db
    path: String,
    /// The version to read (default: the latest)
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// Print only this key's value, raw and newline-terminated (for scripts)
    #[arg(long, value_name = "KEY")]
    field: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `ward secret metadata`.
#[derive(clap::Args)]
pub struct MetadataArgs {
    /// The secret's path below the `secret/` mount, such as orders/db
    path: String,
    /// Keep at most N versions (0: the mount's setting); older ones are erased
    #[arg(long, value_name = "N")]
    max_versions: Option<u32>,
    /// Refuse writes that do not pass --cas
    #[arg(long, value_name = "true|false")]
    cas_required: Option<bool>,
    /// Soft-delete each version this long after it is written (0s: never)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    delete_version_after: Option<Duration>,
    /// Custom metadata KEY=VALUE (not secret: listed in clear); repeat for more
    #[arg(long = "custom", value_parser = parse_pair, value_name = "KEY=VALUE")]
    custom: Vec<(String, String)>,
    /// Delete the secret: its metadata and every version, for good
    #[arg(long, conflicts_with_all = ["max_versions", "cas_required", "delete_version_after", "custom"])]
    delete: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// The vault API through one client.
struct Vault {
    client: Client,
}

impl Vault {
    /// A client for the vault; a token is required (the admin's, or a
    /// workload's from auth/cert/login or auth/jwt/login).
    fn connect(args: &ClientArgs) -> anyhow::Result<Self> {
        if args.token.as_deref().is_none_or(str::is_empty) {
            bail!(
                "no token: set WARD_TOKEN or pass --token (the admin token, or a workload's vault token; for a dev server: source DATA_DIR/dev.env)"
            );
        }
        Ok(Self {
            client: args.client()?,
        })
    }

    /// Sends one request; any status but 2xx is an error. Vault's
    /// `warnings` are printed (they are the server's words, never a value).
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let (_, v) = self.client.vault(method, path, body.as_ref()).await?;
        warn(&v);
        Ok(v)
    }
}

fn warn(answer: &Value) {
    for w in answer["warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str() {
            eprintln!("warning: {w}");
        }
    }
}

/// The server's 404 as `what` ("no secret at orders/db"); other errors as they are.
fn not_found(what: impl FnOnce() -> String) -> impl FnOnce(ClientError) -> anyhow::Error {
    move |e| match e {
        ClientError::Api { status: 404, .. } => anyhow!(what()),
        other => other.into(),
    }
}

/// The characters a path segment may hold besides letters and digits:
/// those a URL carries as they are, so that the server sees the path as
/// written (it refuses encodings rather than decoding them).
const PATH_PUNCTUATION: &str = "-_.~!$&'()*+,=:@";

/// Checks a path below a mount as the server will (`listing` allows the
/// root and one trailing `/`), so that a mistake is named before the
/// request and no path is sent that a URL would rewrite (`a/../b`).
fn check_path<'a>(what: &str, path: &'a str, listing: bool) -> anyhow::Result<&'a str> {
    let trimmed = if listing {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    if trimmed.is_empty() {
        if listing {
            return Ok("");
        }
        bail!("{what} is empty: give a path such as orders/db");
    }
    if trimmed.len() > 512 {
        bail!("{what} is longer than 512 bytes");
    }
    if let Some(c) = trimmed
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '/' || PATH_PUNCTUATION.contains(*c)))
    {
        bail!(
            "{what} {trimmed:?} holds {c:?}: paths use letters, digits and {PATH_PUNCTUATION} between single slashes"
        );
    }
    if trimmed
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        bail!(
            "{what} {trimmed:?} has an empty, `.` or `..` segment (or starts or ends with `/`): write the path as it is, such as orders/db"
        );
    }
    Ok(trimmed)
}

/// Checks the name of a key, role, connection or policy as the server will.
fn check_name<'a>(what: &str, name: &'a str) -> anyhow::Result<&'a str> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        bail!("{what} {name:?} is not a name: use letters, digits, `-`, `_` and `.` (at most 128)");
    }
    Ok(name)
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Reads `file` (`-`: standard input) as bytes; the error names the file, never its contents.
fn read_bytes(file: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut out)
            .context("cannot read standard input")?;
    } else {
        out = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
    }
    Ok(out)
}

/// As [`read_bytes`], as UTF-8 text.
fn read_text(file: &str) -> anyhow::Result<String> {
    let what = if file == "-" { "standard input" } else { file };
    String::from_utf8(read_bytes(file)?).map_err(|_| anyhow!("{what} is not UTF-8 text"))
}

/// The data of `put` from KEY=VALUE arguments. Errors name the argument
/// by position and key, never by its text, which may be a value.
fn data_from_pairs(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut data = Map::new();
    let mut stdin_used = false;
    for (i, pair) in pairs.iter().enumerate() {
        let n = i + 1;
        let Some((key, raw)) = pair.split_once('=') else {
            bail!(
                "data argument {n} has no `=`: write KEY=VALUE, KEY=@FILE or KEY=- (the argument is not shown, as it may be a value)"
            );
        };
        if key.is_empty() {
            bail!("data argument {n} has an empty KEY: write KEY=VALUE");
        }
        let value = if raw == "-" {
            if stdin_used {
                bail!("key {key:?}: standard input (`-`) can be read only once; use KEY=@FILE");
            }
            stdin_used = true;
            read_text("-").with_context(|| format!("the value of key {key:?}"))?
        } else if let Some(file) = raw.strip_prefix('@') {
            read_text(file).with_context(|| format!("the value of key {key:?}"))?
        } else {
            raw.to_owned()
        };
        if data.insert(key.to_owned(), Value::String(value)).is_some() {
            bail!("key {key:?} is given twice");
        }
    }
    Ok(data)
}

fn versions_text(versions: &[u64]) -> String {
    versions
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A JSON value as a person reads it: strings bare, anything else as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether the RFC 3339 time `t` is set and not in the future.
fn passed(t: &str) -> bool {
    !t.is_empty() && humantime::parse_rfc3339_weak(t).is_ok_and(|at| at <= SystemTime::now())
}

/// A version's state from its metadata (`deletion_time`, `destroyed`).
fn version_state(v: &Value) -> String {
    let deletion = v["deletion_time"].as_str().unwrap_or_default();
    if v["destroyed"].as_bool().unwrap_or(false) {
        "destroyed".to_owned()
    } else if passed(deletion) {
        format!("deleted {deletion}")
    } else if !deletion.is_empty() {
        format!("live (to be deleted at {deletion})")
    } else {
        "live".to_owned()
    }
}

fn print_table(rows: &[(String, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

pub async fn run(cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Put(a) => kv::put(a).await,
        SecretCommand::Get(a) => kv::get(a).await,
        SecretCommand::List { path, client } => {
            kv::list(path.as_deref().unwrap_or(""), client).await
        }
        SecretCommand::Delete {
            path,
            versions,
            client,
        } => {
            let path = check_path("PATH", &path, false)?;
            let vault = Vault::connect(&client)?;
            if versions.is_empty() {
                vault
                    .call("DELETE", &format!("/v1/secret/data/{path}"), None)
                    .await
                    .with_context(|| format!("cannot delete {path}"))?;
            } else {
                vault
                    .call(
                        "POST",
                        &format!("/v1/secret/delete/{path}"),
                        Some(json!({ "versions": versions })),
                    )
                    .await
                    .with_context(|| format!("cannot delete {path}"))?;
            }
            let done = json!({"path": path, "deleted": versions});
            client.print(&done, |_| {
                if versions.is_empty() {
                    println!(
                        "{path}: the latest version is deleted (`ward secret undelete` restores it)"
                    );
                } else {
                    println!("{path}: versions {} are deleted", versions_text(&versions));
                }
            });
            Ok(())
        }
        SecretCommand::Undelete {
            path,
            versions,
            client,
        } => kv::change_versions(&path, "undelete", "restored", &versions, &client).await,
        SecretCommand::Destroy {
            path,
            versions,
            client,
        } => kv::change_versions(&path, "destroy", "destroyed", &versions, &client).await,
        SecretCommand::History { path, client } => kv::history(&path, client).await,
        SecretCommand::Metadata(a) => kv::metadata(a).await,
        SecretCommand::Policy(c) => policy::policy(c).await,
        SecretCommand::Db(c) => db::db(c).await,
        SecretCommand::Lease(c) => lease::lease(c).await,
        SecretCommand::Transit(c) => transit::transit(c).await,
    }
}

#[cfg(test)]
mod tests {
    use super::transit::{base64_decode, base64_encode};
    use super::*;

    #[test]
    fn base64_round_trips_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9*", "Zm9v\n"] {
            assert!(base64_decode(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn paths_that_a_url_would_rewrite_are_refused() {
        assert_eq!(check_path("PATH", "orders/db", false).unwrap(), "orders/db");
        assert_eq!(check_path("PATH", "orders/", true).unwrap(), "orders");
        assert_eq!(check_path("PATH", "", true).unwrap(), "");
        for bad in [
            "",
            "/orders",
            "orders/",
            "orders//db",
            "orders/../payments",
            "./orders",
            "orders%2Fdb",
            "orders db",
            "orders?x",
            "orders#x",
            "orders\\db",
            "ordérs",
        ] {
            assert!(check_path("PATH", bad, false).is_err(), "{bad:?}");
        }
        assert!(check_name("key", "orders-1.v2").is_ok());
        assert!(check_name("key", "a/b").is_err() && check_name("key", "..").is_err());
    }

    #[test]
    fn a_malformed_pair_is_reported_without_its_text() {
        let e = data_from_pairs(&["user=a".into(), "hunter2".into()]).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("argument 2"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let e = data_from_pairs(&["=hunter2".into()]).unwrap_err();
        assert!(!format!("{e:#}").contains("hunter2"));
        let e = data_from_pairs(&["k=a".into(), "k=b".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("twice"));
        let d = data_from_pairs(&["user=a=b".into()]).unwrap();
        assert_eq!(d["user"], "a=b");
    }

    #[test]
    fn version_states_follow_deletion_and_destruction() {
        assert_eq!(
            version_state(&json!({"deletion_time": "", "destroyed": false})),
            "live"
        );
        assert_eq!(
            version_state(&json!({"deletion_time": "2001-01-01T00:00:00Z", "destroyed": false})),
            "deleted 2001-01-01T00:00:00Z"
        );
        assert!(
            version_state(&json!({"deletion_time": "2999-01-01T00:00:00Z", "destroyed": false}))
                .starts_with("live (to be deleted at")
        );
        assert_eq!(
            version_state(&json!({"deletion_time": "", "destroyed": true})),
            "destroyed"
        );
    }
}
