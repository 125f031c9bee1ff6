//! Strict HTTP at the front. Request smuggling and authorization bypasses
//! live in the gap between two parsers that read one message differently;
//! the way to close it is to accept only messages every parser reads the
//! same way (RFC 9112 §6, §3.2; RFC 9110 §7.2, §5.3), normalise what is
//! left, and build the decision, the route and the forwarded request all
//! from that one normalised request.
//!
//! Refused with 400 (and the connection closed): more than one `Host`; a
//! `Host` that disagrees with the absolute-form target or HTTP/2's
//! `:authority`; a request naming no host at all; `Transfer-Encoding` other than one
//! final `chunked` (501 for a coding we do not implement); `Content-Length`
//! beside `Transfer-Encoding`; a header the policy reads sent twice.
//! Refused with 413 before any body byte is read: a declared length over
//! the limit. After this, the request carries exactly one `host`.

use http::StatusCode;
#[cfg(test)]
use http::Version;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

/// The headers a Cedar policy may read (`Ward::Headers` in the schema).
pub const CONTEXT_HEADERS: [&str; 5] = [
    "host",
    "content-type",
    "user-agent",
    "accept",
    "x-request-id",
];

/// Why a request was refused before authorization, with its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("HTTP/1.1 requests need a Host header")]
    MissingHost,
    #[error("the Host header disagrees with the request target's authority")]
    HostMismatch,
    #[error("Transfer-Encoding must be exactly one final \"chunked\"")]
    BadTransferEncoding,
    #[error("transfer coding {0:?} is not implemented")]
    UnknownTransferCoding(String),
    #[error("Content-Length and Transfer-Encoding together")]
    LengthAndEncoding,
    #[error("the Content-Length header is not a single number")]
    BadContentLength,
    #[error("the declared body ({declared} bytes) exceeds the limit of {limit}")]
    BodyTooLarge { declared: u64, limit: u64 },
    #[error("header {0:?} is sent more than once")]
    DuplicateHeader(&'static str),
    #[error("header values must be visible ASCII")]
    BadHeaderValue,
    #[error("the request body is malformed: {0}")]
    MalformedBody(String),
    #[error("the Connection header names {0:?}, which the policy reads")]
    ConnectionNamesDecidedHeader(&'static str),
}

impl Rejection {
    /// The status the caller gets (the connection is closed after it).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The bounded label for `/metrics`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::DuplicateHost | Self::MissingHost | Self::HostMismatch => "host",
            Self::BadTransferEncoding | Self::UnknownTransferCoding(_) => "transfer_encoding",
            Self::LengthAndEncoding | Self::BadContentLength => "content_length",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::DuplicateHeader(_) | Self::BadHeaderValue => "header",
            Self::MalformedBody(_) => "malformed_body",
            Self::ConnectionNamesDecidedHeader(_) => "header",
        }
    }
}

/// Checks and normalises a request head in place. `max_body` bounds a
/// declared `Content-Length`.
pub fn check_request(parts: &mut Parts, max_body: u64) -> Result<(), Rejection> {
    check_host(parts)?;
    check_framing(&parts.headers, max_body)?;
    // `Connection: host` would strip, after the decision, a header the
    // decision read (RFC 9110 §7.6.1 makes named headers hop-by-hop).
    for v in parts.headers.get_all(header::CONNECTION) {
        let v = v.to_str().map_err(|_| Rejection::BadHeaderValue)?;
        for token in v.split(',').map(str::trim) {
            if let Some(name) = CONTEXT_HEADERS
                .iter()
                .find(|h| h.eq_ignore_ascii_case(token))
            {
                return Err(Rejection::ConnectionNamesDecidedHeader(name));
            }
        }
    }
    for name in CONTEXT_HEADERS {
        let mut values = parts.headers.get_all(name).iter();
        if values.next().is_some_and(|v| v.to_str().is_err()) {
            return Err(Rejection::BadHeaderValue);
        }
        if values.next().is_some() {
            return Err(Rejection::DuplicateHeader(name));
        }
    }
    Ok(())
}

/// One authority per request: `Host` once, agreeing with the target's
/// authority (absolute-form in HTTP/1.1, `:authority` in HTTP/2); when only
/// the target names it, it becomes the `Host` (so that the policy and the
/// app see the same value).
fn check_host(parts: &mut Parts) -> Result<(), Rejection> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(Rejection::DuplicateHost);
    }
    let authority = parts.uri.authority().map(|a| a.as_str());
    match (host, authority) {
        (Some(h), Some(a)) => {
            if !h.as_bytes().eq_ignore_ascii_case(a.as_bytes()) {
                return Err(Rejection::HostMismatch);
            }
        }
        (None, Some(a)) => {
            let v = HeaderValue::from_str(a).map_err(|_| Rejection::HostMismatch)?;
            parts.headers.insert(header::HOST, v);
        }
        (Some(_), None) => {}
        // The app would get a Host the policy never saw (the client's own).
        (None, None) => return Err(Rejection::MissingHost),
    }
    // One spelling of the host for the policy and the app alike: lower
    // case, no trailing dot (RFC 3986 §3.2.2: case-insensitive; a trailing
    // dot names the same host to most resolvers and routers).
    if let Some(h) = parts.headers.get(header::HOST) {
        let v = h.to_str().map_err(|_| Rejection::BadHeaderValue)?;
        let (name, port) = match v.rsplit_once(':') {
            Some((n, p)) if !n.contains(']') || n.ends_with(']') => (n, Some(p)),
            _ => (v, None),
        };
        // Nearly every Host is already normal: allocate only when it is not.
        if name.ends_with('.') || name.bytes().any(|b| b.is_ascii_uppercase()) {
            let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
            let normal = match port {
                Some(p) => format!("{name}:{p}"),
                None => name,
            };
            let v = HeaderValue::from_str(&normal).map_err(|_| Rejection::BadHeaderValue)?;
            parts.headers.insert(header::HOST, v);
        }
    }
    Ok(())
}

fn check_framing(headers: &HeaderMap, max_body: u64) -> Result<(), Rejection> {
    let mut codings = Vec::new();
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        let v = v.to_str().map_err(|_| Rejection::BadTransferEncoding)?;
        codings.extend(v.split(',').map(str::trim).filter(|c| !c.is_empty()));
    }
    let lengths: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(Rejection::LengthAndEncoding);
        }
        if let Some(other) = codings.iter().find(|c| !c.eq_ignore_ascii_case("chunked")) {
            return Err(Rejection::UnknownTransferCoding(
                other.chars().take(32).collect(),
            ));
        }
        if codings.len() != 1 {
            return Err(Rejection::BadTransferEncoding);
        }
    }
    match lengths.as_slice() {
        [] => {}
        [one] => {
            let declared: u64 = one
                .to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or(Rejection::BadContentLength)?;
            if declared > max_body {
                return Err(Rejection::BodyTooLarge {
                    declared,
                    limit: max_body,
                });
            }
        }
        _ => return Err(Rejection::BadContentLength),
    }
    Ok(())
}

/// The context headers of a checked request, at most one value each.
pub fn context_headers(headers: &HeaderMap) -> Vec<(&'static str, &str)> {
    CONTEXT_HEADERS
        .iter()
        .filter_map(|h| Some((*h, headers.get(*h)?.to_str().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().version(version).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn check(version: Version, uri: &str, headers: &[(&str, &str)]) -> Result<Parts, Rejection> {
        let mut p = parts(version, uri, headers);
        check_request(&mut p, 1000).map(|()| p)
    }

    const H1: Version = Version::HTTP_11;

    #[test]
    fn well_formed_requests_pass() {
        assert!(check(H1, "/x", &[("host", "a")]).is_ok());
        assert!(check(H1, "/x", &[("host", "a"), ("transfer-encoding", "chunked")]).is_ok());
        assert!(check(H1, "/x", &[("host", "a"), ("content-length", "1000")]).is_ok());
        assert!(check(H1, "http://a/x", &[("host", "A")]).is_ok());
        assert!(check(Version::HTTP_10, "/x", &[("host", "a")]).is_ok());
        let p = check(H1, "/x", &[("host", "ADMIN.internal.")]).unwrap();
        assert_eq!(p.headers.get("host").unwrap(), "admin.internal");
        let p = check(H1, "/x", &[("host", "A.b:8080")]).unwrap();
        assert_eq!(p.headers.get("host").unwrap(), "a.b:8080");
    }

    #[test]
    fn ambiguous_hosts_are_refused() {
        assert_eq!(
            check(H1, "/x", &[("host", "a"), ("host", "b")]).unwrap_err(),
            Rejection::DuplicateHost
        );
        assert_eq!(check(H1, "/x", &[]).unwrap_err(), Rejection::MissingHost);
        assert_eq!(
            check(Version::HTTP_10, "/x", &[]).unwrap_err(),
            Rejection::MissingHost
        );
        assert_eq!(
            check(H1, "http://a/x", &[("host", "b")]).unwrap_err(),
            Rejection::HostMismatch
        );
        assert_eq!(
            check(Version::HTTP_2, "https://a/x", &[("host", "b")]).unwrap_err(),
            Rejection::HostMismatch
        );
    }

    #[test]
    fn an_authority_alone_becomes_the_host() {
        let p = check(Version::HTTP_2, "https://evil.test/x", &[]).unwrap();
        assert_eq!(p.headers.get("host").unwrap(), "evil.test");
        assert_eq!(context_headers(&p.headers), vec![("host", "evil.test")]);
    }

    #[test]
    fn framing_other_than_one_length_or_one_chunked_is_refused() {
        let h = |te: &str| check(H1, "/x", &[("host", "a"), ("transfer-encoding", te)]);
        assert_eq!(
            h("chunked, chunked").unwrap_err(),
            Rejection::BadTransferEncoding
        );
        assert_eq!(
            h("gzip, chunked").unwrap_err().status(),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            h("identity").unwrap_err().status(),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            check(
                H1,
                "/x",
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked")
                ]
            )
            .unwrap_err(),
            Rejection::BadTransferEncoding
        );
        assert_eq!(
            check(
                H1,
                "/x",
                &[
                    ("host", "a"),
                    ("content-length", "5"),
                    ("transfer-encoding", "chunked")
                ]
            )
            .unwrap_err(),
            Rejection::LengthAndEncoding
        );
        assert_eq!(
            check(H1, "/x", &[("host", "a"), ("content-length", "+5")]).unwrap_err(),
            Rejection::BadContentLength
        );
        let e = check(H1, "/x", &[("host", "a"), ("content-length", "1001")]).unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn a_context_header_has_one_value() {
        assert_eq!(
            check(
                H1,
                "/x",
                &[("host", "a"), ("content-type", "a"), ("content-type", "b")]
            )
            .unwrap_err(),
            Rejection::DuplicateHeader("content-type")
        );
        assert!(
            check(
                H1,
                "/x",
                &[("host", "a"), ("x-other", "a"), ("x-other", "b")]
            )
            .is_ok()
        );
    }

    #[test]
    fn connection_cannot_strip_a_header_the_policy_read() {
        assert_eq!(
            check(
                H1,
                "/x",
                &[("host", "a"), ("connection", "keep-alive, Host")]
            )
            .unwrap_err(),
            Rejection::ConnectionNamesDecidedHeader("host")
        );
        assert!(
            check(
                H1,
                "/x",
                &[("host", "a"), ("connection", "keep-alive, x-other")]
            )
            .is_ok()
        );
    }
}
