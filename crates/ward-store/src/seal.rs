//! Sealing: the master key, the envelope encryption of secrets at rest, and
//! the Shamir shares the master key is split into.
//!
//! Each sealed record gets its own random data key (AES-256-GCM); the data
//! key is wrapped by the master key. The record's name is bound in as
//! associated data, so a ciphertext moved to another record does not open.
//! The master key itself is never stored: only Shamir shares (held by
//! operators) or, in dev mode, a key file reconstruct it.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of the master key and of each data key, in bytes.
pub const KEY_LEN: usize = 32;
const ENVELOPE_VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;
const KEY_CHECK_NAME: &str = "ward:master-key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"ward master key check v1";

/// Why sealing, unsealing or share handling failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The ciphertext was altered, belongs to another record, or the key is wrong.
    #[error("decryption failed: wrong master key, or the sealed record was altered")]
    Decrypt,
    /// The ciphertext is too short or has an unknown version.
    #[error("the sealed record is malformed")]
    Malformed,
    /// A share is not valid base64 or has the wrong length.
    #[error("share {0} is malformed: expected the base64 text printed by `ward server init`")]
    BadShare(usize),
    /// Shares do not reconstruct the master key.
    #[error(
        "the shares do not reconstruct the master key (wrong shares, or shares from another server)"
    )]
    WrongShares,
    /// The split parameters are out of range.
    #[error(
        "invalid share parameters: need 1 <= threshold <= shares <= 255, got threshold {threshold}, shares {shares}"
    )]
    BadParameters {
        /// Shares needed.
        threshold: usize,
        /// Shares made.
        shares: usize,
    },
    /// The crypto library failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

/// The master key. Zeroed on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Result<Self, SealError> {
        let mut k = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut k).map_err(|_| SealError::Crypto("random"))?;
        Ok(Self(k))
    }

    /// Reads a key from its base64 form (the dev-mode key file).
    pub fn from_base64(s: &str) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(s.trim())
                .map_err(|_| SealError::Malformed)?,
        );
        let k: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Malformed)?;
        Ok(Self(k))
    }

    /// The key's bytes, for deriving purpose keys inside this crate only.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key in base64, for the dev-mode key file only.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    /// Encrypts `plaintext` for the record `name` under a fresh data key.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(dek.as_mut()).map_err(|_| SealError::Crypto("random"))?;
        let mut out = Vec::with_capacity(1 + WRAPPED_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(ENVELOPE_VERSION);
        out.extend(aead_seal(&self.0, name.as_bytes(), dek.as_ref())?);
        out.extend(aead_seal(dek.as_ref(), name.as_bytes(), plaintext)?);
        Ok(out)
    }

    /// Decrypts a record sealed by [`MasterKey::seal`] under the same `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 1 + WRAPPED_LEN + NONCE_LEN + TAG_LEN || sealed[0] != ENVELOPE_VERSION {
            return Err(SealError::Malformed);
        }
        let (wrapped, body) = sealed[1..].split_at(WRAPPED_LEN);
        let dek = aead_open(&self.0, name.as_bytes(), wrapped)?;
        aead_open(&dek, name.as_bytes(), body)
    }

    /// A value stored beside the data that tells whether a reconstructed
    /// key is the right one, without revealing anything about it.
    pub fn key_check(&self) -> Result<Vec<u8>, SealError> {
        self.seal(KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT)
    }

    /// True when `check` was made by [`MasterKey::key_check`] with this key.
    pub fn verify_key_check(&self, check: &[u8]) -> bool {
        matches!(self.open(KEY_CHECK_NAME, check), Ok(p) if p.as_slice() == KEY_CHECK_PLAINTEXT)
    }

    /// Splits the key into `shares` Shamir shares, any `threshold` of which
    /// reconstruct it (byte-wise over GF(2^8), as Vault does). Each share is
    /// returned as base64 text.
    pub fn split(
        &self,
        threshold: usize,
        shares: usize,
    ) -> Result<Vec<Zeroizing<String>>, SealError> {
        if threshold == 0 || threshold > shares || shares > 255 {
            return Err(SealError::BadParameters { threshold, shares });
        }
        if threshold == 1 {
            // A degree-0 polynomial: every share is the key itself (Vault
            // allows 1-of-n too). vsss-rs refuses threshold 1, so do it here.
            return Ok((1..=shares as u8)
                .map(|i| {
                    let mut raw = Zeroizing::new(vec![i]);
                    raw.extend_from_slice(&self.0);
                    Zeroizing::new(STANDARD.encode(raw.as_slice()))
                })
                .collect());
        }
        let rng = rand::rand_core::UnwrapErr(rand::rngs::SysRng);
        let parts = vsss_rs::Gf256::split_array(threshold, shares, self.0, rng)
            .map_err(|_| SealError::BadParameters { threshold, shares })?;
        Ok(parts
            .into_iter()
            .map(|mut p| {
                let s = Zeroizing::new(STANDARD.encode(&p));
                p.zeroize();
                s
            })
            .collect())
    }

    /// Reconstructs a key from base64 shares. Whether it is the right key is
    /// for [`MasterKey::verify_key_check`] to say.
    pub fn combine(shares: &[Zeroizing<String>]) -> Result<Self, SealError> {
        let mut raw: Vec<Vec<u8>> = Vec::with_capacity(shares.len());
        for (i, s) in shares.iter().enumerate() {
            let bytes = STANDARD
                .decode(s.trim())
                .map_err(|_| SealError::BadShare(i + 1))?;
            if bytes.len() != KEY_LEN + 1 {
                return Err(SealError::BadShare(i + 1));
            }
            raw.push(bytes);
        }
        let secret = if raw.len() == 1 {
            Ok(raw[0][1..].to_vec())
        } else {
            vsss_rs::Gf256::combine_array(&raw).map_err(|_| SealError::WrongShares)
        };
        for r in raw.iter_mut() {
            r.zeroize();
        }
        let secret = Zeroizing::new(secret?);
        let k: [u8; KEY_LEN] = secret
            .as_slice()
            .try_into()
            .map_err(|_| SealError::WrongShares)?;
        Ok(Self(k))
    }
}

/// Parses a share typed by an operator: base64, the right length.
pub fn check_share_format(share: &str) -> Result<(), SealError> {
    match STANDARD.decode(share.trim()) {
        Ok(b) if b.len() == KEY_LEN + 1 => Ok(()),
        _ => Err(SealError::BadShare(1)),
    }
}

fn aead_seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| SealError::Crypto("key"))?);
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Crypto("random"))?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| SealError::Crypto("seal"))?;
    let mut out = nonce.to_vec();
    out.extend(buf);
    Ok(out)
}

fn aead_open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Malformed);
    }
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| SealError::Crypto("key"))?);
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
    let mut buf = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
        .map_err(|_| SealError::Decrypt)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_binding_to_the_record_name() {
        let k = MasterKey::generate().unwrap();
        let sealed = k.seal("ca/1/key", b"secret key bytes").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            k.open("ca/1/key", &sealed).unwrap().as_slice(),
            b"secret key bytes"
        );
        assert_eq!(k.open("ca/2/key", &sealed).unwrap_err(), SealError::Decrypt);
        let other = MasterKey::generate().unwrap();
        assert_eq!(
            other.open("ca/1/key", &sealed).unwrap_err(),
            SealError::Decrypt
        );
        let mut tampered = sealed.clone();
        let n = tampered.len() - 1;
        tampered[n] ^= 1;
        assert_eq!(
            k.open("ca/1/key", &tampered).unwrap_err(),
            SealError::Decrypt
        );
        assert_eq!(
            k.open("ca/1/key", &sealed[..10]).unwrap_err(),
            SealError::Malformed
        );
    }

    #[test]
    fn any_threshold_of_shares_reconstructs_and_fewer_do_not() {
        let k = MasterKey::generate().unwrap();
        let check = k.key_check().unwrap();
        let shares = k.split(3, 5).unwrap();
        assert_eq!(shares.len(), 5);
        for pick in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            let chosen: Vec<_> = pick.iter().map(|&i| shares[i].clone()).collect();
            let back = MasterKey::combine(&chosen).unwrap();
            assert!(back.verify_key_check(&check));
        }
        let two: Vec<_> = shares[..2].to_vec();
        let wrong = MasterKey::combine(&two).map(|m| m.verify_key_check(&check));
        assert!(
            !matches!(wrong, Ok(true)),
            "two of three shares must not open"
        );
        let foreign = MasterKey::generate().unwrap().split(3, 5).unwrap();
        let mixed = vec![shares[0].clone(), shares[1].clone(), foreign[2].clone()];
        assert!(!matches!(
            MasterKey::combine(&mixed).map(|m| m.verify_key_check(&check)),
            Ok(true)
        ));
    }

    #[test]
    fn one_of_n_shares_each_open() {
        let k = MasterKey::generate().unwrap();
        let check = k.key_check().unwrap();
        let shares = k.split(1, 3).unwrap();
        for s in shares {
            assert!(MasterKey::combine(&[s]).unwrap().verify_key_check(&check));
        }
    }

    #[test]
    fn bad_shares_and_parameters_are_named() {
        assert_eq!(
            MasterKey::combine(&[Zeroizing::new("!!".into())]).unwrap_err(),
            SealError::BadShare(1)
        );
        let k = MasterKey::generate().unwrap();
        assert!(matches!(
            k.split(4, 3),
            Err(SealError::BadParameters { .. })
        ));
        assert!(matches!(
            k.split(0, 3),
            Err(SealError::BadParameters { .. })
        ));
        assert!(format!("{k:?}").contains("redacted"));
        let b = k.to_base64();
        assert!(
            MasterKey::from_base64(&b)
                .unwrap()
                .verify_key_check(&k.key_check().unwrap())
        );
    }
}
