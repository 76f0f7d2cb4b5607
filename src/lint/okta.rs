//! The rule for `kind = "okta"` issuers (Okta access tokens). An Okta authorization server gives the same
//! `aud` to every token it mints, whichever client asked and for whichever user: only `cid` (the client)
//! and `scp` (the scopes granted) say what the token is for (developer.okta.com/docs/reference/api/oidc,
//! "Access token: Reserved claims in the payload section").

use super::facts::{PROBE, RuleFacts, admits};
use super::finding::{Finding, Rule, Severity};

/// A rule that neither names a client nor requires a scope.
pub const NO_CLIENT_OR_SCOPE: Rule = Rule {
    id: "okta-no-client-or-scope",
    severity: Severity::Error,
    summary: "an Okta rule with neither a cid nor an scp condition",
    source: "Okta: OpenID Connect & OAuth 2.0 API, access token claims cid and scp \
             (developer.okta.com/docs/reference/api/oidc)",
};

/// The finding for one allow rule, if it has neither condition (or only ones admitting anything).
pub fn check(rule: &RuleFacts<'_>) -> Option<Finding> {
    let narrows = |claim| rule.condition(claim).is_some_and(|patterns| !admits(patterns, PROBE));
    if narrows("cid") || narrows("scp") {
        return None;
    }
    Some(
        NO_CLIENT_OR_SCOPE
            .at(
                rule.key.clone(),
                format!("rule for issuer \"{}\" requires neither a client (cid) nor a scope (scp)", rule.issuer.name),
            )
            .explain(
                "Every access token of the authorization server carries this audience: a user's token from \
                 any application on it (a single-page app, a CLI login) passes this rule as well as the deploy \
                 client's.",
                "Add scp = \"deploy:production\" (a scope only the deploy client is granted) and/or cid = \
                 \"<client id>\".",
            ),
    )
}
