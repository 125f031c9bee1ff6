//! The token service's signing keys: one sealed record (`oauth/keys`)
//! holding every key with when it may sign and when it retires. A new key
//! is published in the JWKS `publish_delay` before it signs, so verifiers
//! that cache the JWKS know it before they meet it; a replaced key stays
//! published until every token it signed has expired.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use ward_store::seal::MasterKey;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::state::Server;
use crate::vault::{open_json, seal_json};

/// The record holding the key ring.
pub(crate) const RING_KEY: &str = "oauth/keys";
/// How long a loaded ring is used before the store is read again (another
/// replica's rotation shows within this).
const RING_TTL: Duration = Duration::from_secs(2);

/// A signing algorithm the service can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    ES256,
    EdDSA,
}

impl Alg {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(Self::ES256),
            "EdDSA" => Some(Self::EdDSA),
            _ => None,
        }
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// One key as stored (inside the sealed record).
#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: Alg,
    /// PKCS#8 DER, base64url.
    pkcs8: String,
    created_at: i64,
    /// From when it signs (it is published from `created_at`).
    sign_from: i64,
    /// When it leaves the JWKS (set when a newer key takes over).
    retire_at: Option<i64>,
}

#[derive(Serialize, Deserialize, Default)]
struct StoredRing {
    keys: Vec<StoredKey>,
}

enum Signer {
    Es256(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A loaded key.
pub(crate) struct Key {
    pub kid: String,
    pub alg: Alg,
    signer: Signer,
    pub sign_from: i64,
    pub retire_at: Option<i64>,
    pub created_at: i64,
}

impl Key {
    fn load(k: &StoredKey) -> Result<Self, ApiError> {
        let der = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(&k.pkcs8)
                .map_err(|_| crate::vault::integrity(RING_KEY))?,
        );
        let signer = match k.alg {
            Alg::ES256 => Signer::Es256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|_| crate::vault::integrity(RING_KEY))?,
            ),
            Alg::EdDSA => Signer::Ed(
                Ed25519KeyPair::from_pkcs8(&der).map_err(|_| crate::vault::integrity(RING_KEY))?,
            ),
        };
        Ok(Self {
            kid: k.kid.clone(),
            alg: k.alg,
            signer,
            sign_from: k.sign_from,
            retire_at: k.retire_at,
            created_at: k.created_at,
        })
    }

    /// The public key as a JWK for OIDC clients (`use: sig`).
    pub(crate) fn jwk(&self) -> serde_json::Value {
        match &self.signer {
            Signer::Es256(k) => {
                let p = k.public_key().as_ref();
                serde_json::json!({
                    "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                    "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65]),
                })
            }
            Signer::Ed(k) => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(k.public_key().as_ref()),
            }),
        }
    }

    /// Signs `claims` as a compact JWS (RFC 7515) with this key; `typ` is
    /// `at+jwt` for access tokens (RFC 9068).
    pub(crate) fn sign(&self, typ: &str, claims: &serde_json::Value) -> Result<String, ApiError> {
        let header = serde_json::json!({"alg": self.alg.name(), "kid": self.kid, "typ": typ});
        let mut out = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default()));
        let sig = match &self.signer {
            Signer::Es256(k) => k
                .sign(&SystemRandom::new(), out.as_bytes())
                .map_err(|_| ApiError::Internal("ES256 signing failed".into()))?
                .as_ref()
                .to_vec(),
            Signer::Ed(k) => k.sign(out.as_bytes()).as_ref().to_vec(),
        };
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }
}

/// Every published key, newest first.
pub(crate) struct Ring {
    pub keys: Vec<Key>,
}

impl Ring {
    /// The key that signs now: the newest whose time has come.
    pub(crate) fn signer(&self, now: i64) -> Option<&Key> {
        self.keys.iter().find(|k| k.sign_from <= now)
    }
    /// The keys in the JWKS now.
    pub(crate) fn published(&self, now: i64) -> impl Iterator<Item = &Key> {
        self.keys
            .iter()
            .filter(move |k| k.retire_at.is_none_or(|t| t > now))
    }
}

/// The cached ring.
#[derive(Default)]
pub struct RingCache(std::sync::RwLock<Option<(Instant, Arc<Ring>)>>);

fn generate(alg: Alg, now: i64, sign_from: i64) -> Result<StoredKey, ApiError> {
    let rng = SystemRandom::new();
    let der = match alg {
        Alg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| ApiError::Internal("generating a P-256 key failed".into()))?
            .as_ref()
            .to_vec(),
        Alg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| ApiError::Internal("generating an Ed25519 key failed".into()))?
            .as_ref()
            .to_vec(),
    };
    let der = Zeroizing::new(der);
    let mut kid = [0u8; 12];
    aws_lc_rs::rand::fill(&mut kid).map_err(|_| ApiError::Internal("random key ID".into()))?;
    Ok(StoredKey {
        kid: URL_SAFE_NO_PAD.encode(kid),
        alg,
        pkcs8: URL_SAFE_NO_PAD.encode(&*der),
        created_at: now,
        sign_from,
        retire_at: None,
    })
}

fn load_ring(stored: &StoredRing) -> Result<Ring, ApiError> {
    let mut keys = stored
        .keys
        .iter()
        .map(Key::load)
        .collect::<Result<Vec<_>, _>>()?;
    keys.sort_by_key(|k| std::cmp::Reverse(k.sign_from));
    Ok(Ring { keys })
}

/// The ring, from the cache or the store; the first use makes a key.
pub(crate) async fn ring(s: &Server, master: &MasterKey) -> Result<Arc<Ring>, ApiError> {
    if let Some((at, ring)) = s
        .oauth
        .ring
        .0
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        && at.elapsed() < RING_TTL
    {
        return Ok(ring.clone());
    }
    let ring = match s.store.vault_get(RING_KEY).await? {
        Some(sealed) => {
            let stored: StoredRing = open_json(master, RING_KEY, &sealed)?;
            load_ring(&stored)?
        }
        None => rotate(s, master, "token-service", true).await?,
    };
    let ring = Arc::new(ring);
    *s.oauth.ring.0.write().unwrap_or_else(|p| p.into_inner()) =
        Some((Instant::now(), ring.clone()));
    Ok(ring)
}

/// Adds a key. The first key signs at once; a later one is published now
/// and signs after the publish delay, and the keys before it retire when
/// the longest-lived token they could have signed has expired. With
/// `only_if_empty`, does nothing when a ring exists (two replicas making
/// the first key at once keep one).
pub(crate) async fn rotate(
    s: &Server,
    master: &MasterKey,
    actor: &str,
    only_if_empty: bool,
) -> Result<Ring, ApiError> {
    let now = ward_store::now_secs();
    let mut tx = s.store.vault_begin(RING_KEY).await?;
    let mut stored: StoredRing = match tx.get(RING_KEY).await? {
        Some(sealed) => open_json(master, RING_KEY, &sealed)?,
        None => StoredRing::default(),
    };
    if only_if_empty && !stored.keys.is_empty() {
        tx.commit(&[]).await?;
        return load_ring(&stored);
    }
    let cfg = &s.config.oauth;
    let first = stored.keys.is_empty();
    let sign_from = if first {
        now
    } else {
        now + cfg.key_publish_delay.as_secs() as i64
    };
    let longest = cfg.token_max_ttl.max(cfg.event_max_ttl).as_secs() as i64;
    for k in stored.keys.iter_mut().filter(|k| k.retire_at.is_none()) {
        k.retire_at = Some(sign_from + longest + 60);
    }
    // Keys past their retirement are gone for good.
    stored.keys.retain(|k| k.retire_at.is_none_or(|t| t > now));
    let key = generate(cfg.signing_alg, now, sign_from)?;
    let kid = key.kid.clone();
    stored.keys.push(key);
    tx.put(RING_KEY, &seal_json(master, RING_KEY, &stored)?)
        .await?;
    let event = ward_store::AuditEvent::new(
        actor,
        "oauth.keys.rotate",
        &kid,
        serde_json::json!({"alg": cfg.signing_alg.name(), "sign_from": sign_from}),
    );
    tx.commit(&[event]).await?;
    *s.oauth.ring.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    load_ring(&stored)
}
