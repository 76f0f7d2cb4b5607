//! `runway explain`: one request through routing, verification and policy, without forwarding. First every
//! step with the actual values (a reading for people), then the request itself through the proxy's own
//! pipeline ([`Runtime::pipeline`]) with a recording last step in place of the forwarder: the verdict and
//! the headers Kong would receive come from that run, so they cannot drift from what the proxy does. On
//! `one_time` routes the run uses a private in-memory replay store: explaining never uses a jti up.

use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Empty, Full};
use serde_json::Value;
use tower::ServiceExt;

use crate::context::RequestContext;

use crate::auth::{self, AuthError, Identity, jwt::Jwt};
use crate::config::RouteMode;
use crate::proxy::Runtime;
use crate::routing::RouteError;

/// The outcome, mapped to the exit code by the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Kong would receive the request (exit 0).
    Allow,
    /// Runway would refuse it, or forward it without identity in report mode (exit 1).
    Deny,
}

/// Explains `method url` with `token`; returns the verdict and the report.
pub async fn explain(runtime: &Runtime, method: &Method, url: &Uri, token: Option<&str>) -> (Verdict, String) {
    let mut out = String::new();
    revocations(runtime, &mut out).await;
    let reading = run(runtime, method, url, token, &mut out).await;
    let verdict = through_pipeline(runtime, method, url, token, &mut out).await;
    if reading != verdict {
        let _ =
            writeln!(out, "note:      the reading above disagrees with the pipeline; the pipeline's verdict stands");
    }
    let _ = writeln!(out, "decision:  {}", if verdict == Verdict::Allow { "allow" } else { "deny" });
    (verdict, out)
}

/// Loads the shared revocations (with Redis) so that the run sees the set the replicas enforce.
async fn revocations(runtime: &Runtime, out: &mut String) {
    let set = &runtime.revocations;
    match set.store_kind() {
        "redis" => match set.refresh().await {
            Ok(()) => {
                let _ = writeln!(out, "revocations: {} in force (loaded from Redis)", set.list().len());
            }
            Err(e) => {
                let _ = writeln!(out, "revocations: could not be loaded from Redis ({e}); none is applied here");
            }
        },
        _ => {
            let _ = writeln!(
                out,
                "revocations: memory store: each running Runway holds its own (`runway revocations list`); none here"
            );
        }
    }
}

/// What reached the last step: the headers Kong would receive, and whether it was a report-mode would-deny.
#[derive(Debug, Clone)]
struct Reached {
    headers: HeaderMap,
    would_deny: Option<&'static str>,
}

/// The last step of the explained pipeline: records what it receives and answers 200.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Option<Reached>>>);

impl Recorder {
    fn take(&self) -> Option<Reached> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl<B> tower::Service<Request<B>> for Recorder {
    type Response = crate::Response;
    type Error = crate::error::Rejection;
    type Future = std::future::Ready<crate::layer::StepResult>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let would_deny = RequestContext::of(&req).snapshot().would_deny.map(|w| w.reason);
        let reached = Reached { headers: req.headers().clone(), would_deny };
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(reached);
        std::future::ready(Ok(http::Response::new(http_body_util::Either::Right(Full::new(Bytes::new())))))
    }
}

/// Runs the request through the proxy's pipeline, ending in a [`Recorder`].
async fn through_pipeline(
    runtime: &Runtime,
    method: &Method,
    url: &Uri,
    token: Option<&str>,
    out: &mut String,
) -> Verdict {
    let mut req = Request::builder().method(method.clone()).uri(url.path_and_query().map_or("/", |p| p.as_str()));
    if let Some(authority) = url.authority() {
        req = req.header(http::header::HOST, authority.as_str());
    }
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let Ok(req) = req.body(Empty::<Bytes>::new()) else {
        let _ = writeln!(out, "pipeline:  the request could not be built from --url and --token");
        return Verdict::Deny;
    };
    let recorder = Recorder::default();
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let pipeline = runtime.pipeline_with(peer, recorder.clone(), runtime.replay.as_ref().map(|r| r.private()));
    let Ok(response) = pipeline.oneshot(req).await;
    match recorder.take() {
        Some(Reached { headers, would_deny: None }) => {
            let _ = writeln!(out, "pipeline:  forwarded to Kong");
            print_headers(out, &headers, runtime);
            Verdict::Allow
        }
        Some(Reached { headers, would_deny: Some(reason) }) => {
            let _ = writeln!(out, "pipeline:  report mode: would_deny ({reason}), forwarded without identity headers");
            print_headers(out, &headers, runtime);
            Verdict::Deny
        }
        None => {
            let status = response.status().as_u16();
            let body = response.into_body();
            let detail = match body {
                http_body_util::Either::Right(full) => {
                    let bytes = full.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                    serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v["detail"].as_str().map(str::to_string))
                }
                http_body_util::Either::Left(_) => None,
            };
            let _ = writeln!(out, "pipeline:  refused: {} {}", status, detail.unwrap_or_default());
            Verdict::Deny
        }
    }
}

async fn run(runtime: &Runtime, method: &Method, url: &Uri, token: Option<&str>, out: &mut String) -> Verdict {
    let _ = writeln!(out, "request:   {method} {url}");
    let route = match runtime.routes.find(url.host(), url.path(), method) {
        Ok(route) => route,
        Err(e) => {
            let status = match &e {
                RouteError::BadPath(_) => 400,
                RouteError::NotFound => 404,
                RouteError::MethodNotAllowed { .. } => 405,
            };
            let _ = writeln!(out, "route:     none: {e} -> {status}");
            return Verdict::Deny;
        }
    };
    let methods = route.allow_header.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("any");
    let mode = if route.mode == RouteMode::Report { "report" } else { "enforce" };
    let _ = writeln!(out, "route:     \"{}\" (methods {methods}, mode {mode})", route.name);
    if route.anonymous {
        let _ = writeln!(out, "token:     not needed: anonymous route (no identity headers are sent)");
        return Verdict::Allow;
    }
    let identity = match verify(runtime, token, out).await {
        Ok(identity) => identity,
        Err(e) => {
            let rejection = crate::error::Rejection::from(e);
            return refuse(out, &route, &rejection.to_string(), rejection.status().as_u16());
        }
    };
    if let Some(r) = runtime.revocations.matching(&identity) {
        let json = r.to_json();
        let _ = writeln!(
            out,
            "revoked:   revocation {} (issuer \"{}\", claims {}, reason {}, by {}, until {})",
            r.id,
            r.issuer,
            json["claims"],
            json["reason"],
            json["revoked_by"],
            json["expires"].as_str().unwrap_or("?")
        );
        return refuse(out, &route, "token revoked", 401);
    }
    let _ = writeln!(out, "policy:    allow rules are OR-ed; the conditions of a rule are AND-ed");
    let reports = route.policy.report(&identity);
    if reports.is_empty() {
        let _ = writeln!(out, "  (no allow rules: default deny)");
    }
    for (i, rule) in reports.iter().enumerate() {
        let verdict = if rule.allows() { "matches" } else { "does not match" };
        let issuer = if rule.issuer_matches { "ok" } else { "token is from another issuer" };
        let _ = writeln!(out, "  rule {} (issuer \"{}\": {issuer}): {verdict}", i + 1, rule.issuer);
        for c in &rule.conditions {
            let mark = if c.passed { "ok" } else { "FAILS" };
            let _ = writeln!(out, "    {} = {}, expected {}: {mark}", c.claim, c.actual, c.expected);
        }
    }
    match route.policy.evaluate(&identity) {
        Ok(()) => {
            if route.one_time {
                match identity.claims.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty()) {
                    Some(jti) => {
                        let _ =
                            writeln!(out, "replay:    one_time route: jti {jti:?} passes once (explain uses none up)");
                    }
                    None => return refuse(out, &route, "token has no jti (one_time route)", 401),
                }
            }
            Verdict::Allow
        }
        Err(detail) => refuse(out, &route, &detail, 403),
    }
}

fn refuse(out: &mut String, route: &crate::routing::Route, why: &str, status: u16) -> Verdict {
    if route.mode == RouteMode::Report {
        let _ = writeln!(out, "refusal:   {status} {why}");
        let _ = writeln!(out, "report:    report mode: audited as would_deny and forwarded without identity headers");
    } else {
        let _ = writeln!(out, "refusal:   {status} {why}");
    }
    Verdict::Deny
}

async fn verify(runtime: &Runtime, token: Option<&str>, out: &mut String) -> Result<Identity, AuthError> {
    let Some(token) = token else {
        let _ = writeln!(out, "token:     none given");
        return Err(AuthError::Missing);
    };
    let _ = writeln!(out, "token:     {} bytes, sha256 {}", token.len(), auth::fingerprint(token));
    if token.starts_with(auth::aws::TOKEN_PREFIX) {
        return verify_aws(runtime, token, out).await;
    }
    let jwt = Jwt::parse(token)?;
    let h = &jwt.header;
    let _ = writeln!(
        out,
        "header:    alg {}, kid {}, typ {}",
        h.alg,
        h.kid.as_deref().unwrap_or("(none)"),
        h.typ.as_deref().unwrap_or("(none)")
    );
    let Some(issuer) = runtime.auth.issuer_for(&jwt) else {
        let iss = jwt.issuer().unwrap_or("(none)");
        let _ = writeln!(out, "issuer:    iss {iss:?} is not a configured issuer");
        return Err(AuthError::invalid(auth::Reason::WrongIssuer, "token issuer is not trusted here"));
    };
    let c = &issuer.config;
    let _ = writeln!(out, "issuer:    \"{}\" (kind {}, iss {})", c.name, c.kind.as_str(), c.issuer);
    let alg = jwt.check_header(&c.algorithms)?;
    let _ = writeln!(out, "algorithm: {alg:?} allowed for this issuer");
    if !issuer.keys.current().loaded
        && let Err(e) = issuer.keys.load_now().await
    {
        let _ = writeln!(out, "keys:      could not be loaded: {e}");
    }
    let _ = writeln!(out, "keys:      {} usable", issuer.keys.current().len());
    issuer.verify_signature(&jwt, alg).await?;
    let _ = writeln!(out, "signature: valid");
    time_claims(out, &jwt.claims, c);
    auth::jwt::check_claims(&jwt.claims, &issuer.claim_rules(), auth::unix_now())?;
    let _ = writeln!(out, "claims:    iss, aud, exp, nbf, iat and lifetime accepted");
    let identity = Identity::from_claims(c, jwt.claims.clone(), &auth::fingerprint(token))?;
    let _ = writeln!(out, "identity:  sub {:?}", identity.subject);
    Ok(identity)
}

/// kind aws: what the presigned URL says and which issuers its STS endpoint selects, then the proxy's own
/// verification, STS call included.
async fn verify_aws(runtime: &Runtime, token: &str, out: &mut String) -> Result<Identity, AuthError> {
    let _ = writeln!(out, "format:    aws presigned STS GetCallerIdentity URL (k8s-aws-v1)");
    if let Ok(p) = auth::aws::Presigned::parse(token) {
        let at = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(p.signed_at));
        let age = auth::unix_now() as i64 - i64::try_from(p.signed_at).unwrap_or(i64::MAX);
        let region = p.region.as_deref().unwrap_or("(none)");
        let _ = writeln!(
            out,
            "sts:       {} (credential region {region}), signed headers {}",
            p.endpoint, p.signed_headers
        );
        let _ = writeln!(
            out,
            "  signed   X-Amz-Date {at} ({age}s ago); accepted 15 minutes from then (X-Amz-Expires {}s)",
            p.expires_in
        );
        let candidates = runtime.auth.aws().map(|a| a.issuers_for(&p.endpoint)).unwrap_or_default();
        if candidates.is_empty() {
            let _ = writeln!(out, "issuer:    no aws issuer allows this STS endpoint (STS is not called)");
        } else {
            let names: Vec<String> = candidates.iter().map(|n| format!("\"{n}\"")).collect();
            let _ = writeln!(out, "issuer:    candidates {} (kind aws); STS is asked", names.join(", "));
        }
    }
    let digest = auth::TokenDigest::of(token);
    match runtime.auth.authenticate(token, &digest).await {
        Ok(identity) => {
            let text = |name: &str| identity.claims.get(name).and_then(Value::as_str).unwrap_or("(none)").to_string();
            let _ = writeln!(out, "sts call:  accepted for audience {:?}: issuer \"{}\"", text("aud"), identity.issuer);
            let _ = writeln!(
                out,
                "identity:  sub {:?} (raw_arn {}, account {}, session {})",
                identity.subject,
                text("raw_arn"),
                text("account"),
                text("session_name")
            );
            Ok((*identity).clone())
        }
        Err(refusal) => {
            if let Some(issuer) = &refusal.issuer {
                let _ = writeln!(out, "issuer:    \"{issuer}\" (kind aws)");
            }
            Err(refusal.error)
        }
    }
}

fn time_claims(out: &mut String, claims: &Value, c: &crate::config::IssuerConfig) {
    let now = auth::unix_now();
    let _ = writeln!(out, "  iss      {}", claims.get("iss").map_or("(missing)".into(), Value::to_string));
    let _ = writeln!(
        out,
        "  aud      {} (accepted: {})",
        claims.get("aud").map_or("(missing)".into(), Value::to_string),
        c.audiences.join(", ")
    );
    for name in ["exp", "nbf", "iat"] {
        let text = match claims.get(name).map(|v| (v, v.as_f64())) {
            None | Some((_, None)) => "(missing)".to_string(),
            Some((raw, Some(t))) => {
                let delta = t - now;
                let when =
                    if delta >= 0.0 { format!("in {}s", delta as i64) } else { format!("{}s ago", -delta as i64) };
                match rfc3339(t) {
                    Some(at) => format!("{} = {at} ({when})", t as i64),
                    None => format!("{raw} (not a date: {when})"),
                }
            }
        };
        let _ = writeln!(out, "  {name}      {text}");
    }
    let _ =
        writeln!(out, "  limits   leeway {}s, max lifetime {}s", c.leeway.as_secs(), c.max_token_lifetime.as_secs());
}

/// A time claim (Unix seconds) as an RFC 3339 date, when it is one this can show (up to the year 9999). A
/// signed token may hold any number (an IdP writing milliseconds makes the year 55000): the claim checks
/// refuse it, and explain must get as far as saying so.
fn rfc3339(t: f64) -> Option<String> {
    let since_epoch = std::time::Duration::try_from_secs_f64(t.max(0.0)).ok()?;
    let at = std::time::UNIX_EPOCH.checked_add(since_epoch)?;
    let mut text = String::new();
    // Past 9999 humantime answers with a formatting error, which `format!` would turn into a panic.
    write!(text, "{}", humantime::format_rfc3339_seconds(at)).ok()?;
    Some(text)
}

/// The headers the recorder saw, as Kong would get them: the signed assertion is a credential for Kong, so it
/// is shown by its kid, never by value.
fn print_headers(out: &mut String, headers: &HeaderMap, runtime: &Runtime) {
    let _ = writeln!(out, "headers to Kong (as the pipeline set them):");
    let assertion = runtime.assertion.as_ref().map(|a| (a.header().clone(), a.kid()));
    let mut names: Vec<&http::HeaderName> = headers.keys().collect();
    names.sort_by_key(|n| n.as_str());
    for name in names {
        for value in headers.get_all(name) {
            match &assertion {
                Some((header, kid)) if header == name => {
                    let _ = writeln!(out, "  {name}: Bearer <ES256 assertion, kid {kid}>");
                }
                _ => {
                    let _ = writeln!(out, "  {name}: {}", String::from_utf8_lossy(value.as_bytes()));
                }
            }
        }
    }
}
