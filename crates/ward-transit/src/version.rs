//! One version of a key ring: its secret material, when it was made, and
//! the aws-lc-rs key objects parsed from it. Material is the raw 32-byte
//! AES key or the PKCS#8 document of the private key, held in `Zeroizing`
//! and stored as base64. Parsed keys are built on first use and cached,
//! because a server may load a ring per request and should pay a PKCS#8
//! parse (with its curve-point check) only for the version it touches.

use std::sync::OnceLock;

use aws_lc_rs::aead::{AES_256_GCM, RandomizedNonceKey};
use aws_lc_rs::rand::{self, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::TransitError;
use crate::key_type::KeyType;

/// AES-256 key length.
pub(crate) const AES_KEY_LEN: usize = 32;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyVersion {
    #[serde(with = "material_b64")]
    material: Zeroizing<Vec<u8>>,
    pub(crate) created_unix: u64,
    #[serde(skip)]
    parsed: Parsed,
}

/// Lazily built key objects; each cell is filled at most once per load.
#[derive(Default)]
struct Parsed {
    aead: OnceLock<RandomizedNonceKey>,
    // aws-lc-rs binds the signature encoding to the key pair, so asn1 and
    // jws each need their own parse of the same PKCS#8 document.
    ecdsa_asn1: OnceLock<EcdsaKeyPair>,
    ecdsa_fixed: OnceLock<EcdsaKeyPair>,
    ed25519: OnceLock<Ed25519KeyPair>,
}

/// Fills `cell` from `parse` unless it is already full. (`OnceLock::
/// get_or_try_init` is not stable.) A racing thread's value wins; both
/// parsed the same material.
fn cached<T>(
    cell: &OnceLock<T>,
    parse: impl FnOnce() -> Result<T, TransitError>,
) -> Result<&T, TransitError> {
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    let value = parse()?;
    Ok(cell.get_or_init(|| value))
}

fn corrupt(what: &str) -> TransitError {
    TransitError::CorruptKeyRing {
        reason: format!("the stored {what} does not parse"),
    }
}

impl KeyVersion {
    /// Fresh material for `key_type` from aws-lc-rs's system RNG.
    pub(crate) fn generate(key_type: KeyType, created_unix: u64) -> Result<Self, TransitError> {
        let material = match key_type {
            KeyType::Aes256Gcm96 => {
                let mut key = Zeroizing::new(vec![0u8; AES_KEY_LEN]);
                rand::fill(&mut key).map_err(|_| TransitError::Crypto {
                    operation: "generate an AES key",
                })?;
                key
            }
            KeyType::EcdsaP256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_ASN1_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| TransitError::Crypto {
                    operation: "generate a P-256 key pair",
                })?;
                // `Document` zeroizes its own buffer on drop.
                Zeroizing::new(doc.as_ref().to_vec())
            }
            KeyType::Ed25519 => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| {
                    TransitError::Crypto {
                        operation: "generate an Ed25519 key pair",
                    }
                })?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
        };
        Ok(KeyVersion {
            material,
            created_unix,
            parsed: Parsed::default(),
        })
    }

    /// Load-time check that is cheap for every version: the AES key length.
    /// Asymmetric documents are checked when first parsed.
    pub(crate) fn check_shape(&self, key_type: KeyType) -> Result<(), TransitError> {
        if key_type == KeyType::Aes256Gcm96 && self.material.len() != AES_KEY_LEN {
            return Err(TransitError::CorruptKeyRing {
                reason: format!(
                    "an aes256-gcm96 version holds {} bytes instead of {AES_KEY_LEN}",
                    self.material.len()
                ),
            });
        }
        Ok(())
    }

    pub(crate) fn aead(&self) -> Result<&RandomizedNonceKey, TransitError> {
        cached(&self.parsed.aead, || {
            RandomizedNonceKey::new(&AES_256_GCM, &self.material).map_err(|_| corrupt("AES key"))
        })
    }

    /// The P-256 key pair producing DER (`asn1`) or fixed `r||s` (`jws`)
    /// signatures.
    pub(crate) fn ecdsa(&self, fixed: bool) -> Result<&EcdsaKeyPair, TransitError> {
        let (cell, alg): (_, &'static EcdsaSigningAlgorithm) = if fixed {
            (&self.parsed.ecdsa_fixed, &ECDSA_P256_SHA256_FIXED_SIGNING)
        } else {
            (&self.parsed.ecdsa_asn1, &ECDSA_P256_SHA256_ASN1_SIGNING)
        };
        cached(cell, || {
            EcdsaKeyPair::from_pkcs8(alg, &self.material).map_err(|_| corrupt("P-256 private key"))
        })
    }

    pub(crate) fn ed25519(&self) -> Result<&Ed25519KeyPair, TransitError> {
        cached(&self.parsed.ed25519, || {
            Ed25519KeyPair::from_pkcs8(&self.material).map_err(|_| corrupt("Ed25519 private key"))
        })
    }

    /// The uncompressed SEC1 point signatures are verified against.
    pub(crate) fn ecdsa_public_point(&self) -> Result<Vec<u8>, TransitError> {
        Ok(self.ecdsa(false)?.public_key().as_ref().to_vec())
    }

    /// The 32-byte Ed25519 public key.
    pub(crate) fn ed25519_public_key(&self) -> Result<Vec<u8>, TransitError> {
        Ok(self.ed25519()?.public_key().as_ref().to_vec())
    }

    /// The P-256 public key as X.509 SubjectPublicKeyInfo DER, which Vault
    /// shows PEM-encoded.
    pub(crate) fn ecdsa_spki_der(&self) -> Result<Vec<u8>, TransitError> {
        use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
        let der: PublicKeyX509Der<'static> =
            self.ecdsa(false)?
                .public_key()
                .as_der()
                .map_err(|_| TransitError::Crypto {
                    operation: "encode a P-256 public key",
                })?;
        Ok(der.as_ref().to_vec())
    }
}

/// Material as standard base64 in the stored JSON. Both directions go
/// through `Zeroizing` buffers so no unzeroized copy of a key is left
/// behind by (de)serialization itself.
mod material_b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use zeroize::Zeroizing;

    pub(super) fn serialize<S: Serializer>(
        material: &Zeroizing<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(STANDARD.encode(material.as_slice()));
        serializer.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        let mut out = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(text.len())));
        STANDARD
            .decode_vec(text.as_bytes(), &mut out)
            .map_err(|_| D::Error::custom("key material is not valid base64"))?;
        Ok(out)
    }
}
