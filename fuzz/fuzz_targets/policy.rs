//! The claim matcher: a route's allow rules (OR-ed rules of AND-ed conditions, `*` globs, JSON Pointers)
//! evaluated against arbitrary JSON claims, checked against a plain reference model of contract section 2
//! ("Claim conditions").
//!
//! Input: rule lines, a blank line, then the claims as JSON. A rule line is
//! `ISSUER|CLAIM=PATTERN,PATTERN|CLAIM=PATTERN…` (a claim starting with `/` is a JSON Pointer). The identity
//! always comes from issuer `gitlab`.
//!
//! ```text
//! gitlab|project_path=platform/api,platform/tools/*|ref_protected=true
//! okta|scp=deploy:production
//!
//! {"project_path":"platform/tools/x","ref_protected":true}
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use runway::auth::Identity;
use runway::config::{ClaimKey, IssuerKind, RuleConfig};
use runway::policy::{Pattern, Policy, RuleReport};
use serde_json::Value;

const ISSUER: &str = "gitlab";

/// Parses one rule line; `None` for what the config loader would refuse (empty claim name, no pattern).
fn rule(line: &str) -> Option<RuleConfig> {
    let mut fields = line.split('|');
    let issuer = fields.next()?.to_string();
    let mut claims = Vec::new();
    for field in fields {
        let (claim, patterns) = field.split_once('=')?;
        if claim.is_empty() {
            return None;
        }
        let key = if claim.starts_with('/') { ClaimKey::Pointer(claim.into()) } else { ClaimKey::Name(claim.into()) };
        claims.push((key, patterns.split(',').map(str::to_string).collect()));
    }
    Some(RuleConfig { issuer, claims })
}

/// Wildcard matching the textbook way: `*` matches any run of characters, everything else itself.
fn reference_glob(pattern: &str, text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let mut matched = vec![false; text.len() + 1];
    matched[0] = true;
    for pc in pattern.chars() {
        let mut next = vec![false; text.len() + 1];
        if pc == '*' {
            let mut any = false;
            for (j, m) in matched.iter().enumerate() {
                any |= *m;
                next[j] = any;
            }
        } else {
            for j in 1..=text.len() {
                next[j] = matched[j - 1] && text[j - 1] == pc;
            }
        }
        matched = next;
    }
    matched[text.len()]
}

/// The texts a claim offers to a pattern: a string as is, a boolean or number by its JSON text, an array
/// its scalar elements; objects, null and nested arrays offer nothing.
fn texts(value: &Value, top: bool) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Bool(_) | Value::Number(_) => vec![value.to_string()],
        Value::Array(items) if top => items.iter().flat_map(|v| texts(v, false)).collect(),
        Value::Array(_) | Value::Object(_) | Value::Null => vec![],
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (rules_text, claims_text) = text.split_once("\n\n").unwrap_or((text, "{}"));
    let Ok(claims) = serde_json::from_str::<Value>(claims_text) else { return };
    let Some(rules) = rules_text.lines().map(rule).collect::<Option<Vec<_>>>() else { return };
    let identity = Identity {
        issuer: ISSUER.into(),
        kind: IssuerKind::Gitlab,
        subject: "fuzz".into(),
        claims,
        headers: vec![],
        token_sha256: "0123456789abcdef".into(),
    };
    let policy = Policy::compile(&rules);
    let verdict = policy.evaluate(&identity);
    let report = policy.report(&identity);
    assert_eq!(verdict.is_ok(), report.iter().any(RuleReport::allows), "evaluate and report disagree: {verdict:?}");
    if let Err(detail) = &verdict {
        // The 403 detail quotes the claim cut to 120 bytes, and the rule's patterns (from the config, as JSON:
        // at most 6 bytes per byte): a token cannot make it grow.
        assert!(detail.len() <= 256 + 120 + 6 * rules_text.len(), "the detail grows with the claims: {detail}");
    }
    assert_eq!(report.len(), rules.len());
    for (rule, rule_report) in rules.iter().zip(&report) {
        assert_eq!(rule_report.issuer_matches, rule.issuer == ISSUER);
        for ((key, patterns), condition) in rule.claims.iter().zip(&rule_report.conditions) {
            let offered = key.lookup(&identity.claims).map(|v| texts(v, true)).unwrap_or_default();
            // The reference model is quadratic: keep it to inputs it answers quickly.
            let work: usize =
                patterns.iter().map(String::len).sum::<usize>() * offered.iter().map(String::len).sum::<usize>();
            if work > 1 << 20 {
                continue;
            }
            let expected = offered.iter().any(|t| patterns.iter().any(|p| reference_glob(p, t)));
            assert_eq!(condition.passed, expected, "claim {:?} {patterns:?} against {offered:?}", key.as_str());
            for p in patterns {
                for t in &offered {
                    assert_eq!(Pattern::new(p).matches(t), reference_glob(p, t), "pattern {p:?} text {t:?}");
                }
            }
        }
    }
});
