//! Observation of every request: a log span (request id, method), the request metrics, the auth decision
//! metric and the audit event, and with `[tracing]` the request's server span. This layer makes the request's
//! [`RequestContext`] (with its trace), which the steps below fill in; once the response exists it reads that
//! record, and the reason of a refusal ([`Refused`]) on the response, whichever step answered (the
//! whole-request timeout included).
//!
//! `auth_decisions_total` counts a report-mode route's refusal as `would_deny` (contract section 6), as the
//! audit event does: a shadow rollout is visible as such and never looks like a spike of real denials.

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
use crate::otel::{Outcome, Tracing};
use crate::request_id::RequestId;

/// Observes requests on one connection.
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    audit: Option<AuditLog>,
    audit_claims: Arc<[String]>,
    peer: SocketAddr,
    tracing: Option<Arc<Tracing>>,
    trust_caller_trace: bool,
}

impl ObserveLayer {
    /// For one connection from `peer`.
    pub fn new(metrics: Arc<Metrics>, audit: Option<AuditLog>, audit_claims: Arc<[String]>, peer: SocketAddr) -> Self {
        ObserveLayer { metrics, audit, audit_claims, peer, tracing: None, trust_caller_trace: false }
    }

    /// With `[tracing]`: a server span per request, continuing the caller's trace when `trust_caller_trace`.
    pub fn traced(mut self, tracing: Option<Arc<Tracing>>, trust_caller_trace: bool) -> Self {
        self.tracing = tracing;
        self.trust_caller_trace = trust_caller_trace;
        self
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
        let http_method = req.method().clone();
        let method = http_method.to_string();
        let path = req.uri().path().to_string();
        let layer = &self.layer;
        let trace = layer.tracing.as_ref().map(|t| t.request(&req, layer.peer, layer.trust_caller_trace, &request_id));
        let trace_id = trace.as_ref().and_then(|t| t.trace_id_hex());
        let context = RequestContext::traced(id, trace);
        req.extensions_mut().insert(context.clone());
        // Route, decision and status are known only once the response exists, when no log line remains to
        // carry them: they go to the audit event and metrics, and the span holds what logs inside it need.
        // With [tracing], log lines carry the trace id too. Given at creation: recording it later would make the
        // JSON formatter parse and re-serialise the span's fields.
        let span = match &trace_id {
            Some(trace_id) => {
                tracing::info_span!("request", request_id = %request_id, method = %method, trace_id = %trace_id)
            }
            None => tracing::info_span!("request", request_id = %request_id, method = %method),
        };
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
                let decision = match (a.allowed, record.would_deny.is_some()) {
                    (true, _) => "allow",
                    (false, true) => "would_deny",
                    (false, false) => "deny",
                };
                m.auth_decisions.with_label_values(&[a.issuer.as_str(), decision, a.reason]).inc();
            }
            if let Some(would_deny) = &record.would_deny {
                m.would_deny.with_label_values(&[route, would_deny.reason]).inc();
            }
            let decision = record.decision_label();
            let reason = reason(&record, refused, decision);
            if let Some(trace) = context.trace() {
                trace.finish(Outcome {
                    method: &http_method,
                    route: record.route.as_ref().map(|r| r.name.as_str()),
                    status,
                    decision,
                    reason,
                    issuer: issuer(&record).filter(|i| *i != "-"),
                    token_sha256: record.token_sha256.as_deref(),
                });
            }
            if let Some(audit) = &layer.audit {
                let request = RequestFacts { request_id, method, path, trace_id };
                let event = event(&record, decision, reason, &layer, request, status.as_u16(), arrived, elapsed);
                audit.record(event).await;
            }
            Ok(response)
        })
    }
}

/// What the audit event says about the request itself.
struct RequestFacts {
    request_id: String,
    method: String,
    path: String,
    trace_id: Option<String>,
}

/// The reason recorded for the outcome: none on allow, the report-mode refusal's on a would-deny, else the
/// refusal Runway answered with (or the decision that led to it).
fn reason(record: &Record, refused: Option<&'static str>, decision: &str) -> Option<&'static str> {
    match decision {
        "allow" => None,
        "would_deny" => record.would_deny.as_ref().map(|w| w.reason),
        _ => refused.or(record.decision.as_ref().map(|a| a.reason)),
    }
}

/// The issuer involved: the verified identity's, else the one the refused token named (`-` when none).
fn issuer(record: &Record) -> Option<&str> {
    record
        .identity
        .as_deref()
        .map(|i| i.issuer.as_str())
        .or_else(|| record.decision.as_ref().map(|a| a.issuer.as_str()))
}

#[allow(clippy::too_many_arguments)]
fn event(
    record: &Record,
    decision: &'static str,
    reason: Option<&'static str>,
    layer: &ObserveLayer,
    request: RequestFacts,
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
    Event {
        ts: rfc3339(arrived),
        request_id: request.request_id,
        decision,
        status,
        reason,
        route: record.route.as_ref().map(|r| r.name.clone()),
        issuer: issuer(record).filter(|i| *i != "-").map(str::to_string),
        subject: identity.map(|i| i.subject.clone()),
        claims,
        token_sha256: record.token_sha256.as_deref().map(str::to_string),
        method: request.method,
        path: request.path,
        client_ip: Some(layer.peer.ip().to_string()),
        duration_ms: (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
        trace_id: request.trace_id,
    }
}
