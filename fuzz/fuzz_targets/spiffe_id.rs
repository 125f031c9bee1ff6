//! The SPIFFE ID parser never panics, and whatever it accepts prints back
//! to exactly the input and parses again to the same ID (no normalisation
//! that could make two different strings the same identity).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_identity::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = SpiffeId::parse(s) {
        assert_eq!(id.to_string(), s);
        assert_eq!(SpiffeId::parse(&id.to_string()).as_ref(), Ok(&id));
        assert!(!s.contains('%'));
        assert!(id.path().split('/').skip(1).all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
    }
    let _ = TrustDomain::parse(s);
});
