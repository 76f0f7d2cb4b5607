//! `runway explain`: one request through routing, verification and policy, without forwarding, printing
//! every step with the actual values. It calls the same functions the proxy uses, in the same order, so
//! its verdict is the proxy's.

use std::fmt::Write;

use http::{Method, Uri};
use serde_json::Value;

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
    let verdict = run(runtime, method, url, token, &mut out).await;
    let _ = writeln!(out, "decision:  {}", if verdict == Verdict::Allow { "allow" } else { "deny" });
    (verdict, out)
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
        headers(out, &route.name, None, url);
        return Verdict::Allow;
    }
    let identity = match verify(runtime, token, out).await {
        Ok(identity) => identity,
        Err(e) => {
            let rejection = crate::error::Rejection::from(e);
            return refuse(out, &route, &rejection.to_string(), rejection.status().as_u16(), url);
        }
    };
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
                    None => return refuse(out, &route, "token has no jti (one_time route)", 401, url),
                }
            }
            headers(out, &route.name, Some(&identity), url);
            if let Some(a) = &runtime.assertion {
                let _ =
                    writeln!(out, "  {}: Bearer <ES256 assertion, kid {}, ttl from [assertion]>", a.header(), a.kid());
            }
            Verdict::Allow
        }
        Err(detail) => refuse(out, &route, &detail, 403, url),
    }
}

fn refuse(out: &mut String, route: &crate::routing::Route, why: &str, status: u16, url: &Uri) -> Verdict {
    if route.mode == RouteMode::Report {
        let _ = writeln!(out, "refusal:   {status} {why}");
        let _ = writeln!(out, "report:    report mode: audited as would_deny and forwarded without identity headers");
        headers(out, &route.name, None, url);
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

fn headers(out: &mut String, route: &str, identity: Option<&Identity>, url: &Uri) {
    let _ = writeln!(out, "headers to Kong (after stripping Authorization and every client-sent X-Runway-*):");
    let _ = writeln!(out, "  x-runway-route: {route}");
    for (name, value) in identity.map(|i| i.headers.as_slice()).unwrap_or_default() {
        let _ = writeln!(out, "  {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    let _ = writeln!(out, "  x-request-id: (the client's, or a new UUID)");
    let _ = writeln!(out, "  x-forwarded-for: (the client's address)");
    let _ = writeln!(out, "  x-forwarded-proto: https");
    if let Some(host) = url.authority() {
        let _ = writeln!(out, "  x-forwarded-host: {host}");
    }
}
