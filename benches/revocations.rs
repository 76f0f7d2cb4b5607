//! What the revocation check costs per request: the request path's `Revocations::matching` on a verified
//! identity with no revocation, with 1,000 revocations indexed by an exact claim (`pipeline_id`, as incident
//! response writes them), and with 1,000 made only of globs (the worst case: each is checked in turn).

#![allow(clippy::expect_used, reason = "a bench with a broken setup should stop at once, loudly")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use runway::auth::Identity;
use runway::config::IssuerKind;
use runway::config::raw::RawPatterns;
use runway::revoke::Revocation;
use runway::revoke::set::{ActiveSet, Compiled};
use serde_json::json;

fn identity() -> Identity {
    Identity {
        issuer: "gitlab".into(),
        kind: IssuerKind::Gitlab,
        subject: "project_path:platform/api:ref_type:branch:ref:main".into(),
        claims: json!({
            "iss": "https://gitlab.example.com", "sub": "project_path:platform/api:ref_type:branch:ref:main",
            "project_path": "platform/api", "job_id": "123", "pipeline_id": "987654", "runner_id": 77,
            "ref": "main", "ref_protected": "true", "environment": "production", "user_login": "alice",
            "iat": 1_700_000_000, "exp": 1_700_000_300, "jti": "b1c2d3"
        }),
        headers: vec![],
        token_sha256: "0123456789abcdef".into(),
    }
}

fn revocation(i: usize, claims: &[(&str, String)]) -> Arc<Compiled> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
    let claims: BTreeMap<String, RawPatterns> =
        claims.iter().map(|(k, v)| (k.to_string(), RawPatterns::One(v.clone()))).collect();
    Compiled::new(Revocation {
        id: format!("r{i}"),
        issuer: "gitlab".into(),
        claims,
        reason: None,
        revoked_by: None,
        created_ms: now,
        expires_ms: now + 3_600_000,
    })
    .expect("compiles")
}

fn bench(c: &mut Criterion) {
    let identity = identity();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
    let none = ActiveSet::default();
    let indexed: Vec<Arc<Compiled>> =
        (0..1000).map(|i| revocation(i, &[("pipeline_id", format!("{}", 100_000 + i))])).collect();
    let indexed = ActiveSet::new(&indexed);
    let globs: Vec<Arc<Compiled>> =
        (0..1000).map(|i| revocation(i, &[("project_path", format!("team-{i}/*"))])).collect();
    let globs = ActiveSet::new(&globs);
    assert!(indexed.matching(&identity, now).is_none() && globs.matching(&identity, now).is_none());

    let mut group = c.benchmark_group("revocation_check");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("none", |b| {
        b.iter(|| std::hint::black_box(none.is_empty() || none.matching(&identity, now).is_some()))
    });
    group.bench_function("1000_indexed", |b| {
        b.iter(|| std::hint::black_box(indexed.matching(&identity, now).is_some()))
    });
    group.bench_function("1000_globs", |b| b.iter(|| std::hint::black_box(globs.matching(&identity, now).is_some())));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
