//! The authentication step: turns the lifted credential into an [`Identity`] in the request's context, or
//! refuses with 401/503 (the rescue answers). On a report-mode route a failure is recorded as a would-deny
//! and the request goes on without identity (`RequestContext::refuse`).

use std::sync::Arc;

use http::Request;

use super::{AuthError, Authenticator, Reason, Refusal, bearer_token};
use crate::context::{AuthDecision, RequestContext};
use crate::error::Rejection;
use crate::headers::Credential;
use crate::layer::{BoxStepFuture, Inner};

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
            let credential = req.extensions().get::<Credential>().cloned();
            let result = match credential.as_ref() {
                None | Some(Credential::None) => Err(AuthError::Missing.into()),
                Some(Credential::Ambiguous) => {
                    Err(AuthError::invalid(Reason::Malformed, "more than one Authorization header").into())
                }
                Some(Credential::Present(value)) => match bearer_token(Some(value)) {
                    Ok(Some(token)) => {
                        let digest = super::TokenDigest::of(token);
                        context.set_token_sha256(digest.fingerprint());
                        auth.authenticate(token, &digest).await
                    }
                    Ok(None) => Err(AuthError::Missing.into()),
                    Err(e) => Err(e.into()),
                },
            };
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
