//! Route policy: allow rules compiled at load (OR-ed rules of AND-ed claim conditions), evaluated on a
//! verified identity. Default deny: a route with no matching rule refuses, and the refusal names the
//! first failing condition of the closest rule.

use serde_json::Value;

use crate::auth::Identity;
use crate::config::{ClaimKey, RuleConfig};

pub mod layer;

/// A claim pattern: exact text, or a glob where `*` matches any run of characters.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Exact text.
    Exact(String),
    /// Literal pieces between `*`s; the first and last are anchored.
    Glob(Vec<String>),
}

impl Pattern {
    /// Compiles a pattern.
    pub fn new(text: &str) -> Pattern {
        if text.contains('*') {
            Pattern::Glob(text.split('*').map(str::to_string).collect())
        } else {
            Pattern::Exact(text.to_string())
        }
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Exact(p) => p == text,
            Pattern::Glob(parts) => glob_match(parts, text),
        }
    }
}

fn glob_match(parts: &[String], text: &str) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if parts.len() == 1 {
        return first == text;
    }
    if text.len() < first.len() + last.len() || !text.starts_with(first.as_str()) || !text.ends_with(last.as_str()) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle.as_str()) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Whether `test` holds for one of a claim's values as patterns see them: a string as is, a boolean or number by
/// its JSON text (`true`, `42`), each element of an array (not nested arrays); objects and null have none.
pub fn any_claim_text(value: &Value, test: &mut impl FnMut(&str) -> bool) -> bool {
    match value {
        Value::String(s) => test(s),
        Value::Bool(_) | Value::Number(_) => test(&value.to_string()),
        Value::Array(items) => items.iter().any(|v| !v.is_array() && any_claim_text(v, test)),
        Value::Object(_) | Value::Null => false,
    }
}

#[derive(Debug, Clone)]
struct Condition {
    claim: ClaimKey,
    patterns: Vec<Pattern>,
    expected: String,
}

impl Condition {
    fn compile(claim: &ClaimKey, patterns: &[String]) -> Condition {
        Condition {
            claim: claim.clone(),
            patterns: patterns.iter().map(|p| Pattern::new(p)).collect(),
            expected: match patterns {
                [one] => format!("\"{one}\""),
                many => format!("one of {}", serde_json::to_string(many).unwrap_or_default()),
            },
        }
    }

    fn matches(&self, claims: &Value) -> bool {
        self.claim.lookup(claims).is_some_and(|v| self.value_matches(v))
    }

    fn value_matches(&self, value: &Value) -> bool {
        any_claim_text(value, &mut |text| self.patterns.iter().any(|p| p.matches(text)))
    }

    fn explain(&self, claims: &Value) -> String {
        match self.claim.lookup(claims) {
            None => format!("claim \"{}\" is missing (expected {})", self.claim.as_str(), self.expected),
            Some(v) => {
                let mut actual = v.to_string();
                if actual.len() > 120 {
                    actual.truncate(actual.floor_char_boundary(117));
                    actual.push_str("...");
                }
                format!("claim \"{}\" is {actual}, expected {}", self.claim.as_str(), self.expected)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    issuer: String,
    conditions: Vec<Condition>,
}

/// AND-ed claim conditions on their own, with the allow rules' matcher: what a revocation names.
#[derive(Debug, Clone)]
pub struct Conditions(Vec<Condition>);

impl Conditions {
    /// Compiles claim conditions (claim → patterns, any may match).
    pub fn compile(claims: &[(ClaimKey, Vec<String>)]) -> Conditions {
        Conditions(claims.iter().map(|(claim, patterns)| Condition::compile(claim, patterns)).collect())
    }

    /// Every condition holds on these claims (and there is at least one).
    pub fn all_match(&self, claims: &Value) -> bool {
        !self.0.is_empty() && self.0.iter().all(|c| c.matches(claims))
    }

    /// The first condition's top-level claim name (`None` for a JSON Pointer): revocations that share it can
    /// look the claim up once.
    pub fn first_claim(&self) -> Option<&str> {
        match &self.0.first()?.claim {
            ClaimKey::Name(name) => Some(name),
            ClaimKey::Pointer(_) => None,
        }
    }

    /// Whether the first condition accepts `value` (the claim it names, already looked up).
    pub fn first_matches(&self, value: &Value) -> bool {
        self.0.first().is_some_and(|c| c.value_matches(value))
    }

    /// A top-level claim and the exact values one of the conditions accepts (no glob), if any: an index key
    /// that rules out most candidates with one hash lookup.
    pub fn exact_key(&self) -> Option<(&str, Vec<&str>)> {
        self.0.iter().find_map(|c| match &c.claim {
            ClaimKey::Name(name) => {
                let exact: Option<Vec<&str>> = c
                    .patterns
                    .iter()
                    .map(|p| match p {
                        Pattern::Exact(text) => Some(text.as_str()),
                        Pattern::Glob(_) => None,
                    })
                    .collect();
                exact.map(|values| (name.as_str(), values))
            }
            ClaimKey::Pointer(_) => None,
        })
    }
}

/// One allow rule evaluated against an identity.
#[derive(Debug, Clone)]
pub struct RuleReport {
    /// The rule's issuer.
    pub issuer: String,
    /// Whether the token came from that issuer.
    pub issuer_matches: bool,
    /// Each condition.
    pub conditions: Vec<ConditionReport>,
}

impl RuleReport {
    /// The rule allows: right issuer, every condition met.
    pub fn allows(&self) -> bool {
        self.issuer_matches && self.conditions.iter().all(|c| c.passed)
    }
}

/// One claim condition evaluated against an identity.
#[derive(Debug, Clone)]
pub struct ConditionReport {
    /// Claim name or pointer.
    pub claim: String,
    /// The claim's value as JSON, or `(missing)`.
    pub actual: String,
    /// What the rule expects.
    pub expected: String,
    /// Verdict.
    pub passed: bool,
}

/// A route's compiled allow rules.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Compiles allow rules.
    pub fn compile(rules: &[RuleConfig]) -> Policy {
        let rules = rules
            .iter()
            .map(|r| Rule { issuer: r.issuer.clone(), conditions: Conditions::compile(&r.claims).0 })
            .collect();
        Policy { rules }
    }

    /// Every rule and condition with the claim's actual value and the verdict, for `runway explain`.
    pub fn report(&self, identity: &Identity) -> Vec<RuleReport> {
        self.rules
            .iter()
            .map(|rule| RuleReport {
                issuer: rule.issuer.clone(),
                issuer_matches: rule.issuer == identity.issuer,
                conditions: rule
                    .conditions
                    .iter()
                    .map(|c| {
                        let actual = c.claim.lookup(&identity.claims).map_or("(missing)".to_string(), Value::to_string);
                        ConditionReport {
                            claim: c.claim.as_str().to_string(),
                            actual,
                            expected: c.expected.clone(),
                            passed: c.matches(&identity.claims),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Allows, or explains the refusal.
    pub fn evaluate(&self, identity: &Identity) -> Result<(), String> {
        // The closest rule: of the rules for this issuer, the one with the most conditions met.
        let mut closest: Option<(usize, &Rule)> = None;
        for rule in self.rules.iter().filter(|r| r.issuer == identity.issuer) {
            let met = rule.conditions.iter().take_while(|c| c.matches(&identity.claims)).count();
            if met == rule.conditions.len() {
                return Ok(());
            }
            if closest.is_none_or(|(best, _)| met > best) {
                closest = Some((met, rule));
            }
        }
        match closest {
            Some((met, rule)) => Err(rule.conditions[met].explain(&identity.claims)),
            None if self.rules.is_empty() => Err("the route has no allow rules".to_string()),
            None => Err(format!("no allow rule accepts issuer \"{}\"", identity.issuer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IssuerKind;
    use serde_json::json;

    fn identity(issuer: &str, claims: Value) -> Identity {
        Identity {
            issuer: issuer.into(),
            kind: IssuerKind::Oidc,
            subject: "s".into(),
            claims,
            headers: vec![],
            token_sha256: String::new(),
        }
    }

    fn rule(issuer: &str, claims: &[(&str, &[&str])]) -> RuleConfig {
        RuleConfig {
            issuer: issuer.into(),
            claims: claims
                .iter()
                .map(|(k, v)| {
                    let key = if k.starts_with('/') {
                        ClaimKey::Pointer(k.to_string())
                    } else {
                        ClaimKey::Name(k.to_string())
                    };
                    (key, v.iter().map(|s| s.to_string()).collect())
                })
                .collect(),
        }
    }

    #[test]
    fn globs() {
        let p = Pattern::new("platform/tools/*");
        assert!(p.matches("platform/tools/x"));
        assert!(p.matches("platform/tools/"));
        assert!(!p.matches("platform/tool"));
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("a*b*c").matches("abc"));
        assert!(Pattern::new("a*b*c").matches("a-b-b-c"));
        assert!(!Pattern::new("a*b*c").matches("acb"));
        assert!(!Pattern::new("ab*ba").matches("aba"), "anchors may not overlap");
        assert!(!Pattern::new("platform/api").matches("platform/api2"));
    }

    #[test]
    fn rules_are_ored_and_conditions_anded() {
        let policy = Policy::compile(&[
            rule(
                "gitlab",
                &[
                    ("project_path", &["platform/api", "platform/tools/*"]),
                    ("ref_protected", &["true"]),
                    ("environment", &["production"]),
                ],
            ),
            rule("okta", &[("scp", &["deploy:production"])]),
        ]);
        let ok = identity(
            "gitlab",
            json!({"project_path":"platform/tools/x","ref_protected":"true","environment":"production"}),
        );
        assert!(policy.evaluate(&ok).is_ok());
        let bool_claim =
            identity("gitlab", json!({"project_path":"platform/api","ref_protected":true,"environment":"production"}));
        assert!(policy.evaluate(&bool_claim).is_ok(), "booleans compare by JSON text");
        let staging =
            identity("gitlab", json!({"project_path":"platform/api","ref_protected":"true","environment":"staging"}));
        assert_eq!(
            policy.evaluate(&staging).unwrap_err(),
            "claim \"environment\" is \"staging\", expected \"production\""
        );
        let missing = identity("gitlab", json!({"project_path":"platform/api"}));
        assert!(policy.evaluate(&missing).unwrap_err().contains("\"ref_protected\" is missing"));
        let scopes = identity("okta", json!({"scp":["read","deploy:production"]}));
        assert!(policy.evaluate(&scopes).is_ok(), "arrays match on any element");
        let other = identity("aws", json!({}));
        assert_eq!(policy.evaluate(&other).unwrap_err(), "no allow rule accepts issuer \"aws\"");
        assert!(Policy::default().evaluate(&ok).is_err(), "default deny");
    }

    #[test]
    fn numbers_and_pointers() {
        let policy = Policy::compile(&[rule(
            "oidc",
            &[("/https:~1~1sts.amazonaws.com~1/aws_account", &["1234*"]), ("job_id", &["42"])],
        )]);
        let ok = identity("oidc", json!({"https://sts.amazonaws.com/": {"aws_account": "123456789012"}, "job_id": 42}));
        assert!(policy.evaluate(&ok).is_ok());
        let wrong = identity("oidc", json!({"https://sts.amazonaws.com/": {"aws_account": "999"}, "job_id": 42}));
        assert!(policy.evaluate(&wrong).is_err());
    }
}
