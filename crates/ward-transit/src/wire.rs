//! Vault's text formats: the `vault:v<N>:<base64>` envelope shared by
//! ciphertexts and signatures, and the base64 request fields. Parsing is
//! strict (one spelling per value: no sign, no leading zeros, canonical
//! base64) so that two different strings never name the same ciphertext and
//! a malformed value is refused before any key is touched.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::error::TransitError;

const PREFIX: &str = "vault:v";

/// Which base64 alphabet the payload of an envelope uses. Vault encodes
/// ciphertexts and asn1 signatures with standard base64, and jws signatures
/// with unpadded base64url (RFC 7515 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alphabet {
    Standard,
    UrlNoPad,
}

/// Formats `vault:v{version}:{base64(payload)}`.
pub(crate) fn envelope(version: u32, payload: &[u8], alphabet: Alphabet) -> String {
    let mut out = format!("{PREFIX}{version}:");
    match alphabet {
        Alphabet::Standard => STANDARD.encode_string(payload, &mut out),
        Alphabet::UrlNoPad => URL_SAFE_NO_PAD.encode_string(payload, &mut out),
    }
    out
}

/// Splits an envelope into its version and decoded payload; `reason`s are
/// returned for the caller to wrap in the ciphertext or signature variant.
pub(crate) fn open_envelope(s: &str, alphabet: Alphabet) -> Result<(u32, Vec<u8>), &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    let rest = s
        .strip_prefix(PREFIX)
        .ok_or("it does not start with `vault:v`")?;
    let (digits, payload) = rest
        .split_once(':')
        .ok_or("there is no `:` after the version")?;
    let version = parse_version(digits)?;
    let bytes = match alphabet {
        Alphabet::Standard => STANDARD.decode(payload),
        Alphabet::UrlNoPad => URL_SAFE_NO_PAD.decode(payload),
    }
    .map_err(|_| "the part after the version is not valid base64")?;
    Ok((version, bytes))
}

/// A key version as written in an envelope: decimal, 1 or more, no sign and
/// no leading zero (`str::parse` alone would accept `+1` and `01`).
fn parse_version(digits: &str) -> Result<u32, &'static str> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the version is not a decimal number");
    }
    if digits.starts_with('0') {
        return Err("the version must be 1 or more, without leading zeros");
    }
    digits.parse().map_err(|_| "the version is too large")
}

/// Parses a Vault ciphertext (`vault:v<N>:<standard base64>`) into its key
/// version and raw bytes (nonce, ciphertext and tag for aes256-gcm96).
///
/// Servers use this to route or log a ciphertext's version without
/// decrypting; [`crate::KeyRing::decrypt`] applies the same parser.
pub fn parse_ciphertext(ciphertext: &str) -> Result<(u32, Vec<u8>), TransitError> {
    open_envelope(ciphertext, Alphabet::Standard)
        .map_err(|reason| TransitError::MalformedCiphertext { reason })
}

/// Decodes a standard-base64 request field (Vault's `plaintext`, `input`,
/// `associated_data`, …), naming the field on failure so the HTTP error
/// points at the bad input. The result is zeroized on drop because these
/// fields usually carry secrets.
pub fn decode_b64_input(
    field: &'static str,
    value: &str,
) -> Result<Zeroizing<Vec<u8>>, TransitError> {
    let mut out = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(
        value.len(),
    )));
    STANDARD
        .decode_vec(value, &mut out)
        .map_err(|_| TransitError::InvalidBase64 { field })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips() {
        let s = envelope(7, b"\x00\x01\xfe\xff", Alphabet::Standard);
        assert_eq!(s, "vault:v7:AAH+/w==");
        assert_eq!(parse_ciphertext(&s), Ok((7, vec![0, 1, 0xfe, 0xff])));
        let u = envelope(7, b"\x00\x01\xfe\xff", Alphabet::UrlNoPad);
        assert_eq!(u, "vault:v7:AAH-_w");
        assert_eq!(
            open_envelope(&u, Alphabet::UrlNoPad),
            Ok((7, vec![0, 1, 0xfe, 0xff]))
        );
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        let cases = [
            ("", "it is empty"),
            (
                "vault:v0:AAAA",
                "the version must be 1 or more, without leading zeros",
            ),
            (
                "vault:v01:AAAA",
                "the version must be 1 or more, without leading zeros",
            ),
            ("vault:v-1:AAAA", "the version is not a decimal number"),
            ("vault:v+1:AAAA", "the version is not a decimal number"),
            ("vault:v:AAAA", "the version is not a decimal number"),
            ("vault:v 1:AAAA", "the version is not a decimal number"),
            ("vault:v4294967296:AAAA", "the version is too large"),
            ("vaultv1:AAAA", "it does not start with `vault:v`"),
            ("Vault:v1:AAAA", "it does not start with `vault:v`"),
            (" vault:v1:AAAA", "it does not start with `vault:v`"),
            ("vault:v1", "there is no `:` after the version"),
            (
                "vault:v1:not base64!",
                "the part after the version is not valid base64",
            ),
            (
                "vault:v1:AAAA\n",
                "the part after the version is not valid base64",
            ),
            (
                "vault:v1:AAA",
                "the part after the version is not valid base64",
            ),
            // Non-canonical: trailing bits set, so two strings would decode alike.
            (
                "vault:v1:AAB=",
                "the part after the version is not valid base64",
            ),
            (
                "vault:v1:AAH-_w==",
                "the part after the version is not valid base64",
            ),
        ];
        for (input, reason) in cases {
            assert_eq!(
                parse_ciphertext(input),
                Err(TransitError::MalformedCiphertext { reason }),
                "{input:?}"
            );
        }
        // The largest u32 is still a version.
        assert_eq!(
            parse_ciphertext("vault:v4294967295:"),
            Ok((u32::MAX, vec![]))
        );
    }

    #[test]
    fn jws_alphabet_refuses_padding_and_standard_characters() {
        assert!(open_envelope("vault:v1:AAH-_w==", Alphabet::UrlNoPad).is_err());
        assert!(open_envelope("vault:v1:AAH+/w", Alphabet::UrlNoPad).is_err());
    }

    #[test]
    fn b64_input_names_the_field() {
        assert_eq!(
            decode_b64_input("plaintext", "aGk=").unwrap().as_slice(),
            b"hi"
        );
        let err = decode_b64_input("plaintext", "aGk").unwrap_err();
        assert_eq!(err, TransitError::InvalidBase64 { field: "plaintext" });
        assert!(
            err.to_string()
                .starts_with("field `plaintext` is not valid base64")
        );
    }
}
