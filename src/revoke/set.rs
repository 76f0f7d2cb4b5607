//! The active revocations, compiled for the request path: grouped by issuer, and indexed by one exact claim
//! value where a revocation has one (`pipeline_id = "1717"`, a `jti`, an `arn`), so a request costs a few hash
//! lookups however many revocations are active. Revocations made only of globs are checked one by one.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::Revocation;
use crate::auth::Identity;
use crate::policy::Conditions;

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
    /// Revocations with no exact top-level condition.
    scanned: Vec<Arc<Compiled>>,
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
                None => issuer.scanned.push(compiled.clone()),
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
            let found =
                texts(value).find_map(|text| by_value.get(text.as_ref())?.iter().find(|c| c.applies(identity, now_ms)));
            if let Some(compiled) = found {
                return Some(&compiled.revocation);
            }
        }
        issuer.scanned.iter().find(|c| c.applies(identity, now_ms)).map(|c| &c.revocation)
    }
}

/// A claim's values as the matcher compares them: a string as is, a number or boolean by its JSON text, each
/// element of an array.
fn texts(value: &Value) -> Box<dyn Iterator<Item = std::borrow::Cow<'_, str>> + '_> {
    match value {
        Value::String(s) => Box::new(std::iter::once(std::borrow::Cow::Borrowed(s.as_str()))),
        Value::Bool(_) | Value::Number(_) => Box::new(std::iter::once(std::borrow::Cow::Owned(value.to_string()))),
        Value::Array(items) => Box::new(items.iter().filter(|v| !v.is_array()).flat_map(texts)),
        Value::Object(_) | Value::Null => Box::new(std::iter::empty()),
    }
}
