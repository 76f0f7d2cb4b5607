//! What the rules ask of a config, computed once: whether a route is a production, deploy or mutating one,
//! what an allow rule's conditions admit, and the keys findings name. Rules read these facts; they never
//! re-derive them, so "production" means the same thing to the GitLab and the GitHub rules.

use http::Method;

use crate::config::{ClaimKey, Config, IssuerConfig, RouteConfig, RuleConfig};
use crate::policy::Pattern;

/// A text no real claim holds: a pattern that matches it matches anything in its place.
pub const PROBE: &str = "runway-lint-probe";

/// One route and what its name, host, prefix and methods say about it.
#[derive(Debug)]
pub struct RouteFacts<'a> {
    /// The route.
    pub route: &'a RouteConfig,
    /// `routes[i]`.
    pub key: String,
    /// Its name, host or prefix has the word `prod` or `production`.
    pub production: bool,
    /// It changes something: any method, or POST, PUT, PATCH or DELETE.
    pub mutating: bool,
    /// Production, mutating, or named for deploying or releasing.
    pub deploy: bool,
}

impl<'a> RouteFacts<'a> {
    /// The facts of `routes[index]`.
    pub fn new(index: usize, route: &'a RouteConfig) -> RouteFacts<'a> {
        let production = says_any(route, &["prod", "production"]);
        let mutating = route.methods.as_ref().is_none_or(|methods| {
            methods.iter().any(|m| [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(m))
        });
        let deploy = production
            || mutating
            || says_any(route, &["deploy", "deploys", "deployment", "deployments", "release", "releases", "publish"]);
        RouteFacts { route, key: format!("routes[{index}]"), production, mutating, deploy }
    }
}

/// Whether the route's name, host or path prefix holds one of `words` as a whole word (`prod` is in
/// `deploy-prod` and `prod.example.com`, not in `product-catalog`).
fn says_any(route: &RouteConfig, words: &[&str]) -> bool {
    let texts = [Some(route.name.as_str()), route.host.as_deref(), Some(route.path_prefix.as_str())];
    texts.into_iter().flatten().flat_map(|t| t.split(|c: char| !c.is_ascii_alphanumeric())).any(|word| {
        let word = word.to_ascii_lowercase();
        words.contains(&word.as_str())
    })
}

/// One allow rule, with the route it belongs to and the issuer it names.
#[derive(Debug)]
pub struct RuleFacts<'a> {
    /// The route's facts.
    pub route: &'a RouteFacts<'a>,
    /// The rule.
    pub rule: &'a RuleConfig,
    /// The issuer it names.
    pub issuer: &'a IssuerConfig,
    /// `routes[i].allow[j]`.
    pub key: String,
}

impl RuleFacts<'_> {
    /// The patterns of the condition on top-level claim `name`, if the rule has one.
    pub fn condition(&self, name: &str) -> Option<&[String]> {
        self.rule.claims.iter().find_map(|(claim, patterns)| match claim {
            ClaimKey::Name(n) if n == name => Some(patterns.as_slice()),
            _ => None,
        })
    }

    /// The key of the condition on `claim`, as config errors name it: `routes[i].allow[j].claims."name"`.
    pub fn claim_key(&self, claim: &str) -> String {
        format!("{}.claims.\"{claim}\"", self.key)
    }

    /// Whether the rule requires claim `name` to be exactly `value` (every pattern is that text).
    pub fn requires_exactly(&self, name: &str, value: &str) -> bool {
        self.condition(name).is_some_and(|patterns| patterns.iter().all(|p| p == value))
    }

    /// Whether the condition on `name` exists and no pattern in it is a bare glob admitting anything.
    pub fn pins(&self, name: &str) -> bool {
        self.condition(name).is_some_and(|patterns| !admits(patterns, PROBE))
    }
}

/// Every allow rule of the config whose issuer exists, route by route, rule by rule.
pub fn rules<'a>(config: &'a Config, routes: &'a [RouteFacts<'a>]) -> Vec<RuleFacts<'a>> {
    let mut out = Vec::new();
    for route in routes {
        for (j, rule) in route.route.allow.iter().enumerate() {
            // Validation refuses a rule naming an unknown issuer, so the lookup cannot miss.
            if let Some(issuer) = config.issuers.iter().find(|i| i.name == rule.issuer) {
                out.push(RuleFacts { route, rule, issuer, key: format!("{}.allow[{j}]", route.key) });
            }
        }
    }
    out
}

/// Whether any of `patterns` matches `text`, as policy would match a claim holding it.
pub fn admits(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| Pattern::new(p).matches(text))
}

/// Whether a `namespace/name` pattern (a GitLab `project_path`, a GitHub `repository`) can match outside one
/// fixed top-level namespace: its text before the first `*` holds no `/` (`*`, `plat*`, `*/api`,
/// `platform*/api`). `platform/*` stays inside `platform/` (sub-groups included), which its owners control.
pub fn crosses_namespace(pattern: &str) -> bool {
    pattern.find('*').is_some_and(|star| !pattern[..star].contains('/'))
}

/// Quotes patterns for a message: `"a", "b"`.
pub fn quoted(patterns: &[&String]) -> String {
    patterns.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteMode;

    fn route(name: &str, host: Option<&str>, prefix: &str, methods: Option<&[Method]>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            methods: methods.map(<[Method]>::to_vec),
            anonymous: false,
            mode: RouteMode::Enforce,
            one_time: false,
            allow: vec![],
        }
    }

    #[test]
    fn production_is_a_whole_word() {
        let get = Some(&[Method::GET][..]);
        let cases = [
            (route("deploy-production", None, "/x", get), true),
            (route("x", Some("prod.example.com"), "/x", get), true),
            (route("x", None, "/api/Prod/deploy", get), true),
            (route("product-catalog", Some("products.example.com"), "/products", get), false),
            (route("staging", None, "/deploy/staging", get), false),
        ];
        for (r, production) in cases {
            assert_eq!(RouteFacts::new(0, &r).production, production, "{r:?}");
        }
    }

    #[test]
    fn deploy_and_mutating() {
        let read_only = route("catalog", None, "/catalog", Some(&[Method::GET, Method::HEAD]));
        let facts = RouteFacts::new(3, &read_only);
        assert!(!facts.mutating && !facts.deploy);
        assert_eq!(facts.key, "routes[3]");
        assert!(RouteFacts::new(0, &route("catalog", None, "/catalog", None)).mutating, "any method mutates");
        assert!(RouteFacts::new(0, &route("c", None, "/c", Some(&[Method::PATCH]))).deploy);
        assert!(RouteFacts::new(0, &route("release-notes", None, "/r", Some(&[Method::GET]))).deploy);
    }

    #[test]
    fn namespace_crossing_globs() {
        for crossing in ["*", "plat*", "*/api", "platform*/api", "*platform/api"] {
            assert!(crosses_namespace(crossing), "{crossing}");
        }
        for inside in ["platform/api", "platform/*", "platform/tools/*", "platform/*/deploy", "platform/ap*"] {
            assert!(!crosses_namespace(inside), "{inside}");
        }
    }
}
