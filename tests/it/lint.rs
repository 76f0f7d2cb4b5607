//! `runway lint` (contract section 1): one table row per rule with a config that triggers it and one that
//! does not (the id, the key named and the severity), the exit statuses of `--fail-on`, the JSON shape, the
//! GitLab Code Quality report checked against GitLab's documented fields, the line numbers it gives, `runway
//! check`'s summary line, and the shipped example configs (`config/example.toml`, every Runway config under
//! `deploy/`) clean at `error`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::Pki;
use runway::config::Config;
use runway::lint::{Finding, RULES, Severity};
use serde_json::Value;
use yaml_rust2::YamlLoader;

/// `[server]` and `[upstream]`: never read by `config::load` (only `check` opens the files).
const BASE: &str = r#"
[server]
tls_cert = "server.pem"
tls_key = "server-key.pem"

[upstream]
url = "https://kong.internal:8443"
"#;

const GITLAB: &str = r#"
[[issuers]]
name = "gitlab"
kind = "gitlab"
issuer = "https://gitlab.example.com"
audiences = ["https://deploy.example.com/gitlab"]
"#;

const GITHUB: &str = r#"
[[issuers]]
name = "github"
kind = "github"
audiences = ["https://deploy.example.com/github"]
"#;

const OKTA: &str = r#"
[[issuers]]
name = "okta"
kind = "okta"
issuer = "https://example.okta.com/oauth2/default"
audiences = ["api://deploy"]
"#;

const AWS: &str = r#"
[[issuers]]
name = "aws"
kind = "aws"
audiences = ["runway-prod"]
"#;

const EKS: &str = r#"
[[issuers]]
name = "eks"
kind = "oidc"
issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE"
audiences = ["runway"]
"#;

/// Writes `text` as `runway.toml` in a fresh directory.
fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("runway.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing the config: {e}"));
    (dir, path)
}

/// Loads a config made of `BASE` + `body` the way `runway lint` does.
fn load(body: &str) -> Config {
    let (_dir, path) = write(&format!("{BASE}{body}"));
    runway::config::load(&path).unwrap_or_else(|e| panic!("the case's config does not load: {e}\n{body}"))
}

fn lint(body: &str) -> Vec<Finding> {
    runway::lint::lint(&load(body))
}

/// One `[[routes]]` block: `head` holds name, prefix, methods..., `rule` the allow rule's lines (if any).
fn route(head: &str, rule: &str) -> String {
    let allow = if rule.is_empty() { String::new() } else { format!("[[routes.allow]]\n{rule}\n") };
    format!("\n[[routes]]\n{head}\n{allow}")
}

fn gitlab_rule(claims: &str) -> String {
    format!("issuer = \"gitlab\"\nclaims = {{ {claims} }}")
}

fn github_rule(claims: &str) -> String {
    format!("issuer = \"github\"\nclaims = {{ {claims} }}")
}

/// Route heads used below.
const READ_ONLY: &str = "name = \"catalog\"\npath_prefix = \"/catalog\"\nmethods = [\"GET\"]";
const MUTATING: &str = "name = \"jobs\"\npath_prefix = \"/jobs\"\nmethods = [\"POST\"]";
const PRODUCTION: &str = "name = \"deploy-production\"\nhost = \"deploy.example.com\"\npath_prefix = \"/deploy/production\"\nmethods = [\"POST\"]";
const STAGING: &str = "name = \"deploy-staging\"\npath_prefix = \"/deploy/staging\"\nmethods = [\"POST\"]";

const PINNED_GITLAB: &str = "project_path = \"platform/api\", ref_protected = \"true\"";
const PINNED_GITHUB: &str = "repository = \"octo-org/octo-repo\", event_name = \"push\"";

/// The severity every rule is documented with (README "Reviewing the trust policy").
const SEVERITIES: &[(&str, Severity)] = &[
    ("gitlab-unpinned-project", Severity::Error),
    ("gitlab-project-glob", Severity::Error),
    ("gitlab-unprotected-ref", Severity::Warning),
    ("gitlab-production-environment", Severity::Error),
    ("gitlab-merge-request-pipeline", Severity::Error),
    ("gitlab-unknown-claim", Severity::Warning),
    ("github-unpinned-repository", Severity::Error),
    ("github-sub-glob", Severity::Error),
    ("github-pull-request", Severity::Error),
    ("github-production-environment", Severity::Error),
    ("github-unknown-claim", Severity::Warning),
    ("github-default-audience", Severity::Warning),
    ("okta-no-client-or-scope", Severity::Error),
    ("aws-any-account", Severity::Error),
    ("oidc-rule-without-conditions", Severity::Warning),
    ("issuer-shared-audience", Severity::Warning),
    ("issuer-long-lifetime", Severity::Warning),
    ("issuer-large-leeway", Severity::Warning),
    ("route-report-mode", Severity::Info),
    ("anonymous-overlaps-protected", Severity::Warning),
    ("route-unreachable", Severity::Warning),
];

/// One row: `rule` must be reported at `key` (`Some`) or not at all (`None`) for this config.
struct Case {
    rule: &'static str,
    key: Option<&'static str>,
    config: String,
    /// Text the message must hold (empty: no check).
    says: &'static str,
}

fn hit(rule: &'static str, key: &'static str, config: String) -> Case {
    Case { rule, key: Some(key), config, says: "" }
}

fn clean(rule: &'static str, config: String) -> Case {
    Case { rule, key: None, config, says: "" }
}

fn saying(mut case: Case, says: &'static str) -> Case {
    case.says = says;
    case
}

fn gitlab_cases() -> Vec<Case> {
    let rule0 = "routes[0].allow[0]";
    let gl = |head: &str, claims: &str| format!("{GITLAB}{}", route(head, &gitlab_rule(claims)));
    vec![
        hit("gitlab-unpinned-project", rule0, gl(READ_ONLY, "ref_protected = \"true\"")),
        hit("gitlab-unpinned-project", rule0, format!("{GITLAB}{}", route(READ_ONLY, "issuer = \"gitlab\""))),
        clean("gitlab-unpinned-project", gl(READ_ONLY, "project_path = \"platform/api\"")),
        clean("gitlab-unpinned-project", gl(READ_ONLY, "project_id = \"42\"")),
        clean("gitlab-unpinned-project", gl(READ_ONLY, "namespace_path = \"platform\"")),
        hit("gitlab-unpinned-project", rule0, gl(READ_ONLY, "project_id = \"4*\"")),
        clean("gitlab-unpinned-project", gl(READ_ONLY, "sub = \"project_path:platform/api:ref_type:branch:ref:main\"")),
        hit("gitlab-unpinned-project", rule0, gl(READ_ONLY, "sub = \"project_path:*:ref_type:branch:ref:main\"")),
        saying(
            hit(
                "gitlab-project-glob",
                "routes[0].allow[0].claims.\"project_path\"",
                gl(READ_ONLY, "project_path = \"plat*\""),
            ),
            "\"plat*\"",
        ),
        hit(
            "gitlab-project-glob",
            "routes[0].allow[0].claims.\"project_path\"",
            gl(READ_ONLY, "project_path = [\"platform/api\", \"*/api\"]"),
        ),
        hit("gitlab-project-glob", "routes[0].allow[0].claims.\"project_path\"", gl(READ_ONLY, "project_path = \"*\"")),
        hit(
            "gitlab-project-glob",
            "routes[0].allow[0].claims.\"namespace_path\"",
            gl(READ_ONLY, "namespace_path = \"plat*\""),
        ),
        clean("gitlab-project-glob", gl(READ_ONLY, "project_path = [\"platform/*\", \"platform/tools/*\"]")),
        clean("gitlab-project-glob", gl(READ_ONLY, "project_path = \"plat*\", project_id = \"42\"")),
        hit("gitlab-unprotected-ref", rule0, gl(MUTATING, "project_path = \"platform/api\"")),
        hit(
            "gitlab-unprotected-ref",
            rule0,
            gl(MUTATING, "project_path = \"platform/api\", ref_protected = [\"true\", \"false\"]"),
        ),
        hit(
            "gitlab-unprotected-ref",
            rule0,
            gl("name = \"jobs\"\npath_prefix = \"/jobs\"", "project_path = \"platform/api\""),
        ),
        clean("gitlab-unprotected-ref", gl(MUTATING, PINNED_GITLAB)),
        clean("gitlab-unprotected-ref", gl(READ_ONLY, "project_path = \"platform/api\"")),
        saying(
            hit("gitlab-production-environment", rule0, gl(PRODUCTION, PINNED_GITLAB)),
            "an environment condition or",
        ),
        saying(
            hit(
                "gitlab-production-environment",
                rule0,
                gl(PRODUCTION, &format!("{PINNED_GITLAB}, environment = \"production\"")),
            ),
            "environment_protected",
        ),
        hit(
            "gitlab-production-environment",
            rule0,
            gl(
                "name = \"api\"\nhost = \"prod.example.com\"\npath_prefix = \"/api\"",
                &format!("{PINNED_GITLAB}, environment = \"*\", environment_protected = \"true\""),
            ),
        ),
        clean(
            "gitlab-production-environment",
            gl(PRODUCTION, &format!("{PINNED_GITLAB}, environment = \"production\", environment_protected = \"true\"")),
        ),
        clean("gitlab-production-environment", gl(STAGING, PINNED_GITLAB)),
        saying(
            hit(
                "gitlab-merge-request-pipeline",
                "routes[0].allow[0].claims.\"pipeline_source\"",
                gl(STAGING, &format!("{PINNED_GITLAB}, pipeline_source = [\"push\", \"merge_request_event\"]")),
            ),
            "merge_request_event",
        ),
        hit(
            "gitlab-merge-request-pipeline",
            "routes[0].allow[0].claims.\"pipeline_source\"",
            gl(STAGING, &format!("{PINNED_GITLAB}, pipeline_source = \"*\"")),
        ),
        clean(
            "gitlab-merge-request-pipeline",
            gl(STAGING, &format!("{PINNED_GITLAB}, pipeline_source = [\"push\", \"web\"]")),
        ),
        clean(
            "gitlab-merge-request-pipeline",
            gl(READ_ONLY, &format!("{PINNED_GITLAB}, pipeline_source = \"merge_request_event\"")),
        ),
        saying(
            hit(
                "gitlab-unknown-claim",
                "routes[0].allow[0].claims.\"project_pth\"",
                gl(READ_ONLY, "project_pth = \"platform/api\""),
            ),
            "did you mean \"project_path\"",
        ),
        hit(
            "gitlab-unknown-claim",
            "routes[0].allow[0].claims.\"/nested/x\"",
            gl(READ_ONLY, "project_id = \"1\", \"/nested/x\" = \"y\""),
        ),
        clean(
            "gitlab-unknown-claim",
            gl(
                READ_ONLY,
                "project_id = \"1\", ci_config_ref_uri = \"x\", deployment_tier = \"production\", \"/job_config/sha\" = \"y\"",
            ),
        ),
    ]
}

fn github_cases() -> Vec<Case> {
    let rule0 = "routes[0].allow[0]";
    let gh = |head: &str, claims: &str| format!("{GITHUB}{}", route(head, &github_rule(claims)));
    let sub = "routes[0].allow[0].claims.\"sub\"";
    vec![
        hit("github-unpinned-repository", rule0, gh(READ_ONLY, "environment = \"production\"")),
        hit("github-unpinned-repository", "routes[0].allow[0].claims.\"repository\"", gh(READ_ONLY, "repository = \"octo*\"")),
        hit("github-unpinned-repository", rule0, gh(READ_ONLY, "sub = \"repo:*\"")),
        clean("github-unpinned-repository", gh(READ_ONLY, "repository = \"octo-org/octo-repo\"")),
        clean("github-unpinned-repository", gh(READ_ONLY, "repository_id = \"123456\"")),
        clean("github-unpinned-repository", gh(READ_ONLY, "repository_owner = \"octo-org\"")),
        clean("github-unpinned-repository", gh(READ_ONLY, "sub = \"repo:octo-org/octo-repo:ref:refs/heads/main\"")),
        saying(hit("github-sub-glob", sub, gh(READ_ONLY, "sub = \"repo:octo-org/*\"")), "every repository of octo-org"),
        saying(hit("github-sub-glob", sub, gh(READ_ONLY, "sub = \"repo:*\"")), "any repository"),
        hit("github-sub-glob", sub, gh(READ_ONLY, "sub = \"repo:octo-org/octo-repo:*\"")),
        hit("github-sub-glob", sub, gh(READ_ONLY, "sub = \"repo:octo-org/octo-repo:ref:refs/heads/*\"")),
        hit("github-sub-glob", sub, gh(READ_ONLY, "sub = \"*:environment:production\"")),
        clean("github-sub-glob", gh(READ_ONLY, "sub = \"repo:octo-org/octo-repo:environment:production\"")),
        clean("github-sub-glob", gh(READ_ONLY, "sub = \"repo:octo-org@123/octo-repo@456:ref:refs/heads/release/*\"")),
        saying(
            hit(
                "github-pull-request",
                "routes[0].allow[0].claims.\"event_name\"",
                gh(STAGING, "repository = \"octo-org/octo-repo\", event_name = [\"push\", \"pull_request\"]"),
            ),
            "pull_request",
        ),
        saying(
            hit(
                "github-pull-request",
                "routes[0].allow[0].claims.\"event_name\"",
                gh(STAGING, "repository = \"octo-org/octo-repo\", event_name = \"pull_request_*\""),
            ),
            "pull_request_target",
        ),
        hit("github-pull-request", sub, gh(STAGING, "sub = \"repo:octo-org/octo-repo:pull_request\"")),
        clean("github-pull-request", gh(STAGING, PINNED_GITHUB)),
        clean("github-pull-request", gh(READ_ONLY, "repository = \"octo-org/octo-repo\", event_name = \"pull_request\"")),
        hit("github-production-environment", rule0, gh(PRODUCTION, PINNED_GITHUB)),
        hit("github-production-environment", rule0, gh(PRODUCTION, &format!("{PINNED_GITHUB}, environment = \"*\""))),
        clean("github-production-environment", gh(PRODUCTION, &format!("{PINNED_GITHUB}, environment = \"production\""))),
        clean("github-production-environment", gh(PRODUCTION, "sub = \"repo:octo-org/octo-repo:environment:production\"")),
        saying(
            hit("github-unknown-claim", "routes[0].allow[0].claims.\"repositry\"", gh(READ_ONLY, "repositry = \"octo-org/octo-repo\"")),
            "did you mean \"repository\"",
        ),
        hit("github-unknown-claim", "routes[0].allow[0].claims.\"project_path\"", gh(READ_ONLY, "repository_id = \"1\", project_path = \"x\"")),
        clean(
            "github-unknown-claim",
            gh(READ_ONLY, "repository_id = \"1\", job_workflow_ref = \"x\", runner_environment = \"github-hosted\", repo_property_team = \"ops\""),
        ),
        hit(
            "github-default-audience",
            "issuers[0].audiences[1]",
            "[[issuers]]\nname = \"github\"\nkind = \"github\"\naudiences = [\"https://deploy.example.com\", \"https://github.com/octo-org\"]\n".into(),
        ),
        hit(
            "github-default-audience",
            "issuers[0].audiences[0]",
            "[[issuers]]\nname = \"github\"\nkind = \"github\"\naudiences = [\"sts.amazonaws.com\"]\n".into(),
        ),
        clean("github-default-audience", GITHUB.into()),
    ]
}

fn other_provider_cases() -> Vec<Case> {
    let rule0 = "routes[0].allow[0]";
    let with = |issuers: &str, rule: &str| format!("{issuers}{}", route(READ_ONLY, rule));
    let aws_accounts =
        "[[issuers]]\nname = \"aws\"\nkind = \"aws\"\naudiences = [\"runway-prod\"]\naccounts = [\"123456789012\"]\n";
    vec![
        hit("okta-no-client-or-scope", rule0, with(OKTA, "issuer = \"okta\"\nclaims = { uid = \"00u1\" }")),
        hit("okta-no-client-or-scope", rule0, with(OKTA, "issuer = \"okta\"\nclaims = { scp = \"*\" }")),
        clean("okta-no-client-or-scope", with(OKTA, "issuer = \"okta\"\nclaims = { scp = \"deploy:production\" }")),
        clean("okta-no-client-or-scope", with(OKTA, "issuer = \"okta\"\nclaims = { cid = \"0oa1deploy\" }")),
        hit(
            "aws-any-account",
            "routes[0].allow[0].claims.\"arn\"",
            with(AWS, "issuer = \"aws\"\nclaims = { arn = \"arn:aws:iam::*:role/deploy\" }"),
        ),
        hit(
            "aws-any-account",
            "routes[0].allow[0].claims.\"arn\"",
            with(AWS, "issuer = \"aws\"\nclaims = { arn = \"*:role/deploy\" }"),
        ),
        hit("aws-any-account", rule0, with(AWS, "issuer = \"aws\"")),
        clean(
            "aws-any-account",
            with(AWS, "issuer = \"aws\"\nclaims = { arn = \"arn:aws:iam::123456789012:role/deploy-*\" }"),
        ),
        clean(
            "aws-any-account",
            with(AWS, "issuer = \"aws\"\nclaims = { account = \"123456789012\", arn = \"arn:aws:iam::*:role/x\" }"),
        ),
        clean(
            "aws-any-account",
            with(aws_accounts, "issuer = \"aws\"\nclaims = { arn = \"arn:aws:iam::*:role/deploy\" }"),
        ),
        hit("oidc-rule-without-conditions", rule0, with(EKS, "issuer = \"eks\"")),
        clean(
            "oidc-rule-without-conditions",
            with(EKS, "issuer = \"eks\"\nclaims = { sub = \"system:serviceaccount:batch:deployer\" }"),
        ),
    ]
}

fn everywhere_cases() -> Vec<Case> {
    let second_gitlab = "[[issuers]]\nname = \"eks-shared\"\nkind = \"oidc\"\nissuer = \"https://idp.example.com\"\naudiences = [\"https://deploy.example.com/gitlab\"]\n";
    let aws_same = "[[issuers]]\nname = \"aws\"\nkind = \"aws\"\naudiences = [\"https://deploy.example.com/gitlab\"]\n";
    let gl = |extra: &str| {
        format!(
            "[[issuers]]\nname = \"gitlab\"\nkind = \"gitlab\"\nissuer = \"https://gitlab.example.com\"\naudiences = [\"a\"]\n{extra}\n"
        )
    };
    let anonymous = |head: &str| route(&format!("{head}\nanonymous = true"), "");
    let protected = |head: &str| route(head, &gitlab_rule(PINNED_GITLAB));
    vec![
        saying(
            hit("issuer-shared-audience", "issuers[1].audiences[0]", format!("{GITLAB}{second_gitlab}")),
            "\"gitlab\"",
        ),
        clean("issuer-shared-audience", format!("{GITLAB}{EKS}")),
        clean("issuer-shared-audience", format!("{GITLAB}{aws_same}")),
        hit("issuer-long-lifetime", "issuers[0].max_token_lifetime", gl("max_token_lifetime = \"9h\"")),
        hit(
            "issuer-long-lifetime",
            "issuers[0].max_token_lifetime",
            "[[issuers]]\nname = \"github\"\nkind = \"github\"\naudiences = [\"a\"]\nmax_token_lifetime = \"5h\"\n"
                .into(),
        ),
        clean("issuer-long-lifetime", gl("max_token_lifetime = \"8h\"")),
        hit("issuer-large-leeway", "issuers[0].leeway", gl("leeway = \"6m\"")),
        clean("issuer-large-leeway", gl("leeway = \"5m\"")),
        hit(
            "route-report-mode",
            "routes[0].mode",
            format!("{GITLAB}{}", route(&format!("{READ_ONLY}\nmode = \"report\""), &gitlab_rule(PINNED_GITLAB))),
        ),
        clean(
            "route-report-mode",
            format!("{GITLAB}{}", route(&format!("{READ_ONLY}\nmode = \"enforce\""), &gitlab_rule(PINNED_GITLAB))),
        ),
        saying(
            hit(
                "anonymous-overlaps-protected",
                "routes[1].path_prefix",
                format!(
                    "{GITLAB}{}{}",
                    protected("name = \"deploy\"\npath_prefix = \"/deploy\""),
                    anonymous("name = \"site\"\npath_prefix = \"/\"")
                ),
            ),
            "covers protected route(s) \"deploy\"",
        ),
        saying(
            hit(
                "anonymous-overlaps-protected",
                "routes[1].path_prefix",
                format!(
                    "{GITLAB}{}{}",
                    protected("name = \"deploy\"\npath_prefix = \"/deploy\""),
                    anonymous("name = \"st\"\npath_prefix = \"/deploy/status\"")
                ),
            ),
            "lies inside",
        ),
        hit(
            "anonymous-overlaps-protected",
            "routes[0].path_prefix",
            format!(
                "{GITLAB}{}{}",
                anonymous("name = \"open\"\npath_prefix = \"/deploy\""),
                protected("name = \"deploy\"\nhost = \"deploy.example.com\"\npath_prefix = \"/deploy\"")
            ),
        ),
        clean(
            "anonymous-overlaps-protected",
            format!(
                "{GITLAB}{}{}",
                protected("name = \"deploy\"\npath_prefix = \"/deploy\""),
                anonymous("name = \"st\"\npath_prefix = \"/deployment-status\"")
            ),
        ),
        clean(
            "anonymous-overlaps-protected",
            format!(
                "{GITLAB}{}{}",
                protected("name = \"deploy\"\nhost = \"a.example\"\npath_prefix = \"/deploy\""),
                anonymous("name = \"st\"\nhost = \"b.example\"\npath_prefix = \"/\"")
            ),
        ),
        saying(
            hit(
                "route-unreachable",
                "routes[0].host",
                format!("{GITLAB}{}", protected("name = \"w\"\nhost = \"*.example.com\"\npath_prefix = \"/w\"")),
            ),
            "wildcard",
        ),
        hit(
            "route-unreachable",
            "routes[0].host",
            format!("{GITLAB}{}", protected("name = \"w\"\nhost = \"bücher.example\"\npath_prefix = \"/w\"")),
        ),
        hit(
            "route-unreachable",
            "routes[0].methods",
            format!("{GITLAB}{}", protected("name = \"t\"\npath_prefix = \"/t\"\nmethods = [\"CONNECT\"]")),
        ),
        clean(
            "route-unreachable",
            format!("{GITLAB}{}", protected("name = \"w\"\nhost = \"www.example.com\"\npath_prefix = \"/w\"")),
        ),
    ]
}

fn all_cases() -> Vec<Case> {
    [gitlab_cases(), github_cases(), other_provider_cases(), everywhere_cases()].into_iter().flatten().collect()
}

#[test]
fn every_rule_is_triggered_and_cleared_by_its_table_row() {
    let mut triggered = HashSet::new();
    let mut cleared = HashSet::new();
    for case in all_cases() {
        let findings = lint(&case.config);
        let of_rule: Vec<&Finding> = findings.iter().filter(|f| f.id == case.rule).collect();
        match case.key {
            Some(key) => {
                let found = of_rule.iter().find(|f| f.key == key).unwrap_or_else(|| {
                    panic!("{} should be reported at {key}; got {findings:#?}\nconfig:{}", case.rule, case.config)
                });
                let expected = SEVERITIES.iter().find(|(id, _)| *id == case.rule).map(|(_, s)| *s);
                assert_eq!(Some(found.severity), expected, "{}: severity", case.rule);
                assert!(
                    found.message.contains(case.says),
                    "{}: message {:?} should say {:?}",
                    case.rule,
                    found.message,
                    case.says
                );
                assert!(!found.risk.is_empty() && !found.fix.is_empty(), "{}: risk and fix", case.rule);
                triggered.insert(case.rule);
            }
            None => {
                assert!(of_rule.is_empty(), "{} should not fire; got {of_rule:#?}\nconfig:{}", case.rule, case.config);
                cleared.insert(case.rule);
            }
        }
    }
    for rule in RULES {
        assert!(triggered.contains(rule.id), "no table row triggers {}", rule.id);
        assert!(cleared.contains(rule.id), "no table row clears {}", rule.id);
    }
}

#[test]
fn rules_have_unique_ids_and_the_documented_severities() {
    let ids: HashSet<&str> = RULES.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), RULES.len(), "duplicate rule ids");
    assert_eq!(RULES.len(), SEVERITIES.len());
    for rule in RULES {
        assert_eq!(
            SEVERITIES.iter().find(|(id, _)| *id == rule.id).map(|(_, s)| *s),
            Some(rule.severity),
            "{}",
            rule.id
        );
        assert!(!rule.summary.is_empty() && !rule.source.is_empty(), "{}: summary and source", rule.id);
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap_or_default();
    for rule in RULES {
        assert!(readme.contains(&format!("`{}`", rule.id)), "README.md does not document {}", rule.id);
    }
}

/// A config that trips many rules at once: every (id, key) pair is reported once, so GitLab's fingerprints
/// (made of both) never collide.
const MESSY: &str = r#"
[[issuers]]
name = "gitlab"
kind = "gitlab"
issuer = "https://gitlab.example.com"
audiences = ["https://deploy.example.com"]
leeway = "10m"

[[issuers]]
name = "github"
kind = "github"
audiences = ["https://deploy.example.com", "https://github.com/octo-org"]

[[issuers]]
name = "eks"
kind = "oidc"
issuer = "https://idp.example.com"
audiences = ["https://deploy.example.com"]

[[routes]]
name = "deploy-production"
path_prefix = "/deploy"
mode = "report"
[[routes.allow]]
issuer = "gitlab"
claims = { project_pth = "platform/api", pipeline_source = "*" }
[[routes.allow]]
issuer = "github"
claims = { sub = "repo:*", event_name = "pull_request" }
[[routes.allow]]
issuer = "eks"

[[routes]]
name = "site"
path_prefix = "/"
anonymous = true
"#;

#[test]
fn findings_are_unique_by_id_and_key_and_in_config_order() {
    let findings = lint(MESSY);
    let mut seen = HashSet::new();
    for f in &findings {
        assert!(seen.insert((f.id, f.key.clone())), "reported twice: {} at {}", f.id, f.key);
    }
    let keys: Vec<&str> = findings.iter().map(|f| f.key.as_str()).collect();
    let first_route = keys.iter().position(|k| k.starts_with("routes")).unwrap_or(keys.len());
    assert!(keys[..first_route].iter().all(|k| k.starts_with("issuers")), "issuers first: {keys:?}");
    assert!(keys[first_route..].iter().all(|k| k.starts_with("routes")), "then routes: {keys:?}");
    let last_route_0 = keys.iter().rposition(|k| k.starts_with("routes[0]")).unwrap_or(0);
    assert!(keys[..=last_route_0].iter().all(|k| !k.starts_with("routes[1]")), "route by route: {keys:?}");
    for id in ["issuer-large-leeway", "github-default-audience", "issuer-shared-audience", "route-report-mode"] {
        assert!(findings.iter().any(|f| f.id == id), "{id} missing: {keys:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn runway() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runway"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().to_ascii_uppercase().starts_with("RUNWAY") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

fn run_lint(path: &Path, args: &[&str]) -> Output {
    runway().arg("lint").arg("-c").arg(path).args(args).output().unwrap_or_else(|e| panic!("running runway: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Only an error (gitlab-unpinned-project), a warning (issuer-large-leeway) or an info (route-report-mode).
fn config_with(severity: Severity) -> String {
    let leeway = if severity == Severity::Warning { "leeway = \"10m\"" } else { "" };
    let mode = if severity == Severity::Info { "mode = \"report\"" } else { "" };
    let claims = if severity == Severity::Error { "ref_protected = \"true\"" } else { PINNED_GITLAB };
    format!("{BASE}{GITLAB}{leeway}\n{}", route(&format!("{READ_ONLY}\n{mode}"), &gitlab_rule(claims)))
}

#[test]
fn exit_status_follows_fail_on() {
    let cases: &[(Severity, &[&str], i32)] = &[
        (Severity::Error, &[], 1),
        (Severity::Error, &["--fail-on", "error"], 1),
        (Severity::Warning, &[], 0),
        (Severity::Warning, &["--fail-on", "warning"], 1),
        (Severity::Warning, &["--fail-on", "info"], 1),
        (Severity::Info, &["--fail-on", "warning"], 0),
        (Severity::Info, &["--fail-on", "info"], 1),
    ];
    for (severity, args, code) in cases {
        let (_dir, path) = write(&config_with(*severity));
        let findings = runway::lint::lint(&runway::config::load(&path).unwrap_or_else(|e| panic!("{e}")));
        assert!(findings.iter().all(|f| f.severity == *severity), "test bug: {findings:#?}");
        let out = run_lint(&path, args);
        assert_eq!(out.status.code(), Some(*code), "{severity} {args:?}\n{}{}", stdout(&out), stderr(&out));
    }

    // Nothing at all: exit 0 even with --fail-on info, and the text says so.
    let (_dir, path) = write(&format!("{BASE}{GITLAB}{}", route(READ_ONLY, &gitlab_rule(PINNED_GITLAB))));
    let out = run_lint(&path, &["--fail-on", "info"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), format!("{}: no findings\n", path.display()));
}

#[test]
fn text_output_names_id_key_risk_and_fix() {
    let (_dir, path) = write(&config_with(Severity::Error));
    let out = run_lint(&path, &["--format", "text"]);
    let text = stdout(&out);
    assert!(text.starts_with("error[gitlab-unpinned-project] routes[0].allow[0]: "), "{text}");
    assert!(text.contains("\n  risk: ") && text.contains("\n  fix:  "), "{text}");
    assert!(text.ends_with(&format!("{}: 1 error(s), 0 warning(s), 0 info\n", path.display())), "{text}");
}

#[test]
fn a_config_error_exits_2_naming_the_key() {
    let (_dir, path) = write(&format!("{BASE}{GITLAB}{}", route(READ_ONLY, "issuer = \"gitlb\"")));
    let out = run_lint(&path, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(stderr(&out).contains("routes[0].allow[0].issuer: no issuer named \"gitlb\""), "{}", stderr(&out));

    let out = run_lint(&root().join("no-such-config.toml"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no such file"), "{}", stderr(&out));

    // An unknown key is a config error too, not a finding.
    let (_dir, path) = write(&format!("{BASE}{GITLAB}leway = \"1m\"\n"));
    let out = run_lint(&path, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(stderr(&out).contains("issuers[0].leway: unknown field `leway`"), "{}", stderr(&out));
}

#[test]
fn json_output_is_the_contract_shape() {
    let body = format!(
        "{GITLAB}leeway = \"10m\"\n{}",
        route(&format!("{READ_ONLY}\nmode = \"report\""), &gitlab_rule("ref_protected = \"true\""))
    );
    let (_dir, path) = write(&format!("{BASE}{body}"));
    let out = run_lint(&path, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)));
    let object = json.as_object().unwrap_or_else(|| panic!("not an object: {json}"));
    assert_eq!(object.keys().collect::<Vec<_>>(), ["findings"]);
    let findings = json["findings"].as_array().unwrap_or_else(|| panic!("findings is not an array"));
    let summary: Vec<(&str, &str, &str)> = findings
        .iter()
        .map(|f| {
            (f["id"].as_str().unwrap_or(""), f["severity"].as_str().unwrap_or(""), f["key"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("issuer-large-leeway", "warning", "issuers[0].leeway"),
            ("route-report-mode", "info", "routes[0].mode"),
            ("gitlab-unpinned-project", "error", "routes[0].allow[0]"),
        ]
    );
    for f in findings {
        let mut fields: Vec<&String> = f.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        fields.sort();
        assert_eq!(fields, ["fix", "id", "key", "message", "risk", "severity"], "{f}");
        assert!(fields.iter().all(|k| f[k.as_str()].as_str().is_some_and(|v| !v.is_empty())), "{f}");
    }
}

/// GitLab's Code Quality report: a JSON array of issues with `description` (string), `check_name` (string),
/// `fingerprint` (string, unique), `severity` (info, minor, major, critical or blocker), `location.path`
/// (string) and `location.lines.begin` (integer).
#[test]
fn gitlab_output_is_a_code_quality_report() {
    let body = format!(
        "{GITLAB}leeway = \"10m\"\n{}{}",
        route(&format!("{READ_ONLY}\nmode = \"report\""), &gitlab_rule("ref_protected = \"true\"")),
        route(
            "name = \"deploy-production\"\npath_prefix = \"/deploy\"\nmethods = [\"POST\"]",
            &gitlab_rule("project_path = \"plat*\"")
        )
    );
    let (dir, path) = write(&format!("{BASE}{body}"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    // As given on the command line: a relative path stays relative (GitLab matches it to the repository).
    let out = runway().current_dir(dir.path()).args(["lint", "-c", "runway.toml", "--format", "gitlab"]).output();
    let out = out.unwrap_or_else(|e| panic!("running runway: {e}"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)));
    let issues = report.as_array().unwrap_or_else(|| panic!("not an array: {report}"));
    assert!(issues.len() >= 5, "{report:#}");
    let mut fingerprints = HashSet::new();
    for issue in issues {
        let check = issue["check_name"].as_str().unwrap_or_else(|| panic!("check_name: {issue}"));
        assert!(RULES.iter().any(|r| r.id == check), "{check}");
        assert!(issue["description"].as_str().is_some_and(|d| !d.is_empty()), "{issue}");
        let fingerprint = issue["fingerprint"].as_str().unwrap_or_default();
        assert!(fingerprint.len() == 64 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()), "{fingerprint}");
        assert!(fingerprints.insert(fingerprint.to_string()), "duplicate fingerprint {fingerprint}");
        let severity = issue["severity"].as_str().unwrap_or_default();
        assert!(["info", "minor", "major", "critical", "blocker"].contains(&severity), "{severity}");
        assert_eq!(issue["location"]["path"], "runway.toml");
        let begin = issue["location"]["lines"]["begin"].as_u64().unwrap_or_else(|| panic!("lines.begin: {issue}"));
        assert!(begin >= 1 && (begin as usize) <= lines.len(), "{issue}");
    }
    let by_check = |id: &str| {
        issues.iter().find(|i| i["check_name"] == id).unwrap_or_else(|| panic!("no {id} in {report:#}")).clone()
    };
    // Severity mapping: error → critical, warning → major, info → info.
    assert_eq!(by_check("gitlab-unpinned-project")["severity"], "critical");
    assert_eq!(by_check("issuer-large-leeway")["severity"], "major");
    assert_eq!(by_check("route-report-mode")["severity"], "info");
    // Lines: the rule's [[routes.allow]], the route's mode, the issuer's leeway, the claim's line.
    let line_of = |id: &str| {
        let begin = by_check(id)["location"]["lines"]["begin"].as_u64().unwrap_or(1) as usize;
        lines[begin - 1]
    };
    assert_eq!(line_of("gitlab-unpinned-project"), "[[routes.allow]]");
    assert_eq!(line_of("route-report-mode"), "mode = \"report\"");
    assert_eq!(line_of("issuer-large-leeway"), "leeway = \"10m\"");
    assert!(line_of("gitlab-project-glob").contains("plat*"), "{}", line_of("gitlab-project-glob"));
    let unpinned_production = by_check("gitlab-production-environment");
    assert!(unpinned_production["description"].as_str().is_some_and(|d| d.starts_with("routes[1].allow[0]: ")));

    // Stable across runs: the same fingerprints again.
    let again = runway().current_dir(dir.path()).args(["lint", "-c", "runway.toml", "--format", "gitlab"]).output();
    let again: Value = serde_json::from_slice(&again.unwrap_or_else(|e| panic!("{e}")).stdout).unwrap_or_default();
    let prints = |v: &Value| v.as_array().map(|a| a.iter().map(|i| i["fingerprint"].clone()).collect::<Vec<_>>());
    assert_eq!(prints(&report), prints(&again));
}

#[test]
fn gitlab_fingerprint_is_sha256_of_id_and_key() {
    let findings = lint(&format!("{GITLAB}{}", route(READ_ONLY, &gitlab_rule("ref_protected = \"true\""))));
    let f = findings.iter().find(|f| f.id == "gitlab-unpinned-project").unwrap_or_else(|| panic!("{findings:#?}"));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"gitlab-unpinned-project\0routes[0].allow[0]");
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(runway::lint::report::fingerprint(f), hex);
}

#[test]
fn yaml_configs_get_line_numbers_too() {
    let yaml = "server:\n  tls_cert: a.pem\n  tls_key: b.pem\nupstream:\n  url: https://kong.internal\nissuers:\n  - name: gitlab\n    kind: gitlab\n    issuer: https://gitlab.example.com\n    audiences: [\"x\"]\nroutes:\n  - name: api\n    path_prefix: /api\n    methods: [GET]\n    allow:\n      - issuer: gitlab\n        claims:\n          ref_protected: \"true\"\n";
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("runway.yaml");
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
    let out = run_lint(&path, &["--format", "gitlab"]);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    let issue =
        report.as_array().and_then(|a| a.iter().find(|i| i["check_name"] == "gitlab-unpinned-project")).cloned();
    let begin = issue.map(|i| i["location"]["lines"]["begin"].clone()).unwrap_or_default();
    assert_eq!(begin, 16, "the `- issuer: gitlab` line: {report:#}");
}

// ---------------------------------------------------------------------------------------------------------
// `runway check` points to lint
// ---------------------------------------------------------------------------------------------------------

#[test]
fn check_summary_counts_lint_errors_and_warnings() {
    let pki = Pki::generate();
    let body = format!(
        "{}{GITLAB}leeway = \"10m\"\n{}",
        crate::support::base_config(&pki, "https://127.0.0.1:9"),
        route(READ_ONLY, &gitlab_rule("ref_protected = \"true\""))
    );
    let path = pki.write_file("runway.toml", body.as_bytes());
    let out = runway().arg("check").arg("-c").arg(&path).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "lint findings never fail check: {}", stderr(&out));
    let summary = stdout(&out);
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert!(summary.starts_with("ok: 1 issuer(s), 1 route(s); listen 127.0.0.1:0"), "{summary}");
    assert!(
        summary.ends_with(&format!("; lint: 1 error(s), 1 warning(s) (details: runway lint -c {})\n", path.display())),
        "{summary}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// The shipped configs
// ---------------------------------------------------------------------------------------------------------

/// Every file under `dir` whose name ends with one of `suffixes`.
fn files_under(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every Runway config shipped: the example, the TOML files under deploy/, and the `runway.toml` embedded in
/// the Kubernetes ConfigMaps; as (where, text).
fn shipped_configs() -> Vec<(String, String)> {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut out = vec![("config/example.toml".to_string(), read(&root().join("config/example.toml")))];
    for path in files_under(&root().join("deploy"), &[".toml"]) {
        out.push((path.display().to_string(), read(&path)));
    }
    for path in files_under(&root().join("deploy"), &[".yaml", ".yml"]) {
        let docs = YamlLoader::load_from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs.iter().filter(|d| d["kind"].as_str() == Some("ConfigMap")) {
            for (key, value) in doc["data"].as_hash().into_iter().flatten() {
                if let (Some(key), Some(text)) = (key.as_str(), value.as_str())
                    && key.ends_with(".toml")
                    && text.contains("[[issuers]]")
                {
                    out.push((format!("{} key {key}", path.display()), text.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn shipped_configs_lint_clean_at_error() {
    let configs = shipped_configs();
    assert!(
        configs.len() >= 5,
        "expected the example, deploy/gitlab, deploy/github and two ConfigMaps: {}",
        configs.len()
    );
    assert!(configs.iter().any(|(w, _)| w.contains("deploy/github/runway-route.toml")), "deploy/github is linted");
    for (what, text) in configs {
        // Relative paths resolve against the copy's directory: lint never opens them.
        let (_dir, path) = write(&text);
        let config = runway::config::load(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let errors: Vec<Finding> =
            runway::lint::lint(&config).into_iter().filter(|f| f.severity == Severity::Error).collect();
        assert!(errors.is_empty(), "{what} has lint errors: {errors:#?}");
    }
    // The binary agrees, on the example as shipped.
    let out = run_lint(&root().join("config/example.toml"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}
