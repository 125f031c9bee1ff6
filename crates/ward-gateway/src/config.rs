//! `gateway.toml`: the client-facing listener and its certificate, the
//! gateway's own SVID (for upstream mutual TLS), the token issuers it
//! trusts, API keys, limits, network lists, CORS, the shared rate-limit
//! store, and the routes. Unknown keys are errors; every route must say
//! how it authenticates (`public` only when marked so).
//!
//! ```toml
//! listen = "0.0.0.0:443"
//! [tls]
//! cert = "gateway.pem"            # chain, leaf first (DNS SANs for the names clients use)
//! key = "gateway-key.pem"
//! client_ca = "clients-ca.pem"    # optional: client certificates for `auth = "mtls"` routes
//! [identity]                      # the gateway's SVID, as in proxy.toml
//! workload_api = "/run/ward/agent.sock"
//! [admin]
//! listen = "127.0.0.1:9902"       # /healthz /metrics
//! [[issuer]]
//! name = "ward"
//! issuer = "https://ward.internal:8443"
//! ca = "ward-ca.pem"              # for discovery, JWKS and the revoked list
//! algorithms = ["ES256"]
//! audiences = ["api"]
//! [[route]]
//! name = "orders"
//! path_prefix = "/api/orders"
//! auth = "jwt"
//! upstream = "10.0.0.7:8443"
//! upstream_spiffe_id = "spiffe://example.org/ns/shop/sa/orders"
//! policy = 'permit(principal, action, resource) when { principal.scopes.contains("orders") };'
//! rate_limit = { rate = 100, per = "1s", burst = 20, key = "subject" }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use ward_proxy::config::{IdentityConfig, humantime_serde_compat as hts};

/// Why a configuration was refused (the same errors as proxy.toml's).
pub use ward_proxy::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub tls: TlsConfig,
    /// The gateway's SVID, for upstream mutual TLS (required when a route
    /// has an `upstream_spiffe_id`).
    pub identity: Option<IdentityConfig>,
    pub admin: Option<AdminConfig>,
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default, rename = "api_key")]
    pub api_keys: Vec<ApiKeyConfig>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub network: NetworkConfig,
    pub cors: Option<CorsConfig>,
    pub redis: Option<RedisConfig>,
    /// Identity propagation: where users' tokens are exchanged for
    /// internal tokens (needs [identity]: the gateway authenticates with its SVID).
    pub exchange: Option<ExchangeConfig>,
    /// Denials go to the server's audit chain (needs [identity]: the
    /// gateway reports with its SVID).
    pub report: Option<ReportConfig>,
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// A token issuer the gateway trusts.
pub use ward_oidc::Settings as IssuerConfig;

/// An API key, kept only as the SHA-256 of the key (keys are random, so
/// no slow hash is needed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Scopes the key carries into route policies.
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most request header fields.
    pub max_headers: usize,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Longest request target, bytes.
    pub max_uri_bytes: usize,
    /// A declared body above this is refused (413) unread.
    pub max_body_bytes: u64,
    #[serde(with = "hts")]
    pub header_timeout: Duration,
    #[serde(with = "hts")]
    pub idle_timeout: Duration,
    #[serde(with = "hts")]
    pub handshake_timeout: Duration,
    #[serde(with = "hts")]
    pub response_timeout: Duration,
    #[serde(with = "hts")]
    pub connect_timeout: Duration,
    #[serde(with = "hts")]
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 8 << 20,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_handshakes: 256,
            max_concurrent_streams: 100,
        }
    }
}

/// Who may connect, and whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Proxies in front of the gateway whose `X-Forwarded-For` is honoured.
    pub trusted_proxies: Vec<IpNet>,
    /// When set, only these client addresses are served.
    pub allow: Vec<IpNet>,
    /// Never served (wins over `allow`).
    pub deny: Vec<IpNet>,
}

impl NetworkConfig {
    /// Whether `ip` may be served.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4 address mapped into IPv6 is matched as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example`); `*` is refused with credentials.
    pub allowed_origins: Vec<String>,
    #[serde(default = "default_cors_methods")]
    pub allowed_methods: Vec<String>,
    #[serde(default = "default_cors_headers")]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "default_cors_max_age", with = "hts")]
    pub max_age: Duration,
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}
fn default_cors_headers() -> Vec<String> {
    ["authorization", "content-type"].map(String::from).to_vec()
}
fn default_cors_max_age() -> Duration {
    Duration::from_secs(600)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port` (or `rediss://`).
    pub url: String,
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// A limit check that takes longer falls back to the local limit.
    #[serde(default = "default_redis_timeout", with = "hts")]
    pub timeout: Duration,
}

fn default_redis_prefix() -> String {
    "ward:gateway:rl:".into()
}
fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Ward's token endpoint, `https://…/oauth/token`.
    pub token_endpoint: String,
    /// Its HTTPS CA certificate.
    pub ca: PathBuf,
    /// The gateway's OAuth client, registered with the gateway's SPIFFE ID
    /// (`ward client create gateway --spiffe-id …`).
    pub client_id: String,
    /// An internal token is exchanged again this long before it expires.
    #[serde(default = "default_refresh_before", with = "hts")]
    pub refresh_before: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The server's API, `https://host:port`.
    pub server: String,
    /// Its HTTPS CA certificate.
    pub ca: PathBuf,
    /// How often counted denials are sent.
    #[serde(default = "default_report_interval", with = "hts")]
    pub interval: Duration,
}

fn default_report_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_refresh_before() -> Duration {
    Duration::from_secs(30)
}

/// How a route authenticates its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// No credential needed (and none is looked at).
    Public,
    /// A bearer JWT from one of the route's issuers.
    Jwt,
    /// An API key (`X-API-Key`).
    ApiKey,
    /// A client certificate chaining to `tls.client_ca`.
    Mtls,
}

impl Auth {
    pub fn label(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Jwt => "jwt",
            Self::ApiKey => "api_key",
            Self::Mtls => "mtls",
        }
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The authenticated subject (`sub`, key name, certificate identity).
    Subject,
    /// The OAuth client (`client_id`; the key name for API keys).
    Client,
    /// The API key's name.
    ApiKey,
    /// The client's address (X-Forwarded-For from trusted proxies only).
    Address,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per `per`.
    pub rate: u32,
    #[serde(default = "default_per", with = "hts")]
    pub per: Duration,
    /// Requests allowed at once (default: `rate`).
    pub burst: Option<u32>,
    pub key: LimitKey,
    /// Shared by every gateway through `[redis]` (falls back to the local
    /// limit when Redis is down).
    #[serde(default)]
    pub global: bool,
}

fn default_per() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Matched against the request's host (without port), lowercase.
    pub host: Option<String>,
    /// Matched on whole segments of the canonical path.
    pub path_prefix: String,
    /// Removed from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Allowed methods (default: GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE).
    pub methods: Option<Vec<String>>,
    pub auth: Auth,
    /// For `jwt`: which issuers (default: all).
    pub issuers: Option<Vec<String>>,
    pub upstream: SocketAddr,
    /// The SPIFFE ID the upstream must present (mutual TLS with the
    /// gateway's SVID). Without it the upstream is plain HTTP, which is
    /// allowed only on a loopback address.
    pub upstream_spiffe_id: Option<String>,
    /// Cedar text (edge schema) deciding each request; `policy_file` to read it from a file.
    pub policy: Option<String>,
    pub policy_file: Option<PathBuf>,
    pub rate_limit: Option<RateLimitConfig>,
    /// Exchange the user's token for an internal token for the upstream
    /// and send it on (default: on for `jwt` routes with an
    /// `upstream_spiffe_id` when `[exchange]` is set).
    pub internal_token: Option<bool>,
}

impl RouteConfig {
    /// Whether requests of this route carry an internal token upstream.
    pub fn sends_internal_token(&self, exchange: bool) -> bool {
        self.internal_token
            .unwrap_or(exchange && self.auth == Auth::Jwt && self.upstream_spiffe_id.is_some())
    }
}

impl GatewayConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: GatewayConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn check(&mut self) -> Result<(), String> {
        if self.routes.is_empty() {
            return Err("no [[route]]: the gateway would refuse everything".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for i in &self.issuers {
            if !names.insert(i.name.clone()) {
                return Err(format!("two [[issuer]] are named {:?}", i.name));
            }
            i.check().map_err(|e| format!("[[issuer]]: {e}"))?;
        }
        let mut keys = std::collections::BTreeSet::new();
        for k in &mut self.api_keys {
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "[[api_key]] {}: sha256 must be 64 hex digits (the SHA-256 of the key)",
                    k.name
                ));
            }
            k.sha256.make_ascii_lowercase();
            if !keys.insert(k.sha256.clone()) {
                return Err(format!("[[api_key]] {}: the same key twice", k.name));
            }
        }
        if let Some(x) = &self.exchange {
            if !x.token_endpoint.starts_with("https://") {
                return Err("[exchange] token_endpoint must be an https:// URL".into());
            }
            if self.identity.is_none() {
                return Err(
                    "[exchange] needs [identity]: the gateway authenticates with its SVID".into(),
                );
            }
        }
        if self.report.is_some() && self.identity.is_none() {
            return Err("[report] needs [identity]: the gateway reports with its SVID".into());
        }
        if let Some(c) = &self.cors {
            if c.allow_credentials && c.allowed_origins.iter().any(|o| o == "*") {
                return Err("[cors]: allowed_origins \"*\" with allow_credentials is refused (any site could call with the user's cookies)".into());
            }
        }
        let mut route_names = std::collections::BTreeSet::new();
        for r in &mut self.routes {
            let at = format!("[[route]] {}", r.name);
            if !route_names.insert(r.name.clone()) {
                return Err(format!("{at}: two routes have this name"));
            }
            let canonical = ward_dataplane::path::canonical_path(&r.path_prefix)
                .map_err(|e| format!("{at}: path_prefix {:?}: {e}", r.path_prefix))?;
            if canonical != r.path_prefix.trim_end_matches('/') && canonical != r.path_prefix {
                return Err(format!(
                    "{at}: path_prefix {:?} is not canonical (use {canonical:?})",
                    r.path_prefix
                ));
            }
            if let Some(h) = &mut r.host {
                *h = h.to_ascii_lowercase();
            }
            if let Some(ms) = &r.methods {
                for m in ms {
                    if !ward_policy::edge::METHODS.contains(&m.as_str()) {
                        return Err(format!(
                            "{at}: method {m:?} is not one of {:?}",
                            ward_policy::edge::METHODS
                        ));
                    }
                }
            }
            match (r.auth, &r.issuers) {
                (Auth::Jwt, _) if self.issuers.is_empty() => {
                    return Err(format!("{at}: auth = \"jwt\" needs an [[issuer]]"));
                }
                (Auth::Jwt, Some(list)) => {
                    for n in list {
                        if !self.issuers.iter().any(|i| &i.name == n) {
                            return Err(format!("{at}: no [[issuer]] named {n:?}"));
                        }
                    }
                }
                (_, Some(_)) => return Err(format!("{at}: issuers only with auth = \"jwt\"")),
                _ => {}
            }
            if r.auth == Auth::ApiKey && self.api_keys.is_empty() {
                return Err(format!("{at}: auth = \"api_key\" needs an [[api_key]]"));
            }
            if r.auth == Auth::Mtls && self.tls.client_ca.is_none() {
                return Err(format!("{at}: auth = \"mtls\" needs tls.client_ca"));
            }
            match &r.upstream_spiffe_id {
                Some(id) => {
                    ward_identity::SpiffeId::parse(id)
                        .map_err(|e| format!("{at}: upstream_spiffe_id {id:?}: {e}"))?;
                    if self.identity.is_none() {
                        return Err(format!(
                            "{at}: upstream_spiffe_id needs [identity] (the gateway's SVID)"
                        ));
                    }
                }
                None if !r.upstream.ip().is_loopback() => {
                    return Err(format!(
                        "{at}: upstream {} is not loopback: set upstream_spiffe_id so it is reached over mutual TLS",
                        r.upstream
                    ));
                }
                None => {}
            }
            if r.internal_token == Some(true)
                && (self.exchange.is_none()
                    || r.auth != Auth::Jwt
                    || r.upstream_spiffe_id.is_none())
            {
                return Err(format!(
                    "{at}: internal_token needs [exchange], auth = \"jwt\" and upstream_spiffe_id"
                ));
            }
            if r.policy.is_some() && r.policy_file.is_some() {
                return Err(format!("{at}: set policy or policy_file, not both"));
            }
            if let Some(file) = r.policy_file.take() {
                r.policy = Some(
                    std::fs::read_to_string(&file)
                        .map_err(|e| format!("{at}: policy_file {}: {e}", file.display()))?,
                );
            }
            if let Some(p) = &r.policy {
                ward_policy::edge::RoutePolicy::new(p).map_err(|e| format!("{at}: {e}"))?;
            }
            if let Some(l) = &r.rate_limit {
                if l.rate == 0 || l.per.is_zero() || l.burst == Some(0) {
                    return Err(format!(
                        "{at}: rate_limit: rate, per and burst must be above zero"
                    ));
                }
                if l.global && self.redis.is_none() {
                    return Err(format!("{at}: rate_limit.global needs [redis]"));
                }
                if l.key == LimitKey::ApiKey && r.auth != Auth::ApiKey {
                    return Err(format!(
                        "{at}: rate_limit.key = \"api_key\" only with auth = \"api_key\""
                    ));
                }
                if r.auth == Auth::Public && l.key != LimitKey::Address {
                    return Err(format!(
                        "{at}: a public route has no subject: use rate_limit.key = \"address\""
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
listen = "127.0.0.1:0"
[tls]
cert = "c.pem"
key = "k.pem"
[[route]]
name = "open"
path_prefix = "/public"
auth = "public"
upstream = "127.0.0.1:9"
"#;

    fn parse(t: &str) -> Result<GatewayConfig, String> {
        GatewayConfig::parse(t, Path::new("gateway.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_config_parses_and_mistakes_are_named() {
        parse(MIN).unwrap();
        let e = parse(&MIN.replace("auth = \"public\"", "")).unwrap_err();
        assert!(e.contains("auth"), "{e}");
        let e = parse(&MIN.replace("\"public\"", "\"jwt\"")).unwrap_err();
        assert!(e.contains("needs an [[issuer]]"), "{e}");
        let e = parse(&MIN.replace("127.0.0.1:9", "10.1.2.3:9")).unwrap_err();
        assert!(e.contains("mutual TLS"), "{e}");
        let e = parse(&MIN.replace("/public", "/a/../b")).unwrap_err();
        assert!(e.contains("path_prefix"), "{e}");
        let e = parse(&format!("{MIN}\nbogus = 1")).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse(&MIN.replace(
            "upstream = \"127.0.0.1:9\"",
            "upstream = \"127.0.0.1:9\"\npolicy = \"permit(principal, action, resource) when { principal.nope };\"",
        ))
        .unwrap_err();
        assert!(e.contains("schema"), "{e}");
        let e = parse(&MIN.replace(
            "upstream = \"127.0.0.1:9\"",
            "upstream = \"127.0.0.1:9\"\nrate_limit = { rate = 5, key = \"subject\" }",
        ))
        .unwrap_err();
        assert!(e.contains("address"), "{e}");
    }

    #[test]
    fn hmac_issuers_and_open_audiences_are_refused() {
        let with_issuer = |alg: &str, aud: &str| {
            format!(
                "{}\n[[issuer]]\nname = \"w\"\nissuer = \"https://w\"\nca = \"ca.pem\"\nalgorithms = [\"{alg}\"]\naudiences = [{aud}]\n",
                MIN.replace("[[route]]", "[[rt]]")
            )
            .replace("[[rt]]", "[[route]]")
        };
        // TOML: the [[issuer]] table comes after the route, which is fine.
        let e = parse(&with_issuer("HS256", "\"api\"")).unwrap_err();
        assert!(e.contains("HS256"), "{e}");
        let e = parse(&with_issuer("ES256", "")).unwrap_err();
        assert!(e.contains("audiences"), "{e}");
        parse(&with_issuer("EdDSA", "\"api\"")).unwrap();
    }

    #[test]
    fn network_lists_match_mapped_addresses() {
        let n = NetworkConfig {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            allow: vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            deny: vec!["127.0.0.9/32".parse().unwrap()],
        };
        assert!(n.admits("127.0.0.1".parse().unwrap()));
        assert!(n.admits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!n.admits("127.0.0.9".parse().unwrap()));
        assert!(!n.admits("192.168.1.1".parse().unwrap()));
        assert!(n.is_trusted_proxy("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!n.is_trusted_proxy("127.0.0.1".parse().unwrap()));
    }
}
