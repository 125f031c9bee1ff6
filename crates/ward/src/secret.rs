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

/// `ward secret policy`.
#[derive(Subcommand)]
#[command(
    after_help = "Vault policies are Cedar, validated against `ward secret policy schema`. The principal is\nthe workload (Ward::Service, by SPIFFE ID), the action one of Vault's capabilities (create,\nread, update, patch, delete, list), the resource the Vault API path after /v1/.\n\nExample:\n  ward secret policy write orders orders.cedar"
)]
pub enum PolicyCommand {
    /// Validate and store a named policy (PUT /v1/sys/policies/cedar/NAME); all named policies are in force together
    #[command(
        after_help = "Example (orders may read its own secrets):\n  permit(principal == Ward::Service::\"spiffe://ward.local/ns/shop/sa/orders\",\n         action == Vault::Action::\"read\",\n         resource)\n  when { resource.path like \"secret/data/orders/*\" };\n\n  ward secret policy write orders orders.cedar\n\nPaths are Vault API paths after /v1/: secret/data/… to read and write values,\nsecret/metadata/… to list, transit/encrypt/KEY, database/creds/ROLE.\nEverything not permitted is denied. `forbid` is Vault's `deny`: it wins over every permit.\nThe policy is checked with every other stored one; a set that does not validate is refused\nwith the policy's name and the line."
    )]
    Write {
        /// The policy's name: letters, digits, `-`, `_`, `.`
        name: String,
        /// A Cedar file (`-`: standard input)
        file: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a stored policy (GET /v1/sys/policies/cedar/NAME)
    #[command(after_help = "Example:\n  ward secret policy read orders > orders.cedar")]
    Read {
        /// The policy's name
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the stored policies' names (GET /v1/sys/policies/cedar)
    #[command(after_help = "Example:\n  ward secret policy list")]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a policy (DELETE /v1/sys/policies/cedar/NAME); what it permitted is denied at once
    #[command(after_help = "Example:\n  ward secret policy delete orders")]
    Delete {
        /// The policy's name
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the Cedar schema vault policies are validated against (no server needed)
    #[command(after_help = "Example:\n  ward secret policy schema > vault.cedarschema")]
    Schema,
}

/// `ward secret db`.
#[derive(Subcommand)]
#[command(
    after_help = "Example (a connection, a role, then credentials that live for an hour):\n  ward secret db configure shop --plugin postgresql \\\n    --url 'postgres://{{username}}:{{password}}@db:5432/shop' --username vault --password-file pw.txt \\\n    --allowed-roles orders\n  ward secret db role orders --db shop --default-ttl 1h --max-ttl 24h\n  ward secret db creds orders"
)]
pub enum DbCommand {
    /// Configure a database connection (POST /v1/database/config/NAME); Ward connects to check it unless --no-verify
    #[command(
        after_help = "Put the admin credential in the URL as {{username}} and {{password}}, filled from --username\nand --password-file, so that the password is not on the command line (nor in `ps`).\nThe connection's credential is stored sealed and never printed.\n\nExample:\n  ward secret db configure shop --plugin postgresql \\\n    --url 'postgres://{{username}}:{{password}}@db:5432/shop' --username vault --password-file pw.txt \\\n    --allowed-roles orders,reports"
    )]
    Configure(Box<DbConfigureArgs>),
    /// Replace the connection's admin password with one only Ward knows (POST /v1/database/rotate-root/NAME)
    #[command(
        after_help = "After this the old password no longer works: keep another way in to the database.\n\nExample:\n  ward secret db rotate-root shop"
    )]
    RotateRoot {
        /// The connection's name
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Define a role: how its users are created and dropped, and how long they live (POST /v1/database/roles/NAME)
    #[command(
        after_help = "Without --creation-sql and --revocation-sql the plugin's defaults apply (a login role valid\nuntil the lease expires; dropped on revocation). Statements use {{name}}, {{password}} and\n{{expiration}}.\n\nExample:\n  ward secret db role orders --db shop --creation-sql create.sql --default-ttl 1h --max-ttl 24h"
    )]
    Role(DbRoleArgs),
    /// Create a database user for ROLE and print its credentials and lease (GET /v1/database/creds/ROLE)
    #[command(
        after_help = "The user is dropped when the lease expires or is revoked (`ward secret lease revoke LEASE_ID`).\n\nExample:\n  ward secret db creds orders\n  ward secret db creds orders --output json | jq -r .password"
    )]
    Creds {
        /// The role's name
        role: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Arguments of `ward secret db configure`.
#[derive(clap::Args)]
pub struct DbConfigureArgs {
    /// The connection's name
    name: String,
    /// The database: postgresql or mysql (MariaDB is mysql)
    #[arg(long, value_parser = ["postgresql", "mysql"])]
    plugin: String,
    /// The connection URL, such as postgres://{{username}}:{{password}}@HOST:5432/DB
    #[arg(long)]
    url: String,
    /// The admin user, for {{username}} in the URL
    #[arg(long)]
    username: Option<String>,
    /// A file holding the admin password, for {{password}} in the URL (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    password_file: Option<String>,
    /// The roles that may use this connection, comma-separated (`*`: any)
    #[arg(long, value_delimiter = ',', value_name = "ROLE,ROLE")]
    allowed_roles: Vec<String>,
    /// Store the connection without connecting to check it
    #[arg(long)]
    no_verify: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `ward secret db role`.
#[derive(clap::Args)]
pub struct DbRoleArgs {
    /// The role's name
    name: String,
    /// The connection its users are created on
    #[arg(long = "db", value_name = "CONNECTION")]
    db: String,
    /// A file of SQL that creates the user (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    creation_sql: Option<String>,
    /// A file of SQL that drops the user (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    revocation_sql: Option<String>,
    /// How long credentials live unless renewed (default: the server's vault.lease_default_ttl)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    default_ttl: Option<Duration>,
    /// The longest renewals can stretch a lease (default: the server's vault.lease_max_ttl)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    max_ttl: Option<Duration>,
    #[command(flatten)]
    client: ClientArgs,
}

/// `ward secret lease`.
#[derive(Subcommand)]
#[command(
    after_help = "Revocation never gives up: a lease whose database is down is retried with backoff, and one\nthat failed many times is reported as stuck (`ward secret lease list --stuck`).\n\nExample:\n  ward secret lease list --prefix database/creds/orders\n  ward secret lease revoke database/creds/orders/0123abcd"
)]
pub enum LeaseCommand {
    /// List leases with their state, expiry and revocation attempts (GET /v1/sys/leases; admin token)
    #[command(
        after_help = "Example:\n  ward secret lease list\n  ward secret lease list --prefix database/creds/orders --stuck"
    )]
    List {
        /// Only leases whose ID starts with this, such as database/creds/orders
        #[arg(long)]
        prefix: Option<String>,
        /// Only leases whose revocation keeps failing
        #[arg(long)]
        stuck: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one lease (PUT /v1/sys/leases/lookup)
    #[command(after_help = "Example:\n  ward secret lease lookup database/creds/orders/0123abcd")]
    Lookup {
        /// The lease ID, as `db creds` printed it
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Extend a lease, up to its role's max TTL (PUT /v1/sys/leases/renew)
    #[command(
        after_help = "Example:\n  ward secret lease renew database/creds/orders/0123abcd --increment 2h"
    )]
    Renew {
        /// The lease ID
        id: String,
        /// The new lifetime from now (default: the role's default TTL)
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        increment: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a lease now: its database user is dropped (PUT /v1/sys/leases/revoke)
    #[command(
        after_help = "When the database cannot be reached the lease is kept as revoking, Ward retries until the\nuser is dropped, and the reason is printed as a warning.\n\nExample:\n  ward secret lease revoke database/creds/orders/0123abcd"
    )]
    Revoke {
        /// The lease ID
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke every lease whose ID starts with PREFIX (PUT /v1/sys/leases/revoke-prefix/PREFIX)
    #[command(
        after_help = "The leases are marked at once and revoked in the background.\n\nExample (every credential of the orders role):\n  ward secret lease revoke-prefix database/creds/orders"
    )]
    RevokePrefix {
        /// The prefix, such as database/creds/orders
        prefix: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `ward secret transit`.
#[derive(Subcommand)]
#[command(
    after_help = "Example:\n  ward secret transit create orders\n  ct=$(ward secret transit encrypt orders --file card.txt)\n  ward secret transit decrypt orders \"$ct\""
)]
pub enum TransitCommand {
    /// Create a named key (POST /v1/transit/keys/NAME); an existing key is left as it is
    #[command(
        after_help = "Example:\n  ward secret transit create orders\n  ward secret transit create signer --type ed25519"
    )]
    Create {
        /// The key's name
        name: String,
        /// The key type
        #[arg(long = "type", default_value = "aes256-gcm96", value_parser = ["aes256-gcm96", "ecdsa-p256", "ed25519"])]
        key_type: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Encrypt with a key and print the ciphertext (POST /v1/transit/encrypt/NAME)
    #[command(
        after_help = "--plaintext puts the text on the command line (and in shell history): prefer --file.\n\nExample:\n  ward secret transit encrypt orders --file card.txt\n  echo -n 4111111111111111 | ward secret transit encrypt orders --file -"
    )]
    #[command(group(clap::ArgGroup::new("input").required(true).args(["plaintext", "file"])))]
    Encrypt {
        /// The key's name
        name: String,
        /// The text to encrypt
        #[arg(long)]
        plaintext: Option<String>,
        /// A file to encrypt, as bytes (`-`: standard input)
        #[arg(long, value_name = "FILE")]
        file: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Decrypt a ciphertext and print the plaintext exactly, with nothing added (POST /v1/transit/decrypt/NAME)
    #[command(
        after_help = "Example:\n  ward secret transit decrypt orders vault:v1:AbCd… > card.txt"
    )]
    Decrypt {
        /// The key's name
        name: String,
        /// The ciphertext, vault:vN:… (`-`: standard input)
        ciphertext: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a new version of a key; new encryptions use it, old ciphertexts still decrypt (POST /v1/transit/keys/NAME/rotate)
    #[command(after_help = "Example:\n  ward secret transit rotate orders")]
    Rotate {
        /// The key's name
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a key: type, versions, and which versions may encrypt and decrypt (GET /v1/transit/keys/NAME)
    #[command(after_help = "Example:\n  ward secret transit show orders")]
    Show {
        /// The key's name
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
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
        SecretCommand::Put(a) => put(a).await,
        SecretCommand::Get(a) => get(a).await,
        SecretCommand::List { path, client } => list(path.as_deref().unwrap_or(""), client).await,
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
        } => change_versions(&path, "undelete", "restored", &versions, &client).await,
        SecretCommand::Destroy {
            path,
            versions,
            client,
        } => change_versions(&path, "destroy", "destroyed", &versions, &client).await,
        SecretCommand::History { path, client } => history(&path, client).await,
        SecretCommand::Metadata(a) => metadata(a).await,
        SecretCommand::Policy(c) => policy(c).await,
        SecretCommand::Db(c) => db(c).await,
        SecretCommand::Lease(c) => lease(c).await,
        SecretCommand::Transit(c) => transit(c).await,
    }
}

async fn put(a: PutArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", &a.path, false)?;
    let data = match &a.json {
        Some(file) => {
            let what = if file == "-" { "standard input" } else { file };
            // serde_json's message gives line and column, never the text.
            match serde_json::from_str::<Value>(&read_text(file)?)
                .map_err(|e| anyhow!("{what} is not JSON: {e}"))?
            {
                Value::Object(m) => m,
                _ => bail!("{what} must hold a JSON object: {{\"KEY\": \"VALUE\", …}}"),
            }
        }
        None => data_from_pairs(&a.pairs)?,
    };
    if data.is_empty() {
        bail!("nothing to write: give KEY=VALUE pairs or --json FILE");
    }
    let mut body = json!({ "data": data });
    if let Some(cas) = a.cas {
        body["options"] = json!({ "cas": cas });
    }
    let answer = Vault::connect(&a.client)?
        .call("POST", &format!("/v1/secret/data/{path}"), Some(body))
        .await
        .with_context(|| format!("cannot write {path}"))?;
    let meta = &answer["data"];
    a.client.print(meta, |m| {
        println!(
            "{path}: version {} written ({} keys)",
            m["version"],
            data.len()
        )
    });
    Ok(())
}

async fn get(a: GetArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", &a.path, false)?;
    let vault = Vault::connect(&a.client)?;
    let mut url = format!("/v1/secret/data/{path}");
    if let Some(v) = a.version {
        url.push_str(&format!("?version={v}"));
    }
    let which = match a.version {
        Some(v) => format!("version {v} of {path}"),
        None => path.to_owned(),
    };
    let (status, body) = vault.client.vault_any_status("GET", &url, None).await?;
    if status == 404 {
        // A deleted or destroyed version comes with its metadata.
        let meta = &body["data"]["metadata"];
        if meta.is_object() {
            let version = &meta["version"];
            if meta["destroyed"].as_bool().unwrap_or(false) {
                bail!("version {version} of {path} is destroyed: its data is gone for good");
            }
            bail!(
                "version {version} of {path} was deleted at {}: `ward secret undelete {path} --versions {version}` restores it",
                meta["deletion_time"].as_str().unwrap_or("?")
            );
        }
        bail!("no secret at {which} (`ward secret list` shows what there is)");
    }
    if !(200..300).contains(&status) {
        return Err(anyhow!(ClientError::from_vault(status, &body)))
            .with_context(|| format!("cannot read {which}"));
    }
    warn(&body);
    let data = &body["data"]["data"];
    if let Some(field) = &a.field {
        let Some(value) = data.get(field) else {
            let keys: Vec<&str> = data
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            bail!(
                "{which} has no key {field:?}; its keys: {}",
                keys.join(", ")
            );
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", plain(value))?;
        return Ok(());
    }
    let meta = &body["data"]["metadata"];
    a.client.print(data, |data| {
        println!(
            "{path}, version {} (created {})",
            meta["version"],
            meta["created_time"].as_str().unwrap_or("?")
        );
        let mut rows = vec![("KEY".to_owned(), "VALUE".to_owned())];
        if let Some(m) = data.as_object() {
            rows.extend(m.iter().map(|(k, v)| (k.clone(), plain(v))));
        }
        print_table(&rows);
    });
    Ok(())
}

async fn list(path: &str, client: ClientArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", path, true)?;
    let url = if path.is_empty() {
        "/v1/secret/metadata/".to_owned()
    } else {
        format!("/v1/secret/metadata/{path}/")
    };
    let keys: Vec<String> = match Vault::connect(&client)?.call("LIST", &url, None).await {
        Ok(v) => v["data"]["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        // Vault answers an empty folder 404.
        Err(ClientError::Api { status: 404, .. }) => Vec::new(),
        Err(e) => return Err(anyhow!(e)).with_context(|| format!("cannot list {path:?}")),
    };
    client.print(&keys, |keys| {
        if keys.is_empty() {
            let at = if path.is_empty() { "the root" } else { path };
            println!("no secrets under {at}");
        }
        for k in keys {
            println!("{k}");
        }
    });
    Ok(())
}

async fn change_versions(
    path: &str,
    op: &str,
    done: &str,
    versions: &[u64],
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let path = check_path("PATH", path, false)?;
    Vault::connect(client)?
        .call(
            "POST",
            &format!("/v1/secret/{op}/{path}"),
            Some(json!({ "versions": versions })),
        )
        .await
        .with_context(|| format!("cannot {op} {path}"))?;
    client.print(&json!({"path": path, done: versions}), |_| {
        println!("{path}: versions {} are {done}", versions_text(versions))
    });
    Ok(())
}

/// The metadata of `path`, or a clear error when there is no secret.
async fn read_metadata(vault: &Vault, path: &str) -> anyhow::Result<Value> {
    let v = vault
        .call("GET", &format!("/v1/secret/metadata/{path}"), None)
        .await
        .map_err(not_found(|| format!("no secret at {path}")))?;
    Ok(v["data"].clone())
}

async fn history(path: &str, client: ClientArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", path, false)?;
    let meta = read_metadata(&Vault::connect(&client)?, path).await?;
    let current = meta["current_version"].as_u64().unwrap_or(0);
    let mut versions: Vec<(u64, &Value)> = meta["versions"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| k.parse().ok().map(|n| (n, v)))
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    let rows: Vec<Value> = versions
        .iter()
        .map(|(n, v)| {
            json!({
                "version": n,
                "created_time": v["created_time"],
                "deletion_time": v["deletion_time"],
                "destroyed": v["destroyed"],
                "state": version_state(v),
                "current": *n == current,
            })
        })
        .collect();
    client.print(&rows, |rows| {
        println!("{:<8} {:<32} STATE", "VERSION", "CREATED");
        for r in rows {
            let mark = if r["current"] == true {
                " (current)"
            } else {
                ""
            };
            println!(
                "{:<8} {:<32} {}{mark}",
                r["version"].to_string(),
                r["created_time"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?")
            );
        }
    });
    Ok(())
}

async fn metadata(a: MetadataArgs) -> anyhow::Result<()> {
    let path = check_path("PATH", &a.path, false)?;
    let vault = Vault::connect(&a.client)?;
    let url = format!("/v1/secret/metadata/{path}");
    if a.delete {
        vault
            .call("DELETE", &url, None)
            .await
            .with_context(|| format!("cannot delete {path}"))?;
        a.client
            .print(&json!({"path": path, "deleted": true}), |_| {
                println!("{path}: deleted with every version")
            });
        return Ok(());
    }
    let mut body = Map::new();
    if let Some(m) = a.max_versions {
        body.insert("max_versions".into(), m.into());
    }
    if let Some(c) = a.cas_required {
        body.insert("cas_required".into(), c.into());
    }
    if let Some(d) = a.delete_version_after {
        body.insert("delete_version_after".into(), d.as_secs().into());
    }
    if !a.custom.is_empty() {
        let custom: BTreeMap<&str, &str> = a
            .custom
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        body.insert("custom_metadata".into(), json!(custom));
    }
    if !body.is_empty() {
        vault
            .call("POST", &url, Some(Value::Object(body)))
            .await
            .with_context(|| format!("cannot change the metadata of {path}"))?;
    }
    let meta = read_metadata(&vault, path).await?;
    a.client.print(&meta, |m| {
        let max = match m["max_versions"].as_u64() {
            Some(0) | None => format!("{} (the mount's setting)", m["mount_max_versions"]),
            Some(n) => n.to_string(),
        };
        let dva = m["delete_version_after"].as_str().unwrap_or("0s");
        let custom = m["custom_metadata"]
            .as_object()
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={}", plain(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "none".to_owned());
        print_table(&[
            ("path".into(), path.to_owned()),
            ("current version".into(), m["current_version"].to_string()),
            ("oldest version".into(), m["oldest_version"].to_string()),
            ("max versions".into(), max),
            ("cas required".into(), m["cas_required"].to_string()),
            (
                "delete version after".into(),
                if dva == "0s" {
                    "never".into()
                } else {
                    dva.to_owned()
                },
            ),
            ("custom metadata".into(), custom),
            ("created".into(), plain(&m["created_time"])),
            ("updated".into(), plain(&m["updated_time"])),
        ]);
    });
    Ok(())
}

async fn policy(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Write { name, file, client } => {
            let name = check_name("policy", &name)?;
            let text = read_text(&file)?;
            Vault::connect(&client)?
                .call(
                    "PUT",
                    &format!("/v1/sys/policies/cedar/{name}"),
                    Some(json!({ "policy": text })),
                )
                .await
                .with_context(|| format!("policy {name} ({file}) was not stored"))?;
            client.print(&json!({"name": name, "stored": true}), |_| {
                println!("policy {name} stored; it applies within seconds")
            });
        }
        PolicyCommand::Read { name, client } => {
            let name = check_name("policy", &name)?;
            let v = Vault::connect(&client)?
                .call("GET", &format!("/v1/sys/policies/cedar/{name}"), None)
                .await
                .map_err(not_found(|| {
                    format!("no vault policy named {name} (`ward secret policy list` shows them)")
                }))?;
            client.print(&v["data"], |d| {
                let text = d["policy"].as_str().unwrap_or_default();
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
            });
        }
        PolicyCommand::List { client } => {
            let names: Vec<String> = match Vault::connect(&client)?
                .call("GET", "/v1/sys/policies/cedar", None)
                .await
            {
                Ok(v) => v["data"]["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect(),
                Err(ClientError::Api { status: 404, .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            client.print(&names, |names| {
                if names.is_empty() {
                    println!("no vault policies: workloads may do nothing");
                }
                for n in names {
                    println!("{n}");
                }
            });
        }
        PolicyCommand::Delete { name, client } => {
            let name = check_name("policy", &name)?;
            Vault::connect(&client)?
                .call("DELETE", &format!("/v1/sys/policies/cedar/{name}"), None)
                .await
                .with_context(|| format!("cannot delete policy {name}"))?;
            client.print(&json!({"name": name, "deleted": true}), |_| {
                println!("policy {name} deleted")
            });
        }
        PolicyCommand::Schema => print!("{}", ward_policy::vault::SCHEMA_TEXT),
    }
    Ok(())
}

async fn db(cmd: DbCommand) -> anyhow::Result<()> {
    match cmd {
        DbCommand::Configure(a) => {
            let a = *a;
            let name = check_name("connection", &a.name)?;
            // The server uses a URL without placeholders as it is: a
            // credential given beside it would be dropped without a word.
            if a.username.is_some() && !a.url.contains("{{username}}") {
                bail!(
                    "--username is given but --url has no {{{{username}}}}: write the URL as postgres://{{{{username}}}}:{{{{password}}}}@HOST:5432/DB"
                );
            }
            if a.password_file.is_some() && !a.url.contains("{{password}}") {
                bail!(
                    "--password-file is given but --url has no {{{{password}}}}: write the URL as postgres://{{{{username}}}}:{{{{password}}}}@HOST:5432/DB"
                );
            }
            let mut body = json!({
                "plugin_name": a.plugin,
                "connection_url": a.url,
                "allowed_roles": a.allowed_roles,
                "verify_connection": !a.no_verify,
            });
            if let Some(u) = &a.username {
                body["username"] = json!(u);
            }
            if let Some(f) = &a.password_file {
                let pw = read_text(f).context("the password file")?;
                body["password"] = json!(pw.trim_end_matches(['\r', '\n']));
            }
            Vault::connect(&a.client)?
                .call("POST", &format!("/v1/database/config/{name}"), Some(body))
                .await
                .with_context(|| format!("connection {name} was not configured"))?;
            a.client
                .print(&json!({"name": name, "verified": !a.no_verify}), |_| {
                    if a.no_verify {
                        println!("connection {name} stored (not verified)");
                    } else {
                        println!("connection {name} verified and stored");
                    }
                });
        }
        DbCommand::RotateRoot { name, client } => {
            let name = check_name("connection", &name)?;
            Vault::connect(&client)?
                .call("POST", &format!("/v1/database/rotate-root/{name}"), None)
                .await
                .map_err(not_found(|| format!("no database connection named {name}")))?;
            client.print(&json!({"name": name, "rotated": true}), |_| {
                println!("connection {name}: the admin password is rotated; only Ward knows it now")
            });
        }
        DbCommand::Role(a) => {
            let name = check_name("role", &a.name)?;
            let db = check_name("connection", &a.db)?;
            let mut body = json!({ "db_name": db });
            if let Some(f) = &a.creation_sql {
                body["creation_statements"] = json!(read_text(f)?);
            }
            if let Some(f) = &a.revocation_sql {
                body["revocation_statements"] = json!(read_text(f)?);
            }
            if let Some(t) = a.default_ttl {
                body["default_ttl"] = json!(t.as_secs());
            }
            if let Some(t) = a.max_ttl {
                body["max_ttl"] = json!(t.as_secs());
            }
            Vault::connect(&a.client)?
                .call("POST", &format!("/v1/database/roles/{name}"), Some(body))
                .await
                .with_context(|| format!("role {name} was not stored"))?;
            a.client.print(&json!({"name": name, "db_name": db}), |_| {
                println!("role {name} stored on connection {db}")
            });
        }
        DbCommand::Creds { role, client } => {
            let role = check_name("role", &role)?;
            let v = Vault::connect(&client)?
                .call("GET", &format!("/v1/database/creds/{role}"), None)
                .await
                .with_context(|| format!("no credentials for role {role}"))?;
            let creds = json!({
                "username": v["data"]["username"],
                "password": v["data"]["password"],
                "lease_id": v["lease_id"],
                "lease_duration": v["lease_duration"],
                "renewable": v["renewable"],
            });
            client.print(&creds, |c| {
                let secs = c["lease_duration"].as_u64().unwrap_or(0);
                print_table(&[
                    ("username".into(), plain(&c["username"])),
                    ("password".into(), plain(&c["password"])),
                    ("lease_id".into(), plain(&c["lease_id"])),
                    (
                        "lease_duration".into(),
                        humantime::format_duration(Duration::from_secs(secs)).to_string(),
                    ),
                ])
            });
        }
    }
    Ok(())
}

async fn lease(cmd: LeaseCommand) -> anyhow::Result<()> {
    match cmd {
        LeaseCommand::List {
            prefix,
            stuck,
            client,
        } => {
            let mut url = "/v1/sys/leases".to_owned();
            let mut query = Vec::new();
            if let Some(p) = &prefix {
                query.push(format!("prefix={}", ward_client::urlencode(p)));
            }
            if stuck {
                query.push("stuck=true".to_owned());
            }
            if !query.is_empty() {
                url.push('?');
                url.push_str(&query.join("&"));
            }
            let v = Vault::connect(&client)?.call("GET", &url, None).await?;
            let leases = v["data"]["leases"].clone();
            client.print(&leases, |leases| {
                let rows = leases.as_array().map(Vec::as_slice).unwrap_or_default();
                if rows.is_empty() {
                    println!("no leases{}", if stuck { " are stuck" } else { "" });
                    return;
                }
                println!(
                    "{:<56} {:<9} {:<22} {:>8} {:>8}  NEXT ATTEMPT",
                    "LEASE ID", "STATE", "EXPIRES", "TTL", "ATTEMPTS"
                );
                for l in rows {
                    let state = if l["stuck"] == true {
                        format!("{} (stuck)", plain(&l["state"]))
                    } else {
                        plain(&l["state"])
                    };
                    println!(
                        "{:<56} {:<9} {:<22} {:>8} {:>8}  {}",
                        plain(&l["lease_id"]),
                        state,
                        plain(&l["expire_time"]),
                        format!("{}s", l["ttl"]),
                        l["revocation_attempts"].to_string(),
                        l["next_attempt"].as_str().unwrap_or("-"),
                    );
                }
            });
        }
        LeaseCommand::Lookup { id, client } => {
            let id = check_path("LEASE_ID", &id, false)?;
            let v = Vault::connect(&client)?
                .call(
                    "PUT",
                    "/v1/sys/leases/lookup",
                    Some(json!({ "lease_id": id })),
                )
                .await
                .with_context(|| format!("cannot look up lease {id}"))?;
            client.print(&v["data"], |d| {
                print_table(&[
                    ("lease_id".into(), plain(&d["id"])),
                    ("state".into(), plain(&d["state"])),
                    ("issued".into(), plain(&d["issue_time"])),
                    ("expires".into(), plain(&d["expire_time"])),
                    ("ttl".into(), format!("{}s", d["ttl"])),
                    (
                        "last renewal".into(),
                        d["last_renewal"].as_str().unwrap_or("never").to_owned(),
                    ),
                    ("renewable".into(), d["renewable"].to_string()),
                    (
                        "revocation attempts".into(),
                        d["revocation_attempts"].to_string(),
                    ),
                ])
            });
        }
        LeaseCommand::Renew {
            id,
            increment,
            client,
        } => {
            let id = check_path("LEASE_ID", &id, false)?;
            let mut body = json!({ "lease_id": id });
            if let Some(i) = increment {
                body["increment"] = json!(i.as_secs());
            }
            let v = Vault::connect(&client)?
                .call("PUT", "/v1/sys/leases/renew", Some(body))
                .await
                .with_context(|| format!("cannot renew lease {id}"))?;
            let out = json!({
                "lease_id": v["lease_id"],
                "lease_duration": v["lease_duration"],
                "renewable": v["renewable"],
            });
            client.print(&out, |o| {
                let secs = o["lease_duration"].as_u64().unwrap_or(0);
                println!(
                    "lease {id} renewed: it expires in {}",
                    humantime::format_duration(Duration::from_secs(secs))
                );
            });
        }
        LeaseCommand::Revoke { id, client } => {
            let id = check_path("LEASE_ID", &id, false)?;
            let v = Vault::connect(&client)?
                .call(
                    "PUT",
                    "/v1/sys/leases/revoke",
                    Some(json!({ "lease_id": id })),
                )
                .await
                .with_context(|| format!("cannot revoke lease {id}"))?;
            // 204: revoked; 200 with warnings: marked, retried until done.
            let pending = v["warnings"].as_array().is_some_and(|w| !w.is_empty());
            client.print(
                &json!({"lease_id": id, "revoked": !pending, "warnings": v["warnings"]}),
                |_| {
                    if pending {
                        println!(
                            "lease {id} is being revoked: Ward retries until its user is dropped"
                        );
                    } else {
                        println!("lease {id} revoked");
                    }
                },
            );
        }
        LeaseCommand::RevokePrefix { prefix, client } => {
            let prefix = check_path("PREFIX", &prefix, true)?;
            if prefix.is_empty() {
                bail!("PREFIX is empty: name the leases, such as database/creds/orders");
            }
            let vault = Vault::connect(&client)?;
            refuse_overreach(&vault, prefix).await?;
            vault
                .call(
                    "PUT",
                    &format!("/v1/sys/leases/revoke-prefix/{prefix}"),
                    None,
                )
                .await
                .with_context(|| format!("cannot revoke the leases under {prefix}"))?;
            client.print(&json!({"prefix": prefix, "revoking": true}), |_| {
                println!(
                    "every lease under {prefix} is marked for revocation (`ward secret lease list --prefix {prefix}` shows progress)"
                )
            });
        }
    }
    Ok(())
}

/// Refuses a revoke-prefix that would reach past the folder it names.
/// The server matches the prefix as a string, so `database/creds/orders`
/// would also revoke every lease of a role `orders-reports`; Vault treats
/// the prefix as a folder (`database/creds/orders/`). Until the server
/// does too, such a prefix is refused here, before anything is revoked.
/// A caller that may not list leases (a workload) is not checked.
async fn refuse_overreach(vault: &Vault, prefix: &str) -> anyhow::Result<()> {
    let url = format!("/v1/sys/leases?prefix={}", ward_client::urlencode(prefix));
    let leases = match vault.call("GET", &url, None).await {
        Ok(v) => v["data"]["leases"].clone(),
        Err(ClientError::Api { status: 403, .. }) => return Ok(()),
        Err(e) => {
            return Err(anyhow!(e))
                .with_context(|| format!("cannot list the leases under {prefix}"));
        }
    };
    let folder = format!("{prefix}/");
    let outside: Vec<&str> = leases
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["lease_id"].as_str())
        .filter(|id| *id != prefix && !id.starts_with(&folder))
        .collect();
    if let Some(first) = outside.first() {
        bail!(
            "nothing revoked: the server would also revoke {} lease(s) outside {folder}, such as {first}, as it matches the prefix as a string; revoke the leases one by one with `ward secret lease revoke LEASE_ID`",
            outside.len()
        );
    }
    Ok(())
}

async fn transit(cmd: TransitCommand) -> anyhow::Result<()> {
    match cmd {
        TransitCommand::Create {
            name,
            key_type,
            client,
        } => {
            let name = check_name("key", &name)?;
            let vault = Vault::connect(&client)?;
            vault
                .call(
                    "POST",
                    &format!("/v1/transit/keys/{name}"),
                    Some(json!({ "type": key_type })),
                )
                .await
                .with_context(|| format!("cannot create key {name}"))?;
            // Creating an existing key changes nothing, as in Vault: say
            // so when it is not the key asked for.
            let key = read_key(&vault, name).await?;
            if key["type"].as_str() != Some(key_type.as_str()) {
                bail!(
                    "a key named {name} already exists with type {}: choose another name",
                    plain(&key["type"])
                );
            }
            client.print(&key, print_key);
        }
        TransitCommand::Encrypt {
            name,
            plaintext,
            file,
            client,
        } => {
            let name = check_name("key", &name)?;
            let bytes = match (plaintext, file) {
                (Some(p), _) => p.into_bytes(),
                (None, Some(f)) => read_bytes(&f)?,
                (None, None) => bail!("give --plaintext TEXT or --file FILE"),
            };
            let v = Vault::connect(&client)?
                .call(
                    "POST",
                    &format!("/v1/transit/encrypt/{name}"),
                    Some(json!({ "plaintext": base64_encode(&bytes) })),
                )
                .await
                .with_context(|| format!("cannot encrypt with key {name}"))?;
            client.print(&v["data"], |d| println!("{}", plain(&d["ciphertext"])));
        }
        TransitCommand::Decrypt {
            name,
            ciphertext,
            client,
        } => {
            let name = check_name("key", &name)?;
            let ciphertext = if ciphertext == "-" {
                read_text("-")?.trim().to_owned()
            } else {
                ciphertext
            };
            let v = Vault::connect(&client)?
                .call(
                    "POST",
                    &format!("/v1/transit/decrypt/{name}"),
                    Some(json!({ "ciphertext": ciphertext })),
                )
                .await
                .with_context(|| format!("cannot decrypt with key {name}"))?;
            let b64 = v["data"]["plaintext"].as_str().unwrap_or_default();
            match client.output {
                crate::client::Output::Json => client.print(&v["data"], |_| {}),
                crate::client::Output::Text => {
                    let bytes = base64_decode(b64)
                        .ok_or_else(|| anyhow!("the server's plaintext is not base64"))?;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
            }
        }
        TransitCommand::Rotate { name, client } => {
            let name = check_name("key", &name)?;
            let v = Vault::connect(&client)?
                .call("POST", &format!("/v1/transit/keys/{name}/rotate"), None)
                .await
                .with_context(|| format!("cannot rotate key {name}"))?;
            client.print(&v["data"], |d| {
                println!(
                    "key {name} rotated: new encryptions use version {}",
                    d["latest_version"]
                )
            });
        }
        TransitCommand::Show { name, client } => {
            let name = check_name("key", &name)?;
            let key = read_key(&Vault::connect(&client)?, name).await?;
            client.print(&key, print_key);
        }
    }
    Ok(())
}

async fn read_key(vault: &Vault, name: &str) -> anyhow::Result<Value> {
    let v = vault
        .call("GET", &format!("/v1/transit/keys/{name}"), None)
        .await
        .map_err(not_found(|| {
            format!("no transit key named {name} (`ward secret transit create {name}` makes one)")
        }))?;
    Ok(v["data"].clone())
}

fn print_key(k: &Value) {
    let mut versions: Vec<(u64, String)> = k["keys"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(n, v)| {
            let created = match v {
                Value::Number(t) => rfc3339(t.as_i64().unwrap_or(0)),
                other => plain(&other["creation_time"]),
            };
            n.parse().ok().map(|n| (n, created))
        })
        .collect();
    versions.sort();
    let min_enc = match k["min_encryption_version"].as_u64() {
        Some(0) | None => "the latest".to_owned(),
        Some(n) => n.to_string(),
    };
    let mut rows = vec![
        ("name".to_owned(), plain(&k["name"])),
        ("type".to_owned(), plain(&k["type"])),
        ("latest version".to_owned(), k["latest_version"].to_string()),
        ("encrypts with".to_owned(), min_enc),
        (
            "decrypts from version".to_owned(),
            k["min_decryption_version"].to_string(),
        ),
    ];
    rows.extend(
        versions
            .into_iter()
            .map(|(n, created)| (format!("version {n}"), format!("created {created}"))),
    );
    print_table(&rows);
}

/// Standard base64 with padding, as Vault's transit takes and gives plaintext.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of [`base64_encode`]; `None` for anything that is not
/// padded standard base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
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
