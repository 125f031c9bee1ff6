//! Listeners: accept under a connection cap, complete the TLS handshake
//! under a separate handshake budget (so a flood of slow handshakes cannot
//! take the slots of established callers, nor established callers starve
//! new handshakes of CPU), read the caller once, then serve the
//! connection for as long as it stays trusted: it is closed when the
//! caller's certificate expires, when a change of trust no longer chains
//! it, when it sits idle too long, or — after a drain — on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use ward_identity::tls::{BundleSet, PeerCert, PeerPolicy};

use crate::authz::Caller;
use crate::telemetry::Telemetry;

/// The trust in force: bundles by trust domain and which domains are accepted.
#[derive(Debug)]
pub struct Trust {
    pub bundles: Arc<BundleSet>,
    pub peers: Arc<PeerPolicy>,
}

/// The current trust; `None` until the first identity is loaded.
pub type TrustWatch = watch::Receiver<Option<Arc<Trust>>>;

/// Limits of one listener's connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most TLS handshakes in progress at once.
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
    /// How long a request head may take to arrive (HTTP/1.1).
    pub header_timeout: Duration,
    /// Largest request head (HTTP/1.1) and header list (HTTP/2), bytes.
    pub max_header_bytes: usize,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive pings (a peer that does not answer within the
    /// same interval is dropped).
    pub keepalive_interval: Duration,
    /// On shutdown, how long open connections may finish.
    pub drain_timeout: Duration,
}

/// Counts open connections (for the drain and `/metrics`).
#[derive(Clone)]
pub struct OpenConnections {
    open: Arc<AtomicUsize>,
    telemetry: Arc<Telemetry>,
}

impl OpenConnections {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            telemetry,
        }
    }

    /// How many are open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Counts one connection while the guard lives.
    pub fn guard(&self) -> OpenGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.telemetry.connections.inc();
        OpenGuard(self.clone())
    }
}

/// Counts an open connection while alive.
pub struct OpenGuard(OpenConnections);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.telemetry.connections.dec();
    }
}

/// The HTTP/1.1 + HTTP/2 server settings of a listener.
pub fn http_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_interval)
        // Rapid reset (CVE-2023-44487): streams a peer opens and cancels
        // before we answer count against this; beyond it, GOAWAY.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    b
}

/// Accepts until shutdown, running `serve` for each connection under the
/// connection cap.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let fut = serve(tcp, peer);
                tokio::spawn(async move {
                    fut.await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An established, verified inbound connection.
pub struct Verified {
    pub tls: tokio_rustls::server::TlsStream<TcpStream>,
    pub caller: Arc<Caller>,
    /// The caller's chain, kept to re-check it when trust changes.
    pub chain: Vec<CertificateDer<'static>>,
}

/// Completes the server side of the handshake under the handshake budget
/// and reads the caller (once per connection).
pub async fn handshake(
    acceptor: &TlsAcceptor,
    budget: &Semaphore,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<Verified> {
    let _slot = budget.acquire().await.ok()?;
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake refused: timed out");
            return None;
        }
    };
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()?
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let leaf = chain.first()?;
    // The verifier admitted this certificate; reading it cannot fail now.
    let cert = PeerCert::parse(leaf).ok()?;
    // The connection is trusted until the first certificate of its chain
    // expires, not only the leaf.
    let not_after = chain[1..]
        .iter()
        .filter_map(|c| ward_identity::ca::not_after_of_cert(c))
        .fold(cert.not_after, i64::min);
    let caller = Caller {
        id_text: cert.id.to_string().into(),
        id: cert.id,
        cert_hash: hex_sha256(leaf),
        not_after,
        source: peer.ip(),
    };
    Some(Verified {
        tls,
        caller: Arc::new(caller),
        chain,
    })
}

fn hex_sha256(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

/// Resolves when the connection's caller is no longer trusted: a
/// certificate of its chain expired, or the trust in force no longer chains it (a CA
/// removed from the bundle, a federation dropped). Returns why.
pub async fn caller_lapses(
    caller: &Caller,
    chain: &[CertificateDer<'static>],
    mut trust: TrustWatch,
) -> &'static str {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // notAfter is inclusive, in whole seconds.
    let left = Duration::from_secs((caller.not_after - now).max(0) as u64 + 1);
    let expiry = tokio::time::sleep(left);
    tokio::pin!(expiry);
    trust.borrow_and_update();
    loop {
        tokio::select! {
            _ = &mut expiry => return "a certificate of the caller's chain expired",
            changed = trust.changed() => {
                if changed.is_err() {
                    // No more trust updates: only expiry can end it.
                    expiry.as_mut().await;
                    return "a certificate of the caller's chain expired";
                }
                let current = trust.borrow_and_update().clone();
                let Some(t) = current else {
                    return "no trust bundle is in force";
                };
                if let Err(e) = t.bundles.still_chains(&t.peers, chain, UnixTime::now()) {
                    tracing::info!(caller = %caller.id_text, error = %e, "the trust in force no longer accepts the caller");
                    return "the trust in force no longer accepts the caller";
                }
            }
        }
    }
}

/// Requests seen and in flight on one connection, for the idle timeout.
#[derive(Clone, Default)]
pub struct Activity(Arc<(AtomicU64, AtomicUsize)>);

impl Activity {
    /// Marks a request in flight until the guard drops.
    pub fn begin(&self) -> ActivityGuard {
        self.0.0.fetch_add(1, Ordering::Relaxed);
        self.0.1.fetch_add(1, Ordering::Relaxed);
        ActivityGuard(self.clone())
    }

    /// Runs `fut` as one request in flight.
    pub fn track<F: std::future::Future>(
        &self,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> + use<F> {
        let busy = self.begin();
        async move {
            let out = fut.await;
            drop(busy);
            out
        }
    }

    /// Resolves once no request has started or been in flight for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let mut last = self.0.0.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(idle).await;
            let now = self.0.0.load(Ordering::Relaxed);
            if now == last && self.0.1.load(Ordering::Relaxed) == 0 {
                return;
            }
            last = now;
        }
    }
}

/// One request in flight.
pub struct ActivityGuard(Activity);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.0.1.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once shutdown has been asked for.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Runs an HTTP connection until it ends, `lapse` resolves (the connection
/// is dropped at once: its caller is no longer trusted), it is idle for
/// `idle`, or shutdown (asked to finish gracefully, within `drain` — and
/// still dropped at once if the caller lapses meanwhile). Returns the
/// error the connection ended with, if any.
pub async fn drive<C>(
    conn: C,
    lapse: impl std::future::Future<Output = &'static str>,
    activity: &Activity,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> Option<C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    tokio::pin!(conn);
    tokio::pin!(lapse);
    tokio::select! {
        ended = conn.as_mut() => return ended.err(),
        why = lapse.as_mut() => {
            tracing::info!(reason = why, "closing a connection");
            return None;
        }
        _ = activity.idle_for(idle) => {}
        _ = stopped(&mut shutdown) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        ended = tokio::time::timeout(drain, conn) => ended.ok().and_then(Result::err),
        why = lapse => {
            tracing::info!(reason = why, "closing a draining connection");
            None
        }
    }
}

/// The bounded label for a connection that hyper itself refused (a head
/// too large or malformed, a head that did not arrive in time, an HTTP/2
/// peer we sent GOAWAY for misbehaving), or `None` for an ordinary end
/// (the peer closed, reset or went away).
pub fn refusal_label(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return Some("head_too_large");
            }
            if h.is_parse() {
                return Some("malformed_head");
            }
            if h.is_timeout() {
                return Some("header_timeout");
            }
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.is_go_away() && !h2.is_remote() && h2.reason() != Some(h2::Reason::NO_ERROR) {
                return Some("http2_protocol");
            }
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_flight() {
        let a = Activity::default();
        let g = a.begin();
        let idle = a.idle_for(Duration::from_secs(10));
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut idle)
                .await
                .is_err(),
            "a request in flight keeps it open"
        );
        drop(g);
        assert!(
            tokio::time::timeout(Duration::from_secs(25), &mut idle)
                .await
                .is_ok()
        );
    }

    #[test]
    fn hashes_are_lowercase_hex() {
        assert_eq!(
            hex_sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
