//! Signing as a service with ecdsa-p256 and ed25519 rings: Vault's
//! `transit/sign/NAME` and `transit/verify/NAME` as hvac's `sign_data` and
//! `verify_signed_data` call them. A signature is `vault:v<N>:` + base64 of
//! the DER (`asn1`) or fixed `r‖s` (`jws`, base64url without padding, as in
//! JWS) signature.
//!
//! What aws-lc-rs 1.x can do decides what is offered, rather than
//! hand-rolled curve code: P-256 signs only with SHA-256
//! (`ECDSA_P256_SHA256_{ASN1,FIXED}_SIGNING`; SHA-384/512 exist for P-256
//! only as verification algorithms), so sha2-384 and sha2-512 are refused
//! for ECDSA. Prehashed ECDSA is supported for sha2-256 through
//! `EcdsaKeyPair::sign_digest` and `UnparsedPublicKey::verify_digest`
//! (not FIPS-approved APIs). Ed25519 signs the message itself; Vault
//! ignores `hash_algorithm` for it and so does this engine.

use std::str::FromStr;

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey,
};

use crate::error::TransitError;
use crate::key_type::{KeyType, Operation};
use crate::ring::KeyRing;
use crate::wire::{self, Alphabet};

/// Vault's `hash_algorithm`: what the input is hashed with before ECDSA
/// signs it (or, with `prehashed`, which digest the input already is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgorithm {
    /// `sha2-256`, Vault's default.
    #[default]
    Sha2_256,
    /// `sha2-384`: recognised, but refused for ecdsa-p256 (see module docs).
    Sha2_384,
    /// `sha2-512`: recognised, but refused for ecdsa-p256 (see module docs).
    Sha2_512,
}

impl HashAlgorithm {
    /// Vault's name for the algorithm.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Sha2_256 => "sha2-256",
            HashAlgorithm::Sha2_384 => "sha2-384",
            HashAlgorithm::Sha2_512 => "sha2-512",
        }
    }
}

impl FromStr for HashAlgorithm {
    type Err = TransitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha2-256" => Ok(HashAlgorithm::Sha2_256),
            "sha2-384" => Ok(HashAlgorithm::Sha2_384),
            "sha2-512" => Ok(HashAlgorithm::Sha2_512),
            _ => Err(TransitError::UnknownHashAlgorithm {
                given: s.to_owned(),
            }),
        }
    }
}

/// Vault's `marshaling_algorithm`: how the signature is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Marshaling {
    /// `asn1`, Vault's default: DER `ECDSA-Sig-Value` in standard base64
    /// (what OpenSSL and X.509 use).
    #[default]
    Asn1,
    /// `jws`: fixed-width `r‖s` in unpadded base64url, ready for a JWS
    /// (RFC 7518 §3.4).
    Jws,
}

impl Marshaling {
    /// Vault's name for the encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Marshaling::Asn1 => "asn1",
            Marshaling::Jws => "jws",
        }
    }

    // Vault applies the base64 variant to every key type, ed25519 included.
    fn alphabet(self) -> Alphabet {
        match self {
            Marshaling::Asn1 => Alphabet::Standard,
            Marshaling::Jws => Alphabet::UrlNoPad,
        }
    }
}

impl FromStr for Marshaling {
    type Err = TransitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "asn1" => Ok(Marshaling::Asn1),
            "jws" => Ok(Marshaling::Jws),
            _ => Err(TransitError::UnknownMarshalingAlgorithm {
                given: s.to_owned(),
            }),
        }
    }
}

/// The request options shared by sign and verify; verify must be given the
/// same options the signature was made with, as in Vault. `Default` is
/// Vault's default (sha2-256, not prehashed, asn1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignatureOptions {
    /// Vault's `hash_algorithm`.
    pub hash_algorithm: HashAlgorithm,
    /// Vault's `prehashed`: the input is already the digest.
    pub prehashed: bool,
    /// Vault's `marshaling_algorithm`.
    pub marshaling: Marshaling,
}

/// What the ECDSA operation is applied to, after checking the options.
enum EcdsaInput {
    Message,
    Digest(Digest),
}

fn ecdsa_input(input: &[u8], opts: &SignatureOptions) -> Result<EcdsaInput, TransitError> {
    if opts.hash_algorithm != HashAlgorithm::Sha2_256 {
        return Err(TransitError::UnsupportedHashAlgorithm {
            key_type: KeyType::EcdsaP256,
            hash: opts.hash_algorithm.as_str(),
        });
    }
    if !opts.prehashed {
        return Ok(EcdsaInput::Message);
    }
    let digest = Digest::import_less_safe(input, &digest::SHA256).map_err(|_| {
        TransitError::DigestLength {
            hash: HashAlgorithm::Sha2_256.as_str(),
            expected: digest::SHA256_OUTPUT_LEN,
            actual: input.len(),
        }
    })?;
    Ok(EcdsaInput::Digest(digest))
}

fn refuse_prehashed_ed25519(opts: &SignatureOptions) -> Result<(), TransitError> {
    if opts.prehashed {
        Err(TransitError::PrehashedNotSupported {
            key_type: KeyType::Ed25519,
        })
    } else {
        Ok(())
    }
}

impl KeyRing {
    /// Signs `input` (Vault's `transit/sign/NAME`; hvac `sign_data`).
    ///
    /// `key_version` None or 0 signs with the latest version; an explicit
    /// older one follows the same floor as encryption.
    pub fn sign(
        &self,
        input: &[u8],
        opts: &SignatureOptions,
        key_version: Option<u32>,
    ) -> Result<String, TransitError> {
        self.key_type().require(Operation::Signing)?;
        let sign_failed = |_| TransitError::Crypto { operation: "sign" };
        let (version, key) = self.version_for_output(key_version)?;
        let signature = match self.key_type() {
            KeyType::EcdsaP256 => {
                let pair = key.ecdsa(opts.marshaling == Marshaling::Jws)?;
                match ecdsa_input(input, opts)? {
                    EcdsaInput::Message => pair.sign(&SystemRandom::new(), input),
                    EcdsaInput::Digest(d) => pair.sign_digest(&d),
                }
                .map_err(sign_failed)?
                .as_ref()
                .to_vec()
            }
            KeyType::Ed25519 => {
                refuse_prehashed_ed25519(opts)?;
                key.ed25519()?
                    .try_sign(input)
                    .map_err(sign_failed)?
                    .as_ref()
                    .to_vec()
            }
            KeyType::Aes256Gcm96 => unreachable_type(self.key_type())?,
        };
        Ok(wire::envelope(
            version,
            &signature,
            opts.marshaling.alphabet(),
        ))
    }

    /// Checks a signature made by [`KeyRing::sign`] over `input` (Vault's
    /// `transit/verify/NAME`; hvac `verify_signed_data`).
    ///
    /// `Ok(false)` means a well-formed signature that does not match (wrong
    /// input, another key or version, altered bytes). `Err` means the
    /// request itself is wrong: a malformed signature, a version above the
    /// latest or below `min_decryption_version`, or refused options.
    pub fn verify(
        &self,
        input: &[u8],
        signature: &str,
        opts: &SignatureOptions,
    ) -> Result<bool, TransitError> {
        self.key_type().require(Operation::Signing)?;
        let (version, sig) = wire::open_envelope(signature, opts.marshaling.alphabet())
            .map_err(|reason| TransitError::MalformedSignature { reason })?;
        let key = self.version_for_input(version)?;
        let valid = match self.key_type() {
            KeyType::EcdsaP256 => {
                let alg = match opts.marshaling {
                    Marshaling::Asn1 => &ECDSA_P256_SHA256_ASN1,
                    Marshaling::Jws => &ECDSA_P256_SHA256_FIXED,
                };
                let public = UnparsedPublicKey::new(alg, key.ecdsa_public_point()?);
                match ecdsa_input(input, opts)? {
                    EcdsaInput::Message => public.verify(input, &sig),
                    EcdsaInput::Digest(d) => public.verify_digest(&d, &sig),
                }
                .is_ok()
            }
            KeyType::Ed25519 => {
                refuse_prehashed_ed25519(opts)?;
                UnparsedPublicKey::new(&ED25519, key.ed25519_public_key()?)
                    .verify(input, &sig)
                    .is_ok()
            }
            KeyType::Aes256Gcm96 => unreachable_type(self.key_type())?,
        };
        Ok(valid)
    }
}

/// `require(Operation::Signing)` has already refused every other type; this
/// keeps the match exhaustive without a panic.
fn unreachable_type<T>(key_type: KeyType) -> Result<T, TransitError> {
    Err(TransitError::UnsupportedOperation {
        key_type,
        operation: Operation::Signing,
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::KeyVersionInfo;

    const T0: u64 = 1_700_000_000;
    const ASYMMETRIC: [KeyType; 2] = [KeyType::EcdsaP256, KeyType::Ed25519];

    fn jws() -> SignatureOptions {
        SignatureOptions {
            marshaling: Marshaling::Jws,
            ..Default::default()
        }
    }

    #[test]
    fn option_names_parse_like_vault() {
        assert_eq!("sha2-384".parse(), Ok(HashAlgorithm::Sha2_384));
        assert_eq!("jws".parse(), Ok(Marshaling::Jws));
        let err = "sha1".parse::<HashAlgorithm>().unwrap_err();
        assert!(
            err.to_string().contains("sha2-256, sha2-384, sha2-512"),
            "{err}"
        );
        assert!("JWS".parse::<Marshaling>().is_err());
    }

    #[test]
    fn sign_and_verify_round_trip_for_both_types() {
        for t in ASYMMETRIC {
            let ring = KeyRing::new(t, T0).unwrap();
            for opts in [SignatureOptions::default(), jws()] {
                let sig = ring.sign(b"release v1.2.3", &opts, None).unwrap();
                assert!(sig.starts_with("vault:v1:"), "{sig}");
                assert_eq!(
                    ring.verify(b"release v1.2.3", &sig, &opts),
                    Ok(true),
                    "{t} {opts:?}"
                );
                assert_eq!(
                    ring.verify(b"release v1.2.4", &sig, &opts),
                    Ok(false),
                    "{t} {opts:?}"
                );
            }
        }
    }

    #[test]
    fn signature_encodings_match_vault() {
        let ring = KeyRing::new(KeyType::EcdsaP256, T0).unwrap();
        let jws_sig = ring.sign(b"m", &jws(), None).unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jws_sig.strip_prefix("vault:v1:").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 64, "fixed r||s for P-256");
        let der_sig = ring.sign(b"m", &SignatureOptions::default(), None).unwrap();
        let der = STANDARD
            .decode(der_sig.strip_prefix("vault:v1:").unwrap())
            .unwrap();
        assert_eq!(der[0], 0x30, "DER SEQUENCE");
        // A signature verifies only with the marshaling it was made with.
        assert!(
            ring.verify(b"m", &jws_sig, &SignatureOptions::default())
                .is_err()
        );

        let ed = KeyRing::new(KeyType::Ed25519, T0).unwrap();
        let sig = ed.sign(b"m", &SignatureOptions::default(), None).unwrap();
        assert_eq!(
            STANDARD.decode(&sig["vault:v1:".len()..]).unwrap().len(),
            64
        );
    }

    #[test]
    fn old_signature_verifies_after_rotation_until_min_decryption() {
        for t in ASYMMETRIC {
            let mut ring = KeyRing::new(t, T0).unwrap();
            let opts = SignatureOptions::default();
            let v1 = ring.sign(b"doc", &opts, None).unwrap();
            ring.rotate(T0 + 1).unwrap();
            let v2 = ring.sign(b"doc", &opts, None).unwrap();
            assert!(v2.starts_with("vault:v2:"));
            assert_eq!(ring.verify(b"doc", &v1, &opts), Ok(true));
            assert_eq!(ring.verify(b"doc", &v2, &opts), Ok(true));
            // The v1 signature bytes under the v2 prefix are not v2's.
            let relabelled = v1.replacen("vault:v1:", "vault:v2:", 1);
            assert_eq!(ring.verify(b"doc", &relabelled, &opts), Ok(false));
            ring.set_config(Some(2), None, None).unwrap();
            assert!(matches!(
                ring.verify(b"doc", &v1, &opts),
                Err(TransitError::VersionTooOld { version: 1, .. })
            ));
            assert!(matches!(
                ring.verify(b"doc", &v2.replacen("v2", "v3", 1), &opts),
                Err(TransitError::UnknownVersion { version: 3, .. })
            ));
        }
    }

    #[test]
    fn signature_from_another_key_is_false() {
        for t in ASYMMETRIC {
            let opts = SignatureOptions::default();
            let ours = KeyRing::new(t, T0).unwrap();
            let theirs = KeyRing::new(t, T0).unwrap();
            let sig = theirs.sign(b"doc", &opts, None).unwrap();
            assert_eq!(ours.verify(b"doc", &sig, &opts), Ok(false), "{t}");
        }
    }

    #[test]
    fn tampered_or_garbage_signature_is_false_not_error() {
        for t in ASYMMETRIC {
            let ring = KeyRing::new(t, T0).unwrap();
            let opts = SignatureOptions::default();
            let sig = ring.sign(b"doc", &opts, None).unwrap();
            let (v, mut raw) = wire::parse_ciphertext(&sig).unwrap();
            let last = raw.len() - 1;
            raw[last] ^= 1;
            let bad = format!("vault:v{v}:{}", STANDARD.encode(&raw));
            assert_eq!(ring.verify(b"doc", &bad, &opts), Ok(false), "{t}");
            assert_eq!(
                ring.verify(b"doc", "vault:v1:AAAA", &opts),
                Ok(false),
                "{t}"
            );
            assert_eq!(ring.verify(b"doc", "vault:v1:", &opts), Ok(false), "{t}");
        }
    }

    #[test]
    fn malformed_signatures_are_errors() {
        let ring = KeyRing::new(KeyType::Ed25519, T0).unwrap();
        let opts = SignatureOptions::default();
        for bad in [
            "",
            "vault:v0:AAAA",
            "vault:v01:AAAA",
            "vault:v-1:AAAA",
            "vaultv1:AAAA",
            "vault:v1:@@",
        ] {
            assert!(
                matches!(
                    ring.verify(b"x", bad, &opts),
                    Err(TransitError::MalformedSignature { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sign_version_rules() {
        let mut ring = KeyRing::new(KeyType::Ed25519, T0).unwrap();
        ring.rotate(T0 + 1).unwrap();
        let opts = SignatureOptions::default();
        let v1 = ring.sign(b"x", &opts, Some(1)).unwrap();
        assert!(v1.starts_with("vault:v1:"));
        assert!(matches!(
            ring.sign(b"x", &opts, Some(3)),
            Err(TransitError::UnknownVersion {
                version: 3,
                latest: 2
            })
        ));
        ring.set_config(None, Some(2), None).unwrap();
        assert!(matches!(
            ring.sign(b"x", &opts, Some(1)),
            Err(TransitError::EncryptionVersionTooOld {
                version: 1,
                minimum: 2
            })
        ));
    }

    #[test]
    fn ecdsa_prehashed_sha256() {
        let ring = KeyRing::new(KeyType::EcdsaP256, T0).unwrap();
        let prehashed = SignatureOptions {
            prehashed: true,
            ..Default::default()
        };
        let message = b"large artifact";
        let digest = digest::digest(&digest::SHA256, message);
        let sig = ring.sign(digest.as_ref(), &prehashed, None).unwrap();
        assert_eq!(ring.verify(digest.as_ref(), &sig, &prehashed), Ok(true));
        // Signing the digest equals signing the message with hashing on.
        assert_eq!(
            ring.verify(message, &sig, &SignatureOptions::default()),
            Ok(true)
        );
        let plain = ring
            .sign(message, &SignatureOptions::default(), None)
            .unwrap();
        assert_eq!(ring.verify(digest.as_ref(), &plain, &prehashed), Ok(true));
        let err = ring.sign(b"short", &prehashed, None).unwrap_err();
        assert_eq!(
            err,
            TransitError::DigestLength {
                hash: "sha2-256",
                expected: 32,
                actual: 5
            }
        );
        let jws_pre = SignatureOptions {
            marshaling: Marshaling::Jws,
            ..prehashed
        };
        let sig = ring.sign(digest.as_ref(), &jws_pre, None).unwrap();
        assert_eq!(ring.verify(message, &sig, &jws()), Ok(true));
    }

    #[test]
    fn refused_combinations_say_why() {
        let ecdsa = KeyRing::new(KeyType::EcdsaP256, T0).unwrap();
        for hash in [HashAlgorithm::Sha2_384, HashAlgorithm::Sha2_512] {
            let opts = SignatureOptions {
                hash_algorithm: hash,
                ..Default::default()
            };
            let err = ecdsa.sign(b"x", &opts, None).unwrap_err();
            assert_eq!(
                err,
                TransitError::UnsupportedHashAlgorithm {
                    key_type: KeyType::EcdsaP256,
                    hash: hash.as_str()
                }
            );
            assert!(err.to_string().contains("use sha2-256"), "{err}");
            let sig = ecdsa
                .sign(b"x", &SignatureOptions::default(), None)
                .unwrap();
            assert!(ecdsa.verify(b"x", &sig, &opts).is_err());
        }

        let ed = KeyRing::new(KeyType::Ed25519, T0).unwrap();
        let prehashed = SignatureOptions {
            prehashed: true,
            ..Default::default()
        };
        assert_eq!(
            ed.sign(&[0; 64], &prehashed, None),
            Err(TransitError::PrehashedNotSupported {
                key_type: KeyType::Ed25519
            })
        );
        let sig = ed.sign(b"x", &SignatureOptions::default(), None).unwrap();
        assert!(ed.verify(b"x", &sig, &prehashed).is_err());
        // Vault ignores hash_algorithm for ed25519: the message is signed as is.
        let sha512 = SignatureOptions {
            hash_algorithm: HashAlgorithm::Sha2_512,
            ..Default::default()
        };
        assert_eq!(
            ed.verify(
                b"x",
                &ed.sign(b"x", &sha512, None).unwrap(),
                &SignatureOptions::default()
            ),
            Ok(true)
        );

        let aes = KeyRing::new(KeyType::Aes256Gcm96, T0).unwrap();
        let refused = TransitError::UnsupportedOperation {
            key_type: KeyType::Aes256Gcm96,
            operation: Operation::Signing,
        };
        assert_eq!(
            aes.sign(b"x", &SignatureOptions::default(), None),
            Err(refused.clone())
        );
        assert_eq!(
            aes.verify(b"x", "vault:v1:AAAA", &SignatureOptions::default()),
            Err(refused)
        );
    }

    /// The ASN.1 signature is a standard ECDSA P-256/SHA-256 signature
    /// under the public key the read-key endpoint publishes: checked with
    /// aws-lc-rs directly from the PEM, not through the ring's own key.
    #[test]
    fn ecdsa_signature_verifies_independently_with_published_key() {
        let ring = KeyRing::new(KeyType::EcdsaP256, T0).unwrap();
        let sig = ring
            .sign(b"independent", &SignatureOptions::default(), None)
            .unwrap();
        let der_sig = STANDARD
            .decode(sig.strip_prefix("vault:v1:").unwrap())
            .unwrap();

        let keys = ring.public_keys().unwrap();
        let KeyVersionInfo::Asymmetric {
            public_key: pem, ..
        } = &keys[&1]
        else {
            panic!("{keys:?}")
        };
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let spki = STANDARD.decode(body).unwrap();
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &spki);
        assert!(public.verify(b"independent", &der_sig).is_ok());
        assert!(public.verify(b"dependent", &der_sig).is_err());
    }

    #[test]
    fn ed25519_signature_verifies_independently_with_published_key() {
        let ring = KeyRing::new(KeyType::Ed25519, T0).unwrap();
        let sig = ring
            .sign(b"independent", &SignatureOptions::default(), None)
            .unwrap();
        let raw_sig = STANDARD
            .decode(sig.strip_prefix("vault:v1:").unwrap())
            .unwrap();
        let keys = ring.public_keys().unwrap();
        let KeyVersionInfo::Asymmetric { public_key, .. } = &keys[&1] else {
            panic!("{keys:?}")
        };
        let public = STANDARD.decode(public_key).unwrap();
        assert!(
            UnparsedPublicKey::new(&ED25519, &public)
                .verify(b"independent", &raw_sig)
                .is_ok()
        );
    }

    #[test]
    fn storage_round_trip_keeps_signing_keys() {
        for t in ASYMMETRIC {
            let mut ring = KeyRing::new(t, T0).unwrap();
            ring.rotate(T0 + 1).unwrap();
            let opts = SignatureOptions::default();
            let v1 = ring.sign(b"doc", &opts, Some(1)).unwrap();
            let json = serde_json::to_string(&ring).unwrap();
            let loaded: KeyRing = serde_json::from_str(&json).unwrap();
            assert_eq!(loaded.verify(b"doc", &v1, &opts), Ok(true));
            let v2 = loaded.sign(b"doc", &jws(), None).unwrap();
            assert_eq!(ring.verify(b"doc", &v2, &jws()), Ok(true));
            assert_eq!(loaded.public_keys().unwrap(), ring.public_keys().unwrap());

            let debug = format!("{loaded:?}");
            let stored: serde_json::Value = serde_json::from_str(&json).unwrap();
            let material = stored["versions"]["1"]["material"].as_str().unwrap();
            assert!(!debug.contains(&material[material.len() - 16..]), "{debug}");
        }
    }

    #[test]
    fn corrupt_asymmetric_material_is_an_error_not_a_panic() {
        let ring = KeyRing::new(KeyType::EcdsaP256, T0).unwrap();
        let mut json = serde_json::to_value(&ring).unwrap();
        json["versions"]["1"]["material"] = STANDARD.encode([7u8; 40]).into();
        let loaded: KeyRing = serde_json::from_value(json).unwrap();
        assert!(matches!(
            loaded.sign(b"x", &SignatureOptions::default(), None),
            Err(TransitError::CorruptKeyRing { .. })
        ));
        assert!(loaded.describe("k").is_err());
    }
}
