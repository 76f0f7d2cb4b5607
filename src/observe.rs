//! Observation of every request: a tracing span (request id, method), the request metrics, the auth decision metric and the
//! audit event. Inner layers describe what happened in an [`Outcome`] attached to the response (a refusal
//! in `layer::rejection_response`, a forwarded request in `forward`), so this layer reads one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Extensions, Request};
use serde_json::Map;
use tracing::Instrument;

use crate::audit::{AuditLog, Event, rfc3339};
use crate::auth::Identity;
use crate::auth::layer::{TokenFingerprint, WouldDeny};
use crate::layer::{BoxResponseFuture, Inner};
use crate::metrics::Metrics;
use crate::request_id::RequestId;
use crate::routing::Route;

/// An authentication or policy decision, for `auth_decisions_total`.
#[derive(Debug, Clone)]
pub struct AuthDecision {
    /// Issuer name, or `-` when the token named no configured issuer.
    pub issuer: String,
    /// Allowed by authentication and policy.
    pub allowed: bool,
    /// Closed-vocabulary reason (`none` when allowed).
    pub reason: &'static str,
}

/// What happened to a request, attached to its response by the layer that answered it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The route, once routing succeeded.
    pub route: Option<Arc<Route>>,
    /// The verified identity, when the request was allowed with one.
    pub identity: Option<Arc<Identity>>,
    /// Fingerprint of the presented token.
    pub token_sha256: Option<String>,
    /// The auth decision, when authentication ran.
    pub auth: Option<AuthDecision>,
    /// A report-mode route's deny.
    pub would_deny: Option<&'static str>,
    /// The refusal reason, when Runway answered itself.
    pub reason: Option<&'static str>,
    /// The request passed every check and was handed to the forwarder.
    pub forwarded: bool,
}

impl Outcome {
    /// Collects what the layers recorded in the request extensions.
    pub fn from_request(extensions: &Extensions, forwarded: bool, reason: Option<&'static str>) -> Outcome {
        Outcome {
            route: extensions.get::<Arc<Route>>().cloned(),
            identity: extensions.get::<Arc<Identity>>().cloned(),
            token_sha256: extensions.get::<TokenFingerprint>().map(|f| f.0.clone()),
            auth: extensions.get::<AuthDecision>().cloned(),
            would_deny: extensions.get::<WouldDeny>().map(|w| w.reason),
            reason,
            forwarded,
        }
    }

    fn decision(&self) -> &'static str {
        match (self.would_deny, self.forwarded) {
            (Some(_), _) => "would_deny",
            (None, true) => "allow",
            (None, false) => "deny",
        }
    }
}

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
    S: Inner<B>,
    B: Send + 'static,
{
    type Response = crate::Response;
    type Error = std::convert::Infallible;
    type Future = BoxResponseFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let arrived = SystemTime::now();
        let request_id =
            req.extensions().get::<RequestId>().map_or_else(|| "-".to_string(), |r| r.as_str().to_string());
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        // Route, decision and status are known only once the response exists, when no log line remains to
        // carry them: they go to the audit event and metrics, and the span holds what logs inside it need.
        let span = tracing::info_span!("request", request_id = %request_id, method = %method);
        let fut = self.inner.call(req).instrument(span);
        let layer = self.layer.clone();
        Box::pin(async move {
            let mut response = fut.await?;
            let elapsed = started.elapsed();
            let outcome = response.extensions_mut().remove::<Outcome>().unwrap_or_default();
            let status = response.status();
            let route = outcome.route.as_ref().map_or("-", |r| r.name.as_str());
            let m = &layer.metrics;
            m.requests.with_label_values(&[route, status.as_str()]).inc();
            m.request_duration.with_label_values(&[route]).observe(elapsed.as_secs_f64());
            if let Some(a) = &outcome.auth {
                let decision = if a.allowed { "allow" } else { "deny" };
                m.auth_decisions.with_label_values(&[a.issuer.as_str(), decision, a.reason]).inc();
            }
            if let Some(audit) = &layer.audit {
                let event = event(&outcome, &layer, request_id, method, path, status.as_u16(), arrived, elapsed);
                audit.record(&event).await;
            }
            Ok(response)
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn event(
    outcome: &Outcome,
    layer: &ObserveLayer,
    request_id: String,
    method: String,
    path: String,
    status: u16,
    arrived: SystemTime,
    elapsed: std::time::Duration,
) -> Event {
    let identity = outcome.identity.as_deref();
    let claims = identity.map(|i| {
        let mut subset = Map::new();
        for name in layer.audit_claims.iter() {
            if let Some(v) = i.claims.get(name) {
                subset.insert(name.clone(), v.clone());
            }
        }
        subset
    });
    let decision = outcome.decision();
    Event {
        ts: rfc3339(arrived),
        request_id,
        decision,
        status,
        reason: match decision {
            "allow" => None,
            "would_deny" => outcome.would_deny,
            _ => outcome.reason.or(outcome.auth.as_ref().map(|a| a.reason)),
        },
        route: outcome.route.as_ref().map(|r| r.name.clone()),
        issuer: identity
            .map(|i| i.issuer.clone())
            .or_else(|| outcome.auth.as_ref().map(|a| a.issuer.clone()))
            .filter(|i| i != "-"),
        subject: identity.map(|i| i.subject.clone()),
        claims,
        token_sha256: outcome.token_sha256.clone(),
        method,
        path,
        client_ip: Some(layer.peer.ip().to_string()),
        duration_ms: (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
    }
}
