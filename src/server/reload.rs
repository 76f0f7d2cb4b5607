//! Hot reload: the live [`Runtime`] behind an atomic pointer, and the one way to replace it.
//!
//! A reload (SIGHUP, `POST /reload` on the admin listener, or a certificate/key/JWKS file changing on disk) reads
//! the config file again, builds a complete new runtime off to the side (every file read and checked, issuer
//! keys carried over or fetched), and only then swaps it in. Requests already running keep the runtime they
//! started with; the next request on any connection takes the new one. A config that does not load, or a file
//! that does not parse, leaves the old runtime serving: the error is logged with the key at fault and counted
//! in `runway_config_reloads_total{result="error"}`.
//!
//! Files are watched by polling their metadata, not with inotify: cert-manager and Kubernetes Secret volumes
//! replace files by swapping a `..data` symlink, which an inotify watch on the old file never sees, and Vault
//! agent rewrites certificate and key as two separate writes. A `stat` per file every few seconds follows
//! symlinks, sees every way of replacing a file, needs no extra dependency, and waiting for two identical
//! polls in a row keeps a half-written certificate/key pair from being loaded.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::config::{self, Config, ConfigError, KeySource};
use crate::proxy::{BuildError, Runtime};

/// How often watched files are checked.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// How long a reload waits for the keys of an issuer it has never loaded before swapping anyway (the issuer
/// then answers 503 until its refresher gets them, exactly as at start).
const FIRST_KEYS_WAIT: Duration = Duration::from_secs(5);

/// Why a reload was refused. The old config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file the config names is missing or unusable.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A key that only takes effect at start changed.
    #[error("{key}: cannot change on reload (was {was}, now {now}); restart Runway to apply it")]
    Fixed {
        /// Config key.
        key: &'static str,
        /// The running value.
        was: String,
        /// The new value.
        now: String,
    },
}

impl ReloadError {
    /// The error and its causes on one line, for logs and the admin answer.
    pub fn chain(&self) -> String {
        crate::error::chain(self)
    }
}

/// The live runtime and how to replace it.
pub struct Reloader {
    live: ArcSwap<Runtime>,
    path: PathBuf,
    generation: AtomicU64,
    /// Held for a whole reload, so reloads never interleave; owns the live runtime's background tasks.
    tasks: Mutex<JoinSet<()>>,
}

impl Reloader {
    /// Starts with `runtime`, which was loaded from `runtime.config.source`.
    pub fn new(runtime: Runtime) -> Arc<Reloader> {
        let path = runtime.config.source.clone();
        Arc::new(Reloader {
            live: ArcSwap::from_pointee(runtime),
            path,
            generation: AtomicU64::new(1),
            tasks: Mutex::new(JoinSet::new()),
        })
    }

    /// The runtime new requests use.
    pub fn current(&self) -> Arc<Runtime> {
        self.live.load_full()
    }

    /// The pointer itself, for per-request checks that must not take a reference count.
    pub fn live(&self) -> &ArcSwap<Runtime> {
        &self.live
    }

    /// Counts configs served so far: 1 at start, +1 per successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts the live runtime's background tasks (key refreshers). Call once, inside the Tokio runtime.
    pub async fn start(&self) {
        let runtime = self.current();
        let mut tasks = self.tasks.lock().await;
        spawn_refreshers(&runtime, &mut tasks);
    }

    /// Stops the background tasks (on shutdown).
    pub async fn stop(&self) {
        self.tasks.lock().await.shutdown().await;
    }

    /// Reads the config file again and, if everything in it loads, swaps it in. `trigger` says why, for logs.
    pub async fn reload(&self, trigger: &str) -> Result<u64, ReloadError> {
        let mut tasks = self.tasks.lock().await;
        let metrics = self.current().telemetry.metrics.clone();
        match self.prepare().await {
            Ok(next) => {
                let current = self.current();
                current.connections.resize(next.config.server.max_connections);
                current.in_flight.resize(next.config.server.max_concurrent_requests);
                let mut fresh = JoinSet::new();
                spawn_refreshers(&next, &mut fresh);
                let summary = (next.config.routes.len(), next.config.issuers.len());
                for gone in
                    current.config.issuers.iter().filter(|o| !next.config.issuers.iter().any(|n| n.name == o.name))
                {
                    metrics.forget_issuer(&gone.name);
                }
                self.live.store(Arc::new(next));
                // Dropping the old set aborts the old refreshers; the new ones already run.
                *tasks = fresh;
                let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                metrics.config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(trigger, generation, routes = summary.0, issuers = summary.1, "configuration reloaded");
                Ok(generation)
            }
            Err(e) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                tracing::error!(trigger, error = %e.chain(), "configuration reload refused; the previous configuration keeps serving");
                Err(e)
            }
        }
    }

    async fn prepare(&self) -> Result<Runtime, ReloadError> {
        let path = self.path.clone();
        let config = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .unwrap_or_else(|e| Err(ConfigError::Load { path: self.path.clone(), message: e.to_string() }))?;
        let current = self.current();
        check_fixed(&current.config, &config)?;
        let next = Runtime::rebuild(config, &current)?;
        load_new_issuers(&next).await;
        Ok(next)
    }

    /// Reloads when a file the live config names changes on disk, until the task is dropped.
    pub async fn watch_files(self: Arc<Self>, interval: Duration) {
        let mut applied = snapshot(&self.current().config);
        let mut last = applied.clone();
        let mut generation = self.generation();
        loop {
            tokio::time::sleep(interval).await;
            let seen = snapshot(&self.current().config);
            if self.generation() != generation {
                // Reloaded by a signal or /reload meanwhile: what is on disk now is what runs.
                (applied, last, generation) = (seen.clone(), seen, self.generation());
                continue;
            }
            // Act once the change has settled (two polls alike): never on a half-replaced cert/key pair.
            if seen != applied && seen == last {
                tracing::info!(files = %changed_files(&applied, &seen), "watched files changed on disk: reloading");
                // On failure, wait for the next change rather than retrying the same broken files every poll.
                applied = match self.reload("files changed").await {
                    Ok(_) => snapshot(&self.current().config),
                    Err(_) => seen.clone(),
                };
                generation = self.generation();
            }
            last = seen;
        }
    }
}

/// The JWKS refreshers and the revocation keeper of `runtime`.
fn spawn_refreshers(runtime: &Runtime, tasks: &mut JoinSet<()>) {
    for refresher in runtime.auth.refreshers() {
        tasks.spawn(refresher);
    }
    tasks.spawn(runtime.revocations.keeper());
}

/// Keys that bind sockets or open files at start: a reload refuses to change them rather than half-apply them.
fn check_fixed(current: &Config, next: &Config) -> Result<(), ReloadError> {
    let fixed = |key: &'static str, was: String, now: String| match was == now {
        true => Ok(()),
        false => Err(ReloadError::Fixed { key, was, now }),
    };
    fixed("server.listen", current.server.listen.to_string(), next.server.listen.to_string())?;
    fixed("admin.listen", current.admin.listen.to_string(), next.admin.listen.to_string())?;
    let audit = |c: &Config| c.audit.path.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string());
    fixed("audit.path", audit(current), audit(next))
}

/// Fetches keys for issuers that have none yet (new in this config, or never loaded), briefly, so a reload does
/// not turn a working route into 503s while the refreshers start.
async fn load_new_issuers(next: &Runtime) {
    let mut loads = JoinSet::new();
    for issuer in next.auth.issuers() {
        if issuer.keys.is_ready() || matches!(issuer.config.keys, KeySource::File(_)) {
            continue;
        }
        let keys = issuer.keys.clone();
        loads.spawn(async move { keys.load_now().await });
    }
    let _ = tokio::time::timeout(FIRST_KEYS_WAIT, loads.join_all()).await;
}

/// What a file looked like: modification time and length (`None` when it cannot be read).
type Stamp = Option<(SystemTime, u64)>;

/// The files a config names, and their stamps.
fn snapshot(config: &Config) -> Vec<(PathBuf, Stamp)> {
    watched_files(config)
        .into_iter()
        .map(|path| {
            let stamp = std::fs::metadata(&path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
            (path, stamp)
        })
        .collect()
}

/// Certificates, keys, CA bundles, JWKS files and the admin token: what cert-manager, Vault agent or a key
/// rotation replaces.
/// The config file itself is not watched: changing it is a deliberate act, applied with SIGHUP or `/reload`.
fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.server.tls_cert.clone(), config.server.tls_key.clone()];
    files.extend(config.upstream.ca.clone());
    if let Some((cert, key)) = &config.upstream.client_identity {
        files.extend([cert.clone(), key.clone()]);
    }
    for issuer in &config.issuers {
        if let KeySource::File(path) = &issuer.keys {
            files.push(path.clone());
        }
        files.extend(issuer.aws.as_ref().and_then(|a| a.sts_ca.clone()));
    }
    files.extend(config.assertion.as_ref().map(|a| a.key.clone()));
    files.extend(config.admin.token_file.clone());
    files
}

fn changed_files(before: &[(PathBuf, Stamp)], after: &[(PathBuf, Stamp)]) -> String {
    let changed: Vec<String> =
        after.iter().filter(|entry| !before.contains(entry)).map(|(path, _)| path.display().to_string()).collect();
    changed.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_the_cause_once() {
        let e = ReloadError::Config(ConfigError::invalid("routes[0].allow[0].issuer", "no issuer named \"x\""));
        assert_eq!(e.chain(), "routes[0].allow[0].issuer: no issuer named \"x\"");
        let fixed = ReloadError::Fixed { key: "server.listen", was: "a".into(), now: "b".into() };
        assert!(fixed.chain().starts_with("server.listen: cannot change on reload"));
    }
}
