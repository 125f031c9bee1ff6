//! The transit engine's per-request crypto: AES-256-GCM encrypt and
//! decrypt of a 64-byte value, and one ECDSA P-256 and one Ed25519
//! signature. Each ring is warmed first, so its parsed keys are cached as
//! they are for a ring the server keeps loaded; a freshly loaded ring pays
//! one key parse per version on first use on top of these figures.

use criterion::{Criterion, criterion_group};
use ward_transit::{KeyRing, KeyType, SignatureOptions};

const NOW: u64 = 1_700_000_000;

fn transit(c: &mut Criterion) {
    let aes = KeyRing::new(KeyType::Aes256Gcm96, NOW).unwrap();
    let ecdsa = KeyRing::new(KeyType::EcdsaP256, NOW).unwrap();
    let ed25519 = KeyRing::new(KeyType::Ed25519, NOW).unwrap();
    let plaintext = [0x5a_u8; 64];
    let ciphertext = aes.encrypt(&plaintext, None, None).unwrap();
    let opts = SignatureOptions::default();
    assert_eq!(
        aes.decrypt(&ciphertext, None).unwrap().as_slice(),
        plaintext
    );
    assert!(
        ecdsa
            .verify(b"m", &ecdsa.sign(b"m", &opts, None).unwrap(), &opts)
            .unwrap()
    );
    assert!(
        ed25519
            .verify(b"m", &ed25519.sign(b"m", &opts, None).unwrap(), &opts)
            .unwrap()
    );

    let mut g = c.benchmark_group("transit");
    g.bench_function("aes256_gcm96_encrypt_64b", |b| {
        b.iter(|| aes.encrypt(&plaintext, None, None).unwrap())
    });
    g.bench_function("aes256_gcm96_decrypt_64b", |b| {
        b.iter(|| aes.decrypt(&ciphertext, None).unwrap())
    });
    g.bench_function("ecdsa_p256_sign", |b| {
        b.iter(|| ecdsa.sign(&plaintext, &opts, None).unwrap())
    });
    g.bench_function("ed25519_sign", |b| {
        b.iter(|| ed25519.sign(&plaintext, &opts, None).unwrap())
    });
    g.finish();
}

criterion_group!(benches, transit);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
