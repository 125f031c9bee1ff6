//! The HTTP/2 `:authority` shim in front of the Workload API reads bytes
//! from any local process. Whatever arrives, in whatever chunks: no panic,
//! no byte invented or lost (output length equals input length), and the
//! result does not depend on how the input was split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_agent::authority_fix::AuthorityFixer;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend_from_slice(rest);

    let mut whole = AuthorityFixer::default();
    let mut a = Vec::new();
    whole.feed(&input, &mut a);
    whole.finish(&mut a);
    assert_eq!(a.len(), input.len());

    let cut = (split as usize * input.len()) / 256;
    let mut parts = AuthorityFixer::default();
    let mut b = Vec::new();
    parts.feed(&input[..cut], &mut b);
    parts.feed(&input[cut..], &mut b);
    parts.finish(&mut b);
    assert_eq!(a, b);
});
