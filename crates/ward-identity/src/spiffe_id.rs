//! SPIFFE IDs and trust domains, parsed exactly as the SPIFFE ID standard
//! (SPIFFE-ID.md §2) says. Anything the standard does not allow is refused
//! rather than normalised: two IDs that would compare equal after
//! percent-decoding or case-folding are an authorization bypass waiting to
//! happen, so `%`, upper-case trust domains, ports, user info, queries,
//! fragments and empty, `.` or `..` segments are all errors.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest SPIFFE ID accepted, in bytes (SPIFFE-ID.md §2.3: URIs of up to
/// 2048 bytes must be supported; longer ones are refused).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The longest trust domain name accepted, in bytes (SPIFFE-ID.md §2.1: a DNS
/// name is at most 255 bytes).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME: &str = "spiffe://";

/// Why a string is not a valid SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The string is empty.
    #[error("a SPIFFE ID cannot be empty")]
    Empty,
    /// The string does not start with `spiffe://` (lower case).
    #[error("a SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("the trust domain is missing")]
    MissingTrustDomain,
    /// A character outside `[a-z0-9.-_]` in the trust domain; this catches
    /// ports (`:`), user info (`@`) and upper case.
    #[error(
        "the trust domain contains {0:?}; only lower-case letters, digits, '.', '-' and '_' are allowed (no port, user info or upper case)"
    )]
    BadTrustDomainChar(char),
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("the trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    /// The whole ID is longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("the SPIFFE ID is longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
    /// A path segment is empty (`//` or a trailing `/`).
    #[error("the path has an empty segment (\"//\" or a trailing \"/\")")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("the path has a \".\" or \"..\" segment")]
    DotSegment,
    /// A character outside `[A-Za-z0-9.-_]` in the path; this catches
    /// percent-encoding, queries and fragments.
    #[error(
        "the path contains {0:?}; only letters, digits, '.', '-' and '_' are allowed (no percent-encoding, query or fragment)"
    )]
    BadPathChar(char),
}

/// A SPIFFE trust domain name, such as `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or a trust domain's
    /// SPIFFE ID (`spiffe://example.org`).
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.starts_with(SCHEME) {
            let id = SpiffeId::parse(s)?;
            if !id.path().is_empty() {
                return Err(SpiffeIdError::BadTrustDomainChar('/'));
            }
            return Ok(id.trust_domain);
        }
        validate_trust_domain(s)?;
        Ok(Self(s.to_owned()))
    }

    /// The name, such as `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            trust_domain: self.clone(),
            path: String::new(),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A SPIFFE ID: `spiffe://<trust-domain><path>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    path: String,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(td)?;
        validate_path(path)?;
        Ok(Self {
            trust_domain: TrustDomain(td.to_owned()),
            path: path.to_owned(),
        })
    }

    /// Builds `spiffe://<td><path>` from parts, validating the path.
    pub fn from_parts(td: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        validate_path(path)?;
        let id = Self {
            trust_domain: td.clone(),
            path: path.to_owned(),
        };
        if id.to_string().len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        Ok(id)
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// True when this ID names a workload (has a path), not a trust domain.
    pub fn is_workload(&self) -> bool {
        !self.path.is_empty()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain.0, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    match td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(SpiffeIdError::BadTrustDomainChar(c)),
        None => Ok(()),
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(SpiffeIdError::BadPathChar(
            path.chars().next().unwrap_or('?'),
        ));
    };
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(SpiffeIdError::BadPathChar(c));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for s in [
            "spiffe://example.org",
            "spiffe://example.org/ns/default/sa/web",
            "spiffe://a-b_c.d/X.y-Z_1",
            "spiffe://td/...x/.y",
        ] {
            let id = SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(id.to_string(), s);
        }
        let id = SpiffeId::parse("spiffe://example.org/ns/a").unwrap();
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.path(), "/ns/a");
    }

    #[test]
    fn refuses_each_malformation_with_its_reason() {
        use SpiffeIdError::*;
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("http://example.org/a", WrongScheme),
            ("SPIFFE://example.org/a", WrongScheme),
            ("spiffe:/example.org/a", WrongScheme),
            ("spiffe:///a", MissingTrustDomain),
            ("spiffe://Example.org/a", BadTrustDomainChar('E')),
            ("spiffe://example.org:8443/a", BadTrustDomainChar(':')),
            ("spiffe://user@example.org/a", BadTrustDomainChar('@')),
            ("spiffe://example.org/a/", EmptySegment),
            ("spiffe://example.org//a", EmptySegment),
            ("spiffe://example.org/", EmptySegment),
            ("spiffe://example.org/ns/../x", DotSegment),
            ("spiffe://example.org/./x", DotSegment),
            ("spiffe://example.org/ns/%61dmin", BadPathChar('%')),
            ("spiffe://example.org/x?q=1", BadPathChar('?')),
            ("spiffe://example.org/x#f", BadPathChar('#')),
            ("spiffe://example.org/a b", BadPathChar(' ')),
            ("spiffe://example.org?q", BadTrustDomainChar('?')),
            ("spiffe://example.org/é", BadPathChar('é')),
        ];
        for (s, want) in cases {
            assert_eq!(SpiffeId::parse(s).as_ref(), Err(want), "{s}");
        }
    }

    #[test]
    fn enforces_length_limits() {
        let long_td = "a".repeat(MAX_TRUST_DOMAIN_LEN + 1);
        assert_eq!(
            SpiffeId::parse(&format!("spiffe://{long_td}/x")),
            Err(SpiffeIdError::TrustDomainTooLong)
        );
        let long_path = "/a".repeat(MAX_SPIFFE_ID_LEN);
        assert_eq!(
            SpiffeId::parse(&format!("spiffe://td{long_path}")),
            Err(SpiffeIdError::TooLong)
        );
        let just = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN - 12));
        assert_eq!(just.len(), MAX_SPIFFE_ID_LEN);
        assert!(SpiffeId::parse(&just).is_ok());
    }

    #[test]
    fn trust_domain_parses_bare_and_as_id() {
        assert_eq!(
            TrustDomain::parse("example.org").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(
            TrustDomain::parse("spiffe://example.org").unwrap().as_str(),
            "example.org"
        );
        assert!(TrustDomain::parse("spiffe://example.org/a").is_err());
        assert!(TrustDomain::parse("Example.org").is_err());
        assert!(TrustDomain::parse("").is_err());
    }

    #[test]
    fn serde_refuses_bad_ids() {
        let err = serde_json::from_str::<SpiffeId>("\"spiffe://td/a/../b\"").unwrap_err();
        assert!(err.to_string().contains("\"..\""), "{err}");
        let ok: SpiffeId = serde_json::from_str("\"spiffe://td/a\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"spiffe://td/a\"");
    }
}
