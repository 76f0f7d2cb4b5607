//! The admin listener (plain HTTP, meant for loopback or the pod network): `/metrics` (Prometheus text),
//! `/healthz` while the process serves, `/readyz` once every issuer has usable keys, with `[assertion]` the
//! assertion public keys at `/.well-known/jwks.json`, and `POST /reload` (the same reload as SIGHUP, for
//! sidecars and platforms that cannot signal the process).
//!
//! The state-changing endpoints (`/reload`) go through [`access`]: a bearer token with `admin.token_file`,
//! loopback peers only without it. `/reload` takes no input: it re-reads the files already configured.

pub mod access;
pub mod client;
pub mod revocations;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Runtime;
use crate::server::Reloader;
use access::Denied;

/// Serves until `stop` turns true, answering from whichever runtime `reloader` holds live.
pub async fn serve(listener: TcpListener, reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, peer) = tokio::select! {
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
                async move { Ok::<_, Infallible>(handle(req, peer.ip(), &reloader).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

async fn handle(req: Request<Incoming>, peer: IpAddr, reloader: &Reloader) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let revocations = path == "/revocations" || path.starts_with("/revocations/");
    if path == "/reload" || revocations {
        let runtime = reloader.current();
        if let Err(denied) = runtime.admin_access.check(req.headers(), peer) {
            return refuse(denied);
        }
        if revocations {
            return revocations::handle(req, &runtime).await;
        }
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
        "/readyz" => readiness(&runtime),
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

fn readiness(runtime: &Runtime) -> Response<Full<Bytes>> {
    let mut missing = Vec::new();
    for issuer in runtime.auth.issuers() {
        if issuer.keys.is_ready() {
            continue;
        }
        let why = match issuer.keys.last_error() {
            Some(e) => format!("issuer \"{}\": no usable keys ({e})", issuer.config.name),
            None => format!("issuer \"{}\": no usable keys yet", issuer.config.name),
        };
        missing.push(why);
    }
    // Loaded once, a later Redis outage keeps the known set in force: shown here, but still ready.
    if let Err(why) = runtime.revocations.readiness() {
        missing.push(why);
    }
    let revocations = runtime.revocations.status();
    let (status, body) = if missing.is_empty() {
        (StatusCode::OK, serde_json::json!({"ready": true, "missing": [], "revocations": revocations}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "missing": missing, "revocations": revocations}),
        )
    };
    json(status, &body)
}

/// 401 with a bearer challenge, or 403 for a peer that could never pass without a token.
fn refuse(denied: Denied) -> Response<Full<Bytes>> {
    match denied {
        Denied::Token => {
            let body = serde_json::json!({"error": "this admin endpoint needs `Authorization: Bearer <token>` \
                (the token in admin.token_file)"});
            let mut response = json(StatusCode::UNAUTHORIZED, &body);
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"runway-admin\""),
            );
            response
        }
        Denied::NotLoopback => json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "this admin endpoint answers loopback peers only; set admin.token_file \
                to call it from elsewhere with a bearer token"}),
        ),
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn allow_only(method: Method) -> Response<Full<Bytes>> {
    allow_only_any(&[method])
}

fn allow_only_any(methods: &[Method]) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    let allow = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    if let Ok(value) = http::HeaderValue::from_str(&allow) {
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
