//! An HTTPS client for talking to Runway in tests: trusts only the test CA, works with both
//! `https://localhost:PORT` and `https://127.0.0.1:PORT` URLs, HTTP/1.1 or h2-only.

use std::convert::Infallible;
use std::path::Path;

use aws_lc_rs::digest;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::pki::Pki;
use super::upstream::hex;

/// Chunk size of [`TestClient::post_streaming`] bodies.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// The request body type [`TestClient::send_body`] takes.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A fully read response.
#[derive(Debug)]
pub struct TestResponse {
    /// Response status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Bytes,
    /// HTTP version the response came over.
    pub version: Version,
}

impl TestResponse {
    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body ({}) is not JSON ({e}): {}", self.status, self.text()))
    }

    /// First value of header `name`, lossily decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// HTTPS client over hyper-rustls with `pki.client_config()` (no client certificate).
pub struct TestClient {
    inner: Client<HttpsConnector<HttpConnector>, Body>,
}

impl TestClient {
    /// HTTP/1.1 client (ALPN `http/1.1`).
    pub fn new(pki: &Pki) -> TestClient {
        TestClient::build(pki, b"http/1.1", false)
    }

    /// h2-only client (ALPN `h2`).
    pub fn http2(pki: &Pki) -> TestClient {
        TestClient::build(pki, b"h2", true)
    }

    /// HTTP/1.1 client presenting `cert`/`key` as its client certificate (see
    /// [`Pki::client_config_with_cert`]), for talking to an mTLS upstream directly.
    pub fn with_client_cert(pki: &Pki, cert: &Path, key: &Path) -> TestClient {
        TestClient::from_tls((*pki.client_config_with_cert(cert, key)).clone(), b"http/1.1", false)
    }

    fn build(pki: &Pki, alpn: &[u8], http2_only: bool) -> TestClient {
        TestClient::from_tls((*pki.client_config()).clone(), alpn, http2_only)
    }

    fn from_tls(mut tls: rustls::ClientConfig, alpn: &[u8], http2_only: bool) -> TestClient {
        tls.alpn_protocols = vec![alpn.to_vec()];
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let mut https = HttpsConnector::from((http, tls));
        https.enforce_https();
        let inner = Client::builder(TokioExecutor::new()).http2_only(http2_only).build(https);
        TestClient { inner }
    }

    /// Sends `req`; panics with a clear message on transport errors.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> TestResponse {
        let what = format!("{} {}", req.method(), req.uri());
        self.try_send(req).await.unwrap_or_else(|e| panic!("request {what} failed: {e}"))
    }

    /// Sends `req`; transport errors come back as a string with the whole error chain.
    pub async fn try_send(&self, req: Request<Full<Bytes>>) -> Result<TestResponse, String> {
        self.execute(req.map(|body| body.boxed_unsync())).await
    }

    /// `GET url`, with `Authorization: Bearer <token>` if `token` is given.
    pub async fn get(&self, url: &str, token: Option<&str>) -> TestResponse {
        let mut req = Request::get(url);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Full::default()).unwrap_or_else(|e| panic!("building GET {url}: {e}"));
        self.send(req).await
    }

    /// `POST url` streaming `total_bytes` of generated data (byte `i` is `i % 256`) in 64 KiB
    /// chunks without Content-Length; see [`streaming_body_sha256`] for the expected digest.
    pub async fn post_streaming(&self, url: &str, token: Option<&str>, total_bytes: u64) -> TestResponse {
        let mut req = Request::post(url).header(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(generated_body(total_bytes)).unwrap_or_else(|e| panic!("building POST {url}: {e}"));
        self.execute(req).await.unwrap_or_else(|e| panic!("streaming POST {url} ({total_bytes} bytes) failed: {e}"))
    }

    /// Sends a request with any body (streamed, with trailers, ...); transport errors as a string.
    pub async fn send_body(&self, req: Request<Body>) -> Result<TestResponse, String> {
        self.execute(req).await
    }

    async fn execute(&self, req: Request<Body>) -> Result<TestResponse, String> {
        let resp = self.inner.request(req).await.map_err(|e| error_chain(&e))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("reading response body: {}", error_chain(&e)))?.to_bytes();
        Ok(TestResponse { status: parts.status, headers: parts.headers, body, version: parts.version })
    }
}

/// One 64 KiB chunk with byte `j` = `j % 256`; as 65536 is a multiple of 256, repeating it
/// gives byte `i` = `i % 256` over the whole stream.
fn pattern_chunk() -> Bytes {
    (0..STREAM_CHUNK).map(|j| (j % 256) as u8).collect()
}

fn generated_body(total: u64) -> Body {
    let chunk = pattern_chunk();
    let size = STREAM_CHUNK as u64;
    let frames = (0..total.div_ceil(size)).map(move |i| {
        let len = (total - i * size).min(size) as usize;
        Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
    });
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// Lower-case hex SHA-256 of the body [`TestClient::post_streaming`] sends for `total_bytes`
/// (compare with the upstream's `body_sha256`).
pub fn streaming_body_sha256(total_bytes: u64) -> String {
    let chunk = pattern_chunk();
    let mut sha = digest::Context::new(&digest::SHA256);
    let mut left = total_bytes;
    while left > 0 {
        let len = left.min(STREAM_CHUNK as u64);
        sha.update(&chunk[..len as usize]);
        left -= len;
    }
    hex(sha.finish().as_ref())
}

/// `error: source: source...` — hyper's top-level errors alone say little.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Completes a TLS handshake with `addr` (trusting the test CA, SNI `localhost`) and returns the subject CN
/// of the certificate the server presented: which certificate a listener serves right now.
pub async fn served_certificate_cn(pki: &Pki, addr: std::net::SocketAddr) -> Option<String> {
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
    let tls = connector.connect(name, tcp).await.ok()?;
    let certs = tls.get_ref().1.peer_certificates()?;
    super::der::subject_common_name(certs.first()?)
}
