//! The policy step: the route's allow rules on the verified identity (403, or a report-mode would-deny).

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
                let issuer = identity.issuer.clone();
                let result = route.policy.evaluate(&identity);
                let (allowed, reason) = if result.is_ok() { (true, "none") } else { (false, "policy") };
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
