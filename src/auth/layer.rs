//! The authentication step: turns the lifted credential into an [`Identity`] in the request's context, or
//! refuses with 401/503 (the rescue answers). On a report-mode route a failure is recorded as a would-deny
//! and the request goes on without identity (`RequestContext::refuse`). With `[tracing]` the verification is the
//! request's `verify` span, and a key fetch or STS call it waits for runs under it (its own child span).

use std::sync::Arc;

use http::Request;

use super::{AuthError, Authenticator, Reason, Refusal, bearer_token};
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt as _;

use crate::config::RouteMode;
use crate::context::{AuthDecision, RequestContext};
use crate::error::Rejection;
use crate::headers::Credential;
use crate::layer::{BoxStepFuture, Inner};
use crate::otel::attr;

/// See the module docs.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// With these issuers.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, auth: self.auth.clone() }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> tower::Service<Request<B>> for Authenticate<S>
where
    S: Inner<B>,
    B: Send + 'static,
{
    type Response = crate::Response;
    type Error = Rejection;
    type Future = BoxStepFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let context = RequestContext::of(&req);
        let route = context.route_identity().0;
        // The clone that was polled ready is the one called (tower's guide on cloning inner services).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let auth = self.auth.clone();
        Box::pin(async move {
            let Some(route) = route.filter(|r| !r.anonymous) else {
                return inner.call(req).await;
            };
            let span = context.trace().and_then(|t| t.step("verify"));
            let credential = req.extensions().get::<Credential>().cloned();
            let result = match credential.as_ref() {
                None | Some(Credential::None) => Err(AuthError::Missing.into()),
                Some(Credential::Ambiguous) => {
                    Err(AuthError::invalid(Reason::Malformed, "more than one Authorization header").into())
                }
                Some(Credential::Present(value)) => match bearer_token(Some(value)) {
                    Ok(Some(token)) => {
                        let digest = super::TokenDigest::of(token);
                        let fingerprint = digest.fingerprint();
                        if let Some(span) = &span {
                            span.set(KeyValue::new(attr::RUNWAY_TOKEN_SHA256, fingerprint.clone()));
                        }
                        context.set_token_sha256(fingerprint);
                        match &span {
                            // A fetch this verification waits for opens its span under this one.
                            Some(span) => auth.authenticate(token, &digest).with_context(span.context()).await,
                            None => auth.authenticate(token, &digest).await,
                        }
                    }
                    Ok(None) => Err(AuthError::Missing.into()),
                    Err(e) => Err(e.into()),
                },
            };
            if let Some(span) = span {
                traced(&span, &result, route.mode);
                span.end();
            }
            match result {
                Ok(identity) => {
                    context.set_identity(identity);
                    inner.call(req).await
                }
                Err(Refusal { issuer, error }) => {
                    let reason = error.reason();
                    let issuer = issuer.unwrap_or_else(|| "-".to_string());
                    context.set_decision(AuthDecision { issuer, allowed: false, reason });
                    context.refuse(&route, Rejection::from(error))?;
                    inner.call(req).await
                }
            }
        })
    }
}

/// What the `verify` span records: the issuer, the step's decision and reason; an issuer that could not be asked
/// (keys never loaded, STS unreachable) marks it failed.
fn traced(span: &crate::otel::StepSpan, result: &Result<Arc<super::Identity>, Refusal>, mode: RouteMode) {
    let (issuer, decision, reason) = match result {
        Ok(identity) => (Some(identity.issuer.as_str()), "allow", "none"),
        Err(Refusal { issuer, error }) => {
            let decision = if mode == RouteMode::Report { "would_deny" } else { "deny" };
            if matches!(error, AuthError::KeysUnavailable { .. } | AuthError::StsUnavailable { .. }) {
                span.fail(error.reason());
            }
            (issuer.as_deref(), decision, error.reason())
        }
    };
    if let Some(issuer) = issuer {
        span.set_all(|| [KeyValue::new(attr::RUNWAY_ISSUER, issuer.to_string())]);
    }
    span.decision(decision, reason);
}

impl From<AuthError> for Rejection {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::KeysUnavailable { .. } => Rejection::Unavailable(e.to_string()),
            AuthError::StsUnavailable { .. } => Rejection::StsUnavailable(e),
            other => Rejection::Unauthorized(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::context::testing::{ReadyOnce, request};
    use tower::Service;

    #[tokio::test]
    async fn the_inner_service_called_is_the_one_polled_ready() {
        let fetcher = crate::auth::fetch::Fetcher::new(crate::tls::public_client_config().expect("tls roots"));
        let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
        let auth = Arc::new(Authenticator::new(&[], &fetcher, metrics, 0, None).expect("no issuers"));
        let mut service = AuthLayer::new(auth).layer(ReadyOnce::default());
        for _ in 0..3 {
            let (req, context) = request();
            context.set_route(crate::context::testing::anonymous_route());
            let ready = service.ready().await;
            let future = ready.map(|s| s.call(req)).map_err(|e| e.to_string());
            let result = match future {
                Ok(future) => future.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            assert!(result.is_ok(), "the step called a clone that was never polled ready: {result:?}");
        }
    }
}
