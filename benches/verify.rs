//! The hot path's pieces: a token's first verification (RS256, ES256) next to a bare aws-lc-rs signature
//! check of the same token, a repeat verification served by the verified-token cache, and routing + policy
//! with 10 and with 10,000 routes.

#![allow(clippy::expect_used, reason = "a bench with a broken setup should stop at once, loudly")]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Method;
use jsonwebtoken::Algorithm;
use runway::auth::fetch::Fetcher;
use runway::auth::{Authenticator, TokenDigest};
use runway::config::{ClaimKey, IssuerConfig, IssuerKind, KeySource, RouteConfig, RouteMode, RuleConfig};
use runway::metrics::Metrics;
use runway::routing::RouteTable;
use serde_json::json;
use support::tokens::{SigningKey, jwks, now};

const ISS: &str = "https://gitlab.example.com";
const AUD: &str = "https://deploy.example.com";

fn issuer(jwks_file: &std::path::Path) -> IssuerConfig {
    IssuerConfig {
        name: "gitlab".into(),
        kind: IssuerKind::Gitlab,
        issuer: ISS.into(),
        audiences: vec![AUD.into()],
        keys: KeySource::File(jwks_file.to_path_buf()),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        max_token_lifetime: Duration::from_secs(7200),
        leeway: Duration::from_secs(60),
        refresh_interval: Duration::from_secs(900),
        kid_refetch_interval: Duration::from_secs(10),
        headers: vec![],
        aws: None,
    }
}

fn gitlab_claims(i: u64) -> serde_json::Value {
    let t = now();
    json!({
        "iss": ISS, "aud": AUD, "iat": t, "nbf": t, "exp": t + 3600, "jti": format!("jti-{i}"),
        "sub": format!("project_path:platform/api:ref_type:branch:ref:main:{i}"),
        "project_path": "platform/api", "namespace_path": "platform", "ref": "main", "ref_type": "branch",
        "ref_protected": "true", "environment": "production", "job_id": "4242", "pipeline_id": "1717",
        "user_login": "alice",
    })
}

fn verification(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, key, bare_alg) in [
        (
            "RS256",
            SigningKey::rsa("k1"),
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256
                as &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
        ),
        ("ES256", SigningKey::ec("k1"), &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED),
    ] {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, jwks(&[&key]).to_string()).expect("jwks file");
        let fetcher = Fetcher::new(runway::tls::public_client_config().expect("tls"));
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        // Cache off for the cold path: every call verifies.
        let cold = Authenticator::new(&[issuer(&file)], &fetcher, metrics.clone(), 0, None).expect("authenticator");
        let cached = Authenticator::new(&[issuer(&file)], &fetcher, metrics, 10_000, None).expect("authenticator");
        let token = key.mint(&gitlab_claims(0));
        let (input, sig) = token.rsplit_once('.').expect("jws");
        let sig = URL_SAFE_NO_PAD.decode(sig).expect("signature");
        let parsed = aws_lc_rs::signature::ParsedPublicKey::new(bare_alg, key.public_key_der()).expect("public key");
        assert!(parsed.verify_sig(input.as_bytes(), &sig).is_ok(), "bare check works");
        let digest = TokenDigest::of(&token);
        assert!(rt.block_on(cold.authenticate(&token, &digest)).is_ok(), "runway accepts the token");

        let mut group = c.benchmark_group(format!("verify/{name}"));
        group.bench_function("bare aws-lc-rs signature check", |b| {
            b.iter(|| parsed.verify_sig(input.as_bytes(), &sig).expect("valid"));
        });
        group.bench_function("runway first verification", |b| {
            b.iter(|| rt.block_on(cold.authenticate(&token, &TokenDigest::of(&token))).expect("valid"));
        });
        rt.block_on(cached.authenticate(&token, &digest)).expect("valid");
        group.bench_function("runway repeat (cached)", |b| {
            b.iter(|| rt.block_on(cached.authenticate(&token, &TokenDigest::of(&token))).expect("valid"));
        });
        group.finish();
    }
}

/// `n` routes (a third of them host-bound) and, for each, a request (host, path) that it serves.
fn routes(n: usize) -> (RouteTable, Vec<(String, String)>) {
    let mut configs = Vec::with_capacity(n);
    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let prefix = format!("/team-{}/service-{i}", i % 97);
        let host = (i % 3 == 0).then(|| format!("svc{}.example.com", i % 7));
        requests
            .push((host.clone().unwrap_or_else(|| "deploy.example.com".into()), format!("{prefix}/deploy/production")));
        configs.push(RouteConfig {
            name: format!("route-{i}"),
            host,
            path_prefix: prefix,
            methods: Some(vec![Method::POST, Method::PUT]),
            anonymous: false,
            mode: RouteMode::Enforce,
            one_time: false,
            allow: vec![RuleConfig {
                issuer: "gitlab".into(),
                claims: vec![
                    (ClaimKey::Name("project_path".into()), vec!["platform/api".into(), "platform/tools/*".into()]),
                    (ClaimKey::Name("ref_protected".into()), vec!["true".into()]),
                    (ClaimKey::Name("environment".into()), vec!["production".into()]),
                ],
            }],
        });
    }
    (RouteTable::new(&configs), requests)
}

fn routing_and_policy(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::rsa("k1");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&key]).to_string()).expect("jwks file");
    let identity =
        runway::auth::Identity::from_claims(&issuer(&file), gitlab_claims(1), "0123456789abcdef").expect("identity");
    let mut group = c.benchmark_group("route+policy");
    // The same ten routes are requested in every table, so the tables differ only in size: this is how the
    // lookup scales. The last case spreads requests over all 10,000 routes (cache footprint included).
    for (n, spread) in [(10usize, 10usize), (10_000, 10), (10_000, 10_000)] {
        let (table, requests) = routes(n);
        let step = n / spread;
        let hot: Vec<(String, String)> = (0..spread).map(|k| requests[k * step].clone()).collect();
        let mut i = 0usize;
        group.bench_function(format!("{n} routes, requests over {spread}"), |b| {
            b.iter_batched(
                || {
                    i = (i + 7919) % hot.len();
                    hot[i].clone()
                },
                |(host, path)| {
                    let route = table.find(Some(&host), &path, &Method::POST).expect("route");
                    route.policy.evaluate(&identity).expect("allowed");
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, verification, routing_and_policy);
criterion_main!(benches);
