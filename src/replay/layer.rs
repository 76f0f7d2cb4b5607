//! The replay layer: on a `one_time` route, after policy allowed the request, records the token's `jti`
//! and refuses a second use (401), a token without `jti` (401), or answers 503 when the store cannot say
//! (fail closed). Requests that were not allowed (denied, or a report-mode would-deny) use nothing up. On a
//! report-mode route a refusal becomes a would-deny and the request goes on without identity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use serde_json::Value;

use super::{ReplayError, ReplayKey, ReplayStore, Use, unix_ms};
use crate::auth::Identity;
use crate::auth::layer::WouldDeny;
use crate::config::{Config, RouteMode};
use crate::error::Rejection;
use crate::layer::{BoxResponseFuture, Inner, rejection_response};
use crate::metrics::Metrics;
use crate::observe::AuthDecision;
use crate::routing::Route;

/// How long a jti is kept when the token has no `exp` (verified JWTs always have one).
const WITHOUT_EXP: Duration = Duration::from_secs(24 * 3600);

/// The replay check: the store, and how long each issuer's tokens stay acceptable after `exp`.
pub struct Replay {
    store: Arc<dyn ReplayStore>,
    leeway: HashMap<String, Duration>,
    metrics: Arc<Metrics>,
}

impl Replay {
    /// With `store`, for the issuers of `config`.
    pub fn new(store: Arc<dyn ReplayStore>, config: &Config, metrics: Arc<Metrics>) -> Replay {
        let leeway = config.issuers.iter().map(|i| (i.name.clone(), i.leeway)).collect();
        Replay { store, leeway, metrics }
    }

    /// The store, to hand on to the config that replaces this one: used token ids must outlive a reload.
    pub fn store(&self) -> Arc<dyn ReplayStore> {
        self.store.clone()
    }

    /// The store's kind, for logs.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Uses up the identity's `jti` on `route`, or says why not.
    pub async fn check(&self, route: &Route, identity: &Identity) -> Result<(), ReplayError> {
        let jti = identity.claims.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty());
        let jti = jti.ok_or(ReplayError::MissingJti)?;
        // Kept as long as the token can still be accepted: its exp plus the issuer's leeway, plus a second for
        // the rounding of exp.
        let leeway = self.leeway.get(&identity.issuer).copied().unwrap_or_default() + Duration::from_secs(1);
        let until_ms = match identity.claims.get("exp").and_then(Value::as_f64) {
            Some(exp) if exp > 0.0 => (exp * 1000.0) as u64,
            _ => unix_ms() + WITHOUT_EXP.as_millis() as u64,
        } + leeway.as_millis() as u64;
        let key = ReplayKey::new(&route.name, &identity.issuer, jti);
        match self.store.first_use(&key, until_ms).await {
            Ok(Use::First) => Ok(()),
            Ok(Use::Replayed) => {
                self.metrics.replay_refused.inc();
                Err(ReplayError::Replayed)
            }
            Err(e) => {
                self.metrics.replay_store_errors.inc();
                Err(ReplayError::Store(e))
            }
        }
    }
}

/// See the module docs. Without a store (no `one_time` route) it passes every request on.
#[derive(Clone)]
pub struct ReplayLayer {
    replay: Option<Arc<Replay>>,
}

impl ReplayLayer {
    /// With this check, if any route needs it.
    pub fn new(replay: Option<Arc<Replay>>) -> Self {
        ReplayLayer { replay }
    }
}

impl<S> tower::Layer<S> for ReplayLayer {
    type Service = ReplayCheck<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ReplayCheck { inner, replay: self.replay.clone() }
    }
}

/// See [`ReplayLayer`].
#[derive(Clone)]
pub struct ReplayCheck<S> {
    inner: S,
    replay: Option<Arc<Replay>>,
}

impl<S, B> tower::Service<Request<B>> for ReplayCheck<S>
where
    S: Inner<B>,
    B: Send + 'static,
{
    type Response = crate::Response;
    type Error = std::convert::Infallible;
    type Future = BoxResponseFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ext = req.extensions();
        let checked = match (&self.replay, ext.get::<Arc<Route>>(), ext.get::<Arc<Identity>>()) {
            // Only an allowed request (an identity, and no would-deny) on a one_time route uses a jti up.
            (Some(replay), Some(route), Some(identity)) if route.one_time && ext.get::<WouldDeny>().is_none() => {
                Some((replay.clone(), route.clone(), identity.clone()))
            }
            _ => None,
        };
        let Some((replay, route, identity)) = checked else {
            return Box::pin(self.inner.call(req));
        };
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let Err(error) = replay.check(&route, &identity).await else {
                return inner.call(req).await;
            };
            let rejection = Rejection::from(error);
            let reason = rejection.reason();
            req.extensions_mut().insert(AuthDecision { issuer: identity.issuer.clone(), allowed: false, reason });
            if route.mode == RouteMode::Report {
                req.extensions_mut().insert(WouldDeny { reason, detail: rejection.to_string() });
                inner.call(req).await
            } else {
                Ok(rejection_response(req.extensions(), rejection))
            }
        })
    }
}
