//! Dynamic database credentials: the part of the vault that talks to the
//! databases it makes users in. Given a connection (plugin, URL with the
//! admin credential) it runs a role's creation statements with a fresh
//! user name, password and expiry, its revocation statements, and the
//! rotation of the admin's own password (after which no human knows it).
//!
//! Statements are Vault's templates: `{{name}}`, `{{username}}`,
//! `{{password}}` and `{{expiration}}`, split on `;` and run in one
//! transaction each. Names and passwords are generated here from a small
//! alphabet, so substituting them into SQL cannot change its meaning.
//! Nothing here ever prints a password or a URL's credentials.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Connection as _};
use zeroize::Zeroizing;

/// Which kind of database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// PostgreSQL (`postgresql-database-plugin`).
    Postgres,
    /// MySQL or MariaDB (`mysql-database-plugin`).
    Mysql,
}

impl Plugin {
    /// Reads Vault's plugin names and the short ones.
    pub fn parse(s: &str) -> Result<Self, DbError> {
        match s {
            "postgresql" | "postgres" | "postgresql-database-plugin" => Ok(Self::Postgres),
            "mysql" | "mariadb" | "mysql-database-plugin" | "mysql-legacy-database-plugin" => {
                Ok(Self::Mysql)
            }
            other => Err(DbError::Config(format!(
                "unknown plugin {other:?}: use postgresql or mysql (MariaDB is mysql)"
            ))),
        }
    }

    /// Vault's name of the plugin.
    pub fn vault_name(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql-database-plugin",
            Self::Mysql => "mysql-database-plugin",
        }
    }

    /// Statements a role gets when it names none.
    pub fn default_creation(self) -> &'static str {
        match self {
            Self::Postgres => {
                r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#
            }
            Self::Mysql => "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
        }
    }

    /// Revocation statements a role gets when it names none: sessions of
    /// the user end, then the user goes.
    pub fn default_revocation(self) -> &'static str {
        match self {
            Self::Postgres => {
                r#"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}'; DROP ROLE IF EXISTS "{{name}}";"#
            }
            Self::Mysql => "DROP USER IF EXISTS '{{name}}'@'%';",
        }
    }

    /// The statement that changes the connected admin's own password.
    /// The statements that may change the connected admin's own password,
    /// tried in order. MariaDB 10.11 accepts `ALTER USER CURRENT_USER()`
    /// from a non-root user and changes nothing (measured here), so its
    /// `SET PASSWORD` comes first; MySQL 8 has no `PASSWORD()` and takes
    /// the `ALTER USER` form. Whichever ran, the new password is then
    /// proven by logging in with it.
    fn rotate_statements(self) -> &'static [&'static str] {
        match self {
            Self::Postgres => &["ALTER ROLE CURRENT_USER WITH PASSWORD '{{password}}'"],
            Self::Mysql => &[
                "SET PASSWORD = PASSWORD('{{password}}')",
                "ALTER USER CURRENT_USER() IDENTIFIED BY '{{password}}'",
            ],
        }
    }

    /// The longest user name the database accepts.
    fn max_name(self) -> usize {
        match self {
            Self::Postgres => 63,
            Self::Mysql => 32,
        }
    }
}

/// What went wrong; never carries a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The connection settings or a template are unusable.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached or refused the admin.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL without credentials.
        url: String,
        /// Why.
        reason: String,
    },
    /// A statement failed.
    #[error("statement {index} failed on {url}: {reason}")]
    Statement {
        /// 1-based.
        index: usize,
        /// The URL without credentials.
        url: String,
        /// The database's message (statements carry generated values only,
        /// and the message is stripped of the password anyway).
        reason: String,
    },
}

/// A connection's settings: the plugin and the URL with the credential in it.
#[derive(Clone)]
pub struct Connection {
    /// Which database.
    pub plugin: Plugin,
    /// `postgres://user:pass@host:port/db` or `mysql://user:pass@host:port/db`.
    pub url: Zeroizing<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({:?}, {})", self.plugin, redact(&self.url))
    }
}

/// The URL for messages: user info and the query (which may carry
/// `user=` and `password=`) removed.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unparseable URL)".into();
    };
    // User info first (a password may hold `?`), then the query.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    match rest.split_once('?') {
        Some((base, _)) => format!("{scheme}://{base}?…"),
        None => format!("{scheme}://{rest}"),
    }
}

/// Builds the URL from Vault's fields: `{{username}}` and `{{password}}`
/// in `connection_url` are replaced (percent-encoded) by `username` and
/// `password`; a URL that already carries its credential is used as is.
pub fn connection_url(
    plugin: Plugin,
    template: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Zeroizing<String>, DbError> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let scheme_ok = match plugin {
        Plugin::Postgres => {
            template.starts_with("postgres://") || template.starts_with("postgresql://")
        }
        Plugin::Mysql => template.starts_with("mysql://") || template.starts_with("mariadb://"),
    };
    if !scheme_ok {
        return Err(DbError::Config(format!(
            "connection_url {} does not match plugin {}: use postgres://… for postgresql and mysql://… for mysql",
            redact(template),
            plugin.vault_name()
        )));
    }
    let mut url = template.replacen("mariadb://", "mysql://", 1);
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    if url.contains("{{username}}") {
        let u = username.ok_or_else(|| {
            DbError::Config("connection_url names {{username}} but no username was given".into())
        })?;
        url = url.replace("{{username}}", &enc(u));
    }
    if url.contains("{{password}}") {
        let p = password.ok_or_else(|| {
            DbError::Config("connection_url names {{password}} but no password was given".into())
        })?;
        url = url.replace("{{password}}", &enc(p));
    }
    if url.contains("{{") {
        return Err(DbError::Config(
            "connection_url has a placeholder other than {{username}} and {{password}}".into(),
        ));
    }
    url.parse::<AnyConnectOptions>().map_err(|e| {
        DbError::Config(format!(
            "connection_url {} is not usable: {e}",
            redact(template)
        ))
    })?;
    require_tls_beyond_loopback(plugin, &url)?;
    Ok(Zeroizing::new(url))
}

/// The admin credential crosses the network only inside verified TLS: a
/// host other than loopback needs the URL to ask for it (sqlx's default,
/// `prefer`, falls back to cleartext when an attacker on the path says so).
fn require_tls_beyond_loopback(plugin: Plugin, url: &str) -> Result<(), DbError> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, q),
        None => (rest, ""),
    };
    let authority = authority.split('/').next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_lowercase()))
        .collect();
    // The driver takes the host from the query too (`host=`, `hostaddr=`),
    // and the last of repeated or aliased TLS keys: anything that could
    // make the checked value not the one used is refused.
    let refused = |why: &str| {
        Err(DbError::Config(format!(
            "connection_url {}: {why}",
            redact(url)
        )))
    };
    if params.iter().any(|(k, _)| k.contains('%')) {
        return refused("percent-encoded parameter names are not accepted");
    }
    if params
        .iter()
        .any(|(k, _)| matches!(k.as_str(), "host" | "hostaddr" | "port" | "socket"))
    {
        return refused("give the host and port in the URL itself, not as query parameters");
    }
    let tls_keys = params
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "sslmode" | "ssl-mode" | "ssl_mode"))
        .count();
    if tls_keys > 1 {
        return refused("name the TLS mode once");
    }
    if loopback {
        return Ok(());
    }
    let has = |key: &str, ok: &[&str]| {
        params
            .iter()
            .any(|(k, v)| k == key && ok.contains(&v.as_str()))
    };
    let (secure, hint) = match plugin {
        Plugin::Postgres => (
            has("sslmode", &["verify-full", "verify-ca"]),
            "?sslmode=verify-full",
        ),
        Plugin::Mysql => (
            has("ssl-mode", &["verify_identity", "verify_ca"]),
            "?ssl-mode=VERIFY_IDENTITY",
        ),
    };
    if secure {
        Ok(())
    } else {
        Err(DbError::Config(format!(
            "connection_url {} reaches {host:?} beyond loopback without verified TLS, so the admin credential could be read or downgraded on the way: add {hint} (and the server's CA, e.g. sslrootcert=)",
            redact(url)
        )))
    }
}

/// A generated user: name and password.
pub struct NewUser {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewUser({}, <password>)", self.name)
    }
}

fn random_from(alphabet: &[u8], n: usize) -> Result<String, DbError> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| DbError::Config("no randomness".into()))?;
    // 256 is a multiple of neither alphabet's size exactly; the bias of a
    // 62- or 36-letter alphabet over one byte is immaterial at these lengths.
    Ok(bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

/// A fresh user for `role`: `v-<role>-<random>`, lower case, digits and
/// `-` only, within the database's limit; a 32-letter random password.
pub fn new_user(plugin: Plugin, role: &str) -> Result<NewUser, DbError> {
    let role: String = role
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    let suffix = random_from(b"abcdefghijklmnopqrstuvwxyz0123456789", 12)?;
    let mut name = format!("v-{role}-{suffix}");
    name.truncate(plugin.max_name());
    let password = Zeroizing::new(random_from(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        32,
    )?);
    Ok(NewUser { name, password })
}

/// `{{expiration}}` as PostgreSQL reads it.
pub fn expiration_text(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The statements of a template with the values substituted, split on `;`.
pub fn render(
    template: &str,
    name: &str,
    password: &str,
    expiration: &str,
) -> Vec<Zeroizing<String>> {
    template
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Zeroizing::new(
                s.replace("{{name}}", name)
                    .replace("{{username}}", name)
                    .replace("{{password}}", password)
                    .replace("{{expiration}}", expiration),
            )
        })
        .collect()
}

/// Checks a template before it is stored: it must name the user.
pub fn check_template(what: &str, template: &str) -> Result<(), DbError> {
    if render(template, "n", "p", "e").is_empty() {
        return Err(DbError::Config(format!("{what} has no statements")));
    }
    if !template.contains("{{name}}") && !template.contains("{{username}}") {
        return Err(DbError::Config(format!(
            "{what} never names the user ({{{{name}}}})"
        )));
    }
    Ok(())
}

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pools to the configured databases, by connection name and URL (a
/// rotated or reconfigured connection gets a new pool).
#[derive(Default)]
pub struct Databases {
    pools: Mutex<HashMap<String, (String, AnyPool)>>,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Databases")
    }
}

fn fingerprint(url: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        url.as_bytes(),
    ))
}

fn strip(msg: String, secrets: &[&str]) -> String {
    let mut m = msg;
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        m = m.replace(s, "***");
    }
    m
}

impl Databases {
    fn pool(&self, name: &str, conn: &Connection) -> Result<AnyPool, DbError> {
        sqlx::any::install_default_drivers();
        let fp = fingerprint(&conn.url);
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((f, p)) = pools.get(name)
            && *f == fp
        {
            return Ok(p.clone());
        }
        let opts: AnyConnectOptions = conn
            .url
            .parse()
            .map_err(|e| DbError::Config(format!("{}: {e}", redact(&conn.url))))?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(60)))
            .connect_lazy_with(opts);
        pools.insert(name.to_owned(), (fp, pool.clone()));
        Ok(pool)
    }

    /// Forgets the pool of `name` (its settings changed or it was deleted).
    pub fn forget(&self, name: &str) {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Connects once, to check the settings before they are stored.
    pub async fn verify(conn: &Connection) -> Result<(), DbError> {
        sqlx::any::install_default_drivers();
        let opts: AnyConnectOptions = conn
            .url
            .parse()
            .map_err(|e| DbError::Config(format!("{}: {e}", redact(&conn.url))))?;
        let c = tokio::time::timeout(CONNECT_TIMEOUT, sqlx::AnyConnection::connect_with(&opts))
            .await
            .map_err(|_| DbError::Connect {
                url: redact(&conn.url),
                reason: "timed out".into(),
            })?
            .map_err(|e| DbError::Connect {
                url: redact(&conn.url),
                reason: strip(e.to_string(), &[&conn.url]),
            })?;
        let _ = c.close().await;
        Ok(())
    }

    /// Runs `statements` in one transaction on the database `name`.
    pub async fn run(
        &self,
        name: &str,
        conn: &Connection,
        statements: &[Zeroizing<String>],
        secrets: &[&str],
    ) -> Result<(), DbError> {
        let pool = self.pool(name, conn)?;
        let url = redact(&conn.url);
        let mut tx = pool.begin().await.map_err(|e| DbError::Connect {
            url: url.clone(),
            reason: strip(e.to_string(), &[&conn.url]),
        })?;
        for (i, st) in statements.iter().enumerate() {
            sqlx::raw_sql(AssertSqlSafe(st.to_string()))
                .execute(&mut *tx)
                .await
                .map_err(|e| DbError::Statement {
                    index: i + 1,
                    url: url.clone(),
                    reason: strip(e.to_string(), secrets),
                })?;
        }
        tx.commit().await.map_err(|e| DbError::Statement {
            index: statements.len(),
            url,
            reason: strip(e.to_string(), secrets),
        })
    }

    /// Changes the connected admin's password to a fresh random one and
    /// returns the URL with it. The old pool is dropped.
    pub async fn rotate_root(
        &self,
        name: &str,
        conn: &Connection,
    ) -> Result<Zeroizing<String>, DbError> {
        let password = new_user(conn.plugin, "root")?.password;
        let url = with_password(&conn.url, &password)?;
        let rotated = Connection {
            plugin: conn.plugin,
            url: url.clone(),
        };
        let mut last = None;
        for template in conn.plugin.rotate_statements() {
            let statement = render(template, "", &password, "");
            match self.run(name, conn, &statement, &[&password]).await {
                Ok(()) => {
                    self.forget(name);
                    if Self::verify(&rotated).await.is_ok() {
                        return Ok(url);
                    }
                    // The old password still logging in means the statement
                    // changed nothing: try the next one. Neither logging in
                    // means the change most likely took and the login check
                    // failed for another reason: keep the new password, the
                    // only copy of it, rather than lose it.
                    if Self::verify(conn).await.is_err() {
                        tracing::warn!(
                            connection = name,
                            "the new admin password could not be proven by a login, and the old one no longer works: keeping the new one"
                        );
                        return Ok(url);
                    }
                    last = Some(DbError::Config(
                        "the database accepted the password change but the new password does not log in".into(),
                    ));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| DbError::Config("no rotation statement for this plugin".into())))
    }
}

/// The URL with its password replaced (percent-encoded).
fn with_password(url: &str, password: &str) -> Result<Zeroizing<String>, DbError> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| DbError::Config("the connection URL has no scheme".into()))?;
    let (userinfo, host) = rest
        .rsplit_once('@')
        .ok_or_else(|| DbError::Config("the connection URL names no user, so its password cannot be rotated: give it as user@host".into()))?;
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    Ok(Zeroizing::new(format!(
        "{scheme}://{user}:{}@{host}",
        utf8_percent_encode(password, NON_ALPHANUMERIC)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_show_their_credentials() {
        assert_eq!(
            redact("postgres://admin:s3cret@db:5432/app"),
            "postgres://db:5432/app"
        );
        assert_eq!(
            redact("mysql://root@127.0.0.1:3306/test"),
            "mysql://127.0.0.1:3306/test"
        );
        assert_eq!(
            redact("postgres://h/db?user=a&password=s3cret"),
            "postgres://h/db?…"
        );
        assert_eq!(redact("postgres://admin:pa?ss@h/db"), "postgres://h/db");
        let c = Connection {
            plugin: Plugin::Postgres,
            url: Zeroizing::new("postgres://a:hunter2@h/db".into()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let u = connection_url(
            Plugin::Postgres,
            "postgres://{{username}}:{{password}}@127.0.0.1:5432/db",
            Some("ad min"),
            Some("p@ss/w"),
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "postgres://ad%20min:p%40ss%2Fw@127.0.0.1:5432/db"
        );
        assert!(connection_url(Plugin::Mysql, "postgres://h/db", None, None).is_err());
        assert!(
            connection_url(Plugin::Postgres, "postgres://{{username}}@h/db", None, None).is_err()
        );
        assert_eq!(
            with_password("postgres://admin:old@h:5432/db", "n/w")
                .unwrap()
                .as_str(),
            "postgres://admin:n%2Fw@h:5432/db"
        );
        assert!(with_password("postgres://h/db", "x").is_err());
        // Beyond loopback, only with verified TLS.
        assert!(
            connection_url(Plugin::Postgres, "postgres://a@db.internal/x", None, None).is_err()
        );
        assert!(
            connection_url(
                Plugin::Postgres,
                "postgres://a@db.internal/x?sslmode=require",
                None,
                None
            )
            .is_err()
        );
        assert!(
            connection_url(
                Plugin::Postgres,
                "postgres://a@db.internal/x?sslmode=verify-full",
                None,
                None
            )
            .is_ok()
        );
        assert!(connection_url(Plugin::Mysql, "mysql://a@10.0.0.5/x", None, None).is_err());
        assert!(
            connection_url(
                Plugin::Mysql,
                "mysql://a@10.0.0.5/x?ssl-mode=VERIFY_IDENTITY",
                None,
                None
            )
            .is_ok()
        );
        assert!(
            connection_url(
                Plugin::Postgres,
                "postgres://a@127.0.0.1:5432/x",
                None,
                None
            )
            .is_ok()
        );
        assert!(connection_url(Plugin::Postgres, "postgres://a@[::1]:5432/x", None, None).is_ok());
        // The checked host and TLS mode must be the ones the driver uses.
        assert!(
            connection_url(
                Plugin::Postgres,
                "postgres://a@127.0.0.1/x?host=db.remote",
                None,
                None
            )
            .is_err()
        );
        assert!(
            connection_url(
                Plugin::Postgres,
                "postgres://a@db.internal/x?sslmode=verify-full&sslmode=disable",
                None,
                None
            )
            .is_err()
        );
        assert!(
            connection_url(
                Plugin::Mysql,
                "mysql://a@10.0.0.5/x?ssl-mode=VERIFY_IDENTITY&sslmode=DISABLED",
                None,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn generated_users_cannot_break_out_of_a_statement() {
        let u = new_user(Plugin::Mysql, "Orders'; DROP--").unwrap();
        assert!(
            u.name.len() <= 32 && u.name.starts_with("v-ordersdr-"),
            "{}",
            u.name
        );
        assert!(
            u.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
        assert_eq!(u.password.len(), 32);
        assert!(u.password.bytes().all(|b| b.is_ascii_alphanumeric()));
        let other = new_user(Plugin::Mysql, "orders").unwrap();
        assert_ne!(u.password.as_str(), other.password.as_str());
        let st = render(
            Plugin::Postgres.default_creation(),
            &u.name,
            &u.password,
            "2030-01-01 00:00:00+0000",
        );
        assert_eq!(st.len(), 1);
        assert!(
            st[0].contains(&format!("\"{}\"", u.name)) && st[0].contains("VALID UNTIL '2030-01-01")
        );
        assert_eq!(
            render(Plugin::Postgres.default_revocation(), "x", "", "").len(),
            2
        );
        assert!(check_template("creation", "CREATE USER x").is_err());
        assert!(check_template("creation", " ; ").is_err());
        assert_eq!(expiration_text(0), "1970-01-01 00:00:00+0000");
    }
}
