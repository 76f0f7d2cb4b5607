//! Export: finished spans go into a bounded queue (a full queue drops the span, it never makes a request wait),
//! leave in batches from the OpenTelemetry SDK's own thread, and are POSTed to `{otlp_endpoint}/v1/traces` as
//! OTLP/HTTP protobuf by `opentelemetry-otlp`, over Runway's own hyper + rustls (aws-lc-rs) client: no second
//! HTTP or TLS stack (no reqwest, ring or OpenSSL). A batch that cannot be delivered, after the exporter's
//! retries, is dropped, counted in `runway_trace_export_errors_total`, and logged once per run of failures.
//!
//! Batching: every `SCHEDULE_DELAY` or `MAX_EXPORT_BATCH` spans, whichever comes first, from a queue of
//! `MAX_QUEUE` spans; the standard `OTEL_BSP_*` variables override these. `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TRACES_HEADERS` and `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` are read by the exporter;
//! `[tracing.headers]` wins over them for a header both set, and `OTEL_RESOURCE_ATTRIBUTES` adds to the resource.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use crate::config::{ExportHeaders, TracingConfig};
use crate::metrics::Metrics;

/// Longest a finished span waits in the queue before its batch leaves: about a second from a request to its
/// trace in the collector, and one export a second at most when traffic is light.
pub const SCHEDULE_DELAY: Duration = Duration::from_secs(1);
/// Spans queued at most; past that new spans are dropped (about 8 MiB of span data).
pub const MAX_QUEUE: usize = 8192;
/// Spans per export request; a full batch leaves at once.
pub const MAX_EXPORT_BATCH: usize = 512;
/// One export request, connection and answer included.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest collector answer read (an OTLP answer is a few bytes, or a partial-success message).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long a shutdown waits for the last batch.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The system roots, for an https collector.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The OTLP exporter refused its configuration.
    #[error("the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The provider of one `[tracing]` config: its batch thread and exporter. Dropping it flushes and stops them
/// on a thread of its own, so that whoever drops the last reference (a request on a Tokio worker, after a
/// reload) never blocks on the collector.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// The exporter, its batch processor, and the tracer that feeds them.
    pub(super) fn start(
        config: &TracingConfig,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Result<(Export, SdkTracer), TracingError> {
        let client = ExportClient::new(runtime, config.headers.clone())?;
        let otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.traces_url.to_string())
            .with_http_client(client)
            .build()?;
        let exporter = Counted {
            inner: otlp,
            errors: metrics.trace_export_errors.clone(),
            failing: AtomicBool::new(false),
            endpoint: config.traces_url.to_string(),
        };
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch_config()).build();
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", crate::VERSION))
            .build();
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder("runway").with_version(crate::VERSION).build();
        let tracer = provider.tracer_with_scope(scope);
        Ok((Export { provider }, tracer))
    }

    /// Exports what is queued and stops (blocking: call it off the async workers).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::debug!(error = %e, "trace exporter shutdown");
        }
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        let provider = self.provider.clone();
        // The SDK's shutdown waits for the last export: never on the thread that happens to drop this.
        let spawned = std::thread::Builder::new().name("runway-trace-flush".into()).spawn(move || {
            let _ = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start a thread to flush the trace exporter; its spans are lost");
        }
    }
}

/// Runway's batching defaults, each unless its `OTEL_BSP_*` variable is set (the SDK reads those).
fn batch_config() -> opentelemetry_sdk::trace::BatchConfig {
    let unset = |name: &str| std::env::var_os(name).is_none_or(|v| v.is_empty());
    let mut batch = BatchConfigBuilder::default();
    if unset(OTEL_BSP_SCHEDULE_DELAY) {
        batch = batch.with_scheduled_delay(SCHEDULE_DELAY);
    }
    if unset(OTEL_BSP_MAX_QUEUE_SIZE) {
        batch = batch.with_max_queue_size(MAX_QUEUE);
    }
    if unset(OTEL_BSP_MAX_EXPORT_BATCH_SIZE) {
        batch = batch.with_max_export_batch_size(MAX_EXPORT_BATCH);
    }
    batch.build()
}

/// The OTLP exporter, counting and logging the batches it fails to deliver.
#[derive(Debug)]
struct Counted {
    inner: opentelemetry_otlp::SpanExporter,
    errors: prometheus::IntCounter,
    failing: AtomicBool,
    endpoint: String,
}

impl SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "trace export works again");
                }
            }
            Err(e) => {
                self.errors.inc();
                // Once per run of failures: a collector that is down would otherwise log every second.
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(endpoint = %self.endpoint, spans, error = %e, "trace export failed; spans are dropped until the collector answers");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter's HTTP client: hyper over rustls with the aws-lc-rs provider and the system roots (the client
/// the key fetcher uses), plus `[tracing.headers]`. The SDK calls it from its batch thread, outside Tokio, so
/// each request runs as a task on Runway's runtime and the batch thread waits for its answer.
#[derive(Debug, Clone)]
struct ExportClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    headers: ExportHeaders,
}

impl ExportClient {
    fn new(runtime: tokio::runtime::Handle, headers: ExportHeaders) -> Result<ExportClient, TracingError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(EXPORT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::public_client_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(ExportClient { client: Client::builder(TokioExecutor::new()).build(https), runtime, headers })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut request = request.map(Full::new);
        for (name, value) in &self.headers.0 {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let client = self.client.clone();
        let exchange = async move {
            let deadline = tokio::time::Instant::now() + EXPORT_TIMEOUT;
            let response = tokio::time::timeout_at(deadline, client.request(request))
                .await
                .map_err(|_| HttpError::from("the collector did not answer in time"))??;
            let (parts, body) = response.into_parts();
            let body = tokio::time::timeout_at(deadline, Limited::new(body, MAX_ANSWER_BYTES).collect())
                .await
                .map_err(|_| HttpError::from("the collector's answer did not arrive in time"))??
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        self.runtime.spawn(exchange).await?
    }
}
