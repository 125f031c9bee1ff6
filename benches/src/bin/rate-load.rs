//! Open-loop load at a fixed rate, for added-latency figures: sends GET
//! URL at RATE requests/s for SECONDS over keep-alive HTTP/1.1
//! connections (a request never waits for an earlier one) and prints
//! latency percentiles, each measured from the moment its request is sent
//! (the timer wakes up to 1 ms late, which would otherwise be counted).
//!
//! Usage: rate-load URL RATE SECONDS
//! HTTPS URLs trust the CA file in RATE_LOAD_CA; RATE_LOAD_HEADER
//! ("Name: value") is sent with every request. At most RATE_LOAD_CONNS
//! (default 64) requests are in flight, so at most that many connections
//! are opened (an open-loop client that opened one per late request would
//! measure TLS handshake storms, not the server); a request that waits for
//! a free connection counts the wait, from its scheduled send time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(rate), Some(secs)) = (
        args.get(1),
        args.get(2).and_then(|r| r.parse::<u64>().ok()),
        args.get(3).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: rate-load URL RATE SECONDS");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(url.parse().unwrap(), rate, secs));
}

async fn run(uri: hyper::Uri, rate: u64, secs: u64) {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(ca) = std::env::var("RATE_LOAD_CA") {
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_file_iter(&ca).expect("RATE_LOAD_CA") {
            roots
                .add(c.expect("a certificate"))
                .expect("a CA certificate");
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(connector);
    let header = std::env::var("RATE_LOAD_HEADER").ok().and_then(|h| {
        let (k, v) = h.split_once(':')?;
        Some((
            hyper::header::HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
            hyper::header::HeaderValue::from_str(v.trim()).ok()?,
        ))
    });
    let get = move |uri: hyper::Uri| {
        let mut req = hyper::Request::get(uri);
        if let Some((k, v)) = &header {
            req = req.header(k, v);
        }
        req.body(Empty::<Bytes>::new()).unwrap()
    };
    let total = rate * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(Mutex::new(0u64));
    // Warm the pool.
    for _ in 0..4 {
        if let Ok(r) = client.request(get(uri.clone())).await {
            let _ = r.into_body().collect().await;
        }
    }
    let conns: usize = std::env::var("RATE_LOAD_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(conns.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, uri, latencies, errors, get, permits) = (
            client.clone(),
            uri.clone(),
            latencies.clone(),
            errors.clone(),
            get.clone(),
            permits.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let _slot = permits.acquire().await;
            let ok = match client.request(get(uri)).await {
                Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
                Err(_) => false,
            };
            if ok {
                latencies.lock().unwrap().push(sent.elapsed());
            } else {
                *errors.lock().unwrap() += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let p = |q: f64| -> f64 {
        if l.is_empty() {
            return 0.0;
        }
        l[((l.len() as f64 * q) as usize).min(l.len() - 1)].as_secs_f64() * 1e6
    };
    println!(
        "requests={} errors={} p50_us={:.0} p90_us={:.0} p99_us={:.0} max_us={:.0}",
        l.len(),
        errors.lock().unwrap(),
        p(0.50),
        p(0.90),
        p(0.99),
        p(1.0)
    );
}
