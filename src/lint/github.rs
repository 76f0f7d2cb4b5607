//! Rules for `kind = "github"` issuers (GitHub Actions OIDC tokens), built on GitHub's OpenID Connect
//! reference (docs.github.com/actions/reference/security/oidc): its claim list, its `sub` formats
//! (`repo:OWNER/REPO:environment:NAME`, `...:ref:refs/heads/BRANCH`, `...:pull_request`) and its note that
//! a trust policy must define conditions "so that untrusted repositories can't request access tokens".

use super::claims::Vocabulary;
use super::facts::{PROBE, RuleFacts, admits, crosses_namespace, quoted};
use super::finding::{Finding, Rule, Severity};
use crate::config::IssuerConfig;

const SOURCE: &str = "GitHub: OpenID Connect reference (docs.github.com/actions/reference/security/oidc)";

/// A rule trusting any repository.
pub const UNPINNED_REPOSITORY: Rule = Rule {
    id: "github-unpinned-repository",
    severity: Severity::Error,
    summary: "a GitHub rule with no repository, repository_id or `repo:OWNER/REPO:` sub pin",
    source: SOURCE,
};
/// A `sub` glob admitting any repository or any ref.
pub const SUB_GLOB: Rule = Rule {
    id: "github-sub-glob",
    severity: Severity::Error,
    summary: "a sub pattern admitting any repository (`repo:*`, `repo:org/*`) or any ref or branch (`repo:o/r:*`)",
    source: "GitHub: OpenID Connect reference, Example subject claims (docs.github.com/actions/reference/security/oidc)",
};
/// Pull request workflows admitted to a deploy route.
pub const PULL_REQUEST: Rule = Rule {
    id: "github-pull-request",
    severity: Severity::Error,
    summary: "event_name admitting pull_request or pull_request_target, or a `...:pull_request` sub, on a deploy route",
    source: "GitHub: OpenID Connect reference, Filtering for pull_request events; Securely using \
             pull_request_target (docs.github.com/actions/reference/security/securely-using-pull_request_target)",
};
/// A production route not bound to a GitHub environment.
pub const PRODUCTION_ENVIRONMENT: Rule = Rule {
    id: "github-production-environment",
    severity: Severity::Error,
    summary: "a GitHub rule on a production route without an environment (or `:environment:NAME` sub) condition",
    source: "GitHub: OpenID Connect reference, Filtering for a specific environment; Deployments and environments \
             (docs.github.com/actions/reference/workflows-and-actions/deployments-and-environments)",
};
/// A condition on a claim GitHub never issues.
pub const UNKNOWN_CLAIM: Rule = Rule {
    id: "github-unknown-claim",
    severity: Severity::Warning,
    summary: "a GitHub rule condition on a claim GitHub's OIDC tokens never carry",
    source: SOURCE,
};
/// An audience every workflow gets by default, or asks for when it talks to AWS.
pub const DEFAULT_AUDIENCE: Rule = Rule {
    id: "github-default-audience",
    severity: Severity::Warning,
    summary: "a GitHub issuer accepting GitHub's default audience (https://github.com/OWNER) or sts.amazonaws.com",
    source: "GitHub: OpenID Connect reference, aud (\"By default, this is the URL of the repository owner\"); \
             aws-actions/configure-aws-credentials (audience sts.amazonaws.com)",
};

/// GitHub's documented token claims (the reference's custom claims and `claims_supported` of
/// token.actions.githubusercontent.com), RFC 7519's registered claims aside.
const CLAIMS: &[&str] = &[
    "actor",
    "actor_id",
    "base_ref",
    "check_run_id",
    "enterprise",
    "enterprise_id",
    "environment",
    "environment_node_id",
    "event_name",
    "head_ref",
    "job_workflow_ref",
    "job_workflow_sha",
    "ref",
    "ref_protected",
    "ref_type",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repository_visibility",
    "run_attempt",
    "run_id",
    "run_number",
    "runner_environment",
    "sha",
    "workflow",
    "workflow_ref",
    "workflow_sha",
];

const VOCABULARY: Vocabulary = Vocabulary {
    provider: "GitHub",
    rule: UNKNOWN_CLAIM,
    claims: CLAIMS,
    // Repository custom properties chosen by the organization become `repo_property_<name>` claims.
    prefixes: &["repo_property_"],
    reference: "docs.github.com/actions/reference/security/oidc, \"OIDC token claims\"",
};

/// Events whose workflows run a pull request's code, or run with the base repository's rights on behalf of
/// a pull request.
const PULL_REQUEST_EVENTS: &[&str] = &["pull_request", "pull_request_target"];

/// Every GitHub rule's findings for one allow rule.
pub fn check(rule: &RuleFacts<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    findings.extend(unpinned_repository(rule));
    findings.extend(sub_glob(rule));
    findings.extend(pull_request(rule));
    findings.extend(production_environment(rule));
    findings.extend(VOCABULARY.check(rule));
    findings
}

/// A `sub` pattern in GitHub's default format: `repo:` + the repository + optionally `:` and the context
/// (`ref:...`, `environment:...`, `pull_request`). Custom subject templates have no `repo:` prefix.
struct Sub<'a> {
    repository: &'a str,
    context: Option<&'a str>,
}

fn parse_sub(pattern: &str) -> Option<Sub<'_>> {
    let rest = pattern.strip_prefix("repo:")?;
    Some(match rest.split_once(':') {
        Some((repository, context)) => Sub { repository, context: Some(context) },
        None => Sub { repository: rest, context: None },
    })
}

/// Whether a `sub` pattern names one owner's repositories (`repo:octo-org/x:...`, `repo:octo-org/*`).
fn sub_pins_owner(pattern: &str) -> bool {
    parse_sub(pattern).is_some_and(|sub| !crosses_namespace(sub.repository))
}

/// Claims holding an `owner/repo` or `owner` name: pinned by a pattern that stays inside one owner. An owner
/// pin (`repository_owner`, `"owner/*"`) trusts every repository of that owner, as a list of them does.
const NAME_PINS: &[&str] = &["repository", "repository_owner"];
/// Claims holding the numeric ids of the same (they survive renames, and a freed name cannot take them).
const ID_PINS: &[&str] = &["repository_id", "repository_owner_id"];

fn repository_pinned(rule: &RuleFacts<'_>) -> bool {
    let name =
        |claim: &&str| rule.condition(claim).is_some_and(|patterns| !patterns.iter().any(|p| crosses_namespace(p)));
    let id = |claim: &&str| rule.condition(claim).is_some_and(|patterns| !patterns.iter().any(|p| p.contains('*')));
    let sub = rule.condition("sub").is_some_and(|subs| subs.iter().all(|p| sub_pins_owner(p)));
    NAME_PINS.iter().any(name) || ID_PINS.iter().any(id) || sub
}

fn unpinned_repository(rule: &RuleFacts<'_>) -> Option<Finding> {
    if repository_pinned(rule) {
        return None;
    }
    let wide = NAME_PINS.iter().find_map(|claim| {
        let wide: Vec<&String> = rule.condition(claim)?.iter().filter(|p| crosses_namespace(p)).collect();
        (!wide.is_empty()).then_some((*claim, wide))
    });
    let (key, message) = match wide {
        Some((claim, wide)) => (
            rule.claim_key(claim),
            format!("{claim} {} reaches outside one owner: `*` matches any characters, '/' included", quoted(&wide)),
        ),
        None => (
            rule.key.clone(),
            format!(
                "rule for issuer \"{}\" pins no repository (no repository, repository_id, repository_owner or \
                 `repo:OWNER/REPO:` sub condition)",
                rule.issuer.name
            ),
        ),
    };
    Some(UNPINNED_REPOSITORY.at(key, message).explain(
        "Any workflow in any repository on GitHub can ask for a token with this audience (the audience is \
         chosen by the workflow): anyone with a GitHub account passes this rule.",
        "Add repository = \"owner/repo\" (or repository_id, which survives renames and is never reused), or a \
         sub pattern such as \"repo:owner/repo:environment:production\".",
    ))
}

/// What a `sub` pattern admits that it should not, if anything.
fn sub_too_wide(pattern: &str) -> Option<String> {
    let Some(sub) = parse_sub(pattern) else {
        return pattern.starts_with('*').then(|| format!("\"{pattern}\" admits any repository"));
    };
    if sub.repository.contains('*') {
        let whose = match sub.repository.split_once('/') {
            Some((owner, _)) if !crosses_namespace(sub.repository) => format!("every repository of {owner}"),
            _ => "any repository".to_string(),
        };
        return Some(format!("\"{pattern}\" admits {whose}, and through them any ref or trigger"));
    }
    let context = sub.context?;
    let any_ref = context.starts_with('*')
        || admits(&[pattern.to_string()], &format!("repo:{}:ref:refs/heads/{PROBE}", sub.repository));
    any_ref.then(|| format!("\"{pattern}\" admits any branch or trigger of {}", sub.repository))
}

fn sub_glob(rule: &RuleFacts<'_>) -> Option<Finding> {
    let problems: Vec<String> = rule.condition("sub")?.iter().filter_map(|p| sub_too_wide(p)).collect();
    if problems.is_empty() {
        return None;
    }
    Some(SUB_GLOB.at(rule.claim_key("sub"), format!("sub {}", problems.join("; "))).explain(
        "`*` matches ':' too, so a glob in the repository part spans the whole rest of the subject: a \
         repository someone else creates under the pattern (or, for \"repo:*\", anywhere on GitHub), or any \
         branch a collaborator pushes, or a pull_request run, gets a token this rule accepts.",
        "Write the repository out and end the subject with a fixed context: \
         \"repo:owner/repo:environment:production\" or \"repo:owner/repo:ref:refs/heads/main\".",
    ))
}

fn pull_request(rule: &RuleFacts<'_>) -> Vec<Finding> {
    if !rule.route.deploy {
        return Vec::new();
    }
    let mut findings = Vec::new();
    if let Some(events) = rule.condition("event_name") {
        let admitted: Vec<&str> = PULL_REQUEST_EVENTS.iter().copied().filter(|e| admits(events, e)).collect();
        if !admitted.is_empty() {
            findings.push(pull_request_finding(
                rule,
                "event_name",
                format!("event_name admits {}", admitted.join(" and ")),
            ));
        }
    }
    // A sub ending in `:*` is sub_glob's finding already; a context naming pull requests is this one.
    let by_sub = rule.condition("sub").unwrap_or_default().iter().any(|p| {
        parse_sub(p)
            .and_then(|sub| sub.context)
            .is_some_and(|c| !c.starts_with('*') && admits(&[c.to_string()], "pull_request"))
    });
    if by_sub {
        findings.push(pull_request_finding(rule, "sub", "sub admits `...:pull_request` subjects".to_string()));
    }
    findings
}

fn pull_request_finding(rule: &RuleFacts<'_>, claim: &str, what: String) -> Finding {
    PULL_REQUEST.at(rule.claim_key(claim), format!("{what} on deploy route \"{}\"", rule.route.route.name)).explain(
        "A pull_request run executes the pull request's code before review, and pull_request_target runs \
             with the base repository's rights on behalf of anyone who opens one: a contributor (or a fork, \
             where the workflow may request a token) deploys code nobody merged.",
        "Admit the events of merged code only, e.g. event_name = [\"push\", \"workflow_dispatch\"], or a \
             sub with a fixed environment or branch.",
    )
}

fn production_environment(rule: &RuleFacts<'_>) -> Option<Finding> {
    if !rule.route.production || rule.pins("environment") {
        return None;
    }
    let sub_environment = rule.condition("sub").is_some_and(|subs| {
        subs.iter().all(|p| {
            parse_sub(p)
                .and_then(|sub| sub.context)
                .and_then(|c| c.strip_prefix("environment:"))
                .is_some_and(|name| !name.is_empty() && !name.starts_with('*'))
        })
    });
    if sub_environment {
        return None;
    }
    Some(
        PRODUCTION_ENVIRONMENT
            .at(
                rule.key.clone(),
                format!("production route \"{}\" does not require a GitHub environment", rule.route.route.name),
            )
            .explain(
                "Any job of an allowed repository can call production: a test job, or any workflow a \
                 collaborator adds on a branch; only an environment's protection rules (required reviewers, \
                 deployment branches) limit who may deploy.",
                "Require environment = \"production\" (or sub = \"repo:owner/repo:environment:production\") and \
                 give that environment protection rules in the repository settings.",
            ),
    )
}

/// The issuer-level GitHub rule: audiences that workflows obtain without asking for Runway.
pub fn check_issuer(index: usize, issuer: &IssuerConfig) -> Vec<Finding> {
    issuer
        .audiences
        .iter()
        .enumerate()
        .filter(|(_, aud)| aud.starts_with("https://github.com/") || aud.as_str() == "sts.amazonaws.com")
        .map(|(j, aud)| {
            DEFAULT_AUDIENCE
                .at(format!("issuers[{index}].audiences[{j}]"), format!("audience \"{aud}\" is not Runway's own"))
                .explain(
                    "GitHub gives every workflow of the owner a token for https://github.com/OWNER by default, and \
                     every job assuming an AWS role asks for sts.amazonaws.com: any such token (from a log, a \
                     compromised action, another relying party) is accepted here too.",
                    "Use an audience only Runway accepts, e.g. \"https://deploy.example.com\", and ask for it with \
                     core.getIDToken(\"https://deploy.example.com\").",
                )
        })
        .collect()
}
