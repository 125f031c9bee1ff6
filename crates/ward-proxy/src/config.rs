//! `proxy.toml`: where the proxy's identity comes from, what it listens on,
//! where the policy comes from, and its limits. Unknown keys are errors.
//!
//! ```toml
//! [identity]                      # one of:
//! workload_api = "/run/ward/agent.sock"
//! # svid = "svid.pem"; key = "key.pem"; bundle = "bundle.pem"   (re-read when changed)
//! [[identity.federation]]         # callers/upstreams of another trust domain (optional)
//! trust_domain = "partner.example"
//! bundle = "partner-bundle.pem"   # its own anchors (default: the Workload API's federated bundle)
//!
//! [http]
//! extension_methods = ["PROPFIND"]    # besides GET HEAD OPTIONS POST PUT PATCH DELETE TRACE
//!
//! [policy]                        # one of:
//! server = "https://127.0.0.1:8443"   # watch the server (mTLS with the proxy's SVID)
//! server_ca = "tls-ca.pem"            # the server API's CA certificate
//! # file = "policy.cedar"             # or a local file, re-read when changed
//! cache = "/var/lib/ward/proxy/policy.json"   # last good policy, used at start
//!
//! [admin]
//! listen = "127.0.0.1:9901"           # /healthz /readyz /metrics
//!
//! [[inbound]]
//! name = "http"
//! listen = "0.0.0.0:8443"
//! app = "127.0.0.1:8080"
//! protocol = "http"                   # or "tcp"
//!
//! [[outbound]]
//! name = "payments"
//! listen = "127.0.0.1:15001"
//! upstream = "10.0.0.7:8443"
//! spiffe_ids = ["spiffe://example.org/ns/shop/sa/payments"]
//! protocol = "http"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ward_identity::SpiffeId;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub identity: IdentityConfig,
    pub policy: PolicyConfig,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub inbound: Vec<InboundConfig>,
    #[serde(default)]
    pub outbound: Vec<OutboundConfig>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub http: HttpConfig,
    /// Reporting of call edges to the server (needs `policy.server`).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Internal tokens (from the gateway, for the user behind a call): the
    /// issuer that signs them, with this service's SPIFFE ID as audience.
    /// A request that carries one has it checked, and its claims are
    /// `context.token` in Cedar; without this section they are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<ward_oidc::Settings>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The agent's Workload API socket (path, or `unix:` URI).
    pub workload_api: Option<String>,
    /// Which SVID to use when the Workload API offers several (default: the first).
    pub spiffe_id: Option<String>,
    /// PEM files: the SVID chain (leaf first), its key, and the trust bundle.
    pub svid: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub bundle: Option<PathBuf>,
    /// Other trust domains whose workloads are accepted, each with its own bundle.
    #[serde(default)]
    pub federation: Vec<FederationConfig>,
}

/// A federated trust domain.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    pub trust_domain: String,
    /// Its CA certificates (PEM); without it, the Workload API's bundle for it.
    pub bundle: Option<PathBuf>,
}

/// What an HTTP listener accepts beyond the standard.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Extension methods (uppercase tokens) that reach Cedar as the
    /// `EXTENSION` action with `context.method`; any other non-standard
    /// method is answered 501.
    #[serde(default)]
    pub extension_methods: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The server's API address, `https://host:port`.
    pub server: Option<String>,
    /// The CA certificate of the server's API.
    pub server_ca: Option<PathBuf>,
    /// A local Cedar file instead of the server.
    pub file: Option<PathBuf>,
    /// Where the last good policy is kept across restarts.
    pub cache: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Tcp,
}

/// How the inbound side talks to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// gRPC (HTTP/2 with `content-type: application/grpc…`) as h2c,
    /// everything else as HTTP/1.1.
    #[default]
    Auto,
    Http1,
    Http2,
}

impl From<AppProtocol> for ward_dataplane::forward::AppProtocol {
    fn from(p: AppProtocol) -> Self {
        match p {
            AppProtocol::Auto => Self::Auto,
            AppProtocol::Http1 => Self::Http1,
            AppProtocol::Http2 => Self::Http2,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub app: SocketAddr,
    pub protocol: Protocol,
    #[serde(default)]
    pub app_protocol: AppProtocol,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    /// The upstream must present one of these SPIFFE IDs.
    pub spiffe_ids: Vec<String>,
    pub protocol: Protocol,
}

/// Limits and timeouts (humantime durations, such as "10s").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers), bytes.
    pub max_header_bytes: usize,
    #[serde(with = "humantime_serde_compat")]
    pub handshake_timeout: Duration,
    /// How long a request head may take to arrive.
    #[serde(with = "humantime_serde_compat")]
    pub header_timeout: Duration,
    /// How long the app or upstream may take to answer with headers.
    #[serde(with = "humantime_serde_compat")]
    pub response_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this.
    #[serde(with = "humantime_serde_compat")]
    pub pool_idle_timeout: Duration,
    /// On SIGTERM, how long open connections may finish.
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
    /// Most connections served at once per listener.
    pub max_connections: usize,
    /// Most TLS handshakes in progress at once per listener (apart from
    /// the connection cap, so slow handshakes cannot starve callers).
    pub max_handshakes: usize,
    /// A declared request body (Content-Length) above this is refused
    /// with 413 before it is read.
    pub max_body_bytes: u64,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval (and how long a ping may go unanswered).
    #[serde(with = "humantime_serde_compat")]
    pub keepalive_interval: Duration,
    /// A connection with no request in flight is closed after this.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            drain_timeout: Duration::from_secs(15),
            max_connections: 10_000,
            max_handshakes: 256,
            max_body_bytes: 16 << 20,
            max_concurrent_streams: 100,
            keepalive_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// How often counts are sent to the server.
    #[serde(with = "humantime_serde_compat")]
    pub report_interval: Duration,
    /// Distinct edges counted before new ones are folded into "other".
    pub max_edges: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            report_interval: Duration::from_secs(5),
            max_edges: 1000,
        }
    }
}

/// Durations as humantime strings ("10s", "1m 30s").
pub mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration such as \"10s\": {e}"))
        })
    }
}

impl ProxyConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: ProxyConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(t) = &self.token {
            t.check().map_err(|e| format!("[token]: {e}"))?;
        }
        let id = &self.identity;
        match (&id.workload_api, &id.svid, &id.key, &id.bundle) {
            (Some(_), None, None, None) | (None, Some(_), Some(_), Some(_)) => {}
            _ => {
                return Err(
                    "[identity]: set either `workload_api`, or all of `svid`, `key` and `bundle`"
                        .into(),
                );
            }
        }
        if let Some(s) = &id.spiffe_id {
            if id.workload_api.is_none() {
                return Err("[identity] spiffe_id: only with `workload_api`".into());
            }
            SpiffeId::parse(s).map_err(|e| format!("[identity] spiffe_id {s:?}: {e}"))?;
        }
        let p = &self.policy;
        match (&p.server, &p.file) {
            (Some(s), None) => {
                if !s.starts_with("https://") {
                    return Err(format!("[policy] server {s:?}: must be an https:// URL"));
                }
                if p.server_ca.is_none() {
                    return Err("[policy]: `server_ca` (the server API's CA certificate) is required with `server`".into());
                }
            }
            (None, Some(_)) => {}
            _ => return Err("[policy]: set either `server` (with `server_ca`) or `file`".into()),
        }
        if self.inbound.is_empty() && self.outbound.is_empty() {
            return Err(
                "no [[inbound]] or [[outbound]] listener: the proxy would do nothing".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        for (name, listen) in self
            .inbound
            .iter()
            .map(|l| (l.name.as_str(), l.listen))
            .chain(self.outbound.iter().map(|l| (l.name.as_str(), l.listen)))
            .chain(self.admin.iter().map(|a| ("admin", a.listen)))
        {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "listener name {name:?}: use letters, digits, - _ ."
                ));
            }
            if !names.insert(name) {
                return Err(format!("two listeners are named {name:?}"));
            }
            if listen.port() != 0 && !addrs.insert(listen) {
                return Err(format!("two listeners listen on {listen}"));
            }
        }
        for o in &self.outbound {
            if o.spiffe_ids.is_empty() {
                return Err(format!(
                    "[[outbound]] {:?}: `spiffe_ids` must name the upstream's SPIFFE ID(s)",
                    o.name
                ));
            }
            for s in &o.spiffe_ids {
                SpiffeId::parse(s)
                    .map_err(|e| format!("[[outbound]] {:?}: spiffe_ids {s:?}: {e}", o.name))?;
            }
        }
        if self.limits.max_header_bytes < 8192 {
            return Err("[limits] max_header_bytes: at least 8192".into());
        }
        if self.limits.max_connections == 0 {
            return Err("[limits] max_connections: at least 1".into());
        }
        if self.limits.max_handshakes == 0 {
            return Err("[limits] max_handshakes: at least 1".into());
        }
        if self.limits.max_concurrent_streams == 0 {
            return Err("[limits] max_concurrent_streams: at least 1".into());
        }
        for (key, d) in [
            ("keepalive_interval", self.limits.keepalive_interval),
            ("idle_timeout", self.limits.idle_timeout),
        ] {
            if d < Duration::from_secs(1) {
                return Err(format!("[limits] {key}: at least 1s"));
            }
        }
        ward_dataplane::authz::Methods::new(self.http.extension_methods.clone())
            .map_err(|e| format!("[http] {e}"))?;
        let mut federated = std::collections::HashSet::new();
        for f in &id.federation {
            let td = ward_identity::TrustDomain::parse(&f.trust_domain).map_err(|e| {
                format!(
                    "[[identity.federation]] trust_domain {:?}: {e}",
                    f.trust_domain
                )
            })?;
            if !federated.insert(td) {
                return Err(format!(
                    "[[identity.federation]]: {:?} is named twice",
                    f.trust_domain
                ));
            }
            if f.bundle.is_none() && id.workload_api.is_none() {
                return Err(format!(
                    "[[identity.federation]] {:?}: `bundle` is required unless the identity comes from `workload_api`",
                    f.trust_domain
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [identity]
        svid = "s.pem"
        key = "k.pem"
        bundle = "b.pem"
        [policy]
        file = "p.cedar"
        [admin]
        listen = "127.0.0.1:0"
        [[inbound]]
        name = "http"
        listen = "127.0.0.1:0"
        app = "127.0.0.1:8080"
        protocol = "http"
        [[outbound]]
        name = "pay"
        listen = "127.0.0.1:0"
        upstream = "127.0.0.1:9000"
        spiffe_ids = ["spiffe://td/pay"]
        protocol = "tcp"
        [limits]
        response_timeout = "2s"
    "#;

    fn parse(text: &str) -> Result<ProxyConfig, String> {
        ProxyConfig::parse(text, Path::new("proxy.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.limits.response_timeout, Duration::from_secs(2));
        assert_eq!(c.outbound[0].protocol, Protocol::Tcp);
        assert_eq!(c.inbound[0].app_protocol, AppProtocol::Auto);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                GOOD.replace("protocol = \"http\"", "protocol = \"udp\""),
                "udp",
            ),
            (GOOD.replace("[limits]", "[limits]\nbogus = 1"), "bogus"),
            (GOOD.replace("\"2s\"", "\"soon\""), "soon"),
            (GOOD.replace("spiffe://td/pay", "https://pay"), "spiffe_ids"),
            (GOOD.replace("key = \"k.pem\"", ""), "[identity]"),
            (
                GOOD.replace("file = \"p.cedar\"", "server = \"https://x\""),
                "server_ca",
            ),
            (
                GOOD.replace("name = \"pay\"", "name = \"http\""),
                "two listeners",
            ),
            (GOOD.replace("127.0.0.1:8080", "localhost"), "app"),
            (
                format!("{GOOD}\n[http]\nextension_methods = [\"propfind\"]\n"),
                "propfind",
            ),
            (
                GOOD.replace(
                    "bundle = \"b.pem\"",
                    "bundle = \"b.pem\"\n[[identity.federation]]\ntrust_domain = \"Bad Domain\"\nbundle = \"p.pem\"",
                ),
                "trust_domain",
            ),
            (
                GOOD.replace(
                    "bundle = \"b.pem\"",
                    "bundle = \"b.pem\"\n[[identity.federation]]\ntrust_domain = \"partner.test\"",
                ),
                "`bundle` is required",
            ),
            (
                GOOD.replace("[limits]", "[limits]\nidle_timeout = \"10ms\""),
                "idle_timeout",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
            assert!(err.starts_with("proxy.toml"), "{err}");
        }
    }
}
