//! Forwarding to Kong: a pooled hyper client over rustls with Runway's client certificate, HTTP/1.1 or h2
//! by ALPN, bodies streamed both ways. Every connection goes to the configured upstream address, whatever
//! the request's Host, so `preserve_host` can hand Kong the client's host without changing where we dial.
//! A response body that breaks off mid-stream is logged and counted here, where the break is seen. The
//! `upstream.protocol` setting chooses what ALPN offers: both versions (h2 preferred), HTTP/1.1 only (a pool
//! of keep-alive connections) or h2 only. With `[tracing]`, the call is the request's `upstream` span and Kong
//! receives a `traceparent` naming it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::context::RequestContext;
use crate::error::Rejection;
use crate::limit::StallTimer;
use crate::limit::{BodyFault, BodyFaultKind};
use crate::metrics::Metrics;
use crate::otel::propagation::{TRACEPARENT, TRACESTATE};
use crate::tls::{self, TlsError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an idle pooled connection to Kong is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP or TLS connection to Kong failed.
    #[error("connect: {0}")]
    Connect(String),
    /// The exchange failed after connecting (reset, protocol error).
    #[error("request: {0}")]
    Request(String),
    /// No response head within `upstream.timeout`.
    #[error("timed out")]
    Timeout,
    /// The streamed request body went over `max_body_bytes`.
    #[error("request body over {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client sent no request body bytes for this long.
    #[error("request body stalled for {}s", .idle.as_secs_f64())]
    BodyStalled {
        /// How long.
        idle: Duration,
    },
}

/// Dials the configured upstream address, ignoring the request URI's host.
#[derive(Clone)]
pub struct UpstreamConnector {
    host: Arc<str>,
    port: u16,
}

/// Bounds a whole connect, TCP and TLS handshake together, by `upstream.connect_timeout`.
#[derive(Clone)]
pub struct TimeoutConnector<C> {
    inner: C,
    timeout: Duration,
}

impl<C> tower::Service<Uri> for TimeoutConnector<C>
where
    C: tower::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connect = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connect).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(format!("connect (TCP + TLS) took longer than {}s", timeout.as_secs_f64()).into()),
            }
        })
    }
}

impl tower::Service<Uri> for UpstreamConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // The OS error alone ("Connection refused") does not say where: name the address in the log.
            let stream = TcpStream::connect((&*this.host, this.port)).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("TCP connect to {}:{}: {e}", this.host, this.port))
            })?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The upstream client, generic over the request body.
pub struct Upstream<B> {
    client: Client<TimeoutConnector<HttpsConnector<UpstreamConnector>>, B>,
    authority: Authority,
    preserve_host: bool,
    timeout: Duration,
    body_limit: Option<u64>,
}

impl<B> Upstream<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Builds the client (reads the CA and client certificate; no network).
    pub fn new(config: &UpstreamConfig, body_limit: Option<u64>) -> Result<Self, TlsError> {
        let tls = tls::upstream_client_config(config)?;
        let server_name = rustls_pki_types::ServerName::try_from(config.server_name.clone())
            .map_err(|e| TlsError::Rejected { key: "upstream.server_name", message: e.to_string() })?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(server_name));
        // ALPN offers what the setting allows: both (h2 preferred), or exactly one. An upstream that cannot
        // speak the one offered fails the exchange (502) instead of silently speaking another version.
        let dial = UpstreamConnector { host: config.host.as_str().into(), port: config.port };
        let connector = match config.protocol {
            UpstreamProtocol::Auto => builder.enable_all_versions().wrap_connector(dial),
            UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(dial),
            UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(dial),
        };
        let connector = TimeoutConnector { inner: connector, timeout: config.connect_timeout };
        let mut client = Client::builder(TokioExecutor::new());
        client.pool_timer(TokioTimer::new()).timer(TokioTimer::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT);
        // HTTP/1.1 connections are pooled and kept alive between requests (one per request in flight);
        // h2 multiplexes requests on one.
        if config.protocol == UpstreamProtocol::Http2 {
            client.http2_only(true);
        }
        let client = client.build(connector);
        let authority = config
            .url
            .authority()
            .cloned()
            .ok_or(TlsError::Rejected { key: "upstream.url", message: "has no host".into() })?;
        Ok(Upstream { client, authority, preserve_host: config.preserve_host, timeout: config.timeout, body_limit })
    }

    /// The host and port every connection goes to (for the upstream span).
    pub fn address(&self) -> (&str, u16) {
        (self.authority.host(), self.authority.port_u16().unwrap_or(443))
    }

    /// Sends the request to Kong and returns its response head (the body streams on).
    pub async fn forward(
        &self,
        mut req: Request<B>,
        host: Option<Authority>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let authority = match host {
            Some(h) if self.preserve_host => h,
            _ => self.authority.clone(),
        };
        // The host travels in the URI authority only: hyper writes `Host` from it for HTTP/1.1, and h2 sends
        // `:authority` alone (nginx and OpenResty refuse a request carrying both `:authority` and `host`).
        req.headers_mut().remove(http::header::HOST);
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTPS);
        parts.authority = Some(authority);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| UpstreamError::Request(e.to_string()))?;
        *req.version_mut() = Version::HTTP_11;
        let body_fault = req.extensions().get::<BodyFault>().cloned();
        let response =
            tokio::time::timeout(self.timeout, self.client.request(req)).await.map_err(|_| UpstreamError::Timeout)?;
        let mut response = response.map_err(|e| self.classify(e, body_fault.as_ref()))?;
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }

    fn classify(&self, e: hyper_util::client::legacy::Error, body_fault: Option<&BodyFault>) -> UpstreamError {
        match body_fault.and_then(BodyFault::get) {
            Some(BodyFaultKind::TooLarge) => {
                return UpstreamError::BodyTooLarge { limit: self.body_limit.unwrap_or(u64::MAX) };
            }
            Some(BodyFaultKind::Stalled(idle)) => return UpstreamError::BodyStalled { idle },
            None => {}
        }
        let text = crate::auth::fetch::error_chain(&e);
        if e.is_connect() { UpstreamError::Connect(text) } else { UpstreamError::Request(text) }
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Hop-by-hop header names.
pub const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// The innermost service: hands the request to Kong and streams the answer back.
pub struct Forward<B> {
    upstream: Arc<Upstream<B>>,
    metrics: Arc<Metrics>,
}

impl<B> Clone for Forward<B> {
    fn clone(&self) -> Self {
        Forward { upstream: self.upstream.clone(), metrics: self.metrics.clone() }
    }
}

impl<B> Forward<B> {
    /// Over this client.
    pub fn new(upstream: Arc<Upstream<B>>, metrics: Arc<Metrics>) -> Self {
        Forward { upstream, metrics }
    }
}

impl UpstreamError {
    /// The `kind` label of `upstream_errors_total`; `None` for a client's fault (body too large or stalled).
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            UpstreamError::Connect(_) => Some("connect"),
            UpstreamError::Request(_) => Some("request"),
            UpstreamError::Timeout => Some("timeout"),
            UpstreamError::BodyTooLarge { .. } | UpstreamError::BodyStalled { .. } => None,
        }
    }
}

impl<B> tower::Service<Request<B>> for Forward<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = crate::Response;
    type Error = crate::error::Rejection;
    type Future = crate::layer::BoxStepFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let upstream = self.upstream.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let context = RequestContext::of(&req);
            let (mut parts, body) = req.into_parts();
            let host = crate::layer::request_host(&parts);
            context.set_forwarded(true);
            let request_id = parts.extensions.get::<crate::request_id::RequestId>().cloned();
            // With [tracing], Kong's spans join the trace under this one (also when it is not sampled: Kong then
            // records nothing either, and its logs still carry the trace id). The client's own copies of both
            // headers were stripped with the other headers Runway sets.
            let span = context.trace().map(|trace| {
                let (address, port) = upstream.address();
                let span = trace.upstream(&parts.method, address, port);
                parts.headers.insert(TRACEPARENT, span.traceparent());
                if let Some(state) = span.tracestate() {
                    parts.headers.insert(TRACESTATE, state);
                }
                span
            });
            let started = std::time::Instant::now();
            let result = upstream.forward(Request::from_parts(parts, body), host).await;
            if let Some(span) = span {
                match &result {
                    Ok(response) => span.answered(response.status()),
                    Err(e) => span.fail(e.kind().unwrap_or("client_body")),
                }
                span.end();
            }
            match result {
                Ok(response) => {
                    let waited = started.elapsed();
                    metrics.upstream_duration.observe(waited.as_secs_f64());
                    context.set_upstream_wait(waited);
                    let response = response.map(|body| {
                        http_body_util::Either::Left(UpstreamBody {
                            inner: body,
                            metrics: metrics.clone(),
                            request_id: request_id.clone(),
                            stall_after: upstream.timeout,
                            stall: StallTimer::default(),
                        })
                    });
                    Ok(response)
                }
                Err(e) => {
                    let kind = e.kind();
                    if let Some(kind) = kind {
                        metrics.upstream_errors.with_label_values(&[kind]).inc();
                        tracing::warn!(error = %e, "upstream request failed");
                    }
                    if kind.is_none() {
                        // The client's body failed (too large, stalled): a refusal, not Kong's failure on an
                        // allowed request.
                        context.set_forwarded(false);
                    }
                    Err(e.into())
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// Kong's response body, streamed to the client. When it breaks off (Kong reset or closed the connection
    /// mid-response), the error goes on to hyper, which aborts the client's response (no final chunk, or
    /// fewer bytes than `Content-Length`, or an h2 reset) rather than end it as if complete, and the
    /// failure is logged and counted as an upstream `request` error. When Kong sends nothing for
    /// `upstream.timeout` mid-body, the response is aborted the same way and counted as a `timeout`: the head
    /// is already on its way, so a 504 is no longer possible, but the client must not wait forever.
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        metrics: Arc<Metrics>,
        request_id: Option<crate::request_id::RequestId>,
        stall_after: Duration,
        stall: StallTimer,
    }
}

/// Kong sent nothing for `upstream.timeout` in the middle of a response body.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent no response body bytes for {}s", .0.as_secs_f64())]
pub struct UpstreamBodyStalled(Duration);

impl Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let request_id = this.request_id.as_ref().map_or("-", |r| r.as_str());
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.metrics.upstream_errors.with_label_values(&["request"]).inc();
                let error = crate::auth::fetch::error_chain(&e);
                tracing::warn!(request_id, %error, "upstream response broke off mid-body: client response aborted");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending if this.stall.expired(*this.stall_after, cx) => {
                this.metrics.upstream_errors.with_label_values(&["timeout"]).inc();
                let stalled = UpstreamBodyStalled(*this.stall_after);
                tracing::warn!(request_id, error = %stalled, "upstream response stalled mid-body: client response aborted");
                Poll::Ready(Some(Err(Box::new(stalled))))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                this.stall.progress();
                ready.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl From<UpstreamError> for Rejection {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Timeout => Rejection::GatewayTimeout("upstream did not answer in time".into()),
            UpstreamError::BodyTooLarge { limit } => Rejection::PayloadTooLarge { limit },
            UpstreamError::BodyStalled { idle } => Rejection::RequestTimeout { idle },
            UpstreamError::Connect(_) => Rejection::BadGateway("could not connect to the upstream".into()),
            UpstreamError::Request(_) => Rejection::BadGateway("the upstream exchange failed".into()),
        }
    }
}
