//! Ward's transit secrets engine: Vault's "encryption as a service" as a
//! pure library. A [`KeyRing`] is one named, versioned key; the server
//! stores it as JSON (sealed with its own master key) and calls
//! [`KeyRing::encrypt`], [`KeyRing::decrypt`], [`KeyRing::rewrap`],
//! [`KeyRing::datakey`], [`KeyRing::sign`] and [`KeyRing::verify`] from the
//! HTTP handlers that speak Vault's transit API, so Vault clients such as
//! hvac work unchanged. Key material never leaves the ring: it is not
//! exportable, is zeroized on drop, and appears in no `Debug` output or
//! error message.
//!
//! No I/O, no clock and no async here: the server passes the time in and
//! owns storage, locking and authorization.
//!
//! Key types: `aes256-gcm96` (encrypt/decrypt/rewrap/datakey), `ecdsa-p256`
//! and `ed25519` (sign/verify). Crypto is aws-lc-rs throughout.
//!
//! ```
//! use ward_transit::{KeyRing, KeyType};
//!
//! let mut ring = KeyRing::new(KeyType::Aes256Gcm96, 1_700_000_000)?;
//! let ciphertext = ring.encrypt(b"card 4111", None, None)?;
//! assert!(ciphertext.starts_with("vault:v1:"));
//! ring.rotate(1_700_000_100)?;
//! let rewrapped = ring.rewrap(&ciphertext, None, None)?;
//! assert!(rewrapped.starts_with("vault:v2:"));
//! assert_eq!(ring.decrypt(&rewrapped, None)?.as_slice(), b"card 4111");
//! # Ok::<(), ward_transit::TransitError>(())
//! ```

mod encryption;
mod error;
mod key_type;
mod rfc3339;
mod ring;
mod signing;
mod version;
mod wire;

pub use error::TransitError;
pub use key_type::{KeyType, Operation};
pub use ring::{KeyRing, KeyVersionInfo};
pub use signing::{HashAlgorithm, Marshaling, SignatureOptions};
pub use wire::{decode_b64_input, parse_ciphertext};
