//! The authentication layer: turns the lifted credential into an [`Identity`] in the request extensions,
//! or answers 401/503 itself. On a report-mode route a failure is recorded as a would-deny and the request
//! goes on without identity.

use std::sync::Arc;

use http::Request;

use super::{AuthError, Authenticator, Reason, Refusal, bearer_token};
use crate::config::RouteMode;
use crate::error::Rejection;
use crate::headers::Credential;
use crate::layer::{BoxResponseFuture, Inner, rejection_response};
use crate::observe::AuthDecision;
use crate::routing::Route;

/// A report-mode route's deny decision: the request is forwarded without identity.
#[derive(Debug, Clone)]
pub struct WouldDeny {
    /// Closed-vocabulary reason.
    pub reason: &'static str,
    /// Explanation.
    pub detail: String,
}

/// `token_sha256` of the presented token, for logs and audit (the token itself is never logged).
#[derive(Debug, Clone)]
pub struct TokenFingerprint(pub String);

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
    type Error = std::convert::Infallible;
    type Future = BoxResponseFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let route = req.extensions().get::<Arc<Route>>().cloned();
        let mut inner = self.inner.clone();
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
                        req.extensions_mut().insert(TokenFingerprint(digest.fingerprint()));
                        auth.authenticate(token, &digest).await
                    }
                    Ok(None) => Err(AuthError::Missing.into()),
                    Err(e) => Err(e.into()),
                },
            };
            match result {
                Ok(identity) => {
                    req.extensions_mut().insert(identity);
                    inner.call(req).await
                }
                Err(Refusal { issuer, error }) => {
                    let reason = error.reason();
                    let issuer = issuer.unwrap_or_else(|| "-".to_string());
                    req.extensions_mut().insert(AuthDecision { issuer, allowed: false, reason });
                    if route.mode == RouteMode::Report {
                        req.extensions_mut().insert(WouldDeny { reason, detail: error.to_string() });
                        inner.call(req).await
                    } else {
                        Ok(rejection_response(req.extensions(), Rejection::from(error)))
                    }
                }
            }
        })
    }
}
