//! What `[tracing]` costs a request on its own path: the observe layer (which makes the server span and ends it)
//! around steps that make the spans an allowed, forwarded request makes (`verify`, `policy`, and the `upstream`
//! span whose `traceparent` goes to Kong), at `sample_ratio` 0, 0.01 and 1, against the same without `[tracing]`
//! (where each step only finds no trace). Recorded spans are exported for real, over OTLP/HTTP to a loopback
//! receiver in this process that discards them: the SDK's batch thread does that work beside the request path,
//! so its CPU shows in the load harness (`benches/RESULTS.md`), not here.

#![allow(clippy::expect_used, reason = "a bench with a broken setup should stop at once, loudly")]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Either, Full};
use runway::config::{ExportHeaders, TracingConfig};
use runway::context::{AuthDecision, RequestContext};
use runway::metrics::Metrics;
use runway::observe::ObserveLayer;
use runway::otel::Tracing;
use tower::{Layer, ServiceExt};

/// An OTLP/HTTP receiver that reads each export and answers 200 (the collector is not what is measured).
async fn discarding_receiver() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    addr
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let receiver = rt.block_on(discarding_receiver());
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    // The steps of an allowed request, as far as tracing goes: each looks for the trace, and with one makes its
    // span (recorded traces only) and, for the upstream call, the traceparent header.
    let steps = tower::service_fn(|mut req: Request<()>| {
        let context = RequestContext::of(&req);
        if let Some(trace) = context.trace() {
            if let Some(verify) = trace.step("verify") {
                verify.decision("allow", "none");
                verify.end();
            }
            if let Some(policy) = trace.step("policy") {
                policy.decision("allow", "none");
                policy.end();
            }
            let upstream = trace.upstream(&Method::POST, "kong.internal", 8443);
            req.headers_mut().insert("traceparent", upstream.traceparent());
            upstream.answered(http::StatusCode::OK);
            upstream.end();
        }
        context.set_decision(AuthDecision { issuer: "gitlab".into(), allowed: true, reason: "none" });
        context.set_forwarded(true);
        std::future::ready(Ok::<runway::Response, Infallible>(Response::new(Either::Right(Full::new(Bytes::new())))))
    });
    let request = || Request::post("/deploy/app?x=1").header("host", "deploy.example.com").body(()).expect("request");
    let claims: Arc<[String]> = Arc::from(Vec::new());
    let peer = "127.0.0.1:40000".parse().expect("addr");
    let observe = |tracing: Option<Arc<Tracing>>| {
        ObserveLayer::new(metrics.clone(), None, claims.clone(), peer).traced(tracing, false).layer(steps)
    };
    let tracing = |ratio: f64| {
        let config = TracingConfig {
            traces_url: format!("http://{receiver}/v1/traces").parse().expect("url"),
            service_name: "runway-bench".into(),
            sample_ratio: ratio,
            trust_client_context: false,
            headers: ExportHeaders::default(),
        };
        Tracing::start(&config, metrics.clone(), rt.handle().clone()).expect("tracing")
    };

    let mut group = c.benchmark_group("tracing");
    let off = observe(None);
    group.bench_function("off", |b| b.to_async(&rt).iter(|| off.clone().oneshot(request())));
    for (name, ratio) in [("sample_ratio 0", 0.0), ("sample_ratio 0.01", 0.01), ("sample_ratio 1", 1.0)] {
        let traced = observe(Some(tracing(ratio)));
        group.bench_function(name, |b| b.to_async(&rt).iter(|| traced.clone().oneshot(request())));
    }
    group.finish();
    assert_eq!(metrics.trace_export_errors.get(), 0, "every batch reached the receiver");
}

criterion_group!(benches, bench);
criterion_main!(benches);
