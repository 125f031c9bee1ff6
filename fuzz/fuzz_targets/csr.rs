//! CSR validation never panics on any input, PEM or DER; whatever it
//! accepts names a workload ID in the trust domain it was asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_identity::{TrustDomain, validate_csr};

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::parse("example.org").expect("valid trust domain");
    if let Ok(csr) = validate_csr(data, &td) {
        assert_eq!(csr.spiffe_id().trust_domain(), &td);
        assert!(csr.spiffe_id().is_workload());
    }
});
