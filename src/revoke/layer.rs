//! The revocation step: after verification (so a token served from the verified-token cache is checked too)
//! and before policy, a verified identity that matches a revocation in force is refused with 401
//! "token revoked" (reason `revoked`); on a report-mode route it becomes a would-deny.

use std::sync::Arc;

use super::Revocations;
use crate::auth::{AuthError, Reason};
use crate::context::{AuthDecision, RequestContext};
use crate::error::Rejection;
use crate::layer::{Inner, Step};

/// See the module docs.
#[derive(Clone)]
pub struct RevocationLayer {
    revocations: Arc<Revocations>,
}

impl RevocationLayer {
    /// Checks against this set.
    pub fn new(revocations: Arc<Revocations>) -> Self {
        RevocationLayer { revocations }
    }
}

impl<S> tower::Layer<S> for RevocationLayer {
    type Service = RevocationCheck<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RevocationCheck { inner, revocations: self.revocations.clone() }
    }
}

/// See [`RevocationLayer`].
#[derive(Clone)]
pub struct RevocationCheck<S> {
    inner: S,
    revocations: Arc<Revocations>,
}

impl<S, B> tower::Service<http::Request<B>> for RevocationCheck<S>
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
        if !self.revocations.is_empty()
            && let (Some(route), Some(identity), _) = context.route_identity()
            && let Some(revocation) = self.revocations.matching(&identity)
        {
            tracing::info!(
                revocation = %revocation.id,
                issuer = %identity.issuer,
                subject = %identity.subject,
                token_sha256 = %identity.token_sha256,
                "token refused: its identity matches a revocation"
            );
            context.set_decision(AuthDecision { issuer: identity.issuer.clone(), allowed: false, reason: "revoked" });
            let rejection = Rejection::Unauthorized(AuthError::invalid(Reason::Revoked, "token revoked"));
            if let Err(rejection) = context.refuse(&route, rejection) {
                return Step::refuse(rejection);
            }
        }
        Step::next(self.inner.call(req))
    }
}
