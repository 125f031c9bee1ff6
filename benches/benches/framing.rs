//! The cost of the HTTP/1.1 framing scan on the inbound byte stream: 1,000
//! pipelined keep-alive requests (a typical head of ~200 bytes, every tenth
//! with a small chunked body) read through `FramingScan`, beside the same
//! bytes read directly.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::AsyncReadExt;
use ward_dataplane::framing::FramingScan;

fn stream() -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..1000 {
        if i % 10 == 0 {
            s.extend_from_slice(
                b"POST /orders HTTP/1.1\r\nHost: orders.internal:8443\r\nuser-agent: bench/1.0\r\n\
                  accept: application/json\r\ncontent-type: application/json\r\n\
                  transfer-encoding: chunked\r\n\r\n11\r\n{\"id\":1234567890}\r\n0\r\n\r\n",
            );
        } else {
            s.extend_from_slice(
                b"GET /orders/1234 HTTP/1.1\r\nHost: orders.internal:8443\r\nuser-agent: bench/1.0\r\n\
                  accept: application/json\r\nx-request-id: 6f1c2a9e-5b7d-4f3a-9c1e-2d8b7a6f5e4c\r\n\r\n",
            );
        }
    }
    s
}

fn read_all<R: tokio::io::AsyncRead + Unpin>(rt: &tokio::runtime::Runtime, mut r: R) -> usize {
    rt.block_on(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0;
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
}

fn framing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = stream();
    assert_eq!(read_all(&rt, &bytes[..]), bytes.len());
    // The scan follows every request (it would refuse them all if it lost track).
    let (scan, found) = FramingScan::new(&bytes[..], 64 * 1024);
    assert_eq!(read_all(&rt, scan), bytes.len());
    assert!((0..1000).all(|_| !found.next_is_ambiguous()));
    let mut g = c.benchmark_group("framing scan, 1,000 requests");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("read directly", |b| b.iter(|| read_all(&rt, &bytes[..])));
    g.bench_function("read through FramingScan", |b| {
        b.iter(|| read_all(&rt, FramingScan::new(&bytes[..], 64 * 1024).0))
    });
    g.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
