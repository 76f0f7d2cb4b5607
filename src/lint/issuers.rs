//! Rules on `[[issuers]]` for every kind: an audience accepted from two issuers, and token lifetimes or
//! clock skew far above what the provider issues (RFC 8725 sections 3.9 and 3.10: use audiences to tell
//! tokens apart, keep tokens short-lived).

use std::time::Duration;

use super::finding::{Finding, Rule, Severity};
use crate::config::{IssuerConfig, IssuerKind};

/// Two issuers of the same family accepting one audience.
pub const SHARED_AUDIENCE: Rule = Rule {
    id: "issuer-shared-audience",
    severity: Severity::Warning,
    summary: "an audience that two JWT issuers (or two aws issuers) both accept",
    source: "RFC 8725 (JWT Best Current Practices) section 3.9 (audience) and 2.8 (cross-JWT confusion)",
};
/// `max_token_lifetime` far above the kind's default.
pub const LONG_LIFETIME: Rule = Rule {
    id: "issuer-long-lifetime",
    severity: Severity::Warning,
    summary: "max_token_lifetime above 4 times the kind's default",
    source: "GitLab: ID token expiry = job timeout; GitHub, Okta: access and ID tokens of at most 1h; \
             RFC 8725 section 3.10",
};
/// `leeway` above five minutes.
pub const LARGE_LEEWAY: Rule = Rule {
    id: "issuer-large-leeway",
    severity: Severity::Warning,
    summary: "leeway above 5 minutes",
    source: "RFC 7519 section 4.1.4 (\"a small leeway, usually no more than a few minutes\")",
};

/// How far above the kind's default `max_token_lifetime` may go before it is a finding.
const LIFETIME_FACTOR: u32 = 4;
/// The largest leeway that is still clock skew rather than a longer token life.
const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// Every issuer-level finding (provider-specific ones are added by their modules).
pub fn check(issuers: &[IssuerConfig]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, issuer) in issuers.iter().enumerate() {
        findings.extend(shared_audience(issuers, i));
        findings.extend(long_lifetime(i, issuer));
        findings.extend(large_leeway(i, issuer));
    }
    findings
}

/// aws audiences are STS cluster ids (`x-k8s-aws-id`), not JWT `aud`s: the two families never meet.
fn is_sts(kind: IssuerKind) -> bool {
    kind == IssuerKind::Aws
}

/// One finding per audience of `issuers[i]` that an earlier issuer of the same family accepts too.
fn shared_audience(issuers: &[IssuerConfig], i: usize) -> Vec<Finding> {
    let issuer = &issuers[i];
    issuer
        .audiences
        .iter()
        .enumerate()
        .filter_map(|(j, aud)| {
            let earlier: Vec<&str> = issuers[..i]
                .iter()
                .filter(|other| is_sts(other.kind) == is_sts(issuer.kind) && other.audiences.contains(aud))
                .map(|other| other.name.as_str())
                .collect();
            let first = earlier.first()?;
            Some(
                SHARED_AUDIENCE
                    .at(
                        format!("issuers[{i}].audiences[{j}]"),
                        format!("audience \"{aud}\" is accepted from issuer \"{}\" and from \"{first}\"", issuer.name),
                    )
                    .explain(
                        "The audience no longer says which trust relationship a token was minted for: a token one \
                         issuer mints for another use (another service sharing the audience) is accepted here, \
                         and a rule or revocation written for one issuer silently does not cover the other.",
                        "Give each issuer an audience of its own (e.g. \"https://deploy.example.com/gitlab\") and \
                         ask for that one in the pipeline.",
                    ),
            )
        })
        .collect()
}

fn long_lifetime(i: usize, issuer: &IssuerConfig) -> Option<Finding> {
    // aws lifetimes are fixed by STS and cannot be configured.
    let default = issuer.kind.default_max_token_lifetime();
    if issuer.kind == IssuerKind::Aws || issuer.max_token_lifetime <= default * LIFETIME_FACTOR {
        return None;
    }
    Some(
        LONG_LIFETIME
            .at(
                format!("issuers[{i}].max_token_lifetime"),
                format!(
                    "max_token_lifetime {} is more than {LIFETIME_FACTOR} times the {} default of {}",
                    humantime::format_duration(issuer.max_token_lifetime),
                    issuer.kind.as_str(),
                    humantime::format_duration(default)
                ),
            )
            .explain(
                "A token that leaks (a job log, an artifact, a compromised runner) stays usable this long; \
                 short-lived tokens are the point of workload identity.",
                format!(
                    "Remove max_token_lifetime (default {}) or set it just above the longest job timeout.",
                    humantime::format_duration(default)
                ),
            ),
    )
}

fn large_leeway(i: usize, issuer: &IssuerConfig) -> Option<Finding> {
    if issuer.leeway <= MAX_LEEWAY {
        return None;
    }
    Some(
        LARGE_LEEWAY
            .at(
                format!("issuers[{i}].leeway"),
                format!("leeway {} is more than 5m of clock skew", humantime::format_duration(issuer.leeway)),
            )
            .explain(
                "Expired tokens keep working for the whole leeway, and tokens dated in the future are accepted \
                 that far ahead: it extends every token's life.",
                "Keep leeway at the default 60s (fix the clocks with NTP instead).",
            ),
    )
}
