//! What the identity assertion costs per request: minting a fresh ES256 JWT (claims, JSON, one P-256
//! signature) against handing out the one reused for the same identity and route (claim subset, cache key,
//! lookup). Runway mints only when the cached one has used up half its lifetime.

#![allow(clippy::expect_used, reason = "a bench with a broken setup should stop at once, loudly")]

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderName;
use runway::assertion::Assertions;
use runway::auth::Identity;
use runway::config::{AssertionConfig, IssuerKind};
use serde_json::json;

fn identity(job: u64) -> Identity {
    Identity {
        issuer: "gitlab".into(),
        kind: IssuerKind::Gitlab,
        subject: "project_path:platform/api:ref_type:branch:ref:main".into(),
        claims: json!({
            "iss": "https://gitlab.example.com", "sub": "project_path:platform/api:ref_type:branch:ref:main",
            "aud": "https://deploy.example.com", "project_path": "platform/api", "job_id": job.to_string(),
            "pipeline_id": "987654", "ref": "main", "ref_protected": "true", "environment": "production",
            "user_login": "alice", "iat": 1_700_000_000, "exp": 1_700_000_300, "jti": "b1c2d3"
        }),
        headers: vec![],
        token_sha256: "0123456789abcdef".into(),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).expect("key");
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let key = dir.path().join("assertion-key.pem");
    std::fs::write(&key, pem).expect("write key");
    let config = AssertionConfig {
        key,
        issuer: "runway".into(),
        audience: "kong".into(),
        ttl: Duration::from_secs(60),
        header: HeaderName::from_static("authorization"),
    };
    let claims: Vec<String> = ["project_path", "job_id", "pipeline_id", "ref", "environment", "user_login"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let assertions = Assertions::load(&config, &claims).expect("assertions");
    let same = identity(1);
    let mut job = 0u64;

    let mut group = c.benchmark_group("assertion");
    group.bench_function("mint (cold)", |b| b.iter(|| assertions.mint(&same, "deploy-production").expect("mint")));
    group.bench_function("new identity each time (mint + cache insert)", |b| {
        b.iter_batched(
            || {
                job += 1;
                identity(job)
            },
            |who| assertions.header_value(&who, "deploy-production").expect("mint"),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("reused", |b| b.iter(|| assertions.header_value(&same, "deploy-production").expect("reuse")));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
