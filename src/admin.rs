//! The admin listener (plain HTTP, meant for loopback or the pod network): `/metrics` (Prometheus text),
//! `/healthz` while the process serves, `/readyz` once every issuer has usable keys, with `[assertion]` the
//! assertion public keys at `/.well-known/jwks.json`, and `POST /reload` (the same reload as SIGHUP, for
//! sidecars and platforms that cannot signal the process).
//!
//! `/reload` takes no input: it re-reads the files already configured, so whoever can reach the admin
//! listener can at most make Runway apply what is on its own disk.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::server::Reloader;

/// Serves until `stop` turns true, answering from whichever runtime `reloader` holds live.
pub async fn serve(listener: TcpListener, reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
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
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let reloader = reloader.clone();
                async move { Ok::<_, Infallible>(handle(req, &reloader).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

async fn handle(req: Request<Incoming>, reloader: &Reloader) -> Response<Full<Bytes>> {
    if req.uri().path() == "/reload" {
        return match *req.method() {
            Method::POST => reload(reloader).await,
            _ => allow_only(Method::POST),
        };
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return allow_only(Method::GET);
    }
    let runtime = reloader.current();
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readiness(&runtime.auth),
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(runtime.telemetry.metrics.render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            response
        }
        "/.well-known/jwks.json" => match &runtime.assertion {
            Some(assertion) => {
                let mut response = Response::new(Full::new(assertion.jwks()));
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

/// 200 with the new generation, or 422 with the error (naming the key); the old config keeps serving then.
async fn reload(reloader: &Reloader) -> Response<Full<Bytes>> {
    let (status, body) = match reloader.reload("POST /reload").await {
        Ok(generation) => (StatusCode::OK, serde_json::json!({"reloaded": true, "generation": generation})),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"reloaded": false, "generation": reloader.generation(), "error": e.chain()}),
        ),
    };
    json(status, &body)
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
    json(status, &body)
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn allow_only(method: Method) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    if let Ok(value) = http::HeaderValue::from_str(method.as_str()) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}
