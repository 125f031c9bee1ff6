//! Workload identity for Ward: SPIFFE IDs, the certificate authority that
//! signs X.509-SVIDs from CSRs, JWT-SVID signing keys and trust bundles.
//!
//! Nothing here touches storage or the network: the server decides which
//! CA generation signs and where keys live; this crate does the cryptography
//! and enforces the SPIFFE profiles.

pub mod access_token;
pub mod bundle;
pub mod ca;
pub mod csr;
pub mod jwt;
pub mod spiffe_id;
pub mod tls;

pub use ca::{CaError, CaMaterial, CertificateAuthority, UpstreamCa, X509Svid, spiffe_id_of_cert};
pub use csr::{CsrError, ValidatedCsr, validate_csr};
pub use jwt::{JwtError, JwtKey};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
