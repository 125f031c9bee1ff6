//! Initialization: the first CA (a root, or an intermediate under an
//! imported upstream CA), the master key and its Shamir shares, and the
//! first admin token. The shares and the token are returned once, to be
//! printed; the store keeps only ciphertext and hashes.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ward_identity::UpstreamCa;
use ward_store::seal::MasterKey;
use ward_store::{AuditEvent, Initialization, Store, StoreError};
use zeroize::Zeroizing;

use crate::auth::token_hash;
use crate::authority::{UPSTREAM_CERTS, UPSTREAM_KEY, new_ca_record};
use crate::config::ServerConfig;

/// Why initialization failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The store already holds an initialized server.
    #[error("the store is already initialized; nothing was changed")]
    AlreadyInitialized,
    /// The upstream CA files are unusable.
    #[error("upstream CA: {0}")]
    Upstream(String),
    /// Creating keys or writing the store failed.
    #[error("{0}")]
    Failed(String),
}

/// What initialization hands back once.
pub struct InitOutput {
    /// The unseal shares, base64.
    pub shares: Vec<Zeroizing<String>>,
    /// Shares needed.
    pub threshold: u32,
    /// The initial admin token.
    pub admin_token: Zeroizing<String>,
    /// The master key (kept only by dev mode, in its key file).
    pub master: MasterKey,
}

/// A new random API token: `ward_` and 256 random bits.
pub fn new_token() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut()).expect("the system random number generator failed");
    Zeroizing::new(format!("ward_{}", URL_SAFE_NO_PAD.encode(bytes.as_ref())))
}

/// Initializes the store for `config`; `upstream` is the PEM of an upstream
/// CA certificate (with its chain) and its PKCS#8 key.
pub async fn initialize(
    store: &Store,
    config: &ServerConfig,
    upstream: Option<(&str, &str)>,
) -> Result<InitOutput, InitError> {
    let master = MasterKey::generate().map_err(|e| InitError::Failed(e.to_string()))?;
    initialize_with(store, config, upstream, master, new_token()).await
}

/// As [`initialize`], with the master key and admin token chosen by the
/// caller (dev mode saves them to files before the store commits, so that a
/// crash in between cannot leave a store nobody can unseal).
pub async fn initialize_with(
    store: &Store,
    config: &ServerConfig,
    upstream: Option<(&str, &str)>,
    master: MasterKey,
    admin_token: Zeroizing<String>,
) -> Result<InitOutput, InitError> {
    if store
        .is_initialized()
        .await
        .map_err(|e| InitError::Failed(e.to_string()))?
    {
        return Err(InitError::AlreadyInitialized);
    }
    let failed = |e: String| InitError::Failed(e);
    let upstream = upstream
        .map(|(cert, key)| UpstreamCa::from_pem(cert, key))
        .transpose()
        .map_err(|e| InitError::Upstream(e.to_string()))?;
    let ca = new_ca_record(
        &config.trust_domain,
        &master,
        upstream.as_ref(),
        config.ca.validity,
        "active",
    )
    .map_err(|e| failed(e.to_string()))?;
    let shares = master
        .split(config.seal_threshold as usize, config.seal_shares as usize)
        .map_err(|e| failed(e.to_string()))?;
    let token_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let key_check = master.key_check().map_err(|e| failed(e.to_string()))?;
    let mut meta = vec![
        ("trust_domain".to_owned(), config.trust_domain.to_string()),
        ("seal_shares".to_owned(), config.seal_shares.to_string()),
        (
            "seal_threshold".to_owned(),
            config.seal_threshold.to_string(),
        ),
        ("key_check".to_owned(), STANDARD.encode(&key_check)),
    ];
    let mut sealed = Vec::new();
    if let Some(up) = &upstream {
        meta.push((
            UPSTREAM_CERTS.to_owned(),
            serde_json::to_string(up.certs_pem()).unwrap_or_default(),
        ));
        sealed.push((
            UPSTREAM_KEY.to_owned(),
            master
                .seal(UPSTREAM_KEY, &up.key_pkcs8())
                .map_err(|e| failed(e.to_string()))?,
        ));
    }
    let audit = AuditEvent::new(
        "system",
        "server.init",
        config.trust_domain.to_string(),
        serde_json::json!({
            "ca": ca.id,
            "mode": if upstream.is_some() { "intermediate" } else { "root" },
            "shares": config.seal_shares,
            "threshold": config.seal_threshold,
            "admin_token_id": token_id,
        }),
    );
    store.unlock(&master);
    let initialized = store
        .initialize(Initialization {
            meta,
            sealed,
            admin_token: (token_id, token_hash(&admin_token)),
            ca,
            audit,
        })
        .await
        .map_err(|e| match e {
            StoreError::AlreadyInitialized => InitError::AlreadyInitialized,
            other => failed(other.to_string()),
        });
    // Until an unseal, nothing more is read or written through the barrier.
    store.lock();
    initialized?;
    // This data folder now belongs to this store (see `state::pin_store`).
    crate::state::write_store_pin(&config.data_dir, config.trust_domain.as_str(), &key_check)
        .map_err(failed)?;
    Ok(InitOutput {
        shares,
        threshold: config.seal_threshold,
        admin_token,
        master,
    })
}
