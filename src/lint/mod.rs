//! `runway lint`: an offline review of the trust policy of a validated [`Config`]. Validation says whether a
//! config can work; lint says whether it trusts too much: a GitLab rule that pins no project, a GitHub `sub`
//! glob admitting any repository, a production route that any branch can call, an audience two issuers share.
//!
//! This module owns the rule list ([`RULES`]) and the order findings come in (issuers, then routes and their
//! allow rules, in file order). Each provider's rules live in their own module, built on that provider's
//! documented claims; [`facts`] computes what they share (is a route production? does a pattern admit
//! anything?), [`report`] prints findings as text, JSON or a GitLab Code Quality report.

mod aws;
mod claims;
mod facts;
mod finding;
mod github;
mod gitlab;
mod issuers;
mod locate;
mod oidc;
mod okta;
pub mod report;
mod routes;

pub use finding::{Counts, Finding, Rule, Severity};

use crate::config::{Config, IssuerKind};
use facts::RouteFacts;

/// Every rule, with its stable id and severity (the README's table lists the same).
pub const RULES: &[Rule] = &[
    gitlab::UNPINNED_PROJECT,
    gitlab::PROJECT_GLOB,
    gitlab::UNPROTECTED_REF,
    gitlab::PRODUCTION_ENVIRONMENT,
    gitlab::MERGE_REQUEST_PIPELINE,
    gitlab::UNKNOWN_CLAIM,
    github::UNPINNED_REPOSITORY,
    github::SUB_GLOB,
    github::PULL_REQUEST,
    github::PRODUCTION_ENVIRONMENT,
    github::UNKNOWN_CLAIM,
    github::DEFAULT_AUDIENCE,
    okta::NO_CLIENT_OR_SCOPE,
    aws::ANY_ACCOUNT,
    oidc::NO_CONDITIONS,
    issuers::SHARED_AUDIENCE,
    issuers::LONG_LIFETIME,
    issuers::LARGE_LEEWAY,
    routes::REPORT_MODE,
    routes::ANONYMOUS_OVERLAP,
    routes::UNREACHABLE,
];

/// Every finding for `config`: issuers first, then each route and its allow rules, in file order.
pub fn lint(config: &Config) -> Vec<Finding> {
    let mut findings = issuers::check(&config.issuers);
    for (i, issuer) in config.issuers.iter().enumerate() {
        if issuer.kind == IssuerKind::Github {
            findings.extend(github::check_issuer(i, issuer));
        }
    }
    let routes: Vec<RouteFacts<'_>> = config.routes.iter().enumerate().map(|(i, r)| RouteFacts::new(i, r)).collect();
    let mut by_route = routes::check(&config.routes);
    for rule in facts::rules(config, &routes) {
        let found = match rule.issuer.kind {
            IssuerKind::Gitlab => gitlab::check(&rule),
            IssuerKind::Github => github::check(&rule),
            IssuerKind::Okta => okta::check(&rule).into_iter().collect(),
            IssuerKind::Aws => aws::check(&rule).into_iter().collect(),
            IssuerKind::Oidc => oidc::check(&rule).into_iter().collect(),
        };
        by_route.extend(found);
    }
    // Keys start with `routes[i]`: a stable sort by route index keeps each route's findings together.
    by_route.sort_by_key(|f| route_index(&f.key));
    findings.extend(by_route);
    findings
}

/// `i` of a key starting `routes[i]`.
fn route_index(key: &str) -> usize {
    key.strip_prefix("routes[").and_then(|rest| rest.split(']').next()).and_then(|i| i.parse().ok()).unwrap_or(0)
}

/// Whether any finding is at or above `fail_on` (the `runway lint` exit status).
pub fn fails(findings: &[Finding], fail_on: Severity) -> bool {
    findings.iter().any(|f| f.severity >= fail_on)
}
