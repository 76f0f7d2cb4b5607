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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::config::RouteMode;
    use crate::context::testing::{last_step, request, route};

    #[tokio::test]
    async fn the_rescue_answers_every_refusal_with_what_was_decided() {
        let (req, context) = request();
        context.set_route(route(RouteMode::Enforce));
        let refusing =
            tower::service_fn(|_req: Request<()>| std::future::ready(Err::<crate::Response, _>(Rejection::NotFound)));
        let Ok(response) = RescueLayer.layer(refusing).oneshot(req).await;
        assert_eq!(response.status(), 404);
        assert_eq!(response.extensions().get::<Refused>().map(|r| r.0), Some("no_route"));
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }

    #[tokio::test]
    async fn a_step_that_refuses_does_not_call_on() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let last = tower::service_fn(move |_req: Request<crate::limit::CappedBody<()>>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok::<crate::Response, Rejection>(http::Response::new(http_body_util::Either::Right(
                http_body_util::Full::new(bytes::Bytes::new()),
            ))))
        });
        let limit = crate::limit::BodyLimitLayer::new(Some(10), Duration::from_secs(1)).layer(last);
        let (mut req, _) = request();
        req.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("11"));
        let rejection = limit.clone().oneshot(req).await.err();
        assert_eq!(rejection.map(|r| r.status().as_u16()), Some(413));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        let (mut req, _) = request();
        req.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("10"));
        assert!(limit.oneshot(req).await.is_ok());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_request_timeout_refuses_with_504() {
        let (req, _) = request();
        let slow = tower::service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<crate::Response, Rejection>(http::Response::new(http_body_util::Either::Right(
                http_body_util::Full::new(bytes::Bytes::new()),
            )))
        });
        let result = crate::limit::RequestTimeoutLayer::new(Duration::from_millis(20)).layer(slow).oneshot(req).await;
        assert_eq!(result.err().map(|r| r.status().as_u16()), Some(504));
    }

    #[tokio::test]
    async fn shedding_refuses_above_the_bound_and_frees_the_slot_after_the_answer() {
        let capacity = crate::overload::Capacity::new(1);
        let (last, _) = last_step();
        let shed = crate::overload::ShedLayer::new(capacity.clone()).layer(last);
        let held = capacity.try_acquire();
        let (req, _) = request();
        assert_eq!(shed.clone().oneshot(req).await.err().map(|r| r.status().as_u16()), Some(503));
        drop(held);
        let (req, _) = request();
        assert!(shed.clone().oneshot(req).await.is_ok());
        assert!(capacity.try_acquire().is_some(), "the slot is free once the response head exists");
    }
}
