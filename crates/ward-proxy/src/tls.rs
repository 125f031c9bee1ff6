//! rustls configurations that follow the current identity. Certificates
//! and the trust bundle are looked up at each handshake, so a rotated SVID
//! or bundle applies to the next connection without a restart. TLS 1.3
//! only, no session resumption (a resumed session would outlive a change
//! of trust).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use ward_identity::{SpiffeId, spiffe_id_of_cert};

use crate::identity::IdentityWatch;

/// Presents the current SVID, as a server and as a client.
#[derive(Debug)]
struct CurrentSvid(IdentityWatch);

impl CurrentSvid {
    fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.0.borrow().as_ref().map(|i| i.certified_key.clone())
    }
}

impl ResolvesServerCert for CurrentSvid {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl ResolvesClientCert for CurrentSvid {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        self.0.borrow().is_some()
    }
}

/// Requires a client certificate chaining to the current trust bundle.
#[derive(Debug)]
struct CallerVerifier {
    identity: IdentityWatch,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for CallerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verifier = self
            .identity
            .borrow()
            .as_ref()
            .map(|i| i.client_verifier.clone())
            .ok_or_else(|| Error::General("no trust bundle yet".into()))?;
        verifier.verify_client_cert(end_entity, intermediates, now)?;
        // Authorization needs a SPIFFE ID: a certificate without one is no caller.
        spiffe_id_of_cert(end_entity).ok_or(Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies an upstream's SVID: it chains to the current bundle and names
/// one of the expected SPIFFE IDs. Host names are never consulted.
#[derive(Debug)]
struct UpstreamVerifier {
    identity: IdentityWatch,
    expected: Vec<SpiffeId>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let roots = self
            .identity
            .borrow()
            .as_ref()
            .map(|i| i.roots.clone())
            .ok_or_else(|| Error::General("no trust bundle yet".into()))?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match spiffe_id_of_cert(end_entity) {
            Some(id) if self.expected.contains(&id) => Ok(ServerCertVerified::assertion()),
            Some(id) => Err(Error::General(format!(
                "the upstream presented {id}, which is not an expected SPIFFE ID"
            ))),
            None => Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The inbound side: present our SVID, require the caller's.
pub fn inbound_config(
    identity: IdentityWatch,
    provider: Arc<CryptoProvider>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(CallerVerifier {
            identity: identity.clone(),
            provider,
        }))
        .with_cert_resolver(Arc::new(CurrentSvid(identity)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The outbound side: present our SVID, require one of `expected` from the upstream.
pub fn outbound_config(
    identity: IdentityWatch,
    provider: Arc<CryptoProvider>,
    expected: Vec<SpiffeId>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, Error> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UpstreamVerifier {
            identity: identity.clone(),
            expected,
            provider,
        }))
        .with_client_cert_resolver(Arc::new(CurrentSvid(identity)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// A client configuration for the server's API: trust its CA, present our SVID.
pub fn server_api_config(
    identity: IdentityWatch,
    provider: Arc<CryptoProvider>,
    server_ca: Vec<CertificateDer<'static>>,
) -> Result<ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in server_ca {
        roots.add(c)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(CurrentSvid(identity)));
    config.resumption = Resumption::disabled();
    Ok(config)
}
