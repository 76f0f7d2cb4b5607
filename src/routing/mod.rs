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

pub mod layer;

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

/// Decodes the path for matching and refuses any spelling that a server behind Runway (Kong, Tomcat, Spring,
/// Jetty, IIS, nginx) could read as a different path than the one routed here:
///
/// - `;` anywhere, raw or as `%3B`: Tomcat and Jetty strip `;…` path parameters from each segment, so
///   `/a/..;/b` is `/b` to them and `/deploy/production;x` is `/deploy/production`;
/// - `%` not followed by two hex digits (`%u002e`, `%zz`, a trailing `%`): IIS reads `%uXXXX`, others refuse
///   or pass it through;
/// - an encoded `/`, `\` or `%` (a backend that decodes once more sees another path);
/// - invalid or overlong UTF-8 once decoded, control characters and `\`;
/// - Unicode look-alikes that normalisers (NFKC, Windows best-fit) fold into `.`, `/`, `\`, `;` or `%`;
/// - `.`, `..` and empty segments in any spelling (`%2e`, `.%2E`, …), and a segment ending in `.` or ` `
///   (Windows servers drop it: `/admin./` is `/admin/` to IIS).
///
/// One trailing `/` is allowed. A plain path (ASCII, no `%`, `;` or `\`) is checked without allocating.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, RouteError> {
    if !raw.starts_with('/') {
        return Err(RouteError::BadPath("request path must start with '/'"));
    }
    let plain = raw.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'%' | b';' | b'\\'));
    let decoded = if plain { Cow::Borrowed(raw) } else { decode_path(raw)? };
    check_segments(&decoded)?;
    Ok(decoded)
}

/// The slow path of [`normalize_path`]: escapes checked and decoded, then every character checked.
fn decode_path(raw: &str) -> Result<Cow<'_, str>, RouteError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(at) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + at;
        let byte = match (bytes.get(at + 1).and_then(hex), bytes.get(at + 2).and_then(hex)) {
            (Some(hi), Some(lo)) => (hi << 4) | lo,
            _ => return Err(RouteError::BadPath("request path holds a '%' not followed by two hex digits")),
        };
        match byte {
            b'/' | b'\\' | b'%' => {
                return Err(RouteError::BadPath("request path holds an encoded '/', '\\' or '%'"));
            }
            b';' => return Err(SEMICOLON),
            _ => {}
        }
        i = at + 3;
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| RouteError::BadPath("request path is not valid UTF-8 once decoded"))?;
    for c in decoded.chars() {
        match c {
            ';' => return Err(SEMICOLON),
            '\\' => return Err(RouteError::BadPath("request path holds '\\' or control characters")),
            c if c.is_control() => return Err(RouteError::BadPath("request path holds '\\' or control characters")),
            c if !c.is_ascii() && LOOKALIKES.binary_search(&c).is_ok() => {
                return Err(RouteError::BadPath(
                    "request path holds a Unicode look-alike of '.', '/', '\\', ';' or '%' (normalisers fold it)",
                ));
            }
            _ => {}
        }
    }
    Ok(decoded)
}

const SEMICOLON: RouteError =
    RouteError::BadPath("request path holds ';' (path parameters such as '..;' or ';jsessionid' are refused)");

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

/// `.`, `..` and empty segments in the decoded path (one trailing `/` allowed), and segments that Windows
/// servers trim (a trailing `.` or space).
fn check_segments(path: &str) -> Result<(), RouteError> {
    let body = path.strip_suffix('/').unwrap_or(path);
    if body.is_empty() {
        return Ok(());
    }
    for seg in body[1..].split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(RouteError::BadPath("request path holds '.', '..' or empty segments"));
        }
        if seg.ends_with(['.', ' ']) {
            return Err(RouteError::BadPath(
                "request path holds a segment ending in '.' or ' ' (Windows servers drop it)",
            ));
        }
    }
    Ok(())
}

/// Non-ASCII characters that a normaliser behind Runway could turn into `.`, `/`, `\`, `;` or `%`: every
/// character whose NFKC form holds one (Unicode 14), plus the slashes of Windows' best-fit mappings (U+2044,
/// U+2215, U+2216, U+29F5, U+29F8, U+29F9). Sorted, for binary search.
const LOOKALIKES: [char; 50] = [
    '\u{037E}',
    '\u{2024}',
    '\u{2025}',
    '\u{2026}',
    '\u{2044}',
    '\u{2100}',
    '\u{2101}',
    '\u{2105}',
    '\u{2106}',
    '\u{2215}',
    '\u{2216}',
    '\u{2488}',
    '\u{2489}',
    '\u{248A}',
    '\u{248B}',
    '\u{248C}',
    '\u{248D}',
    '\u{248E}',
    '\u{248F}',
    '\u{2490}',
    '\u{2491}',
    '\u{2492}',
    '\u{2493}',
    '\u{2494}',
    '\u{2495}',
    '\u{2496}',
    '\u{2497}',
    '\u{2498}',
    '\u{2499}',
    '\u{249A}',
    '\u{249B}',
    '\u{29F5}',
    '\u{29F8}',
    '\u{29F9}',
    '\u{33C2}',
    '\u{33C7}',
    '\u{33D8}',
    '\u{FE14}',
    '\u{FE19}',
    '\u{FE30}',
    '\u{FE52}',
    '\u{FE54}',
    '\u{FE68}',
    '\u{FE6A}',
    '\u{FF05}',
    '\u{FF0E}',
    '\u{FF0F}',
    '\u{FF1B}',
    '\u{FF3C}',
    '\u{1F100}',
];

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

    /// Routes a confused path could swap: a token allowed on `/deploy/staging` must not reach
    /// `/deploy/production`, an anonymous prefix must not reach `/admin`.
    fn confusable() -> RouteTable {
        RouteTable::new(&[
            route("root", None, "/", None),
            route("public", None, "/public", None),
            route("admin", None, "/admin", None),
            route("deploy", None, "/deploy", None),
            route("staging", None, "/deploy/staging", None),
            route("prod", None, "/deploy/production", None),
        ])
    }

    /// `(path, what the refusal must say)`: every spelling that Runway, Kong and the backends behind them
    /// (Tomcat, Spring, Jetty, IIS, nginx) could read as different paths.
    const REFUSED: &[(&str, &str)] = &[
        // Path parameters: Tomcat and Jetty drop ";..." from each segment, so "..;" is "..".
        ("/deploy/staging/..;/production/app", "';'"),
        ("/public/..;/admin", "';'"),
        ("/public/.;/admin", "';'"),
        ("/public/..;x=1/admin", "';'"),
        ("/deploy/production;x/app", "';'"),
        ("/deploy/production;jsessionid=1", "';'"),
        ("/deploy/production;", "';'"),
        ("/;/admin", "';'"),
        ("/deploy/production%3bx", "';'"),
        ("/deploy/production%3Bx/app", "';'"),
        ("/public/..%3b/admin", "';'"),
        ("/public/%2e%2e%3b/admin", "';'"),
        // Dot segments in every spelling, anywhere, also last.
        ("/deploy/.%2e/production", "'..'"),
        ("/deploy/%2e./production", "'..'"),
        ("/deploy/%2E%2E/production", "'..'"),
        ("/deploy/%2e%2E/production", "'..'"),
        ("/deploy/%2E/production", "'..'"),
        ("/deploy/staging/%2e%2e", "'..'"),
        ("/deploy/staging/%2e%2e/", "'..'"),
        ("/deploy/staging/..", "'..'"),
        ("/deploy/staging/../", "'..'"),
        ("/deploy/staging/.", "'..'"),
        ("/public/.%2E/admin", "'..'"),
        ("/..", "'..'"),
        ("/.", "'..'"),
        ("/%2e", "'..'"),
        ("/./", "'..'"),
        // Empty segments (nginx merges them, others do not).
        ("//admin", "empty segments"),
        ("/public//admin", "empty segments"),
        ("//", "empty segments"),
        ("/deploy/production//", "empty segments"),
        // Segments Windows servers trim.
        ("/deploy/production./app", "ending in '.'"),
        ("/deploy/production%2e/app", "ending in '.'"),
        ("/deploy/production.", "ending in '.'"),
        ("/deploy/.../production", "ending in '.'"),
        ("/deploy/production%20/app", "ending in '.' or ' '"),
        // '%' that is not an escape: IIS reads %uXXXX, others pass it on.
        ("/x/%u002e%u002e/y", "two hex digits"),
        ("/public/%u002e%u002e/admin", "two hex digits"),
        ("/a%zz", "two hex digits"),
        ("/a%", "two hex digits"),
        ("/a%2", "two hex digits"),
        ("/a%%32%65", "two hex digits"),
        ("/a%2g", "two hex digits"),
        ("/a%+1", "two hex digits"),
        // Encoded '/', '\\', '%' (a second decoding would see another path).
        ("/deploy%2fproduction", "encoded '/'"),
        ("/deploy%2Fproduction", "encoded '/'"),
        ("/public%5c..%5cadmin", "encoded '/'"),
        ("/public/%252e%252e/admin", "encoded '/'"),
        ("/a%25", "encoded '/'"),
        // Raw '\\', control characters, invalid and overlong UTF-8.
        ("/public\\..\\admin", "control characters"),
        ("/public/\u{0}", "control characters"),
        ("/a%00", "control characters"),
        ("/a%0a", "control characters"),
        ("/a%7f", "control characters"),
        ("/a%c2%85", "control characters"),
        ("/a\u{85}", "control characters"),
        ("/a\tb", "control characters"),
        ("/%ff", "UTF-8"),
        ("/%c0%ae%c0%ae/admin", "UTF-8"),
        ("/%e0%80%ae", "UTF-8"),
        ("/%c0%af", "UTF-8"),
        ("/%c3", "UTF-8"),
        ("/%ed%a0%80", "UTF-8"),
        // Unicode look-alikes, decoded or raw.
        ("/public/%EF%BC%8E%EF%BC%8E/admin", "look-alike"),
        ("/public/\u{FF0E}\u{FF0E}/admin", "look-alike"),
        ("/public\u{FF0F}..\u{FF0F}admin", "look-alike"),
        ("/public%EF%BC%8F..%EF%BC%8Fadmin", "look-alike"),
        ("/public\u{FF3C}admin", "look-alike"),
        ("/public/\u{2024}\u{2024}/admin", "look-alike"),
        ("/public/%E2%80%A4%E2%80%A4/admin", "look-alike"),
        ("/public/\u{2025}/admin", "look-alike"),
        ("/public\u{2215}admin", "look-alike"),
        ("/public%E2%88%95admin", "look-alike"),
        ("/public\u{2216}admin", "look-alike"),
        ("/public/\u{FE52}\u{FE52}/admin", "look-alike"),
        ("/public\u{FE68}admin", "look-alike"),
        ("/public%EF%B9%A8admin", "look-alike"),
        ("/deploy/production\u{037E}x", "look-alike"),
        ("/deploy/production\u{FF1B}x", "look-alike"),
        ("/a\u{FF05}2e", "look-alike"),
        // Not a path.
        ("deploy/production", "start with '/'"),
        ("", "start with '/'"),
        ("*", "start with '/'"),
    ];

    #[test]
    fn every_confusing_spelling_is_refused() {
        let t = confusable();
        let mut failures = Vec::new();
        for (path, says) in REFUSED {
            match t.find(None, path, &Method::POST) {
                Err(RouteError::BadPath(why)) if why.contains(says) => {}
                other => failures.push(format!("{path:?}: expected BadPath(..{says}..), got {}", name(other))),
            }
        }
        assert!(failures.is_empty(), "{} path(s) not refused as expected:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn legitimate_paths_still_route() {
        let t = confusable();
        for (path, route, decoded) in [
            ("/", "root", "/"),
            ("/deploy/production", "prod", "/deploy/production"),
            ("/deploy/production/", "prod", "/deploy/production/"),
            ("/deploy/production/app", "prod", "/deploy/production/app"),
            ("/deploy/%70roduction", "prod", "/deploy/production"),
            ("/deploy/%70roduction/app", "prod", "/deploy/production/app"),
            ("/deploy/%73taging/app", "staging", "/deploy/staging/app"),
            ("/files/caf%C3%A9", "root", "/files/café"),
            ("/files/caf%c3%a9/", "root", "/files/café/"),
            ("/files/café", "root", "/files/café"),
            ("/files/%E6%97%A5%E6%9C%AC", "root", "/files/日本"),
            ("/public/a.b/c.d.txt", "public", "/public/a.b/c.d.txt"),
            ("/public/.well-known/x", "public", "/public/.well-known/x"),
            ("/public/..x/.x/x..y", "public", "/public/..x/.x/x..y"),
            ("/public/%2ex", "public", "/public/.x"),
            ("/public/a%20b", "public", "/public/a b"),
            ("/public/a~b-c_d!$&'()*+,=:@", "public", "/public/a~b-c_d!$&'()*+,=:@"),
            ("/public/%3F%23", "public", "/public/?#"),
            ("/deploy/productionx", "deploy", "/deploy/productionx"),
            ("/administrator", "root", "/administrator"),
        ] {
            assert_eq!(name(t.find(None, path, &Method::POST)), route, "{path}");
            assert_eq!(normalize_path(path).ok().as_deref(), Some(decoded), "{path}");
        }
    }

    #[test]
    fn a_plain_path_is_not_copied() {
        for path in ["/", "/deploy/production/app", "/a.b/c-d_e~f/", "/x?y"] {
            assert!(matches!(normalize_path(path), Ok(Cow::Borrowed(p)) if p == path), "{path}");
        }
        // An escape-free non-ASCII path needs no copy either.
        assert!(matches!(normalize_path("/files/café"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize_path("/files/caf%C3%A9"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn the_look_alike_table_is_sorted_and_non_ascii() {
        assert!(LOOKALIKES.windows(2).all(|w| w[0] < w[1]));
        assert!(LOOKALIKES.iter().all(|c| !c.is_ascii()));
        for c in LOOKALIKES {
            let path = format!("/a{c}b");
            assert!(matches!(normalize_path(&path), Err(RouteError::BadPath(_))), "{path}");
        }
    }
}
