//! The barrier: every row that decides who gets what carries a MAC under a
//! key derived from the master key (HKDF-SHA256, one purpose label), over
//! its table, its primary key and every column, so that a writer of the
//! database who holds no unseal share can delete or roll back rows but
//! never forge, edit or move one. A row that fails is treated as absent,
//! counted, logged, and queued for the audit log
//! ([`Barrier::take_rejections`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aws_lc_rs::{hkdf, hmac};

use crate::seal::MasterKey;

/// The HKDF purpose labels of the derived keys (another use gets another label).
const ROW_KEY_LABEL: &[u8] = b"ward barrier: row authentication v1";
const AUDIT_KEY_LABEL: &[u8] = b"ward audit: keyed chain v1";
const VALUE_HMAC_LABEL: &[u8] = b"ward audit: value HMACs v1";
const CHECKPOINT_KEY_LABEL: &[u8] = b"ward audit: checkpoint signing v1";
/// The `meta` key whose authenticated value says the barrier is on.
pub const BARRIER_META: &str = "barrier";
/// What that row holds.
pub const BARRIER_ON: &str = "v1";
/// Most rejected rows kept for the audit log between two drains.
const MAX_QUEUED_REJECTIONS: usize = 1000;

/// One column's value, typed so that `NULL`, `""` and `0` differ.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bytes(&'a [u8]),
}

/// The keys rows and audit records are authenticated with: derived from
/// the master key on unseal, held only as HMAC keys, never stored.
pub struct RowKey {
    row: hmac::Key,
    audit: hmac::Key,
    values: hmac::Key,
}

impl std::fmt::Debug for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowKey(<redacted>)")
    }
}

impl RowKey {
    /// Derives the row key from the master key.
    pub fn derive(master: &MasterKey) -> Self {
        Self {
            row: derive_hmac_key(master, ROW_KEY_LABEL),
            audit: derive_hmac_key(master, AUDIT_KEY_LABEL),
            values: derive_hmac_key(master, VALUE_HMAC_LABEL),
        }
    }

    /// The MAC of an audit record's hash (which covers the record and,
    /// through `prev_hash`, every record before it), hex.
    pub fn audit_mac(&self, hash: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.audit);
        ctx.update(b"ward-audit-record-v1\0");
        ctx.update(hash.as_bytes());
        hex::encode(ctx.sign().as_ref())
    }

    /// `hmac-sha256:` and the HMAC of a value that must not appear in the
    /// audit log itself (a token, a secret value), hex: like Vault's audit
    /// HMACs, equal values match, nothing can be read back.
    pub fn value_hmac(&self, value: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.values);
        ctx.update(value);
        format!("hmac-sha256:{}", hex::encode(ctx.sign().as_ref()))
    }

    /// The MAC of the chain's head (its last sequence number and hash).
    pub fn head_mac(&self, seq: i64, hash: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.audit);
        ctx.update(b"ward-audit-head-v1\0");
        ctx.update(&seq.to_be_bytes());
        ctx.update(hash.as_bytes());
        hex::encode(ctx.sign().as_ref())
    }

    /// The MAC of one row, hex.
    pub fn mac(&self, table: &str, pk: &str, fields: &[Field<'_>]) -> String {
        hex::encode(self.tag(table, pk, fields).as_ref())
    }

    /// Whether `mac` is this row's MAC (compared in constant time).
    pub fn verify(&self, table: &str, pk: &str, fields: &[Field<'_>], mac: Option<&str>) -> bool {
        let Some(given) = mac.and_then(|m| hex::decode(m).ok()) else {
            return false;
        };
        let want = self.tag(table, pk, fields);
        aws_lc_rs::constant_time::verify_slices_are_equal(want.as_ref(), &given).is_ok()
    }

    /// HMAC over the table, the primary key and each field, each
    /// length-prefixed and typed, so no two different rows share an input.
    fn tag(&self, table: &str, pk: &str, fields: &[Field<'_>]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.row);
        let mut put = |kind: u8, bytes: &[u8]| {
            ctx.update(&[kind]);
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        put(b'R', b"ward-row-v1");
        put(b'T', table.as_bytes());
        put(b'K', pk.as_bytes());
        for f in fields {
            match *f {
                Field::Text(s) | Field::OptText(Some(s)) => put(b's', s.as_bytes()),
                Field::OptText(None) | Field::OptInt(None) => put(b'n', b""),
                Field::Int(i) | Field::OptInt(Some(i)) => put(b'i', &i.to_be_bytes()),
                Field::Bytes(b) => put(b'b', b),
            }
        }
        ctx.sign()
    }
}

/// The Ed25519 key audit checkpoints are signed with, derived from the
/// master key (so nothing more is stored, sealed or rotated apart from it);
/// its public half is published, the private half exists only while
/// unsealed and is zeroed by the crypto library on drop.
pub struct CheckpointSigner {
    pair: aws_lc_rs::signature::Ed25519KeyPair,
    trust_domain: String,
}

impl CheckpointSigner {
    /// Derives the signing key of `trust_domain`'s log.
    pub fn derive(master: &MasterKey, trust_domain: &str) -> Self {
        struct Seed;
        impl hkdf::KeyType for Seed {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ward").extract(master.expose());
        let info = [CHECKPOINT_KEY_LABEL];
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        // 32 bytes are within HKDF's output limit, and any 32 bytes are an
        // Ed25519 seed.
        #[allow(clippy::expect_used)]
        {
            prk.expand(&info, Seed)
                .and_then(|okm| okm.fill(seed.as_mut()))
                .expect("HKDF expand of one Ed25519 seed");
        }
        #[allow(clippy::expect_used)]
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .expect("an Ed25519 key from a 32-byte seed");
        Self {
            pair,
            trust_domain: trust_domain.to_owned(),
        }
    }

    /// The public key, base64.
    pub fn public_key(&self) -> String {
        use aws_lc_rs::signature::KeyPair;
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.pair.public_key().as_ref())
    }

    /// Signs a checkpoint of the chain ending at (`seq`, `head`).
    pub fn sign(&self, seq: i64, head: &str, time_ms: i64) -> crate::audit::Checkpoint {
        use base64::Engine;
        let public_key = self.public_key();
        let msg =
            crate::audit::checkpoint_message(&self.trust_domain, seq, head, time_ms, &public_key);
        crate::audit::Checkpoint {
            format: crate::audit::CHECKPOINT_FORMAT.to_owned(),
            trust_domain: self.trust_domain.clone(),
            seq,
            head: head.to_owned(),
            time_ms,
            public_key,
            signature: base64::engine::general_purpose::STANDARD
                .encode(self.pair.sign(&msg).as_ref()),
        }
    }
}

/// One HMAC-SHA256 key for one purpose, derived from the master key.
fn derive_hmac_key(master: &MasterKey, label: &[u8]) -> hmac::Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ward").extract(master.expose());
    let info = [label];
    // Expanding to one HMAC-SHA256 key is within HKDF's output limit.
    #[allow(clippy::expect_used)]
    let okm = prk
        .expand(&info, hmac::HMAC_SHA256)
        .expect("HKDF expand of one HMAC key");
    hmac::Key::from(okm)
}

/// Equal hex MACs, compared in constant time.
pub fn same_mac(a: &str, b: Option<&str>) -> bool {
    b.is_some_and(|b| {
        aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
    })
}

/// A row that failed verification: where it is (never its contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub table: &'static str,
    pub key: String,
}

/// The row key while unsealed, and what was refused.
#[derive(Debug, Default)]
pub struct Barrier {
    key: RwLock<Option<Arc<RowKey>>>,
    rejected: AtomicU64,
    queued: Mutex<Vec<Rejection>>,
}

impl Barrier {
    /// Installs the row key (on unseal).
    pub fn unlock(&self, key: RowKey) {
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(key));
    }

    /// Forgets the row key (on seal).
    pub fn lock(&self) {
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The row key, if unsealed.
    pub fn key(&self) -> Option<Arc<RowKey>> {
        self.key.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many rows failed verification since start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Counts, logs and queues one refused row.
    pub fn reject(&self, table: &'static str, key: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            table,
            key,
            "a stored row failed authentication: it was written or changed without the master key, and is treated as absent"
        );
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() < MAX_QUEUED_REJECTIONS && !q.iter().any(|r| r.table == table && r.key == key) {
            q.push(Rejection {
                table,
                key: key.to_owned(),
            });
        }
    }

    /// The rows refused since the last call (each once), for the audit log.
    pub fn take_rejections(&self) -> Vec<Rejection> {
        std::mem::take(&mut *self.queued.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_verify_with_the_derived_key_only() {
        let master = MasterKey::generate().unwrap();
        let signer = CheckpointSigner::derive(&master, "td");
        let again = CheckpointSigner::derive(&master, "td");
        assert_eq!(
            signer.public_key(),
            again.public_key(),
            "derived, so stable across unseals"
        );
        let cp = signer.sign(7, "abc", 1000);
        let line = serde_json::to_string(&cp).unwrap();
        let read = crate::audit::read_checkpoints(&line, Some(&signer.public_key())).unwrap();
        assert_eq!(read, std::slice::from_ref(&cp));
        // Edited fields, another key, a forged signature.
        let mut edited = cp.clone();
        edited.seq = 3;
        let err = crate::audit::read_checkpoints(&serde_json::to_string(&edited).unwrap(), None);
        assert!(matches!(
            err,
            Err(crate::audit::CheckpointError::BadSignature { seq: 3, .. })
        ));
        let other =
            CheckpointSigner::derive(&MasterKey::generate().unwrap(), "td").sign(7, "abc", 1000);
        let err = crate::audit::read_checkpoints(
            &serde_json::to_string(&other).unwrap(),
            Some(&signer.public_key()),
        );
        assert!(matches!(
            err,
            Err(crate::audit::CheckpointError::OtherKey { .. })
        ));
        let two = format!("{line}\n{}", serde_json::to_string(&other).unwrap());
        assert!(matches!(
            crate::audit::read_checkpoints(&two, None),
            Err(crate::audit::CheckpointError::OtherKey { line: 2, .. })
        ));
        assert!(matches!(
            crate::audit::read_checkpoints("{", None),
            Err(crate::audit::CheckpointError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn a_mac_binds_table_key_and_every_field() {
        let k = RowKey::derive(&MasterKey::generate().unwrap());
        let fields = [Field::Text("admin"), Field::OptInt(None), Field::Int(5)];
        let mac = k.mac("tokens", "t1", &fields);
        assert!(k.verify("tokens", "t1", &fields, Some(&mac)));
        assert!(!k.verify("tokens", "t2", &fields, Some(&mac)), "moved row");
        assert!(
            !k.verify("entries", "t1", &fields, Some(&mac)),
            "other table"
        );
        let edited = [Field::Text("admin"), Field::OptInt(Some(0)), Field::Int(5)];
        assert!(
            !k.verify("tokens", "t1", &edited, Some(&mac)),
            "NULL is not 0"
        );
        let shifted = [Field::Text("admi"), Field::Text("n"), Field::Int(5)];
        assert!(!k.verify("tokens", "t1", &shifted, Some(&mac)));
        assert!(!k.verify("tokens", "t1", &fields, None), "no MAC");
        assert!(!k.verify("tokens", "t1", &fields, Some("zz")), "not hex");
        let other = RowKey::derive(&MasterKey::generate().unwrap());
        assert!(
            !other.verify("tokens", "t1", &fields, Some(&mac)),
            "other key"
        );
    }
}
