//! The admin listener (plain HTTP, meant for loopback or the pod network): `/metrics` (Prometheus text),
//! `/healthz` while the process serves, `/readyz` once every issuer has usable keys, and with
//! `[assertion]` the assertion public keys at `/.well-known/jwks.json`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::metrics::Metrics;

/// Serves until `stop` turns true. `jwks` is the assertion key set, when `[assertion]` is configured.
pub async fn serve(
    listener: TcpListener,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    jwks: Option<Bytes>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let auth = auth.clone();
        let metrics = metrics.clone();
        let jwks = jwks.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let auth = auth.clone();
                let metrics = metrics.clone();
                let jwks = jwks.clone();
                async move { Ok::<_, Infallible>(handle(req, &auth, &metrics, jwks)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

fn handle(
    req: Request<Incoming>,
    auth: &Authenticator,
    metrics: &Metrics,
    jwks: Option<Bytes>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readiness(auth),
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            response
        }
        "/.well-known/jwks.json" => match jwks {
            Some(jwks) => {
                let mut response = Response::new(Full::new(jwks));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, http::HeaderValue::from_static("application/jwk-set+json"));
                headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("max-age=300"));
                response
            }
            None => text(StatusCode::NOT_FOUND, "not found: no [assertion] configured\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn readiness(auth: &Authenticator) -> Response<Full<Bytes>> {
    let mut missing = Vec::new();
    for issuer in auth.issuers() {
        if issuer.keys.is_ready() {
            continue;
        }
        let why = match issuer.keys.last_error() {
            Some(e) => format!("issuer \"{}\": no usable keys ({e})", issuer.config.name),
            None => format!("issuer \"{}\": no usable keys yet", issuer.config.name),
        };
        missing.push(why);
    }
    let (status, body) = if missing.is_empty() {
        (StatusCode::OK, serde_json::json!({"ready": true, "missing": []}))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"ready": false, "missing": missing}))
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}
