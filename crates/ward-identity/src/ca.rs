//! The certificate authority: creating a CA (a self-signed root, or an
//! intermediate under an upstream CA the operator imports) and signing
//! X.509-SVIDs with it.
//!
//! Keys are ECDSA P-256 (the SPIFFE ecosystem's common denominator). Every
//! CA generation gets a distinct subject name and every certificate an
//! authority key identifier, so that verifiers with an old and a new CA in the
//! same bundle pick the right issuer during a rotation.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::{Zeroize, Zeroizing};

use crate::csr::ValidatedCsr;
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// How far back a new certificate's `notBefore` is set, so that peers whose
/// clocks run a little behind accept it at once (SPIRE does the same).
pub const BACKDATE: Duration = Duration::from_secs(10);

/// Why a CA could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Key generation or signing failed inside the crypto library.
    #[error("CA key operation failed: {0}")]
    Crypto(String),
    /// A certificate given as PEM could not be parsed.
    #[error("{what} is not a PEM X.509 certificate")]
    BadCertificate {
        /// Which input.
        what: &'static str,
    },
    /// A private key could not be parsed.
    #[error("{what} is not a PKCS#8 ECDSA P-256 private key in PEM")]
    BadKey {
        /// Which input.
        what: &'static str,
    },
    /// The upstream certificate is not a CA certificate.
    #[error("the upstream certificate is not a CA (basicConstraints CA:TRUE is missing)")]
    UpstreamNotCa,
    /// The upstream key does not belong to the upstream certificate.
    #[error("the upstream private key does not match the upstream certificate's public key")]
    UpstreamKeyMismatch,
    /// The CA has expired or will expire before it could sign anything.
    #[error("the CA certificate expired at {0}")]
    Expired(OffsetDateTime),
}

fn crypto(e: rcgen::Error) -> CaError {
    CaError::Crypto(e.to_string())
}

/// Everything needed to store a CA generation and load it again.
pub struct CaMaterial {
    /// The signing CA's certificate, PEM.
    pub cert_pem: String,
    /// The signing CA's private key, PKCS#8 DER. Encrypt before storing.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// Certificates sent after each leaf, PEM, nearest first (empty when the
    /// CA is a root: verifiers have it in their bundle).
    pub chain_pem: Vec<String>,
    /// The trust anchors this CA adds to the bundle, PEM.
    pub bundle_pem: Vec<String>,
    /// The signing CA certificate's `notAfter`.
    pub not_after: OffsetDateTime,
}

fn ca_params(
    td: &TrustDomain,
    label: &str,
    validity: Duration,
    now: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Ward");
    dn.push(DnType::CommonName, format!("Ward CA {td} {label}"));
    params.distinguished_name = dn;
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    // SPIFFE X509-SVID §4.1: a signing certificate may carry the trust
    // domain's own ID; it tells a reader which domain the CA serves.
    if let Ok(uri) = td.id().to_string().try_into() {
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    params
}

/// Creates a self-signed root CA for `td`. `label` makes the subject unique
/// per generation.
pub fn generate_root(
    td: &TrustDomain,
    label: &str,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<CaMaterial, CaError> {
    let key = SecretKeyPair::new(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?);
    let params = ca_params(td, label, validity, now);
    let cert = params.self_signed(&key.0).map_err(crypto)?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key_pkcs8: Zeroizing::new(key.serialize_der()),
        chain_pem: Vec::new(),
        bundle_pem: vec![cert.pem()],
        not_after: params.not_after,
    })
}

/// The operator's upstream CA, which signs Ward's intermediate CAs.
pub struct UpstreamCa {
    /// The upstream CA certificate followed by its chain up to the root, PEM.
    certs_pem: Vec<String>,
    issuer: Issuer<'static, SecretKeyPair>,
    not_after: OffsetDateTime,
}

impl UpstreamCa {
    /// Parses the upstream CA certificate (optionally followed by its own
    /// chain, root last) and its PKCS#8 private key, both PEM, and checks
    /// that the key belongs to the certificate and that it is a CA.
    pub fn from_pem(certs_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let what = "the upstream certificate file";
        let ders: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(certs_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| CaError::BadCertificate { what })?;
        let first = ders.first().ok_or(CaError::BadCertificate { what })?;
        let (_, x509) =
            X509Certificate::from_der(first).map_err(|_| CaError::BadCertificate { what })?;
        if !x509.is_ca() {
            return Err(CaError::UpstreamNotCa);
        }
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
            CaError::BadKey {
                what: "the upstream key file",
            }
        })?;
        let key = SecretKeyPair::from_pkcs8(key_der.secret_pkcs8_der(), "the upstream key file");
        let mut key_der = key_der;
        key_der.zeroize();
        let key = key?;
        if key.subject_public_key_info() != x509.public_key().raw {
            return Err(CaError::UpstreamKeyMismatch);
        }
        let not_after = x509.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(first, key).map_err(crypto)?;
        let certs_pem = ders.iter().map(|d| der_to_pem(d)).collect();
        Ok(Self {
            certs_pem,
            issuer,
            not_after,
        })
    }

    /// The upstream key as PKCS#8 DER, so that it can be sealed in the store
    /// and used again for the next CA rotation.
    pub fn key_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.issuer.key().serialize_der())
    }

    /// The upstream certificates, PEM, CA first.
    pub fn certs_pem(&self) -> &[String] {
        &self.certs_pem
    }

    /// Loads an upstream CA stored by [`UpstreamCa::key_pkcs8`] and
    /// [`UpstreamCa::certs_pem`].
    pub fn from_stored(certs_pem: &[String], key_pkcs8: &[u8]) -> Result<Self, CaError> {
        let key = SecretKeyPair::from_pkcs8(key_pkcs8, "the stored upstream key")?;
        let pem = certs_pem.concat();
        let key_pem = Zeroizing::new(key.0.serialize_pem());
        Self::from_pem(&pem, &key_pem)
    }

    /// Creates a new Ward intermediate CA for `td`, signed by this upstream
    /// CA; its validity never outlasts the upstream certificate's.
    pub fn sign_intermediate(
        &self,
        td: &TrustDomain,
        label: &str,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<CaMaterial, CaError> {
        if self.not_after <= now {
            return Err(CaError::Expired(self.not_after));
        }
        let key =
            SecretKeyPair::new(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?);
        let mut params = ca_params(td, label, validity, now);
        params.not_after = params.not_after.min(self.not_after);
        let cert = params.signed_by(&key, &self.issuer).map_err(crypto)?;
        let mut chain_pem = vec![cert.pem()];
        let upstream_len = self.certs_pem.len();
        // Send the upstream intermediates too, but not the root: verifiers
        // must already hold it as their trust anchor.
        chain_pem.extend(
            self.certs_pem[..upstream_len.saturating_sub(1)]
                .iter()
                .cloned(),
        );
        let root = self.certs_pem.last().cloned().unwrap_or_default();
        Ok(CaMaterial {
            cert_pem: cert.pem(),
            key_pkcs8: Zeroizing::new(key.serialize_der()),
            chain_pem,
            bundle_pem: vec![root],
            not_after: params.not_after,
        })
    }
}

/// A CA's key pair that wipes its serialized private key when dropped
/// (rcgen keeps a PKCS#8 copy beside the crypto library's key, which
/// cleanses its own): a CA key leaves memory when its CA does, on seal.
pub struct SecretKeyPair(KeyPair);

impl SecretKeyPair {
    fn new(key: KeyPair) -> Self {
        Self(key)
    }

    /// Reads a PKCS#8 DER P-256 key; the temporary copy is wiped.
    fn from_pkcs8(key_pkcs8: &[u8], what: &'static str) -> Result<Self, CaError> {
        let mut der = PrivatePkcs8KeyDer::from(key_pkcs8.to_vec());
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ECDSA_P256_SHA256);
        der.zeroize();
        key.map(Self).map_err(|_| CaError::BadKey { what })
    }

    fn serialize_der(&self) -> Vec<u8> {
        self.0.serialize_der()
    }
}

impl Drop for SecretKeyPair {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PublicKeyData for SecretKeyPair {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl rcgen::SigningKey for SecretKeyPair {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}

/// A loaded CA generation that can sign X.509-SVIDs.
pub struct CertificateAuthority {
    issuer: Issuer<'static, SecretKeyPair>,
    chain_der: Vec<CertificateDer<'static>>,
    not_after: OffsetDateTime,
}

/// A signed X.509-SVID.
#[derive(Debug, Clone)]
pub struct X509Svid {
    /// The SPIFFE ID in the certificate's URI SAN.
    pub spiffe_id: SpiffeId,
    /// The leaf certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// Certificates to send after the leaf, DER, nearest first.
    pub chain_der: Vec<CertificateDer<'static>>,
    /// The serial number, lower-case hex.
    pub serial_hex: String,
    /// The leaf's `notAfter`.
    pub not_after: OffsetDateTime,
}

impl X509Svid {
    /// The leaf followed by its chain, as concatenated PEM blocks.
    pub fn chain_pem(&self) -> String {
        std::iter::once(&self.cert_der)
            .chain(self.chain_der.iter())
            .map(|d| der_to_pem(d))
            .collect()
    }
}

impl CertificateAuthority {
    /// Loads a CA from its certificate, key and chain as stored.
    pub fn load(cert_pem: &str, key_pkcs8: &[u8], chain_pem: &[String]) -> Result<Self, CaError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| {
            CaError::BadCertificate {
                what: "the stored CA certificate",
            }
        })?;
        let (_, x509) =
            X509Certificate::from_der(&cert_der).map_err(|_| CaError::BadCertificate {
                what: "the stored CA certificate",
            })?;
        let not_after = x509.validity().not_after.to_datetime();
        let key = SecretKeyPair::from_pkcs8(key_pkcs8, "the stored CA key")?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(crypto)?;
        let chain_der = chain_pem
            .iter()
            .map(|p| CertificateDer::from_pem_slice(p.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| CaError::BadCertificate {
                what: "the stored CA chain",
            })?;
        Ok(Self {
            issuer,
            chain_der,
            not_after,
        })
    }

    /// The CA certificate's `notAfter`.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Signs an X.509-SVID for a validated CSR. The certificate is valid for
    /// `ttl` from now (never beyond the CA's own `notAfter`), carries exactly
    /// one URI SAN, is not a CA, has keyUsage digitalSignature (critical) and
    /// EKU serverAuth + clientAuth, and a random 128-bit serial.
    pub fn sign_x509_svid(
        &self,
        csr: &ValidatedCsr,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<X509Svid, CaError> {
        if self.not_after <= now {
            return Err(CaError::Expired(self.not_after));
        }
        let spiffe_id = csr.spiffe_id().clone();
        // Certificates hold whole seconds.
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ward");
        params.distinguished_name = dn;
        params.not_before = now - BACKDATE;
        params.not_after = (now + ttl).min(self.not_after);
        let serial = random_serial();
        let serial_hex = hex_lower(&serial.to_bytes());
        params.serial_number = Some(serial);
        params.is_ca = IsCa::NoCa;
        params.custom_extensions = vec![leaf_basic_constraints()];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let uri = spiffe_id
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Crypto(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let cert = params
            .signed_by(csr.public_key(), &self.issuer)
            .map_err(crypto)?;
        Ok(X509Svid {
            spiffe_id,
            cert_der: cert.der().clone(),
            chain_der: self.chain_der.clone(),
            serial_hex,
            not_after: params.not_after,
        })
    }
}

/// `basicConstraints` (critical) saying "not a CA" the way DER requires: an
/// empty SEQUENCE. An explicit `cA FALSE` encodes a DEFAULT value, which
/// strict DER parsers (Python's cryptography, hence py-spiffe) reject.
pub fn leaf_basic_constraints() -> rcgen::CustomExtension {
    let mut ext = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    ext.set_criticality(true);
    ext
}

/// 16 random bytes: RFC 5280 asks for unpredictable serials (up to 20
/// octets); 128 bits of randomness make collisions and prediction moot.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The OS RNG failing is not something a CA can recover from.
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random number generator failed");
    // Keep the first byte non-zero so the serial really has 128 bits.
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Encodes one DER certificate as a PEM block.
pub fn der_to_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// Encodes DER as one PEM block with the given label.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SPIFFE ID in a certificate's single URI SAN, if it has exactly one
/// SAN and it is a valid SPIFFE ID (how a peer's identity is read from its
/// SVID; DNS SANs are never consulted).
pub fn spiffe_id_of_cert(der: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    match san.value.general_names.as_slice() {
        [x509_parser::extensions::GeneralName::URI(uri)] => SpiffeId::parse(uri).ok(),
        _ => None,
    }
}

/// A certificate's `notAfter`, Unix seconds.
pub fn not_after_of_cert(der: &[u8]) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Splits concatenated DER certificates (as the Workload API sends chains
/// and bundles); stops at the first thing that is not a certificate.
pub fn split_der_certs(mut der: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let Ok((rest, _)) = X509Certificate::from_der(der) else {
            break;
        };
        out.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::validate_csr;
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    fn td() -> TrustDomain {
        TrustDomain::parse("example.org").unwrap()
    }

    fn csr(id: &str) -> ValidatedCsr {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        validate_csr(pem.as_bytes(), &td()).unwrap()
    }

    fn root(now: OffsetDateTime) -> (CaMaterial, CertificateAuthority) {
        let m = generate_root(&td(), "1", Duration::from_secs(86400), now).unwrap();
        let ca = CertificateAuthority::load(&m.cert_pem, &m.key_pkcs8, &m.chain_pem).unwrap();
        (m, ca)
    }

    fn parse_pem(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn svid_has_exactly_the_spiffe_profile() {
        let now = OffsetDateTime::now_utc();
        let (m, ca) = root(now);
        let svid = ca
            .sign_x509_svid(
                &csr("spiffe://example.org/ns/a/sa/b"),
                Duration::from_secs(3600),
                now,
            )
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&svid.cert_der).unwrap();
        let root_der = parse_pem(&m.cert_pem);
        let (_, root_cert) = X509Certificate::from_der(&root_der).unwrap();
        cert.verify_signature(Some(root_cert.public_key())).unwrap();
        assert!(!cert.is_ca());
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);
        assert!(bc.critical);
        // DER: cA FALSE is the default and must be omitted (strict parsers
        // such as Python's cryptography refuse an explicit FALSE).
        let raw = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "2.5.29.19")
            .unwrap();
        assert_eq!(raw.value, &[0x30, 0x00]);
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.digital_signature());
        assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 1);
        assert!(matches!(
            san.general_names[0],
            GeneralName::URI("spiffe://example.org/ns/a/sa/b")
        ));
        let serial = cert.raw_serial();
        assert!(serial.len() >= 16, "serial has {} bytes", serial.len());
        let nb = cert.validity().not_before.timestamp();
        let na = cert.validity().not_after.timestamp();
        assert_eq!(na - nb, 3600 + BACKDATE.as_secs() as i64);
        assert!(cert.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));
    }

    #[test]
    fn serials_differ_and_validity_never_outlives_the_ca() {
        let now = OffsetDateTime::now_utc();
        let (_, ca) = root(now);
        let c = csr("spiffe://example.org/a");
        let a = ca.sign_x509_svid(&c, Duration::from_secs(60), now).unwrap();
        let b = ca
            .sign_x509_svid(&c, Duration::from_secs(10 * 86400), now)
            .unwrap();
        assert_ne!(a.serial_hex, b.serial_hex);
        assert_eq!(b.not_after, ca.not_after());
    }

    #[test]
    fn an_expired_ca_refuses_to_sign() {
        let then = OffsetDateTime::now_utc() - Duration::from_secs(2 * 86400);
        let (_, ca) = root(then);
        let err = ca
            .sign_x509_svid(
                &csr("spiffe://example.org/a"),
                Duration::from_secs(60),
                OffsetDateTime::now_utc(),
            )
            .unwrap_err();
        assert!(matches!(err, CaError::Expired(_)));
    }

    #[test]
    fn intermediate_under_an_upstream_ca_chains_to_the_upstream_root() {
        let now = OffsetDateTime::now_utc();
        let up_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut up_params = CertificateParams::default();
        up_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        up_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        up_params.not_after = now + Duration::from_secs(3600);
        let up_cert = up_params.self_signed(&up_key).unwrap();
        let upstream = UpstreamCa::from_pem(&up_cert.pem(), &up_key.serialize_pem()).unwrap();
        let m = upstream
            .sign_intermediate(&td(), "2", Duration::from_secs(86400), now)
            .unwrap();
        // The intermediate never outlives its upstream.
        assert_eq!(
            m.not_after.unix_timestamp(),
            up_params.not_after.unix_timestamp()
        );
        assert_eq!(m.bundle_pem, vec![up_cert.pem()]);
        assert_eq!(m.chain_pem.len(), 1);
        let ca = CertificateAuthority::load(&m.cert_pem, &m.key_pkcs8, &m.chain_pem).unwrap();
        let svid = ca
            .sign_x509_svid(&csr("spiffe://example.org/a"), Duration::from_secs(60), now)
            .unwrap();
        assert_eq!(svid.chain_der.len(), 1);
        let inter = parse_pem(&m.cert_pem);
        let (_, inter_cert) = X509Certificate::from_der(&inter).unwrap();
        let up_der = up_cert.der().to_vec();
        let (_, up_parsed) = X509Certificate::from_der(&up_der).unwrap();
        inter_cert
            .verify_signature(Some(up_parsed.public_key()))
            .unwrap();
        let (_, leaf) = X509Certificate::from_der(&svid.cert_der).unwrap();
        leaf.verify_signature(Some(inter_cert.public_key()))
            .unwrap();
        // Stored and reloaded, the upstream still signs.
        let again = UpstreamCa::from_stored(upstream.certs_pem(), &upstream.key_pkcs8()).unwrap();
        assert!(
            again
                .sign_intermediate(&td(), "3", Duration::from_secs(60), now)
                .is_ok()
        );
    }

    #[test]
    fn upstream_import_refuses_mismatched_key_and_non_ca() {
        let key_a = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let key_b = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = p.self_signed(&key_a).unwrap();
        assert!(matches!(
            UpstreamCa::from_pem(&ca_cert.pem(), &key_b.serialize_pem()),
            Err(CaError::UpstreamKeyMismatch)
        ));
        let leaf = CertificateParams::default().self_signed(&key_a).unwrap();
        assert!(matches!(
            UpstreamCa::from_pem(&leaf.pem(), &key_a.serialize_pem()),
            Err(CaError::UpstreamNotCa)
        ));
        assert!(matches!(
            UpstreamCa::from_pem("nope", &key_a.serialize_pem()),
            Err(CaError::BadCertificate { .. })
        ));
        assert!(matches!(
            UpstreamCa::from_pem(&ca_cert.pem(), "nope"),
            Err(CaError::BadKey { .. })
        ));
    }
}
