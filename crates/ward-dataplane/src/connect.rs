//! The outbound connector: TCP, then TLS 1.3 with our SVID, verifying the
//! upstream's SVID and SPIFFE ID. Used by the pooled HTTP clients and by
//! opaque TCP forwarding.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use ward_identity::spiffe_id_of_cert;

/// The SPIFFE ID the upstream presented (in response extensions).
#[derive(Debug, Clone)]
pub struct UpstreamId(pub Arc<str>);

/// Opens mutual-TLS connections to one upstream.
#[derive(Clone)]
pub struct MtlsConnector {
    pub upstream: SocketAddr,
    pub config: Arc<ClientConfig>,
    pub connect_timeout: Duration,
}

impl MtlsConnector {
    /// Connects and completes the handshake.
    pub async fn connect(&self) -> io::Result<(TlsStream<TcpStream>, UpstreamId)> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.upstream))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connecting to the upstream timed out",
                )
            })??;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::IpAddress(self.upstream.ip().into());
        let tls = tokio::time::timeout(
            self.connect_timeout,
            TlsConnector::from(self.config.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake with the upstream timed out",
            )
        })??;
        let id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| spiffe_id_of_cert(c))
            .map(|id| UpstreamId(id.to_string().into()))
            .ok_or_else(|| io::Error::other("the upstream presented no SPIFFE ID"))?;
        Ok((tls, id))
    }
}

/// A pooled connection for hyper's client.
pub struct MtlsStream {
    io: TokioIo<TlsStream<TcpStream>>,
    id: UpstreamId,
    h2: bool,
}

impl Connection for MtlsStream {
    fn connected(&self) -> Connected {
        let c = Connected::new().extra(self.id.clone());
        if self.h2 { c.negotiated_h2() } else { c }
    }
}

impl Read for MtlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for MtlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

impl tower::Service<Uri> for MtlsConnector {
    type Response = MtlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<MtlsStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        // Every URI of this client goes to the one configured upstream.
        let this = self.clone();
        Box::pin(async move {
            let (tls, id) = this.connect().await?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(MtlsStream {
                io: TokioIo::new(tls),
                id,
                h2,
            })
        })
    }
}
