//! The request body as the pipeline sees it: the client's bytes, without trailers (Runway forwards none:
//! a client's `x-runway-subject` or `authorization` in trailing HEADERS would otherwise reach an h2 Kong
//! beside Runway's real headers), and, when the pipeline answered before reading all of it (a 401, 403,
//! 404, 405, 413, 503, 400 to an upload), drained afterwards so that the client sees the answer.
//!
//! Why drain: a client that writes its whole body before reading (python `requests`, many Go and Java
//! clients) loses the response if the connection closes with its upload unread (the kernel answers the
//! unread bytes with a TCP reset), and curl drops an h2 response whose stream is reset before its body
//! ended, even with `NO_ERROR` (exit 92). So the remainder is read and discarded after the response, for
//! at most [`LINGER`] in all and the stall timeout between reads (nginx's `lingering_time` and
//! `lingering_timeout`), then the connection closes (HTTP/1.1) or the stream is reset (h2). A drain keeps
//! its connection (`max_connections`) and, on h2, its stream (the concurrent-stream bound) occupied and
//! counts as activity for the idle timeout, so it is held under the limits that already exist. The drained
//! bytes are never forwarded.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The longest a refused request's body is drained (nginx's `lingering_time`).
pub const LINGER: Duration = Duration::from_secs(30);

/// Something that stays busy while a body drains (the connection's idle tracker).
pub trait Busy: Send + Sync + 'static {
    /// Marks the connection busy until the returned guard drops.
    fn busy(self: Arc<Self>) -> Box<dyn Send>;
}

/// How a body that was not read to its end is drained once the response is on its way.
pub struct Linger {
    answered: oneshot::Receiver<()>,
    busy: Arc<dyn Busy>,
    stall: Duration,
}

/// Fired once the pipeline has produced its response: only then may a drain start.
pub struct Answered(oneshot::Sender<()>);

impl Answered {
    /// The response head exists: a drain may read now.
    pub fn fire(self) {
        let _ = self.0.send(());
    }
}

impl Linger {
    /// A drain plan for one request, and the trigger the caller fires when the response is ready.
    /// `stall` bounds each wait for more bytes.
    pub fn new(busy: Arc<dyn Busy>, stall: Duration) -> (Answered, Linger) {
        let (tx, rx) = oneshot::channel();
        (Answered(tx), Linger { answered: rx, busy, stall })
    }

    async fn drain(self, mut body: Incoming) {
        let _busy = self.busy.clone().busy();
        // Not before the response exists: reading earlier would make hyper send `100 Continue` to a client
        // that asked first (`Expect`) and invite an upload nobody will use. An error means the request was
        // dropped (connection gone), and the read below then ends at once.
        let _ = self.answered.await;
        let deadline = Instant::now() + LINGER;
        let mut drained: u64 = 0;
        loop {
            let wait = (Instant::now() + self.stall).min(deadline);
            match tokio::time::timeout_at(wait, body.frame()).await {
                Ok(Some(Ok(frame))) => drained += frame.data_ref().map_or(0, |d| d.len() as u64),
                Ok(None) => {
                    tracing::debug!(drained, "unread request body drained after the response");
                    return;
                }
                Ok(Some(Err(error))) => {
                    tracing::debug!(drained, %error, "client stopped sending while its body was drained");
                    return;
                }
                Err(_) => {
                    tracing::debug!(drained, "request body drain gave up: closing");
                    return;
                }
            }
        }
    }
}

/// See the module docs.
pub struct RequestBody {
    inner: Option<Incoming>,
    finished: bool,
    linger: Option<Linger>,
}

impl RequestBody {
    /// Wraps a body; with `linger`, what is left unread when it is dropped is drained.
    pub fn new(inner: Incoming, linger: Option<Linger>) -> Self {
        RequestBody { inner: Some(inner), finished: false, linger }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut().filter(|_| !this.finished) else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if !frame.is_data() => {
                // Trailers come last: the body ends here, without them.
                tracing::debug!("request trailers dropped: Runway forwards none");
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finished = true;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) if !self.finished => inner.size_hint(),
            _ => SizeHint::with_exact(0),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let (Some(inner), Some(linger)) = (self.inner.take(), self.linger.take()) else { return };
        if self.finished || inner.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger.drain(inner));
        }
    }
}
