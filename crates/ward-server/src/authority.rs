//! The server's loaded certificate authorities: the active CA that signs,
//! the CAs still in the trust bundle (a prepared one waiting to take over,
//! retired ones whose SVIDs have not all expired), and their JWT keys.
//!
//! Rotation without an outage (as in SPIRE): `prepare` adds the next CA to
//! the bundle before it signs anything, so verifiers learn it first;
//! `activate` switches signing to it; the old CA stays in the bundle until
//! the longest-lived SVID it could have signed has expired.

use std::time::Duration;

use time::OffsetDateTime;
use ward_identity::ca::generate_root;
use ward_identity::{CaMaterial, CertificateAuthority, JwtKey, TrustDomain, UpstreamCa};
use ward_store::seal::MasterKey;
use ward_store::{CaRecord, now_secs};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::ApiError;

/// The sealed-blob name of a CA key.
pub fn ca_key_name(id: &str) -> String {
    format!("ca/{id}/key")
}

/// The sealed-blob name of a JWT key.
pub fn jwt_key_name(id: &str) -> String {
    format!("ca/{id}/jwt")
}

/// The sealed-blob name of the upstream CA key.
pub const UPSTREAM_KEY: &str = "upstream/key";
/// The meta key holding the upstream CA certificates (JSON list of PEM).
pub const UPSTREAM_CERTS: &str = "upstream_certs";

/// Creates a new CA generation (a root, or an intermediate under `upstream`)
/// with its JWT key, sealed for storage.
pub fn new_ca_record(
    td: &TrustDomain,
    master: &MasterKey,
    upstream: Option<&UpstreamCa>,
    validity: Duration,
    state: &str,
) -> Result<CaRecord, ApiError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let label = &id[..8];
    let now = OffsetDateTime::now_utc();
    let material: CaMaterial = match upstream {
        Some(up) => up.sign_intermediate(td, label, validity, now),
        None => generate_root(td, label, validity, now),
    }
    .map_err(|e| ApiError::Internal(format!("creating a CA: {e}")))?;
    let (jwt_kid, jwt_key) = JwtKey::generate().map_err(|e| ApiError::Internal(e.to_string()))?;
    let seal = |name: String, data: &[u8]| {
        master
            .seal(&name, data)
            .map_err(|e| ApiError::Internal(format!("sealing {name}: {e}")))
    };
    Ok(CaRecord {
        key_sealed: seal(ca_key_name(&id), &material.key_pkcs8)?,
        jwt_key_sealed: seal(jwt_key_name(&id), &jwt_key)?,
        id,
        generation: 1,
        state: state.to_owned(),
        cert_pem: material.cert_pem,
        chain_pem: material.chain_pem,
        bundle_pem: material.bundle_pem,
        jwt_kid,
        not_after: material.not_after.unix_timestamp(),
        created_at: now_secs(),
        activated_at: (state == "active").then(now_secs),
        drop_after: None,
        revision: 0,
    })
}

/// A CA generation that is in the bundle.
pub struct BundledCa {
    /// Its stored record (sealed keys included, never sent out).
    pub record: CaRecord,
    /// Its CA certificate's subject, for listings.
    pub subject: String,
    jwt: JwtKey,
}

/// The CAs in force, loaded with the master key.
pub struct Authority {
    signer: CertificateAuthority,
    signer_jwt: JwtKey,
    cas: Vec<BundledCa>,
    bundle_pem: String,
    revision: i64,
    next_drop: Option<i64>,
}

impl Authority {
    /// Loads every CA still in the bundle from their records.
    pub fn load(records: Vec<CaRecord>, master: &MasterKey, now: i64) -> Result<Self, ApiError> {
        let revision = records.iter().map(|r| r.revision).max().unwrap_or(0);
        let mut signer = None;
        let mut cas = Vec::new();
        let mut next_drop: Option<i64> = None;
        for record in records {
            if record.state == "retired" {
                match record.drop_after {
                    Some(t) if t > now => next_drop = Some(next_drop.map_or(t, |n| n.min(t))),
                    _ => continue,
                }
            }
            let open = |name: String, blob: &[u8]| {
                master
                    .open(&name, blob)
                    .map_err(|e| ApiError::Internal(format!("opening {name}: {e}")))
            };
            let jwt_der = open(jwt_key_name(&record.id), &record.jwt_key_sealed)?;
            let jwt = JwtKey::load(&record.jwt_kid, &jwt_der)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            if record.state == "active" {
                let key = open(ca_key_name(&record.id), &record.key_sealed)?;
                let ca = CertificateAuthority::load(&record.cert_pem, &key, &record.chain_pem)
                    .map_err(|e| ApiError::Internal(format!("loading CA {}: {e}", record.id)))?;
                let signer_jwt = JwtKey::load(&record.jwt_kid, &jwt_der)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                signer = Some((ca, signer_jwt));
            }
            let subject = subject_of(&record.cert_pem);
            cas.push(BundledCa {
                record,
                subject,
                jwt,
            });
        }
        let (signer, signer_jwt) =
            signer.ok_or_else(|| ApiError::Internal("no active CA in the store".into()))?;
        let mut bundle_pem = String::new();
        for ca in &cas {
            for pem in &ca.record.bundle_pem {
                if !bundle_pem.contains(pem.as_str()) {
                    bundle_pem.push_str(pem);
                }
            }
        }
        Ok(Self {
            signer,
            signer_jwt,
            cas,
            bundle_pem,
            revision,
            next_drop,
        })
    }

    /// The store revision of the newest CA change this view includes.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The CA that signs now.
    pub fn signer(&self) -> &CertificateAuthority {
        &self.signer
    }

    /// The JWT key that signs now.
    pub fn signer_jwt(&self) -> &JwtKey {
        &self.signer_jwt
    }

    /// The trust bundle's CA certificates, PEM.
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// The CAs in the bundle, oldest first.
    pub fn cas(&self) -> &[BundledCa] {
        &self.cas
    }

    /// The SPIFFE bundle (JWKS) with every X.509 root and JWT key.
    pub fn spiffe_bundle(&self) -> serde_json::Value {
        let roots: Vec<String> = self
            .cas
            .iter()
            .flat_map(|c| c.record.bundle_pem.iter().cloned())
            .collect();
        let mut seen = Vec::new();
        let roots: Vec<String> = roots
            .into_iter()
            .filter(|r| {
                let new = !seen.contains(r);
                seen.push(r.clone());
                new
            })
            .collect();
        let jwts: Vec<&JwtKey> = self.cas.iter().map(|c| &c.jwt).collect();
        ward_identity::bundle::spiffe_bundle(&roots, &jwts, self.revision, 300)
    }

    /// True when the stored CAs changed (another replica rotated) or a
    /// retired CA's time in the bundle is over.
    pub fn is_stale(&self, store_revision: i64, now: i64) -> bool {
        store_revision != self.revision || self.next_drop.is_some_and(|t| t <= now)
    }
}

fn subject_of(pem: &str) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .and_then(|der| {
            X509Certificate::from_der(&der)
                .ok()
                .map(|(_, c)| c.subject().to_string())
        })
        .unwrap_or_default()
}
