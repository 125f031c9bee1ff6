//! Authentication at the edge: which credential a request carries (and
//! refusing a request that carries two that disagree), bearer JWTs checked
//! offline against each trusted issuer's JWKS with
//! [`ward_identity::access_token::verify`] (refreshed on an unknown `kid`
//! at a bounded rate) and its revoked list (polled; fail closed when it
//! goes stale), API keys by hash, client certificates from the handshake.

use std::collections::HashMap;

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};
use ward_identity::access_token::TokenError;
use ward_policy::edge::Subject;

use crate::config::ApiKeyConfig;

/// Why a request was not authenticated. Only the status reaches the
/// client; the label goes to the log, `/metrics` and the audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential")]
    Missing,
    #[error("two credentials that disagree")]
    Conflicting,
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    #[error("token refused: {0}")]
    Token(TokenError),
    #[error("the token's issuer is not trusted on this route")]
    UntrustedIssuer,
    #[error("the token was revoked")]
    Revoked,
    #[error("the issuer's revoked list is stale; its tokens are refused until it is read again")]
    RevocationStale,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("no client certificate")]
    NoClientCertificate,
}

impl From<ward_oidc::VerifyError> for AuthError {
    fn from(e: ward_oidc::VerifyError) -> Self {
        match e {
            ward_oidc::VerifyError::Token(t) => Self::Token(t),
            ward_oidc::VerifyError::Revoked => Self::Revoked,
            ward_oidc::VerifyError::RevocationStale => Self::RevocationStale,
        }
    }
}

impl AuthError {
    /// The bounded label for `/metrics`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "no_credential",
            Self::Conflicting => "conflicting_credentials",
            Self::NotBearer => "not_bearer",
            Self::Token(TokenError::Expired) => "token_expired",
            Self::Token(TokenError::NotYetValid) => "token_not_yet_valid",
            Self::Token(TokenError::Audience) => "token_audience",
            Self::Token(TokenError::Issuer) => "token_issuer",
            Self::Token(TokenError::Signature) => "token_signature",
            Self::Token(TokenError::Algorithm(_)) => "token_algorithm",
            Self::Token(TokenError::UnknownKid(_) | TokenError::NoKid) => "token_kid",
            Self::Token(TokenError::KeyInHeader(_)) => "token_key_in_header",
            Self::Token(TokenError::Missing(_)) => "token_claim_missing",
            Self::Token(_) => "token_invalid",
            Self::UntrustedIssuer => "token_issuer",
            Self::Revoked => "token_revoked",
            Self::RevocationStale => "revocation_stale",
            Self::UnknownApiKey => "api_key_unknown",
            Self::NoClientCertificate => "no_client_certificate",
        }
    }

    /// 400 for a request that is malformed as such, 503 when the gateway
    /// cannot check, 401 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Conflicting => http::StatusCode::BAD_REQUEST,
            Self::RevocationStale => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// The credentials one request carries, read once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presented {
    /// The bearer token (header, `access_token` query parameter or cookie:
    /// all that were sent agree).
    pub bearer: Option<String>,
    /// The API key (`X-API-Key` or `api_key` query parameter).
    pub api_key: Option<String>,
    /// Whether an `Authorization` header that is not `Bearer` was sent.
    pub other_authorization: bool,
}

fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = String> + 'q {
    // `;` separates too for some servers: both are read as separators.
    query
        .unwrap_or("")
        .split(['&', ';'])
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_encoding::percent_decode_str(k).decode_utf8().ok()?;
            (k == name).then(|| {
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
}

/// Reads every credential place; refuses two values that differ in one
/// kind (two `Authorization` headers, header and query, header and
/// cookie), and a bearer token beside an API key.
pub fn presented(headers: &HeaderMap, query: Option<&str>) -> Result<Presented, AuthError> {
    let mut bearers: Vec<String> = Vec::new();
    let mut other_authorization = false;
    let auth: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
    if auth.len() > 1 {
        return Err(AuthError::Conflicting);
    }
    if let Some(v) = auth.first() {
        let v = v.to_str().map_err(|_| AuthError::NotBearer)?;
        match v.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                bearers.push(token.trim().to_owned())
            }
            _ => other_authorization = true,
        }
    }
    bearers.extend(query_values(query, "access_token"));
    for c in headers.get_all(COOKIE) {
        let Ok(c) = c.to_str() else { continue };
        for pair in c.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k.trim() == "access_token"
            {
                bearers.push(v.trim().to_owned());
            }
        }
    }
    let mut keys: Vec<String> = headers
        .get_all("x-api-key")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    keys.extend(query_values(query, "api_key"));
    let one = |mut v: Vec<String>| -> Result<Option<String>, AuthError> {
        v.dedup();
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            _ => Err(AuthError::Conflicting),
        }
    };
    let bearer = one(bearers)?;
    let api_key = one(keys)?;
    if (bearer.is_some() || other_authorization) && api_key.is_some() {
        return Err(AuthError::Conflicting);
    }
    Ok(Presented {
        bearer,
        api_key,
        other_authorization,
    })
}

/// Credentials must not travel on to the upstream: the query parameters
/// that carry them are dropped (`access_token`, `api_key`).
pub fn strip_credential_params(query: &str) -> String {
    query
        .split('&')
        .map(|part| {
            part.split(';')
                .filter(|pair| {
                    let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
                    let k = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
                    k != "access_token" && k != "api_key"
                })
                .collect::<Vec<_>>()
                .join(";")
        })
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("&")
}

/// A verified API key.
pub struct ApiKeys {
    by_hash: HashMap<String, ApiKeyConfig>,
}

impl ApiKeys {
    pub fn new(keys: &[ApiKeyConfig]) -> Self {
        Self {
            by_hash: keys.iter().map(|k| (k.sha256.clone(), k.clone())).collect(),
        }
    }

    /// The subject of `key`, if it is one of ours. Looked up by its hash:
    /// the comparison is of digests, so it leaks nothing about the key.
    pub fn check(&self, key: &str) -> Result<Subject, AuthError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let k = self.by_hash.get(&hex).ok_or(AuthError::UnknownApiKey)?;
        Ok(Subject {
            sub: k.name.clone(),
            credential: "api_key",
            client_id: k.name.clone(),
            scopes: k.scopes.clone(),
            ..Default::default()
        })
    }
}

pub use ward_oidc::{Issuer, unverified_issuer};

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn two_credentials_that_disagree_are_refused() {
        let one = presented(&headers(&[("authorization", "Bearer a")]), None).unwrap();
        assert_eq!(one.bearer.as_deref(), Some("a"));
        // The same token twice is one credential.
        let same = presented(
            &headers(&[("authorization", "Bearer a")]),
            Some("access_token=a"),
        )
        .unwrap();
        assert_eq!(same.bearer.as_deref(), Some("a"));
        for (h, q) in [
            (vec![("authorization", "Bearer a")], Some("access_token=b")),
            (
                vec![("authorization", "Bearer a"), ("authorization", "Bearer a")],
                None,
            ),
            (
                vec![
                    ("authorization", "Bearer a"),
                    ("cookie", "x=1; access_token=b"),
                ],
                None,
            ),
            (
                vec![("authorization", "Bearer a"), ("x-api-key", "k")],
                None,
            ),
            (vec![("x-api-key", "k1")], Some("api_key=k2")),
            (vec![], Some("access_token=a&access_token=b")),
        ] {
            assert_eq!(
                presented(&headers(&h), q),
                Err(AuthError::Conflicting),
                "{h:?} {q:?}"
            );
        }
        let basic = presented(&headers(&[("authorization", "Basic Zm9vOmJhcg==")]), None).unwrap();
        assert!(basic.other_authorization && basic.bearer.is_none());
    }

    #[test]
    fn credential_parameters_do_not_travel_upstream() {
        assert_eq!(
            strip_credential_params("a=1&access_token=t&api%5Fkey=k&b=2"),
            "a=1&b=2"
        );
        assert_eq!(strip_credential_params("x=1;access_token=t&b=2"), "x=1&b=2");
        let semi = presented(
            &headers(&[("authorization", "Bearer a")]),
            Some("x=1;access_token=b"),
        );
        assert_eq!(semi, Err(AuthError::Conflicting));
        let spaced = presented(
            &headers(&[("authorization", "Bearer a"), ("cookie", "access_token =b")]),
            None,
        );
        assert_eq!(spaced, Err(AuthError::Conflicting));
    }

    #[test]
    fn api_keys_are_matched_by_hash() {
        let key = "k-123";
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let keys = ApiKeys::new(&[ApiKeyConfig {
            name: "ci".into(),
            sha256: hex,
            scopes: vec!["deploy".into()],
        }]);
        let s = keys.check(key).unwrap();
        assert_eq!((s.sub.as_str(), s.credential), ("ci", "api_key"));
        assert_eq!(keys.check("k-124").unwrap_err(), AuthError::UnknownApiKey);
    }
}
