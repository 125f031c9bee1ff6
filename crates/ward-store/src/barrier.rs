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

/// The HKDF purpose label of the row key (another use gets another label).
const ROW_KEY_LABEL: &[u8] = b"ward barrier: row authentication v1";
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

/// The key rows are authenticated with: derived from the master key on
/// unseal, held only as an HMAC key, never stored.
pub struct RowKey(hmac::Key);

impl std::fmt::Debug for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowKey(<redacted>)")
    }
}

impl RowKey {
    /// Derives the row key from the master key.
    pub fn derive(master: &MasterKey) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ward").extract(master.expose());
        let info = [ROW_KEY_LABEL];
        // Expanding to one HMAC-SHA256 key is within HKDF's limit.
        #[allow(clippy::expect_used)]
        let okm = prk
            .expand(&info, hmac::HMAC_SHA256)
            .expect("HKDF expand of one HMAC key");
        Self(hmac::Key::from(okm))
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
        let mut ctx = hmac::Context::with_key(&self.0);
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
