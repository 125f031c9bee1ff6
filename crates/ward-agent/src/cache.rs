//! What the agent knows, in memory and on disk: its node identity, the trust
//! bundle, the entries it serves and the current SVID of each. Written to
//! `DATA_DIR/state.json` after every change (atomically, fsynced), with every
//! private key sealed under the agent's key in `DATA_DIR/agent.key`, so that
//! a restarted agent serves at once, even while the server is down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use ward_api::Entry;
use ward_store::seal::MasterKey;
use zeroize::Zeroizing;

/// A workload's current X.509-SVID.
#[derive(Clone)]
pub struct WorkloadSvid {
    /// The SPIFFE ID certified (the entry's when it was signed).
    pub spiffe_id: String,
    /// Leaf then intermediates, DER.
    pub chain_der: Vec<Vec<u8>>,
    /// The chain as PEM, as the server sent it.
    pub chain_pem: String,
    /// PKCS#8 private key, DER.
    pub key_der: Zeroizing<Vec<u8>>,
    /// When it was issued, Unix seconds.
    pub issued_at: i64,
    /// When it expires, Unix seconds.
    pub expires_at: i64,
    /// The key as sealed on disk, made once: every state write would
    /// otherwise re-encrypt every key the agent holds.
    pub sealed: Arc<OnceLock<String>>,
}

impl WorkloadSvid {
    /// Past half its lifetime: time to rotate.
    pub fn needs_rotation(&self, now: i64) -> bool {
        now >= self.issued_at + (self.expires_at - self.issued_at) / 2
    }
}

/// The agent's whole state.
#[derive(Clone, Default)]
pub struct State {
    /// The trust domain, `example.org`.
    pub trust_domain: String,
    /// The node's SVID (its own identity towards the server), if attested.
    pub node: Option<WorkloadSvid>,
    /// The trust bundle, DER certificates.
    pub bundle_der: Vec<Vec<u8>>,
    /// The trust bundle, PEM.
    pub bundle_pem: String,
    /// The JWT-SVID keys (JWKS with `jwt-svid` keys only).
    pub jwt_bundle: serde_json::Value,
    /// The store revision the entries are current to.
    pub revision: i64,
    /// Entries whose parent is this node, by ID.
    pub entries: HashMap<String, Entry>,
    /// Current SVIDs by entry ID.
    pub svids: HashMap<String, WorkloadSvid>,
}

#[derive(Serialize, Deserialize)]
struct StoredSvid {
    spiffe_id: String,
    chain_pem: String,
    key_sealed: String,
    issued_at: i64,
    expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    trust_domain: String,
    node: Option<StoredSvid>,
    bundle_pem: String,
    jwt_bundle: serde_json::Value,
    revision: i64,
    entries: Vec<Entry>,
    svids: HashMap<String, StoredSvid>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// File system trouble.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not what the agent wrote.
    #[error("{path} is corrupt or was sealed with another agent key: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Parses PEM certificates into DER.
pub fn pem_to_der_list(pem: &str) -> Vec<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

/// The JWKS with only the `jwt-svid` keys of a SPIFFE bundle.
pub fn jwt_keys_only(spiffe_bundle: &serde_json::Value) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = spiffe_bundle["keys"]
        .as_array()
        .map(|ks| {
            ks.iter()
                .filter(|k| k["use"] == "jwt-svid")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({ "keys": keys })
}

/// The shared state and a generation counter that wakes Workload API
/// streams whenever anything they serve changes.
pub struct Cache {
    state: std::sync::Mutex<State>,
    /// Serializes whole updates (change, write, rename): two writers sharing
    /// the temp file, or renaming out of order, would corrupt the file or
    /// put an older state on disk.
    write: std::sync::Mutex<()>,
    generation: watch::Sender<u64>,
    path: PathBuf,
    key: MasterKey,
}

fn io(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), CacheError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

impl Cache {
    /// Opens the agent's data directory: its key (created on first use) and
    /// its last state, if any.
    pub fn open(data_dir: &Path) -> Result<Self, CacheError> {
        std::fs::create_dir_all(data_dir).map_err(|e| io(data_dir, e))?;
        let key_path = data_dir.join("agent.key");
        let key = if key_path.exists() {
            let text =
                Zeroizing::new(std::fs::read_to_string(&key_path).map_err(|e| io(&key_path, e))?);
            MasterKey::from_base64(&text).map_err(|e| CacheError::Corrupt {
                path: key_path.clone(),
                reason: e.to_string(),
            })?
        } else {
            let k = MasterKey::generate().map_err(|e| io(&key_path, e))?;
            write_private(&key_path, k.to_base64().as_bytes())?;
            k
        };
        let path = data_dir.join("state.json");
        let state = if path.exists() {
            load(&path, &key)?
        } else {
            State::default()
        };
        let (generation, _) = watch::channel(0);
        Ok(Self {
            state: std::sync::Mutex::new(state),
            write: std::sync::Mutex::new(()),
            generation,
            path,
            key,
        })
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads part of the state without copying all of it.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the state, writes it to disk, then wakes the streams.
    pub fn update(&self, f: impl FnOnce(&mut State)) -> Result<(), CacheError> {
        let _writing = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let stored = {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard);
            to_stored(&guard, &self.key)?
        };
        let json = serde_json::to_vec(&stored).map_err(|e| io(&self.path, e))?;
        write_private(&self.path, &json)?;
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// A receiver that changes whenever the state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

fn seal_svid(key: &MasterKey, name: &str, svid: &WorkloadSvid) -> Result<StoredSvid, CacheError> {
    let key_sealed = match svid.sealed.get() {
        Some(s) => s.clone(),
        None => {
            let sealed = key.seal(name, &svid.key_der).map_err(|e| CacheError::Io {
                path: PathBuf::from(name),
                reason: e.to_string(),
            })?;
            svid.sealed.get_or_init(|| STANDARD.encode(sealed)).clone()
        }
    };
    Ok(StoredSvid {
        spiffe_id: svid.spiffe_id.clone(),
        chain_pem: svid.chain_pem.clone(),
        key_sealed,
        issued_at: svid.issued_at,
        expires_at: svid.expires_at,
    })
}

fn open_svid(
    key: &MasterKey,
    name: &str,
    s: StoredSvid,
    path: &Path,
) -> Result<WorkloadSvid, CacheError> {
    let corrupt = |reason: String| CacheError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let sealed = STANDARD
        .decode(&s.key_sealed)
        .map_err(|e| corrupt(e.to_string()))?;
    let key_der = key
        .open(name, &sealed)
        .map_err(|e| corrupt(format!("{name}: {e}")))?;
    Ok(WorkloadSvid {
        spiffe_id: s.spiffe_id,
        chain_der: pem_to_der_list(&s.chain_pem),
        chain_pem: s.chain_pem,
        key_der,
        issued_at: s.issued_at,
        expires_at: s.expires_at,
        sealed: Arc::new(OnceLock::from(s.key_sealed)),
    })
}

fn to_stored(state: &State, key: &MasterKey) -> Result<Stored, CacheError> {
    let node = state
        .node
        .as_ref()
        .map(|n| seal_svid(key, "agent/node", n))
        .transpose()?;
    let mut svids = HashMap::new();
    for (id, svid) in &state.svids {
        svids.insert(
            id.clone(),
            seal_svid(key, &format!("agent/svid/{id}"), svid)?,
        );
    }
    Ok(Stored {
        trust_domain: state.trust_domain.clone(),
        node,
        bundle_pem: state.bundle_pem.clone(),
        jwt_bundle: state.jwt_bundle.clone(),
        revision: state.revision,
        entries: state.entries.values().cloned().collect(),
        svids,
    })
}

fn load(path: &Path, key: &MasterKey) -> Result<State, CacheError> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let node = stored
        .node
        .map(|n| open_svid(key, "agent/node", n, path))
        .transpose()?;
    let mut svids = HashMap::new();
    for (id, s) in stored.svids {
        let name = format!("agent/svid/{id}");
        svids.insert(id, open_svid(key, &name, s, path)?);
    }
    Ok(State {
        trust_domain: stored.trust_domain,
        node,
        bundle_der: pem_to_der_list(&stored.bundle_pem),
        bundle_pem: stored.bundle_pem,
        jwt_bundle: stored.jwt_bundle,
        revision: stored.revision,
        entries: stored
            .entries
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect(),
        svids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_reopen_with_keys_sealed_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut rx = cache.subscribe();
        cache
            .update(|s| {
                s.trust_domain = "td".into();
                s.revision = 7;
                s.svids.insert(
                    "e1".into(),
                    WorkloadSvid {
                        spiffe_id: "spiffe://td/a".into(),
                        chain_der: vec![],
                        chain_pem: String::new(),
                        key_der: Zeroizing::new(b"very secret key bytes".to_vec()),
                        issued_at: 100,
                        expires_at: 200,
                        sealed: Default::default(),
                    },
                );
            })
            .unwrap();
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        let on_disk = std::fs::read(dir.path().join("state.json")).unwrap();
        assert!(
            !on_disk.windows(11).any(|w| w == b"very secret"),
            "a key is on disk in the clear"
        );
        drop(cache);
        let again = Cache::open(dir.path()).unwrap();
        let s = again.snapshot();
        assert_eq!(s.revision, 7);
        assert_eq!(s.svids["e1"].key_der.as_slice(), b"very secret key bytes");
        assert!(!s.svids["e1"].needs_rotation(149));
        assert!(s.svids["e1"].needs_rotation(150));
        // Another agent key cannot open it.
        std::fs::remove_file(dir.path().join("agent.key")).unwrap();
        assert!(matches!(
            Cache::open(dir.path()),
            Err(CacheError::Corrupt { .. })
        ));
    }
}
