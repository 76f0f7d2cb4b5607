//! Rules for `kind = "gitlab"` issuers (GitLab CI `id_tokens`), built on GitLab's documented ID token claims
//! (docs.gitlab.com/ci/secrets/id_token_authentication, "Token payload"). Every GitLab instance signs tokens
//! for every job of every project on it, and on GitLab.com anyone can create a project: the rule's claims
//! are the whole authorization boundary.

use super::claims::Vocabulary;
use super::facts::{PROBE, RuleFacts, admits, crosses_namespace, quoted};
use super::finding::{Finding, Rule, Severity};

const SOURCE: &str = "GitLab: OpenID Connect (OIDC) Authentication Using ID Tokens, Token payload \
                      (docs.gitlab.com/ci/secrets/id_token_authentication)";

/// A rule trusting any project on the instance.
pub const UNPINNED_PROJECT: Rule = Rule {
    id: "gitlab-unpinned-project",
    severity: Severity::Error,
    summary: "a GitLab rule with no project_path, project_id, namespace_path or namespace_id condition",
    source: SOURCE,
};
/// A `project_path` glob reaching outside one namespace.
pub const PROJECT_GLOB: Rule = Rule {
    id: "gitlab-project-glob",
    severity: Severity::Error,
    summary: "a project_path (or namespace_path) pattern whose `*` comes before the first `/` (`*`, `plat*`, `*/api`)",
    source: SOURCE,
};
/// A mutating route reachable from unprotected branches.
pub const UNPROTECTED_REF: Rule = Rule {
    id: "gitlab-unprotected-ref",
    severity: Severity::Warning,
    summary: "a GitLab rule on a route accepting POST, PUT, PATCH or DELETE without ref_protected = \"true\"",
    source: "GitLab: ID token claim ref_protected; Protected branches (docs.gitlab.com/user/project/repository/branches/protected)",
};
/// A production route not bound to a protected environment.
pub const PRODUCTION_ENVIRONMENT: Rule = Rule {
    id: "gitlab-production-environment",
    severity: Severity::Error,
    summary: "a GitLab rule on a production route without an environment and environment_protected = \"true\"",
    source: "GitLab: ID token claims environment and environment_protected; Protected environments \
             (docs.gitlab.com/ci/environments/protected_environments)",
};
/// Merge request pipelines admitted to a deploy route.
pub const MERGE_REQUEST_PIPELINE: Rule = Rule {
    id: "gitlab-merge-request-pipeline",
    severity: Severity::Error,
    summary: "pipeline_source admitting merge_request_event (or external_pull_request_event) on a deploy route",
    source: "GitLab: ID token claim pipeline_source; Merge request pipelines from forks \
             (docs.gitlab.com/ci/pipelines/merge_request_pipelines)",
};
/// A condition on a claim GitLab never issues.
pub const UNKNOWN_CLAIM: Rule = Rule {
    id: "gitlab-unknown-claim",
    severity: Severity::Warning,
    summary: "a GitLab rule condition on a claim GitLab's ID tokens never carry",
    source: SOURCE,
};

/// GitLab's documented ID token claims (GitLab 18.9), RFC 7519's registered claims aside.
const CLAIMS: &[&str] = &[
    "namespace_id",
    "namespace_path",
    "project_id",
    "project_path",
    "user_id",
    "user_login",
    "user_email",
    "user_access_level",
    "user_identities",
    "job_project_id",
    "job_project_path",
    "job_namespace_id",
    "job_namespace_path",
    "pipeline_id",
    "pipeline_source",
    "job_id",
    "job_source",
    "job_config",
    "ref",
    "ref_type",
    "ref_path",
    "ref_protected",
    "groups_direct",
    "environment",
    "environment_protected",
    "deployment_tier",
    "environment_action",
    "runner_id",
    "runner_environment",
    "sha",
    "ci_config_ref_uri",
    "ci_config_sha",
    "project_visibility",
];

const VOCABULARY: Vocabulary = Vocabulary {
    provider: "GitLab",
    rule: UNKNOWN_CLAIM,
    claims: CLAIMS,
    prefixes: &[],
    reference: "docs.gitlab.com/ci/secrets/id_token_authentication, \"Token payload\"",
};

/// The pipeline sources whose jobs run code that has not been merged (a merge request's, a fork's included).
const MERGE_REQUEST_SOURCES: &[&str] = &["merge_request_event", "external_pull_request_event"];

/// Every GitLab rule's findings for one allow rule.
pub fn check(rule: &RuleFacts<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    findings.extend(unpinned_project(rule));
    findings.extend(project_glob(rule));
    findings.extend(unprotected_ref(rule));
    findings.extend(production_environment(rule));
    findings.extend(merge_request_pipeline(rule));
    findings.extend(VOCABULARY.check(rule));
    findings
}

/// Claims holding a `group/project` or `group` path: a pattern that stays inside one group pins the rule
/// (`project_*` is the project whose code runs, for a merge request pipeline from a fork the fork;
/// `job_project_*` the project the job runs in). A group pin (`namespace_path`, `"group/*"`) trusts that
/// group's owners, as a project list does.
const PATH_PINS: &[&str] = &["project_path", "job_project_path", "namespace_path", "job_namespace_path"];
/// Claims holding the numeric ids of the same: pinned when exact.
const ID_PINS: &[&str] = &["project_id", "job_project_id", "namespace_id", "job_namespace_id"];

fn project_pinned(rule: &RuleFacts<'_>) -> bool {
    let path =
        |claim: &&str| rule.condition(claim).is_some_and(|patterns| !patterns.iter().any(|p| crosses_namespace(p)));
    let id = |claim: &&str| rule.condition(claim).is_some_and(|patterns| !patterns.iter().any(|p| p.contains('*')));
    let sub = rule.condition("sub").is_some_and(|subs| subs.iter().all(|p| sub_pins_project(p)));
    PATH_PINS.iter().any(path) || ID_PINS.iter().any(id) || sub
}

/// Whether a `sub` pattern in GitLab's format (`project_path:GROUP/PROJECT:ref_type:TYPE:ref:REF`) names the
/// project, or a group, without a glob crossing into other groups.
fn sub_pins_project(pattern: &str) -> bool {
    pattern
        .strip_prefix("project_path:")
        .is_some_and(|rest| !crosses_namespace(rest.split(':').next().unwrap_or_default()))
}

fn unpinned_project(rule: &RuleFacts<'_>) -> Option<Finding> {
    if project_pinned(rule) || PATH_PINS.iter().any(|claim| rule.condition(claim).is_some()) {
        // A path condition that is there but too wide is project_glob's finding, with the pattern named.
        return None;
    }
    Some(
        UNPINNED_PROJECT
            .at(
                rule.key.clone(),
                format!(
                    "rule for issuer \"{}\" pins no project or group (no project_path, project_id, namespace_path, \
                     namespace_id or `project_path:GROUP/PROJECT:...` sub condition)",
                    rule.issuer.name
                ),
            )
            .explain(
                "Every job of every project on the GitLab instance gets a token with this audience on request \
                 (`id_tokens: aud:` is chosen by the job): anyone who can create a project or push a branch \
                 anywhere on the instance (on GitLab.com: anyone) passes this rule.",
                "Add project_path = [\"group/project\", ...] (or project_id) listing the projects allowed here; \
                 use \"group/*\" or namespace_path only for a group you control.",
            ),
    )
}

fn project_glob(rule: &RuleFacts<'_>) -> Vec<Finding> {
    if project_pinned(rule) {
        return Vec::new();
    }
    PATH_PINS
        .iter()
        .filter_map(|claim| {
            let wide: Vec<&String> = rule.condition(claim)?.iter().filter(|p| crosses_namespace(p)).collect();
            (!wide.is_empty()).then(|| {
                PROJECT_GLOB
                    .at(
                        rule.claim_key(claim),
                        format!(
                            "{claim} {} reaches outside one group: `*` matches any characters, '/' included",
                            quoted(&wide)
                        ),
                    )
                    .explain(
                        "A pattern such as \"plat*\" also matches \"platform-evil/x\", and \"*/api\" any group's \
                         \"api\": whoever creates a group or personal namespace with a matching name gets tokens \
                         this rule accepts.",
                        "Start every pattern with a full group path and a '/': \"platform/api\", \"platform/*\".",
                    )
            })
        })
        .collect()
}

fn unprotected_ref(rule: &RuleFacts<'_>) -> Option<Finding> {
    if !rule.route.mutating || rule.requires_exactly("ref_protected", "true") {
        return None;
    }
    Some(
        UNPROTECTED_REF
            .at(
                rule.key.clone(),
                format!(
                    "route \"{}\" accepts {} but the rule does not require ref_protected = \"true\"",
                    rule.route.route.name,
                    methods(rule)
                ),
            )
            .explain(
                "Any developer of an allowed project can push a branch of their own (no review, no protection) \
                 and run a pipeline on it whose token passes this rule.",
                "Add ref_protected = \"true\" so only pipelines of protected branches and tags pass.",
            ),
    )
}

fn production_environment(rule: &RuleFacts<'_>) -> Option<Finding> {
    if !rule.route.production {
        return None;
    }
    let missing = match (rule.pins("environment"), rule.requires_exactly("environment_protected", "true")) {
        (true, true) => return None,
        (false, false) => "an environment condition or environment_protected = \"true\"",
        (false, true) => "an environment condition naming the production environment",
        (true, false) => "environment_protected = \"true\"",
    };
    Some(
        PRODUCTION_ENVIRONMENT
            .at(rule.key.clone(), format!("production route \"{}\" is missing {missing}", rule.route.route.name))
            .explain(
                "Any job of an allowed project can call production: a test or lint job, or one declaring \
                 `environment: production` on its own (GitLab creates environments on first use); only a \
                 protected environment limits who may deploy to it.",
                "Require environment = \"production\" and environment_protected = \"true\", and make the \
                 environment protected in GitLab (Settings > CI/CD > Protected environments).",
            ),
    )
}

fn merge_request_pipeline(rule: &RuleFacts<'_>) -> Option<Finding> {
    let sources = rule.condition("pipeline_source")?;
    let admitted: Vec<&str> = MERGE_REQUEST_SOURCES.iter().copied().filter(|s| admits(sources, s)).collect();
    if !rule.route.deploy || admitted.is_empty() {
        return None;
    }
    let wildcard = if admits(sources, PROBE) { " (a pattern admits any source)" } else { "" };
    Some(
        MERGE_REQUEST_PIPELINE
            .at(
                rule.claim_key("pipeline_source"),
                format!(
                    "pipeline_source admits {}{wildcard} on deploy route \"{}\"",
                    admitted.join(" and "),
                    rule.route.route.name
                ),
            )
            .explain(
                "A merge request pipeline runs the merge request's code before anyone approved it, a fork's \
                 included: its author can make the job call this route with a valid token.",
                "List the sources that run merged code only, e.g. pipeline_source = [\"push\", \"web\"], and \
                 keep ref_protected = \"true\".",
            ),
    )
}

/// The methods a route accepts, for messages.
fn methods(rule: &RuleFacts<'_>) -> String {
    match &rule.route.route.methods {
        None => "any method".to_string(),
        Some(list) => list.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", "),
    }
}
