//! Request bodies on their way to the app. A malformed body (bad chunk
//! size, chunk data overrunning its size, a bare LF in the framing, a
//! connection closed mid-body) is the caller's fault and is answered 400,
//! never 502 — and the app must not receive the request at all. So the
//! first `buffer_limit` bytes are read and checked *before* anything is
//! forwarded: a body that ends within them (nearly every API call) reaches
//! the app whole or not at all. A longer body streams after its checked
//! prefix; if it fails later, the upstream request is aborted mid-body (the
//! app sees a truncated request it cannot mistake for a complete one) and
//! the caller still gets 400 — also when it stalls: no frame of the
//! remainder for `idle` is a broken body too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Why a body forwarded to the app ended early.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

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
        /// The longest wait for the next frame of the rest, counted only
        /// while the receiver is waiting for one (an app that stops
        /// reading is not the caller stalling).
        idle: Duration,
        deadline: Pin<Box<Sleep>>,
        waiting: bool,
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
    /// `failed` is set if a streamed remainder later turns out malformed or
    /// sends nothing for `idle`.
    pub async fn prepare(
        body: Incoming,
        buffer_limit: usize,
        idle: Duration,
        failed: Arc<AtomicBool>,
    ) -> Prepared {
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
                    idle,
                    deadline: Box::pin(tokio::time::sleep(idle)),
                    waiting: false,
                });
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Buffered(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Chained {
                prefix,
                rest,
                failed,
                idle,
                deadline,
                waiting,
            } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                match Pin::new(rest).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        *waiting = false;
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        failed.store(true, Ordering::SeqCst);
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending if !*waiting => {
                        // The wait for this frame starts now.
                        *waiting = true;
                        deadline.as_mut().reset(Instant::now() + *idle);
                        match deadline.as_mut().poll(cx) {
                            Poll::Ready(()) => {
                                failed.store(true, Ordering::SeqCst);
                                Poll::Ready(Some(Err("the request body stalled".into())))
                            }
                            Poll::Pending => Poll::Pending,
                        }
                    }
                    Poll::Pending => match deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            failed.store(true, Ordering::SeqCst);
                            Poll::Ready(Some(Err("the request body stalled".into())))
                        }
                        Poll::Pending => Poll::Pending,
                    },
                }
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
