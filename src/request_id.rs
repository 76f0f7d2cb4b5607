//! Request ids: keep the client's `X-Request-Id` when it is a sane id (1–128 visible ASCII characters),
//! else mint a UUID; send it to Kong and echo it on every response, Runway's own included.

use http::{HeaderName, HeaderValue, Request};

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client id kept.
pub const MAX_ID_LEN: usize = 128;

/// The request's id, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// As text (always visible ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

fn is_sane(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_ID_LEN && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// Assigns the id (outermost layer, so every response carries it).
#[derive(Clone, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId { inner }
    }
}

/// See [`RequestIdLayer`].
#[derive(Clone)]
pub struct SetRequestId<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for SetRequestId<S>
where
    // Spelled out rather than `layer::Answers`: the request id is read by the context, which the layer
    // plumbing builds on.
    S: tower::Service<Request<B>, Response = crate::Response, Error = std::convert::Infallible>,
{
    type Response = crate::Response;
    type Error = std::convert::Infallible;
    type Future = WithRequestId<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if is_sane(v) && req.headers().get_all(&X_REQUEST_ID).iter().count() == 1 => v.clone(),
            _ => {
                let fresh = uuid::Uuid::new_v4().hyphenated().to_string();
                HeaderValue::from_str(&fresh).unwrap_or_else(|_| HeaderValue::from_static("-"))
            }
        };
        req.headers_mut().insert(X_REQUEST_ID, id.clone());
        req.extensions_mut().insert(RequestId(id.clone()));
        WithRequestId { future: self.inner.call(req), id: Some(id) }
    }
}

pin_project_lite::pin_project! {
    /// Echoes the request id on the response.
    pub struct WithRequestId<F> {
        #[pin]
        future: F,
        id: Option<HeaderValue>,
    }
}

impl<F> std::future::Future for WithRequestId<F>
where
    F: std::future::Future<Output = Result<crate::Response, std::convert::Infallible>>,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.future.poll(cx));
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        std::task::Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids() {
        assert!(is_sane(&HeaderValue::from_static("abc-123")));
        assert!(!is_sane(&HeaderValue::from_static("")));
        assert!(!is_sane(&HeaderValue::from_static("has space")));
        assert!(!is_sane(&HeaderValue::from_str(&"a".repeat(129)).expect("value")));
        assert!(is_sane(&HeaderValue::from_str(&"a".repeat(128)).expect("value")));
    }
}
