//! The rule for `kind = "aws"` issuers (presigned STS GetCallerIdentity tokens). STS vouches for a
//! principal of any AWS account, so the account is the boundary: a rule must fix it, in the `arn` pattern's
//! account field (`arn:partition:service:region:account-id:resource`, docs.aws.amazon.com/IAM/latest/
//! UserGuide/reference-arns.html), an `account` condition, or the issuer's `accounts` allowlist.

use super::facts::RuleFacts;
use super::finding::{Finding, Rule, Severity};

/// A rule any AWS account can satisfy.
pub const ANY_ACCOUNT: Rule = Rule {
    id: "aws-any-account",
    severity: Severity::Error,
    summary: "an aws rule admitting principals of any account (`*` before the account field of arn, or no arn \
              or account condition) on an issuer without `accounts`",
    source: "AWS: IAM identifiers, ARN format (docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html); \
             STS GetCallerIdentity (docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html)",
};

/// The conditions that hold an ARN (`sub` is the canonical ARN too).
const ARN_CLAIMS: &[&str] = &["arn", "raw_arn", "sub"];

/// The finding for one allow rule of an aws issuer, if no account is fixed anywhere.
pub fn check(rule: &RuleFacts<'_>) -> Option<Finding> {
    let allowlist = rule.issuer.aws.as_ref().is_some_and(|aws| aws.accounts.is_some());
    let account = rule.condition("account").is_some_and(|patterns| !patterns.iter().any(|p| p.contains('*')));
    let arn = ARN_CLAIMS
        .iter()
        .any(|claim| rule.condition(claim).is_some_and(|patterns| patterns.iter().all(|p| fixes_account(p))));
    if allowlist || account || arn {
        return None;
    }
    let (key, what) = match ARN_CLAIMS.iter().find(|claim| rule.condition(claim).is_some()) {
        Some(claim) => {
            (rule.claim_key(claim), format!("{claim} leaves the account open (a `*` before its account field)"))
        }
        None => (rule.key.clone(), "rule fixes no account (no arn or account condition)".to_string()),
    };
    Some(ANY_ACCOUNT.at(key, format!("{what}, and issuer \"{}\" has no accounts allowlist", rule.issuer.name)).explain(
        "Anyone can open an AWS account, create a role or user with a matching name in it, and present \
                 a token STS signs for that principal: \"arn:aws:iam::*:role/deploy\" admits every account's \
                 \"deploy\" role.",
        format!(
            "Write the account id into the pattern (\"arn:aws:iam::123456789012:role/deploy\"), add \
                     account = \"123456789012\", or set accounts = [\"123456789012\"] on issuer \"{}\".",
            rule.issuer.name
        ),
    ))
}

/// Whether an ARN pattern fixes partition, service, region and account: no `*` before the fifth `:`.
/// (`*` matches ':' too, so a `*` earlier can stand for a whole other account's ARN.)
fn fixes_account(pattern: &str) -> bool {
    let fields: Vec<&str> = pattern.splitn(6, ':').collect();
    fields.len() == 6 && fields[..5].iter().all(|f| !f.contains('*')) && !fields[4].is_empty()
}

#[cfg(test)]
mod tests {
    use super::fixes_account;

    #[test]
    fn account_field() {
        assert!(fixes_account("arn:aws:iam::123456789012:role/ci-deploy-*"));
        assert!(fixes_account("arn:aws-cn:iam::123456789012:user/*"));
        for open in [
            "*",
            "arn:aws:iam::*:role/deploy",
            "arn:*:iam::123456789012:role/x",
            "arn:aws:iam::1234*",
            "arn:aws:iam:::role/x",
        ] {
            assert!(!fixes_account(open), "{open}");
        }
    }
}
