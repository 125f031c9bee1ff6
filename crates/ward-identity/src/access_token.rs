//! Verifying OAuth access tokens (JWTs) offline against an issuer's JWKS,
//! per RFC 8725: the algorithm comes from an allow-list and must match the
//! key it names, `none` and every HMAC are refused (no key confusion), the
//! key is chosen by `kid` among the JWKS keys only (never fetched from a
//! header: `jku`, `x5u`, `x5c` and an embedded `jwk` make the token
//! invalid), and `iss`, `aud` and `exp` are required, `nbf` honoured.
//! One verifier for every place that reads Ward's tokens.

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{DecodingKey, Validation};

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// `iss`, compared exactly.
    pub issuer: &'a str,
    /// One of these must be in `aud`; empty means `aud` is not checked
    /// (introspection), though it must still be present.
    pub audiences: &'a [String],
    /// The algorithms accepted (`ES256`, `EdDSA`, `RS256`…; never `none` or `HS*`).
    pub algorithms: &'a [Algorithm],
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway: u64,
}

/// Why a token was refused. The text names the check that failed and
/// never carries the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a JWS compact serialization")]
    Malformed,
    #[error("algorithm {0} is not allowed")]
    Algorithm(String),
    #[error("the token header carries {0}, which is never used: keys come from the issuer's JWKS")]
    KeyInHeader(&'static str),
    #[error("the token has no kid")]
    NoKid,
    #[error("no key {0:?} in the issuer's JWKS")]
    UnknownKid(String),
    #[error("the key {0:?} does not match the token's algorithm")]
    KeyMismatch(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token lacks the required claim {0}")]
    Missing(&'static str),
    #[error("iss is not the expected issuer")]
    Issuer,
    #[error("aud does not name this audience")]
    Audience,
    #[error("{0}")]
    Invalid(String),
}

fn alg_name(a: Algorithm) -> String {
    format!("{a:?}")
}

/// True for the algorithms that are never acceptable with a JWKS: every
/// HMAC (the "public key as HMAC secret" confusion).
fn symmetric(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Refuses `alg: none` in any casing before the JWT library sees it, so
/// the reason is precise (the library refuses it too).
fn raw_alg(token: &str) -> Result<String, TokenError> {
    use base64::Engine;
    let head = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| TokenError::Malformed)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    let obj = v.as_object().ok_or(TokenError::Malformed)?;
    for field in ["jku", "x5u", "x5c", "jwk"] {
        if obj.contains_key(field) {
            return Err(TokenError::KeyInHeader(match field {
                "jku" => "jku",
                "x5u" => "x5u",
                "x5c" => "x5c",
                _ => "jwk",
            }));
        }
    }
    if obj.contains_key("crit") {
        return Err(TokenError::Invalid(
            "the token header names critical extensions (crit), which are not supported".into(),
        ));
    }
    let alg = obj
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or(TokenError::Malformed)?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::Algorithm(alg.to_owned()));
    }
    Ok(alg.to_owned())
}

/// A decoding key for a JWK, checked against the algorithm.
fn key_for(jwk: &serde_json::Value, alg: Algorithm, kid: &str) -> Result<DecodingKey, TokenError> {
    let mismatch = || TokenError::KeyMismatch(kid.to_owned());
    if let Some(a) = jwk["alg"].as_str()
        && a != alg_name(alg)
    {
        return Err(mismatch());
    }
    if let Some(u) = jwk["use"].as_str()
        && u != "sig"
    {
        return Err(mismatch());
    }
    let s = |f: &str| jwk[f].as_str().unwrap_or("");
    match (jwk["kty"].as_str(), alg) {
        (Some("EC"), Algorithm::ES256) if s("crv") == "P-256" => {
            DecodingKey::from_ec_components(s("x"), s("y")).map_err(|_| mismatch())
        }
        (Some("EC"), Algorithm::ES384) if s("crv") == "P-384" => {
            DecodingKey::from_ec_components(s("x"), s("y")).map_err(|_| mismatch())
        }
        (Some("OKP"), Algorithm::EdDSA) if s("crv") == "Ed25519" => {
            DecodingKey::from_ed_components(s("x")).map_err(|_| mismatch())
        }
        (
            Some("RSA"),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => DecodingKey::from_rsa_components(s("n"), s("e")).map_err(|_| mismatch()),
        _ => Err(mismatch()),
    }
}

/// Verifies `token` against `jwks` (`{"keys": [...]}`) and returns its claims.
pub fn verify(
    token: &str,
    jwks: &serde_json::Value,
    expect: &Expect<'_>,
) -> Result<serde_json::Value, TokenError> {
    if token.len() > 16 * 1024 || token.split('.').count() != 3 {
        return Err(TokenError::Malformed);
    }
    let raw = raw_alg(token)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Algorithm(raw))?;
    if symmetric(header.alg) || !expect.algorithms.contains(&header.alg) {
        return Err(TokenError::Algorithm(alg_name(header.alg)));
    }
    let keys = jwks["keys"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    // A token without kid is matched only when the JWKS holds one key.
    let (jwk, kid) = match header.kid {
        Some(kid) => (
            keys.iter()
                .find(|k| k["kid"].as_str() == Some(kid.as_str()))
                .ok_or_else(|| TokenError::UnknownKid(kid.chars().take(64).collect()))?,
            kid,
        ),
        None if keys.len() == 1 => (&keys[0], String::new()),
        None => return Err(TokenError::NoKid),
    };
    let key = key_for(jwk, header.alg, &kid)?;
    let mut v = Validation::new(header.alg);
    v.leeway = expect.leeway;
    v.validate_nbf = true;
    v.set_issuer(&[expect.issuer]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    if expect.audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(expect.audiences);
    }
    use jsonwebtoken::errors::ErrorKind as K;
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| match e.kind() {
            K::InvalidSignature | K::InvalidEcdsaKey => TokenError::Signature,
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidIssuer => TokenError::Issuer,
            K::InvalidAudience => TokenError::Audience,
            K::MissingRequiredClaim(c) => TokenError::Missing(match c.as_str() {
                "exp" => "exp",
                "iss" => "iss",
                _ => "aud",
            }),
            _ => TokenError::Invalid(format!("the token is invalid: {e}")),
        })?;
    let claims = data.claims;
    // jsonwebtoken accepts a missing aud when it is not validated: require it.
    if claims.get("aud").is_none() {
        return Err(TokenError::Missing("aud"));
    }
    // NumericDate is seconds: a fraction or a string is not one (and a
    // float would compare differently from one verifier to the next).
    if !(claims["exp"].is_i64() || claims["exp"].is_u64()) {
        return Err(TokenError::Missing("exp"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use serde_json::json;

    const ISS: &str = "https://issuer.test";

    struct Key {
        pair: EcdsaKeyPair,
        jwks: serde_json::Value,
    }

    fn key() -> Key {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref()).unwrap();
        let p = pair.public_key().as_ref().to_vec();
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])}]});
        Key { pair, jwks }
    }

    fn enc(v: &serde_json::Value) -> String {
        B64.encode(serde_json::to_vec(v).unwrap())
    }

    fn sign(k: &Key, header: serde_json::Value, claims: serde_json::Value) -> String {
        let input = format!("{}.{}", enc(&header), enc(&claims));
        let sig = k.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISS, "aud": "orders", "sub": "reports", "exp": now() + 300, "iat": now(), "jti": "j"})
    }

    fn check(k: &Key, token: &str) -> Result<serde_json::Value, TokenError> {
        let aud = ["orders".to_owned()];
        verify(
            token,
            &k.jwks,
            &Expect {
                issuer: ISS,
                audiences: &aud,
                algorithms: &[Algorithm::ES256],
                leeway: 5,
            },
        )
    }

    fn es256() -> serde_json::Value {
        json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"})
    }

    #[test]
    fn exp_must_be_whole_seconds() {
        let k = key();
        let mut c = claims();
        c["exp"] = json!((now() + 300) as f64 + 0.5);
        assert_eq!(
            check(&k, &sign(&k, es256(), c)),
            Err(TokenError::Missing("exp"))
        );
    }

    #[test]
    fn a_good_token_verifies() {
        let k = key();
        let c = check(&k, &sign(&k, es256(), claims())).unwrap();
        assert_eq!(c["sub"], "reports");
    }

    #[test]
    fn alg_none_in_every_casing_is_refused() {
        let k = key();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = format!(
                "{}.{}.",
                enc(&json!({"alg": alg, "kid": "k1"})),
                enc(&claims())
            );
            assert_eq!(check(&k, &t), Err(TokenError::Algorithm(alg.into())));
        }
    }

    #[test]
    fn hmac_keyed_with_the_public_key_is_refused() {
        let k = key();
        let public = serde_json::to_vec(&k.jwks["keys"][0]).unwrap();
        for alg in ["HS256", "HS384", "HS512"] {
            let input = format!(
                "{}.{}",
                enc(&json!({"alg": alg, "kid": "k1"})),
                enc(&claims())
            );
            let tag = aws_lc_rs::hmac::sign(
                &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public),
                input.as_bytes(),
            );
            let t = format!("{input}.{}", B64.encode(tag.as_ref()));
            assert!(
                matches!(check(&k, &t), Err(TokenError::Algorithm(_))),
                "{alg}"
            );
        }
    }

    #[test]
    fn keys_come_only_from_the_jwks() {
        let k = key();
        let mut h = es256();
        h["kid"] = "../../etc/passwd".into();
        assert!(matches!(
            check(&k, &sign(&k, h, claims())),
            Err(TokenError::UnknownKid(_))
        ));
        for (field, v) in [
            ("jku", json!("https://evil.test/jwks")),
            ("x5u", json!("https://evil.test/cert")),
            ("x5c", json!(["MIIB"])),
            ("jwk", k.jwks["keys"][0].clone()),
        ] {
            let mut h = es256();
            h[field] = v;
            assert!(
                matches!(
                    check(&k, &sign(&k, h, claims())),
                    Err(TokenError::KeyInHeader(_))
                ),
                "{field}"
            );
        }
        // Signed by another key under the same kid.
        let other = key();
        assert_eq!(
            check(&k, &sign(&other, es256(), claims())),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn the_ecdsa_zero_signature_is_refused() {
        // CVE-2022-21449: r = s = 0 verified as valid in some JDKs.
        let k = key();
        let input = format!("{}.{}", enc(&es256()), enc(&claims()));
        let t = format!("{input}.{}", B64.encode([0u8; 64]));
        assert_eq!(check(&k, &t), Err(TokenError::Signature));
    }

    #[test]
    fn claims_are_checked() {
        let k = key();
        let with = |f: &str, v: serde_json::Value| {
            let mut c = claims();
            c[f] = v;
            sign(&k, es256(), c)
        };
        let without = |f: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(f);
            sign(&k, es256(), c)
        };
        assert_eq!(
            check(&k, &with("exp", json!(now() - 60))),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check(&k, &with("nbf", json!(now() + 600))),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            check(&k, &with("aud", json!("payments"))),
            Err(TokenError::Audience)
        );
        assert_eq!(
            check(&k, &with("iss", json!("https://evil.test"))),
            Err(TokenError::Issuer)
        );
        assert_eq!(check(&k, &without("exp")), Err(TokenError::Missing("exp")));
        assert_eq!(check(&k, &without("aud")), Err(TokenError::Missing("aud")));
        // A tampered payload breaks the signature.
        let good = sign(&k, es256(), claims());
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims();
        c["sub"] = "admin".into();
        let t = format!("{}.{}.{}", parts[0], enc(&c), parts[2]);
        assert_eq!(check(&k, &t), Err(TokenError::Signature));
    }
}
