//! Request limits: the whole-request timeout (504) and the body size cap (413, up front from
//! `Content-Length`, or mid-stream for chunked bodies).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::Request;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};

use crate::error::Rejection;
use crate::layer::{BoxResponseFuture, Inner, reject, rejection_response};

/// Bounds the time to the response head.
#[derive(Clone)]
pub struct RequestTimeoutLayer {
    timeout: Duration,
}

impl RequestTimeoutLayer {
    /// With this bound.
    pub fn new(timeout: Duration) -> Self {
        RequestTimeoutLayer { timeout }
    }
}

impl<S> tower::Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout { inner, timeout: self.timeout }
    }
}

/// See [`RequestTimeoutLayer`].
#[derive(Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> tower::Service<Request<B>> for RequestTimeout<S>
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Only the id is needed if time runs out: no copy of the whole extension map per request.
        let request_id = req.extensions().get::<crate::request_id::RequestId>().cloned();
        let fut = self.inner.call(req);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(result) => result,
                Err(_) => {
                    let mut extensions = http::Extensions::new();
                    if let Some(id) = request_id {
                        extensions.insert(id);
                    }
                    let why = format!("request did not complete within {}s", timeout.as_secs_f64());
                    Ok(rejection_response(&extensions, Rejection::GatewayTimeout(why)))
                }
            }
        })
    }
}

/// Caps request bodies at `max_body_bytes` (`None` = unlimited, still streamed).
#[derive(Clone)]
pub struct BodyLimitLayer {
    limit: Option<u64>,
}

impl BodyLimitLayer {
    /// With this cap.
    pub fn new(limit: Option<u64>) -> Self {
        BodyLimitLayer { limit }
    }
}

impl<S> tower::Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit { inner, limit: self.limit }
    }
}

/// See [`BodyLimitLayer`].
#[derive(Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limit: Option<u64>,
}

impl<S, B> tower::Service<Request<B>> for BodyLimit<S>
where
    S: Inner<CappedBody<B>>,
    B: Send + 'static,
{
    type Response = crate::Response;
    type Error = std::convert::Infallible;
    type Future = BoxResponseFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.limit.unwrap_or(u64::MAX);
        let declared =
            req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return reject(&req, Rejection::PayloadTooLarge { limit });
        }
        let exceeded = BodyCapExceeded::default();
        let mut req = req.map(|inner| CappedBody { inner, remaining: limit, exceeded: exceeded.clone() });
        req.extensions_mut().insert(exceeded);
        Box::pin(self.inner.call(req))
    }
}

/// Set when a request body went over the cap, so the forwarder answers 413 rather than 502 whatever way
/// the aborted upstream exchange surfaces.
#[derive(Debug, Clone, Default)]
pub struct BodyCapExceeded(Arc<AtomicBool>);

impl BodyCapExceeded {
    /// Whether the cap was hit.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The body went over the cap.
#[derive(Debug, thiserror::Error)]
#[error("request body over the size limit")]
pub struct BodyTooLarge;

pin_project_lite::pin_project! {
    /// A request body that fails once more than the cap has streamed through.
    pub struct CappedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        exceeded: BodyCapExceeded,
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.remaining() as u64);
                if len > *this.remaining {
                    this.exceeded.0.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                }
                *this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
