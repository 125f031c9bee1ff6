//! The one error type of the transit engine. Each variant names what was
//! refused and on which input, and its message says what the caller can do
//! about it; the server maps variants to HTTP statuses. No message ever
//! contains plaintext, key material or a decrypted value.

use crate::key_type::{KeyType, Operation};

/// Why a transit operation was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitError {
    /// The requested key type is not one this engine implements.
    #[error("unknown key type `{given}`; use one of aes256-gcm96, ecdsa-p256, ed25519")]
    UnknownKeyType {
        /// The name as given by the caller.
        given: String,
    },

    /// The key's type cannot do the requested operation (e.g. encrypting
    /// with an ed25519 key).
    #[error(
        "this key is of type {key_type}, which does not support {operation}; {hint}",
        hint = operation.hint()
    )]
    UnsupportedOperation {
        /// The type of the key the caller named.
        key_type: KeyType,
        /// What the caller tried to do.
        operation: Operation,
    },

    /// A `hash_algorithm` name this engine does not know.
    #[error("unknown hash_algorithm `{given}`; use one of sha2-256, sha2-384, sha2-512")]
    UnknownHashAlgorithm {
        /// The name as given by the caller.
        given: String,
    },

    /// A known hash algorithm that this key type cannot sign with here.
    #[error(
        "hash_algorithm {hash} is not available for {key_type} keys; use sha2-256 \
         (aws-lc-rs signs P-256 only with SHA-256)"
    )]
    UnsupportedHashAlgorithm {
        /// The type of the key the caller named.
        key_type: KeyType,
        /// The Vault name of the refused hash algorithm.
        hash: &'static str,
    },

    /// A `marshaling_algorithm` name this engine does not know.
    #[error("unknown marshaling_algorithm `{given}`; use asn1 or jws")]
    UnknownMarshalingAlgorithm {
        /// The name as given by the caller.
        given: String,
    },

    /// `prehashed` was set for a key type that signs the message itself.
    #[error(
        "prehashed input is not supported for {key_type} keys, which hash the message \
         themselves; send the message and set prehashed=false"
    )]
    PrehashedNotSupported {
        /// The type of the key the caller named.
        key_type: KeyType,
    },

    /// A prehashed input whose length is not that of the named hash.
    #[error(
        "prehashed input is {actual} bytes but a {hash} digest is {expected} bytes; send \
         the digest itself, base64-encoded"
    )]
    DigestLength {
        /// The Vault name of the hash algorithm.
        hash: &'static str,
        /// The digest length that hash produces.
        expected: usize,
        /// The length of the input received.
        actual: usize,
    },

    /// A ciphertext that is not `vault:v<version>:<base64>`.
    #[error(
        "ciphertext is malformed: {reason}; expected `vault:v<version>:<base64>` exactly as \
         returned by encrypt"
    )]
    MalformedCiphertext {
        /// Which part of the format is wrong.
        reason: &'static str,
    },

    /// A signature that is not `vault:v<version>:<base64>`.
    #[error(
        "signature is malformed: {reason}; expected `vault:v<version>:<base64>` exactly as \
         returned by sign, with the same marshaling_algorithm"
    )]
    MalformedSignature {
        /// Which part of the format is wrong.
        reason: &'static str,
    },

    /// A request input field that is not standard base64.
    #[error("field `{field}` is not valid base64; encode it with standard base64 and padding")]
    InvalidBase64 {
        /// The request field that failed to decode.
        field: &'static str,
    },

    /// A key version newer than the ring's latest.
    #[error("key version {version} does not exist; the latest version is {latest}")]
    UnknownVersion {
        /// The version asked for or named in the input.
        version: u32,
        /// The ring's latest version.
        latest: u32,
    },

    /// Ciphertext or a signature from a version below `min_decryption_version`.
    #[error(
        "key version {version} is below min_decryption_version {min_decryption_version} and \
         may no longer decrypt or verify; rewrap data before raising the minimum, or lower it"
    )]
    VersionTooOld {
        /// The version named in the ciphertext or signature.
        version: u32,
        /// The ring's current minimum.
        min_decryption_version: u32,
    },

    /// An explicit `key_version` below what may still encrypt or sign.
    #[error(
        "key version {version} may no longer encrypt or sign; the oldest allowed is {minimum} \
         (min_encryption_version / min_decryption_version); omit key_version to use the latest"
    )]
    EncryptionVersionTooOld {
        /// The version asked for.
        version: u32,
        /// The oldest version still allowed for new output.
        minimum: u32,
    },

    /// AES-GCM authentication failed: the ciphertext was altered, belongs to
    /// another key or version, or the associated data differs.
    #[error(
        "ciphertext failed authentication: it was altered, was made by another key or key \
         version, or the associated_data differs from encryption"
    )]
    Integrity,

    /// `datakey` was asked for a size other than 128, 256 or 512 bits.
    #[error("bits must be 128, 256 or 512, got {bits}")]
    DataKeyBits {
        /// The size requested.
        bits: u32,
    },

    /// A key-ring setting was refused (config or trim).
    #[error("cannot set {field}: {reason}")]
    InvalidConfig {
        /// The setting that was refused, by its Vault name.
        field: &'static str,
        /// Why, and what value would be accepted.
        reason: String,
    },

    /// The ring has reached `u32::MAX` versions and cannot rotate again.
    #[error("the key has reached the maximum number of versions; create a new key")]
    TooManyVersions,

    /// The key ring refuses deletion until `deletion_allowed` is set.
    #[error("deletion is not allowed for this key; set deletion_allowed=true in its config first")]
    DeletionNotAllowed,

    /// Stored key-ring JSON that breaks the ring's invariants or holds key
    /// material that does not parse.
    #[error("the stored key ring is corrupt: {reason}; restore it from a backup")]
    CorruptKeyRing {
        /// Which invariant failed (never the material itself).
        reason: String,
    },

    /// aws-lc-rs failed an operation that cannot fail on valid input
    /// (random generation, key generation). Not the caller's fault.
    #[error("the crypto library failed to {operation}; retry, and report it if it persists")]
    Crypto {
        /// What was being done.
        operation: &'static str,
    },
}
