//! Plumbing shared by the middleware layers: the bound every inner service meets, the boxed response
//! future, and [`reject`], the one way a layer answers a request itself.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use http::Request;
use http::request::Parts;
use http::uri::Authority;

use crate::context::RequestContext;
use crate::error::Rejection;
use crate::request_id::RequestId;

/// The future every layer returns.
pub type BoxResponseFuture = Pin<Box<dyn Future<Output = Result<crate::Response, Infallible>> + Send>>;

/// What a layer needs from the service it wraps.
pub trait Inner<B>:
    tower::Service<Request<B>, Response = crate::Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<T, B> Inner<B> for T where
    T: tower::Service<Request<B>, Response = crate::Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// Answers a request with a rejection, logging it once.
pub fn reject<B>(req: &Request<B>, rejection: Rejection) -> BoxResponseFuture {
    let response = rejection_response(&RequestContext::of(req), rejection);
    Box::pin(std::future::ready(Ok(response)))
}

/// The reason of the rejection Runway answered with, on its response (for `observe`).
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub &'static str);

/// Builds the response for a rejection, with the request's id; logs it once, with what had been decided.
pub fn rejection_response(context: &RequestContext, rejection: Rejection) -> crate::Response {
    let record = context.snapshot();
    let request_id = record.request_id.as_ref().map_or("-", RequestId::as_str);
    let route = record.route.as_ref().map_or("-", |r| r.name.as_str());
    let token_sha256 = record.token_sha256.as_deref().unwrap_or("-");
    let status = rejection.status().as_u16();
    let reason = rejection.reason();
    if status >= 500 {
        tracing::warn!(request_id, route, status, reason, token_sha256, detail = %rejection, "request failed");
    } else {
        tracing::info!(request_id, route, status, reason, token_sha256, detail = %rejection, "request refused");
    }
    let reason_label = rejection.reason();
    let mut response = rejection.into_response(request_id);
    response.extensions_mut().insert(Refused(reason_label));
    response
}

/// The request's host: the URI authority (HTTP/2, absolute-form) or else the `Host` header.
pub fn request_host(parts: &Parts) -> Option<Authority> {
    if let Some(a) = parts.uri.authority() {
        return Some(a.clone());
    }
    let host = parts.headers.get(http::header::HOST)?.to_str().ok()?;
    host.parse::<Authority>().ok().filter(|a| a.as_str() == host)
}
