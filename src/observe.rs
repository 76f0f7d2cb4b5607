//! Observation of every request: a tracing span (request id, method), the request metrics, the auth decision
//! metric and the audit event. This layer makes the request's [`RequestContext`], which the steps below fill
//! in; once the response exists it reads that record, and the reason of a refusal ([`Refused`]) on the
//! response, whichever step answered (the whole-request timeout included).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::Request;
use serde_json::Map;
use tracing::Instrument;

use crate::audit::{AuditLog, Event, rfc3339};
use crate::context::{Record, RequestContext};
use crate::layer::{Answers, Refused};
use crate::metrics::Metrics;
use crate::request_id::RequestId;

/// Observes requests on one connection.
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    audit: Option<AuditLog>,
    audit_claims: Arc<[String]>,
    peer: SocketAddr,
}

impl ObserveLayer {
    /// For one connection from `peer`.
    pub fn new(metrics: Arc<Metrics>, audit: Option<AuditLog>, audit_claims: Arc<[String]>, peer: SocketAddr) -> Self {
        ObserveLayer { metrics, audit, audit_claims, peer }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner, layer: self.clone() }
    }
}

/// See [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S, B> tower::Service<Request<B>> for Observe<S>
where
    S: Answers<B>,
    B: Send + 'static,
{
    type Response = crate::Response;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::Response, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let arrived = SystemTime::now();
        let id = req.extensions().get::<RequestId>().cloned();
        let request_id = id.as_ref().map_or_else(|| "-".to_string(), |r| r.as_str().to_string());
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let context = RequestContext::new(id);
        req.extensions_mut().insert(context.clone());
        // Route, decision and status are known only once the response exists, when no log line remains to
        // carry them: they go to the audit event and metrics, and the span holds what logs inside it need.
        let span = tracing::info_span!("request", request_id = %request_id, method = %method);
        let fut = self.inner.call(req).instrument(span);
        let layer = self.layer.clone();
        Box::pin(async move {
            let response = fut.await?;
            let elapsed = started.elapsed();
            let record = context.take();
            let refused = response.extensions().get::<Refused>().map(|r| r.0);
            let status = response.status();
            let route = record.route.as_ref().map_or("-", |r| r.name.as_str());
            let m = &layer.metrics;
            m.requests.with_label_values(&[route, status.as_str()]).inc();
            m.request_duration.with_label_values(&[route]).observe(elapsed.as_secs_f64());
            if let Some(waited) = record.upstream_wait {
                m.proxy_overhead.observe(elapsed.saturating_sub(waited).as_secs_f64());
            }
            if let Some(a) = &record.decision {
                let decision = if a.allowed { "allow" } else { "deny" };
                m.auth_decisions.with_label_values(&[a.issuer.as_str(), decision, a.reason]).inc();
            }
            if let Some(audit) = &layer.audit {
                let event =
                    event(&record, refused, &layer, request_id, method, path, status.as_u16(), arrived, elapsed);
                audit.record(event).await;
            }
            Ok(response)
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn event(
    record: &Record,
    refused: Option<&'static str>,
    layer: &ObserveLayer,
    request_id: String,
    method: String,
    path: String,
    status: u16,
    arrived: SystemTime,
    elapsed: std::time::Duration,
) -> Event {
    let identity = record.identity.as_deref();
    let claims = identity.map(|i| {
        let mut subset = Map::new();
        for name in layer.audit_claims.iter() {
            if let Some(v) = i.claims.get(name) {
                subset.insert(name.clone(), v.clone());
            }
        }
        subset
    });
    let decision = record.decision_label();
    Event {
        ts: rfc3339(arrived),
        request_id,
        decision,
        status,
        reason: match decision {
            "allow" => None,
            "would_deny" => record.would_deny.as_ref().map(|w| w.reason),
            _ => refused.or(record.decision.as_ref().map(|a| a.reason)),
        },
        route: record.route.as_ref().map(|r| r.name.clone()),
        issuer: identity
            .map(|i| i.issuer.clone())
            .or_else(|| record.decision.as_ref().map(|a| a.issuer.clone()))
            .filter(|i| i != "-"),
        subject: identity.map(|i| i.subject.clone()),
        claims,
        token_sha256: record.token_sha256.as_deref().map(str::to_string),
        method,
        path,
        client_ip: Some(layer.peer.ip().to_string()),
        duration_ms: (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
    }
}
