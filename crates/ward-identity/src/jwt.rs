//! JWT-SVIDs: ES256 tokens whose `sub` is a SPIFFE ID (SPIFFE JWT-SVID
//! standard). ES256, not EdDSA: py-spiffe and other clients reject EdDSA
//! JWT-SVIDs. Every key carries a `kid`, which clients need to pick the key
//! out of the JWT bundle.

use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::spiffe_id::SpiffeId;

/// Why a JWT-SVID could not be minted or its key loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// At least one audience is required (SPIFFE JWT-SVID §3).
    #[error("a JWT-SVID needs at least one audience")]
    NoAudience,
    /// An audience is empty.
    #[error("an audience cannot be empty")]
    EmptyAudience,
    /// The stored key is not a PKCS#8 P-256 key.
    #[error("the JWT signing key is not a PKCS#8 ECDSA P-256 key")]
    BadKey,
    /// Signing failed.
    #[error("signing the JWT-SVID failed: {0}")]
    Signing(String),
}

/// A JWT-SVID signing key: an ECDSA P-256 key with a key ID. The key is
/// held only by the crypto library (which cleanses it when dropped, on
/// seal), not as a DER copy (jsonwebtoken's `EncodingKey` keeps one in a
/// plain buffer, so it is not used for signing); the JWS around the
/// signature is the compact serialization of RFC 7515.
pub struct JwtKey {
    kid: String,
    signer: EcdsaKeyPair,
    /// Uncompressed public point: 0x04 || x || y.
    public_point: Vec<u8>,
}

/// The protected header of every JWT-SVID.
#[derive(Serialize)]
struct JoseHeader<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
}

/// One JWS part: JSON, base64url without padding.
fn b64_json<T: Serialize>(v: &T) -> Result<String, JwtError> {
    let json = serde_json::to_vec(v).map_err(|e| JwtError::Signing(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// The claims of a JWT-SVID.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: String,
    aud: &'a [String],
    exp: i64,
    iat: i64,
}

impl JwtKey {
    /// Generates a new key with a random key ID; returns the key ID and the
    /// PKCS#8 DER private key to store (encrypted).
    pub fn generate() -> Result<(String, Zeroizing<Vec<u8>>), JwtError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| JwtError::Signing(e.to_string()))?;
        let mut kid = [0u8; 16];
        aws_lc_rs::rand::fill(&mut kid).map_err(|_| JwtError::Signing("random key ID".into()))?;
        Ok((
            URL_SAFE_NO_PAD.encode(kid),
            Zeroizing::new(key.serialize_der()),
        ))
    }

    /// Loads a stored key.
    pub fn load(kid: &str, key_pkcs8: &[u8]) -> Result<Self, JwtError> {
        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key_pkcs8)
            .map_err(|_| JwtError::BadKey)?;
        let public_point = signer.public_key().as_ref().to_vec();
        Ok(Self {
            kid: kid.to_owned(),
            signer,
            public_point,
        })
    }

    /// The key ID.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Mints a JWT-SVID for `sub`, valid for `ttl` from `now`.
    pub fn mint(
        &self,
        sub: &SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<String, JwtError> {
        if audience.is_empty() {
            return Err(JwtError::NoAudience);
        }
        if audience.iter().any(|a| a.is_empty()) {
            return Err(JwtError::EmptyAudience);
        }
        let header = JoseHeader {
            alg: "ES256",
            kid: &self.kid,
            typ: "JWT",
        };
        let iat = now.unix_timestamp();
        let claims = Claims {
            sub: sub.to_string(),
            aud: audience,
            exp: iat + ttl.as_secs() as i64,
            iat,
        };
        let mut token = b64_json(&header)?;
        token.push('.');
        token.push_str(&b64_json(&claims)?);
        // ES256 signatures are r || s, 32 bytes each (RFC 7518 §3.4): the
        // FIXED signing algorithm produces exactly that.
        let signature = self
            .signer
            .sign(&aws_lc_rs::rand::SystemRandom::new(), token.as_bytes())
            .map_err(|_| JwtError::Signing("ECDSA signing failed".into()))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(token)
    }

    /// The public key as a JWK with the given `use` (`jwt-svid` in SPIFFE
    /// bundles, `sig` for OIDC).
    pub fn jwk(&self, key_use: &str) -> serde_json::Value {
        ec_p256_jwk(&self.public_point, Some(&self.kid), key_use)
    }
}

/// Validates a JWT-SVID (RFC 8725): ES256 only (so `none`, HMAC keyed with
/// the public key and every other algorithm confusion are refused), the
/// key chosen by `kid` from `jwks` (looked up, never fetched), `exp`, `sub`
/// and `aud` required, `aud` must contain `audience`, `typ` if present
/// `JWT` or `JOSE`, and `sub` must be a SPIFFE ID of trust domain `td`.
/// Returns the SPIFFE ID and every claim.
pub fn validate_jwt_svid(
    token: &str,
    audience: &str,
    jwks: &serde_json::Value,
    td: &str,
) -> Result<(SpiffeId, serde_json::Value), String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    if header.alg != Algorithm::ES256 {
        return Err(format!("algorithm {:?} is not allowed", header.alg));
    }
    if let Some(typ) = &header.typ
        && typ != "JWT"
        && typ != "JOSE"
    {
        return Err(format!("typ {typ:?} is not JWT or JOSE"));
    }
    let kid = header.kid.ok_or("the token has no kid")?;
    let key = jwks["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kid"] == kid.as_str()))
        .ok_or_else(|| format!("no key {kid:?} in the trust bundle"))?;
    let dk = DecodingKey::from_ec_components(
        key["x"].as_str().unwrap_or(""),
        key["y"].as_str().unwrap_or(""),
    )
    .map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "sub", "aud"]);
    v.leeway = 5;
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &dk, &v).map_err(|e| e.to_string())?;
    let sub = data.claims["sub"].as_str().unwrap_or_default();
    let id = SpiffeId::parse(sub).map_err(|e| format!("sub {sub:?}: {e}"))?;
    if id.trust_domain().as_str() != td {
        return Err(format!("sub {sub:?} is not in trust domain {td}"));
    }
    Ok((id, data.claims))
}

/// A JWK for an uncompressed P-256 point (`0x04 || x || y`).
pub(crate) fn ec_p256_jwk(point: &[u8], kid: Option<&str>, key_use: &str) -> serde_json::Value {
    let (x, y) = if point.len() == 65 {
        (&point[1..33], &point[33..65])
    } else {
        (&[][..], &[][..])
    };
    let mut jwk = serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "use": key_use,
    });
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn minted_token_verifies_with_the_jwk_and_carries_the_claims() {
        let (kid, der) = JwtKey::generate().unwrap();
        let key = JwtKey::load(&kid, &der).unwrap();
        let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
        let token = key
            .mint(
                &id,
                &["aud1".to_string()],
                Duration::from_secs(300),
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
        let jwk = key.jwk("jwt-svid");
        let dk =
            DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
                .unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["aud1"]);
        v.set_required_spec_claims(&["exp", "sub", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &v).unwrap();
        assert_eq!(data.claims["sub"], "spiffe://example.org/a");
        let exp = data.claims["exp"].as_i64().unwrap();
        let iat = data.claims["iat"].as_i64().unwrap();
        assert_eq!(exp - iat, 300);
        // Another audience is refused by a validating client.
        let mut other = Validation::new(Algorithm::ES256);
        other.set_audience(&["aud2"]);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &other).is_err());
    }

    #[test]
    fn audience_is_required() {
        let (kid, der) = JwtKey::generate().unwrap();
        let key = JwtKey::load(&kid, &der).unwrap();
        let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            key.mint(&id, &[], Duration::from_secs(1), now),
            Err(JwtError::NoAudience)
        ));
        assert!(matches!(
            key.mint(&id, &[String::new()], Duration::from_secs(1), now),
            Err(JwtError::EmptyAudience)
        ));
        assert!(matches!(JwtKey::load("k", b"junk"), Err(JwtError::BadKey)));
    }
}
