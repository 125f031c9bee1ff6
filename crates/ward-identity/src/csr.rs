//! Validation of PKCS#10 certificate signing requests for X.509-SVIDs.
//!
//! The requester keeps its private key; the CSR carries the public key and the
//! SPIFFE ID it asks for. A CSR is accepted only when its signature verifies
//! (proof of possession) and it names exactly one SAN, a URI that is a valid
//! workload SPIFFE ID in our trust domain. A DNS or IP SAN beside the URI is
//! refused outright: a peer that matched a DNS SAN where a URI SAN was meant
//! is one of the classic mTLS bypasses.

use rcgen::{CertificateSigningRequestParams, PublicKey, SanType};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;

use crate::spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The input is neither a PEM `CERTIFICATE REQUEST` nor DER PKCS#10.
    #[error("the CSR is not a valid PKCS#10 certificate request")]
    Malformed,
    /// The CSR's self-signature does not verify.
    #[error("the CSR's signature does not verify (proof of possession failed)")]
    BadSignature,
    /// The CSR asks for an extension other than SAN, key usage or EKU.
    #[error("the CSR requests an extension Ward does not issue")]
    UnsupportedExtension,
    /// The CSR's key or signature algorithm is not one Ward signs.
    #[error("the CSR uses an unsupported key or signature algorithm")]
    UnsupportedAlgorithm,
    /// The CSR has no SAN at all.
    #[error("the CSR has no URI SAN; it must carry exactly one, the SPIFFE ID")]
    NoUriSan,
    /// The CSR has more than one SAN, or a SAN that is not a URI.
    #[error("the CSR must carry exactly one SAN, a URI SAN; found {0}")]
    WrongSans(String),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("the CSR's URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(SpiffeIdError),
    /// The SPIFFE ID names another trust domain.
    #[error("the CSR's SPIFFE ID {id} is not in trust domain {expected}")]
    WrongTrustDomain {
        /// The ID in the CSR.
        id: String,
        /// Our trust domain.
        expected: String,
    },
    /// The SPIFFE ID has no path: a trust domain cannot be a workload.
    #[error("the CSR's SPIFFE ID {0} has no path; a workload ID needs one")]
    NotWorkloadId(String),
}

/// A CSR whose signature verified and whose single URI SAN is a SPIFFE ID
/// of our trust domain.
#[derive(Debug, Clone)]
pub struct ValidatedCsr {
    spiffe_id: SpiffeId,
    public_key: PublicKey,
}

impl ValidatedCsr {
    /// The SPIFFE ID the CSR asks for.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The requester's public key, to be certified.
    pub(crate) fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
}

/// Parses a CSR given as PEM text or DER bytes and validates it for `td`.
pub fn validate_csr(input: &[u8], td: &TrustDomain) -> Result<ValidatedCsr, CsrError> {
    let der = if input.starts_with(b"-----BEGIN") {
        CertificateSigningRequestDer::from_pem_slice(input).map_err(|_| CsrError::Malformed)?
    } else {
        CertificateSigningRequestDer::from(input.to_vec())
    };
    let parsed = CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => CsrError::BadSignature,
        rcgen::Error::UnsupportedExtension => CsrError::UnsupportedExtension,
        rcgen::Error::UnsupportedSignatureAlgorithm => CsrError::UnsupportedAlgorithm,
        _ => CsrError::Malformed,
    })?;
    let sans = &parsed.params.subject_alt_names;
    let uri = match sans.as_slice() {
        [] => return Err(CsrError::NoUriSan),
        [SanType::URI(uri)] => uri.as_str().to_owned(),
        other => return Err(CsrError::WrongSans(describe_sans(other))),
    };
    let spiffe_id = SpiffeId::parse(&uri).map_err(CsrError::BadSpiffeId)?;
    if spiffe_id.trust_domain() != td {
        return Err(CsrError::WrongTrustDomain {
            id: spiffe_id.to_string(),
            expected: td.to_string(),
        });
    }
    if !spiffe_id.is_workload() {
        return Err(CsrError::NotWorkloadId(spiffe_id.to_string()));
    }
    Ok(ValidatedCsr {
        spiffe_id,
        public_key: parsed.public_key,
    })
}

fn describe_sans(sans: &[SanType]) -> String {
    let kinds: Vec<&str> = sans
        .iter()
        .map(|s| match s {
            SanType::URI(_) => "URI",
            SanType::DnsName(_) => "DNS",
            SanType::IpAddress(_) => "IP",
            SanType::Rfc822Name(_) => "email",
            _ => "other",
        })
        .collect();
    format!("{} SANs ({})", sans.len(), kinds.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn td() -> TrustDomain {
        TrustDomain::parse("example.org").unwrap()
    }

    fn csr_with(sans: Vec<SanType>) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn accepts_one_uri_san_in_our_trust_domain() {
        let csr = csr_with(vec![uri("spiffe://example.org/ns/a/sa/b")]);
        let v = validate_csr(csr.as_bytes(), &td()).unwrap();
        assert_eq!(v.spiffe_id().to_string(), "spiffe://example.org/ns/a/sa/b");
    }

    #[test]
    fn accepts_der_input() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![uri("spiffe://example.org/a")];
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        assert!(validate_csr(&der, &td()).is_ok());
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert_eq!(
            validate_csr(b"hello", &td()).unwrap_err(),
            CsrError::Malformed
        );
        assert_eq!(
            validate_csr(
                b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                &td()
            )
            .unwrap_err(),
            CsrError::Malformed
        );
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![uri("spiffe://example.org/a")];
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        assert_eq!(
            validate_csr(&der[..der.len() - 5], &td()).unwrap_err(),
            CsrError::Malformed
        );
    }

    #[test]
    fn refuses_a_tampered_signature() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![uri("spiffe://example.org/a")];
        let mut der = params.serialize_request(&key).unwrap().der().to_vec();
        let last = der.len() - 3;
        der[last] ^= 0x55;
        assert_eq!(
            validate_csr(&der, &td()).unwrap_err(),
            CsrError::BadSignature
        );
    }

    #[test]
    fn refuses_dns_san_beside_or_instead_of_uri() {
        let both = csr_with(vec![
            uri("spiffe://example.org/a"),
            SanType::DnsName("a.example.org".try_into().unwrap()),
        ]);
        assert!(matches!(
            validate_csr(both.as_bytes(), &td()),
            Err(CsrError::WrongSans(_))
        ));
        let dns = csr_with(vec![SanType::DnsName("example.org".try_into().unwrap())]);
        assert!(matches!(
            validate_csr(dns.as_bytes(), &td()),
            Err(CsrError::WrongSans(_))
        ));
        let two = csr_with(vec![
            uri("spiffe://example.org/a"),
            uri("spiffe://example.org/b"),
        ]);
        assert!(matches!(
            validate_csr(two.as_bytes(), &td()),
            Err(CsrError::WrongSans(_))
        ));
        assert_eq!(
            validate_csr(csr_with(vec![]).as_bytes(), &td()).unwrap_err(),
            CsrError::NoUriSan
        );
    }

    #[test]
    fn refuses_bad_ids_other_domains_and_bare_domains() {
        let bad = csr_with(vec![uri("spiffe://example.org/a/../b")]);
        assert!(matches!(
            validate_csr(bad.as_bytes(), &td()),
            Err(CsrError::BadSpiffeId(_))
        ));
        let other = csr_with(vec![uri("spiffe://evil.org/a")]);
        assert!(matches!(
            validate_csr(other.as_bytes(), &td()),
            Err(CsrError::WrongTrustDomain { .. })
        ));
        let bare = csr_with(vec![uri("spiffe://example.org")]);
        assert!(matches!(
            validate_csr(bare.as_bytes(), &td()),
            Err(CsrError::NotWorkloadId(_))
        ));
    }
}

/// A new ECDSA P-256 key and a CSR for `id` signed by it, both PEM. The key
/// stays with the caller; only the CSR goes to the server.
pub fn generate_key_and_csr(
    id: &SpiffeId,
) -> Result<(zeroize::Zeroizing<String>, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((zeroize::Zeroizing::new(key.serialize_pem()), csr))
}

#[cfg(test)]
mod generate_tests {
    use super::*;

    #[test]
    fn generated_csr_validates_for_its_id() {
        let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
        let (key, csr) = generate_key_and_csr(&id).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let v = validate_csr(csr.as_bytes(), id.trust_domain()).unwrap();
        assert_eq!(v.spiffe_id(), &id);
    }
}
