//! The active revocations, compiled for the request path: grouped by issuer, and indexed by one exact claim
//! value where a revocation has one (`pipeline_id = "1717"`, a `jti`, an `arn`), so a request costs a few hash
//! lookups however many revocations are active. Revocations made only of globs are grouped by the claim their
//! first condition names: the claim is looked up once per group, and each revocation's first pattern is tried
//! on it before anything else.

use std::collections::HashMap;
use std::sync::Arc;

use super::Revocation;
use crate::auth::Identity;
use crate::policy::{Conditions, any_claim_text};

/// One revocation with its compiled conditions.
pub struct Compiled {
    /// As stored.
    pub revocation: Revocation,
    conditions: Conditions,
}

impl Compiled {
    /// Compiles `revocation`; `None` if its conditions no longer parse (written by a newer or broken writer).
    pub fn new(revocation: Revocation) -> Option<Arc<Compiled>> {
        let claims = crate::config::claim_conditions("claims", revocation.claims.clone()).ok()?;
        let conditions = Conditions::compile(&claims);
        Some(Arc::new(Compiled { revocation, conditions }))
    }

    fn applies(&self, identity: &Identity, now_ms: u64) -> bool {
        self.revocation.expires_ms > now_ms && self.conditions.all_match(&identity.claims)
    }
}

/// The revocations of one issuer.
#[derive(Default)]
struct ForIssuer {
    /// claim name → claim value → revocations with that exact condition.
    indexed: HashMap<String, HashMap<String, Vec<Arc<Compiled>>>>,
    /// Revocations with no exact top-level condition, by the claim their first condition names.
    scanned: HashMap<String, Vec<Arc<Compiled>>>,
    /// Those whose first condition is a JSON Pointer.
    pointers: Vec<Arc<Compiled>>,
}

/// See the module docs. Immutable: a change builds a new one, swapped in whole.
#[derive(Default)]
pub struct ActiveSet {
    issuers: HashMap<String, ForIssuer>,
    len: usize,
}

impl ActiveSet {
    /// Compiles these revocations.
    pub fn new<'a>(revocations: impl IntoIterator<Item = &'a Arc<Compiled>>) -> ActiveSet {
        let mut set = ActiveSet::default();
        for compiled in revocations {
            let issuer = set.issuers.entry(compiled.revocation.issuer.clone()).or_default();
            match compiled.conditions.exact_key() {
                Some((claim, values)) => {
                    let by_value = issuer.indexed.entry(claim.to_string()).or_default();
                    for value in values {
                        by_value.entry(value.to_string()).or_default().push(compiled.clone());
                    }
                }
                None => match compiled.conditions.first_claim() {
                    Some(claim) => issuer.scanned.entry(claim.to_string()).or_default().push(compiled.clone()),
                    None => issuer.pointers.push(compiled.clone()),
                },
            }
            set.len += 1;
        }
        set
    }

    /// How many revocations it holds (expired ones included until the next rebuild).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first unexpired revocation matching `identity`.
    pub fn matching(&self, identity: &Identity, now_ms: u64) -> Option<&Revocation> {
        let issuer = self.issuers.get(&identity.issuer)?;
        for (claim, by_value) in &issuer.indexed {
            let Some(value) = identity.claims.get(claim) else { continue };
            let mut found = None;
            any_claim_text(value, &mut |text| {
                found = by_value.get(text).and_then(|list| list.iter().find(|c| c.applies(identity, now_ms)));
                found.is_some()
            });
            if let Some(compiled) = found {
                return Some(&compiled.revocation);
            }
        }
        for (claim, group) in &issuer.scanned {
            // Every revocation of the group needs this claim: without it, none of them applies.
            let Some(value) = identity.claims.get(claim) else { continue };
            let found = group.iter().find(|c| c.conditions.first_matches(value) && c.applies(identity, now_ms));
            if let Some(compiled) = found {
                return Some(&compiled.revocation);
            }
        }
        issuer.pointers.iter().find(|c| c.applies(identity, now_ms)).map(|c| &c.revocation)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::config::IssuerKind;
    use crate::config::raw::RawPatterns;

    const NOW: u64 = 1_000_000;

    fn revocation(id: &str, issuer: &str, claims: &[(&str, &[&str])], expires_ms: u64) -> Arc<Compiled> {
        let claims: BTreeMap<String, RawPatterns> = claims
            .iter()
            .map(|(k, v)| (k.to_string(), RawPatterns::Many(v.iter().map(|s| s.to_string()).collect())))
            .collect();
        let r = Revocation {
            id: id.into(),
            issuer: issuer.into(),
            claims,
            reason: None,
            revoked_by: None,
            created_ms: 0,
            expires_ms,
        };
        Compiled::new(r).unwrap()
    }

    fn identity(issuer: &str, claims: serde_json::Value) -> Identity {
        Identity {
            issuer: issuer.into(),
            kind: IssuerKind::Gitlab,
            subject: "s".into(),
            claims,
            headers: vec![],
            token_sha256: String::new(),
        }
    }

    fn matched(set: &ActiveSet, who: &Identity) -> Option<String> {
        set.matching(who, NOW).map(|r| r.id.clone())
    }

    #[test]
    fn indexed_globbed_and_pointer_revocations_all_match() {
        let set = ActiveSet::new(&[
            revocation("pipeline", "gitlab", &[("pipeline_id", &["1717"]), ("project_path", &["platform/*"])], NOW + 1),
            revocation("glob", "gitlab", &[("project_path", &["legacy/*"])], NOW + 1),
            revocation("runner", "gitlab", &[("runner_id", &["42", "43"])], NOW + 1),
            revocation("pointer", "gitlab", &[("/nested/role", &["deploy*"])], NOW + 1),
            revocation("expired", "gitlab", &[("job_id", &["9"])], NOW),
            revocation("aws", "aws", &[("arn", &["arn:aws:iam::1:role/x"])], NOW + 1),
        ]);
        let gitlab = |claims| identity("gitlab", claims);
        assert_eq!(
            matched(&set, &gitlab(json!({"pipeline_id": 1717, "project_path": "platform/api"}))).as_deref(),
            Some("pipeline")
        );
        assert_eq!(matched(&set, &gitlab(json!({"pipeline_id": "1717", "project_path": "other/api"}))), None, "AND-ed");
        assert_eq!(matched(&set, &gitlab(json!({"project_path": "legacy/tools"}))).as_deref(), Some("glob"));
        assert_eq!(matched(&set, &gitlab(json!({"runner_id": 43}))).as_deref(), Some("runner"), "any of, by JSON text");
        assert_eq!(matched(&set, &gitlab(json!({"runner_id": [1, 42]}))).as_deref(), Some("runner"), "array elements");
        assert_eq!(matched(&set, &gitlab(json!({"nested": {"role": "deployer"}}))).as_deref(), Some("pointer"));
        assert_eq!(matched(&set, &gitlab(json!({"job_id": "9"}))), None, "expired");
        assert_eq!(matched(&set, &identity("okta", json!({"runner_id": 42}))), None, "another issuer");
        assert_eq!(matched(&set, &identity("aws", json!({"arn": "arn:aws:iam::1:role/x"}))).as_deref(), Some("aws"));
        assert_eq!(set.len(), 6);
        assert!(ActiveSet::default().matching(&gitlab(json!({"runner_id": 42})), NOW).is_none());
    }
}
