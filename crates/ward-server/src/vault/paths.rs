//! Vault paths, canonical before anything is decided on them. The
//! decision is on the path as written, so every spelling that could mean
//! another path is refused rather than normalized: dot segments, empty
//! segments (`//`), percent-encodings (`%2F`, `%2e`), backslashes, control
//! characters, and a trailing slash outside listings. A path that could be
//! read two ways is where authorization bypasses live.

use crate::error::ApiError;

/// The longest secret path accepted, in bytes.
pub(crate) const MAX_PATH: usize = 512;

/// Checks a path below a mount (`orders/db`). `listing` allows one
/// trailing slash, which a listing of a folder may carry, and the empty
/// path (the mount's root).
pub(crate) fn canonical(path: &str, listing: bool) -> Result<&str, ApiError> {
    let bad = |why: &str| {
        ApiError::BadRequest(format!(
            "invalid path {:?}: {why}",
            path.chars().take(80).collect::<String>()
        ))
    };
    if path.len() > MAX_PATH {
        return Err(bad(&format!("longer than {MAX_PATH} bytes")));
    }
    let trimmed = if listing {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    if trimmed.is_empty() {
        return if listing {
            Ok("")
        } else {
            Err(bad("a secret path is required"))
        };
    }
    if trimmed.contains('%') {
        return Err(bad(
            "percent-encoded characters are not accepted: write the path as it is",
        ));
    }
    if trimmed.contains('\\') || trimmed.chars().any(|c| c.is_control()) {
        return Err(bad("backslashes and control characters are not accepted"));
    }
    if trimmed.contains('#') || trimmed.contains('?') || trimmed.contains(';') {
        return Err(bad("`#`, `?` and `;` are not accepted in a path"));
    }
    for segment in trimmed.split('/') {
        match segment {
            "" => {
                return Err(bad(
                    "empty segments (`//`, or a leading or trailing `/`) are not accepted",
                ));
            }
            "." | ".." => return Err(bad("`.` and `..` segments are not accepted")),
            _ => {}
        }
    }
    Ok(trimmed)
}

/// A key name (transit keys, database roles and connections, policies).
pub(crate) fn name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {what} name {:?}: use letters, digits, `-`, `_` and `.` (at most 128)",
            name.chars().take(80).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_spelling_of_a_path_is_accepted() {
        assert_eq!(canonical("orders/db", false).unwrap(), "orders/db");
        assert_eq!(canonical("orders/", true).unwrap(), "orders");
        assert_eq!(canonical("", true).unwrap(), "");
        for bad in [
            "",
            "orders/",
            "/orders",
            "orders//db",
            "orders/../payments/db",
            "./orders",
            "orders/.",
            "orders%2Fdb",
            "orders/%2e%2e/payments",
            "orders\\db",
            "orders/db;x",
            "orders/db#frag",
            "orders/\u{0}",
        ] {
            assert!(canonical(bad, false).is_err(), "{bad:?}");
        }
        assert!(canonical("a//", true).is_err());
        assert!(canonical(&"a".repeat(MAX_PATH + 1), false).is_err());
        assert!(name("key", "orders-1.v2").is_ok());
        assert!(
            name("key", "../x").is_err()
                && name("key", "..").is_err()
                && name("key", "a/b").is_err()
        );
    }
}
