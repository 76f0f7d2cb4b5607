//! Revocations (contract section 11): an operator cuts off a pipeline, project, runner or role at once. A
//! revocation names an issuer and claim conditions (the allow rules' matcher); a request whose verified identity
//! matches one that is in force is refused with 401 "token revoked", cached tokens included, because the check
//! runs on the identity after verification ([`layer`]).
//!
//! This module owns the set: what the admin API adds, lists and lifts, and how replicas share it. With
//! `[replay] store = "redis"` the set lives in that Redis ([`shared`]) and a background task keeps the local copy
//! in step; while Redis is away the last known set stays in force. Otherwise it is this process's own.

pub mod layer;
pub mod request;
pub mod set;
pub mod shared;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::audit::rfc3339;
use crate::auth::Identity;
use crate::config::raw::RawPatterns;
use crate::config::{Config, ReplayStoreConfig};
use crate::metrics::Metrics;
pub use request::FieldError;
use request::{from_unix_ms, unix_ms};
use set::{ActiveSet, Compiled};
use shared::{Shared, SyncError};

/// How often the whole set is reloaded from Redis (and expired entries dropped), whatever was announced.
pub const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// Pause before subscribing again after Redis went away.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One revocation, as stored and listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revocation {
    /// Random id, for `DELETE /revocations/{id}`.
    pub id: String,
    /// Issuer name.
    pub issuer: String,
    /// Claim conditions, as given.
    pub claims: BTreeMap<String, RawPatterns>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// When it lapses (Unix ms).
    pub expires_ms: u64,
}

impl Revocation {
    /// As the admin API shows it: times in RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "issuer": self.issuer,
            "claims": self.claims,
            "reason": self.reason,
            "revoked_by": self.revoked_by,
            "created": rfc3339(from_unix_ms(self.created_ms)),
            "expires": rfc3339(from_unix_ms(self.expires_ms)),
        })
    }
}

/// Why a revocation could not be added.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The request names something that cannot work (422).
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The shared store did not take it (503): no replica would see it.
    #[error("the shared revocation store is unavailable: {0}")]
    Store(#[from] SyncError),
}

#[derive(Default)]
struct SyncState {
    loaded: bool,
    last_sync: Option<SystemTime>,
    last_error: Option<String>,
}

/// See the module docs. One per store: a reload that keeps the `[replay]` store keeps this too.
pub struct Revocations {
    known: Mutex<BTreeMap<String, Arc<Compiled>>>,
    active: ArcSwap<ActiveSet>,
    shared: Option<Arc<Shared>>,
    metrics: Arc<Metrics>,
    state: Mutex<SyncState>,
}

impl Revocations {
    /// For the store of `[replay]`: Redis when it is `redis`, else this process. Contacts nothing.
    pub fn new(replay: &ReplayStoreConfig, metrics: Arc<Metrics>) -> Revocations {
        let shared = replay.redis().map(|config| Arc::new(Shared::new(config.clone())));
        let loaded = shared.is_none();
        Revocations {
            known: Mutex::default(),
            active: ArcSwap::default(),
            shared,
            metrics,
            state: Mutex::new(SyncState { loaded, ..SyncState::default() }),
        }
    }

    /// Whether this set lives in the store `replay` names (then a reload keeps it).
    pub fn same_store(&self, replay: &ReplayStoreConfig) -> bool {
        match (&self.shared, replay.redis()) {
            (None, None) => true,
            (Some(shared), Some(config)) => shared.config() == config,
            _ => false,
        }
    }

    /// `redis` or `memory`.
    pub fn store_kind(&self) -> &'static str {
        if self.shared.is_some() { "redis" } else { "memory" }
    }

    /// No revocation is known (the request path then skips the check).
    pub fn is_empty(&self) -> bool {
        self.active.load().is_empty()
    }

    /// The revocation in force that `identity` matches, if any.
    pub fn matching(&self, identity: &Identity) -> Option<Revocation> {
        self.active.load().matching(identity, unix_ms(SystemTime::now())).cloned()
    }

    /// Checks a `POST /revocations` body against `config` and adds it (to Redis first, when shared).
    pub async fn add(&self, body: &[u8], config: &Config) -> Result<Revocation, RevokeError> {
        let revocation = request::parse(body, config, SystemTime::now())?;
        if let Some(shared) = &self.shared {
            self.readiness().map_err(|_| SyncError::NotLoaded)?;
            let known = self.list();
            let now = unix_ms(SystemTime::now());
            shared.put(&revocation, &known, now).await.inspect_err(|_| self.metrics.revocation_sync_errors.inc())?;
        }
        if let Some(compiled) = Compiled::new(revocation.clone()) {
            self.edit(|known| {
                known.insert(revocation.id.clone(), compiled);
            });
        }
        Ok(revocation)
    }

    /// Lifts a revocation; `false` if none has that id.
    pub async fn delete(&self, id: &str) -> Result<bool, SyncError> {
        let removed_shared = match &self.shared {
            Some(shared) => {
                self.readiness().map_err(|_| SyncError::NotLoaded)?;
                let known: Vec<Revocation> = self.list().into_iter().filter(|r| r.id != id).collect();
                let now = unix_ms(SystemTime::now());
                shared.delete(id, &known, now).await.inspect_err(|_| self.metrics.revocation_sync_errors.inc())?
            }
            None => false,
        };
        let removed_here = self.edit(|known| known.remove(id).is_some());
        Ok(removed_shared || removed_here)
    }

    /// The revocations in force, oldest first.
    pub fn list(&self) -> Vec<Revocation> {
        let now = unix_ms(SystemTime::now());
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<Revocation> =
            known.values().filter(|c| c.revocation.expires_ms > now).map(|c| c.revocation.clone()).collect();
        list.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        list
    }

    /// `Ok` once the set in force is known (at once without Redis; after the first load with it).
    pub fn readiness(&self) -> Result<(), String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match (state.loaded, &state.last_error) {
            (true, _) => Ok(()),
            (false, Some(e)) => Err(format!("revocations: not loaded from Redis yet ({e})")),
            (false, None) => Err("revocations: not loaded from Redis yet".to_string()),
        }
    }

    /// For `/readyz`: store, count in force, last sync and last error.
    pub fn status(&self) -> serde_json::Value {
        let active = self.list().len();
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        serde_json::json!({
            "store": self.store_kind(),
            "loaded": state.loaded,
            "active": active,
            "last_sync": state.last_sync.map(rfc3339),
            "sync_error": state.last_error,
        })
    }

    /// The background task that keeps the set in step: follows Redis, or drops expired revocations. It ends
    /// when the set is dropped; the server runs one per live config beside the JWKS refreshers.
    pub fn keeper(self: &Arc<Self>) -> impl Future<Output = ()> + Send + use<> {
        let weak = Arc::downgrade(self);
        let shared = self.shared.clone();
        async move {
            match shared {
                Some(shared) => follow(weak, shared).await,
                None => expire(weak).await,
            }
        }
    }

    /// Loads the shared set now (for `runway explain`, which runs no keeper); the error's text if it failed.
    pub async fn refresh(&self) -> Result<(), String> {
        self.resync().await.map_err(|()| {
            self.state.lock().unwrap_or_else(PoisonError::into_inner).last_error.clone().unwrap_or_default()
        })
    }

    /// Reloads the whole set from Redis.
    async fn resync(&self) -> Result<(), ()> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let known: Option<Vec<Revocation>> = self.readiness().is_ok().then(|| self.list());
        match shared.load(unix_ms(SystemTime::now()), known.as_deref()).await {
            Ok(revocations) => {
                // A revocation never changes once made: the same ids are the same set, and the periodic resync
                // recompiles nothing.
                let unchanged = {
                    let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
                    known.len() == revocations.len() && revocations.iter().all(|r| known.contains_key(&r.id))
                };
                if !unchanged {
                    let fresh: BTreeMap<String, Arc<Compiled>> =
                        revocations.into_iter().filter_map(|r| Some((r.id.clone(), Compiled::new(r)?))).collect();
                    self.edit(|known| *known = fresh);
                }
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if !state.loaded || state.last_error.is_some() {
                    tracing::info!(active = self.active.load().len(), "revocations loaded from Redis");
                }
                *state = SyncState { loaded: true, last_sync: Some(SystemTime::now()), last_error: None };
                Ok(())
            }
            Err(e) => {
                self.sync_failed(&e);
                Err(())
            }
        }
    }

    fn sync_failed(&self, error: &SyncError) {
        self.metrics.revocation_sync_errors.inc();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.last_error.is_none() {
            tracing::warn!(error = %error, "revocations: Redis unavailable; the last known set stays in force");
        }
        state.last_error = Some(error.to_string());
    }

    /// Changes the known set, then swaps in its compiled form and updates the gauge.
    fn edit<T>(&self, change: impl FnOnce(&mut BTreeMap<String, Arc<Compiled>>) -> T) -> T {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let now = unix_ms(SystemTime::now());
        let out = change(&mut known);
        known.retain(|_, c| c.revocation.expires_ms > now);
        self.active.store(Arc::new(ActiveSet::new(known.values())));
        self.metrics.revocations_active.set(i64::try_from(known.len()).unwrap_or(i64::MAX));
        out
    }
}

/// With Redis: subscribe, load, then reload on every announcement and every [`RESYNC_EVERY`]; after a failure,
/// subscribe again.
async fn follow(weak: Weak<Revocations>, shared: Arc<Shared>) {
    loop {
        // Subscribe before loading: a change made in between is then in the load or announced after it.
        let subscribed = shared.subscribe().await;
        let Some(this) = weak.upgrade() else { return };
        let mut changes = match subscribed {
            Ok(changes) => changes,
            Err(e) => {
                this.sync_failed(&e);
                let _ = this.resync().await;
                drop(this);
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        let mut healthy = this.resync().await.is_ok();
        drop(this);
        while healthy {
            let subscribed = tokio::select! {
                change = changes.next() => change.is_some(),
                _ = tokio::time::sleep(RESYNC_EVERY) => true,
            };
            let Some(this) = weak.upgrade() else { return };
            healthy = subscribed && this.resync().await.is_ok();
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Without Redis: drop expired revocations now and then, so the list and the gauge stay true.
async fn expire(weak: Weak<Revocations>) {
    loop {
        tokio::time::sleep(RESYNC_EVERY).await;
        let Some(this) = weak.upgrade() else { return };
        this.edit(|_| ());
    }
}
