//! Request limits: the whole-request timeout (504), the body size cap (413, up front from
//! `Content-Length`, or mid-stream for chunked bodies) and the body stall timeout (408: no body bytes for
//! `server.header_read_timeout`, the body's counterpart of hyper's timeout on the head).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::Request;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::Rejection;
use crate::layer::{Inner, Step, StepResult};

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
{
    type Response = crate::Response;
    type Error = Rejection;
    type Future = Deadline<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The steps below are dropped mid-way if time runs out; the rescue attributes the 504 to the route,
        // identity and decision they had recorded in the request's context by then.
        Deadline { inner: tokio::time::timeout(self.timeout, self.inner.call(req)), after: self.timeout }
    }
}

pin_project_lite::pin_project! {
    /// See [`RequestTimeoutLayer`].
    pub struct Deadline<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        after: Duration,
    }
}

impl<F: Future<Output = StepResult>> Future for Deadline<F> {
    type Output = StepResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StepResult> {
        let this = self.project();
        match std::task::ready!(this.inner.poll(cx)) {
            Ok(result) => Poll::Ready(result),
            Err(_) => {
                let why = format!("request did not complete within {}s", this.after.as_secs_f64());
                Poll::Ready(Err(Rejection::GatewayTimeout(why)))
            }
        }
    }
}

/// Caps request bodies at `max_body_bytes` (`None` = unlimited, still streamed) and fails a body that
/// stalls for longer than the stall timeout.
#[derive(Clone)]
pub struct BodyLimitLayer {
    limit: Option<u64>,
    stall: Duration,
}

impl BodyLimitLayer {
    /// With this cap and this longest wait for the next body bytes.
    pub fn new(limit: Option<u64>, stall: Duration) -> Self {
        BodyLimitLayer { limit, stall }
    }
}

impl<S> tower::Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit { inner, limit: self.limit, stall: self.stall }
    }
}

/// See [`BodyLimitLayer`].
#[derive(Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limit: Option<u64>,
    stall: Duration,
}

impl<S, B> tower::Service<Request<B>> for BodyLimit<S>
where
    S: Inner<CappedBody<B>>,
{
    type Response = crate::Response;
    type Error = Rejection;
    type Future = Step<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.limit.unwrap_or(u64::MAX);
        let declared =
            req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Step::refuse(Rejection::PayloadTooLarge { limit });
        }
        let fault = BodyFault::new(self.stall);
        let mut req =
            req.map(|inner| CappedBody { inner, remaining: limit, fault: fault.clone(), stall: StallTimer::default() });
        req.extensions_mut().insert(fault);
        Step::next(self.inner.call(req))
    }
}

/// What went wrong with a request body on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFaultKind {
    /// It went over the cap.
    TooLarge,
    /// No bytes came for this long.
    Stalled(Duration),
}

/// Set when a request body failed on the client's side, so the forwarder answers 413 or 408 rather than
/// 502 whatever way the aborted upstream exchange surfaces.
#[derive(Debug, Clone)]
pub struct BodyFault(Arc<FaultState>);

#[derive(Debug)]
struct FaultState {
    kind: AtomicU8,
    stall_after: Duration,
}

const TOO_LARGE: u8 = 1;
const STALLED: u8 = 2;

impl BodyFault {
    /// None yet, for a body allowed to stall for `stall_after`.
    pub fn new(stall_after: Duration) -> Self {
        BodyFault(Arc::new(FaultState { kind: AtomicU8::new(0), stall_after }))
    }

    /// What happened, if anything.
    pub fn get(&self) -> Option<BodyFaultKind> {
        match self.0.kind.load(Ordering::Relaxed) {
            TOO_LARGE => Some(BodyFaultKind::TooLarge),
            STALLED => Some(BodyFaultKind::Stalled(self.0.stall_after)),
            _ => None,
        }
    }

    fn set(&self, kind: u8) {
        self.0.kind.store(kind, Ordering::Relaxed);
    }
}

/// The body went over the cap.
#[derive(Debug, thiserror::Error)]
#[error("request body over the size limit")]
pub struct BodyTooLarge;

/// No body bytes arrived for the stall timeout.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes for {}s", .0.as_secs_f64())]
pub struct BodyStalled(pub Duration);

pin_project_lite::pin_project! {
    /// A request body that fails once more than the cap has streamed through, or once the client has sent
    /// nothing for the stall timeout while the body was being read.
    pub struct CappedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        fault: BodyFault,
        stall: StallTimer,
    }
}

/// Times the gaps of a streamed body: how long it has had nothing to give while being asked for more.
/// Only a wait while the body is being polled counts: time spent while the reader was not asking (the other
/// side applying back-pressure) ends as soon as the next poll finds data or starts a new wait.
#[derive(Default)]
pub struct StallTimer {
    // Made on the first wait only (a body that is already buffered never needs one), then reset: one timer
    // per body at most, not one per frame.
    sleep: Option<Pin<Box<Sleep>>>,
    // Waiting since the timer was last set.
    waiting: bool,
}

impl StallTimer {
    /// The body produced a frame.
    pub fn progress(&mut self) {
        self.waiting = false;
    }

    /// The body has nothing ready: whether it has now been waiting `after` (registers a wake-up if not).
    pub fn expired(&mut self, after: Duration, cx: &mut Context<'_>) -> bool {
        let timer = match &mut self.sleep {
            Some(timer) => {
                if !self.waiting {
                    timer.as_mut().reset(Instant::now() + after);
                }
                timer
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep(after))),
        };
        self.waiting = true;
        timer.as_mut().poll(cx).is_ready()
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
                this.stall.progress();
                let len = frame.data_ref().map_or(0, |d| d.remaining() as u64);
                if len > *this.remaining {
                    this.fault.set(TOO_LARGE);
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                }
                *this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Only the client's silence counts, not Kong's back-pressure (see StallTimer).
                let after = this.fault.0.stall_after;
                if this.stall.expired(after, cx) {
                    this.fault.set(STALLED);
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(after)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
