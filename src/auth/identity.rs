//! The verified identity, and the identity headers it becomes (contract section 3). Header values are
//! built once, at verification, so a claim holding control characters refuses the token (401) before any
//! policy or forwarding happens.

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::{AuthError, Reason};
use crate::config::{ClaimKey, IssuerConfig, IssuerKind};

/// Who presented the request, as proven by a verified token.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Issuer name (config).
    pub issuer: String,
    /// Issuer kind.
    pub kind: IssuerKind,
    /// `sub`.
    pub subject: String,
    /// All verified claims.
    pub claims: Value,
    /// Identity headers for Kong, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Fingerprint of the presented token.
    pub token_sha256: String,
}

const GITLAB_HEADERS: &[(&str, &str)] = &[
    ("x-runway-project", "project_path"),
    ("x-runway-job-id", "job_id"),
    ("x-runway-pipeline-id", "pipeline_id"),
    ("x-runway-ref", "ref"),
    ("x-runway-environment", "environment"),
    ("x-runway-user", "user_login"),
];
/// GitHub Actions (contract section 3): the workflow file that ran (`job_workflow_ref`: for a reusable workflow
/// that is the called file, which is what a deploy policy cares about), and who and what triggered it.
const GITHUB_HEADERS: &[(&str, &str)] = &[
    ("x-runway-repository", "repository"),
    ("x-runway-workflow", "job_workflow_ref"),
    ("x-runway-ref", "ref"),
    ("x-runway-environment", "environment"),
    ("x-runway-actor", "actor"),
];
const OKTA_HEADERS: &[(&str, &str)] =
    &[("x-runway-client-id", "cid"), ("x-runway-scopes", "scp"), ("x-runway-user", "uid")];
const AWS_HEADERS: &[(&str, &str)] =
    &[("x-runway-aws-account", "account"), ("x-runway-aws-arn", "arn"), ("x-runway-aws-session", "session_name")];

impl Identity {
    /// Builds the identity and its headers from verified claims.
    pub fn from_claims(config: &IssuerConfig, claims: Value, token_sha256: &str) -> Result<Identity, AuthError> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::invalid(Reason::BadClaim, "token has no sub"))?
            .to_string();
        let mut headers = Vec::with_capacity(8);
        headers.push((HeaderName::from_static("x-runway-issuer"), header_value("iss", &config.name)?));
        headers.push((HeaderName::from_static("x-runway-subject"), header_value("sub", &subject)?));
        let preset = match config.kind {
            IssuerKind::Gitlab => GITLAB_HEADERS,
            IssuerKind::Github => GITHUB_HEADERS,
            IssuerKind::Okta => OKTA_HEADERS,
            IssuerKind::Oidc => &[],
            IssuerKind::Aws => AWS_HEADERS,
        };
        for (header, claim) in preset {
            if let Some(text) = claims.get(*claim).and_then(claim_text) {
                headers.push((HeaderName::from_static(header), header_value(claim, &text)?));
            }
        }
        for (header, claim) in &config.headers {
            if let Some(text) = claim.lookup(&claims).and_then(claim_text) {
                headers.retain(|(h, _)| h != header);
                headers.push((header.clone(), header_value(key_name(claim), &text)?));
            }
        }
        Ok(Identity {
            issuer: config.name.clone(),
            kind: config.kind,
            subject,
            claims,
            headers,
            token_sha256: token_sha256.to_string(),
        })
    }
}

fn key_name(claim: &ClaimKey) -> &str {
    claim.as_str()
}

/// A claim as header text: strings as they are, numbers and booleans by their JSON text, arrays
/// space-joined (Okta's `scp`). Objects and null are not copied.
pub fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|v| match v {
                    Value::Array(_) | Value::Object(_) | Value::Null => None,
                    other => claim_text(other),
                })
                .collect();
            Some(parts.join(" "))
        }
        Value::Object(_) | Value::Null => None,
    }
}

fn header_value(claim: &str, text: &str) -> Result<HeaderValue, AuthError> {
    if text.chars().any(char::is_control) {
        return Err(AuthError::invalid(Reason::BadClaim, format!("claim \"{claim}\" holds control characters")));
    }
    HeaderValue::from_bytes(text.as_bytes())
        .map_err(|_| AuthError::invalid(Reason::BadClaim, format!("claim \"{claim}\" cannot be sent as a header")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_text_rules() {
        assert_eq!(claim_text(&json!("a")).as_deref(), Some("a"));
        assert_eq!(claim_text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(claim_text(&json!(42)).as_deref(), Some("42"));
        assert_eq!(claim_text(&json!(["deploy", "read"])).as_deref(), Some("deploy read"));
        assert_eq!(claim_text(&json!({"a": 1})), None);
        assert_eq!(claim_text(&Value::Null), None);
    }

    #[test]
    fn control_characters_refuse_the_token() {
        assert!(header_value("ref", "main\r\nX-Runway-Subject: root").is_err());
        assert!(header_value("ref", "tab\there").is_err());
        assert!(header_value("user", "zoë").is_ok());
    }
}
