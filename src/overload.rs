//! Overload protection: bounded capacities that survive config reloads ([`Capacity`], used for connections at
//! accept and for requests in flight), and the layer that sheds requests above the in-flight bound with 503 +
//! `Retry-After` instead of queueing them without bound.
//!
//! Shedding at once is the point: a queue in front of a slow Kong only turns overload into timeouts for
//! everyone, while a fast 503 lets clients (CI retry loops, load balancers) back off or go elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::Request;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Rejection;
use crate::layer::{Inner, Step, StepResult};

/// A bound on something concurrent (connections, requests in flight) whose size a reload may change without
/// forgetting what is already held.
#[derive(Debug)]
pub struct Capacity {
    permits: Arc<Semaphore>,
    size: Mutex<usize>,
    /// Permits still to be taken out of circulation after a shrink (they were held when it happened).
    owed: Arc<AtomicUsize>,
}

impl Capacity {
    /// A bound of `size`.
    pub fn new(size: usize) -> Arc<Capacity> {
        let size = size.min(Semaphore::MAX_PERMITS);
        Arc::new(Capacity {
            permits: Arc::new(Semaphore::new(size)),
            size: Mutex::new(size),
            owed: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The semaphore behind it.
    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Takes a slot if one is free now.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// The configured bound.
    pub fn size(&self) -> usize {
        *self.size.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the bound. Growing frees slots at once; shrinking takes free slots out now and the rest as the
    /// holders of busy ones let go, so nothing in flight is cut off.
    pub fn resize(&self, new: usize) {
        let new = new.min(Semaphore::MAX_PERMITS);
        let mut size = self.size.lock().unwrap_or_else(PoisonError::into_inner);
        let old = *size;
        *size = new;
        drop(size);
        if new > old {
            let mut grow = new - old;
            // Pay back a shrink that has not finished yet before adding permits.
            let _ = self.owed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                let paid = owed.min(grow);
                grow -= paid;
                Some(owed - paid)
            });
            self.permits.add_permits(grow);
        } else if new < old {
            let shrink = old - new;
            let taken = self.permits.forget_permits(shrink);
            let rest = shrink - taken;
            if rest > 0 {
                self.owed.fetch_add(rest, Ordering::AcqRel);
                let (permits, owed) = (self.permits.clone(), self.owed.clone());
                tokio::spawn(async move { collect_owed(&permits, &owed).await });
            }
        }
    }
}

/// Takes owed permits out of circulation one at a time as they come free.
async fn collect_owed(permits: &Semaphore, owed: &AtomicUsize) {
    while owed.load(Ordering::Acquire) > 0 {
        let Ok(permit) = permits.acquire().await else { return };
        let took = owed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
        if took {
            permit.forget();
        }
    }
}

/// Answers 503 + `Retry-After` when `capacity` requests are already in flight.
#[derive(Clone)]
pub struct ShedLayer {
    capacity: Arc<Capacity>,
}

impl ShedLayer {
    /// Sheds above `capacity`.
    pub fn new(capacity: Arc<Capacity>) -> Self {
        ShedLayer { capacity }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Shed { inner, capacity: self.capacity.clone() }
    }
}

/// See [`ShedLayer`].
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    capacity: Arc<Capacity>,
}

impl<S, B> tower::Service<Request<B>> for Shed<S>
where
    S: Inner<B>,
{
    type Response = crate::Response;
    type Error = Rejection;
    type Future = Holding<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(permit) = self.capacity.try_acquire() else {
            return Holding { step: Step::refuse(Rejection::Overloaded { limit: self.capacity.size() }), permit: None };
        };
        Holding { step: Step::next(self.inner.call(req)), permit: Some(permit) }
    }
}

pin_project_lite::pin_project! {
    /// The inner future, holding an in-flight slot until the response head: the body streams on the
    /// connection's own budget.
    pub struct Holding<F> {
        #[pin]
        step: Step<F>,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F: std::future::Future<Output = StepResult>> std::future::Future for Holding<F> {
    type Output = StepResult;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<StepResult> {
        let this = self.project();
        let result = std::task::ready!(this.step.poll(cx));
        this.permit.take();
        std::task::Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resize_keeps_what_is_held() {
        let capacity = Capacity::new(4);
        let held: Vec<_> = (0..3).filter_map(|_| capacity.try_acquire()).collect();
        assert_eq!(held.len(), 3);
        capacity.resize(2); // one free slot goes now; one more is owed by the holders
        assert!(capacity.try_acquire().is_none());
        drop(held);
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let now: Vec<_> = (0..4).filter_map(|_| capacity.try_acquire()).collect();
        assert_eq!(now.len(), 2, "after the holders let go the bound is the new size");
        drop(now);
        capacity.resize(5);
        let grown: Vec<_> = (0..8).filter_map(|_| capacity.try_acquire()).collect();
        assert_eq!(grown.len(), 5);
    }

    #[tokio::test]
    async fn growing_pays_back_an_unfinished_shrink_first() {
        let capacity = Capacity::new(2);
        let held: Vec<_> = (0..2).filter_map(|_| capacity.try_acquire()).collect();
        capacity.resize(1); // owes one
        capacity.resize(3); // pays the debt, adds one
        drop(held);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let now: Vec<_> = (0..8).filter_map(|_| capacity.try_acquire()).collect();
        assert_eq!(now.len(), 3);
    }
}
