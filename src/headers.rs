//! Header rewriting (contract section 3): what a client sent that Kong must never see, and what Runway
//! vouches for instead.
//!
//! Names are compared case-insensitively and with `_` read as `-`, because servers behind us may fold
//! underscores into dashes (`x_runway_subject` would otherwise reach Kong as `X-Runway-Subject`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use ipnet::IpNet;

use crate::error::Rejection;
use crate::forward::HOP_BY_HOP;
use crate::layer::Step;

/// Request headers above this total size are refused with 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_RUNWAY_ROUTE: HeaderName = HeaderName::from_static("x-runway-route");

/// The credential the client presented, lifted out of the headers before they are stripped.
#[derive(Debug, Clone)]
pub enum Credential {
    /// No `Authorization` header.
    None,
    /// One `Authorization` header.
    Present(HeaderValue),
    /// Several: ambiguous, refused.
    Ambiguous,
}

/// Where the request came from and whether its forwarding headers can be believed.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// Peer is in `trusted_proxies`.
    pub trusted: bool,
}

/// Lower-cases and reads `_` as `-`.
fn canonical(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('_') { name.replace('_', "-").into() } else { name.into() }
}

/// The header names Runway sets from its config (`[issuers.headers]` names, `[assertion] header`, and with
/// `[tracing]` the W3C `traceparent` and `tracestate`), in the canonical spelling (lower case, `-` for `_`): a
/// client's copy of any of them is stripped like `X-Runway-*`. (A trusted caller's trace context was read before
/// the strip, and continues in the `traceparent` Runway writes.)
#[derive(Debug, Clone, Default)]
pub struct Protected(Arc<[Box<str>]>);

impl Protected {
    /// Every configured name Runway sets on a request.
    pub fn from_config(config: &crate::config::Config) -> Protected {
        let issuer_headers = config.issuers.iter().flat_map(|i| i.headers.iter().map(|(name, _)| name.as_str()));
        let assertion = config.assertion.as_ref().map(|a| a.header.as_str());
        let trace_context = config.tracing.iter().flat_map(|_| ["traceparent", "tracestate"]);
        let mut names: Vec<Box<str>> =
            issuer_headers.chain(assertion).chain(trace_context).map(|n| canonical(n).into()).collect();
        names.sort_unstable();
        names.dedup();
        Protected(names.into())
    }

    fn contains(&self, canonical: &str) -> bool {
        self.0.iter().any(|n| **n == *canonical)
    }
}

/// Headers Runway sets on every forwarded request itself: a `Connection` header naming one of them is not
/// obeyed, so a client cannot remove what Runway adds (`X-Request-Id` is set before the strip runs).
fn runway_sets(canonical: &str) -> bool {
    canonical == "x-request-id" || canonical == "host"
}

fn must_strip(name: &str, connection_tokens: &[String], trusted: bool, protected: &Protected) -> bool {
    let c = canonical(name);
    let c = c.as_ref();
    c == "authorization"
        || c == "proxy-authorization"
        || c.starts_with("x-runway-")
        || HOP_BY_HOP.contains(&c)
        || connection_tokens.iter().any(|t| t == c)
        || (c == "x-request-id" && name != c)
        || (!trusted && (c == "forwarded" || c.starts_with("x-forwarded-") || c == "x-real-ip"))
        || protected.contains(c)
}

/// Strips credentials, every `X-Runway-*` spelling, the configured identity and assertion header names,
/// hop-by-hop headers and (unless trusted) forwarding headers. Returns the credential that was presented.
pub fn sanitize(headers: &mut HeaderMap, trusted: bool, protected: &Protected) -> Credential {
    let mut auth = headers.get_all(AUTHORIZATION).iter();
    let credential = match (auth.next(), auth.next()) {
        (None, _) => Credential::None,
        (Some(v), None) => Credential::Present(v.clone()),
        (Some(_), Some(_)) => Credential::Ambiguous,
    };
    let connection_tokens: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| canonical(&t.trim().to_ascii_lowercase()).into_owned())
        .filter(|t| !t.is_empty() && !runway_sets(t))
        .collect();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| must_strip(name.as_str(), &connection_tokens, trusted, protected))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
    credential
}

/// Total size of the request headers as sent.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// Adds `X-Forwarded-For`, `-Proto` and `-Host`.
pub fn add_forwarding(headers: &mut HeaderMap, peer: &Peer, host: Option<&HeaderValue>) {
    let ip = match peer.addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let ip_text = ip.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if peer.trusted => format!("{prior}, {ip_text}"),
        _ => ip_text,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    if !(peer.trusted && headers.contains_key(&X_FORWARDED_HOST))
        && let Some(h) = host
    {
        headers.insert(X_FORWARDED_HOST, h.clone());
    }
}

/// Whether `ip` is inside one of the trusted networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

/// The layer that strips spoofable headers and lifts the credential out. Runs before anything reads a
/// header, so nothing downstream can be fooled by what the client sent.
#[derive(Clone)]
pub struct SanitizeLayer {
    peer: Peer,
    protected: Protected,
}

impl SanitizeLayer {
    /// For one connection from `addr`, protecting the configured header names too.
    pub fn new(addr: SocketAddr, trusted_proxies: &[IpNet], protected: Protected) -> Self {
        SanitizeLayer { peer: Peer { addr, trusted: is_trusted(addr.ip(), trusted_proxies) }, protected }
    }
}

impl<S> tower::Layer<S> for SanitizeLayer {
    type Service = Sanitize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Sanitize { inner, peer: self.peer, protected: self.protected.clone() }
    }
}

/// See [`SanitizeLayer`].
#[derive(Clone)]
pub struct Sanitize<S> {
    inner: S,
    peer: Peer,
    protected: Protected,
}

impl<S, B> tower::Service<Request<B>> for Sanitize<S>
where
    S: crate::layer::Inner<B>,
{
    type Response = crate::Response;
    type Error = Rejection;
    type Future = Step<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if header_bytes(req.headers()) > MAX_HEADER_BYTES {
            return Step::refuse(Rejection::HeadersTooLarge { limit: MAX_HEADER_BYTES });
        }
        // Before anything is stripped: Transfer-Encoding, Upgrade and Host are read as the client sent them.
        if let Err(rejection) = crate::strict::check(&req) {
            return Step::refuse(rejection);
        }
        let credential = sanitize(req.headers_mut(), self.peer.trusted, &self.protected);
        req.extensions_mut().insert(credential);
        req.extensions_mut().insert(self.peer);
        Step::next(self.inner.call(req))
    }
}

/// The layer that adds what Runway vouches for: the route, the verified identity (when there is one and the
/// decision is allow), and the forwarding headers.
#[derive(Clone, Default)]
pub struct IdentityHeadersLayer;

impl<S> tower::Layer<S> for IdentityHeadersLayer {
    type Service = IdentityHeaders<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IdentityHeaders { inner }
    }
}

/// See [`IdentityHeadersLayer`].
#[derive(Clone)]
pub struct IdentityHeaders<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for IdentityHeaders<S>
where
    S: crate::layer::Inner<B>,
{
    type Response = crate::Response;
    type Error = Rejection;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let (route, identity, would_deny) = crate::context::RequestContext::of(&req).route_identity();
        let (parts, body) = req.into_parts();
        let mut parts = parts;
        if let Some(route) = &route {
            parts.headers.insert(X_RUNWAY_ROUTE, route.name_header.clone());
        }
        if let Some(identity) = identity.filter(|_| !would_deny) {
            for (name, value) in &identity.headers {
                parts.headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(peer) = parts.extensions.get::<Peer>().copied() {
            let host = crate::layer::request_host(&parts).and_then(|h| HeaderValue::from_str(h.as_str()).ok());
            add_forwarding(&mut parts.headers, &peer, host.as_ref());
        }
        req = Request::from_parts(parts, body);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn strips_every_spelling() {
        let mut h = headers(&[
            ("authorization", "Bearer x"),
            ("proxy-authorization", "Basic y"),
            ("x-runway-subject", "root"),
            ("x_runway_subject", "root"),
            ("X_RUNWAY_ISSUER", "gitlab"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x_forwarded_host", "evil"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "s"),
            ("te", "trailers"),
            ("x_request_id", "spoof"),
            ("x-request-id", "mine"),
            ("accept", "*/*"),
        ]);
        let cred = sanitize(&mut h, false, &Protected::default());
        assert!(matches!(cred, Credential::Present(v) if v == "Bearer x"));
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["accept", "x-request-id"]);
    }

    #[test]
    fn trusted_peers_keep_forwarding_headers() {
        let mut h = headers(&[("x-forwarded-for", "10.0.0.1"), ("x-forwarded-host", "a.example")]);
        sanitize(&mut h, true, &Protected::default());
        let peer = Peer { addr: "192.0.2.1:5000".parse().expect("addr"), trusted: true };
        add_forwarding(&mut h, &peer, Some(&HeaderValue::from_static("b.example")));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.1");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(is_trusted("10.1.2.3".parse().expect("ip"), &["10.0.0.0/8".parse().expect("net")]));
        assert!(!is_trusted("11.1.2.3".parse().expect("ip"), &["10.0.0.0/8".parse().expect("net")]));
    }

    #[test]
    fn configured_names_are_protected_in_every_spelling() {
        let protected = Protected(vec!["x-gitlab-namespace".into(), "x-kong-assertion".into()].into());
        let mut h = headers(&[
            ("x-gitlab-namespace", "admins"),
            ("X_GITLAB_NAMESPACE", "admins"),
            ("x_gitlab-namespace", "admins"),
            ("x-kong_assertion", "forged"),
            ("x-gitlab-namespaces", "kept"),
        ]);
        sanitize(&mut h, false, &protected);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["x-gitlab-namespaces"]);
    }

    #[test]
    fn connection_cannot_remove_what_runway_sets() {
        let mut h = headers(&[
            ("connection", "X-Request-Id, x_request_id, Host, X-Forwarded-For, X-Runway-Subject, x-other"),
            ("x-request-id", "runways-own"),
            ("host", "a.example"),
            ("x-other", "hop"),
        ]);
        sanitize(&mut h, false, &Protected::default());
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["host", "x-request-id"]);
    }

    #[test]
    fn two_authorization_headers_are_ambiguous() {
        let mut h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(matches!(sanitize(&mut h, false, &Protected::default()), Credential::Ambiguous));
    }
}
