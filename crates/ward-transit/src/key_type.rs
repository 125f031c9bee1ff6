//! The key types the engine implements, under Vault's names, and which
//! operations each supports. Vault clients (hvac's `create_key(key_type=…)`)
//! send these names verbatim, and the read-key response echoes them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::TransitError;

/// The algorithm of a key ring; every version of a ring has the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// AES-256 in GCM mode with a random 96-bit nonce: encrypt, decrypt,
    /// rewrap and datakey.
    #[serde(rename = "aes256-gcm96")]
    Aes256Gcm96,
    /// ECDSA on NIST P-256: sign and verify.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// Ed25519 (pure, without pre-hashing): sign and verify.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl KeyType {
    /// Vault's name for the type, as used in requests and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Ed25519 => "ed25519",
        }
    }

    /// Whether the type encrypts and decrypts (Vault's `supports_encryption`
    /// and `supports_decryption`).
    pub fn supports_encryption(self) -> bool {
        matches!(self, KeyType::Aes256Gcm96)
    }

    /// Whether the type signs and verifies (Vault's `supports_signing`).
    pub fn supports_signing(self) -> bool {
        matches!(self, KeyType::EcdsaP256 | KeyType::Ed25519)
    }

    /// Refuses `operation` unless this type supports it, so every entry
    /// point checks the type before it looks at any other input.
    pub(crate) fn require(self, operation: Operation) -> Result<(), TransitError> {
        let supported = match operation {
            Operation::Encryption => self.supports_encryption(),
            Operation::Signing => self.supports_signing(),
        };
        if supported {
            Ok(())
        } else {
            Err(TransitError::UnsupportedOperation {
                key_type: self,
                operation,
            })
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = TransitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aes256-gcm96" => Ok(KeyType::Aes256Gcm96),
            "ecdsa-p256" => Ok(KeyType::EcdsaP256),
            "ed25519" => Ok(KeyType::Ed25519),
            _ => Err(TransitError::UnknownKeyType {
                given: s.to_owned(),
            }),
        }
    }
}

/// A family of operations a key type may or may not support; carried by
/// [`TransitError::UnsupportedOperation`] so the message can say which key
/// type to create instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// encrypt, decrypt, rewrap, datakey.
    Encryption,
    /// sign, verify.
    Signing,
}

impl Operation {
    pub(crate) fn hint(self) -> &'static str {
        match self {
            Operation::Encryption => {
                "create an aes256-gcm96 key for encrypt, decrypt, rewrap and datakey"
            }
            Operation::Signing => "create an ecdsa-p256 or ed25519 key for sign and verify",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Encryption => "encryption",
            Operation::Signing => "signing",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names_round_trip() {
        for t in [KeyType::Aes256Gcm96, KeyType::EcdsaP256, KeyType::Ed25519] {
            assert_eq!(t.as_str().parse::<KeyType>(), Ok(t));
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
    }

    #[test]
    fn unknown_type_names_the_allowed_ones() {
        let err = "rsa-2048".parse::<KeyType>().unwrap_err();
        assert_eq!(
            err,
            TransitError::UnknownKeyType {
                given: "rsa-2048".into()
            }
        );
        let msg = err.to_string();
        for allowed in ["aes256-gcm96", "ecdsa-p256", "ed25519", "rsa-2048"] {
            assert!(msg.contains(allowed), "{msg}");
        }
        // Vault's names are case-sensitive; a near miss is not accepted.
        assert!("AES256-GCM96".parse::<KeyType>().is_err());
    }

    #[test]
    fn wrong_type_message_names_type_and_operation() {
        let err = KeyType::Ed25519.require(Operation::Encryption).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this key is of type ed25519, which does not support encryption; \
             create an aes256-gcm96 key for encrypt, decrypt, rewrap and datakey"
        );
        assert!(KeyType::Aes256Gcm96.require(Operation::Signing).is_err());
        assert!(KeyType::Aes256Gcm96.require(Operation::Encryption).is_ok());
        assert!(KeyType::EcdsaP256.require(Operation::Signing).is_ok());
    }
}
