//! FetchX509SVID latency through the Workload API socket for a cached SVID:
//! one connection, N sequential one-shot fetches (read the first message,
//! drop the stream), as py-spiffe's `fetch_x509_svid` does.
//!
//! Usage: agent-fetch SOCKET [N]; prints `p50_us p90_us p99_us max_us n`.

use std::time::Instant;

use ward_agent::client::{connect, fetch_x509_once};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(socket) = args.next() else {
        eprintln!("usage: agent-fetch SOCKET [N]");
        std::process::exit(2);
    };
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut client = match connect(std::path::Path::new(&socket)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 200 {
        let start = Instant::now();
        let first = fetch_x509_once(&mut client).await;
        match first {
            Ok(Some(resp)) if !resp.svids.is_empty() => {}
            other => {
                eprintln!("fetch failed: {other:?}");
                std::process::exit(1);
            }
        }
        // The first 200 warm the connection and caches.
        if i >= 200 {
            samples.push(start.elapsed().as_micros() as u64);
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "p50_us={} p90_us={} p99_us={} max_us={} n={}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        samples[samples.len() - 1],
        samples.len()
    );
}
