//! The "Kong" stand-in: a TLS server (HTTP/1.1 and h2) that demands a client certificate
//! chaining to the test CA and echoes what it received as JSON.
//!
//! Request bodies are streamed and hashed incrementally, never buffered, so tests can push
//! hundreds of MiB through. `GET /stream/<N>` answers N bytes of `x` (64 KiB chunks);
//! `/status/<code>` answers with that status (and the usual JSON). `/abort/<N>` promises 2N bytes
//! (`Content-Length`) and `/abort-chunked/<N>` a chunked body, then each sends N bytes and breaks the
//! connection: Kong dying mid-response. Request trailers, if any arrive, are echoed under `trailers`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::der;
use super::pki::Pki;

const CHUNK: u64 = 64 * 1024;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Default)]
struct Stats {
    connections: AtomicUsize,
    handshake_failures: AtomicUsize,
    requests: AtomicUsize,
    aborted: AtomicUsize,
    delay: Mutex<Duration>,
}

/// The echo upstream. The server (and every connection) stops when this is dropped.
pub struct EchoUpstream {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl EchoUpstream {
    /// Starts with `pki.upstream_server_config()` (client certificate required).
    pub async fn start(pki: &Pki) -> EchoUpstream {
        EchoUpstream::start_with_config(pki.upstream_server_config()).await
    }

    /// Starts with any rustls server config (e.g. `pki.server_config()`, no client auth).
    pub async fn start_with_config(config: Arc<rustls::ServerConfig>) -> EchoUpstream {
        EchoUpstream::start_on(config, "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))).await
    }

    /// Like [`EchoUpstream::start_with_config`], on `addr` (e.g. where a Kong that went away listened).
    pub async fn start_on(config: Arc<rustls::ServerConfig>, addr: SocketAddr) -> EchoUpstream {
        let listener =
            TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("binding upstream listener on {addr}: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("upstream local_addr: {e}"));
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), stats.clone()));
        EchoUpstream { addr, stats, task }
    }

    /// The socket address (127.0.0.1:PORT).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// TLS handshakes completed.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (no / untrusted client certificate, ...). Counted right
    /// after the server has sent its alert, so poll briefly if you race the client.
    pub fn handshake_failures(&self) -> usize {
        self.stats.handshake_failures.load(Ordering::SeqCst)
    }

    /// Requests received (counted on arrival, before any delay).
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Requests whose body ended in an error (the sender aborted it) instead of completing.
    pub fn aborted(&self) -> usize {
        self.stats.aborted.load(Ordering::SeqCst)
    }

    /// Sleep this long before answering each request (after reading its body).
    pub fn set_delay(&self, d: Duration) {
        *self.stats.delay.lock().unwrap_or_else(PoisonError::into_inner) = d;
    }
}

impl EchoUpstream {
    /// Stops the server and waits until its port is free (dropping it stops it in the background).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections; each is served on its own task inside a `JoinSet`, so aborting this
/// task aborts them all.
async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, stats: Arc<Stats>) {
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
        let (acceptor, stats) = (acceptor.clone(), stats.clone());
        conns.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(_) => {
                    stats.handshake_failures.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            stats.connections.fetch_add(1, Ordering::SeqCst);
            let cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| der::subject_common_name(cert));
            let service = service_fn(move |req| handle(stats.clone(), cn.clone(), req));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // Any head Runway lets through reaches the echo (hyper's h2 default list size is 16 KiB).
            builder.http2().max_header_list_size(1 << 20);
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

async fn handle(
    stats: Arc<Stats>,
    client_cn: Option<String>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();

    let mut sha = digest::Context::new(&digest::SHA256);
    let mut body_len: u64 = 0;
    let mut trailers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    sha.update(data);
                    body_len += data.len() as u64;
                }
                for (name, value) in frame.trailers_ref().into_iter().flatten() {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    trailers.entry(name.as_str().to_string()).or_default().push(value);
                }
            }
            Err(e) => {
                stats.aborted.fetch_add(1, Ordering::SeqCst);
                let msg = format!("error reading request body: {e}");
                let mut resp = Response::new(full(msg.into()));
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                return Ok(resp);
            }
        }
    }

    let delay = *stats.delay.lock().unwrap_or_else(PoisonError::into_inner);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let path = parts.uri.path();
    if parts.method == Method::GET
        && let Some(n) = path.strip_prefix("/stream/").and_then(|n| n.parse().ok())
    {
        return Ok(Response::new(stream_of_x(n)));
    }
    if let Some((chunked, n)) = path
        .strip_prefix("/abort/")
        .map(|n| (false, n))
        .or_else(|| path.strip_prefix("/abort-chunked/").map(|n| (true, n)))
        .and_then(|(chunked, n)| Some((chunked, n.parse::<usize>().ok()?)))
    {
        return Ok(aborted(chunked, n));
    }
    if let Some(n) = path.strip_prefix("/stall/").and_then(|n| n.parse::<usize>().ok()) {
        return Ok(stalled(n));
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|code| code.parse().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);

    let header_str =
        |name: header::HeaderName| parts.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let authority = parts.uri.authority().map(|a| a.to_string());
    let host = if parts.version == Version::HTTP_2 {
        authority.or_else(|| header_str(header::HOST))
    } else {
        header_str(header::HOST).or(authority)
    };
    let mut headers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.entry(name.as_str()).or_default().push(value);
    }
    let echo = json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or(""),
        "version": format!("{:?}", parts.version),
        "host": host,
        "headers": headers,
        "body_len": body_len,
        "body_sha256": hex(sha.finish().as_ref()),
        "trailers": trailers,
        "client_cert_cn": client_cn,
    });

    let mut resp = Response::new(full(echo.to_string().into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A 200 whose body breaks 50 ms after `n` bytes of `x` (so the head and those bytes are on their way first);
/// with `Content-Length: 2n` unless `chunked`. hyper drops the connection (h2: resets the stream) when a
/// body fails, without the final chunk.
fn aborted(chunked: bool, n: usize) -> Response<Body> {
    use futures_util::StreamExt;
    let frames = futures_util::stream::iter([true, false]).then(move |first| async move {
        if first {
            Ok(Frame::data(Bytes::from(vec![b'x'; n])))
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err("Kong went away mid-response".into())
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    if !chunked {
        resp.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from(2 * n));
    }
    resp
}

/// A 200 with `Content-Length: 2n` that sends `n` bytes of `x` and then nothing, never closing.
fn stalled(n: usize) -> Response<Body> {
    use futures_util::StreamExt;
    let first = futures_util::stream::once(async move { Ok(Frame::data(Bytes::from(vec![b'x'; n]))) });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(first.chain(futures_util::stream::pending()))));
    resp.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from(2 * n));
    resp
}

/// `n` bytes of `x`, streamed in 64 KiB chunks (one shared chunk buffer).
fn stream_of_x(n: u64) -> Body {
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let frames = (0..n.div_ceil(CHUNK)).map(move |i| {
        let len = (n - i * CHUNK).min(CHUNK) as usize;
        Ok(Frame::data(chunk.slice(..len)))
    });
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
