//! Keep-alive idle tracking by requests, not bytes: a connection is busy while a request is in flight, from its
//! head until its response body has been sent, and idle otherwise. Counting bytes instead would let a client
//! hold a connection forever with h2 PINGs or a request head trickled one byte at a time.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};

/// Shared between the service and the watchdog of one connection.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    served: AtomicBool,
}

impl Activity {
    /// A new connection's tracker.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long no request has been in flight (since the connection opened, before the first one).
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Whether a complete request head has arrived yet.
    pub fn has_served(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }

    /// How long the connection has been open.
    pub fn age(&self) -> Duration {
        self.start.elapsed()
    }

    /// Marks a request in flight until the guard drops (move it into the response body: see [`Guarded`]).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

impl crate::body::Busy for Activity {
    fn busy(self: Arc<Self>) -> Box<dyn Send> {
        Box::new(self.request())
    }
}

/// See [`Activity::request`].
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it has been sent (or dropped), so a long
    /// download is never mistaken for an idle connection.
    pub struct Guarded<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
    }
}

impl<B> Guarded<B> {
    /// Holds `guard` for as long as `inner` streams.
    pub fn new(inner: B, guard: InFlight) -> Self {
        Guarded { inner, guard: Some(guard) }
    }
}

impl<B: Body> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn busy_until_the_response_body_is_sent() {
        let activity = Activity::new();
        assert!(!activity.has_served());
        let body = Guarded::new(Full::new(bytes::Bytes::from_static(b"abc")), activity.request());
        assert!(activity.has_served());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(activity.idle_for(), Duration::ZERO, "the response is still being sent");
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok().as_deref(), Some(&b"abc"[..]));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(activity.idle_for() >= Duration::from_millis(25), "idle once the body is done");
    }
}
