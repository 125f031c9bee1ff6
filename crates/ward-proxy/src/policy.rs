//! The policy in force: fetched from the server (long poll, mTLS with the
//! proxy's SVID) or read from a local file; kept in memory and on disk
//! (`policy.cache`) so that a restart while the server is down still has
//! the last good version. Until a first version arrives every call is
//! denied. A version that does not validate is refused and the previous
//! one stays in force. Versions are installed into the data plane's
//! [`PolicySlot`], which every listener decides on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ward_api::ProxyPolicy;
use ward_dataplane::authz::{Loaded, PolicySlot};
use ward_dataplane::telemetry::Telemetry;
use ward_policy::Engine;

use crate::identity::IdentityWatch;

/// Where the policy in force comes from and where it is kept.
pub struct PolicyState {
    pub slot: Arc<PolicySlot>,
    cache: Option<PathBuf>,
    telemetry: Arc<Telemetry>,
}

impl PolicyState {
    pub fn new(cache: Option<PathBuf>, telemetry: Arc<Telemetry>) -> Self {
        Self {
            slot: Arc::new(PolicySlot::default()),
            cache,
            telemetry,
        }
    }

    /// The policy in force, if any.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.slot.current()
    }

    /// Loads the on-disk copy, if there is a usable one.
    pub fn load_cache(&self) {
        let Some(path) = &self.cache else { return };
        let Ok(text) = std::fs::read(path) else {
            return;
        };
        match serde_json::from_slice::<ProxyPolicy>(&text) {
            Ok(p) => match self.install(p, false) {
                Ok(()) => tracing::info!(path = %path.display(), "policy loaded from the cache"),
                Err(e) => {
                    tracing::warn!(error = %e, "the cached policy does not validate; ignoring it")
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "the policy cache is unreadable; ignoring it")
            }
        }
    }

    /// Validates and puts a version in force (and on disk, when `persist`).
    pub fn install(&self, p: ProxyPolicy, persist: bool) -> Result<(), ward_policy::PolicyError> {
        let engine = Engine::new(&p.text, p.labels.clone())?;
        if persist {
            if let Some(path) = &self.cache {
                if let Err(e) = write_atomically(path, &serde_json::to_vec(&p).unwrap_or_default())
                {
                    tracing::warn!(error = %e, path = %path.display(), "cannot write the policy cache");
                }
            }
        }
        tracing::info!(
            version = p.version,
            policies = engine.len(),
            "policy in force"
        );
        self.telemetry.policy_version.set(p.version);
        self.slot.install(Loaded {
            engine,
            version: p.version,
            revision: p.revision,
            sha256: p.sha256,
            scoped_for: (!p.scoped_for.is_empty()).then_some(p.scoped_for),
        });
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Follows the server: long polls `/v1/proxy/policy`, installing each new version.
pub async fn watch_server(
    state: Arc<PolicyState>,
    client: ward_client::Client,
    mut identity: IdentityWatch,
) {
    // The server knows us by our SVID: wait until there is one.
    let _ = identity.wait_for(|i| i.is_some()).await;
    let mut since = state.current().map_or(0, |l| l.revision);
    let mut backoff = ward_client::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let fetch = client.proxy_policy(since, Duration::from_secs(25));
        // A new SVID may be a new identity, whose policies differ: ask
        // again at once, for everything.
        let result = tokio::select! {
            r = fetch => r,
            _ = identity.changed() => {
                since = 0;
                continue;
            }
        };
        match result {
            Ok(p) => {
                backoff.reset();
                let changed = state.current().is_none_or(|c| {
                    c.revision != p.revision
                        || c.scoped_for.as_deref() != Some(p.scoped_for.as_str())
                });
                let held = state.current().map_or(0, |c| c.version);
                since = p.revision;
                if p.version == 0 {
                    if state.current().is_none() {
                        tracing::warn!(
                            "no policy has been pushed to the server yet: every call is denied"
                        );
                    }
                } else if changed && p.version < held {
                    // Versions only grow; an older one is a rollback (newer
                    // versions removed from the server's store).
                    tracing::error!(
                        offered = p.version,
                        held,
                        "the server offers an older policy version than the one in force: refusing the rollback and keeping the current policy"
                    );
                } else if changed {
                    let version = p.version;
                    if let Err(e) = state.install(p, true) {
                        tracing::error!(version, error = %e, "the server's policy does not validate here; keeping the previous one");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the server for policy; keeping the current one");
                backoff.wait().await;
            }
        }
    }
}

/// Follows a local Cedar file: re-read when it changes.
pub async fn watch_file(state: Arc<PolicyState>, path: PathBuf) {
    let mut last = None;
    loop {
        let stamp = std::fs::metadata(&path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some() && stamp != last {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let version = state.current().map_or(1, |c| c.version + 1);
                    let p = ProxyPolicy {
                        revision: version,
                        version,
                        sha256: String::new(),
                        text,
                        labels: Default::default(),
                        // A local file is the whole set.
                        scoped_for: String::new(),
                    };
                    match state.install(p, false) {
                        Ok(()) => last = stamp,
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "the policy file does not validate; keeping the previous policy");
                            last = stamp;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the policy file")
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
