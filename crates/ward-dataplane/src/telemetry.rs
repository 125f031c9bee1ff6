//! Counting every decision and call per edge (source ID, destination ID,
//! method, route, status class, decision): Prometheus counters and latency
//! histograms on `/metrics`, and deltas batched to the server; denials by
//! reason and deciding policy; requests refused as malformed. Label sets
//! are bounded: routes are cut to their first segment, methods to the
//! known ones, past `max_edges` distinct edges new ones are counted as
//! source "other", route "other", and past `MAX_POLICY_LABELS` policy IDs
//! as policy "other".
//!
//! Every inbound request or connection gets one [`CallRecord`], which
//! records itself exactly once when dropped — on every exit, including a
//! caller that goes away mid-request (status "cancelled").

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    pub source: Arc<str>,
    pub destination: Arc<str>,
    pub method: &'static str,
    pub route: Arc<str>,
    pub status_class: &'static str,
    pub decision: &'static str,
}

/// A denial, by reason and deciding policy ("" when no permit matched).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub reason: &'static str,
    pub policy: Arc<str>,
}

/// A request refused before authorization (malformed, ambiguous).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub reason: &'static str,
}

/// Distinct policy IDs counted on `/metrics` before the rest are "other".
const MAX_POLICY_LABELS: usize = 200;

/// Calls made through an outbound listener.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Upstream {
    pub listener: Arc<str>,
    pub status_class: &'static str,
}

const KNOWN_METHODS: [&str; 10] = [
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "connect",
];

/// The method as a bounded label.
pub fn method_label(method: &str) -> &'static str {
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
    denials: Family<DenialLabels, Counter>,
    rejections: Family<RejectionLabels, Counter>,
    policy_labels: Mutex<HashSet<Arc<str>>>,
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
    /// Metrics named `<prefix>_…` (`ward_proxy`, `ward_gateway`).
    pub fn new(prefix: &str, max_edges: usize) -> Self {
        let mut registry = Registry::with_prefix(prefix);
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
        let denials = Family::<DenialLabels, Counter>::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "denials",
            "Denied requests and connections by reason and deciding policy (\"\" when no permit matched)",
            denials.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests refused as malformed or ambiguous before authorization, by reason",
            rejections.clone(),
        );
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
            denials,
            rejections,
            policy_labels: Mutex::new(HashSet::new()),
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

    /// Counts one denial: once per deciding policy, or once with policy "".
    pub fn record_denial(&self, reason: &'static str, policies: &[String]) {
        if policies.is_empty() {
            self.denials
                .get_or_create(&DenialLabels {
                    reason,
                    policy: Arc::from(""),
                })
                .inc();
            return;
        }
        for p in policies {
            let policy = {
                let mut known = self.policy_labels.lock().unwrap_or_else(|p| p.into_inner());
                match known.get(p.as_str()) {
                    Some(k) => k.clone(),
                    None if known.len() < MAX_POLICY_LABELS => {
                        let k: Arc<str> = Arc::from(p.as_str());
                        known.insert(k.clone());
                        k
                    }
                    None => Arc::from("other"),
                }
            };
            self.denials
                .get_or_create(&DenialLabels { reason, policy })
                .inc();
        }
    }

    /// Counts one request refused before authorization.
    pub fn record_rejection(&self, reason: &'static str) {
        self.rejections
            .get_or_create(&RejectionLabels { reason })
            .inc();
    }

    /// Counts one request through an outbound listener.
    pub fn record_upstream(
        &self,
        listener: &Arc<str>,
        status_class: &'static str,
        latency: Duration,
    ) {
        let labels = Upstream {
            listener: listener.clone(),
            status_class,
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
            source: Arc::from("other"),
            route: Arc::from("other"),
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
                source: e.source.to_string(),
                destination: e.destination.to_string(),
                method: e.method.to_string(),
                route: e.route.to_string(),
                status_class: e.status_class.to_string(),
                decision: e.decision.to_string(),
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
                source: Arc::from(r.source),
                destination: Arc::from(r.destination),
                method: method_label(&r.method),
                route: Arc::from(r.route),
                status_class: static_label(&r.status_class, &STATUS_LABELS),
                decision: static_label(&r.decision, &["allow", "deny"]),
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

const STATUS_LABELS: [&str; 9] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "ok",
    "error",
    "none",
    "cancelled",
];

/// A label read back from a report, as one of the known static values.
fn static_label(value: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|k| **k == value)
        .copied()
        .unwrap_or("other")
}

/// One inbound request or connection, recorded exactly once on drop.
/// Fields are filled in as the call proceeds; whatever exit the call
/// takes (answer, denial, malformed request, caller gone), the drop
/// records what was known by then.
pub struct CallRecord {
    telemetry: Arc<Telemetry>,
    started: Instant,
    /// What is known so far: route "invalid" until a route is set, status
    /// "cancelled" and decision "deny" until an outcome is.
    pub edge: Edge,
}

impl CallRecord {
    /// Starts the record of a call from `source` to `destination`.
    pub fn start(
        telemetry: Arc<Telemetry>,
        source: Arc<str>,
        destination: Arc<str>,
        method: &'static str,
    ) -> Self {
        Self {
            telemetry,
            started: Instant::now(),
            edge: Edge {
                source,
                destination,
                method,
                route: invalid_route(),
                status_class: "cancelled",
                decision: "deny",
            },
        }
    }

    /// Sets the outcome: status class and decision.
    pub fn outcome(&mut self, status_class: &'static str, decision: &'static str) {
        self.edge.status_class = status_class;
        self.edge.decision = decision;
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.telemetry
            .record(self.edge.clone(), self.started.elapsed());
    }
}

/// The route label of a request whose path was never read as valid, shared
/// so that starting a record allocates nothing.
fn invalid_route() -> Arc<str> {
    static INVALID: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    INVALID.get_or_init(|| Arc::from("invalid")).clone()
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
            method: "GET",
            route: route.into(),
            status_class: "2xx",
            decision: "allow",
        }
    }

    #[test]
    fn counts_are_exposed_and_drained_once() {
        let t = Telemetry::new("ward_proxy", 10);
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
        let t = Telemetry::new("ward_proxy", 3);
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

    #[test]
    fn a_call_record_counts_once_even_when_cancelled() {
        let t = Arc::new(Telemetry::new("ward_proxy", 10));
        {
            let mut r = CallRecord::start(
                t.clone(),
                "spiffe://td/a".into(),
                "spiffe://td/b".into(),
                "GET",
            );
            r.edge.route = "/x".into();
        }
        let reports = t.drain();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            (reports[0].status_class.as_str(), reports[0].requests),
            ("cancelled", 1)
        );
    }

    #[test]
    fn denials_name_their_policy_within_bounds() {
        let t = Telemetry::new("ward_proxy", 10);
        t.record_denial("policy", &["no-admin".to_string()]);
        t.record_denial("no_policy", &[]);
        for i in 0..(MAX_POLICY_LABELS + 50) {
            t.record_denial("policy", &[format!("p{i}")]);
        }
        let text = t.encode();
        assert!(
            text.contains("ward_proxy_denials_total{reason=\"policy\",policy=\"no-admin\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ward_proxy_denials_total{reason=\"no_policy\",policy=\"\"} 1"),
            "{text}"
        );
        assert!(text.contains("policy=\"other\"} 51"), "{text}");
    }
}
