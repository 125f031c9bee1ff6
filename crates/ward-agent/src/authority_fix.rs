//! A compatibility shim for gRPC clients built on grpc-core (py-spiffe, and
//! grpc for Ruby, PHP, C++…). Since grpc 1.57 they send the percent-encoded
//! socket path as the HTTP/2 `:authority` of a unix-socket call
//! (`tmp%2Fagent%2Fapi.sock`), which is not a valid authority; the h2 server
//! under tonic answers every such request with RST_STREAM(PROTOCOL_ERROR)
//! (grpc/grpc#38142, hyperium/h2#487). SPIRE's Go server ignores the value.
//!
//! This stream wrapper sits between the socket and tonic, walks the HPACK
//! header blocks the client sends, and replaces each byte of an invalid
//! literal `:authority` value that cannot appear in a host name with `x`.
//! The value keeps its length, so frame lengths and both HPACK dynamic
//! tables stay in step. Huffman-coded values are left alone (grpc-core sends
//! them raw); so is everything else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// HTTP/2's default maximum frame size, which h2 enforces; a client sending
/// more is broken or hostile.
const MAX_FRAME: usize = 16 * 1024;
/// The most header-block bytes held back waiting for END_HEADERS.
const MAX_HELD: usize = 64 * 1024;

/// Rewrites invalid `:authority` values in the client-to-server direction.
#[derive(Default)]
pub struct AuthorityFixer {
    /// Set once the client broke the limits: from then on bytes pass
    /// through untouched and h2 enforces its own limits on them.
    passthrough: bool,
    preface_seen: usize,
    buf: Vec<u8>,
    /// Frames of a header block still waiting for END_HEADERS, with the
    /// range of each frame's block fragment.
    held: Vec<(Vec<u8>, std::ops::Range<usize>)>,
}

impl AuthorityFixer {
    /// Takes bytes from the client; appends the bytes ready for the server.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.passthrough {
            out.extend_from_slice(data);
            return;
        }
        self.buf.extend_from_slice(data);
        loop {
            if self.preface_seen < PREFACE_LEN {
                let n = (PREFACE_LEN - self.preface_seen).min(self.buf.len());
                out.extend(self.buf.drain(..n));
                self.preface_seen += n;
                if self.preface_seen < PREFACE_LEN {
                    return;
                }
                continue;
            }
            if self.buf.len() < FRAME_HEADER {
                return;
            }
            let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
            let held: usize = self.held.iter().map(|(f, _)| f.len()).sum();
            if len > MAX_FRAME || held + len > MAX_HELD {
                // Never buffer what a peer announces beyond the limits.
                self.passthrough = true;
                self.flush_held(out);
                out.append(&mut self.buf);
                return;
            }
            if self.buf.len() < FRAME_HEADER + len {
                return;
            }
            let frame: Vec<u8> = self.buf.drain(..FRAME_HEADER + len).collect();
            let (kind, flags) = (frame[3], frame[4]);
            let fragment = match kind {
                HEADERS => headers_fragment(&frame, flags),
                CONTINUATION if !self.held.is_empty() => Some(FRAME_HEADER..frame.len()),
                _ => None,
            };
            match fragment {
                Some(range) => {
                    self.held.push((frame, range));
                    if flags & END_HEADERS != 0 {
                        self.flush_block(out);
                    }
                }
                None => {
                    // Anything else (or a malformed HEADERS frame, which h2
                    // will refuse itself) passes through untouched.
                    self.flush_held(out);
                    out.extend(frame);
                }
            }
        }
    }

    /// Bytes still held when the client closed its side.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.flush_held(out);
        out.append(&mut self.buf);
    }

    fn flush_held(&mut self, out: &mut Vec<u8>) {
        for (frame, _) in self.held.drain(..) {
            out.extend(frame);
        }
    }

    fn flush_block(&mut self, out: &mut Vec<u8>) {
        let mut block: Vec<u8> = self
            .held
            .iter()
            .flat_map(|(f, r)| f[r.clone()].iter().copied())
            .collect();
        fix_authority(&mut block);
        let mut at = 0;
        for (frame, range) in &mut self.held {
            let n = range.len();
            frame[range.clone()].copy_from_slice(&block[at..at + n]);
            at += n;
        }
        self.flush_held(out);
    }
}

fn headers_fragment(frame: &[u8], flags: u8) -> Option<std::ops::Range<usize>> {
    let mut start = FRAME_HEADER;
    let mut end = frame.len();
    if flags & PADDED != 0 {
        let pad = *frame.get(start)? as usize;
        start += 1;
        end = end.checked_sub(pad)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    (start <= end).then_some(start..end)
}

/// RFC 7541 §5.1 integer with an N-bit prefix: (value, bytes used).
fn hpack_int(b: &[u8], prefix: u8) -> Option<(usize, usize)> {
    let mask = (1u16 << prefix) as usize - 1;
    let mut v = (*b.first()? as usize) & mask;
    if v < mask {
        return Some((v, 1));
    }
    let mut shift = 0;
    for (i, &byte) in b.iter().enumerate().skip(1) {
        v = v.checked_add(((byte & 0x7f) as usize).checked_shl(shift)?)?;
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    None
}

/// A string literal at `b`: (Huffman?, start of bytes, length).
fn hpack_str(b: &[u8], at: usize) -> Option<(bool, usize, usize)> {
    let huffman = b.get(at)? & 0x80 != 0;
    let (len, used) = hpack_int(&b[at..], 7)?;
    let start = at + used;
    (start.checked_add(len)? <= b.len()).then_some((huffman, start, len))
}

/// Walks a header block; makes raw literal `:authority` values valid.
fn fix_authority(block: &mut [u8]) {
    let mut i = 0;
    while i < block.len() {
        let b = block[i];
        let prefix = if b & 0x80 != 0 {
            // Indexed field: nothing literal to fix.
            match hpack_int(&block[i..], 7) {
                Some((_, n)) => i += n,
                None => return,
            }
            continue;
        } else if b & 0xc0 == 0x40 {
            6
        } else if b & 0xe0 == 0x20 {
            match hpack_int(&block[i..], 5) {
                Some((_, n)) => i += n,
                None => return,
            }
            continue;
        } else {
            4
        };
        let Some((name_index, n)) = hpack_int(&block[i..], prefix) else {
            return;
        };
        i += n;
        let is_authority = if name_index == 0 {
            let Some((huffman, start, len)) = hpack_str(block, i) else {
                return;
            };
            i = start + len;
            !huffman && &block[start..start + len] == b":authority"
        } else {
            name_index == 1
        };
        let Some((huffman, start, len)) = hpack_str(block, i) else {
            return;
        };
        if is_authority
            && !huffman
            && http::uri::Authority::try_from(&block[start..start + len]).is_err()
        {
            for c in &mut block[start..start + len] {
                if !(c.is_ascii_alphanumeric() || matches!(*c, b'-' | b'.' | b'_' | b'~')) {
                    *c = b'x';
                }
            }
        }
        i = start + len;
    }
}

/// What tonic hands each call about its connection: the kernel's
/// credentials and the caller's program identity when it was accepted.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// pid/uid/gid from SO_PEERCRED.
    pub uds: UdsConnectInfo,
    /// The caller's program when the connection was accepted.
    pub exe_at_accept: Option<crate::attest::ExeIdentity>,
}

/// A Workload API connection with [`AuthorityFixer`] on its read side.
pub struct FixedUnixStream {
    inner: UnixStream,
    exe_at_accept: Option<crate::attest::ExeIdentity>,
    fixer: AuthorityFixer,
    out: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl FixedUnixStream {
    /// Wraps an accepted connection.
    pub fn new(inner: UnixStream) -> Self {
        let exe_at_accept = inner
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(crate::attest::exe_identity);
        Self {
            inner,
            exe_at_accept,
            fixer: AuthorityFixer::default(),
            out: Vec::new(),
            pos: 0,
            eof: false,
        }
    }
}

impl Connected for FixedUnixStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        PeerInfo {
            uds: self.inner.connect_info(),
            exe_at_accept: self.exe_at_accept.clone(),
        }
    }
}

impl AsyncRead for FixedUnixStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.out.len() {
                let n = (this.out.len() - this.pos).min(buf.remaining());
                buf.put_slice(&this.out[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.out.len() {
                    this.out.clear();
                    this.pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                this.fixer.finish(&mut this.out);
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut tmp = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.fixer.feed(rb.filled(), &mut this.out);
            }
        }
    }
}

impl AsyncWrite for FixedUnixStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([kind, flags, 0, 0, 0, 1]);
        f.extend(payload);
        f
    }

    fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut b = vec![0x40, name.len() as u8];
        b.extend(name);
        b.push(value.len() as u8);
        b.extend(value);
        b
    }

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = AuthorityFixer::default();
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    #[test]
    fn a_grpc_core_unix_authority_becomes_valid_with_the_same_length() {
        // What grpc-python 1.x sends for unix:/tmp/cap.sock (captured).
        let mut block = literal(b":path", b"/SpiffeWorkloadAPI/FetchX509SVID");
        block.extend(literal(b":authority", b"tmp%2Fcap.sock"));
        block.extend(literal(b"workload.spiffe.io", b"true"));
        let mut input = PREFACE.to_vec();
        input.extend(frame(4, 0, &[]));
        input.extend(frame(HEADERS, END_HEADERS, &block));
        input.extend(frame(0, 1, b"\0\0\0\0\0"));
        let out = run(&[&input]);
        assert_eq!(out.len(), input.len());
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("tmpx2Fcap.sock"), "{text}");
        assert!(!text.contains("tmp%2F"));
        assert!(
            text.contains("/SpiffeWorkloadAPI/FetchX509SVID")
                && text.contains("workload.spiffe.io")
        );
        // Byte by byte gives the same result.
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&chunks), out);
    }

    #[test]
    fn valid_authorities_other_headers_and_other_frames_are_untouched() {
        let mut block = literal(b":authority", b"localhost:1234");
        block.extend(literal(b"x-note", b"a%2Fb"));
        block.push(0x82); // indexed :method GET
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, &block));
        input.extend(frame(0, 0, b"tmp%2Fdata"));
        assert_eq!(run(&[&input]), input);
    }

    #[test]
    fn a_header_block_split_over_continuation_and_padding_is_fixed() {
        let block = literal(b":authority", b"run%2Fa.sock");
        let (a, b) = block.split_at(9);
        let mut padded = vec![2u8];
        padded.extend(a);
        padded.extend([0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, b));
        let out = run(&[&input]);
        assert_eq!(out.len(), input.len());
        assert!(String::from_utf8_lossy(&out).contains("runx2Fa.sock"));
    }

    #[test]
    fn oversized_frames_and_endless_continuations_are_not_buffered() {
        let mut f = AuthorityFixer::default();
        let mut out = Vec::new();
        let mut input = PREFACE.to_vec();
        input.extend([0xff, 0xff, 0xff, HEADERS, 0, 0, 0, 0, 1]);
        f.feed(&input, &mut out);
        assert_eq!(
            out, input,
            "a 16 MiB frame header is passed on, not waited for"
        );
        f.feed(b"more", &mut out);
        assert!(out.ends_with(b"more"));

        let mut f = AuthorityFixer::default();
        let mut out = Vec::new();
        f.feed(PREFACE, &mut out);
        f.feed(&frame(HEADERS, 0, &[0x82]), &mut out);
        for _ in 0..10 {
            f.feed(&frame(CONTINUATION, 0, &[0x82; 16000]), &mut out);
        }
        assert!(
            f.held.is_empty() && f.passthrough,
            "CONTINUATION frames piled up"
        );
    }

    #[test]
    fn malformed_blocks_pass_through_without_panicking() {
        for junk in [
            &[0x40u8, 0x7f][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            &[0x40, 0x05, b':'][..],
        ] {
            let mut input = PREFACE.to_vec();
            input.extend(frame(HEADERS, END_HEADERS, junk));
            assert_eq!(run(&[&input]), input);
        }
        let mut short = PREFACE.to_vec();
        short.extend([0, 0, 9, 1]);
        assert_eq!(run(&[&short]), short);
    }
}
