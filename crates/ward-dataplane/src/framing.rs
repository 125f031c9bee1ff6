//! A second look at HTTP/1.1 framing, on the bytes as they arrive. hyper's
//! parser, on a request with both `Content-Length` and `Transfer-Encoding`,
//! drops the length before any service sees the head (RFC 9112 §6.3 lets
//! it: the encoding wins and the connection closes after the answer). That
//! is safe for hyper, but the request is exactly the one a front-end and a
//! back-end have read differently in every smuggling attack, and it must be
//! refused, not served. So the inbound byte stream of an HTTP/1.1
//! connection is followed here — heads parsed with `httparse` (hyper's own
//! parser), bodies skipped by their length or chunk framing — and the index
//! of the first request that declares both is kept for the request path to
//! refuse. It fails closed: from the first request whose framing it cannot
//! follow (a head or chunk it cannot read, hyper refuses those itself) every
//! later request on the connection is refused too. HTTP/2's preface turns
//! it off.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the scanner found on one connection, read by the request path.
#[derive(Debug, Default)]
pub struct Framing {
    /// 1 + the index of the first request declaring both a length and an
    /// encoding; 0 while there is none.
    ambiguous: AtomicU64,
    /// 1 + the index of the first request the scan could not follow up
    /// to; 0 while it follows them all.
    lost: AtomicU64,
    /// Requests the request path has taken so far.
    served: AtomicU64,
}

impl Framing {
    /// Called once per request, in order: whether this request declared
    /// both `Content-Length` and `Transfer-Encoding`, or comes after the
    /// scan lost track of the framing.
    pub fn next_is_ambiguous(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        let lost = self.lost.load(Ordering::SeqCst);
        self.ambiguous.load(Ordering::SeqCst) == index || (lost != 0 && index >= lost)
    }
}

/// Where the scanner is in the byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head,
    /// Skipping a body of this many bytes.
    Body(u64),
    Chunk(Chunk),
    /// Lost track: requests from this index on are refused.
    Lost,
    /// Not following any more, with nothing lost (HTTP/2, or a request
    /// after which hyper closes the connection).
    Off,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Hex digits of a chunk size (value so far, whether any digit was seen).
    Size(u64, bool),
    /// A chunk extension, up to CR.
    Extension(u64),
    /// LF after the size line.
    SizeLf(u64),
    /// Chunk data left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer line, up to CR.
    Trailer,
    TrailerLf,
    EndLf,
}

/// Wraps the inbound stream of an HTTP/1.1 connection (see the module header).
pub struct FramingScan<T> {
    inner: T,
    state: State,
    head: Vec<u8>,
    max_head: usize,
    /// Heads seen so far.
    heads: u64,
    found: Arc<Framing>,
}

impl<T> FramingScan<T> {
    /// Follows `inner`'s inbound bytes; heads longer than `max_head` stop it
    /// (hyper refuses them).
    pub fn new(inner: T, max_head: usize) -> (Self, Arc<Framing>) {
        let found = Arc::new(Framing::default());
        (
            Self {
                inner,
                state: State::Head,
                head: Vec::new(),
                max_head,
                heads: 0,
                found: found.clone(),
            },
            found,
        )
    }

    /// Stops following: the next request and every later one are refused.
    fn lose(&mut self) {
        let _ =
            self.found
                .lost
                .compare_exchange(0, self.heads + 1, Ordering::SeqCst, Ordering::SeqCst);
        self.state = State::Lost;
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off | State::Lost => return,
                State::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::Head => {
                    // The head is never over max_head here (that loses track).
                    let before = self.head.len();
                    let take = bytes.len().min(self.max_head + 1 - before);
                    self.head.extend_from_slice(&bytes[..take]);
                    // A head can only end at a LF; parse it as hyper does
                    // (httparse, which also takes bare LF line ends and
                    // skips empty lines before the request line).
                    if !bytes[..take].contains(&b'\n') {
                        bytes = &bytes[take..];
                        if self.head.len() > self.max_head {
                            self.lose();
                        }
                        continue;
                    }
                    match self.after_head() {
                        Some((len, next)) => {
                            bytes = &bytes[len.saturating_sub(before)..];
                            self.head.clear();
                            self.state = next;
                            if matches!(self.state, State::Lost) {
                                self.lose();
                            }
                        }
                        None => {
                            bytes = &bytes[take..];
                            if self.head.len() > self.max_head {
                                self.lose();
                            }
                        }
                    }
                }
                State::Chunk(c) => {
                    let (next, used) = chunk_step(*c, bytes);
                    bytes = &bytes[used..];
                    self.state = next;
                    if matches!(self.state, State::Lost) {
                        self.lose();
                    }
                }
            }
        }
    }

    /// Parses the head collected so far: `None` while it is incomplete,
    /// else its length in bytes and how its body is framed.
    fn after_head(&mut self) -> Option<(usize, State)> {
        // HTTP/2 with prior knowledge (its preface reads as a head that
        // httparse refuses): nothing to follow.
        if self.head.starts_with(b"PRI * HTTP/2.0") {
            return Some((self.head.len(), State::Off));
        }
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(&self.head) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            // hyper refuses it too; whatever follows cannot be followed.
            Err(_) => {
                let all = self.head.len();
                self.heads += 1;
                return Some((all, State::Lost));
            }
        };
        let index = self.heads;
        self.heads += 1;
        let (mut length, mut lengths, mut encodings, mut chunked_last) = (None, 0, 0, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                encodings += 1;
                chunked_last = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        let next = if lengths > 0 && encodings > 0 {
            let _ = self.found.ambiguous.compare_exchange(
                0,
                index + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            // hyper closes the connection after this request.
            State::Off
        } else if encodings > 0 {
            // Not chunked last: hyper refuses it (400) and closes.
            if chunked_last {
                State::Chunk(Chunk::Size(0, false))
            } else {
                State::Lost
            }
        } else {
            match (lengths, length) {
                (0, _) | (_, Some(0)) => State::Head,
                (_, Some(n)) => State::Body(n),
                (_, None) => State::Lost,
            }
        };
        Some((len, next))
    }
}

/// One step of chunked framing over `bytes`: the next state and how many
/// bytes it used (at least one, unless the state consumes none).
fn chunk_step(c: Chunk, bytes: &[u8]) -> (State, usize) {
    let b = bytes[0];
    let next = match c {
        Chunk::Size(n, digits) => match (b as char).to_digit(16) {
            // Leading zeros are fine (hyper only refuses an overflow).
            Some(d) => match n.checked_mul(16).and_then(|n| n.checked_add(d as u64)) {
                Some(n) => Chunk::Size(n, true),
                None => return (State::Lost, 1),
            },
            None if digits && b == b'\r' => Chunk::SizeLf(n),
            None if digits && (b == b';' || b == b' ' || b == b'\t') => Chunk::Extension(n),
            _ => return (State::Lost, 1),
        },
        Chunk::Extension(n) => match b {
            b'\r' => Chunk::SizeLf(n),
            b'\n' => return (State::Lost, 1),
            _ => Chunk::Extension(n),
        },
        Chunk::SizeLf(n) => match (b, n) {
            (b'\n', 0) => Chunk::TrailerStart,
            (b'\n', n) => Chunk::Data(n),
            _ => return (State::Lost, 1),
        },
        Chunk::Data(n) => {
            let take = n.min(bytes.len() as u64);
            let left = n - take;
            let next = if left == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data(left)
            };
            return (State::Chunk(next), take as usize);
        }
        Chunk::DataCr => match b {
            b'\r' => Chunk::DataLf,
            _ => return (State::Lost, 1),
        },
        Chunk::DataLf => match b {
            b'\n' => Chunk::Size(0, false),
            _ => return (State::Lost, 1),
        },
        // As hyper reads trailers: any byte up to CR belongs to the line.
        Chunk::TrailerStart => match b {
            b'\r' => Chunk::EndLf,
            _ => Chunk::Trailer,
        },
        Chunk::Trailer => match b {
            b'\r' => Chunk::TrailerLf,
            _ => Chunk::Trailer,
        },
        Chunk::TrailerLf => match b {
            b'\n' => Chunk::TrailerStart,
            _ => return (State::Lost, 1),
        },
        Chunk::EndLf => match b {
            b'\n' => return (State::Head, 1),
            _ => return (State::Lost, 1),
        },
    };
    (State::Chunk(next), 1)
}

impl<T: AsyncRead + Unpin> AsyncRead for FramingScan<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if !matches!(this.state, State::Off | State::Lost) {
                this.scan(&buf.filled()[before..]);
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FramingScan<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; returns which of the first
    /// `n` requests the request path would refuse.
    fn refused(stream: &[u8], step: usize, n: u64) -> Vec<u64> {
        let (mut scan, found) = FramingScan::new((), 64 * 1024);
        for piece in stream.chunks(step) {
            scan.scan(piece);
        }
        (0..n).filter(|_| found.next_is_ambiguous()).collect()
    }

    fn index_of_ambiguous(stream: &[u8], step: usize) -> u64 {
        let (mut scan, found) = FramingScan::new((), 64 * 1024);
        for piece in stream.chunks(step) {
            scan.scan(piece);
        }
        found.ambiguous.load(Ordering::SeqCst)
    }

    #[test]
    fn length_and_encoding_together_are_found_whichever_comes_first() {
        for step in [1, 3, 7, 1000] {
            let cl_first = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
            assert_eq!(index_of_ambiguous(cl_first, step), 1, "step {step}");
            let te_first = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n";
            assert_eq!(index_of_ambiguous(te_first, step), 1, "step {step}");
        }
    }

    #[test]
    fn bodies_are_skipped_so_later_heads_are_found() {
        // A length body, a chunked body with an extension and a trailer,
        // then the ambiguous third request: a body that looks like a head
        // is not taken for one.
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\n\r\n\r\n\r\n";
        let mut s = Vec::new();
        s.extend_from_slice(
            format!(
                "POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        s.extend_from_slice(body);
        s.extend_from_slice(b"POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        s.extend_from_slice(b"5;ext=1\r\nhello\r\n10\r\nContent-Length:9\r\n0\r\nX-T: 1\r\n\r\n");
        s.extend_from_slice(
            b"GET /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for step in [1, 2, 5, 4096] {
            assert_eq!(index_of_ambiguous(&s, step), 3, "step {step}");
            assert_eq!(refused(&s, step, 3), vec![2], "step {step}");
        }
    }

    #[test]
    fn plain_requests_are_never_refused() {
        let s = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(index_of_ambiguous(s, 1), 0);
        assert!(refused(s, 1, 3).is_empty());
        // What it cannot follow (hyper refuses it), it fails closed on:
        // every later request is refused.
        let bad = b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(refused(bad, 4, 3), vec![1, 2]);
    }

    #[test]
    fn http2_turns_the_scan_off_and_refuses_nothing() {
        let mut s = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        s.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        for step in [1, 5, 4096] {
            assert!(refused(&s, step, 5).is_empty(), "step {step}");
        }
    }

    /// Requests hyper serves that an earlier scan lost track at: each must
    /// still be found, not let through.
    #[test]
    fn what_hyper_reads_the_scan_reads_too() {
        let smuggle = b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let cases: [&[u8]; 4] = [
            // An Upgrade header (never granted: the proxy strips it).
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\n",
            // A chunk size with leading zeros past 16 digits.
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\nx\r\n0\r\n\r\n",
            // A head with bare LF line ends.
            b"GET /a HTTP/1.1\nHost: a\n\n",
            // A bare LF inside a trailer line (hyper reads up to CR).
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\nY: 2\r\n\r\n",
        ];
        for (i, first) in cases.iter().enumerate() {
            let stream = [*first, &smuggle[..]].concat();
            for step in [1, 3, 4096] {
                assert_eq!(refused(&stream, step, 2), vec![1], "case {i}, step {step}");
            }
        }
    }
}
