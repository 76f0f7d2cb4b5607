//! Request limits: the whole-request timeout (504) and the body size cap (413, up front from
//! `Content-Length`, or mid-stream for chunked bodies).

use std::time::Duration;

use http::Request;
use http::header::CONTENT_LENGTH;
use http_body_util::Limited;

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
        RequestTimeout {
            inner,
            timeout: self.timeout,
        }
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

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let extensions = req.extensions().clone();
        let fut = self.inner.call(req);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(result) => result,
                Err(_) => Ok(rejection_response(
                    &extensions,
                    Rejection::GatewayTimeout(format!(
                        "request did not complete within {}s",
                        timeout.as_secs_f64()
                    )),
                )),
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
        BodyLimit {
            inner,
            limit: self.limit,
        }
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
    S: Inner<Limited<B>>,
    B: Send + 'static,
{
    type Response = crate::Response;
    type Error = std::convert::Infallible;
    type Future = BoxResponseFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.limit.unwrap_or(u64::MAX);
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return reject(&req, Rejection::PayloadTooLarge { limit });
        }
        let req = req.map(|body| Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)));
        Box::pin(self.inner.call(req))
    }
}
