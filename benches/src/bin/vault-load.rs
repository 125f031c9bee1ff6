//! Load against the vault over HTTPS with a token, for `scripts/bench.sh
//! vault`. Two modes:
//!
//! - `closed`: CONNS requests in flight for SECONDS, each sent as soon as
//!   the previous one on its connection answered; prints requests/s and
//!   latency percentiles (the throughput figure).
//! - `open`: RATE requests/s for SECONDS whatever the answers (a request
//!   never waits for an earlier one), latency measured from the moment each
//!   is due; prints percentiles (the latency-at-a-rate figure).
//!
//! OP is `read PATH` (GET secret/data/PATH), `write` (POST a new secret
//! per request, each acknowledged durably), `encrypt KEY` (transit) or
//! `creds ROLE` (a dynamic database credential). Any non-2xx answer or
//! transport error is counted and printed: a pass with errors is not a
//! figure.
//!
//! Usage: vault-load closed|open ADDR TOKEN CACERT CONNS|RATE SECONDS OP [ARG]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Clone)]
enum Op {
    Read(String),
    Write,
    Encrypt(String),
    Creds(String),
}

struct Target {
    http: reqwest::Client,
    addr: String,
    token: String,
    op: Op,
    seq: AtomicU64,
}

impl Target {
    async fn once(&self) -> bool {
        let req = match &self.op {
            Op::Read(p) => self.http.get(format!("{}/v1/secret/data/{p}", self.addr)),
            Op::Write => {
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                self.http
                    .post(format!("{}/v1/secret/data/bench/w/{n}", self.addr))
                    .body(format!(
                        r#"{{"data":{{"password":"value-{n}","user":"bench"}}}}"#
                    ))
            }
            Op::Encrypt(k) => self
                .http
                .post(format!("{}/v1/transit/encrypt/{k}", self.addr))
                .body(r#"{"plaintext":"c2VjcmV0IGNhcmQgbnVtYmVyIDQxMTEtMTExMS0xMTExLTExMTE="}"#),
            Op::Creds(r) => self
                .http
                .get(format!("{}/v1/database/creds/{r}", self.addr)),
        };
        match req.header("X-Vault-Token", &self.token).send().await {
            Ok(r) => {
                let ok = r.status().is_success();
                let _ = r.bytes().await;
                ok
            }
            Err(_) => false,
        }
    }
}

fn percentiles(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(*v.last().unwrap_or(&Duration::ZERO))
    )
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 8 {
        eprintln!(
            "usage: vault-load closed|open ADDR TOKEN CACERT CONNS|RATE SECONDS read PATH|write|encrypt KEY|creds ROLE"
        );
        std::process::exit(2);
    }
    let (mode, addr, token, cacert) = (a[1].clone(), a[2].clone(), a[3].clone(), a[4].clone());
    let n: u64 = a[5].parse().unwrap_or(16);
    let secs: u64 = a[6].parse().unwrap_or(8);
    let arg = a.get(8).cloned().unwrap_or_default();
    let op = match a[7].as_str() {
        "read" => Op::Read(arg),
        "write" => Op::Write,
        "encrypt" => Op::Encrypt(arg),
        "creds" => Op::Creds(arg),
        other => {
            eprintln!("unknown op {other}");
            std::process::exit(2);
        }
    };
    let pem = std::fs::read(&cacert).unwrap_or_else(|e| panic!("{cacert}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let target = Arc::new(Target {
        http,
        addr,
        token,
        op,
        seq: AtomicU64::new(std::process::id() as u64 * 1_000_000_000),
    });
    rt.block_on(async move {
        let errors = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let mut tasks = tokio::task::JoinSet::new();
        if mode == "closed" {
            for _ in 0..n {
                let (t, errors) = (target.clone(), errors.clone());
                tasks.spawn(async move {
                    let mut lat = Vec::new();
                    while Instant::now() < end {
                        let s = Instant::now();
                        if !t.once().await {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        lat.push(s.elapsed());
                    }
                    lat
                });
            }
        } else {
            let interval = Duration::from_nanos(1_000_000_000 / n.max(1));
            for i in 0..n * secs {
                let due = start + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                let (t, errors) = (target.clone(), errors.clone());
                tasks.spawn(async move {
                    if !t.once().await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    vec![due.elapsed()]
                });
            }
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r.unwrap_or_default());
        }
        let took = start.elapsed().as_secs_f64();
        let count = all.len();
        println!(
            "{mode}: {count} requests in {took:.1} s = {:.0} req/s; {}; errors {}",
            count as f64 / took,
            percentiles(all),
            errors.load(Ordering::Relaxed)
        );
    });
}
