//! The proxy's rustls configurations, following the current identity:
//! certificates and trust are looked up at each handshake, so a rotated
//! SVID or bundle applies to the next connection without a restart. Peers
//! are verified by the one SPIFFE verifier (`ward_identity::tls`): a
//! workload ID of our own trust domain or a federated one, chaining to
//! that domain's bundle. TLS 1.3 only, no session resumption (a resumed
//! session would outlive a change of trust).

use std::sync::Arc;

use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, Error, ServerConfig, SignatureScheme};
use rustls_pki_types::CertificateDer;
use ward_identity::SpiffeId;
use ward_identity::tls::{
    BundleSet, PeerPolicy, SpiffeClientVerifier, SpiffeServerVerifier, TrustSource,
};

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

/// The trust of the current identity, for the SPIFFE verifiers.
#[derive(Debug)]
struct CurrentTrust(IdentityWatch);

impl TrustSource for CurrentTrust {
    fn trust(&self) -> Option<(Arc<BundleSet>, Arc<PeerPolicy>)> {
        self.0
            .borrow()
            .as_ref()
            .map(|i| (i.trust.bundles.clone(), i.trust.peers.clone()))
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
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::required(
            CurrentTrust(identity.clone()),
            provider,
        )))
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
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            CurrentTrust(identity.clone()),
            expected,
            provider,
        )))
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
