//! The per-request record: made once at the top of the pipeline (by `observe`), put in the request's
//! extensions, and filled in by each step as it decides (route, token fingerprint, identity, decision,
//! would-deny, whether the request was handed to Kong). Shared, not moved with the request: whichever
//! answer ends the request (a refusal, Kong's response, an upstream error or the whole-request timeout,
//! which drops the steps mid-way) is attributed to what had been decided by then.
//!
//! With `[tracing]`, the context also carries the request's trace ([`RequestTrace`]): fixed when the context is
//! made, so steps read it without the record's lock, and each opens its own span under it.

use std::sync::{Arc, Mutex, PoisonError};

use http::Request;

use crate::auth::Identity;
use crate::config::RouteMode;
use crate::error::Rejection;
use crate::otel::RequestTrace;
use crate::routing::Route;

/// An authentication or policy decision, for `auth_decisions_total`.
#[derive(Debug, Clone)]
pub struct AuthDecision {
    /// Issuer name, or `-` when the token named no configured issuer.
    pub issuer: String,
    /// Allowed by authentication and policy.
    pub allowed: bool,
    /// Closed-vocabulary reason (`none` when allowed).
    pub reason: &'static str,
}

/// A report-mode route's deny decision: the request is forwarded without identity.
#[derive(Debug, Clone)]
pub struct WouldDeny {
    /// Closed-vocabulary reason.
    pub reason: &'static str,
    /// Explanation.
    pub detail: String,
}

/// What had been decided about a request so far.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The request's id.
    pub request_id: Option<crate::request_id::RequestId>,
    /// The route, once routing succeeded (also on a 405).
    pub route: Option<Arc<Route>>,
    /// `token_sha256` of the presented token.
    pub token_sha256: Option<Arc<str>>,
    /// The verified identity.
    pub identity: Option<Arc<Identity>>,
    /// The latest authentication, policy or replay decision.
    pub decision: Option<AuthDecision>,
    /// A report-mode route's deny.
    pub would_deny: Option<WouldDeny>,
    /// Handed to Kong: the access decision was allow, whatever Kong or the connection did next.
    pub forwarded: bool,
    /// How long Kong took to send its response head, when it did.
    pub upstream_wait: Option<std::time::Duration>,
}

impl Record {
    /// `allow`, `deny` or `would_deny`.
    pub fn decision_label(&self) -> &'static str {
        match (&self.would_deny, self.forwarded) {
            (Some(_), _) => "would_deny",
            (None, true) => "allow",
            (None, false) => "deny",
        }
    }
}

/// See the module docs. Cloning shares the record.
#[derive(Debug, Clone, Default)]
pub struct RequestContext(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    record: Mutex<Record>,
    trace: Option<RequestTrace>,
}

impl RequestContext {
    /// A new record for a request with this id.
    pub fn new(request_id: Option<crate::request_id::RequestId>) -> Self {
        Self::traced(request_id, None)
    }

    /// A new record for a request with this id and, with `[tracing]`, its trace.
    pub fn traced(request_id: Option<crate::request_id::RequestId>, trace: Option<RequestTrace>) -> Self {
        RequestContext(Arc::new(Shared { record: Mutex::new(Record { request_id, ..Record::default() }), trace }))
    }

    /// The request's trace, with `[tracing]`.
    pub fn trace(&self) -> Option<&RequestTrace> {
        self.0.trace.as_ref()
    }

    /// The request's record; a detached empty one if the pipeline's top did not make one (unit tests).
    pub fn of<B>(req: &Request<B>) -> RequestContext {
        req.extensions().get::<RequestContext>().cloned().unwrap_or_default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        f(&mut self.0.record.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A copy of what has been decided so far.
    pub fn snapshot(&self) -> Record {
        self.with(|r| r.clone())
    }

    /// Takes the record out, once the response exists and no step will write to it again (no copies of its
    /// strings and claims per request).
    pub fn take(&self) -> Record {
        self.with(std::mem::take)
    }

    /// The route was chosen.
    pub fn set_route(&self, route: Arc<Route>) {
        self.with(|r| r.route = Some(route));
    }

    /// The presented token's fingerprint.
    pub fn set_token_sha256(&self, fingerprint: String) {
        self.with(|r| r.token_sha256 = Some(fingerprint.into()));
    }

    /// The token was verified.
    pub fn set_identity(&self, identity: Arc<Identity>) {
        self.with(|r| r.identity = Some(identity));
    }

    /// An authentication, policy or replay decision (the latest one counts).
    pub fn set_decision(&self, decision: AuthDecision) {
        self.with(|r| r.decision = Some(decision));
    }

    /// A report-mode route would have refused.
    pub fn set_would_deny(&self, would_deny: WouldDeny) {
        self.with(|r| r.would_deny = Some(would_deny));
    }

    /// Handed to Kong (`true`), or taken back because the client's body failed (`false`).
    pub fn set_forwarded(&self, forwarded: bool) {
        self.with(|r| r.forwarded = forwarded);
    }

    /// Kong's response head arrived after `wait`.
    pub fn set_upstream_wait(&self, wait: std::time::Duration) {
        self.with(|r| r.upstream_wait = Some(wait));
    }

    /// The one rule of report mode: on a report-mode route a refusal by authentication, policy or the
    /// replay check becomes a would-deny (recorded; the request goes on, without identity), elsewhere it is
    /// the answer.
    pub fn refuse(&self, route: &Route, rejection: Rejection) -> Result<(), Rejection> {
        if route.mode != RouteMode::Report {
            return Err(rejection);
        }
        let reason = rejection.reason();
        self.set_would_deny(WouldDeny { reason, detail: rejection.to_string() });
        Ok(())
    }

    /// The route, identity and whether a would-deny was recorded: what the steps after policy read.
    pub fn route_identity(&self) -> (Option<Arc<Route>>, Option<Arc<Identity>>, bool) {
        self.with(|r| (r.route.clone(), r.identity.clone(), r.would_deny.is_some()))
    }
}

/// Pieces for the steps' unit tests: a route, an identity, a last step that records what reached it.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::{IssuerKind, RouteConfig, RuleConfig};

    /// A route `r` on `/`, allowing issuer `gitlab` when `environment` is `production`.
    pub fn route(mode: RouteMode) -> Arc<Route> {
        build_route(mode, false)
    }

    /// An anonymous route `r` on `/`.
    pub fn anonymous_route() -> Arc<Route> {
        build_route(RouteMode::Enforce, true)
    }

    fn build_route(mode: RouteMode, anonymous: bool) -> Arc<Route> {
        let config = RouteConfig {
            name: "r".into(),
            host: None,
            path_prefix: "/".into(),
            methods: None,
            anonymous,
            mode,
            one_time: false,
            allow: vec![RuleConfig {
                issuer: "gitlab".into(),
                claims: vec![(crate::config::ClaimKey::Name("environment".into()), vec!["production".into()])],
            }],
        };
        crate::routing::RouteTable::new(&[config])
            .find(None, "/", &http::Method::GET)
            .unwrap_or_else(|e| panic!("test route: {e}"))
    }

    /// A verified gitlab identity with these claims.
    pub fn identity(claims: serde_json::Value) -> Arc<Identity> {
        Arc::new(Identity {
            issuer: "gitlab".into(),
            kind: IssuerKind::Gitlab,
            subject: "user-1".into(),
            claims,
            headers: vec![],
            token_sha256: "0123456789abcdef".into(),
        })
    }

    /// A request carrying a fresh context.
    pub fn request() -> (Request<()>, RequestContext) {
        let context = RequestContext::new(None);
        let mut req = Request::new(());
        req.extensions_mut().insert(context.clone());
        (req, context)
    }

    /// A last step that insists on tower's readiness contract: only the very instance that was polled
    /// ready may be called, once per poll (a clone starts unready), as with `tower::limit` or a buffer.
    #[derive(Debug, Default)]
    pub struct ReadyOnce {
        ready: bool,
    }

    impl Clone for ReadyOnce {
        fn clone(&self) -> Self {
            ReadyOnce { ready: false }
        }
    }

    impl tower::Service<Request<()>> for ReadyOnce {
        type Response = crate::Response;
        type Error = Rejection;
        type Future = std::future::Ready<crate::layer::StepResult>;

        fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Rejection>> {
            self.ready = true;
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            let was_ready = std::mem::replace(&mut self.ready, false);
            std::future::ready(match was_ready {
                true => Ok(http::Response::new(http_body_util::Either::Right(http_body_util::Full::new(
                    bytes::Bytes::new(),
                )))),
                false => Err(Rejection::BadGateway("called without poll_ready".into())),
            })
        }
    }

    /// A last step answering 200 and counting its calls.
    pub fn last_step() -> (
        impl tower::Service<
            Request<()>,
            Response = crate::Response,
            Error = Rejection,
            Future = std::future::Ready<crate::layer::StepResult>,
        > + Clone,
        Arc<AtomicUsize>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let service = tower::service_fn(move |_req: Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(http::Response::new(http_body_util::Either::Right(http_body_util::Full::new(
                bytes::Bytes::new(),
            )))))
        });
        (service, calls)
    }
}
