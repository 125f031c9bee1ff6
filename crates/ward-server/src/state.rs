//! The running control plane: its store, its seal state and the loaded
//! authority. Sealed, the server knows only hashes and ciphertext; unsealed,
//! it holds the master key and the CA keys in memory (zeroed on seal).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ward_api::SealStatus;
use ward_store::seal::{MasterKey, SealError};
use ward_store::{AuditEvent, AuditWriter, Store, TokenRecord, now_secs};
use zeroize::Zeroizing;

use crate::authority::Authority;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::peer::ClientTrust;

enum Seal {
    Sealed {
        shares: Vec<Zeroizing<String>>,
    },
    Unsealed {
        master: MasterKey,
        authority: Arc<Authority>,
    },
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's public ID.
    pub token_id: String,
}

impl Caller {
    /// How the caller appears in audit records.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

/// The control plane's shared state.
pub struct Server {
    /// The validated configuration.
    pub config: ServerConfig,
    /// The store.
    pub store: Store,
    /// Group-commit writer for hot-path audit records.
    pub audit: AuditWriter,
    threshold: u32,
    shares: u32,
    key_check: Vec<u8>,
    seal: RwLock<Seal>,
    token_cache: Mutex<HashMap<String, (TokenRecord, Instant)>>,
    client_trust: Arc<ClientTrust>,
    /// Woken when this replica changes entries or CAs, so that waiting
    /// agent syncs answer at once (other replicas' changes are polled).
    pub changes: tokio::sync::Notify,
    /// The highest policy version this process has read from the store.
    policy_high: std::sync::atomic::AtomicI64,
    /// Per-address limits on unauthenticated requests and failed logins.
    pub limits: Arc<crate::limits::Limits>,
}

/// How long a token lookup is trusted without asking the store again. A
/// token removed from the store (on any replica) stops working within this.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Bound on cached tokens, so that a flood of requests cannot grow it.
const TOKEN_CACHE_MAX: usize = 10_000;

/// The hash under which a token is stored: tokens are 256-bit random
/// values, so a fast hash is enough (no dictionary to attack).
pub fn token_hash(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
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
        let audit = AuditWriter::spawn(store.clone());
        let limits = Arc::new(crate::limits::Limits::new(
            config.api.max_unauthenticated_per_minute,
            config.api.max_failed_auth_per_minute,
        ));
        Ok(Arc::new(Self {
            config,
            store,
            audit,
            threshold,
            shares,
            key_check,
            seal: RwLock::new(Seal::Sealed { shares: Vec::new() }),
            token_cache: Mutex::new(HashMap::new()),
            client_trust,
            changes: tokio::sync::Notify::new(),
            policy_high: std::sync::atomic::AtomicI64::new(0),
            limits,
        }))
    }

    /// The trust client certificates (node and workload SVIDs) are verified under.
    pub fn client_trust(&self) -> &Arc<ClientTrust> {
        &self.client_trust
    }

    /// The seal status, in Vault's shape.
    pub fn seal_status(&self) -> SealStatus {
        let (sealed, progress) = match &*self.seal.read().unwrap_or_else(|p| p.into_inner()) {
            Seal::Sealed { shares } => (true, shares.len() as u32),
            Seal::Unsealed { .. } => (false, 0),
        };
        SealStatus {
            kind: "shamir".into(),
            initialized: true,
            sealed,
            t: self.threshold,
            n: self.shares,
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
        let ready = {
            let mut guard = self.seal.write().unwrap_or_else(|p| p.into_inner());
            match &mut *guard {
                Seal::Unsealed { .. } => None,
                Seal::Sealed { shares } => {
                    if reset {
                        shares.clear();
                    }
                    if let Some(s) = share {
                        ward_store::seal::check_share_format(&s)
                            .map_err(|_| ApiError::BadRequest("the share is malformed: expected the base64 text printed by `ward server init`".into()))?;
                        let s = Zeroizing::new(s.trim().to_owned());
                        if !shares.contains(&s) {
                            shares.push(s);
                        }
                    }
                    if shares.len() >= self.threshold as usize {
                        Some(std::mem::take(shares))
                    } else {
                        None
                    }
                }
            }
        };
        if let Some(shares) = ready {
            let master = match MasterKey::combine(&shares) {
                Ok(m) if m.verify_key_check(&self.key_check) => m,
                Ok(_) | Err(SealError::WrongShares) => {
                    return Err(ApiError::BadRequest(
                        "unseal failed: the shares do not reconstruct the master key; progress was reset, start again with the right shares".into(),
                    ));
                }
                Err(e) => {
                    return Err(ApiError::BadRequest(format!(
                        "unseal failed: {e}; progress was reset"
                    )));
                }
            };
            self.unseal_with(master).await?;
            tracing::info!("server unsealed");
        }
        Ok(self.seal_status())
    }

    /// Unseals with a known master key (dev mode's key file).
    pub async fn unseal_with(&self, master: MasterKey) -> Result<(), ApiError> {
        if !master.verify_key_check(&self.key_check) {
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
        self.client_trust.set_bundle(authority.bundle_pem());
        *self.seal.write().unwrap_or_else(|p| p.into_inner()) =
            Seal::Unsealed { master, authority };
        Ok(())
    }

    /// Turns the store's barrier on and loads the CAs through it. A store
    /// that predates the barrier is upgraded only when the operator asked
    /// for it (`--upgrade-store`): nothing inside the database can prove a
    /// store is old rather than stripped of its MACs by a writer who wants
    /// their forged rows authenticated, so the upgrade is never automatic.
    async fn open_barrier_and_load(&self, master: &MasterKey) -> Result<Arc<Authority>, ApiError> {
        match self.store.enable_barrier(self.config.upgrade_store).await {
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
        *self.seal.write().unwrap_or_else(|p| p.into_inner()) = Seal::Sealed { shares: Vec::new() };
        self.store.lock();
        self.client_trust.clear();
        tracing::warn!("server sealed");
    }

    /// The loaded authority, or 503 while sealed.
    pub fn authority(&self) -> Result<Arc<Authority>, ApiError> {
        match &*self.seal.read().unwrap_or_else(|p| p.into_inner()) {
            Seal::Unsealed { authority, .. } => Ok(authority.clone()),
            Seal::Sealed { .. } => Err(ApiError::Sealed),
        }
    }

    /// A copy of the master key, or 503 while sealed.
    pub fn master(&self) -> Result<MasterKey, ApiError> {
        match &*self.seal.read().unwrap_or_else(|p| p.into_inner()) {
            Seal::Unsealed { master, .. } => Ok(master.clone()),
            Seal::Sealed { .. } => Err(ApiError::Sealed),
        }
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
        let mut guard = self.seal.write().unwrap_or_else(|p| p.into_inner());
        // Sealed meanwhile: keep it sealed (and the client trust empty). Another
        // reload installed a newer view meanwhile: keep that one.
        if let Seal::Unsealed { authority, .. } = &mut *guard
            && fresh.revision() >= authority.revision()
        {
            self.client_trust.set_bundle(fresh.bundle_pem());
            *authority = fresh;
        }
        drop(guard);
        self.changes.notify_waiters();
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

    /// Finds a token by hash, through a short-lived cache of known tokens
    /// (unknown ones always go to the store, so nothing can fill the cache
    /// but real tokens).
    async fn lookup_token(&self, hash: &str) -> Result<Option<TokenRecord>, ApiError> {
        {
            let cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((record, at)) = cache.get(hash)
                && at.elapsed() < TOKEN_CACHE_TTL
            {
                return Ok(Some(record.clone()));
            }
        }
        let record = self.store.token_by_hash(hash).await?;
        if let Some(r) = &record {
            let mut cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash.to_owned(), (r.clone(), Instant::now()));
        }
        Ok(record)
    }

    /// Checks the request's token (`Authorization: Bearer …` or Vault's
    /// `X-Vault-Token`). Missing: 401; unknown or expired: 403.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let vault = headers.get("x-vault-token").and_then(|v| v.to_str().ok());
        let token = match (bearer, vault) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::BadRequest(
                    "two different tokens in one request (Authorization and X-Vault-Token); send one".into(),
                ));
            }
            (Some(t), _) | (None, Some(t)) => t.trim(),
            (None, None) => {
                return Err(ApiError::Unauthorized(
                    "missing token: set WARD_TOKEN or pass --token (header Authorization: Bearer TOKEN)".into(),
                ));
            }
        };
        if token.is_empty() {
            return Err(ApiError::Unauthorized(
                "missing token: the token is empty".into(),
            ));
        }
        let record = self.lookup_token(&token_hash(token)).await?;
        match record {
            Some(r) if r.expires_at.is_none_or(|t| t > now_secs()) && r.role == "admin" => {
                Ok(Caller { token_id: r.id })
            }
            Some(r) if r.expires_at.is_some_and(|t| t <= now_secs()) => Err(ApiError::Forbidden(
                "permission denied: the token has expired".into(),
            )),
            _ => Err(ApiError::Forbidden(
                "permission denied: the token is not valid".into(),
            )),
        }
    }
}
