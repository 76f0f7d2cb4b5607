//! The TLS listener: accepts within `max_connections`, handshakes (TLS 1.2/1.3, ALPN h2 + http/1.1), serves
//! each connection through the pipeline, closes idle ones, and drains in-flight requests on shutdown.
//! The runtime it serves is swapped by [`reload`]: each request runs on the runtime that was live when it began.

mod idle;
pub mod reload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::admin;
use crate::body::{Linger, RequestBody};
use crate::headers::MAX_HEADER_BYTES;
use crate::proxy::Runtime;
use idle::{Activity, Guarded};
pub use reload::{ReloadError, Reloader};

/// Most concurrent h2 streams per connection; more are refused with REFUSED_STREAM (RFC 9113 section 5.1.2).
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Most header fields in an HTTP/1.1 request head; hyper answers 431 beyond.
const MAX_HEADER_FIELDS: usize = 128;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind.
    #[error("{key}: cannot listen on {addr}")]
    Bind {
        /// Config key.
        key: &'static str,
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// Why Runway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics registry.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Files named by the config.
    #[error(transparent)]
    Build(#[from] crate::proxy::BuildError),
    /// Listeners.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Stops a running [`Server`].
#[derive(Clone, Debug)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Stop accepting, drain in-flight requests within `shutdown_grace`, then return from `run`.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A bound, not yet running, Runway.
pub struct Server {
    reloader: Arc<Reloader>,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: watch::Sender<bool>,
    watch_interval: Duration,
}

impl Server {
    /// Everything `runway serve` does before serving: metrics, the audit log, the runtime, both listeners.
    pub async fn start(config: crate::config::Config) -> Result<Server, StartError> {
        let metrics = Arc::new(crate::metrics::Metrics::new()?);
        let audit = crate::audit::AuditLog::start(config.audit.path.as_deref(), metrics.clone())?;
        let export_runtime = Some(tokio::runtime::Handle::current());
        let telemetry = crate::proxy::Telemetry { metrics, audit: Some(audit), export_runtime };
        let runtime = Runtime::build(config, telemetry)?;
        Ok(Server::bind(runtime).await?)
    }

    /// A check of whether every issuer has usable keys (what `/readyz` reports), usable while serving.
    pub fn readiness(&self) -> impl Fn() -> bool + Send + 'static {
        let reloader = self.reloader.clone();
        move || reloader.current().auth.issuers().iter().all(|i| i.keys.is_ready())
    }

    /// The audit log (process-wide: it outlives reloads), for reopening it as SIGHUP does.
    pub fn audit(&self) -> Option<crate::audit::AuditLog> {
        self.reloader.current().telemetry.audit.clone()
    }

    /// Reloads the config; what SIGHUP and `POST /reload` call.
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// How often certificate, key and JWKS files are checked for changes (default [`reload::WATCH_INTERVAL`]).
    pub fn watch_files_every(mut self, interval: Duration) -> Self {
        self.watch_interval = interval;
        self
    }

    /// Binds both listeners.
    pub async fn bind(runtime: Runtime) -> Result<Server, ServeError> {
        let listen = runtime.config.server.listen;
        let listener = TcpListener::bind(listen).await.map_err(|source| ServeError::Bind {
            key: "server.listen",
            addr: listen,
            source,
        })?;
        let admin_addr = runtime.config.admin.listen;
        let admin = TcpListener::bind(admin_addr).await.map_err(|source| ServeError::Bind {
            key: "admin.listen",
            addr: admin_addr,
            source,
        })?;
        Ok(Server {
            reloader: Reloader::new(runtime),
            listener,
            admin,
            shutdown: watch::channel(false).0,
            watch_interval: reload::WATCH_INTERVAL,
        })
    }

    /// The TLS listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.reloader.current().config.server.listen)
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.reloader.current().config.admin.listen)
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Serves until shut down; then drains within `shutdown_grace`.
    pub async fn run(self) {
        let Server { reloader, listener, admin, shutdown, watch_interval } = self;
        let mut stop = shutdown.subscribe();
        reloader.start().await;
        let mut background = tokio::task::JoinSet::new();
        background.spawn(admin::serve(admin, reloader.clone(), shutdown.subscribe()));
        background.spawn(reloader.clone().watch_files(watch_interval));
        announce(&reloader.current());

        let graceful = GracefulShutdown::new();
        tracing::info!(listen = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()), "runway is serving");
        loop {
            // The bound survives reloads (a reload resizes it), so take it from whichever runtime is live.
            let connections = reloader.current().connections.semaphore().clone();
            let permit = tokio::select! {
                p = connections.acquire_owned() => p,
                _ = stop.changed() => break,
            };
            let Ok(permit) = permit else { break };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            let conn = Connection { reloader: reloader.clone(), watcher: graceful.watcher() };
            let span = tracing::info_span!("connection", %peer);
            tokio::spawn(
                async move {
                    conn.serve(tcp, peer).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        drop(listener);
        let grace = reloader.current().config.server.shutdown_grace;
        tracing::info!(connections = graceful.count(), grace_s = grace.as_secs_f64(), "shutting down: draining");
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("shutdown grace period over: closing the remaining connections");
        }
        background.shutdown().await;
        reloader.stop().await;
        if let Some(audit) = &reloader.current().telemetry.audit {
            audit.shutdown().await;
        }
        // The spans of the last requests: exported before the process exits.
        if let Some(tracing) = &reloader.current().tracing {
            tracing.shutdown().await;
        }
        tracing::info!("runway stopped");
    }
}

/// Logs what the starting config enables beyond the basics.
fn announce(runtime: &Runtime) {
    if let Some(replay) = &runtime.replay {
        tracing::info!(store = replay.store_kind(), "one_time routes: replay store ready");
    }
    if let Some(assertion) = &runtime.assertion {
        tracing::info!(kid = assertion.kid(), "identity assertion signing key loaded");
    }
}

fn http_builder(runtime: &Runtime) -> auto::Builder<TokioExecutor> {
    let server = &runtime.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES + 8 * 1024)
        .max_headers(MAX_HEADER_FIELDS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(server.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

struct Connection {
    reloader: Arc<Reloader>,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    async fn serve(self, tcp: TcpStream, peer: SocketAddr) {
        // The handshake, the timeouts and HTTP settings come from the config live at accept.
        let runtime = self.reloader.current();
        let server = &runtime.config.server;
        let metrics = runtime.telemetry.metrics.clone();
        let _ = tcp.set_nodelay(true);
        metrics.connections_active.inc();
        let _open = scopeguard(metrics.connections_active.clone());
        let acceptor = TlsAcceptor::from(runtime.tls.clone());
        let tls = match tokio::time::timeout(server.header_read_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                metrics.tls_handshake_failures.inc();
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics.tls_handshake_failures.inc();
                tracing::debug!("TLS handshake timed out");
                return;
            }
        };
        let activity = Activity::new();
        let io = TokioIo::new(tls);
        let stacks = Arc::new(std::sync::Mutex::new(Pipeline { stack: runtime.stack(peer), runtime: runtime.clone() }));
        let reloader = self.reloader.clone();
        let tracker = activity.clone();
        let stall = server.header_read_timeout;
        let service = tower::service_fn(move |req: http::Request<Incoming>| {
            let in_flight = tracker.request();
            let (answered, linger) = Linger::new(tracker.clone(), stall);
            let req = req.map(|body| RequestBody::new(body, Some(linger)));
            let call = current_stack(&stacks, reloader.live(), |live| live.stack(peer)).oneshot(req);
            async move {
                let response = call.await?;
                answered.fire();
                Ok::<_, std::convert::Infallible>(response.map(|body| Guarded::new(body, in_flight)))
            }
        });
        let builder = http_builder(&runtime);
        let conn = self.watcher.watch(builder.serve_connection(io, TowerToHyperService::new(service)).into_owned());
        tokio::pin!(conn);
        let (idle_timeout, first_request) = (server.idle_timeout, server.header_read_timeout);
        let check_every =
            (idle_timeout / 4).min(first_request / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::select! {
                result = &mut conn => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep(check_every) => {
                    // hyper bounds an HTTP/1.1 head, but not the wait for a first h2 request or a trickled preface.
                    if !activity.has_served() && activity.age() >= first_request {
                        tracing::debug!(%peer, "closing connection: no request within header_read_timeout");
                        return;
                    }
                    if activity.idle_for() >= idle_timeout {
                        tracing::debug!(%peer, "closing idle connection");
                        return;
                    }
                }
            }
        }
    }
}

/// A connection's pipeline and the runtime it was built from.
struct Pipeline<S> {
    runtime: Arc<Runtime>,
    stack: S,
}

/// The pipeline of the live runtime: the connection's own while no reload happened (one pointer compare, no
/// reference count taken), rebuilt once for the connection after one.
fn current_stack<S: Clone>(
    pipeline: &std::sync::Mutex<Pipeline<S>>,
    live: &arc_swap::ArcSwap<Runtime>,
    build: impl FnOnce(&Runtime) -> S,
) -> S {
    let live = live.load();
    let mut pipeline = pipeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !Arc::ptr_eq(&pipeline.runtime, &live) {
        *pipeline = Pipeline { stack: build(&live), runtime: Arc::clone(&live) };
    }
    pipeline.stack.clone()
}

/// Decrements the open-connections gauge when the connection ends, however it ends.
struct OpenConnection(prometheus::IntGauge);

fn scopeguard(gauge: prometheus::IntGauge) -> OpenConnection {
    OpenConnection(gauge)
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Waits for SIGTERM or SIGINT and shuts the server down. SIGHUP reopens the audit file (logrotate) and
/// reloads the configuration.
pub async fn signals(handle: ShutdownHandle, reloader: Arc<Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                if let Some(audit) = &reloader.current().telemetry.audit {
                    audit.reopen().await;
                }
                // Refused reloads are logged and counted inside; the old config keeps serving.
                let _ = reloader.reload("SIGHUP").await;
            }
        }
    }
    tracing::info!("stop signal received");
    handle.shutdown();
}
