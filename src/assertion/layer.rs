//! The assertion layer: the configured header never reaches Kong from the client; on an allowed request
//! with an identity it carries Runway's assertion instead. Anonymous routes and report-mode would-denies
//! get none (Kong's `jwt` plugin then refuses them, as it should for anything Runway does not vouch for). With
//! `[tracing]` each assertion handed out (minted or reused) is the request's `assertion` span.

use std::sync::Arc;

use http::Request;

use super::{AssertionError, Assertions};
use crate::context::RequestContext;
use crate::error::Rejection;
use crate::layer::{Inner, Step};

/// See the module docs. Without `[assertion]` it passes every request on untouched.
#[derive(Clone)]
pub struct AssertionLayer {
    assertions: Option<Arc<Assertions>>,
}

impl AssertionLayer {
    /// With this key, if `[assertion]` is configured.
    pub fn new(assertions: Option<Arc<Assertions>>) -> Self {
        AssertionLayer { assertions }
    }
}

impl<S> tower::Layer<S> for AssertionLayer {
    type Service = Assert<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Assert { inner, assertions: self.assertions.clone() }
    }
}

/// See [`AssertionLayer`].
#[derive(Clone)]
pub struct Assert<S> {
    inner: S,
    assertions: Option<Arc<Assertions>>,
}

impl<S, B> tower::Service<Request<B>> for Assert<S>
where
    S: Inner<B>,
{
    type Response = crate::Response;
    type Error = Rejection;
    type Future = Step<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(assertions) = &self.assertions {
            // Whatever the client put there (Authorization is already gone; a custom header is not).
            req.headers_mut().remove(assertions.header());
            let context = RequestContext::of(&req);
            let vouched = match context.route_identity() {
                (Some(route), Some(identity), false) if !route.anonymous => {
                    let span = context.trace().and_then(|t| t.step("assertion"));
                    let value = assertions.header_value(&identity, &route.name);
                    if let Some(span) = span {
                        if value.is_err() {
                            span.fail("assertion_failed");
                        }
                        span.end();
                    }
                    Some(value)
                }
                _ => None,
            };
            match vouched {
                Some(Ok(value)) => {
                    req.headers_mut().insert(assertions.header().clone(), value);
                }
                Some(Err(e)) => return Step::refuse(Rejection::from(e)),
                None => {}
            }
        }
        Step::next(self.inner.call(req))
    }
}

impl From<AssertionError> for Rejection {
    fn from(e: AssertionError) -> Self {
        Rejection::AssertionFailed(e)
    }
}
