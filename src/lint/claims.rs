//! Conditions on claims a provider never issues. Policy treats a missing claim as a failed condition, so a
//! typo such as `project_pth` does not fail open: it makes its rule admit nobody, and it usually hides the pin
//! that was meant (the rule then also lacks `project_path`). The lists are the providers' documented claims.

use super::facts::RuleFacts;
use super::finding::{Finding, Rule};
use crate::config::ClaimKey;

/// A provider's documented claims, for the unknown-claim rules.
#[derive(Debug)]
pub struct Vocabulary {
    /// The provider, for messages ("GitLab").
    pub provider: &'static str,
    /// The rule reporting unknown claims.
    pub rule: Rule,
    /// Every claim the provider documents.
    pub claims: &'static [&'static str],
    /// Claim name prefixes the provider fills in from settings (`repo_property_` on GitHub).
    pub prefixes: &'static [&'static str],
    /// Where the list comes from, for the fix text.
    pub reference: &'static str,
}

/// The registered claims of RFC 7519, present in every JWT the providers issue.
const REGISTERED: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

impl Vocabulary {
    fn knows(&self, name: &str) -> bool {
        REGISTERED.contains(&name)
            || self.claims.contains(&name)
            || self.prefixes.iter().any(|prefix| name.starts_with(prefix))
    }

    /// One finding per condition of `rule` on a claim this provider never issues.
    pub fn check(&self, rule: &RuleFacts<'_>) -> Vec<Finding> {
        rule.rule
            .claims
            .iter()
            .filter_map(|(claim, _)| {
                let name = top_level(claim);
                (!self.knows(&name)).then(|| self.finding(rule, claim.as_str(), &name))
            })
            .collect()
    }

    fn finding(&self, rule: &RuleFacts<'_>, written: &str, name: &str) -> Finding {
        let hint = match self.closest(name) {
            Some(known) => format!(" (did you mean \"{known}\"?)"),
            None => String::new(),
        };
        self.rule
            .at(
                rule.claim_key(written),
                format!(
                    "\"{name}\" is not a claim {} issues{hint}: this condition can never hold, so the rule admits \
                     nobody",
                    self.provider
                ),
            )
            .explain(
                "A misspelt condition does not fail open, but the condition that was meant (often the project or \
                 repository pin) is not there: fixing the route later by deleting the odd line leaves it \
                 unpinned, and until then the pipelines it was written for are refused.",
                format!("Use a claim from {}'s list: {}.", self.provider, self.reference),
            )
    }

    /// The documented claim nearest to `name` by edit distance, if it is a plausible typo of it.
    fn closest(&self, name: &str) -> Option<&'static str> {
        self.claims
            .iter()
            .chain(REGISTERED)
            .map(|known| (edit_distance(name, known), *known))
            .filter(|(distance, known)| *distance <= 2.max(known.len() / 4))
            .min()
            .map(|(_, known)| known)
    }
}

/// The top-level claim a condition reads: the name itself, or the first segment of a JSON Pointer
/// (RFC 6901 escapes undone: `~1` is `/`, `~0` is `~`).
fn top_level(claim: &ClaimKey) -> String {
    match claim {
        ClaimKey::Name(name) => name.clone(),
        ClaimKey::Pointer(pointer) => {
            let first = pointer.trim_start_matches('/').split('/').next().unwrap_or_default();
            first.replace("~1", "/").replace("~0", "~")
        }
    }
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("project_pth", "project_path"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("ref", "ref"), 0);
    }

    #[test]
    fn pointer_top_level() {
        assert_eq!(top_level(&ClaimKey::Pointer("/job_config/sha".into())), "job_config");
        assert_eq!(
            top_level(&ClaimKey::Pointer("/https:~1~1sts.amazonaws.com~1/aws_account".into())),
            "https://sts.amazonaws.com/"
        );
    }
}
