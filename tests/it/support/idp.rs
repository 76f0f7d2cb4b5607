//! A fake OIDC issuer over plain HTTP on 127.0.0.1 (Runway allows plain http only for
//! loopback issuers): serves discovery and a JWKS that tests can rotate, break or slow down, replace with
//! any body (garbage), or take off the network and bring back on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Path of the discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

#[derive(Default)]
struct State {
    issuer: String,
    jwks: Mutex<Value>,
    /// Served at `/jwks` instead of `jwks`: (content type, body).
    jwks_raw: Mutex<Option<(String, Bytes)>>,
    /// Served as the discovery document instead of the generated one.
    discovery: Mutex<Option<Value>>,
    cache_control: Mutex<Option<String>>,
    delay: Mutex<Duration>,
    /// While true, requests wait (after being counted) until it turns false.
    hang: tokio::sync::watch::Sender<bool>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
}

/// The fake issuer. The server (and every connection) stops when this is dropped.
pub struct TestIdp {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl TestIdp {
    /// Starts serving `jwks` at `/jwks` and a discovery document pointing to it.
    pub async fn start(jwks: Value) -> TestIdp {
        TestIdp::start_on("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")), jwks).await
    }

    /// Like [`TestIdp::start`], on `addr` (e.g. where an IdP that went down listened: it comes back).
    pub async fn start_on(addr: SocketAddr, jwks: Value) -> TestIdp {
        let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("binding IdP listener on {addr}: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("IdP local_addr: {e}"));
        let state = Arc::new(State { issuer: format!("http://{addr}"), jwks: Mutex::new(jwks), ..State::default() });
        let task = tokio::spawn(super::serve::plain_http(listener, state.clone(), handle));
        TestIdp { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    /// `issuer + "/jwks"`.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.state.issuer)
    }

    /// The socket address the IdP listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the served JWKS (key rotation).
    pub fn set_jwks(&self, jwks: Value) {
        *lock(&self.state.jwks) = jwks;
    }

    /// Serves `body` with `content_type` at `/jwks` instead of the JWKS (`None`: back to the JWKS).
    pub fn set_jwks_raw(&self, raw: Option<(&str, Bytes)>) {
        *lock(&self.state.jwks_raw) = raw.map(|(content_type, body)| (content_type.to_string(), body));
    }

    /// Serves `doc` as the discovery document (`None`: back to the generated one).
    pub fn set_discovery(&self, doc: Option<Value>) {
        *lock(&self.state.discovery) = doc;
    }

    /// While down, every request is answered 503 (requests are still counted).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// `Cache-Control` header value on `/jwks` responses (`None`: no header).
    pub fn set_cache_control(&self, value: Option<&str>) {
        *lock(&self.state.cache_control) = value.map(str::to_string);
    }

    /// Sleep this long before answering each request (slow IdP).
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.state.delay) = d;
    }

    /// While hanging, requests are counted, then wait without an answer; turning it off releases the
    /// waiting ones at once (an IdP that was slow and is fast again).
    pub fn set_hang(&self, hang: bool) {
        self.state.hang.send_replace(hang);
    }

    /// Number of `GET /jwks` received (also counted while down).
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Number of `GET /.well-known/openid-configuration` received (also counted while down).
    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }
}

impl TestIdp {
    /// Stops the server and waits until its port is free (dropping it stops it in the background).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_get = req.method() == Method::GET;
    let path = req.uri().path();
    if is_get && path == "/jwks" {
        state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    } else if is_get && path == DISCOVERY_PATH {
        state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    }
    let delay = *lock(&state.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let _ = state.hang.subscribe().wait_for(|hang| !*hang).await;
    if state.down.load(Ordering::SeqCst) {
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, None, "IdP is down"));
    }
    let response = match (is_get, path) {
        (true, "/jwks") if lock(&state.jwks_raw).is_some() => {
            let (content_type, body) = lock(&state.jwks_raw).clone().unwrap_or_default();
            reply(StatusCode::OK, Some(&content_type), body)
        }
        (true, "/jwks") => {
            let body = lock(&state.jwks).to_string();
            let mut resp = reply(StatusCode::OK, Some("application/json"), body);
            if let Some(cc) = lock(&state.cache_control).as_deref()
                && let Ok(value) = cc.parse()
            {
                resp.headers_mut().insert(header::CACHE_CONTROL, value);
            }
            resp
        }
        (true, DISCOVERY_PATH) if lock(&state.discovery).is_some() => {
            let doc = lock(&state.discovery).clone().unwrap_or_default();
            reply(StatusCode::OK, Some("application/json"), doc.to_string())
        }
        (true, DISCOVERY_PATH) => {
            let doc = json!({
                "issuer": state.issuer,
                "jwks_uri": format!("{}/jwks", state.issuer),
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            });
            reply(StatusCode::OK, Some("application/json"), doc.to_string())
        }
        (false, "/jwks" | DISCOVERY_PATH) => reply(StatusCode::METHOD_NOT_ALLOWED, None, "GET only"),
        _ => reply(StatusCode::NOT_FOUND, None, "not found"),
    };
    Ok(response)
}

fn reply(status: StatusCode, content_type: Option<&str>, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let content_type = content_type.unwrap_or("text/plain");
    if let Ok(value) = content_type.parse() {
        resp.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    resp
}
