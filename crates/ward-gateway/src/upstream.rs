//! The upstreams of the routes: mutual TLS with the gateway's SVID,
//! verifying the SPIFFE ID the route names (the data plane's
//! [`MtlsConnector`]), or plain HTTP to a loopback address. Pools start
//! over when the gateway's SVID rotates, so an upstream always sees the
//! current certificate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use ward_dataplane::body::RequestBody;
use ward_dataplane::connect::MtlsConnector;
use ward_dataplane::forward::{ResponseBody, SendError, client_builder, send};

enum Pool {
    Mtls {
        connector: MtlsConnector,
        /// The pool, and the SVID generation it was made under.
        pool: RwLock<(u64, Client<MtlsConnector, RequestBody>)>,
        generation: Arc<AtomicU64>,
    },
    Plain(Client<HttpConnector, RequestBody>),
}

/// One route's upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    /// `https://ADDR` or `http://ADDR`: the start of every target.
    base: String,
    pool: Pool,
    idle: Duration,
    timeout: Duration,
}

impl Upstream {
    pub fn plain(addr: SocketAddr, connect_timeout: Duration, timeout: Duration) -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(connect_timeout));
        let idle = Duration::from_secs(90);
        Self {
            addr,
            base: format!("http://{addr}"),
            pool: Pool::Plain(client_builder(idle).build(c)),
            idle,
            timeout,
        }
    }

    pub fn mtls(connector: MtlsConnector, generation: Arc<AtomicU64>, timeout: Duration) -> Self {
        let idle = Duration::from_secs(90);
        let g = generation.load(Ordering::SeqCst);
        Self {
            addr: connector.upstream,
            base: format!("https://{}", connector.upstream),
            pool: Pool::Mtls {
                pool: RwLock::new((g, client_builder(idle).build(connector.clone()))),
                connector,
                generation,
            },
            idle,
            timeout,
        }
    }

    /// The target for `path_and_query` on this upstream.
    pub fn target(&self, path_and_query: &str) -> Uri {
        let mut t = String::with_capacity(self.base.len() + path_and_query.len());
        t.push_str(&self.base);
        t.push_str(path_and_query);
        // Built from a canonical path and a query that arrived in a valid URI.
        t.parse().unwrap_or_default()
    }

    pub async fn send(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>, SendError> {
        match &self.pool {
            Pool::Plain(c) => send(c, request, self.timeout).await,
            Pool::Mtls {
                connector,
                pool,
                generation,
            } => {
                let g = generation.load(Ordering::SeqCst);
                let client = {
                    let p = pool.read().unwrap_or_else(|p| p.into_inner());
                    (p.0 == g).then(|| p.1.clone())
                };
                let client = match client {
                    Some(c) => c,
                    None => {
                        let mut p = pool.write().unwrap_or_else(|p| p.into_inner());
                        if p.0 != g {
                            *p = (g, client_builder(self.idle).build(connector.clone()));
                        }
                        p.1.clone()
                    }
                };
                send(&client, request, self.timeout).await
            }
        }
    }
}
