//! `ward secret lease`: the leases of dynamic credentials.

#[allow(unused_imports)]
use super::*;

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

pub(super) async fn lease(cmd: LeaseCommand) -> anyhow::Result<()> {
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
            // The server treats PREFIX as a folder: `database/creds/orders`
            // never reaches the leases of a role `orders2`.
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
