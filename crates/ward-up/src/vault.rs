//! The vault part of `ward up`: each demo service gets a KV secret it may
//! read (and only it), orders also a dynamic PostgreSQL credential when a
//! PostgreSQL is reachable; the walk-through has orders read both with its
//! own SVID, and payments refused orders' secret.

use std::time::Duration;

use serde_json::json;
use ward_client::Client;

/// The KV path (below `secret/`) of a service's demo secret.
pub fn secret_path(service: &str) -> String {
    format!("demo/{service}/db")
}

/// The database role orders gets credentials from.
pub const DB_ROLE: &str = "orders";
/// The connection's name in the vault.
const DB_CONNECTION: &str = "demo-postgres";

/// The demo's vault policy: each service reads its own secret; orders
/// also gets database credentials. Nothing else is granted.
pub fn demo_policy(td: &str, services: &[&str]) -> String {
    let mut text =
        String::from("// ward up's vault policy. A workload may do only what is permitted here.\n");
    for s in services {
        text.push_str(&format!(
            "@id(\"{s}-reads-its-secrets\")\npermit(principal == Ward::Service::\"spiffe://{td}/ns/demo/sa/{s}\",\n       action == Vault::Action::\"read\", resource)\nwhen {{ resource.path like \"secret/data/demo/{s}/*\" }};\n"
        ));
    }
    text.push_str(&format!(
        "@id(\"orders-gets-database-credentials\")\npermit(principal == Ward::Service::\"spiffe://{td}/ns/demo/sa/orders\",\n       action == Vault::Action::\"read\", resource == Vault::Path::\"database/creds/{DB_ROLE}\");\n"
    ));
    text
}

/// What the vault was set up with.
#[derive(Debug, Default)]
pub struct VaultSetup {
    /// The database role, when PostgreSQL is configured.
    pub db_role: Option<String>,
    /// The database's URL without credentials.
    pub db_dsn: Option<String>,
    /// The admin URL (to show that a credential's user exists).
    pub admin_dsn: Option<String>,
    /// Why there is no database part.
    pub db_skipped: Option<String>,
}

/// Stores the demo secrets (once: a later run keeps them), the policy and,
/// if `postgres` answers, the database connection and orders' role.
pub async fn seed(
    client: &Client,
    td: &str,
    services: &[&str],
    postgres: Option<&str>,
) -> anyhow::Result<VaultSetup> {
    for s in services {
        let password = hex(24)?;
        // cas 0: only when absent, so a second `ward up` keeps its secrets.
        let (status, body) = client
            .vault_any_status(
                "POST",
                &format!("/v1/secret/data/{}", secret_path(s)),
                Some(&json!({"data": {"password": password, "user": s}, "options": {"cas": 0}})),
            )
            .await?;
        if status != 200 && status != 400 {
            anyhow::bail!("storing the demo secret of {s}: {status} {body}");
        }
    }
    client
        .vault(
            "PUT",
            "/v1/sys/policies/cedar/demo",
            Some(&json!({"policy": demo_policy(td, services)})),
        )
        .await?;
    let Some(url) = postgres else {
        return Ok(VaultSetup {
            db_skipped: Some("no PostgreSQL URL given (--postgres)".into()),
            ..Default::default()
        });
    };
    let configured = client
        .vault_any_status(
            "POST",
            &format!("/v1/database/config/{DB_CONNECTION}"),
            Some(&json!({"plugin_name": "postgresql-database-plugin", "connection_url": url, "allowed_roles": [DB_ROLE]})),
        )
        .await?;
    if configured.0 != 204 {
        let why = configured.1["errors"][0]
            .as_str()
            .unwrap_or("unknown error")
            .to_owned();
        return Ok(VaultSetup {
            db_skipped: Some(format!(
                "PostgreSQL at {} is not reachable: {why}",
                ward_dbcreds::redact(url)
            )),
            ..Default::default()
        });
    }
    client
        .vault(
            "POST",
            &format!("/v1/database/roles/{DB_ROLE}"),
            Some(&json!({"db_name": DB_CONNECTION, "default_ttl": "1h", "max_ttl": "24h"})),
        )
        .await?;
    Ok(VaultSetup {
        db_role: Some(DB_ROLE.into()),
        db_dsn: Some(ward_dbcreds::redact(url)),
        admin_dsn: Some(url.to_owned()),
        db_skipped: None,
    })
}

fn hex(n: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The walk-through's vault lines: orders reads its secret and a database
/// credential with its own SVID; payments is refused orders' secret.
pub async fn tour(orders_app: &str, payments_app: &str, setup: &VaultSetup) -> String {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
    else {
        return String::new();
    };
    let get = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json::<serde_json::Value>()
                .await
                .map_err(|e| e.to_string())
        }
    };
    let mut out = String::from("\nThe vault, used by the services with their own SVIDs:\n");
    match get(format!("http://{orders_app}/vault")).await {
        Ok(v) if v["secret"]["status"] == 200 => {
            out.push_str(&format!(
                "     orders → secret/{}   read version {} (keys {}), logged in as {}\n",
                v["secret"]["path"].as_str().unwrap_or("?"),
                v["secret"]["version"],
                v["secret"]["keys"],
                v["spiffe_id"].as_str().unwrap_or("?"),
            ));
            match &v["database"] {
                d if d["status"] == 200 => {
                    let user = d["username"].as_str().unwrap_or("?");
                    let exists = match &setup.admin_dsn {
                        Some(dsn) => user_exists(dsn, user).await,
                        None => None,
                    };
                    out.push_str(&format!(
                        "     orders → database/creds/{}   user {user} (lease {} s{})\n",
                        setup.db_role.as_deref().unwrap_or("?"),
                        d["lease_duration"],
                        match exists {
                            Some(true) => ", and PostgreSQL has that user now",
                            Some(false) => ", but PostgreSQL does not show it",
                            None => "",
                        }
                    ));
                }
                serde_json::Value::Null => {}
                d => out.push_str(&format!(
                    "     orders → database credential: {} {}\n",
                    d["status"], d["error"]
                )),
            }
        }
        Ok(v) => out.push_str(&format!("     orders → its secret: {v}\n")),
        Err(e) => out.push_str(&format!("     orders → its secret: failed ({e})\n")),
    }
    if let Some(why) = &setup.db_skipped {
        out.push_str(&format!("     (no dynamic database credential: {why})\n"));
    }
    let orders_secret = secret_path("orders");
    match get(format!(
        "http://{payments_app}/vault?secret={orders_secret}"
    ))
    .await
    {
        Ok(v) => out.push_str(&format!(
            "   payments → secret/{orders_secret}   {}\n",
            match v["secret"]["status"].as_u64() {
                Some(403) => "403 refused: no policy grants payments orders' secret".to_string(),
                Some(code) => format!("{code} (expected 403)"),
                None => format!("failed: {}", v["error"]),
            }
        )),
        Err(e) => out.push_str(&format!("   payments → orders' secret: failed ({e})\n")),
    }
    out
}

/// Whether `user` exists in the database at `dsn` (as its admin sees it).
async fn user_exists(dsn: &str, user: &str) -> Option<bool> {
    // The name came over HTTP from the demo app: only the vault's own
    // shape (`v-<role>-<random>`) is ever put in SQL.
    if !user.starts_with("v-")
        || !user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return None;
    }
    let conn = ward_dbcreds::Connection {
        plugin: ward_dbcreds::Plugin::Postgres,
        url: zeroize::Zeroizing::new(dsn.to_owned()),
    };
    let dbs = ward_dbcreds::Databases::default();
    // A statement that fails unless the role exists.
    let check = format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{}') THEN RAISE EXCEPTION 'absent'; END IF; END $$",
        user
    );
    Some(
        dbs.run("check", &conn, &[zeroize::Zeroizing::new(check)], &[])
            .await
            .is_ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_vault_policy_is_valid_and_grants_each_its_own() {
        let text = demo_policy("up.test", &["frontend", "orders", "payments"]);
        let access = ward_policy::vault::VaultAccess::new([("demo", text.as_str())]).unwrap();
        let none = Default::default();
        let orders = "spiffe://up.test/ns/demo/sa/orders";
        let payments = "spiffe://up.test/ns/demo/sa/payments";
        assert!(
            access
                .decide(orders, &none, "read", "secret/data/demo/orders/db")
                .allowed
        );
        assert!(
            access
                .decide(orders, &none, "read", "database/creds/orders")
                .allowed
        );
        assert!(
            !access
                .decide(payments, &none, "read", "secret/data/demo/orders/db")
                .allowed
        );
        assert!(
            !access
                .decide(payments, &none, "read", "database/creds/orders")
                .allowed
        );
        assert!(
            !access
                .decide(orders, &none, "update", "secret/data/demo/orders/db")
                .allowed
        );
    }
}
