//! The seal as a state machine: `Sealed` (collecting shares) or `Unsealed`
//! (holding the master key and the loaded authority). Only this module
//! touches the state; the server asks it for keys and tells it to move.
//! Keys live only inside it, in zeroizing types, and leave it only as the
//! `Arc` or clone a caller needs for one operation.

use std::sync::{Arc, RwLock};

use ward_store::seal::{MasterKey, SealError};
use zeroize::Zeroizing;

use crate::authority::Authority;
use crate::error::ApiError;

enum Seal {
    Sealed {
        shares: Vec<Zeroizing<String>>,
    },
    Unsealed {
        master: MasterKey,
        authority: Arc<Authority>,
    },
}

pub struct SealState {
    threshold: u32,
    shares: u32,
    key_check: Vec<u8>,
    state: RwLock<Seal>,
}

impl SealState {
    /// Sealed, for a store split into `shares` shares of which `threshold`
    /// open it; `key_check` recognises the right master key.
    pub fn new(threshold: u32, shares: u32, key_check: Vec<u8>) -> Self {
        Self {
            threshold,
            shares,
            key_check,
            state: RwLock::new(Seal::Sealed { shares: Vec::new() }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Seal> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Seal> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// (threshold, shares).
    pub fn scheme(&self) -> (u32, u32) {
        (self.threshold, self.shares)
    }

    /// (sealed, shares submitted so far).
    pub fn progress(&self) -> (bool, u32) {
        match &*self.read() {
            Seal::Sealed { shares } => (true, shares.len() as u32),
            Seal::Unsealed { .. } => (false, 0),
        }
    }

    /// True when `master` is this store's master key.
    pub fn is_master(&self, master: &MasterKey) -> bool {
        master.verify_key_check(&self.key_check)
    }

    /// Takes one share (after `reset`, if asked). At the threshold the
    /// shares are combined and checked: the master key is returned for the
    /// caller to unseal with, and the collected shares are forgotten
    /// either way. Unsealed already: nothing to do (`None`).
    pub fn add_share(
        &self,
        share: Option<String>,
        reset: bool,
    ) -> Result<Option<MasterKey>, ApiError> {
        let ready = {
            let mut guard = self.write();
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
        let Some(shares) = ready else {
            return Ok(None);
        };
        match MasterKey::combine(&shares) {
            Ok(m) if self.is_master(&m) => Ok(Some(m)),
            Ok(_) | Err(SealError::WrongShares) => Err(ApiError::BadRequest(
                "unseal failed: the shares do not reconstruct the master key; progress was reset, start again with the right shares".into(),
            )),
            Err(e) => Err(ApiError::BadRequest(format!(
                "unseal failed: {e}; progress was reset"
            ))),
        }
    }

    /// The loaded authority, or 503 while sealed.
    pub fn authority(&self) -> Result<Arc<Authority>, ApiError> {
        match &*self.read() {
            Seal::Unsealed { authority, .. } => Ok(authority.clone()),
            Seal::Sealed { .. } => Err(ApiError::Sealed),
        }
    }

    /// A copy of the master key, or 503 while sealed.
    pub fn master(&self) -> Result<MasterKey, ApiError> {
        match &*self.read() {
            Seal::Unsealed { master, .. } => Ok(master.clone()),
            Seal::Sealed { .. } => Err(ApiError::Sealed),
        }
    }

    /// Installs a freshly loaded authority unless the server was sealed
    /// meanwhile or a newer view was installed meanwhile; `installed` runs
    /// under the lock when it is, so that a seal cannot slip in between
    /// (what it sets up, such as the client trust, must not outlive a seal).
    pub fn replace_authority(&self, fresh: Arc<Authority>, installed: impl FnOnce(&Authority)) {
        let mut guard = self.write();
        if let Seal::Unsealed { authority, .. } = &mut *guard
            && fresh.revision() >= authority.revision()
        {
            installed(&fresh);
            *authority = fresh;
        }
    }

    /// Sealed → Unsealed, running `opened` under the lock (see
    /// [`SealState::replace_authority`]).
    pub fn open_with(
        &self,
        master: MasterKey,
        authority: Arc<Authority>,
        opened: impl FnOnce(&Authority),
    ) {
        let mut guard = self.write();
        opened(&authority);
        *guard = Seal::Unsealed { master, authority };
    }

    /// → Sealed: the master key and every CA key are dropped (and zeroed);
    /// `closed` runs under the lock.
    pub fn close_with(&self, closed: impl FnOnce()) {
        let mut guard = self.write();
        *guard = Seal::Sealed { shares: Vec::new() };
        closed();
    }
}
