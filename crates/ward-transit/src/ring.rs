//! The named key ring: its versions and the policy that decides which
//! versions may still encrypt, sign, decrypt and verify. Rotation, config
//! and trim follow Vault's transit rules (`path_keys_config.go`,
//! `path_trim.go`) so a Vault client sees the same answers. The ring is
//! stored by the server as JSON; loading it re-checks every invariant, so a
//! damaged record is refused instead of half-working.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::error::TransitError;
use crate::key_type::KeyType;
use crate::rfc3339;
use crate::version::KeyVersion;

/// A named, versioned key as the transit engine keeps it.
///
/// Create one with [`KeyRing::new`], persist it with `serde_json` (the
/// output holds key material as base64 and must be sealed by the caller),
/// and load it back with `serde_json::from_slice`, which validates it.
/// `Debug` shows the policy and version numbers, never material.
#[derive(Serialize, Deserialize)]
#[serde(try_from = "StoredKeyRing")]
pub struct KeyRing {
    key_type: KeyType,
    versions: BTreeMap<u32, KeyVersion>,
    latest_version: u32,
    min_decryption_version: u32,
    min_encryption_version: u32,
    deletion_allowed: bool,
    min_available_version: u32,
}

/// The stored shape, before its invariants are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKeyRing {
    key_type: KeyType,
    versions: BTreeMap<u32, KeyVersion>,
    latest_version: u32,
    #[serde(default = "one")]
    min_decryption_version: u32,
    #[serde(default)]
    min_encryption_version: u32,
    #[serde(default)]
    deletion_allowed: bool,
    #[serde(default)]
    min_available_version: u32,
}

fn one() -> u32 {
    1
}

impl TryFrom<StoredKeyRing> for KeyRing {
    type Error = TransitError;

    fn try_from(s: StoredKeyRing) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| Err(TransitError::CorruptKeyRing { reason });
        let first = s.min_available_version.max(1);
        if s.latest_version < first {
            return corrupt(format!(
                "latest_version {} is below the first kept version {first}",
                s.latest_version
            ));
        }
        // Versions are exactly first..=latest: rotation only appends and
        // trim only cuts from below, so a gap means a damaged record.
        let expected = u64::from(s.latest_version - first) + 1;
        if s.versions.len() as u64 != expected
            || s.versions.keys().next() != Some(&first)
            || s.versions.keys().next_back() != Some(&s.latest_version)
        {
            return corrupt(format!(
                "versions must be exactly {first}..={}",
                s.latest_version
            ));
        }
        if s.min_decryption_version < first || s.min_decryption_version > s.latest_version {
            return corrupt(format!(
                "min_decryption_version {} is outside {first}..={}",
                s.min_decryption_version, s.latest_version
            ));
        }
        if s.min_encryption_version != 0
            && (s.min_encryption_version < s.min_decryption_version
                || s.min_encryption_version > s.latest_version)
        {
            return corrupt(format!(
                "min_encryption_version {} is neither 0 nor within {}..={}",
                s.min_encryption_version, s.min_decryption_version, s.latest_version
            ));
        }
        if s.min_available_version > 0 && s.min_encryption_version < s.min_available_version {
            return corrupt(format!(
                "min_encryption_version {} is below min_available_version {}",
                s.min_encryption_version, s.min_available_version
            ));
        }
        for v in s.versions.values() {
            v.check_shape(s.key_type)?;
        }
        Ok(KeyRing {
            key_type: s.key_type,
            versions: s.versions,
            latest_version: s.latest_version,
            min_decryption_version: s.min_decryption_version,
            min_encryption_version: s.min_encryption_version,
            deletion_allowed: s.deletion_allowed,
            min_available_version: s.min_available_version,
        })
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_type", &self.key_type)
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .field("latest_version", &self.latest_version)
            .field("min_decryption_version", &self.min_decryption_version)
            .field("min_encryption_version", &self.min_encryption_version)
            .field("min_available_version", &self.min_available_version)
            .field("deletion_allowed", &self.deletion_allowed)
            .finish()
    }
}

/// One entry of the `keys` map in Vault's read-key response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum KeyVersionInfo {
    /// Symmetric keys show only their creation time, in Unix seconds
    /// (Vault: `"keys": {"1": 1700000000}`).
    Symmetric(u64),
    /// Asymmetric keys show their public half so clients can verify
    /// signatures offline.
    Asymmetric {
        /// Creation time, RFC 3339 UTC.
        creation_time: String,
        /// Vault's curve name: `P-256` or `ed25519`.
        name: &'static str,
        /// PEM SubjectPublicKeyInfo for ecdsa-p256, standard base64 of the
        /// 32 raw bytes for ed25519 (both as Vault shows them).
        public_key: String,
    },
}

impl KeyRing {
    /// A new ring of `key_type` holding version 1, made at `now_unix`
    /// (seconds; passed in so the crate reads no clock).
    pub fn new(key_type: KeyType, now_unix: u64) -> Result<Self, TransitError> {
        Ok(KeyRing {
            key_type,
            versions: BTreeMap::from([(1, KeyVersion::generate(key_type, now_unix)?)]),
            latest_version: 1,
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: false,
            min_available_version: 0,
        })
    }

    /// The ring's key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The newest version; new ciphertexts and signatures use it by default.
    pub fn latest_version(&self) -> u32 {
        self.latest_version
    }

    /// The oldest version that may still decrypt or verify.
    pub fn min_decryption_version(&self) -> u32 {
        self.min_decryption_version
    }

    /// The oldest version an explicit `key_version` may name for new
    /// output; 0 means no floor beyond `min_decryption_version`.
    pub fn min_encryption_version(&self) -> u32 {
        self.min_encryption_version
    }

    /// Versions below this were trimmed and their material destroyed; 0 if
    /// the ring was never trimmed.
    pub fn min_available_version(&self) -> u32 {
        self.min_available_version
    }

    /// Whether the server may delete the ring.
    pub fn deletion_allowed(&self) -> bool {
        self.deletion_allowed
    }

    /// Adds a version with fresh material and makes it the latest. Returns
    /// the new version number.
    pub fn rotate(&mut self, now_unix: u64) -> Result<u32, TransitError> {
        let next = self
            .latest_version
            .checked_add(1)
            .ok_or(TransitError::TooManyVersions)?;
        self.versions
            .insert(next, KeyVersion::generate(self.key_type, now_unix)?);
        self.latest_version = next;
        Ok(next)
    }

    /// Vault's `keys/NAME/config`: changes the given settings together, or
    /// none of them if the result would be inconsistent.
    ///
    /// `min_decryption_version` must be within
    /// `max(1, min_available_version)..=latest`; `min_encryption_version`
    /// must be 0 (latest) or within `min_decryption_version..=latest`, and
    /// may not be 0 once the ring was trimmed. Unlike Vault, 0 for
    /// `min_decryption_version` is refused rather than silently raised to 1.
    pub fn set_config(
        &mut self,
        min_decryption_version: Option<u32>,
        min_encryption_version: Option<u32>,
        deletion_allowed: Option<bool>,
    ) -> Result<(), TransitError> {
        let latest = self.latest_version;
        let dec = min_decryption_version.unwrap_or(self.min_decryption_version);
        let enc = min_encryption_version.unwrap_or(self.min_encryption_version);
        let invalid = |field, reason: String| Err(TransitError::InvalidConfig { field, reason });

        if dec == 0 {
            return invalid(
                "min_decryption_version",
                "key versions start at 1, so the minimum is at least 1".into(),
            );
        }
        if dec > latest {
            return invalid(
                "min_decryption_version",
                format!("{dec} is above the latest key version {latest}"),
            );
        }
        if dec < self.min_available_version {
            return invalid(
                "min_decryption_version",
                format!(
                    "versions below {} were trimmed and cannot decrypt again",
                    self.min_available_version
                ),
            );
        }
        if enc > latest {
            return invalid(
                "min_encryption_version",
                format!("{enc} is above the latest key version {latest}"),
            );
        }
        if enc != 0 && enc < dec {
            return invalid(
                "min_encryption_version",
                format!(
                    "{enc} is below min_decryption_version {dec}; use 0 (latest) or a version \
                     from {dec} to {latest}"
                ),
            );
        }
        if self.min_available_version > 0 && enc < self.min_available_version {
            return invalid(
                "min_encryption_version",
                format!(
                    "versions below {} were trimmed; use a version from {} to {latest}",
                    self.min_available_version, self.min_available_version
                ),
            );
        }
        self.min_decryption_version = dec;
        self.min_encryption_version = enc;
        if let Some(allowed) = deletion_allowed {
            self.deletion_allowed = allowed;
        }
        Ok(())
    }

    /// Vault's `keys/NAME/trim`: permanently destroys the material of every
    /// version below `min_available_version` (zeroized as it is dropped).
    ///
    /// As in Vault, both minimums must already be set explicitly and be at
    /// least `min_available_version`, so no version still in use can be
    /// trimmed, and the value can only grow.
    pub fn trim(&mut self, min_available_version: u32) -> Result<(), TransitError> {
        let invalid = |reason: String| {
            Err(TransitError::InvalidConfig {
                field: "min_available_version",
                reason,
            })
        };
        if min_available_version == 0 {
            return invalid("it must be 1 or more".into());
        }
        if min_available_version < self.min_available_version {
            return invalid(format!(
                "it is already {}; trimmed versions cannot be restored",
                self.min_available_version
            ));
        }
        if self.min_encryption_version == 0 {
            return invalid(
                "set min_encryption_version first, so no version still used for encryption \
                 is trimmed"
                    .into(),
            );
        }
        if min_available_version > self.min_encryption_version {
            return invalid(format!(
                "it cannot exceed min_encryption_version {}",
                self.min_encryption_version
            ));
        }
        if min_available_version > self.min_decryption_version {
            return invalid(format!(
                "it cannot exceed min_decryption_version {}",
                self.min_decryption_version
            ));
        }
        self.versions.retain(|&v, _| v >= min_available_version);
        self.min_available_version = min_available_version;
        Ok(())
    }

    /// Refuses deletion unless `deletion_allowed` was set, as Vault does;
    /// the server calls this before removing the stored ring.
    pub fn ensure_deletable(&self) -> Result<(), TransitError> {
        if self.deletion_allowed {
            Ok(())
        } else {
            Err(TransitError::DeletionNotAllowed)
        }
    }

    /// The version new output (ciphertext, signature) is made with: the
    /// latest unless `requested` names another. A requested version must be
    /// at least `min_encryption_version` (Vault's rule) and, beyond Vault,
    /// at least `min_decryption_version`, since output from an older
    /// version could never be decrypted or verified.
    pub(crate) fn version_for_output(
        &self,
        requested: Option<u32>,
    ) -> Result<(u32, &KeyVersion), TransitError> {
        let version = match requested {
            None | Some(0) => self.latest_version,
            Some(v) => v,
        };
        if version > self.latest_version {
            return Err(TransitError::UnknownVersion {
                version,
                latest: self.latest_version,
            });
        }
        let minimum = self.min_encryption_version.max(self.min_decryption_version);
        if version < minimum {
            return Err(TransitError::EncryptionVersionTooOld { version, minimum });
        }
        Ok((version, self.lookup(version)?))
    }

    /// The version named by a ciphertext or signature, if it may still
    /// decrypt or verify.
    pub(crate) fn version_for_input(&self, version: u32) -> Result<&KeyVersion, TransitError> {
        if version > self.latest_version {
            return Err(TransitError::UnknownVersion {
                version,
                latest: self.latest_version,
            });
        }
        if version < self.min_decryption_version {
            return Err(TransitError::VersionTooOld {
                version,
                min_decryption_version: self.min_decryption_version,
            });
        }
        self.lookup(version)
    }

    fn lookup(&self, version: u32) -> Result<&KeyVersion, TransitError> {
        // Unreachable for a validated ring (versions are contiguous up to
        // latest and the minimums never fall below the trim point), but a
        // missing entry is an error, never a panic.
        self.versions
            .get(&version)
            .ok_or(TransitError::UnknownVersion {
                version,
                latest: self.latest_version,
            })
    }

    /// The `keys` map of Vault's read-key response, by version.
    pub fn public_keys(&self) -> Result<BTreeMap<u32, KeyVersionInfo>, TransitError> {
        self.versions
            .iter()
            .map(|(&n, v)| {
                let info = match self.key_type {
                    KeyType::Aes256Gcm96 => KeyVersionInfo::Symmetric(v.created_unix),
                    KeyType::EcdsaP256 => KeyVersionInfo::Asymmetric {
                        creation_time: rfc3339::format_utc(v.created_unix),
                        name: "P-256",
                        public_key: pem_public_key(&v.ecdsa_spki_der()?),
                    },
                    KeyType::Ed25519 => KeyVersionInfo::Asymmetric {
                        creation_time: rfc3339::format_utc(v.created_unix),
                        name: "ed25519",
                        public_key: STANDARD.encode(v.ed25519_public_key()?),
                    },
                };
                Ok((n, info))
            })
            .collect()
    }

    /// The `data` object of Vault's `GET transit/keys/NAME` for this ring.
    /// Features Ward does not implement (export, derivation, convergent
    /// encryption, auto-rotation, import) are reported as off.
    pub fn describe(&self, name: &str) -> Result<serde_json::Value, TransitError> {
        let t = self.key_type;
        Ok(serde_json::json!({
            "name": name,
            "type": t.as_str(),
            "keys": self.public_keys()?,
            "latest_version": self.latest_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "min_available_version": self.min_available_version,
            "deletion_allowed": self.deletion_allowed,
            "exportable": false,
            "allow_plaintext_backup": false,
            "imported_key": false,
            "auto_rotate_period": 0,
            "derived": false,
            "supports_encryption": t.supports_encryption(),
            "supports_decryption": t.supports_encryption(),
            "supports_derivation": false,
            "supports_signing": t.supports_signing(),
        }))
    }
}

/// PEM as Go's `pem.EncodeToMemory` writes it (64-column base64, trailing
/// newline), which is what Vault returns for ECDSA public keys.
fn pem_public_key(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    let mut rest = body.as_str();
    while !rest.is_empty() {
        // base64 is ASCII, so any byte offset is a character boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn aes_ring(versions: u32) -> KeyRing {
        let mut ring = KeyRing::new(KeyType::Aes256Gcm96, T0).unwrap();
        for i in 1..versions {
            ring.rotate(T0 + u64::from(i)).unwrap();
        }
        ring
    }

    fn config_err(r: Result<(), TransitError>) -> &'static str {
        match r {
            Err(TransitError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn ring_can_be_shared_across_request_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<KeyRing>();
    }

    #[test]
    fn new_ring_has_vault_defaults() {
        let ring = aes_ring(1);
        assert_eq!(ring.latest_version(), 1);
        assert_eq!(ring.min_decryption_version(), 1);
        assert_eq!(ring.min_encryption_version(), 0);
        assert_eq!(ring.min_available_version(), 0);
        assert!(!ring.deletion_allowed());
        assert_eq!(
            ring.ensure_deletable(),
            Err(TransitError::DeletionNotAllowed)
        );
    }

    #[test]
    fn rotate_appends_versions() {
        let mut ring = aes_ring(1);
        assert_eq!(ring.rotate(T0 + 1).unwrap(), 2);
        assert_eq!(ring.rotate(T0 + 2).unwrap(), 3);
        assert_eq!(ring.latest_version(), 3);
        assert_eq!(ring.versions.len(), 3);
    }

    #[test]
    fn set_config_validates_like_vault() {
        let mut ring = aes_ring(3);
        assert_eq!(
            config_err(ring.set_config(Some(0), None, None)),
            "min_decryption_version"
        );
        assert_eq!(
            config_err(ring.set_config(Some(4), None, None)),
            "min_decryption_version"
        );
        assert_eq!(
            config_err(ring.set_config(None, Some(4), None)),
            "min_encryption_version"
        );
        // min_encryption below min_decryption is inconsistent.
        assert_eq!(
            config_err(ring.set_config(Some(3), Some(2), None)),
            "min_encryption_version"
        );
        // Refused changes leave everything as it was, including the flag.
        assert_eq!(
            config_err(ring.set_config(Some(3), Some(2), Some(true))),
            "min_encryption_version"
        );
        assert_eq!(ring.min_decryption_version(), 1);
        assert!(!ring.deletion_allowed());

        ring.set_config(Some(2), Some(3), Some(true)).unwrap();
        assert_eq!(ring.min_decryption_version(), 2);
        assert_eq!(ring.min_encryption_version(), 3);
        assert!(ring.ensure_deletable().is_ok());
        // Raising min_decryption past the current min_encryption is refused.
        ring.set_config(None, Some(2), None).unwrap();
        assert_eq!(
            config_err(ring.set_config(Some(3), None, None)),
            "min_encryption_version"
        );
        // 0 means "latest" and is always consistent before a trim.
        ring.set_config(Some(3), Some(0), None).unwrap();
        assert_eq!(ring.min_encryption_version(), 0);
    }

    #[test]
    fn trim_follows_vault_rules_and_destroys_material() {
        let mut ring = aes_ring(4);
        // Minimums must be set explicitly first.
        assert_eq!(config_err(ring.trim(2)), "min_available_version");
        ring.set_config(Some(2), None, None).unwrap();
        assert_eq!(config_err(ring.trim(2)), "min_available_version");
        ring.set_config(None, Some(3), None).unwrap();
        assert_eq!(config_err(ring.trim(0)), "min_available_version");
        assert_eq!(config_err(ring.trim(3)), "min_available_version"); // > min_decryption
        ring.trim(2).unwrap();
        assert_eq!(ring.min_available_version(), 2);
        assert_eq!(
            ring.versions.keys().copied().collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        // Never decremented; and trimmed versions cannot be re-enabled.
        assert_eq!(config_err(ring.trim(1)), "min_available_version");
        assert_eq!(
            config_err(ring.set_config(Some(1), None, None)),
            "min_decryption_version"
        );
        assert_eq!(
            config_err(ring.set_config(None, Some(0), None)),
            "min_encryption_version"
        );
    }

    #[test]
    fn output_version_rules() {
        let mut ring = aes_ring(3);
        assert_eq!(ring.version_for_output(None).unwrap().0, 3);
        assert_eq!(ring.version_for_output(Some(0)).unwrap().0, 3);
        assert_eq!(ring.version_for_output(Some(1)).unwrap().0, 1);
        assert!(matches!(
            ring.version_for_output(Some(4)),
            Err(TransitError::UnknownVersion {
                version: 4,
                latest: 3
            })
        ));
        ring.set_config(Some(2), None, None).unwrap();
        assert!(matches!(
            ring.version_for_output(Some(1)),
            Err(TransitError::EncryptionVersionTooOld {
                version: 1,
                minimum: 2
            })
        ));
        ring.set_config(None, Some(3), None).unwrap();
        assert!(matches!(
            ring.version_for_output(Some(2)),
            Err(TransitError::EncryptionVersionTooOld {
                version: 2,
                minimum: 3
            })
        ));
    }

    #[test]
    fn debug_shows_policy_not_material() {
        let ring = aes_ring(2);
        let debug = format!("{ring:?}");
        assert!(
            debug.contains("Aes256Gcm96") && debug.contains("latest_version: 2"),
            "{debug}"
        );
        let stored: serde_json::Value = serde_json::to_value(&ring).unwrap();
        for v in ["1", "2"] {
            let material = stored["versions"][v]["material"].as_str().unwrap();
            assert_eq!(material.len(), 44, "32 bytes of base64");
            assert!(!debug.contains(material), "{debug}");
            assert!(!debug.contains(&material[..8]), "{debug}");
        }
    }

    #[test]
    fn stored_json_round_trips_and_is_validated() {
        let ring = aes_ring(3);
        let json = serde_json::to_value(&ring).unwrap();
        let back: KeyRing = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{ring:?}"));

        let refuse = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut j = json.clone();
            edit(&mut j);
            serde_json::from_value::<KeyRing>(j)
                .unwrap_err()
                .to_string()
        };
        let err = refuse(&|j| j["latest_version"] = 4.into());
        assert!(err.contains("the stored key ring is corrupt"), "{err}");
        refuse(&|j| {
            j["versions"].as_object_mut().unwrap().remove("2");
        });
        refuse(&|j| j["min_decryption_version"] = 0.into());
        refuse(&|j| j["min_decryption_version"] = 4.into());
        refuse(&|j| {
            j["min_decryption_version"] = 3.into();
            j["min_encryption_version"] = 2.into();
        });
        refuse(&|j| j["versions"]["1"]["material"] = "AAAA".into());
        refuse(&|j| j["versions"]["1"]["material"] = "not base64".into());
        refuse(&|j| j["key_type"] = "rsa-2048".into());
        refuse(&|j| j["exportable"] = true.into());
        let err = refuse(&|j| j["min_available_version"] = 2.into());
        assert!(err.contains("versions must be exactly 2..=3"), "{err}");

        // Defaults: a record without the optional settings loads as a new ring.
        let mut minimal = json.clone();
        for k in [
            "min_decryption_version",
            "min_encryption_version",
            "deletion_allowed",
            "min_available_version",
        ] {
            minimal.as_object_mut().unwrap().remove(k);
        }
        let ring: KeyRing = serde_json::from_value(minimal).unwrap();
        assert_eq!(ring.min_decryption_version(), 1);
        assert_eq!(ring.min_encryption_version(), 0);
    }

    #[test]
    fn describe_matches_vault_read_key() {
        let ring = aes_ring(2);
        let d = ring.describe("orders").unwrap();
        assert_eq!(d["name"], "orders");
        assert_eq!(d["type"], "aes256-gcm96");
        assert_eq!(d["keys"], serde_json::json!({"1": T0, "2": T0 + 1}));
        assert_eq!(d["latest_version"], 2);
        assert_eq!(d["min_decryption_version"], 1);
        assert_eq!(d["min_encryption_version"], 0);
        assert_eq!(d["min_available_version"], 0);
        assert_eq!(d["supports_encryption"], true);
        assert_eq!(d["supports_decryption"], true);
        assert_eq!(d["supports_signing"], false);
        assert_eq!(d["supports_derivation"], false);
        assert_eq!(d["exportable"], false);
        assert_eq!(d["derived"], false);
        assert_eq!(d["deletion_allowed"], false);

        let ed = KeyRing::new(KeyType::Ed25519, T0).unwrap();
        let d = ed.describe("signer").unwrap();
        assert_eq!(d["supports_signing"], true);
        assert_eq!(d["supports_encryption"], false);
        assert_eq!(d["keys"]["1"]["creation_time"], "2023-11-14T22:13:20Z");
        assert_eq!(d["keys"]["1"]["name"], "ed25519");
        let raw = STANDARD
            .decode(d["keys"]["1"]["public_key"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn ecdsa_public_key_is_pem_spki() {
        let ring = KeyRing::new(KeyType::EcdsaP256, T0).unwrap();
        let keys = ring.public_keys().unwrap();
        let KeyVersionInfo::Asymmetric {
            public_key, name, ..
        } = &keys[&1]
        else {
            panic!("{keys:?}")
        };
        assert_eq!(*name, "P-256");
        assert!(public_key.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(public_key.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(public_key.lines().all(|l| l.len() <= 64));
        // P-256 SPKI DER is 91 bytes: 124 base64 characters over two lines.
        assert_eq!(public_key.lines().count(), 4);
    }
}
