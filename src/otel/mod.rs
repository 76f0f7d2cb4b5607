//! Traces (contract section 12): OpenTelemetry spans for each request and its steps, and the W3C trace context
//! Kong receives. This module owns the tracer of a `[tracing]` config ([`Tracing`]), the trace a request's
//! context carries ([`RequestTrace`]) and the spans of its steps ([`StepSpan`]); [`export`] sends finished spans
//! to the collector and [`propagation`] reads a trusted caller's `traceparent` and writes Runway's.
//!
//! Spans are made with the OpenTelemetry API directly, not through the `tracing` crate: the request path never
//! formats a log event into a span, and without `[tracing]` no span is made at all (each step checks one
//! `Option`). A request whose trace is not sampled makes only two non-recording spans, its server span and the
//! upstream span whose id Kong receives (ids, no attributes, nothing queued); step spans are made for recorded
//! traces only.
//!
//! One trace per request: a SERVER span (HTTP semantic conventions: `http.request.method`, `http.route` = the
//! route's name, `http.response.status_code`, `url.path` without the query, `url.scheme`, `server.address`,
//! `network.protocol.version`, `client.address`; and `runway.decision`, `runway.reason`, `runway.issuer`,
//! `runway.token_sha256`, `runway.request_id`), ended when the response head exists, with the children the
//! request went through: `verify` (and under it a CLIENT span `jwks fetch`, `oidc discovery` or
//! `sts GetCallerIdentity` when the request itself waits for that call), `policy`, `replay`, `assertion`, and
//! `upstream` (CLIENT, the call to Kong). A fetch started by a background refresh belongs to no request and
//! makes no span. Attributes never hold a token (only its fingerprint) or a query string.

pub mod export;
pub mod propagation;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, StatusCode, Version};
use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, TraceId, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

use crate::config::TracingConfig;
use crate::metrics::Metrics;

pub use export::TracingError;

/// Attribute names: the HTTP semantic conventions' and Runway's own (contract section 12).
pub mod attr {
    /// Request method.
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    /// The route's name (Runway's routes are named, not templated).
    pub const HTTP_ROUTE: &str = "http.route";
    /// Response status.
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// Request path, never the query.
    pub const URL_PATH: &str = "url.path";
    /// A CLIENT span's URL, never with its query.
    pub const URL_FULL: &str = "url.full";
    /// Always `https` on the listener.
    pub const URL_SCHEME: &str = "url.scheme";
    /// The host asked for (server span) or called (client spans).
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The port called (client spans).
    pub const SERVER_PORT: &str = "server.port";
    /// `1.1` or `2`.
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
    /// The TCP peer.
    pub const CLIENT_ADDRESS: &str = "client.address";
    /// Why an operation failed, a short class.
    pub const ERROR_TYPE: &str = "error.type";
    /// The issuer's name.
    pub const RUNWAY_ISSUER: &str = "runway.issuer";
    /// `allow`, `deny` or `would_deny`.
    pub const RUNWAY_DECISION: &str = "runway.decision";
    /// The closed-vocabulary reason of a refusal (`none` on allow).
    pub const RUNWAY_REASON: &str = "runway.reason";
    /// First 16 hex digits of the SHA-256 of the presented token.
    pub const RUNWAY_TOKEN_SHA256: &str = "runway.token_sha256";
    /// The request id echoed to the client.
    pub const RUNWAY_REQUEST_ID: &str = "runway.request_id";
}

/// The tracer of one `[tracing]` config and the export behind it. Kept across a reload that exports the same
/// way; a replaced one flushes what it holds and stops (see [`export::Export`]).
pub struct Tracing {
    config: TracingConfig,
    tracer: SdkTracer,
    export: Arc<export::Export>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").field("traces_url", &self.config.traces_url).finish()
    }
}

impl Tracing {
    /// Starts the exporter (its batch thread; no connection is made until the first batch) and the tracer.
    /// Exports run on `runtime`, the one Runway serves on.
    pub fn start(
        config: &TracingConfig,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Tracing>, TracingError> {
        let (export, tracer) = export::Export::start(config, metrics, runtime)?;
        Ok(Arc::new(Tracing { config: config.clone(), tracer, export: Arc::new(export) }))
    }

    /// The config it was started from.
    pub fn config(&self) -> &TracingConfig {
        &self.config
    }

    /// The trace of a request arriving from `peer`: it continues the caller's trace when `trust_caller` and the
    /// request carries a valid `traceparent`, and starts a new one otherwise.
    pub fn request<B>(&self, req: &Request<B>, peer: SocketAddr, trust_caller: bool, request_id: &str) -> RequestTrace {
        let parent = match trust_caller {
            true => propagation::extract(req.headers()),
            false => Context::new(),
        };
        let builder = SpanBuilder::from_name(method_name(req.method())).with_kind(SpanKind::Server);
        let span = self.tracer.build_with_context(builder, &parent);
        let recording = span.is_recording();
        let mut cx = parent.with_span(span);
        if recording {
            let span = cx.span();
            span.set_attributes(server_attributes(req, peer, request_id));
            // Nested calls (key fetches, STS) find the tracer here, through the verify span's context.
            cx = cx.with_value(ChildTracer(self.tracer.clone()));
        }
        RequestTrace { tracer: self.tracer.clone(), cx, recording }
    }

    /// Exports what is queued and stops the exporter (at shutdown), waiting at most for the export timeout.
    pub async fn shutdown(&self) {
        let export = self.export.clone();
        let _ = tokio::task::spawn_blocking(move || export.shutdown()).await;
    }
}

/// The tracer, carried in the OpenTelemetry context of a recorded request so that code without the request's
/// context (the key fetcher, the STS client) can open a child span of the step it runs under.
#[derive(Clone)]
struct ChildTracer(SdkTracer);

/// One request's trace: its server span (in an OpenTelemetry context, the parent of every step span).
pub struct RequestTrace {
    tracer: SdkTracer,
    cx: Context,
    recording: bool,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace").field("trace_id", &self.trace_id()).field("recording", &self.recording).finish()
    }
}

impl RequestTrace {
    /// The trace id (also when the trace is not sampled: Kong and the audit event still get it).
    pub fn trace_id(&self) -> TraceId {
        self.cx.span().span_context().trace_id()
    }

    /// The trace id as the audit log and logs write it: 32 lowercase hex digits; `None` when there is no valid
    /// one (a request that began as its tracer was being replaced).
    pub fn trace_id_hex(&self) -> Option<String> {
        let id = self.trace_id();
        (id != TraceId::INVALID).then(|| id.to_string())
    }

    /// A step's span (INTERNAL), for recorded traces only.
    pub fn step(&self, name: &'static str) -> Option<StepSpan> {
        self.recording.then(|| StepSpan::start(&self.tracer, name, SpanKind::Internal, &self.cx))
    }

    /// The span of the call to Kong (CLIENT), made also for an unsampled trace: its id is the parent Kong's
    /// spans name in the `traceparent` Runway sends.
    pub fn upstream(&self, method: &Method, address: &str, port: u16) -> StepSpan {
        let span = StepSpan::start(&self.tracer, "upstream", SpanKind::Client, &self.cx);
        span.set_all(|| {
            [
                KeyValue::new(attr::HTTP_REQUEST_METHOD, method_name(method)),
                KeyValue::new(attr::SERVER_ADDRESS, address.to_string()),
                KeyValue::new(attr::SERVER_PORT, i64::from(port)),
            ]
        });
        span
    }

    /// Ends the server span once the response head exists, with what was decided.
    pub fn finish(&self, outcome: Outcome<'_>) {
        let span = self.cx.span();
        if self.recording {
            let method = span_method(outcome.method);
            if let Some(route) = outcome.route {
                span.update_name(format!("{method} {route}"));
                span.set_attribute(KeyValue::new(attr::HTTP_ROUTE, route.to_string()));
            }
            span.set_attribute(KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(outcome.status.as_u16())));
            span.set_attribute(KeyValue::new(attr::RUNWAY_DECISION, outcome.decision));
            if let Some(reason) = outcome.reason {
                span.set_attribute(KeyValue::new(attr::RUNWAY_REASON, reason));
            }
            if let Some(issuer) = outcome.issuer {
                span.set_attribute(KeyValue::new(attr::RUNWAY_ISSUER, issuer.to_string()));
            }
            if let Some(fingerprint) = outcome.token_sha256 {
                span.set_attribute(KeyValue::new(attr::RUNWAY_TOKEN_SHA256, fingerprint.to_string()));
            }
            // HTTP semantic conventions: a server span is an error for 5xx only (a 4xx is the client's).
            if outcome.status.is_server_error() {
                span.set_attribute(KeyValue::new(attr::ERROR_TYPE, outcome.status.as_str().to_string()));
                span.set_status(Status::error(""));
            }
        }
        span.end();
    }
}

/// What the server span records when the request ends.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The route's name, when one matched.
    pub route: Option<&'a str>,
    /// The status sent.
    pub status: StatusCode,
    /// `allow`, `deny` or `would_deny`.
    pub decision: &'static str,
    /// The reason of a refusal or would-deny.
    pub reason: Option<&'static str>,
    /// The issuer, when one was involved.
    pub issuer: Option<&'a str>,
    /// The token's fingerprint, when one was presented.
    pub token_sha256: Option<&'a str>,
}

/// A span of one step (or one call a step waits for), in an OpenTelemetry context so that what runs under it can
/// open children. Ends when [`StepSpan::end`] is called or when dropped (a request cut short by its timeout).
pub struct StepSpan {
    cx: Context,
}

impl StepSpan {
    fn start(tracer: &SdkTracer, name: &'static str, kind: SpanKind, parent: &Context) -> StepSpan {
        let span = tracer.build_with_context(SpanBuilder::from_name(name).with_kind(kind), parent);
        StepSpan { cx: parent.with_span(span) }
    }

    /// A child of the step the caller runs under (see [`StepSpan::context`]), when that step is recorded: for
    /// code that has no request context, such as the key fetcher and the STS client.
    pub fn child_of_current(name: &'static str, kind: SpanKind) -> Option<StepSpan> {
        Context::map_current(|cx| {
            let tracer = cx.get::<ChildTracer>()?;
            cx.span().is_recording().then(|| StepSpan::start(&tracer.0, name, kind, cx))
        })
    }

    /// Whether it records (attributes are worth building).
    pub fn is_recording(&self) -> bool {
        self.cx.span().is_recording()
    }

    /// Sets attributes, built only when the span records.
    pub fn set_all<I: IntoIterator<Item = KeyValue>>(&self, attributes: impl FnOnce() -> I) {
        let span = self.cx.span();
        if span.is_recording() {
            span.set_attributes(attributes());
        }
    }

    /// Sets one attribute.
    pub fn set(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Records an access decision of this step: `allow`, `deny` or `would_deny`, and the reason of a refusal.
    pub fn decision(&self, decision: &'static str, reason: &'static str) {
        self.set_all(|| [KeyValue::new(attr::RUNWAY_DECISION, decision), KeyValue::new(attr::RUNWAY_REASON, reason)]);
    }

    /// Marks the operation failed, with a short class of why (`error.type`: a kind such as `timeout`, or an
    /// HTTP status code).
    pub fn fail(&self, error_type: impl Into<Cow<'static, str>>) {
        let span = self.cx.span();
        if span.is_recording() {
            let error_type = error_type.into();
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type.clone()));
            span.set_status(Status::error(error_type));
        }
    }

    /// Records the HTTP status a CLIENT span's call was answered with; 4xx and 5xx mark it failed (HTTP semantic
    /// conventions for client spans).
    pub fn answered(&self, status: StatusCode) {
        if self.is_recording() {
            self.set(KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16())));
            if status.is_client_error() || status.is_server_error() {
                self.fail(status.as_u16().to_string());
            }
        }
    }

    /// The context to run nested work under (`opentelemetry::context::FutureExt::with_context`), so that
    /// [`StepSpan::child_of_current`] finds this span.
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// W3C `traceparent` naming this span.
    pub fn traceparent(&self) -> HeaderValue {
        propagation::traceparent(self.cx.span().span_context())
    }

    /// W3C `tracestate` of the trace (a trusted caller's), when it has one.
    pub fn tracestate(&self) -> Option<HeaderValue> {
        propagation::tracestate(self.cx.span().span_context())
    }

    /// Ends the span now.
    pub fn end(self) {
        self.cx.span().end();
    }
}

/// The method as a span name or attribute value, without an allocation for the usual ones.
fn method_name(method: &Method) -> Cow<'static, str> {
    match *method {
        Method::GET => Cow::Borrowed("GET"),
        Method::POST => Cow::Borrowed("POST"),
        Method::PUT => Cow::Borrowed("PUT"),
        Method::PATCH => Cow::Borrowed("PATCH"),
        Method::DELETE => Cow::Borrowed("DELETE"),
        Method::HEAD => Cow::Borrowed("HEAD"),
        Method::OPTIONS => Cow::Borrowed("OPTIONS"),
        _ => Cow::Owned(method.as_str().to_string()),
    }
}

/// The method in a span name: HTTP semantic conventions name unknown methods `HTTP` (the attribute keeps it).
fn span_method(method: &Method) -> &str {
    match method_name(method) {
        Cow::Borrowed(known) => known,
        Cow::Owned(_) => "HTTP",
    }
}

fn server_attributes<B>(req: &Request<B>, peer: SocketAddr, request_id: &str) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(8);
    attributes.push(KeyValue::new(attr::HTTP_REQUEST_METHOD, method_name(req.method())));
    attributes.push(KeyValue::new(attr::URL_SCHEME, "https"));
    attributes.push(KeyValue::new(attr::URL_PATH, req.uri().path().to_string()));
    let version = match req.version() {
        Version::HTTP_2 => "2",
        Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    attributes.push(KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, version));
    // The host asked for, without its port: the URI's authority (h2) or the Host header.
    let host = match req.uri().authority() {
        Some(authority) => Some(authority.host().to_string()),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_string()),
    };
    if let Some(host) = host {
        attributes.push(KeyValue::new(attr::SERVER_ADDRESS, host));
    }
    attributes.push(KeyValue::new(attr::CLIENT_ADDRESS, peer.ip().to_string()));
    attributes.push(KeyValue::new(attr::RUNWAY_REQUEST_ID, request_id.to_string()));
    attributes
}
