//! Trust bundles: the CA certificates and JWT keys a verifier needs, as PEM
//! and as a SPIFFE bundle (SPIFFE Trust Domain and Bundle §4: a JWKS whose
//! keys have `use` `x509-svid` or `jwt-svid`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::jwt::{JwtKey, ec_p256_jwk};

/// Builds the SPIFFE bundle JSON for a set of X.509 roots (PEM) and JWT keys.
/// `sequence` increases whenever the bundle changes; `refresh_hint` tells
/// clients how often to poll, in seconds.
pub fn spiffe_bundle(
    roots_pem: &[String],
    jwt_keys: &[&JwtKey],
    sequence: i64,
    refresh_hint: u64,
) -> serde_json::Value {
    let mut keys = Vec::new();
    for pem in roots_pem {
        let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes()) else {
            continue;
        };
        let Ok((_, cert)) = X509Certificate::from_der(&der) else {
            continue;
        };
        let point = cert.public_key().subject_public_key.data.to_vec();
        let mut jwk = ec_p256_jwk(&point, None, "x509-svid");
        jwk["x5c"] = serde_json::json!([STANDARD.encode(&der)]);
        keys.push(jwk);
    }
    for key in jwt_keys {
        keys.push(key.jwk("jwt-svid"));
    }
    serde_json::json!({
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::generate_root;
    use crate::spiffe_id::TrustDomain;
    use std::time::Duration;

    #[test]
    fn bundle_has_x509_and_jwt_keys() {
        let td = TrustDomain::parse("example.org").unwrap();
        let m = generate_root(
            &td,
            "1",
            Duration::from_secs(60),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let (kid, der) = JwtKey::generate().unwrap();
        let jwt = JwtKey::load(&kid, &der).unwrap();
        let b = spiffe_bundle(&m.bundle_pem, &[&jwt], 7, 300);
        let keys = b["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["use"], "x509-svid");
        assert_eq!(keys[0]["x5c"].as_array().unwrap().len(), 1);
        assert_eq!(keys[0]["x"].as_str().unwrap().len(), 43);
        assert_eq!(keys[1]["use"], "jwt-svid");
        assert_eq!(keys[1]["kid"], kid.as_str());
        assert_eq!(b["spiffe_sequence"], 7);
    }
}
