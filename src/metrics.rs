//! Prometheus metrics (contract section 6): one struct, built once, registered on an explicit registry,
//! names as constants. Label values are bounded: route and issuer names come from config, statuses are
//! codes, reasons a closed vocabulary; never a subject, a path or a token.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Metric names, without the `runway_` prefix the registry adds.
pub mod names {
    /// Requests by route and status.
    pub const REQUESTS_TOTAL: &str = "requests_total";
    /// Request latency by route.
    pub const REQUEST_DURATION_SECONDS: &str = "request_duration_seconds";
    /// Authentication and policy decisions.
    pub const AUTH_DECISIONS_TOTAL: &str = "auth_decisions_total";
    /// JWKS refreshes by result.
    pub const JWKS_REFRESH_TOTAL: &str = "jwks_refresh_total";
    /// Usable keys per issuer.
    pub const JWKS_KEYS: &str = "jwks_keys";
    /// Last successful JWKS load per issuer.
    pub const JWKS_LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "jwks_last_success_timestamp_seconds";
    /// Time to Kong's response head.
    pub const UPSTREAM_DURATION_SECONDS: &str = "upstream_duration_seconds";
    /// Report-mode refusals, by route and reason.
    pub const WOULD_DENY_TOTAL: &str = "would_deny_total";
    /// Revocations in force.
    pub const REVOCATIONS_ACTIVE: &str = "revocations_active";
    /// Failed exchanges with the shared revocation store.
    pub const REVOCATION_SYNC_ERRORS_TOTAL: &str = "revocation_sync_errors_total";
    /// Runway's own time on a forwarded request.
    pub const PROXY_OVERHEAD_SECONDS: &str = "proxy_overhead_seconds";
    /// Upstream failures by kind.
    pub const UPSTREAM_ERRORS_TOTAL: &str = "upstream_errors_total";
    /// Open client connections.
    pub const CONNECTIONS_ACTIVE: &str = "connections_active";
    /// Failed TLS handshakes.
    pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "tls_handshake_failures_total";
    /// Verified-token cache hits.
    pub const TOKEN_CACHE_HITS_TOTAL: &str = "token_cache_hits_total";
    /// Verified-token cache misses (every full verification).
    pub const TOKEN_CACHE_MISSES_TOTAL: &str = "token_cache_misses_total";
    /// Config reloads by result.
    pub const CONFIG_RELOADS_TOTAL: &str = "config_reloads_total";
    /// Build information.
    pub const BUILD_INFO: &str = "build_info";
    /// Times a request waited for room in the audit queue.
    pub const AUDIT_QUEUE_WAITS_TOTAL: &str = "audit_queue_waits_total";
    /// Audit writes that failed.
    pub const AUDIT_WRITE_ERRORS_TOTAL: &str = "audit_write_errors_total";
    /// Audit events written.
    pub const AUDIT_EVENTS_TOTAL: &str = "audit_events_total";
    /// Requests on `one_time` routes refused because their token's jti was already used.
    pub const REPLAY_REFUSED_TOTAL: &str = "replay_refused_total";
    /// Replay checks the store could not answer (each one a 503).
    pub const REPLAY_STORE_ERRORS_TOTAL: &str = "replay_store_errors_total";
    /// Span batches the trace exporter could not deliver (`[tracing]`).
    pub const TRACE_EXPORT_ERRORS_TOTAL: &str = "trace_export_errors_total";
}

/// Latency buckets: fine below a millisecond (proxy overhead), coarse up to a minute (slow deploys).
/// Runway's own share: tens of microseconds on a cached token, milliseconds when a JWKS or STS call is waited for.
const OVERHEAD_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every metric Runway exports.
pub struct Metrics {
    registry: Registry,
    /// `requests_total{route,status}`.
    pub requests: IntCounterVec,
    /// `request_duration_seconds{route}`.
    pub request_duration: HistogramVec,
    /// `auth_decisions_total{issuer,decision,reason}`.
    pub auth_decisions: IntCounterVec,
    /// `jwks_refresh_total{issuer,result}`.
    pub jwks_refresh: IntCounterVec,
    /// `jwks_keys{issuer}`.
    pub jwks_keys: IntGaugeVec,
    /// `jwks_last_success_timestamp_seconds{issuer}`.
    pub jwks_last_success: IntGaugeVec,
    /// `upstream_duration_seconds`.
    pub upstream_duration: Histogram,
    /// `proxy_overhead_seconds`: Runway's own time on a request that reached Kong (time to the response head
    /// less the wait for Kong's), measured on that request, so it never goes negative as a difference of two
    /// histograms over different requests does.
    pub proxy_overhead: Histogram,
    /// `would_deny_total{route,reason}` (beyond the contract): report-mode refusals per route, the signal that
    /// a route is ready to enforce (`auth_decisions_total` has no route label).
    pub would_deny: IntCounterVec,
    /// `revocations_active`.
    pub revocations_active: IntGauge,
    /// `revocation_sync_errors_total`.
    pub revocation_sync_errors: IntCounter,
    /// `upstream_errors_total{kind}`.
    pub upstream_errors: IntCounterVec,
    /// `connections_active`.
    pub connections_active: IntGauge,
    /// `tls_handshake_failures_total`.
    pub tls_handshake_failures: IntCounter,
    /// `token_cache_hits_total`.
    pub token_cache_hits: IntCounter,
    /// `token_cache_misses_total`.
    pub token_cache_misses: IntCounter,
    /// `config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `audit_queue_waits_total`.
    pub audit_queue_waits: IntCounter,
    /// `audit_write_errors_total`.
    pub audit_write_errors: IntCounter,
    /// `audit_events_total`.
    pub audit_events: IntCounter,
    /// `replay_refused_total`.
    pub replay_refused: IntCounter,
    /// `replay_store_errors_total`.
    pub replay_store_errors: IntCounter,
    /// `trace_export_errors_total`.
    pub trace_export_errors: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("runway")
}

fn histogram(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).namespace("runway").buckets(LATENCY_BUCKETS.to_vec())
}

impl Metrics {
    /// Builds and registers everything.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        use names::*;
        let registry = Registry::new();
        let m = Metrics {
            requests: IntCounterVec::new(
                opts(REQUESTS_TOTAL, "Requests answered, by route and status."),
                &["route", "status"],
            )?,
            request_duration: HistogramVec::new(
                histogram(REQUEST_DURATION_SECONDS, "Time from request to response head, by route."),
                &["route"],
            )?,
            auth_decisions: IntCounterVec::new(
                opts(AUTH_DECISIONS_TOTAL, "Authentication and policy decisions."),
                &["issuer", "decision", "reason"],
            )?,
            jwks_refresh: IntCounterVec::new(
                opts(JWKS_REFRESH_TOTAL, "JWKS loads, by result."),
                &["issuer", "result"],
            )?,
            jwks_keys: IntGaugeVec::new(opts(JWKS_KEYS, "Keys usable with the issuer's algorithms."), &["issuer"])?,
            jwks_last_success: IntGaugeVec::new(
                opts(JWKS_LAST_SUCCESS_TIMESTAMP_SECONDS, "Unix time of the last successful JWKS load."),
                &["issuer"],
            )?,
            upstream_duration: Histogram::with_opts(histogram(
                UPSTREAM_DURATION_SECONDS,
                "Time from forwarding to Kong's response head.",
            ))?,
            proxy_overhead: Histogram::with_opts(
                HistogramOpts::new(
                    PROXY_OVERHEAD_SECONDS,
                    "Runway's own time on a forwarded request: time to the response head less Kong's.",
                )
                .namespace("runway")
                .buckets(OVERHEAD_BUCKETS.to_vec()),
            )?,
            would_deny: IntCounterVec::new(
                opts(WOULD_DENY_TOTAL, "Report-mode refusals (forwarded anyway), by route and reason."),
                &["route", "reason"],
            )?,
            revocations_active: IntGauge::with_opts(opts(REVOCATIONS_ACTIVE, "Revocations in force."))?,
            revocation_sync_errors: IntCounter::with_opts(opts(
                REVOCATION_SYNC_ERRORS_TOTAL,
                "Failed exchanges with the shared (Redis) revocation store.",
            ))?,
            upstream_errors: IntCounterVec::new(opts(UPSTREAM_ERRORS_TOTAL, "Upstream failures, by kind."), &["kind"])?,
            connections_active: IntGauge::with_opts(opts(CONNECTIONS_ACTIVE, "Client connections open."))?,
            tls_handshake_failures: IntCounter::with_opts(opts(
                TLS_HANDSHAKE_FAILURES_TOTAL,
                "Failed TLS handshakes.",
            ))?,
            token_cache_hits: IntCounter::with_opts(opts(
                TOKEN_CACHE_HITS_TOTAL,
                "Tokens served from the verified-token cache.",
            ))?,
            token_cache_misses: IntCounter::with_opts(opts(TOKEN_CACHE_MISSES_TOTAL, "Tokens fully verified."))?,
            config_reloads: IntCounterVec::new(
                opts(CONFIG_RELOADS_TOTAL, "Configuration reloads, by result."),
                &["result"],
            )?,
            audit_queue_waits: IntCounter::with_opts(opts(
                AUDIT_QUEUE_WAITS_TOTAL,
                "Requests that waited for room in the audit queue.",
            ))?,
            audit_write_errors: IntCounter::with_opts(opts(AUDIT_WRITE_ERRORS_TOTAL, "Audit writes that failed."))?,
            audit_events: IntCounter::with_opts(opts(AUDIT_EVENTS_TOTAL, "Audit events written."))?,
            replay_refused: IntCounter::with_opts(opts(
                REPLAY_REFUSED_TOTAL,
                "Requests on one_time routes refused because the token's jti was already used.",
            ))?,
            replay_store_errors: IntCounter::with_opts(opts(
                REPLAY_STORE_ERRORS_TOTAL,
                "Replay checks the store could not answer (each answered 503).",
            ))?,
            trace_export_errors: IntCounter::with_opts(opts(
                TRACE_EXPORT_ERRORS_TOTAL,
                "Span batches the trace exporter could not deliver (after its retries); their spans are lost.",
            ))?,
            registry,
        };
        let build_info = IntGaugeVec::new(opts(BUILD_INFO, "Build information."), &["version"])?;
        build_info.with_label_values(&[crate::VERSION]).set(1);
        let r = &m.registry;
        r.register(Box::new(build_info))?;
        r.register(Box::new(m.requests.clone()))?;
        r.register(Box::new(m.request_duration.clone()))?;
        r.register(Box::new(m.auth_decisions.clone()))?;
        r.register(Box::new(m.jwks_refresh.clone()))?;
        r.register(Box::new(m.jwks_keys.clone()))?;
        r.register(Box::new(m.jwks_last_success.clone()))?;
        r.register(Box::new(m.upstream_duration.clone()))?;
        r.register(Box::new(m.proxy_overhead.clone()))?;
        r.register(Box::new(m.upstream_errors.clone()))?;
        r.register(Box::new(m.would_deny.clone()))?;
        r.register(Box::new(m.revocations_active.clone()))?;
        r.register(Box::new(m.revocation_sync_errors.clone()))?;
        r.register(Box::new(m.connections_active.clone()))?;
        r.register(Box::new(m.tls_handshake_failures.clone()))?;
        r.register(Box::new(m.token_cache_hits.clone()))?;
        r.register(Box::new(m.token_cache_misses.clone()))?;
        r.register(Box::new(m.config_reloads.clone()))?;
        r.register(Box::new(m.audit_queue_waits.clone()))?;
        r.register(Box::new(m.audit_write_errors.clone()))?;
        r.register(Box::new(m.audit_events.clone()))?;
        r.register(Box::new(m.replay_refused.clone()))?;
        r.register(Box::new(m.replay_store_errors.clone()))?;
        r.register(Box::new(m.trace_export_errors.clone()))?;
        // Series that alerting rules read from the start, so "absent" never hides "zero".
        for result in ["ok", "error"] {
            m.config_reloads.with_label_values(&[result]);
        }
        for kind in ["connect", "request", "timeout"] {
            m.upstream_errors.with_label_values(&[kind]);
        }
        Ok(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Drops the key series of an issuer a reload removed, so dashboards and the stale-keys alert do not keep
    /// reporting an issuer that no longer exists.
    pub fn forget_issuer(&self, issuer: &str) {
        let _ = self.jwks_keys.remove_label_values(&[issuer]);
        let _ = self.jwks_last_success.remove_label_values(&[issuer]);
        for result in ["ok", "error"] {
            let _ = self.jwks_refresh.remove_label_values(&[issuer, result]);
        }
    }

    /// Records the state of an issuer's keys after a load attempt.
    pub fn jwks_loaded(&self, issuer: &str, result: Result<usize, ()>) {
        match result {
            Ok(keys) => {
                self.jwks_refresh.with_label_values(&[issuer, "ok"]).inc();
                self.jwks_keys.with_label_values(&[issuer]).set(i64::try_from(keys).unwrap_or(i64::MAX));
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                self.jwks_last_success.with_label_values(&[issuer]).set(now);
            }
            Err(()) => self.jwks_refresh.with_label_values(&[issuer, "error"]).inc(),
        }
    }
}
