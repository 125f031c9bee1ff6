//! Counting every decision and call per edge (source ID, destination ID,
//! method, route, status class, decision): Prometheus counters and latency
//! histograms on `/metrics`, and deltas batched to the server. Label sets
//! are bounded: routes are cut to their first segment, methods to the
//! known ones, and past `max_edges` distinct edges new ones are counted as
//! source "other", route "other".

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use ward_api::EdgeReport;

/// One edge of the call graph, as a label set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Edge {
    pub source: String,
    pub destination: String,
    pub method: String,
    pub route: String,
    pub status_class: String,
    pub decision: String,
}

/// Calls made through an outbound listener.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Upstream {
    pub listener: String,
    pub status_class: String,
}

const KNOWN_METHODS: [&str; 10] = [
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "connect",
];

/// The method as a bounded label.
pub fn method_label(method: &str) -> &str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
}

/// "2xx".."5xx" for a status code.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[derive(Default, Clone, Copy)]
struct Pending {
    requests: i64,
    latency_us: i64,
}

pub struct Telemetry {
    registry: Registry,
    requests: Family<Edge, Counter>,
    latency: Family<Edge, Histogram, fn() -> Histogram>,
    upstream: Family<Upstream, Counter>,
    upstream_latency: Family<Upstream, Histogram, fn() -> Histogram>,
    pub policy_version: Gauge,
    pub svid_expiry: Gauge,
    pub connections: Gauge<i64, AtomicI64>,
    max_edges: usize,
    known: Mutex<HashSet<Edge>>,
    pending: Mutex<(i64, HashMap<Edge, Pending>)>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 16,
    ))
}

impl Telemetry {
    pub fn new(max_edges: usize) -> Self {
        let mut registry = Registry::with_prefix("ward_proxy");
        let requests = Family::<Edge, Counter>::default();
        let latency =
            Family::<Edge, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let upstream = Family::<Upstream, Counter>::default();
        let upstream_latency =
            Family::<Upstream, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let policy_version = Gauge::default();
        let svid_expiry = Gauge::default();
        let connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "inbound_requests",
            "Inbound requests and TCP connections by edge and decision",
            requests.clone(),
        );
        registry.register(
            "inbound_request_duration_seconds",
            "Time from request to response headers from the app (or to the decision when denied)",
            latency.clone(),
        );
        registry.register(
            "outbound_requests",
            "Requests sent through outbound listeners",
            upstream.clone(),
        );
        registry.register(
            "outbound_request_duration_seconds",
            "Time from request to response headers from the upstream",
            upstream_latency.clone(),
        );
        registry.register(
            "policy_version",
            "Version of the policy in force (0: none)",
            policy_version.clone(),
        );
        registry.register(
            "svid_expiry_seconds",
            "Unix time when the proxy's SVID expires",
            svid_expiry.clone(),
        );
        registry.register(
            "open_connections",
            "Connections open on all listeners",
            connections.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            upstream,
            upstream_latency,
            policy_version,
            svid_expiry,
            connections,
            max_edges,
            known: Mutex::new(HashSet::new()),
            pending: Mutex::new((now_secs(), HashMap::new())),
        }
    }

    /// Counts one inbound request or connection.
    pub fn record(&self, edge: Edge, latency: Duration) {
        let edge = self.bound(edge);
        self.requests.get_or_create(&edge).inc();
        self.latency
            .get_or_create(&edge)
            .observe(latency.as_secs_f64());
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let p = pending.1.entry(edge).or_default();
        p.requests += 1;
        p.latency_us += latency.as_micros() as i64;
    }

    /// Counts one request through an outbound listener.
    pub fn record_upstream(&self, listener: &str, status_class: &str, latency: Duration) {
        let labels = Upstream {
            listener: listener.to_string(),
            status_class: status_class.to_string(),
        };
        self.upstream.get_or_create(&labels).inc();
        self.upstream_latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
    }

    fn bound(&self, edge: Edge) -> Edge {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(&edge) {
            return edge;
        }
        if known.len() < self.max_edges {
            known.insert(edge.clone());
            return edge;
        }
        Edge {
            source: "other".into(),
            route: "other".into(),
            ..edge
        }
    }

    /// Takes the counts gathered since the last call, as reports.
    pub fn drain(&self) -> Vec<EdgeReport> {
        let now = now_secs();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let start = std::mem::replace(&mut pending.0, now);
        pending
            .1
            .drain()
            .map(|(e, p)| EdgeReport {
                source: e.source,
                destination: e.destination,
                method: e.method,
                route: e.route,
                status_class: e.status_class,
                decision: e.decision,
                requests: p.requests,
                latency_us_sum: p.latency_us,
                window_start: start,
                window_end: now,
            })
            .collect()
    }

    /// Puts back reports that could not be sent (bounded: beyond
    /// `max_edges` pending edges, the oldest counts are dropped).
    pub fn restore(&self, reports: Vec<EdgeReport>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for r in reports {
            if pending.1.len() >= self.max_edges {
                break;
            }
            let edge = Edge {
                source: r.source,
                destination: r.destination,
                method: r.method,
                route: r.route,
                status_class: r.status_class,
                decision: r.decision,
            };
            let p = pending.1.entry(edge).or_default();
            p.requests += r.requests;
            p.latency_us += r.latency_us_sum;
            pending.0 = pending.0.min(r.window_start);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(source: &str, route: &str) -> Edge {
        Edge {
            source: source.into(),
            destination: "spiffe://td/b".into(),
            method: "GET".into(),
            route: route.into(),
            status_class: "2xx".into(),
            decision: "allow".into(),
        }
    }

    #[test]
    fn counts_are_exposed_and_drained_once() {
        let t = Telemetry::new(10);
        t.record(edge("spiffe://td/a", "/x"), Duration::from_micros(300));
        t.record(edge("spiffe://td/a", "/x"), Duration::from_micros(100));
        let text = t.encode();
        assert!(
            text.contains("ward_proxy_inbound_requests_total{source=\"spiffe://td/a\""),
            "{text}"
        );
        let reports = t.drain();
        assert_eq!(reports.len(), 1);
        assert_eq!((reports[0].requests, reports[0].latency_us_sum), (2, 400));
        assert!(t.drain().is_empty());
        t.restore(reports);
        assert_eq!(t.drain()[0].requests, 2);
    }

    #[test]
    fn label_sets_are_bounded() {
        let t = Telemetry::new(3);
        for i in 0..100 {
            t.record(
                edge(&format!("spiffe://td/s{i}"), &format!("/r{i}")),
                Duration::ZERO,
            );
        }
        let reports = t.drain();
        assert_eq!(reports.len(), 4, "3 distinct edges and one 'other'");
        let other = reports.iter().find(|r| r.source == "other").unwrap();
        assert_eq!(other.requests, 97);
        assert_eq!(method_label("PROPFIND"), "OTHER");
    }
}
