//! A real OTLP/HTTP trace receiver on 127.0.0.1 (plain HTTP, as a collector's 4318 listener): accepts
//! `POST /v1/traces` with `application/x-protobuf`, decodes the `ExportTraceServiceRequest` with
//! `opentelemetry-proto` (the types the exporter encodes with), records every span with its resource's
//! `service.name`, and answers an empty `ExportTraceServiceResponse`. It also records the headers of each
//! export request (for `[tracing.headers]`). Stops when dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service.name` of its resource.
    pub service: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root span.
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// `SERVER`, `CLIENT`, `INTERNAL`, ...
    pub kind: String,
    /// Attributes, each value as text (strings as is, integers and booleans by their text).
    pub attributes: BTreeMap<String, String>,
    /// `ERROR`, `OK` or `UNSET`.
    pub status: String,
}

impl Span {
    /// An attribute's value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<Span>>,
    exports: Mutex<Vec<HeaderMap>>,
}

/// The receiver.
pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts listening on 127.0.0.1, port 0.
    pub async fn start() -> OtlpReceiver {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("binding the OTLP receiver: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("OTLP receiver local_addr: {e}"));
        let state = Arc::new(State::default());
        let task = tokio::spawn(super::serve::plain_http(listener, state.clone(), handle));
        OtlpReceiver { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`: the base URL for `[tracing] otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.state.spans.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The headers of every export request received so far.
    pub fn export_headers(&self) -> Vec<HeaderMap> {
        self.state.exports.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }

    /// Waits (at most 15 s) until `trace_id` has a span named `name` and returns the whole trace then.
    pub async fn wait_for(&self, trace_id: &str, name: &str) -> Vec<Span> {
        super::eventually(&format!("span {name:?} of trace {trace_id}"), Duration::from_secs(15), || async {
            let trace = self.trace(trace_id);
            trace.iter().any(|s| s.name == name).then_some(trace)
        })
        .await
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST || req.uri().path() != "/v1/traces" {
        return Ok(reply(StatusCode::NOT_FOUND, Bytes::from_static(b"not found")));
    }
    let is_protobuf = req.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v == "application/x-protobuf");
    state.exports.lock().unwrap_or_else(PoisonError::into_inner).push(req.headers().clone());
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"body"))),
    };
    if !is_protobuf {
        return Ok(reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, Bytes::from_static(b"protobuf only")));
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return Ok(reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"not an ExportTraceServiceRequest")));
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                    .collect();
                let kind = match span.kind {
                    1 => "INTERNAL",
                    2 => "SERVER",
                    3 => "CLIENT",
                    4 => "PRODUCER",
                    5 => "CONSUMER",
                    _ => "UNSPECIFIED",
                };
                let status = match span.status.as_ref().map(|s| s.code) {
                    Some(1) => "OK",
                    Some(2) => "ERROR",
                    _ => "UNSET",
                };
                received.push(Span {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: kind.to_string(),
                    attributes,
                    status: status.to_string(),
                });
            }
        }
    }
    state.spans.lock().unwrap_or_else(PoisonError::into_inner).extend(received);
    let mut response = reply(StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec().into());
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-protobuf"));
    Ok(response)
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}
