//! Routing: host + segment-aware path prefix + method, most specific route first (a route with a host over
//! one without, then the longest prefix). Lookups walk the request path's own prefixes against hash maps,
//! so the cost depends on the path's depth, not on the number of routes. Keys are hashed with foldhash: only
//! config-defined prefixes are ever inserted, so request paths cannot provoke collisions.

use std::borrow::Cow;
use std::sync::Arc;

use foldhash::HashMap;
use http::{HeaderValue, Method};
use percent_encoding::percent_decode_str;

use crate::config::{RouteConfig, RouteMode};
use crate::policy::Policy;

/// A route at run time.
#[derive(Debug)]
pub struct Route {
    /// Route name.
    pub name: String,
    /// `name` as a header value.
    pub name_header: HeaderValue,
    /// Allowed methods (`None` = any).
    pub methods: Option<Vec<Method>>,
    /// `Allow` header value for 405s.
    pub allow_header: Option<HeaderValue>,
    /// No token needed.
    pub anonymous: bool,
    /// Enforce or report.
    pub mode: RouteMode,
    /// Each token's `jti` passes once.
    pub one_time: bool,
    /// Compiled allow rules.
    pub policy: Policy,
}

/// Why no route serves a request.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The path is ambiguous (dot segments, encoded slashes…) and could be read differently behind us.
    #[error("{0}")]
    BadPath(&'static str),
    /// No route.
    #[error("no route for this path")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed on route \"{}\"", route.name)]
    MethodNotAllowed {
        /// The route.
        route: Arc<Route>,
        /// `Allow` header.
        allow: HeaderValue,
    },
}

#[derive(Debug, Default)]
struct Prefixes(HashMap<String, Arc<Route>>);

/// All routes, precompiled.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_host: HashMap<String, Prefixes>,
    any_host: Prefixes,
}

impl RouteTable {
    /// Compiles routes.
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let mut table = RouteTable::default();
        for r in routes {
            let allow_header = r
                .methods
                .as_ref()
                .and_then(|m| HeaderValue::from_str(&m.iter().map(Method::as_str).collect::<Vec<_>>().join(", ")).ok());
            let route = Arc::new(Route {
                name: r.name.clone(),
                name_header: HeaderValue::from_str(&r.name).unwrap_or_else(|_| HeaderValue::from_static("invalid")),
                methods: r.methods.clone(),
                allow_header,
                anonymous: r.anonymous,
                mode: r.mode,
                one_time: r.one_time,
                policy: Policy::compile(&r.allow),
            });
            let bucket = match &r.host {
                Some(h) => table.by_host.entry(h.clone()).or_default(),
                None => &mut table.any_host,
            };
            bucket.0.insert(r.path_prefix.clone(), route);
        }
        table
    }

    /// Finds the route for a request. `host` may carry a port; `path` is the raw request path.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Result<Arc<Route>, RouteError> {
        let path = normalize_path(path)?;
        let host = host.map(strip_port);
        let route = host
            .and_then(|h| lookup_host(&self.by_host, &h))
            .and_then(|prefixes| prefixes.longest(&path))
            .or_else(|| self.any_host.longest(&path))
            .ok_or(RouteError::NotFound)?;
        match (&route.methods, &route.allow_header) {
            (Some(methods), Some(allow)) if !methods.contains(method) => {
                Err(RouteError::MethodNotAllowed { route: route.clone(), allow: allow.clone() })
            }
            _ => Ok(route.clone()),
        }
    }
}

fn lookup_host<'a>(by_host: &'a HashMap<String, Prefixes>, host: &str) -> Option<&'a Prefixes> {
    if by_host.is_empty() {
        return None;
    }
    match by_host.get(host) {
        Some(p) => Some(p),
        None if host.bytes().any(|b| b.is_ascii_uppercase()) => by_host.get(&host.to_ascii_lowercase()),
        None => None,
    }
}

impl Prefixes {
    fn longest(&self, path: &str) -> Option<&Arc<Route>> {
        if self.0.is_empty() {
            return None;
        }
        let mut candidate = path.trim_end_matches('/');
        loop {
            if let Some(route) = self.0.get(if candidate.is_empty() { "/" } else { candidate }) {
                return Some(route);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
        }
    }
}

/// Host without port (IPv6 literals keep their brackets) and without a trailing dot.
fn strip_port(host: &str) -> Cow<'_, str> {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    Cow::Borrowed(host)
}

/// Decodes the path for matching and refuses any spelling that a server behind Runway could read as a
/// different path: dot segments, empty segments, encoded `/` or `\`, control characters, invalid UTF-8.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, RouteError> {
    if !raw.starts_with('/') {
        return Err(RouteError::BadPath("request path must start with '/'"));
    }
    let decoded = if raw.contains('%') {
        let text = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| RouteError::BadPath("request path is not valid UTF-8 once decoded"))?;
        let lower = raw.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%25") {
            return Err(RouteError::BadPath("request path holds an encoded '/', '\\' or '%'"));
        }
        text
    } else {
        Cow::Borrowed(raw)
    };
    if decoded.contains('\\') || decoded.chars().any(char::is_control) {
        return Err(RouteError::BadPath("request path holds '\\' or control characters"));
    }
    let body = decoded.strip_suffix('/').unwrap_or(&decoded);
    if body.len() > 1 && body[1..].split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Err(RouteError::BadPath("request path holds '.', '..' or empty segments"));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteMode;

    fn route(name: &str, host: Option<&str>, prefix: &str, methods: Option<&[&str]>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: host.map(str::to_string),
            path_prefix: prefix.into(),
            methods: methods.map(|m| m.iter().map(|s| Method::from_bytes(s.as_bytes()).expect("method")).collect()),
            anonymous: false,
            mode: RouteMode::Enforce,
            one_time: false,
            allow: vec![],
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route("root", None, "/", None),
            route("deploy", None, "/deploy", None),
            route("prod", None, "/deploy/production", Some(&["POST", "PUT"])),
            route("host-deploy", Some("deploy.example.com"), "/deploy", None),
        ])
    }

    fn name(r: Result<Arc<Route>, RouteError>) -> String {
        r.map(|r| r.name.clone()).unwrap_or_else(|e| format!("{e:?}"))
    }

    #[test]
    fn most_specific_wins() {
        let t = table();
        let post = Method::POST;
        assert_eq!(name(t.find(None, "/deploy/production", &post)), "prod");
        assert_eq!(name(t.find(None, "/deploy/production/x/y", &post)), "prod");
        assert_eq!(name(t.find(None, "/deploy/productionx", &post)), "deploy", "segment-aware");
        assert_eq!(name(t.find(None, "/deploy/", &post)), "deploy");
        assert_eq!(name(t.find(None, "/other", &post)), "root");
        assert_eq!(name(t.find(Some("deploy.example.com:8443"), "/deploy/production", &post)), "host-deploy");
        assert_eq!(name(t.find(Some("DEPLOY.example.com"), "/deploy", &post)), "host-deploy");
        assert_eq!(name(t.find(Some("deploy.example.com"), "/x", &post)), "root", "host routes fall back to hostless");
    }

    #[test]
    fn method_not_allowed_names_allow() {
        let t = table();
        match t.find(None, "/deploy/production", &Method::GET) {
            Err(RouteError::MethodNotAllowed { allow, .. }) => assert_eq!(allow, "POST, PUT"),
            other => panic!("{other:?}"),
        }
        let empty = RouteTable::new(&[route("a", None, "/a", None)]);
        assert!(matches!(empty.find(None, "/b", &Method::GET), Err(RouteError::NotFound)));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let t = table();
        for p in [
            "/deploy/staging/../production",
            "/deploy/./production",
            "/deploy//production",
            "/deploy%2fproduction",
            "/a%5cb",
            "/a\\b",
            "/%2e%2e/x",
            "/a%00",
            "/%ff",
            "x",
            "/a%252f",
        ] {
            assert!(matches!(t.find(None, p, &Method::POST), Err(RouteError::BadPath(_))), "{p}");
        }
        assert_eq!(name(t.find(None, "/deploy/%70roduction", &Method::POST)), "prod", "decoded before matching");
    }
}

/// Picks the route (404/405/400 before the token is looked at) and puts it in the request extensions.
#[derive(Clone)]
pub struct RouteLayer {
    table: Arc<RouteTable>,
}

impl RouteLayer {
    /// Over this table.
    pub fn new(table: Arc<RouteTable>) -> Self {
        RouteLayer { table }
    }
}

impl<S> tower::Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteService { inner, table: self.table.clone() }
    }
}

/// See [`RouteLayer`].
#[derive(Clone)]
pub struct RouteService<S> {
    inner: S,
    table: Arc<RouteTable>,
}

impl<S, B> tower::Service<http::Request<B>> for RouteService<S>
where
    S: crate::layer::Inner<B>,
    B: Send + 'static,
{
    type Response = crate::Response;
    type Error = std::convert::Infallible;
    type Future = crate::layer::BoxResponseFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let host = req
            .uri()
            .host()
            .map(str::to_string)
            .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string));
        match self.table.find(host.as_deref(), req.uri().path(), req.method()) {
            Ok(route) => {
                req.extensions_mut().insert(route);
                Box::pin(self.inner.call(req))
            }
            Err(e) => {
                // A 405 still belongs to its route, in metrics and in the audit log.
                if let RouteError::MethodNotAllowed { route, .. } = &e {
                    req.extensions_mut().insert(route.clone());
                }
                crate::layer::reject(&req, e.into())
            }
        }
    }
}
