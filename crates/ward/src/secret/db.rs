//! `ward secret db`: database connections, roles and dynamic credentials.

#[allow(unused_imports)]
use super::*;

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

pub(super) async fn db(cmd: DbCommand) -> anyhow::Result<()> {
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
