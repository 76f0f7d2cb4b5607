//! The policy step: the route's allow rules on the verified identity (403, or a report-mode would-deny). With
//! `[tracing]` each evaluation is the request's `policy` span.

use crate::config::RouteMode;
use crate::context::{AuthDecision, RequestContext};
use crate::error::Rejection;
use crate::layer::{Inner, Step};

/// Applies the route's allow rules to the verified identity: 403 on deny, or on a report-mode route a
/// would-deny (the identity stays for the audit log; no identity header reaches Kong).
#[derive(Clone, Default)]
pub struct PolicyLayer;

impl<S> tower::Layer<S> for PolicyLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authorize { inner }
    }
}

/// See [`PolicyLayer`].
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Authorize<S>
where
    S: Inner<B>,
{
    type Response = crate::Response;
    type Error = Rejection;
    type Future = Step<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let context = RequestContext::of(&req);
        let verdict = match context.route_identity() {
            (Some(route), Some(identity), _) => {
                let span = context.trace().and_then(|t| t.step("policy"));
                let issuer = identity.issuer.clone();
                let result = route.policy.evaluate(&identity);
                let (allowed, reason) = if result.is_ok() { (true, "none") } else { (false, "policy") };
                if let Some(span) = span {
                    let decision = match (allowed, route.mode) {
                        (true, _) => "allow",
                        (false, RouteMode::Report) => "would_deny",
                        (false, RouteMode::Enforce) => "deny",
                    };
                    span.decision(decision, reason);
                    span.end();
                }
                context.set_decision(AuthDecision { issuer, allowed, reason });
                result.map_err(|detail| (route, detail))
            }
            _ => Ok(()),
        };
        if let Err((route, detail)) = verdict {
            let rejection = Rejection::Forbidden { route: route.name.clone(), detail };
            if let Err(rejection) = context.refuse(&route, rejection) {
                return Step::refuse(rejection);
            }
        }
        Step::next(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::config::RouteMode;
    use crate::context::testing::{identity, last_step, request, route};

    #[tokio::test]
    async fn allows_refuses_and_reports() {
        for (mode, environment, outcome) in [
            (RouteMode::Enforce, "production", "allow"),
            (RouteMode::Enforce, "staging", "403"),
            (RouteMode::Report, "staging", "would_deny"),
        ] {
            let (last, calls) = last_step();
            let (req, context) = request();
            context.set_route(route(mode));
            context.set_identity(identity(json!({"environment": environment})));
            let result = PolicyLayer.layer(last).oneshot(req).await;
            let record = context.snapshot();
            match outcome {
                "allow" => {
                    assert!(result.is_ok());
                    assert!(record.decision.as_ref().is_some_and(|d| d.allowed && d.reason == "none"));
                    assert_eq!(calls.load(Ordering::SeqCst), 1);
                }
                "403" => {
                    let rejection = result.err().map(|r| (r.status().as_u16(), r.to_string()));
                    assert!(rejection.as_ref().is_some_and(|(s, d)| *s == 403 && d.contains("environment")));
                    assert!(record.decision.as_ref().is_some_and(|d| !d.allowed && d.reason == "policy"));
                    assert_eq!(calls.load(Ordering::SeqCst), 0, "a refusal calls nothing further");
                }
                _ => {
                    assert!(result.is_ok(), "report mode goes on");
                    assert_eq!(record.would_deny.as_ref().map(|w| w.reason), Some("policy"));
                    assert_eq!(calls.load(Ordering::SeqCst), 1);
                }
            }
        }
    }

    #[tokio::test]
    async fn without_identity_it_passes_on() {
        // Anonymous routes and report-mode requests whose token failed reach policy with no identity.
        let (last, calls) = last_step();
        let (req, context) = request();
        context.set_route(route(RouteMode::Enforce));
        assert!(PolicyLayer.layer(last).oneshot(req).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(context.snapshot().decision.is_none());
    }
}
