//! The replay layer: on a `one_time` route, after policy allowed the request, records the token's `jti`
//! and refuses a second use (401), a token without `jti` (401), or answers 503 when the store cannot say
//! (fail closed). Requests that were not allowed (denied, or a report-mode would-deny) use nothing up. On a
//! report-mode route a refusal becomes a would-deny and the request goes on without identity. With `[tracing]`
//! each check is the request's `replay` span.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use serde_json::Value;

use super::{ReplayError, ReplayKey, ReplayStore, Use, unix_ms};
use crate::auth::{AuthError, Identity, Reason};
use crate::config::{Config, RouteMode};
use crate::context::{AuthDecision, RequestContext};
use crate::error::Rejection;
use crate::layer::{BoxStepFuture, Inner};
use crate::metrics::Metrics;
use crate::routing::Route;
use futures_util::future::Either;

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

    /// The same check over a fresh in-memory store of its own: for `runway explain`, which must never use
    /// up a jti in the store the proxy shares.
    pub fn private(&self) -> Arc<Replay> {
        Arc::new(Replay {
            store: Arc::new(super::memory::MemoryStore::new(1024)),
            leeway: self.leeway.clone(),
            metrics: self.metrics.clone(),
        })
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
        let exp = identity.claims.get("exp").and_then(Value::as_f64);
        let leeway = self.leeway.get(&identity.issuer).copied().unwrap_or_default();
        let until_ms = kept_until_ms(exp, leeway, unix_ms());
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

/// Until when (Unix milliseconds) a jti counts as used: as long as the token can still be accepted, its exp
/// plus the issuer's leeway, plus a second for the rounding of exp. Saturating: no config duration has an
/// upper bound, and a sum that wrapped around would forget the jti at once (or panic, for a `Duration`).
fn kept_until_ms(exp: Option<f64>, leeway: Duration, now_ms: u64) -> u64 {
    let from = match exp {
        // A float-to-integer `as` saturates.
        Some(exp) if exp > 0.0 => (exp * 1000.0) as u64,
        _ => now_ms.saturating_add(u64::try_from(WITHOUT_EXP.as_millis()).unwrap_or(u64::MAX)),
    };
    let after_exp = leeway.saturating_add(Duration::from_secs(1)).as_millis();
    from.saturating_add(u64::try_from(after_exp).unwrap_or(u64::MAX))
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
    type Error = Rejection;
    type Future = futures_util::future::Either<S::Future, BoxStepFuture>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(replay) = &self.replay else {
            return Either::Left(self.inner.call(req));
        };
        let context = RequestContext::of(&req);
        let (route, identity) = match context.route_identity() {
            // Only an allowed request (an identity, and no would-deny) on a one_time route uses a jti up.
            (Some(route), Some(identity), false) if route.one_time => (route, identity),
            _ => return Either::Left(self.inner.call(req)),
        };
        let replay = replay.clone();
        // The clone that was polled ready is the one called (tower's guide on cloning inner services).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Either::Right(Box::pin(async move {
            let span = context.trace().and_then(|t| t.step("replay"));
            let checked = replay.check(&route, &identity).await.map_err(Rejection::from);
            if let Some(span) = span {
                match &checked {
                    Ok(()) => span.decision("allow", "none"),
                    Err(rejection) => {
                        let decision = if route.mode == RouteMode::Report { "would_deny" } else { "deny" };
                        if matches!(rejection, Rejection::ReplayUnavailable(_)) {
                            span.fail(rejection.reason());
                        }
                        span.decision(decision, rejection.reason());
                    }
                }
                span.end();
            }
            if let Err(rejection) = checked {
                let reason = rejection.reason();
                context.set_decision(AuthDecision { issuer: identity.issuer.clone(), allowed: false, reason });
                context.refuse(&route, rejection)?;
            }
            inner.call(req).await
        }))
    }
}

impl From<ReplayError> for Rejection {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::MissingJti => {
                Rejection::Unauthorized(AuthError::invalid(Reason::MissingJti, ReplayError::MissingJti.to_string()))
            }
            ReplayError::Replayed => {
                Rejection::Unauthorized(AuthError::invalid(Reason::Replayed, ReplayError::Replayed.to_string()))
            }
            ReplayError::Store(store) => Rejection::ReplayUnavailable(store),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_kept_while_its_token_can_pass() {
        assert_eq!(kept_until_ms(Some(1_000.0), Duration::from_secs(60), 5), 1_000_000 + 61_000);
        assert_eq!(kept_until_ms(None, Duration::ZERO, 5), 5 + 86_400_000 + 1_000, "no exp: a day");
        assert_eq!(kept_until_ms(Some(-3.0), Duration::ZERO, 5), 5 + 86_400_000 + 1_000);
    }

    #[test]
    fn extreme_durations_and_exp_saturate() {
        // `leeway = "18446744073709551615s"` is a config `runway check` accepts, and `leeway + 1s` panicked on
        // every one_time request of that issuer (fuzz/fuzz_targets/config.rs now runs this check).
        assert_eq!(kept_until_ms(Some(1_000.0), Duration::from_secs(u64::MAX), 5), u64::MAX);
        assert_eq!(kept_until_ms(None, Duration::MAX, u64::MAX), u64::MAX);
        // An exp past u64 milliseconds plus the leeway used to wrap (release) to a moment long past: the
        // jti was forgotten at once and the token could be replayed.
        assert_eq!(kept_until_ms(Some(1e300), Duration::from_secs(60), 5), u64::MAX);
        assert_eq!(kept_until_ms(Some(f64::INFINITY), Duration::from_secs(60), 5), u64::MAX);
    }
}
