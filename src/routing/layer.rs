//! The routing step: picks the route (404/405/400 before the token is looked at) and records it in the
//! request's context.

use std::sync::Arc;

use super::{RouteError, RouteTable};
use crate::context::RequestContext;
use crate::error::Rejection;
use crate::layer::{Inner, Step};

impl From<RouteError> for Rejection {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::BadPath(why) => Rejection::BadRequest(why.to_string()),
            RouteError::NotFound => Rejection::NotFound,
            RouteError::MethodNotAllowed { route, allow } => {
                Rejection::MethodNotAllowed { route: route.name.clone(), allow }
            }
        }
    }
}

/// Picks the route (404/405/400 before the token is looked at) and puts it in the request extensions.
#[derive(Clone)]
pub struct RouteLayer {
    table: Arc<RouteTable>,
}

impl RouteLayer {
    /// Over this table.
    pub fn new(table: Arc<RouteTable>) -> Self {
        RouteLayer { table }
    }
}

impl<S> tower::Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteService { inner, table: self.table.clone() }
    }
}

/// See [`RouteLayer`].
#[derive(Clone)]
pub struct RouteService<S> {
    inner: S,
    table: Arc<RouteTable>,
}

impl<S, B> tower::Service<http::Request<B>> for RouteService<S>
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
        let host = req
            .uri()
            .host()
            .map(str::to_string)
            .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string));
        match self.table.find(host.as_deref(), req.uri().path(), req.method()) {
            Ok(route) => {
                RequestContext::of(&req).set_route(route);
                Step::next(self.inner.call(req))
            }
            Err(e) => {
                // A 405 still belongs to its route, in metrics and in the audit log.
                if let RouteError::MethodNotAllowed { route, .. } = &e {
                    RequestContext::of(&req).set_route(route.clone());
                }
                Step::refuse(e.into())
            }
        }
    }
}
