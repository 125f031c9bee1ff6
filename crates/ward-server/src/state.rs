//! The running control plane: its store, its seal state and the loaded
//! authority. Sealed, the server knows only hashes and ciphertext; unsealed,
//! it holds the master key and the CA keys in memory (zeroed on seal).

use std::sync::Arc;

use ward_api::SealStatus;
use ward_store::seal::MasterKey;
use ward_store::{AuditEvent, AuditWriter, Store, now_secs};

use crate::authority::Authority;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::peer::ClientTrust;

/// The control plane's shared state.
pub struct Server {
    /// The validated configuration.
    pub config: ServerConfig,
    /// The store.
    pub store: Store,
    /// Group-commit writer for hot-path audit records.
    pub audit: AuditWriter,
    seal: crate::seal_state::SealState,
    pub(crate) tokens: crate::auth::TokenCache,
    client_trust: Arc<ClientTrust>,
    /// The highest policy version this process has read from the store.
    policy_high: std::sync::atomic::AtomicI64,
    /// Whether the next unseal may upgrade a store that predates the barrier.
    upgrade_allowed: std::sync::atomic::AtomicBool,
    /// Every workload's labels as of a revision (what proxies are sent).
    pub labels_cache: std::sync::Mutex<Option<(i64, Arc<Labels>)>>,
    /// The audit checkpoints' public key, once derived.
    pub checkpoint_public_key: std::sync::OnceLock<String>,
    /// Per-address limits on unauthenticated requests and failed logins.
    pub limits: Arc<crate::limits::Limits>,
    /// The vault's caches.
    pub vault: crate::vault::VaultState,
    /// The token service's caches.
    pub oauth: crate::oauth::OAuthState,
    /// Pools to the databases the vault makes credentials in.
    pub databases: ward_dbcreds::Databases,
    /// Wakes the lease expiry worker (after a revocation request).
    pub lease_wake: tokio::sync::Notify,
}

/// Labels by SPIFFE ID.
pub type Labels = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

/// In the data folder: the barrier has been on here (see `upgrade_allowed`).
const BARRIER_SEEN: &str = "barrier-seen";
/// In the data folder: which store this server belongs to.
const STORE_PIN: &str = "store-id";

/// The pin of a store: its trust domain and its master key's check value.
fn store_id(td: &str, key_check: &[u8]) -> String {
    let mut material = td.as_bytes().to_vec();
    material.push(0);
    material.extend_from_slice(key_check);
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &material,
    ))
}

/// Binds the data folder to the store `ward server init` just made.
pub(crate) fn write_store_pin(
    data_dir: &std::path::Path,
    td: &str,
    key_check: &[u8],
) -> Result<(), String> {
    let path = data_dir.join(STORE_PIN);
    std::fs::create_dir_all(data_dir)
        .and_then(|()| std::fs::write(&path, format!("{}\n", store_id(td, key_check))))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Holds the data folder to one store: the one `init` pinned, or (for a
/// data folder that has none, such as a new replica's) the one found at
/// the first start. A writer who swaps the whole database for one they
/// initialized themselves (same trust domain, their own shares) is refused
/// at start-up instead of being unsealed with their shares behind this
/// server's TLS identity.
fn pin_store(data_dir: &std::path::Path, td: &str, key_check: &[u8]) -> Result<(), String> {
    let path = data_dir.join(STORE_PIN);
    match std::fs::read_to_string(&path) {
        Ok(pinned) if pinned.trim() == store_id(td, key_check) => Ok(()),
        Ok(_) => Err(format!(
            "the store is not the one this server was set up with (its master key differs from the one pinned in {}): the database was replaced; restore it, or if the replacement is intended, remove that file",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_store_pin(data_dir, td, key_check)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

impl Server {
    /// Builds the state of an initialized store; the server starts sealed.
    pub async fn open(
        config: ServerConfig,
        store: Store,
        client_trust: Arc<ClientTrust>,
    ) -> Result<Arc<Self>, String> {
        let meta = |k: &'static str| {
            let store = store.clone();
            async move {
                store
                    .meta(k)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!("the store has no {k}; was it initialized by `ward server init`?")
                    })
            }
        };
        let td = meta("trust_domain").await?;
        if td != config.trust_domain.as_str() {
            return Err(format!(
                "the store belongs to trust domain {td:?} but the configuration says {:?}",
                config.trust_domain.as_str()
            ));
        }
        let threshold = meta("seal_threshold")
            .await?
            .parse()
            .map_err(|_| "bad seal_threshold".to_string())?;
        let shares = meta("seal_shares")
            .await?
            .parse()
            .map_err(|_| "bad seal_shares".to_string())?;
        use base64::Engine;
        let key_check = base64::engine::general_purpose::STANDARD
            .decode(meta("key_check").await?)
            .map_err(|_| "bad key_check".to_string())?;
        pin_store(&config.data_dir, td.as_str(), &key_check)?;
        let audit = AuditWriter::spawn(store.clone());
        // `--upgrade-store` holds for one unseal of one process, and never
        // once this data folder has seen the barrier on: a writer who
        // deletes the marker row later must not get the flag, left in a
        // unit file, to authenticate their forged rows at the next unseal.
        let upgrade_allowed = config.upgrade_store && !config.data_dir.join(BARRIER_SEEN).exists();
        if config.upgrade_store && !upgrade_allowed {
            tracing::warn!(
                "--upgrade-store is ignored: this data folder has already seen the store's barrier on (remove the flag)"
            );
        }
        let limits = Arc::new(crate::limits::Limits::new(
            config.api.max_unauthenticated_per_minute,
            config.api.max_failed_auth_per_minute,
        ));
        Ok(Arc::new(Self {
            config,
            store,
            audit,
            seal: crate::seal_state::SealState::new(threshold, shares, key_check),
            tokens: crate::auth::TokenCache::default(),
            client_trust,
            policy_high: std::sync::atomic::AtomicI64::new(0),
            upgrade_allowed: std::sync::atomic::AtomicBool::new(upgrade_allowed),
            checkpoint_public_key: std::sync::OnceLock::new(),
            labels_cache: std::sync::Mutex::new(None),
            limits,
            vault: Default::default(),
            oauth: Default::default(),
            databases: Default::default(),
            lease_wake: tokio::sync::Notify::new(),
        }))
    }

    /// The trust client certificates (node and workload SVIDs) are verified under.
    pub fn client_trust(&self) -> &Arc<ClientTrust> {
        &self.client_trust
    }

    /// The seal status, in Vault's shape.
    pub fn seal_status(&self) -> SealStatus {
        let (sealed, progress) = self.seal.progress();
        let (t, n) = self.seal.scheme();
        SealStatus {
            kind: "shamir".into(),
            initialized: true,
            sealed,
            t,
            n,
            progress,
            version: env!("CARGO_PKG_VERSION").into(),
            trust_domain: self.config.trust_domain.to_string(),
        }
    }

    /// Takes one unseal share; at the threshold, reconstructs the master
    /// key, checks it and loads the CAs. Wrong shares reset the progress.
    pub async fn submit_share(
        &self,
        share: Option<String>,
        reset: bool,
    ) -> Result<SealStatus, ApiError> {
        if let Some(master) = self.seal.add_share(share, reset)? {
            self.unseal_with(master).await?;
            tracing::info!("server unsealed");
        }
        Ok(self.seal_status())
    }

    /// Unseals with a known master key (dev mode's key file).
    pub async fn unseal_with(&self, master: MasterKey) -> Result<(), ApiError> {
        if !self.seal.is_master(&master) {
            return Err(ApiError::BadRequest(
                "the master key does not match this store".into(),
            ));
        }
        self.store.unlock(&master);
        let loaded = self.open_barrier_and_load(&master).await;
        let authority = match loaded {
            Ok(a) => a,
            Err(e) => {
                self.store.lock();
                return Err(e);
            }
        };
        self.seal.open_with(master, authority, |a| {
            self.client_trust.set_bundle(a.bundle_pem())
        });
        Ok(())
    }

    /// Turns the store's barrier on and loads the CAs through it. A store
    /// that predates the barrier is upgraded only when the operator asked
    /// for it (`--upgrade-store`): nothing inside the database can prove a
    /// store is old rather than stripped of its MACs by a writer who wants
    /// their forged rows authenticated, so the upgrade is never automatic.
    async fn open_barrier_and_load(&self, master: &MasterKey) -> Result<Arc<Authority>, ApiError> {
        use std::sync::atomic::Ordering;
        let allow = self.upgrade_allowed.load(Ordering::SeqCst);
        let started = self.store.enable_barrier(allow).await;
        if started.is_ok() {
            self.upgrade_allowed.store(false, Ordering::SeqCst);
            let seen = self.config.data_dir.join(BARRIER_SEEN);
            if !seen.exists()
                && let Err(e) = std::fs::write(
                    &seen,
                    "the store's barrier was on when this server last unsealed\n",
                )
            {
                tracing::warn!(path = %seen.display(), error = %e, "cannot record that the barrier is on");
            }
        }
        match started {
            Ok(ward_store::BarrierStart::On) => {}
            Ok(ward_store::BarrierStart::Upgraded { rows }) => tracing::warn!(
                rows,
                "the store predated the barrier: its rows are now authenticated as they are; from now on a row written without the master key is refused"
            ),
            Err(e @ ward_store::StoreError::BarrierMissing) => {
                tracing::error!("{e}");
                return Err(ApiError::Conflict(format!("unseal refused: {e}")));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Arc::new(Authority::load(
            self.store.cas().await?,
            master,
            now_secs(),
        )?))
    }

    /// The newest policy version, refusing one older than a version this
    /// process has already served: deleting the newest versions is a
    /// rollback the barrier cannot see, and it must not reach the proxies.
    pub async fn current_policy(&self) -> Result<Option<ward_store::PolicyRecord>, ApiError> {
        use std::sync::atomic::Ordering;
        let p = self.store.current_policy().await?;
        let version = p.as_ref().map_or(0, |p| p.version);
        let high = self.policy_high.fetch_max(version, Ordering::SeqCst);
        if version < high {
            tracing::error!(
                version,
                served = high,
                "the store's newest policy is older than one already served: newer versions were removed from the store"
            );
            return Err(ApiError::Conflict(format!(
                "the store's newest policy version is {version}, but version {high} was served before: newer versions were removed from the store; push the policy again"
            )));
        }
        Ok(p)
    }

    /// Appends an audit record for each row the barrier refused since the
    /// last call (where it is, never what it holds).
    pub async fn audit_barrier_rejections(&self) {
        let rejected = self.store.barrier().take_rejections();
        if rejected.is_empty() {
            return;
        }
        let events: Vec<AuditEvent> = rejected
            .iter()
            .map(|r| {
                AuditEvent::new(
                    "system",
                    "barrier.reject",
                    format!("{}/{}", r.table, r.key),
                    serde_json::json!({
                        "table": r.table,
                        "reason": "the row fails authentication: written or changed without the master key",
                    }),
                )
            })
            .collect();
        if let Err(e) = self.store.append_audit(&events).await {
            tracing::warn!(error = %e, "cannot audit rows the barrier refused");
        }
    }

    /// Seals: forgets the master key, every CA key and the row key.
    pub fn seal(&self) {
        self.seal.close_with(|| {
            self.store.lock();
            self.client_trust.clear();
            self.vault.transit.clear();
            self.vault.access.invalidate();
        });
        tracing::warn!("server sealed");
    }

    /// The loaded authority, or 503 while sealed.
    pub fn authority(&self) -> Result<Arc<Authority>, ApiError> {
        self.seal.authority()
    }

    /// A copy of the master key, or 503 while sealed.
    pub fn master(&self) -> Result<MasterKey, ApiError> {
        self.seal.master()
    }

    /// Reloads the CAs from the store (after a rotation here or on another
    /// replica, or when a retired CA leaves the bundle).
    pub async fn reload_authority(&self) -> Result<(), ApiError> {
        let master = self.master()?;
        let fresh = Arc::new(Authority::load(
            self.store.cas().await?,
            &master,
            now_secs(),
        )?);
        // Sealed meanwhile: it stays sealed (and the client trust empty).
        self.seal
            .replace_authority(fresh, |a| self.client_trust.set_bundle(a.bundle_pem()));
        Ok(())
    }

    /// Reloads the authority if the store's CAs changed; run periodically.
    pub async fn refresh_authority_if_stale(&self) -> Result<(), ApiError> {
        let Ok(current) = self.authority() else {
            return Ok(());
        };
        let cas = self.store.cas().await?;
        let rev = cas.iter().map(|c| c.revision).max().unwrap_or(0);
        if current.is_stale(rev, now_secs()) {
            self.reload_authority().await?;
        }
        Ok(())
    }
}
