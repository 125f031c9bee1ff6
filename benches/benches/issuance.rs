//! The issuance path without the network: parse and validate a CSR, sign
//! an X.509-SVID, mint a JWT-SVID; and the raw ECDSA P-256 signature they
//! are built on, for the ratio.

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use criterion::{Criterion, criterion_group, criterion_main};
use time::OffsetDateTime;
use ward_identity::ca::generate_root;
use ward_identity::csr::generate_key_and_csr;
use ward_identity::{CertificateAuthority, JwtKey, SpiffeId, TrustDomain, validate_csr};

fn issuance(c: &mut Criterion) {
    let td = TrustDomain::parse("bench.test").unwrap();
    let now = OffsetDateTime::now_utc();
    let m = generate_root(&td, "bench", Duration::from_secs(86400), now).unwrap();
    let ca = CertificateAuthority::load(&m.cert_pem, &m.key_pkcs8, &m.chain_pem).unwrap();
    let id = SpiffeId::parse("spiffe://bench.test/ns/default/sa/web").unwrap();
    let (_, csr_pem) = generate_key_and_csr(&id).unwrap();

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    let msg = [0x5au8; 300];
    c.bench_function("ecdsa_p256_sign_raw", |b| {
        b.iter(|| key.sign(&rng, black_box(&msg)).unwrap())
    });

    c.bench_function("csr_validate", |b| {
        b.iter(|| validate_csr(black_box(csr_pem.as_bytes()), &td).unwrap())
    });

    let validated = validate_csr(csr_pem.as_bytes(), &td).unwrap();
    c.bench_function("x509_svid_sign", |b| {
        b.iter(|| {
            ca.sign_x509_svid(black_box(&validated), Duration::from_secs(3600), now)
                .unwrap()
        })
    });

    c.bench_function("csr_validate_and_sign", |b| {
        b.iter(|| {
            let v = validate_csr(black_box(csr_pem.as_bytes()), &td).unwrap();
            ca.sign_x509_svid(&v, Duration::from_secs(3600), now)
                .unwrap()
        })
    });

    let (kid, der) = JwtKey::generate().unwrap();
    let jwt = JwtKey::load(&kid, &der).unwrap();
    let aud = vec!["orders".to_string()];
    c.bench_function("jwt_svid_mint", |b| {
        b.iter(|| {
            jwt.mint(&id, black_box(&aud), Duration::from_secs(300), now)
                .unwrap()
        })
    });

    c.bench_function("spiffe_id_parse", |b| {
        b.iter(|| SpiffeId::parse(black_box("spiffe://bench.test/ns/default/sa/web")).unwrap())
    });
}

criterion_group!(benches, issuance);
criterion_main!(benches);
