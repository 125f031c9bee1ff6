//! The raw ECDSA P-256 signing rate of this machine: the ceiling that SVID
//! issuance through the API is compared with. Signs 300-byte messages (the
//! size of an SVID's to-be-signed part) on N threads for S seconds.
//!
//! Usage: raw-sign [THREADS] [SECONDS] [sign|verify-sign]; prints
//! `ops_per_second N`. `verify-sign` does what each issuance must do at the
//! least: verify the CSR's signature (proof of possession), then sign.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let verify_too = args.next().as_deref() == Some("verify-sign");
    let rng = SystemRandom::new();
    let pkcs8 = match EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng) {
        Ok(k) => k,
        Err(_) => {
            eprintln!("key generation failed");
            std::process::exit(1);
        }
    };
    let count = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let Ok(key) =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
                else {
                    return;
                };
                let rng = SystemRandom::new();
                let msg = [0x5au8; 300];
                let peer = UnparsedPublicKey::new(
                    &ECDSA_P256_SHA256_ASN1,
                    key.public_key().as_ref().to_vec(),
                );
                let Ok(csr_sig) = key.sign(&rng, &msg) else {
                    return;
                };
                let mut local = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        if verify_too && peer.verify(&msg, csr_sig.as_ref()).is_err() {
                            continue;
                        }
                        if key.sign(&rng, &msg).is_ok() {
                            local += 1;
                        }
                    }
                }
                count.fetch_add(local, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("ops_per_second {rate:.0}");
}
