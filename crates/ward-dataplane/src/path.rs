//! The request path is authorized and forwarded in one canonical form, so
//! the app never sees a path other than the one policy decided on.
//! Percent-encoded unreserved characters are decoded (`/%61dmin` is
//! `/admin`); anything that different servers read differently is refused:
//! dot segments (also encoded), empty segments (`//`), encoded slashes or
//! backslashes, backslashes, NUL, `;` parameters and fragments.

/// Why a path was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target must be a path starting with '/'")]
    NotOriginForm,
    #[error("dot segments ('.', '..') are not accepted")]
    DotSegment,
    #[error("empty path segments ('//') are not accepted")]
    EmptySegment,
    #[error("encoded '/', '\\\\' or NUL, and '\\\\', are not accepted in paths")]
    EncodedSeparator,
    #[error("';' path parameters are not accepted")]
    Parameters,
    #[error("malformed percent-encoding")]
    BadEscape,
    /// Raw bytes outside ASCII: one server reads them as UTF-8, another as
    /// Latin-1; only their percent-encoded form is unambiguous.
    #[error("raw non-ASCII bytes are not accepted in paths (percent-encode them)")]
    NonAscii,
    /// Control characters and spaces are never part of a path.
    #[error("control characters are not accepted in paths")]
    Control,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Returns the canonical form of `path` (the path part of a request
/// target, without the query), or why it is refused.
pub fn canonical_path(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let decoded = h * 16 + l;
                if matches!(decoded, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                if is_unreserved(decoded) {
                    out.push(decoded as char);
                } else {
                    // Keep other escapes, in upper case, so that two spellings compare equal.
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[h as usize]));
                    out.push(char::from(b"0123456789ABCDEF"[l as usize]));
                }
                i += 3;
                continue;
            }
            b'\\' | 0 => return Err(PathError::EncodedSeparator),
            b';' => return Err(PathError::Parameters),
            b'#' | b'?' => return Err(PathError::NotOriginForm),
            0x80.. => return Err(PathError::NonAscii),
            ..=0x20 | 0x7f => return Err(PathError::Control),
            _ => out.push(b as char),
        }
        i += 1;
    }
    let segments: Vec<&str> = out[1..].split('/').collect();
    let last = segments.len() - 1;
    for (n, s) in segments.iter().enumerate() {
        if *s == "." || *s == ".." {
            return Err(PathError::DotSegment);
        }
        // "/" alone and one trailing slash are fine; "//" anywhere is not.
        if s.is_empty() && n != last {
            return Err(PathError::EmptySegment);
        }
    }
    Ok(out)
}

/// The bounded route label for metrics: the first path segment.
pub fn metric_route(path: &str) -> String {
    let first = route_segment(path);
    let mut s = String::with_capacity(first.len() + 1);
    s.push('/');
    s.push_str(first);
    s
}

/// The part of `path` that the route label keeps: its first segment, at
/// most 48 characters.
pub fn route_segment(path: &str) -> &str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first.char_indices().nth(48) {
        Some((end, _)) => &first[..end],
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_pass_and_normalize() {
        assert_eq!(canonical_path("/").unwrap(), "/");
        assert_eq!(canonical_path("/orders/1").unwrap(), "/orders/1");
        assert_eq!(canonical_path("/orders/").unwrap(), "/orders/");
        assert_eq!(canonical_path("/%61dmin").unwrap(), "/admin");
        assert_eq!(canonical_path("/a%2a%7e").unwrap(), "/a%2A~");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (p, e) in [
            ("/caf\u{e9}", PathError::NonAscii),
            ("/a b", PathError::Control),
            ("/a\tb", PathError::Control),
            ("/a/../admin", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/%2e%2e/admin", PathError::DotSegment),
            ("/a/.%2E", PathError::DotSegment),
            ("//admin", PathError::EmptySegment),
            ("/a//b", PathError::EmptySegment),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5Cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::EncodedSeparator),
            ("/a%00", PathError::EncodedSeparator),
            ("/admin;x=1", PathError::Parameters),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("*", PathError::NotOriginForm),
            ("/a#b", PathError::NotOriginForm),
        ] {
            assert_eq!(canonical_path(p), Err(e), "{p}");
        }
    }

    #[test]
    fn metric_routes_are_bounded() {
        assert_eq!(metric_route("/orders/123/items"), "/orders");
        assert_eq!(metric_route("/"), "/");
        assert_eq!(metric_route(&format!("/{}", "x".repeat(500))).len(), 49);
    }
}
