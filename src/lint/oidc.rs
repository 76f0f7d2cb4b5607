//! The rule for `kind = "oidc"` issuers. Runway knows nothing of a generic issuer's claims, so it can only
//! notice the extreme case: a rule with no condition at all admits every token the issuer mints for the
//! audience (OpenID Connect Core 1.0 section 2: `sub` is merely "locally unique" to the issuer).

use super::facts::RuleFacts;
use super::finding::{Finding, Rule, Severity};

/// A rule with no claim condition.
pub const NO_CONDITIONS: Rule = Rule {
    id: "oidc-rule-without-conditions",
    severity: Severity::Warning,
    summary: "an oidc rule with no claim condition",
    source: "OpenID Connect Core 1.0, section 2 (ID Token) and RFC 8725 section 3.10 (validate the subject)",
};

/// The finding for one allow rule of an oidc issuer, if it has no condition.
pub fn check(rule: &RuleFacts<'_>) -> Option<Finding> {
    if !rule.rule.claims.is_empty() {
        return None;
    }
    Some(
        NO_CONDITIONS
            .at(rule.key.clone(), format!("rule for issuer \"{}\" has no claim condition", rule.issuer.name))
            .explain(
                "Every subject the issuer serves (each workload of an EKS cluster, each user of an IdP) passes, \
                 as long as its token carries the audience.",
                "Add conditions on the claims that name the workload: sub, or the issuer's own claims reached \
                 with JSON Pointers (\"/kubernetes.io/namespace\").",
            ),
    )
}
