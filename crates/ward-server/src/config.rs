//! The server's configuration: read once from a TOML file (or built from
//! `--dev` flags), validated whole at start-up into typed values. A bad value
//! stops start-up with the file, the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use ward_identity::TrustDomain;

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("config {source_name}: key `{key}`: {reason}")]
    Invalid {
        /// The file, or `--dev flags`.
        source_name: String,
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: String,
    listen: Option<String>,
    data_dir: String,
    storage: Option<String>,
    #[serde(default)]
    ca: RawCa,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    seal: RawSeal,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    vault: RawVault,
    #[serde(default)]
    oauth: RawOAuth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    issuer: Option<String>,
    signing_alg: Option<String>,
    token_ttl: Option<String>,
    event_max_ttl: Option<String>,
    key_publish_delay: Option<String>,
    #[serde(default, rename = "trusted_issuer")]
    trusted_issuers: Vec<ward_oidc::Settings>,
}

/// The token service (`[oauth]`).
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// The issuer URL (`iss`); default `https://` and the listen address.
    pub issuer: Option<String>,
    /// How tokens are signed: ES256 (default) or EdDSA.
    pub signing_alg: crate::oauth::keys::Alg,
    /// An access token's lifetime (default 10 min; at most 15 min).
    pub token_ttl: std::time::Duration,
    /// The longest lifetime a token may have (15 min).
    pub token_max_ttl: std::time::Duration,
    /// The longest an event token for queued work may live (default 24 h).
    pub event_max_ttl: std::time::Duration,
    /// How long a new signing key is published before it signs (default 60 s).
    pub key_publish_delay: std::time::Duration,
    /// OIDC issuers whose users' tokens may be exchanged (RFC 8693).
    pub trusted_issuers: Vec<ward_oidc::Settings>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            signing_alg: crate::oauth::keys::Alg::ES256,
            token_ttl: Duration::from_secs(600),
            token_max_ttl: Duration::from_secs(900),
            event_max_ttl: Duration::from_secs(24 * 3600),
            key_publish_delay: Duration::from_secs(60),
            trusted_issuers: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    jwt_audience: Option<String>,
    token_ttl: Option<String>,
    token_max_ttl: Option<String>,
    kv_max_versions: Option<u32>,
    lease_default_ttl: Option<String>,
    lease_max_ttl: Option<String>,
}

/// The secrets vault (`[vault]`): how workloads log in and how long what
/// they get lives.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// The audience a JWT-SVID must carry for `auth/jwt/login` (default `vault`).
    pub jwt_audience: String,
    /// A workload token's lifetime at login and at each renewal (default 30 min).
    pub token_ttl: Duration,
    /// How long renewals can keep a workload token alive (default 8 h).
    pub token_max_ttl: Duration,
    /// Versions kept per KV secret unless its metadata says otherwise (default 10).
    pub kv_max_versions: u32,
    /// A dynamic credential's lease when its role sets none (default 1 h).
    pub lease_default_ttl: Duration,
    /// The longest a lease may be renewed to, unless its role sets less (default 24 h).
    pub lease_max_ttl: Duration,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            jwt_audience: "vault".into(),
            token_ttl: Duration::from_secs(1800),
            token_max_ttl: Duration::from_secs(8 * 3600),
            kv_max_versions: 10,
            lease_default_ttl: Duration::from_secs(3600),
            lease_max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    retention: Option<String>,
    max_edges_per_reporter: Option<usize>,
}

/// Call telemetry the proxies report (`[telemetry]`): summed per edge and
/// minute, bounded per reporter, kept for `retention`.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// How long windows are kept (default 7 days).
    pub retention: Duration,
    /// Distinct edges one reporter may add per minute; the rest are summed
    /// under one `(other)` edge (default 1000).
    pub max_edges_per_reporter: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_file: Option<String>,
    checkpoint_interval: Option<String>,
}

/// Signed checkpoints of the audit chain, appended to a file outside the
/// store (`[audit]`), so a rewrite of the log behind one is caught by
/// `ward audit verify --checkpoints FILE`.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Where checkpoints are appended; none when unset.
    pub checkpoint_file: Option<PathBuf>,
    /// How often (default 1 h; only when the chain has grown).
    pub checkpoint_interval: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    max_connections: Option<usize>,
    max_handshakes: Option<usize>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_concurrent_streams: Option<u32>,
    keepalive_interval: Option<String>,
    max_unauthenticated_per_minute: Option<u32>,
    max_failed_auth_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    validity: Option<String>,
    svid_default_ttl: Option<String>,
    svid_max_ttl: Option<String>,
    jwt_default_ttl: Option<String>,
    jwt_max_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeal {
    shares: Option<u32>,
    threshold: Option<u32>,
}

/// Lifetimes of the CA and of what it signs.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Validity of a new CA certificate.
    pub validity: Duration,
    /// X.509-SVID lifetime when an entry or request names none.
    pub svid_default_ttl: Duration,
    /// The longest X.509-SVID lifetime accepted; also how long a retired CA
    /// stays in the bundle.
    pub svid_max_ttl: Duration,
    /// JWT-SVID lifetime when a request names none.
    pub jwt_default_ttl: Duration,
    /// The longest JWT-SVID lifetime accepted.
    pub jwt_max_ttl: Duration,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            validity: Duration::from_secs(365 * 86400),
            svid_default_ttl: Duration::from_secs(3600),
            svid_max_ttl: Duration::from_secs(24 * 3600),
            jwt_default_ttl: Duration::from_secs(300),
            jwt_max_ttl: Duration::from_secs(3600),
        }
    }
}

/// How the API's connections are bounded (`[api]`): a client that opens
/// many connections, handshakes slowly, dawdles over a request head or
/// holds a connection open doing nothing is cut off without slowing the
/// others.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Most connections served at once (default 1024).
    pub max_connections: usize,
    /// Most TLS handshakes in progress at once (default 64), apart from
    /// the connection cap so slow handshakes cannot take served slots.
    pub max_handshakes: usize,
    /// How long a request head may take to arrive, and how long an
    /// HTTP/1.1 connection may wait between requests (default 10 s).
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this
    /// (default 60 s; long polls are requests in flight).
    pub idle_timeout: Duration,
    /// HTTP/2 streams per connection (default 100).
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive pings; a peer that does not answer within the
    /// same interval is dropped (default 20 s).
    pub keepalive_interval: Duration,
    /// Requests per minute per address to the endpoints that take no
    /// token (unseal, attest; default 120).
    pub max_unauthenticated_per_minute: u32,
    /// Failed authentications per minute per address before it is turned
    /// away with 429 until its quota refills (default 30).
    pub max_failed_auth_per_minute: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_handshakes: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_concurrent_streams: 100,
            keepalive_interval: Duration::from_secs(20),
            max_unauthenticated_per_minute: 120,
            max_failed_auth_per_minute: 30,
        }
    }
}

/// The whole validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The trust domain this server is the authority of.
    pub trust_domain: TrustDomain,
    /// Where the HTTPS API listens.
    pub listen: SocketAddr,
    /// Where the server keeps its TLS files (and, in dev mode, its key file).
    pub data_dir: PathBuf,
    /// Storage URL.
    pub storage: String,
    /// CA lifetimes.
    pub ca: CaConfig,
    /// Extra DNS names or IPs for the server's HTTPS certificate.
    pub tls_names: Vec<String>,
    /// Unseal shares to make at init.
    pub seal_shares: u32,
    /// Shares needed to unseal.
    pub seal_threshold: u32,
    /// Dev mode: self-initializing and self-unsealing with a key file.
    pub dev: bool,
    /// Connection limits of the API.
    pub api: ApiLimits,
    /// Audit checkpoints.
    pub audit: AuditConfig,
    /// Telemetry retention and bounds.
    pub telemetry: TelemetryConfig,
    /// The secrets vault.
    pub vault: VaultConfig,
    /// The token service.
    pub oauth: OAuthConfig,
    /// Authenticate a store from before the barrier on the next unseal
    /// (`ward server --upgrade-store`; dev mode always may).
    pub upgrade_store: bool,
}

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

impl ServerConfig {
    /// Reads and validates a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::validate(raw, &path.display().to_string(), false)
    }

    /// The configuration of `ward server --dev`.
    pub fn dev(
        data_dir: &Path,
        listen: Option<&str>,
        trust_domain: &str,
    ) -> Result<Self, ConfigError> {
        let raw = RawConfig {
            trust_domain: trust_domain.to_owned(),
            listen: listen.map(str::to_owned),
            data_dir: data_dir.display().to_string(),
            storage: None,
            ca: RawCa::default(),
            tls: RawTls::default(),
            seal: RawSeal {
                shares: Some(1),
                threshold: Some(1),
            },
            api: RawApi::default(),
            audit: RawAudit::default(),
            telemetry: RawTelemetry::default(),
            vault: RawVault::default(),
            oauth: RawOAuth::default(),
        };
        Self::validate(raw, "--dev flags", true)
    }

    fn validate(raw: RawConfig, source_name: &str, dev: bool) -> Result<Self, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            source_name: source_name.to_owned(),
            key,
            reason,
        };
        let trust_domain = TrustDomain::parse(&raw.trust_domain)
            .map_err(|e| invalid("trust_domain", e.to_string()))?;
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_text:?} is not an IP:port address"),
            )
        })?;
        if raw.data_dir.is_empty() {
            return Err(invalid("data_dir", "cannot be empty".into()));
        }
        let data_dir = PathBuf::from(&raw.data_dir);
        let data_dir = if data_dir.is_absolute() {
            data_dir
        } else {
            std::env::current_dir()
                .map(|d| d.join(&data_dir))
                .unwrap_or(data_dir)
        };
        let storage = raw
            .storage
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("ward.db").display()));
        if !(storage.starts_with("sqlite://")
            || storage.starts_with("postgres://")
            || storage.starts_with("postgresql://"))
        {
            return Err(invalid(
                "storage",
                "must start with sqlite:// or postgres://".into(),
            ));
        }
        let defaults = CaConfig::default();
        let dur =
            |key: &'static str, v: Option<String>, d: Duration| -> Result<Duration, ConfigError> {
                match v {
                    None => Ok(d),
                    Some(s) => {
                        let parsed = humantime::parse_duration(&s).map_err(|e| {
                            invalid(
                                key,
                                format!("{s:?} is not a duration like \"1h\" or \"30m\": {e}"),
                            )
                        })?;
                        if parsed < Duration::from_secs(1) {
                            return Err(invalid(key, "must be at least 1s".into()));
                        }
                        Ok(parsed)
                    }
                }
            };
        let ca = CaConfig {
            validity: dur("ca.validity", raw.ca.validity, defaults.validity)?,
            svid_default_ttl: dur(
                "ca.svid_default_ttl",
                raw.ca.svid_default_ttl,
                defaults.svid_default_ttl,
            )?,
            svid_max_ttl: dur(
                "ca.svid_max_ttl",
                raw.ca.svid_max_ttl,
                defaults.svid_max_ttl,
            )?,
            jwt_default_ttl: dur(
                "ca.jwt_default_ttl",
                raw.ca.jwt_default_ttl,
                defaults.jwt_default_ttl,
            )?,
            jwt_max_ttl: dur("ca.jwt_max_ttl", raw.ca.jwt_max_ttl, defaults.jwt_max_ttl)?,
        };
        if ca.svid_default_ttl > ca.svid_max_ttl {
            return Err(invalid(
                "ca.svid_default_ttl",
                "is longer than ca.svid_max_ttl".into(),
            ));
        }
        if ca.svid_max_ttl >= ca.validity {
            return Err(invalid(
                "ca.svid_max_ttl",
                "must be shorter than ca.validity".into(),
            ));
        }
        if ca.jwt_default_ttl > ca.jwt_max_ttl {
            return Err(invalid(
                "ca.jwt_default_ttl",
                "is longer than ca.jwt_max_ttl".into(),
            ));
        }
        let seal_shares = raw.seal.shares.unwrap_or(5);
        let seal_threshold = raw.seal.threshold.unwrap_or(3);
        if !(1..=255).contains(&seal_shares) {
            return Err(invalid(
                "seal.shares",
                format!("{seal_shares} is not between 1 and 255"),
            ));
        }
        if seal_threshold == 0 || seal_threshold > seal_shares {
            return Err(invalid(
                "seal.threshold",
                format!("{seal_threshold} must be between 1 and seal.shares ({seal_shares})"),
            ));
        }
        let api_defaults = ApiLimits::default();
        let count = |key: &'static str, v: Option<usize>, d: usize| match v {
            None => Ok(d),
            Some(0) => Err(invalid(key, "must be at least 1".into())),
            Some(n) => Ok(n),
        };
        // A u32 setting, checked as above (it fits back: it came from a u32).
        let count32 = |key: &'static str, v: Option<u32>, d: u32| {
            count(key, v.map(|n| n as usize), d as usize).map(|n| n as u32)
        };
        let api = ApiLimits {
            max_connections: count(
                "api.max_connections",
                raw.api.max_connections,
                api_defaults.max_connections,
            )?,
            max_handshakes: count(
                "api.max_handshakes",
                raw.api.max_handshakes,
                api_defaults.max_handshakes,
            )?,
            header_timeout: dur(
                "api.header_timeout",
                raw.api.header_timeout,
                api_defaults.header_timeout,
            )?,
            idle_timeout: dur(
                "api.idle_timeout",
                raw.api.idle_timeout,
                api_defaults.idle_timeout,
            )?,
            max_concurrent_streams: count32(
                "api.max_concurrent_streams",
                raw.api.max_concurrent_streams,
                api_defaults.max_concurrent_streams,
            )?,
            keepalive_interval: dur(
                "api.keepalive_interval",
                raw.api.keepalive_interval,
                api_defaults.keepalive_interval,
            )?,
            max_unauthenticated_per_minute: count32(
                "api.max_unauthenticated_per_minute",
                raw.api.max_unauthenticated_per_minute,
                api_defaults.max_unauthenticated_per_minute,
            )?,
            max_failed_auth_per_minute: count32(
                "api.max_failed_auth_per_minute",
                raw.api.max_failed_auth_per_minute,
                api_defaults.max_failed_auth_per_minute,
            )?,
        };
        let audit = AuditConfig {
            checkpoint_file: match raw.audit.checkpoint_file {
                Some(f) if f.is_empty() => {
                    return Err(invalid("audit.checkpoint_file", "cannot be empty".into()));
                }
                f => f.map(PathBuf::from),
            },
            checkpoint_interval: dur(
                "audit.checkpoint_interval",
                raw.audit.checkpoint_interval,
                Duration::from_secs(3600),
            )?,
        };
        let telemetry = TelemetryConfig {
            retention: dur(
                "telemetry.retention",
                raw.telemetry.retention,
                Duration::from_secs(7 * 86400),
            )?,
            max_edges_per_reporter: count(
                "telemetry.max_edges_per_reporter",
                raw.telemetry.max_edges_per_reporter,
                1000,
            )?,
        };
        let vd = VaultConfig::default();
        let vault = VaultConfig {
            jwt_audience: match raw.vault.jwt_audience {
                Some(a) if a.trim().is_empty() => {
                    return Err(invalid("vault.jwt_audience", "cannot be empty".into()));
                }
                a => a.unwrap_or(vd.jwt_audience),
            },
            token_ttl: dur("vault.token_ttl", raw.vault.token_ttl, vd.token_ttl)?,
            token_max_ttl: dur(
                "vault.token_max_ttl",
                raw.vault.token_max_ttl,
                vd.token_max_ttl,
            )?,
            kv_max_versions: match raw.vault.kv_max_versions {
                Some(0) => {
                    return Err(invalid(
                        "vault.kv_max_versions",
                        "must be at least 1".into(),
                    ));
                }
                n => n.unwrap_or(vd.kv_max_versions),
            },
            lease_default_ttl: dur(
                "vault.lease_default_ttl",
                raw.vault.lease_default_ttl,
                vd.lease_default_ttl,
            )?,
            lease_max_ttl: dur(
                "vault.lease_max_ttl",
                raw.vault.lease_max_ttl,
                vd.lease_max_ttl,
            )?,
        };
        if vault.token_ttl > vault.token_max_ttl {
            return Err(invalid(
                "vault.token_ttl",
                "is longer than vault.token_max_ttl".into(),
            ));
        }
        if vault.lease_default_ttl > vault.lease_max_ttl {
            return Err(invalid(
                "vault.lease_default_ttl",
                "is longer than vault.lease_max_ttl".into(),
            ));
        }
        let od = OAuthConfig::default();
        let oauth = OAuthConfig {
            issuer: match raw.oauth.issuer {
                Some(i) => {
                    let ok = i.starts_with("https://")
                        && !i.ends_with('/')
                        && !i.contains(['?', '#', ' '])
                        && i.len() <= 512;
                    if !ok {
                        return Err(invalid(
                            "oauth.issuer",
                            format!(
                                "{i:?} must be an https:// URL without a trailing slash, query or fragment"
                            ),
                        ));
                    }
                    Some(i)
                }
                None => None,
            },
            signing_alg: match raw.oauth.signing_alg.as_deref() {
                None => od.signing_alg,
                Some(a) => crate::oauth::keys::Alg::parse(a).ok_or_else(|| {
                    invalid("oauth.signing_alg", format!("{a:?} is not ES256 or EdDSA"))
                })?,
            },
            token_ttl: dur("oauth.token_ttl", raw.oauth.token_ttl, od.token_ttl)?,
            token_max_ttl: od.token_max_ttl,
            event_max_ttl: dur(
                "oauth.event_max_ttl",
                raw.oauth.event_max_ttl,
                od.event_max_ttl,
            )?,
            key_publish_delay: match raw.oauth.key_publish_delay {
                Some(d) if d.trim() == "0s" => Duration::ZERO,
                d => dur("oauth.key_publish_delay", d, od.key_publish_delay)?,
            },
            trusted_issuers: raw.oauth.trusted_issuers,
        };
        for t in &oauth.trusted_issuers {
            t.check().map_err(|e| invalid("oauth.trusted_issuer", e))?;
        }
        if oauth.token_ttl > oauth.token_max_ttl {
            return Err(invalid(
                "oauth.token_ttl",
                "is longer than 15 minutes, the longest an access token may live".into(),
            ));
        }
        Ok(Self {
            vault,
            oauth,
            trust_domain,
            listen,
            data_dir,
            storage,
            ca,
            tls_names: raw.tls.names,
            seal_shares,
            seal_threshold,
            dev,
            api,
            audit,
            telemetry,
            upgrade_store: dev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.toml");
        std::fs::write(&p, text).unwrap();
        ServerConfig::from_file(&p)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("trust_domain = \"example.org\"\ndata_dir = \"/tmp/w\"\n").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.storage, "sqlite:///tmp/w/ward.db");
        assert_eq!(c.ca.svid_default_ttl, Duration::from_secs(3600));
        assert_eq!((c.seal_shares, c.seal_threshold), (5, 3));
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let base = "data_dir = \"/tmp/w\"\n";
        let cases = [
            ("trust_domain = \"Bad.Org\"\n", "trust_domain"),
            ("trust_domain = \"a\"\nlisten = \"nope\"\n", "listen"),
            ("trust_domain = \"a\"\nstorage = \"mysql://x\"\n", "storage"),
            (
                "trust_domain = \"a\"\n[ca]\nvalidity = \"forever\"\n",
                "ca.validity",
            ),
            (
                "trust_domain = \"a\"\n[ca]\nsvid_default_ttl = \"48h\"\n",
                "ca.svid_default_ttl",
            ),
            (
                "trust_domain = \"a\"\n[ca]\nvalidity = \"1h\"\n",
                "ca.svid_max_ttl",
            ),
            (
                "trust_domain = \"a\"\n[seal]\nthreshold = 6\n",
                "seal.threshold",
            ),
            ("trust_domain = \"a\"\n[seal]\nshares = 0\n", "seal.shares"),
        ];
        for (text, key) in cases {
            let err = parse(&format!("{base}{text}")).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let unknown = parse("trust_domain = \"a\"\ndata_dir = \"/x\"\nlsiten = \"1\"\n")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("lsiten"), "{unknown}");
        let missing = parse("data_dir = \"/x\"\n").unwrap_err().to_string();
        assert!(missing.contains("trust_domain"), "{missing}");
    }
}
