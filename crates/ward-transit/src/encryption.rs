//! Encryption as a service with aes256-gcm96 rings: encrypt, decrypt,
//! rewrap and datakey, byte-compatible with Vault. A ciphertext is
//! `vault:v<N>:` + base64(nonce ‖ ciphertext ‖ tag) with a fresh random
//! 96-bit nonce per message (drawn by aws-lc-rs's `RandomizedNonceKey`, so
//! no caller can repeat one). The version prefix is not authenticated by
//! Vault's format; changing it selects another key, which fails the tag.

use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
use aws_lc_rs::rand;
use zeroize::Zeroizing;

use crate::error::TransitError;
use crate::key_type::Operation;
use crate::ring::KeyRing;
use crate::wire::{self, Alphabet};

/// AES-GCM tag length.
const TAG_LEN: usize = 16;

impl KeyRing {
    /// Encrypts `plaintext` (Vault's `transit/encrypt/NAME`).
    ///
    /// `associated_data` is authenticated but not encrypted; the same bytes
    /// must be given to decrypt (none and empty are the same). `key_version`
    /// None or 0 uses the latest version; an explicit older version must be
    /// at least `min_encryption_version` and `min_decryption_version`.
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        associated_data: Option<&[u8]>,
        key_version: Option<u32>,
    ) -> Result<String, TransitError> {
        self.key_type().require(Operation::Encryption)?;
        let (version, key) = self.version_for_output(key_version)?;
        let mut sealed = Vec::with_capacity(plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(plaintext);
        let nonce = key
            .aead()?
            .seal_in_place_append_tag(Aad::from(associated_data.unwrap_or_default()), &mut sealed)
            .map_err(|_| TransitError::Crypto {
                operation: "encrypt with AES-256-GCM",
            })?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&sealed);
        Ok(wire::envelope(version, &out, Alphabet::Standard))
    }

    /// Decrypts a ciphertext made by [`KeyRing::encrypt`] (Vault's
    /// `transit/decrypt/NAME`).
    ///
    /// Refuses a malformed ciphertext, a version above the latest or below
    /// `min_decryption_version`, and anything that fails authentication
    /// ([`TransitError::Integrity`]); it never returns unauthenticated bytes.
    pub fn decrypt(
        &self,
        ciphertext: &str,
        associated_data: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>, TransitError> {
        self.key_type().require(Operation::Encryption)?;
        let (version, bytes) = wire::parse_ciphertext(ciphertext)?;
        let key = self.version_for_input(version)?;
        let (nonce, sealed) = match bytes.split_first_chunk::<NONCE_LEN>() {
            Some((nonce, sealed)) if sealed.len() >= TAG_LEN => (nonce, sealed),
            _ => {
                return Err(TransitError::MalformedCiphertext {
                    reason: "it is too short to hold a nonce and a tag",
                });
            }
        };
        // Open inside a zeroizing buffer so the plaintext is never held by
        // an ordinary allocation.
        let mut buf = Zeroizing::new(sealed.to_vec());
        let len = key
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(associated_data.unwrap_or_default()),
                &mut buf,
            )
            .map_err(|_| TransitError::Integrity)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Decrypts `ciphertext` and encrypts the plaintext again with
    /// `key_version` (None: the latest), so data can move off old versions
    /// before `min_decryption_version` is raised; the plaintext never
    /// leaves the ring (Vault's `transit/rewrap/NAME`).
    pub fn rewrap(
        &self,
        ciphertext: &str,
        associated_data: Option<&[u8]>,
        key_version: Option<u32>,
    ) -> Result<String, TransitError> {
        let plaintext = self.decrypt(ciphertext, associated_data)?;
        self.encrypt(&plaintext, associated_data, key_version)
    }

    /// A fresh random data key of `bits` (128, 256 or 512) and its
    /// encryption under the latest version (Vault's `transit/datakey`):
    /// the caller encrypts bulk data locally with the plaintext key and
    /// stores only the ciphertext. The server decides whether to return the
    /// plaintext (`datakey/plaintext`) or not (`datakey/wrapped`).
    pub fn datakey(&self, bits: u32) -> Result<(Zeroizing<Vec<u8>>, String), TransitError> {
        self.key_type().require(Operation::Encryption)?;
        let len = match bits {
            128 | 256 | 512 => bits as usize / 8,
            _ => return Err(TransitError::DataKeyBits { bits }),
        };
        let mut key = Zeroizing::new(vec![0u8; len]);
        rand::fill(&mut key).map_err(|_| TransitError::Crypto {
            operation: "generate a data key",
        })?;
        let ciphertext = self.encrypt(&key, None, None)?;
        Ok((key, ciphertext))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::KeyType;

    const T0: u64 = 1_700_000_000;

    fn ring() -> KeyRing {
        KeyRing::new(KeyType::Aes256Gcm96, T0).unwrap()
    }

    /// Re-encodes the envelope after `edit` changed its raw bytes.
    fn tamper(ct: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
        let (v, mut bytes) = wire::parse_ciphertext(ct).unwrap();
        edit(&mut bytes);
        format!("vault:v{v}:{}", STANDARD.encode(bytes))
    }

    #[test]
    fn output_has_vault_format() {
        let ct = ring().encrypt(b"hello", None, None).unwrap();
        let b64 = ct.strip_prefix("vault:v1:").unwrap();
        let raw = STANDARD.decode(b64).unwrap();
        assert_eq!(raw.len(), NONCE_LEN + 5 + TAG_LEN);
        // A fresh nonce each time: the same plaintext never encrypts alike.
        let again = ring().encrypt(b"hello", None, None).unwrap();
        assert_ne!(ct, again);
    }

    #[test]
    fn every_version_round_trips_after_rotation() {
        let mut ring = ring();
        let v1 = ring.encrypt(b"one", None, None).unwrap();
        ring.rotate(T0 + 1).unwrap();
        ring.rotate(T0 + 2).unwrap();
        let v3 = ring.encrypt(b"three", None, None).unwrap();
        let v2 = ring.encrypt(b"two", None, Some(2)).unwrap();
        assert!(v1.starts_with("vault:v1:"));
        assert!(v2.starts_with("vault:v2:"));
        assert!(v3.starts_with("vault:v3:"));
        assert_eq!(ring.decrypt(&v1, None).unwrap().as_slice(), b"one");
        assert_eq!(ring.decrypt(&v2, None).unwrap().as_slice(), b"two");
        assert_eq!(ring.decrypt(&v3, None).unwrap().as_slice(), b"three");
        assert_eq!(ring.encrypt(b"", None, Some(0)).unwrap()[..9], *"vault:v3:");
        assert_eq!(
            ring.decrypt(&ring.encrypt(b"", None, None).unwrap(), None)
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn old_version_decrypts_until_min_decryption_is_raised() {
        let mut ring = ring();
        let v1 = ring.encrypt(b"old", None, None).unwrap();
        ring.rotate(T0 + 1).unwrap();
        assert_eq!(ring.decrypt(&v1, None).unwrap().as_slice(), b"old");
        ring.set_config(Some(2), None, None).unwrap();
        assert_eq!(
            ring.decrypt(&v1, None),
            Err(TransitError::VersionTooOld {
                version: 1,
                min_decryption_version: 2
            })
        );
        // Lowering it again restores access: the material was kept.
        ring.set_config(Some(1), None, None).unwrap();
        assert_eq!(ring.decrypt(&v1, None).unwrap().as_slice(), b"old");
    }

    #[test]
    fn trimmed_version_is_refused() {
        let mut ring = ring();
        let v1 = ring.encrypt(b"old", None, None).unwrap();
        ring.rotate(T0 + 1).unwrap();
        ring.set_config(Some(2), Some(2), None).unwrap();
        ring.trim(2).unwrap();
        assert!(matches!(
            ring.decrypt(&v1, None),
            Err(TransitError::VersionTooOld { .. })
        ));
        assert!(matches!(
            ring.encrypt(b"x", None, Some(1)),
            Err(TransitError::EncryptionVersionTooOld { .. })
        ));
    }

    #[test]
    fn every_tampered_byte_fails_authentication() {
        let ring = ring();
        let ct = ring.encrypt(b"attack at dawn", Some(b"ctx"), None).unwrap();
        let len = wire::parse_ciphertext(&ct).unwrap().1.len();
        for i in 0..len {
            let bad = tamper(&ct, |b| b[i] ^= 0x01);
            assert_eq!(
                ring.decrypt(&bad, Some(b"ctx")),
                Err(TransitError::Integrity),
                "byte {i}"
            );
        }
        let truncated = tamper(&ct, |b| {
            b.pop();
        });
        assert_eq!(
            ring.decrypt(&truncated, Some(b"ctx")),
            Err(TransitError::Integrity)
        );
        let extended = tamper(&ct, |b| b.push(0));
        assert_eq!(
            ring.decrypt(&extended, Some(b"ctx")),
            Err(TransitError::Integrity)
        );
    }

    #[test]
    fn changed_version_prefix_never_yields_plaintext() {
        let mut ring = ring();
        ring.rotate(T0 + 1).unwrap();
        let v1 = ring.encrypt(b"secret", None, Some(1)).unwrap();
        let as_v2 = v1.replacen("vault:v1:", "vault:v2:", 1);
        assert_eq!(ring.decrypt(&as_v2, None), Err(TransitError::Integrity));
        let as_v9 = v1.replacen("vault:v1:", "vault:v9:", 1);
        assert_eq!(
            ring.decrypt(&as_v9, None),
            Err(TransitError::UnknownVersion {
                version: 9,
                latest: 2
            })
        );
    }

    #[test]
    fn associated_data_must_match() {
        let ring = ring();
        let ct = ring.encrypt(b"pii", Some(b"tenant-a"), None).unwrap();
        assert_eq!(
            ring.decrypt(&ct, Some(b"tenant-a")).unwrap().as_slice(),
            b"pii"
        );
        assert_eq!(
            ring.decrypt(&ct, Some(b"tenant-b")),
            Err(TransitError::Integrity)
        );
        assert_eq!(ring.decrypt(&ct, None), Err(TransitError::Integrity));
        // None and empty are the same associated data, as in GCM itself.
        let plain = ring.encrypt(b"x", None, None).unwrap();
        assert_eq!(ring.decrypt(&plain, Some(b"")).unwrap().as_slice(), b"x");
    }

    #[test]
    fn ciphertext_from_another_key_fails() {
        let ct = ring().encrypt(b"x", None, None).unwrap();
        assert_eq!(ring().decrypt(&ct, None), Err(TransitError::Integrity));
    }

    #[test]
    fn malformed_ciphertexts_are_refused_before_decryption() {
        let ring = ring();
        for bad in [
            "",
            "vault:v0:AAAA",
            "vault:v01:AAAA",
            "vault:v-1:AAAA",
            "vaultv1:AAAA",
            "vault:v1:%%%%",
            "vault:v1:",
            "vault:v1:AAAA",
        ] {
            assert!(
                matches!(
                    ring.decrypt(bad, None),
                    Err(TransitError::MalformedCiphertext { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rewrap_moves_to_latest_and_keeps_plaintext() {
        let mut ring = ring();
        let v1 = ring.encrypt(b"payload", Some(b"aad"), None).unwrap();
        ring.rotate(T0 + 1).unwrap();
        ring.rotate(T0 + 2).unwrap();
        let rewrapped = ring.rewrap(&v1, Some(b"aad"), None).unwrap();
        assert!(rewrapped.starts_with("vault:v3:"), "{rewrapped}");
        assert_eq!(
            ring.decrypt(&rewrapped, Some(b"aad")).unwrap().as_slice(),
            b"payload"
        );
        assert!(
            ring.rewrap(&v1, Some(b"aad"), Some(2))
                .unwrap()
                .starts_with("vault:v2:")
        );
        // Rewrap authenticates first: a wrong AAD is refused, not re-sealed.
        assert_eq!(ring.rewrap(&v1, None, None), Err(TransitError::Integrity));
    }

    #[test]
    fn datakey_decrypts_from_its_ciphertext() {
        let ring = ring();
        for bits in [128, 256, 512] {
            let (key, ct) = ring.datakey(bits).unwrap();
            assert_eq!(key.len(), bits as usize / 8);
            assert_eq!(ring.decrypt(&ct, None).unwrap(), key);
        }
        assert_eq!(
            ring.datakey(192),
            Err(TransitError::DataKeyBits { bits: 192 })
        );
        let (a, _) = ring.datakey(256).unwrap();
        let (b, _) = ring.datakey(256).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn signing_keys_refuse_encryption() {
        for t in [KeyType::EcdsaP256, KeyType::Ed25519] {
            let ring = KeyRing::new(t, T0).unwrap();
            let refused = TransitError::UnsupportedOperation {
                key_type: t,
                operation: Operation::Encryption,
            };
            assert_eq!(ring.encrypt(b"x", None, None).unwrap_err(), refused);
            assert_eq!(ring.decrypt("vault:v1:AAAA", None).unwrap_err(), refused);
            assert_eq!(
                ring.rewrap("vault:v1:AAAA", None, None).unwrap_err(),
                refused
            );
            assert_eq!(ring.datakey(256).unwrap_err(), refused);
        }
    }

    #[test]
    fn storage_round_trip_keeps_keys_working() {
        let mut ring = ring();
        let v1 = ring.encrypt(b"before", None, None).unwrap();
        ring.rotate(T0 + 1).unwrap();
        ring.set_config(Some(1), Some(2), Some(true)).unwrap();
        let json = serde_json::to_vec(&ring).unwrap();
        let loaded: KeyRing = serde_json::from_slice(&json).unwrap();
        assert_eq!(loaded.decrypt(&v1, None).unwrap().as_slice(), b"before");
        let v2 = loaded.encrypt(b"after", None, None).unwrap();
        assert_eq!(ring.decrypt(&v2, None).unwrap().as_slice(), b"after");
        assert_eq!(loaded.min_encryption_version(), 2);
        assert!(loaded.deletion_allowed());
    }

    #[test]
    fn errors_never_contain_plaintext() {
        let ring = ring();
        let secret = b"hunter2-very-secret";
        let ct = ring.encrypt(secret, None, None).unwrap();
        let errs = [
            ring.decrypt(&ct, Some(b"wrong")).unwrap_err(),
            ring.decrypt(&tamper(&ct, |b| b[20] ^= 1), None)
                .unwrap_err(),
        ];
        for e in errs {
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
    }
}
