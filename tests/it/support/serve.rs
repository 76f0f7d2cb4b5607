//! The accept loop of the plain-HTTP fakes (the IdP, the OTLP receiver): each connection served, h1 or h2, on a
//! task inside a `JoinSet`, so aborting the loop's task aborts them all.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Serves `handle` with `state` on every connection `listener` accepts, until the task is aborted.
pub async fn plain_http<S, F, Fut>(listener: TcpListener, state: Arc<S>, handle: F)
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let (state, handle) = (state.clone(), handle.clone());
        conns.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}
