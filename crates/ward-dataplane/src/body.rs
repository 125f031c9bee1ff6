//! Request bodies on their way to the app. A malformed body (bad chunk
//! size, chunk data overrunning its size, a bare LF in the framing, a
//! connection closed mid-body) is the caller's fault and is answered 400,
//! never 502 — and the app must not receive the request at all. So the
//! first `buffer_limit` bytes are read and checked *before* anything is
//! forwarded: a body that ends within them (nearly every API call) reaches
//! the app whole or not at all. A longer body streams after its checked
//! prefix; if it fails later, the upstream request is aborted mid-body (the
//! app sees a truncated request it cannot mistake for a complete one) and
//! the caller still gets 400.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// The body forwarded to the app or upstream.
pub enum RequestBody {
    /// Straight through (no body, or outbound, where the app is the sender).
    Incoming(Incoming),
    /// Read whole and checked.
    Buffered(Option<Bytes>),
    /// A checked prefix, then the rest as it arrives.
    Chained {
        prefix: Option<Bytes>,
        rest: Incoming,
        failed: Arc<AtomicBool>,
    },
}

/// What reading the start of a body found.
pub enum Prepared {
    Ready(RequestBody),
    /// The body is malformed; the reason, for the log.
    Malformed(String),
}

impl RequestBody {
    /// Reads up to `buffer_limit` bytes of `body` (see the module header).
    /// `failed` is set if a streamed remainder later turns out malformed.
    pub async fn prepare(body: Incoming, buffer_limit: usize, failed: Arc<AtomicBool>) -> Prepared {
        if body.is_end_stream() {
            return Prepared::Ready(RequestBody::Incoming(body));
        }
        let mut body = body;
        let mut prefix: Vec<u8> = Vec::new();
        loop {
            match body.frame().await {
                None => return Prepared::Ready(RequestBody::Buffered(Some(prefix.into()))),
                Some(Err(e)) => return Prepared::Malformed(e.to_string()),
                Some(Ok(frame)) => {
                    // Trailers are dropped (HTTP/1.1 apps rarely read them;
                    // gRPC over HTTP/2 never sends request trailers).
                    if let Ok(data) = frame.into_data() {
                        prefix.extend_from_slice(&data);
                    }
                }
            }
            if body.is_end_stream() {
                return Prepared::Ready(RequestBody::Buffered(Some(prefix.into())));
            }
            if prefix.len() >= buffer_limit {
                return Prepared::Ready(RequestBody::Chained {
                    prefix: Some(prefix.into()),
                    rest: body,
                    failed,
                });
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Buffered(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Chained {
                prefix,
                rest,
                failed,
            } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                let polled = Pin::new(rest).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    failed.store(true, Ordering::SeqCst);
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Buffered(b) => b.is_none(),
            RequestBody::Chained { prefix, rest, .. } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Chained { prefix, rest, .. } => {
                let p = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let r = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(r.lower() + p);
                if let Some(u) = r.upper() {
                    h.set_upper(u + p);
                }
                h
            }
        }
    }
}
