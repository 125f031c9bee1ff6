//! One Cedar decision with 1,000 policies (goal: p99 ≤ 20 µs): criterion
//! for the mean, then a direct run of 100,000 decisions for percentiles.
//! Two policy sets: one permit per service (the common shape, which the
//! per-caller subset makes cheap), and the same with every policy
//! scoped to `principal in Namespace` (the subset cannot shrink it).

use std::time::{Instant, SystemTime};

use criterion::{Criterion, criterion_group};
use ward_policy::{Call, Engine};

fn per_service(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "permit(principal == Ward::Service::\"spiffe://td/ns/n{}/sa/s{i}\", action in Ward::Action::\"read\", \
                 resource in Ward::Service::\"spiffe://td/ns/shop/sa/orders\") when {{ resource.path like \"/api/v{i}/*\" }};\n",
                i % 10
            )
        })
        .collect()
}

fn per_namespace(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "permit(principal in Ward::Namespace::\"spiffe://td/ns/n{}\", action in Ward::Action::\"read\", resource) \
                 when {{ resource.path like \"/api/v{i}/*\" }};\n",
                i % 10
            )
        })
        .collect()
}

const CALLER: &str = "spiffe://td/ns/n7/sa/s997";
const ORDERS: &str = "spiffe://td/ns/shop/sa/orders";

fn call(route: &str) -> Call<'_> {
    Call {
        caller: CALLER,
        destination: ORDERS,
        action: "GET",
        method: "GET",
        route,
        source: "10.1.2.3".parse().unwrap(),
        time: SystemTime::now(),
        protocol: "http/1.1",
        headers: &[
            ("content-type", "application/json"),
            ("user-agent", "bench"),
        ],
        token: None,
    }
}

fn decisions(c: &mut Criterion) {
    let service = Engine::new(&per_service(1000), Default::default()).unwrap();
    let namespace = Engine::new(&per_namespace(1000), Default::default()).unwrap();
    assert!(service.decide(&call("/api/v997/x")).allowed);
    assert!(namespace.decide(&call("/api/v997/x")).allowed);
    let mut g = c.benchmark_group("cedar_1000_policies");
    g.bench_function("per_service_allow", |b| {
        b.iter(|| service.decide(&call("/api/v997/x")))
    });
    g.bench_function("per_service_deny", |b| {
        b.iter(|| service.decide(&call("/admin")))
    });
    g.bench_function("per_service_unindexed", |b| {
        b.iter(|| service.decide_unindexed(&call("/api/v997/x")))
    });
    g.bench_function("per_namespace_allow", |b| {
        b.iter(|| namespace.decide(&call("/api/v997/x")))
    });
    g.finish();
}

fn percentiles() {
    let service = Engine::new(&per_service(1000), Default::default()).unwrap();
    let namespace = Engine::new(&per_namespace(1000), Default::default()).unwrap();
    for (name, engine) in [("per_service", &service), ("per_namespace", &namespace)] {
        let mut t = Vec::with_capacity(100_000);
        for i in 0..100_000 {
            let route = if i % 2 == 0 { "/api/v997/x" } else { "/admin" };
            let c = call(route);
            let s = Instant::now();
            std::hint::black_box(engine.decide(&c));
            t.push(s.elapsed());
        }
        t.sort();
        let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)].as_secs_f64() * 1e6;
        println!(
            "{name}, 1000 policies, 100000 decisions: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            p(0.5),
            p(0.99),
            p(1.0)
        );
    }
}

criterion_group!(benches, decisions);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    percentiles();
}
