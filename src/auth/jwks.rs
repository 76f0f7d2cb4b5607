//! One issuer's key store: the current [`KeySet`] (lock-free reads), background refresh, and the
//! single-flight, rate-limited refetch that an unknown `kid` triggers.
//!
//! Every fetch runs under one async mutex, so concurrent unknown-kid misses share a single fetch, and the
//! refetch interval caps how often a flood of random kids can make Runway call the IdP. When the IdP fails
//! (unreachable, too slow, or serving anything but a JWKS with a usable key), the keys already known keep
//! working.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use tokio::sync::Mutex;

use super::fetch::{FetchError, Fetcher};
use super::keys::KeySet;
use crate::config::{IssuerConfig, KeySource};
use crate::metrics::Metrics;

/// Longest wait between retries while an IdP keeps failing.
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(30);

/// Where keys come from at run time.
enum Source {
    File(PathBuf),
    Remote { discovery: Option<String>, jwks_uri: Option<String>, fetcher: Box<Fetcher> },
}

struct FetchState {
    /// Last refetch caused by an unknown kid (background refreshes do not count against that budget).
    last_kid_refetch: Option<Instant>,
    /// When the last fetch of any kind (background or unknown kid) finished, successful or not.
    last_finished: Option<Instant>,
    /// `jwks_uri`, once known (configured or discovered).
    jwks_uri: Option<String>,
    /// When the keys now installed were fetched, and the `max-age` they came with: the refresher's first wait.
    fetched: Option<(Instant, Option<Duration>)>,
}

/// An issuer's keys.
pub struct KeyStore {
    issuer_name: String,
    issuer_url: String,
    algorithms: Vec<Algorithm>,
    refresh_interval: Duration,
    kid_refetch_interval: Duration,
    source: Source,
    current: ArcSwap<KeySet>,
    fetch: Mutex<FetchState>,
    metrics: Arc<Metrics>,
    /// Kept outside the fetch lock so `/readyz` never waits on a slow IdP.
    last_error: std::sync::Mutex<Option<String>>,
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The JWKS file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A fetch failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The document was fetched but is not usable.
    #[error("{url}: {message}")]
    Document {
        /// Where it came from.
        url: String,
        /// What is wrong.
        message: String,
    },
}

impl KeyStore {
    /// A key store for `config`. A `jwks_file` is read now; remote keys load in [`KeyStore::run_refresher`].
    pub fn new(config: &IssuerConfig, fetcher: &Fetcher, metrics: Arc<Metrics>) -> Result<Self, JwksError> {
        let source = match &config.keys {
            KeySource::File(path) => Source::File(path.clone()),
            KeySource::Uri(uri) => {
                Source::Remote { discovery: None, jwks_uri: Some(uri.clone()), fetcher: Box::new(fetcher.clone()) }
            }
            KeySource::Discovery => Source::Remote {
                discovery: Some(format!("{}/.well-known/openid-configuration", config.issuer.trim_end_matches('/'))),
                jwks_uri: None,
                fetcher: Box::new(fetcher.clone()),
            },
            KeySource::Sts => {
                return Err(JwksError::Document {
                    url: config.name.clone(),
                    message: "kind aws has no keys: STS checks each token".into(),
                });
            }
        };
        let jwks_uri = match &source {
            Source::Remote { jwks_uri, .. } => jwks_uri.clone(),
            Source::File(_) => None,
        };
        let store = KeyStore {
            issuer_name: config.name.clone(),
            issuer_url: config.issuer.clone(),
            algorithms: config.algorithms.clone(),
            refresh_interval: config.refresh_interval,
            kid_refetch_interval: config.kid_refetch_interval,
            source,
            current: ArcSwap::from_pointee(KeySet::default()),
            fetch: Mutex::new(FetchState { last_kid_refetch: None, last_finished: None, jwks_uri, fetched: None }),
            last_error: std::sync::Mutex::new(None),
            metrics,
        };
        store.metrics.jwks_keys.with_label_values(&[store.issuer_name.as_str()]).set(0);
        for result in ["ok", "error"] {
            store.metrics.jwks_refresh.with_label_values(&[store.issuer_name.as_str(), result]);
        }
        if let Source::File(path) = &store.source {
            store.install(load_file(path, &store.algorithms)?);
        }
        Ok(store)
    }

    /// Starts from the keys `previous` holds (a config reload whose issuer kept its key source and algorithms),
    /// so a reload never leaves an issuer without keys while its IdP is slow or down. The refresher then
    /// fetches on `previous`'s schedule. A `jwks_file` is never inherited: re-reading it is the point of a reload.
    pub fn inherit(&mut self, previous: &KeyStore) {
        if matches!(self.source, Source::File(_)) || !previous.is_ready() {
            return;
        }
        let keys = previous.current();
        self.metrics
            .jwks_keys
            .with_label_values(&[self.issuer_name.as_str()])
            .set(keys.len().try_into().unwrap_or(i64::MAX));
        self.current.store(keys);
        if let Ok(old) = previous.fetch.try_lock() {
            let state = self.fetch.get_mut();
            state.jwks_uri = state.jwks_uri.take().or_else(|| old.jwks_uri.clone());
            state.fetched = old.fetched;
        }
    }

    /// The current keys.
    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// The current key set's generation (cheap: no reference count taken).
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Whether keys were ever loaded and at least one is usable.
    pub fn is_ready(&self) -> bool {
        let keys = self.current.load();
        keys.loaded && !keys.is_empty()
    }

    /// The last fetch error, for `/readyz`.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Called when a token names a kid that `seen` (the set the caller looked in) does not hold. Refetches
    /// at most once per `kid_refetch_interval`, shared by all concurrent callers. Returns the newer key set
    /// if one is available.
    pub async fn refetch_for_unknown_kid(&self, seen: &KeySet) -> Option<Arc<KeySet>> {
        if matches!(self.source, Source::File(_)) {
            return None;
        }
        let asked = Instant::now();
        let mut state = self.fetch.lock().await;
        let now = self.current();
        if now.generation != seen.generation {
            return Some(now); // someone refreshed while we waited for the lock
        }
        if state.last_finished.is_some_and(|t| t > asked) {
            // A fetch failed while we waited (a slow or broken IdP): asking again now would make this request
            // wait a second fetch timeout for the same answer.
            return None;
        }
        if state.last_kid_refetch.is_some_and(|t| t.elapsed() < self.kid_refetch_interval) {
            return None;
        }
        state.last_kid_refetch = Some(Instant::now());
        tracing::info!(issuer = %self.issuer_name, "unknown key id: refetching the JWKS");
        self.refresh_locked(&mut state).await.ok().map(|_| self.current())
    }

    /// Loads remote keys once, now (for one-shot tools such as `runway explain`).
    pub async fn load_now(&self) -> Result<(), JwksError> {
        let mut state = self.fetch.lock().await;
        self.refresh_locked(&mut state).await.map(|_| ())
    }

    /// Keeps remote keys fresh until the task is dropped: every `refresh_interval`, sooner when the IdP's
    /// `max-age` asks for it (but never more often than `kid_refetch_interval`), and with a capped backoff
    /// while the IdP fails. Keys inherited from a previous config are refreshed when they would have been.
    pub async fn run_refresher(self: Arc<Self>) {
        if matches!(self.source, Source::File(_)) {
            return;
        }
        let inherited = self.fetch.lock().await.fetched;
        if let Some((at, max_age)) = inherited {
            tokio::time::sleep(self.wait_after(max_age).saturating_sub(at.elapsed())).await;
        }
        let mut failures: u32 = 0;
        loop {
            let result = {
                let mut state = self.fetch.lock().await;
                self.refresh_locked(&mut state).await
            };
            let wait = match result {
                Ok(max_age) => {
                    failures = 0;
                    self.wait_after(max_age)
                }
                Err(_) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_secs(1u64 << failures.min(5));
                    backoff.min(MAX_FAILURE_BACKOFF).min(self.refresh_interval)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// How long keys fetched with this `max-age` stay fresh.
    fn wait_after(&self, max_age: Option<Duration>) -> Duration {
        // Not `clamp`: it panics when kid_refetch_interval > refresh_interval.
        max_age.map_or(self.refresh_interval, |age| age.max(self.kid_refetch_interval).min(self.refresh_interval))
    }

    fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = error;
        }
    }

    async fn refresh_locked(&self, state: &mut FetchState) -> Result<Option<Duration>, JwksError> {
        let result = self.fetch_keys(state).await;
        state.last_finished = Some(Instant::now());
        match &result {
            Ok(_) => self.set_last_error(None),
            Err(e) => {
                self.metrics.jwks_loaded(&self.issuer_name, Err(()));
                tracing::warn!(issuer = %self.issuer_name, error = %e, "JWKS refresh failed; keeping the keys already known");
                self.set_last_error(Some(e.to_string()));
            }
        }
        result
    }

    async fn fetch_keys(&self, state: &mut FetchState) -> Result<Option<Duration>, JwksError> {
        let Source::Remote { discovery, fetcher, .. } = &self.source else {
            return Ok(None);
        };
        let jwks_uri = match (&state.jwks_uri, discovery) {
            (Some(uri), _) => uri.clone(),
            (None, Some(discovery)) => {
                let uri = self.discover(fetcher, discovery).await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
            (None, None) => return Ok(None),
        };
        let fetched = fetcher.get_json(&jwks_uri, "jwks fetch").await;
        let (doc, max_age) = match fetched {
            Ok(ok) => ok,
            Err(e) => {
                // The provider may have moved its keys: discover again next time.
                if discovery.is_some() {
                    state.jwks_uri = None;
                }
                return Err(e.into());
            }
        };
        let generation = self.current.load().generation + 1;
        let (set, skipped) = KeySet::from_jwks(&doc, &self.algorithms, generation)
            .map_err(|message| JwksError::Document { url: jwks_uri.clone(), message })?;
        if set.is_empty() {
            // A broken IdP, not a rotation: installing it would refuse every token, so the known keys stay.
            return Err(JwksError::Document {
                url: jwks_uri,
                message: format!("no key usable with the issuer's algorithms ({skipped} skipped)"),
            });
        }
        self.install((set, skipped));
        state.fetched = Some((Instant::now(), max_age));
        Ok(max_age)
    }

    async fn discover(&self, fetcher: &Fetcher, url: &str) -> Result<String, JwksError> {
        let (doc, _) = fetcher.get_json(url, "oidc discovery").await?;
        let doc_err = |message: String| JwksError::Document { url: url.to_string(), message };
        let issuer = doc.get("issuer").and_then(Value::as_str);
        if issuer != Some(self.issuer_url.as_str()) {
            return Err(doc_err(format!(
                "discovery names issuer {:?}, expected \"{}\" exactly",
                issuer.unwrap_or("(none)"),
                self.issuer_url
            )));
        }
        let uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| doc_err("discovery document has no jwks_uri".into()))?;
        crate::config::validate_url_is_fetchable(uri).map_err(doc_err)?;
        Ok(uri.to_string())
    }

    fn install(&self, (set, skipped): (KeySet, usize)) {
        tracing::info!(issuer = %self.issuer_name, keys = set.len(), skipped, "JWKS loaded");
        self.metrics.jwks_loaded(&self.issuer_name, Ok(set.len()));
        self.current.store(Arc::new(set));
    }
}

/// Reads and parses a JWKS file, keeping the keys usable with `algorithms`.
pub fn load_file(path: &std::path::Path, algorithms: &[Algorithm]) -> Result<(KeySet, usize), JwksError> {
    let err = |message: String| JwksError::File { path: path.display().to_string(), message };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| err(format!("not JSON ({e})")))?;
    let (set, skipped) = KeySet::from_jwks(&doc, algorithms, 1).map_err(err)?;
    if set.is_empty() {
        return Err(err(format!("no key usable with the issuer's algorithms ({skipped} skipped)")));
    }
    Ok((set, skipped))
}
