//! Rules on `[[routes]]` themselves, whatever the issuers: report mode, anonymous routes next to protected
//! ones, and routes no request can reach. Validation already refuses what cannot work at all (a duplicate
//! host and prefix, a prefix no normalized path equals); these are the configs that load but do not do what
//! they seem to.

use http::Method;
use http::uri::Authority;

use super::finding::{Finding, Rule, Severity};
use crate::config::{RouteConfig, RouteMode};

/// A route in report mode.
pub const REPORT_MODE: Rule = Rule {
    id: "route-report-mode",
    severity: Severity::Info,
    summary: "a route with mode = \"report\" (forwards what it would deny)",
    source: "Runway contract section 2 (mode = \"report\": shadow rollout)",
};
/// An anonymous route around or inside a protected one.
pub const ANONYMOUS_OVERLAP: Rule = Rule {
    id: "anonymous-overlaps-protected",
    severity: Severity::Warning,
    summary: "an anonymous route whose prefix covers, or lies inside, a protected route's on the same host",
    source: "Kong: route paths are plain prefixes, not segments (docs.konghq.com/gateway/latest/key-concepts/routes); \
             OWASP ASVS V4.1 (deny by default)",
};
/// A route no request can select or pass strict parsing on.
pub const UNREACHABLE: Rule = Rule {
    id: "route-unreachable",
    severity: Severity::Warning,
    summary: "a route no request can reach: a host no Host header can carry, or only CONNECT",
    source: "RFC 9110 section 7.2 (Host = uri-host [\":\" port]); Runway contract section 4 (CONNECT refused)",
};

/// Every route-level finding.
pub fn check(routes: &[RouteConfig]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        findings.extend(report_mode(i, route));
        findings.extend(anonymous_overlap(routes, i));
        findings.extend(unreachable(i, route));
    }
    findings
}

fn report_mode(i: usize, route: &RouteConfig) -> Option<Finding> {
    (route.mode == RouteMode::Report).then(|| {
        REPORT_MODE
            .at(
                format!("routes[{i}].mode"),
                format!("route \"{}\" is in report mode: it forwards every request", route.name),
            )
            .explain(
                "Requests its policy denies, with an invalid token or none, still reach Kong (without identity \
                 headers): the route protects nothing until it is switched to enforce.",
                "Once the audit log shows no unexpected would_deny, remove mode = \"report\".",
            )
    })
}

/// Whether routes with these hosts can receive the same request: one has no host, or both have the same.
fn same_hosts(a: &RouteConfig, b: &RouteConfig) -> bool {
    match (&a.host, &b.host) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// Whether `prefix` covers `path` segment-wise (`/api` covers `/api` and `/api/x`, not `/apix`).
fn covers(prefix: &str, path: &str) -> bool {
    prefix == "/" || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

fn anonymous_overlap(routes: &[RouteConfig], i: usize) -> Option<Finding> {
    let anonymous = &routes[i];
    if !anonymous.anonymous {
        return None;
    }
    let protected = routes.iter().filter(|p| !p.anonymous && same_hosts(anonymous, p));
    let (around, inside): (Vec<&RouteConfig>, Vec<&RouteConfig>) = protected
        .filter(|p| covers(&anonymous.path_prefix, &p.path_prefix) || covers(&p.path_prefix, &anonymous.path_prefix))
        .partition(|p| covers(&anonymous.path_prefix, &p.path_prefix));
    if around.is_empty() && inside.is_empty() {
        return None;
    }
    let names = |list: &[&RouteConfig]| list.iter().map(|r| format!("\"{}\"", r.name)).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if !around.is_empty() {
        parts.push(format!("covers protected route(s) {}", names(&around)));
    }
    if !inside.is_empty() {
        parts.push(format!("lies inside protected route(s) {}", names(&inside)));
    }
    Some(
        ANONYMOUS_OVERLAP
            .at(
                format!("routes[{i}].path_prefix"),
                format!("anonymous route \"{}\" ({}) {}", anonymous.name, anonymous.path_prefix, parts.join(" and ")),
            )
            .explain(
                "Whatever the protected route does not catch falls through to the anonymous one: another Host \
                 for a host-bound route, or a path such as /deploy-x that Kong's plain-prefix route for \
                 /deploy still sends to the protected service; a prefix inside a protected one opens a hole \
                 in it.",
                "Give the anonymous route a prefix of its own that no protected route shares (e.g. /status, \
                 /public), on the same host as the protected routes.",
            ),
    )
}

fn unreachable(i: usize, route: &RouteConfig) -> Option<Finding> {
    let only_connect = route.methods.as_ref().is_some_and(|m| m.iter().all(|m| *m == Method::CONNECT));
    let (key, why, fix) = if only_connect {
        (
            format!("routes[{i}].methods"),
            "accepts only CONNECT, which Runway refuses with 400 before routing".to_string(),
            "List the methods the upstream serves (GET, POST, ...).".to_string(),
        )
    } else {
        let host = route.host.as_deref()?;
        let why = host_problem(host)?;
        (format!("routes[{i}].host"), why, "Write the host exactly as clients send it in Host: ASCII (punycode for international names), no wildcards.".to_string())
    };
    Some(UNREACHABLE.at(key, format!("route \"{}\" {why}", route.name)).explain(
        "No request ever reaches the route, so what it was meant to guard is served by another route (or 404s): \
         the policy written here is never applied.",
        fix,
    ))
}

/// Why no Host header can name `host`, if none can.
fn host_problem(host: &str) -> Option<String> {
    if host.contains('*') {
        return Some(format!("has host \"{host}\": hosts are compared exactly, `*` is not a wildcard"));
    }
    // A Host header is `uri-host [":" port]` in visible ASCII: what strict parsing lets through to routing.
    let parsed = host.parse::<Authority>().ok();
    let valid = host.is_ascii() && parsed.is_some_and(|a| a.as_str() == host && a.port().is_none());
    (!valid).then(|| format!("has host \"{host}\", which no Host header can carry"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_cover() {
        assert!(covers("/", "/anything"));
        assert!(covers("/api", "/api") && covers("/api", "/api/x"));
        assert!(!covers("/api", "/apix") && !covers("/api/x", "/api"));
    }

    #[test]
    fn hosts_no_request_names() {
        assert_eq!(host_problem("deploy.example.com"), None);
        assert_eq!(host_problem("10.0.0.1"), None);
        assert!(host_problem("*.example.com").is_some_and(|w| w.contains("wildcard")));
        assert!(host_problem("deploy example.com").is_some());
        assert!(host_problem("bücher.example").is_some());
    }
}
