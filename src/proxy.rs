//! The request pipeline, composed in one place. Read top to bottom: this is the order every request takes.
//! Also the [`Runtime`]: everything built from one config (TLS, routes, issuers, the upstream client).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use tower::ServiceBuilder;

use crate::admin::access::AdminAccess;
use crate::assertion::{AssertionError, AssertionLayer, Assertions};
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::auth::fetch::Fetcher;
use crate::auth::layer::AuthLayer;
use crate::body::RequestBody;
use crate::config::Config;
use crate::forward::{Forward, Upstream};
use crate::headers::{IdentityHeadersLayer, Protected, SanitizeLayer};
use crate::layer::{Inner, RescueLayer};
use crate::limit::{BodyLimitLayer, CappedBody, RequestTimeoutLayer};
use crate::metrics::Metrics;
use crate::observe::ObserveLayer;
use crate::otel::Tracing;
use crate::overload::{Capacity, ShedLayer};
use crate::policy::layer::PolicyLayer;
use crate::replay::layer::{Replay, ReplayLayer};
use crate::request_id::RequestIdLayer;
use crate::revoke::Revocations;
use crate::revoke::layer::RevocationLayer;
use crate::routing::RouteTable;
use crate::routing::layer::RouteLayer;
use crate::tls::{self, TlsError};

/// What a config could not be turned into.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Certificates or keys.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A JWKS file.
    #[error("{key}")]
    Jwks {
        /// Config key.
        key: String,
        /// What is wrong.
        source: crate::auth::jwks::JwksError,
    },
    /// An aws issuer's `sts_ca`.
    #[error(transparent)]
    Aws(#[from] crate::auth::aws::AwsBuildError),
    /// The `[assertion]` key file.
    #[error("assertion.key")]
    Assertion(#[source] AssertionError),
    /// `admin.token_file`.
    #[error("admin.token_file")]
    AdminToken(#[source] crate::admin::access::TokenFileError),
    /// The `[replay]` store: its error names the key at fault (`replay.redis_ca`, ...).
    #[error(transparent)]
    Replay(#[from] crate::replay::redis::ClientError),
    /// The `[tracing]` exporter.
    #[error("tracing")]
    Tracing(#[source] crate::otel::TracingError),
}

/// Everything built from one config.
pub struct Runtime {
    /// The config.
    pub config: Config,
    /// The listener's TLS config.
    pub tls: Arc<rustls::ServerConfig>,
    /// Compiled routes.
    pub routes: Arc<RouteTable>,
    /// Issuers and their keys.
    pub auth: Arc<Authenticator>,
    /// The client towards Kong.
    pub upstream: Arc<Upstream<CappedBody<RequestBody>>>,
    /// Metrics and the audit log.
    pub telemetry: Telemetry,
    /// The replay check, when a route is `one_time`.
    pub replay: Option<Arc<Replay>>,
    /// The identity assertion, when `[assertion]` is set.
    pub assertion: Option<Arc<Assertions>>,
    /// The tracer, when `[tracing]` is set and requests are served (never for `runway check` or `explain`).
    pub tracing: Option<Arc<Tracing>>,
    /// Connections open at once (`server.max_connections`); shared with the configs before and after this one.
    pub connections: Arc<Capacity>,
    /// Requests in flight (`server.max_concurrent_requests`); shared like `connections`.
    pub in_flight: Arc<Capacity>,
    /// Who may call the state-changing admin endpoints.
    pub admin_access: AdminAccess,
    /// Revocations in force; kept across reloads that keep the `[replay]` store.
    pub revocations: Arc<Revocations>,
    audit_claims: Arc<[String]>,
    protected_headers: Protected,
}

/// Process-wide observability handles: they outlive any one config.
#[derive(Clone)]
pub struct Telemetry {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The audit log; `None` where nothing is served (`runway check`).
    pub audit: Option<AuditLog>,
    /// The runtime trace exports run on; `None` where nothing is served (`runway check`, `runway explain`),
    /// which then start no exporter and make no span.
    pub export_runtime: Option<tokio::runtime::Handle>,
}

impl Runtime {
    /// Builds it: reads every file the config names, contacts no network.
    pub fn build(config: Config, telemetry: Telemetry) -> Result<Runtime, BuildError> {
        Self::build_with(config, telemetry, None)
    }

    /// Builds the runtime that will replace `previous` (a reload): what must outlive a config is carried over
    /// (issuer keys still valid, the replay store's used token ids, the connection and request bounds, whose
    /// sizes the caller adjusts when it swaps); everything else is built anew from the files.
    pub fn rebuild(config: Config, previous: &Runtime) -> Result<Runtime, BuildError> {
        Self::build_with(config, previous.telemetry.clone(), Some(previous))
    }

    fn build_with(config: Config, telemetry: Telemetry, previous: Option<&Runtime>) -> Result<Runtime, BuildError> {
        let tls = tls::server_config(&config.server)?;
        let admin_access = AdminAccess::load(config.admin.token_file.as_deref()).map_err(BuildError::AdminToken)?;
        let upstream = Upstream::new(&config.upstream, config.server.max_body_bytes)?;
        let fetcher = Fetcher::new(tls::public_client_config()?);
        let auth = Authenticator::new(
            &config.issuers,
            &fetcher,
            telemetry.metrics.clone(),
            config.server.token_cache_size,
            previous.map(|p| &*p.auth),
        )
        .map_err(|(name, source)| {
            let index = config.issuers.iter().position(|i| i.name == name).unwrap_or(0);
            BuildError::Jwks { key: format!("issuers[{index}].jwks_file"), source }
        })?;
        let auth = auth.with_aws(crate::auth::aws::AwsIssuers::new(&config.issuers, telemetry.metrics.clone())?);
        let assertion = match &config.assertion {
            Some(a) => Some(Arc::new(Assertions::load(a, &config.audit.claims).map_err(BuildError::Assertion)?)),
            None => None,
        };
        // Contacts nothing yet: a Redis store connects on first use.
        let replay = match config.routes.iter().any(|r| r.one_time) {
            true => {
                let kept = previous
                    .filter(|p| p.config.replay == config.replay)
                    .and_then(|p| p.replay.as_ref())
                    .map(|r| r.store());
                let store = match kept {
                    Some(store) => store,
                    None => crate::replay::store(&config.replay)?,
                };
                Some(Arc::new(Replay::new(store, &config, telemetry.metrics.clone())))
            }
            false => None,
        };
        let revocations = match previous.filter(|p| p.revocations.same_store(&config.replay)) {
            Some(previous) => previous.revocations.clone(),
            None => Arc::new(Revocations::new(&config.replay, telemetry.metrics.clone())),
        };
        // Kept across a reload that exports the same way (its queue and connection too); else a new one, and the
        // old one flushes and stops when the last request on the old config ends.
        let tracing = match (&config.tracing, &telemetry.export_runtime) {
            (Some(wanted), Some(runtime)) => {
                let kept = previous.and_then(|p| p.tracing.clone()).filter(|t| t.config().same_export(wanted));
                match kept {
                    Some(tracing) => Some(tracing),
                    None => Some(
                        Tracing::start(wanted, telemetry.metrics.clone(), runtime.clone())
                            .map_err(BuildError::Tracing)?,
                    ),
                }
            }
            _ => None,
        };
        let (connections, in_flight) = match previous {
            Some(p) => (p.connections.clone(), p.in_flight.clone()),
            None => {
                (Capacity::new(config.server.max_connections), Capacity::new(config.server.max_concurrent_requests))
            }
        };
        Ok(Runtime {
            connections,
            in_flight,
            admin_access,
            revocations,
            replay,
            assertion,
            tracing,
            routes: Arc::new(RouteTable::new(&config.routes)),
            auth: Arc::new(auth),
            upstream: Arc::new(upstream),
            audit_claims: config.audit.claims.clone().into(),
            protected_headers: Protected::from_config(&config),
            telemetry,
            tls,
            config,
        })
    }

    /// The pipeline for one connection from `peer`, ending in Kong.
    pub fn stack(
        &self,
        peer: SocketAddr,
    ) -> impl tower::Service<
        Request<RequestBody>,
        Response = crate::Response,
        Error = Infallible,
        Future: Send + 'static,
    >
    + Clone
    + Send
    + 'static
    + use<> {
        self.pipeline(peer, Forward::new(self.upstream.clone(), self.telemetry.metrics.clone()))
    }

    /// The pipeline with any last step in place of the forwarder (`runway explain` records what Kong would
    /// get): every request, proxied or explained, goes through these same steps in this order.
    pub fn pipeline<B, T>(
        &self,
        peer: SocketAddr,
        last: T,
    ) -> impl tower::Service<Request<B>, Response = crate::Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
    + use<B, T>
    where
        B: Send + 'static,
        T: Inner<CappedBody<B>>,
    {
        self.pipeline_with(peer, last, self.replay.clone())
    }

    /// [`Runtime::pipeline`] with another replay check (`runway explain` uses a private one).
    pub fn pipeline_with<B, T>(
        &self,
        peer: SocketAddr,
        last: T,
        replay: Option<Arc<Replay>>,
    ) -> impl tower::Service<Request<B>, Response = crate::Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
    + use<B, T>
    where
        B: Send + 'static,
        T: Inner<CappedBody<B>>,
    {
        let server = &self.config.server;
        // A caller's trace context is believed from a trusted proxy, or from anyone when the config says so.
        let trust_caller_trace = self.config.tracing.as_ref().is_some_and(|t| t.trust_client_context)
            || crate::headers::is_trusted(peer.ip(), &server.trusted_proxies);
        ServiceBuilder::new()
            // Outermost, so every response (Runway's own included) carries the id.
            .layer(RequestIdLayer)
            // Sees every outcome, Runway's own refusals included: metrics, audit event, request span, and with
            // [tracing] the server span (reading a trusted caller's traceparent before the strip below). Makes
            // the request's context, which every step below fills in.
            .layer(
                ObserveLayer::new(
                    self.telemetry.metrics.clone(),
                    self.telemetry.audit.clone(),
                    self.audit_claims.clone(),
                    peer,
                )
                .traced(self.tracing.clone(), trust_caller_trace),
            )
            // The one place a refusal of any step below becomes its response.
            .layer(RescueLayer)
            // 503 above the in-flight bound: before any work is spent on a request that will be shed.
            .layer(ShedLayer::new(self.in_flight.clone()))
            // The whole exchange, Kong included, up to the response head.
            .layer(RequestTimeoutLayer::new(server.request_timeout))
            // Spoofable headers go before anything reads a header; the credential is lifted out.
            .layer(SanitizeLayer::new(peer, &server.trusted_proxies, self.protected_headers.clone()))
            // 400/404/405 never depend on the token.
            .layer(RouteLayer::new(self.routes.clone()))
            // 401/503: who is this?
            .layer(AuthLayer::new(self.auth.clone()))
            // 401 "token revoked": on the verified identity, cached tokens included.
            .layer(RevocationLayer::new(self.revocations.clone()))
            // 403: may they?
            .layer(PolicyLayer)
            // 413/408: only authorised bodies are read at all.
            .layer(BodyLimitLayer::new(server.max_body_bytes, server.header_read_timeout))
            // 401/503 on one_time routes: after policy (only an allowed request uses its jti up) and after a
            // declared Content-Length over the cap (a 413 does not burn it either).
            .layer(ReplayLayer::new(replay))
            // What Runway vouches for.
            .layer(IdentityHeadersLayer)
            // ...and signs, for Kong's jwt plugin: replaces the client's copy of the header.
            .layer(AssertionLayer::new(self.assertion.clone()))
            .service(last)
    }
}
