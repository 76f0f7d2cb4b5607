//! What observing a request costs: the observe layer (span, request metrics, auth decision metric, audit
//! event built, serialised and queued to the writer thread) around a service that answers at once, against
//! the same service bare. The difference is the per-request cost of metrics + audit.

#![allow(clippy::expect_used, reason = "a bench with a broken setup should stop at once, loudly")]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use runway::audit::AuditLog;
use runway::auth::Identity;
use runway::config::{IssuerConfig, IssuerKind, KeySource, RouteConfig, RouteMode};
use runway::context::{AuthDecision, RequestContext};
use runway::metrics::Metrics;
use runway::observe::ObserveLayer;
use runway::routing::RouteTable;
use serde_json::json;
use tower::{Layer, ServiceExt};

/// What the steps below observe record for an allowed, forwarded request.
fn decided() -> (Option<Arc<runway::routing::Route>>, Option<Arc<Identity>>) {
    let routes = RouteTable::new(&[RouteConfig {
        name: "deploy-production".into(),
        host: None,
        path_prefix: "/deploy".into(),
        methods: None,
        anonymous: false,
        mode: RouteMode::Enforce,
        one_time: false,
        allow: vec![],
    }]);
    let route = routes.find(None, "/deploy/app", &Method::POST).ok();
    let issuer = IssuerConfig {
        name: "gitlab".into(),
        kind: IssuerKind::Gitlab,
        issuer: "https://gitlab.example.com".into(),
        audiences: vec!["https://deploy.example.com".into()],
        keys: KeySource::Discovery,
        algorithms: vec![jsonwebtoken::Algorithm::RS256],
        max_token_lifetime: std::time::Duration::from_secs(7200),
        leeway: std::time::Duration::from_secs(60),
        refresh_interval: std::time::Duration::from_secs(900),
        kid_refetch_interval: std::time::Duration::from_secs(10),
        headers: vec![],
        aws: None,
    };
    let claims = json!({
        "iss": "https://gitlab.example.com", "sub": "project_path:platform/api:ref_type:branch:ref:main",
        "aud": "https://deploy.example.com", "project_path": "platform/api", "job_id": "123456789",
        "pipeline_id": "987654", "ref": "main", "ref_protected": "true", "environment": "production",
        "user_login": "alice", "iat": 1_700_000_000, "exp": 1_700_000_300
    });
    let identity = Identity::from_claims(&issuer, claims, "0123456789abcdef").ok().map(Arc::new);
    (route, identity)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let (route, identity) = decided();
    let inner = tower::service_fn(move |req: Request<()>| {
        let context = RequestContext::of(&req);
        if let Some(route) = &route {
            context.set_route(route.clone());
        }
        if let Some(identity) = &identity {
            context.set_identity(identity.clone());
        }
        context.set_token_sha256("0123456789abcdef".into());
        context.set_decision(AuthDecision { issuer: "gitlab".into(), allowed: true, reason: "none" });
        context.set_forwarded(true);
        let response = Response::new(Either::Right(Full::new(Bytes::new())));
        std::future::ready(Ok::<runway::Response, Infallible>(response))
    });
    let request = || Request::post("/deploy/app?x=1").body(()).expect("request");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let dir = tempfile::tempdir().expect("tempdir");
    let audit =
        rt.block_on(async { AuditLog::start(Some(&dir.path().join("audit.jsonl")), metrics.clone()) }).expect("audit");
    let claims: Arc<[String]> = ["project_path", "job_id", "pipeline_id", "ref", "environment", "user_login"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let peer = "127.0.0.1:40000".parse().expect("addr");
    let metrics_only = ObserveLayer::new(metrics.clone(), None, claims.clone(), peer).layer(inner.clone());
    let with_audit = ObserveLayer::new(metrics.clone(), Some(audit.clone()), claims, peer).layer(inner.clone());

    let mut group = c.benchmark_group("observe");
    group.bench_function("bare service", |b| b.to_async(&rt).iter(|| inner.clone().oneshot(request())));
    group.bench_function("metrics", |b| b.to_async(&rt).iter(|| metrics_only.clone().oneshot(request())));
    group.bench_function("metrics + audit", |b| b.to_async(&rt).iter(|| with_audit.clone().oneshot(request())));
    group.finish();
    rt.block_on(audit.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
