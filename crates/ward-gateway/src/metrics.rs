//! Every decision of the gateway, counted: requests by route, decision
//! and status class with their latency; denials by route and reason;
//! requests refused before routing; rate-limit fallbacks and whether the
//! shared store answers. Labels are bounded: route names come from the
//! configuration ("none" when no route matched), reasons are constants.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    decision: &'static str,
    status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    route: Arc<str>,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

/// Denials by (route, reason, client address) since the last report.
type DenialCounts = std::collections::HashMap<(Arc<str>, &'static str, String), u64>;

/// Distinct (route, reason, client) kept per report window; past it new
/// clients are counted as `other`.
const MAX_DENIAL_KEYS: usize = 1000;

pub struct Metrics {
    registry: Registry,
    /// What goes to the audit chain (see [`Metrics::drain_denials`]).
    pending: std::sync::Mutex<(i64, DenialCounts)>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    denials: Family<DenialLabels, Counter>,
    fallback: Family<RouteLabels, Counter>,
    pub connections: Gauge<i64, AtomicI64>,
    pub svid_expiry: Gauge,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ward_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let denials = Family::<DenialLabels, Counter>::default();
        let fallback = Family::<RouteLabels, Counter>::default();
        let connections = Gauge::<i64, AtomicI64>::default();
        let svid_expiry = Gauge::default();
        registry.register(
            "requests",
            "Requests by route, decision (allow, deny) and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route",
            latency.clone(),
        );
        registry.register(
            "denials",
            "Requests refused, by route (\"none\" before routing) and reason",
            denials.clone(),
        );
        registry.register(
            "ratelimit_fallback",
            "Rate-limit checks decided locally because the shared store did not answer",
            fallback.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open",
            connections.clone(),
        );
        registry.register(
            "svid_expiry_seconds",
            "Unix time when the gateway's SVID expires (0: none)",
            svid_expiry.clone(),
        );
        Self {
            registry,
            pending: std::sync::Mutex::new((now_secs(), DenialCounts::new())),
            requests,
            latency,
            denials,
            fallback,
            connections,
            svid_expiry,
        }
    }

    pub fn request(&self, route: &Arc<str>, decision: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                decision,
                status_class: ward_dataplane::telemetry::status_class(status),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn denial(&self, route: &Arc<str>, reason: &'static str, client: std::net::IpAddr) {
        self.denials
            .get_or_create(&DenialLabels {
                route: route.clone(),
                reason,
            })
            .inc();
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (route.clone(), reason, client.to_string());
        if p.1.len() >= MAX_DENIAL_KEYS && !p.1.contains_key(&key) {
            key.2 = "other".into();
        }
        *p.1.entry(key).or_insert(0) += 1;
    }

    /// The denials counted since the last call, for the audit chain.
    pub fn drain_denials(&self) -> Vec<ward_api::DenialReport> {
        let now = now_secs();
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let start = std::mem::replace(&mut p.0, now);
        std::mem::take(&mut p.1)
            .into_iter()
            .map(|((route, reason, client), count)| ward_api::DenialReport {
                route: route.to_string(),
                reason: reason.to_owned(),
                client,
                count,
                window_start: start,
                window_end: now,
            })
            .collect()
    }

    pub fn ratelimit_fallback(&self, route: &str) {
        self.fallback
            .get_or_create(&RouteLabels {
                route: route.into(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
