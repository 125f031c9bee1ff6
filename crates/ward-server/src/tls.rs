//! The HTTPS identity of the API itself. It must work while the server is
//! sealed (operators unseal over it), so it cannot come from the sealed
//! workload CA: a small dedicated TLS CA lives in `DATA_DIR/tls/` (key file
//! mode 0600, like Vault's `tls_key_file`), and a fresh server certificate
//! is issued at every start for the addresses the server answers on.
//! Clients trust `DATA_DIR/tls/ca.pem` (`WARD_CACERT`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// The TLS CA certificate clients should trust.
pub fn ca_cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("ca.pem")
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Loads the API's TLS CA from `DATA_DIR/tls/`, creating it on first use;
/// returns its certificate (PEM) and key.
pub fn ensure_ca(data_dir: &Path) -> Result<(String, KeyPair), String> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca_path = ca_cert_path(data_dir);
    let key_path = dir.join("ca-key.pem");
    let now = OffsetDateTime::now_utc();
    let (ca_pem, ca_key) = if ca_path.exists() && key_path.exists() {
        let pem = std::fs::read_to_string(&ca_path)
            .map_err(|e| format!("cannot read {}: {e}", ca_path.display()))?;
        let key_pem = std::fs::read_to_string(&key_path)
            .map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("{} is not a valid key: {e}", key_path.display()))?;
        (pem, key)
    } else {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Ward API TLS CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Ward");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - Duration::from_secs(60);
        params.not_after = now + Duration::from_secs(10 * 365 * 86400);
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        write_private(&key_path, key.serialize_pem().as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
        std::fs::write(&ca_path, cert.pem())
            .map_err(|e| format!("cannot write {}: {e}", ca_path.display()))?;
        (cert.pem(), key)
    };
    Ok((ca_pem, ca_key))
}

/// A server certificate from the API's TLS CA for loopback and `names`
/// (DNS names or IP addresses), valid for a year: the leaf, its CA, and
/// the leaf's key, all PEM. `ward up` gives its gateway one, so that
/// clients verify the gateway with the same CA file as the server.
pub fn issue_server_cert(
    data_dir: &Path,
    names: &[String],
) -> Result<(String, String, String), String> {
    let (ca_pem, leaf, leaf_key) = issue(data_dir, None, names)?;
    Ok((leaf.pem(), ca_pem, leaf_key.serialize_pem()))
}

fn issue(
    data_dir: &Path,
    listen: Option<SocketAddr>,
    extra_names: &[String],
) -> Result<(String, rcgen::Certificate, KeyPair), String> {
    let (ca_pem, ca_key) = ensure_ca(data_dir)?;
    let ca_path = ca_cert_path(data_dir);
    let now = OffsetDateTime::now_utc();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| format!("{}: {e}", ca_path.display()))?;

    let mut sans = vec![
        SanType::DnsName(
            "localhost"
                .try_into()
                .map_err(|e: rcgen::Error| e.to_string())?,
        ),
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress("::1".parse().map_err(|_| "::1")?),
    ];
    if let Some(listen) = listen
        && !listen.ip().is_unspecified()
        && !listen.ip().is_loopback()
    {
        sans.push(SanType::IpAddress(listen.ip()));
    }
    for name in extra_names {
        match name.parse::<IpAddr>() {
            Ok(ip) => sans.push(SanType::IpAddress(ip)),
            Err(_) => sans.push(SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|_| format!("tls.names: {name:?} is not a DNS name"))?,
            )),
        }
    }
    let leaf_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "ward server");
    params.subject_alt_names = sans;
    params.is_ca = IsCa::NoCa;
    params.custom_extensions = vec![ward_identity::ca::leaf_basic_constraints()];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::from_secs(60);
    params.not_after = now + Duration::from_secs(365 * 86400);
    params.use_authority_key_identifier_extension = true;
    let leaf = params
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| e.to_string())?;
    Ok((ca_pem, leaf, leaf_key))
}

/// Loads or creates the TLS CA and issues a server certificate covering
/// `listen`, loopback and `extra_names`; returns a rustls server config.
pub fn server_tls(
    data_dir: &Path,
    listen: SocketAddr,
    extra_names: &[String],
    client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let (ca_pem, leaf, leaf_key) = issue(data_dir, Some(listen), extra_names)?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_client_cert_verifier(client_verifier)
    .with_single_cert(vec![leaf.der().clone(), ca_der], key_der)
    .map_err(|e| e.to_string())?;
    // No session resumption: a resumed session would carry a client
    // certificate verified against a bundle that may have changed since.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
