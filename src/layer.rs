//! Plumbing shared by the pipeline's steps: the bound every inner service meets, [`Step`] (the future of a
//! step that either refused at once or handed on), and [`RescueLayer`], the one place where a refusal
//! becomes a response. Every step returns `Result<Response, Rejection>`; only the rescue, at the top of the
//! pipeline, answers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use http::request::Parts;
use http::uri::Authority;

use crate::context::RequestContext;
use crate::error::Rejection;
use crate::request_id::RequestId;

/// The result of every step.
pub type StepResult = Result<crate::Response, Rejection>;

/// The future of a step that has asynchronous work of its own (verification, the upstream call).
pub type BoxStepFuture = Pin<Box<dyn Future<Output = StepResult> + Send>>;

/// What a step needs from the service it wraps.
pub trait Inner<B>:
    tower::Service<Request<B>, Response = crate::Response, Error = Rejection, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<T, B> Inner<B> for T where
    T: tower::Service<Request<B>, Response = crate::Response, Error = Rejection, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// What the layers above the rescue (request id, observation) need: a service that always answers.
pub trait Answers<B>:
    tower::Service<Request<B>, Response = crate::Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<T, B> Answers<B> for T where
    T: tower::Service<Request<B>, Response = crate::Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

pin_project_lite::pin_project! {
    /// A step's future without a box: the refusal it made at once, or the inner service's future.
    pub struct Step<F> {
        rejection: Option<Rejection>,
        #[pin]
        future: Option<F>,
    }
}

impl<F> Step<F> {
    /// A refusal.
    pub fn refuse(rejection: Rejection) -> Self {
        Step { rejection: Some(rejection), future: None }
    }

    /// The inner service's future.
    pub fn next(future: F) -> Self {
        Step { rejection: None, future: Some(future) }
    }
}

impl<F: Future<Output = StepResult>> Future for Step<F> {
    type Output = StepResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StepResult> {
        let this = self.project();
        if let Some(rejection) = this.rejection.take() {
            return Poll::Ready(Err(rejection));
        }
        match this.future.as_pin_mut() {
            Some(future) => future.poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Turns every refusal of the steps below into its response (see [`rejection_response`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct RescueLayer;

impl<S> tower::Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Rescue { inner }
    }
}

/// See [`RescueLayer`].
#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for Rescue<S>
where
    S: Inner<B>,
{
    type Response = crate::Response;
    type Error = Infallible;
    type Future = Rescued<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The steps below are always ready or wait; none fails readiness (a refusal is per request).
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let context = RequestContext::of(&req);
        Rescued { future: self.inner.call(req), context }
    }
}

pin_project_lite::pin_project! {
    /// See [`Rescue`].
    pub struct Rescued<F> {
        #[pin]
        future: F,
        context: RequestContext,
    }
}

impl<F: Future<Output = StepResult>> Future for Rescued<F> {
    type Output = Result<crate::Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.future.poll(cx) {
            Poll::Ready(Ok(response)) => Poll::Ready(Ok(response)),
            Poll::Ready(Err(rejection)) => Poll::Ready(Ok(rejection_response(this.context, rejection))),
            Poll::Pending => Poll::Pending,
        }
    }
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
