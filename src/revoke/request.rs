//! A revocation as an operator asks for it (`POST /revocations`), checked against the config: every refusal
//! names the field at fault.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::Revocation;
use crate::config::Config;
use crate::config::raw::RawPatterns;

/// Longest `reason` or `revoked_by` kept: they are for people reading a list, not documents.
const MAX_TEXT: usize = 512;

/// The body of `POST /revocations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRevocation {
    /// Issuer name, as in the config.
    pub issuer: String,
    /// Claim conditions (the allow-rule matcher): at least one.
    #[serde(default)]
    pub claims: BTreeMap<String, RawPatterns>,
    /// Why (for the list and the logs).
    #[serde(default)]
    pub reason: Option<String>,
    /// Who (for the list and the logs).
    #[serde(default)]
    pub revoked_by: Option<String>,
    /// RFC 3339 time or a duration from now; default and maximum: the issuer's `max_token_lifetime`.
    #[serde(default)]
    pub expires: Option<String>,
}

/// A refused revocation: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field at fault (`issuer`, `claims."pipeline_id"`, `expires`, or `body`).
    pub field: String,
    /// Why.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Parses and checks a request body into a revocation with a fresh id.
pub fn parse(body: &[u8], config: &Config, now: SystemTime) -> Result<Revocation, FieldError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let new: NewRevocation = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        // serde reports a missing field at the object that lacks it: name the field itself.
        let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
        let field = match (missing, path.as_str()) {
            (Some(name), ".") => name.to_string(),
            // "?": the JSON itself is broken (serde could not tell where in the structure).
            (None, "." | "?") => "body".to_string(),
            _ => path,
        };
        FieldError::new(field, message)
    })?;
    check(new, config, now)
}

fn check(new: NewRevocation, config: &Config, now: SystemTime) -> Result<Revocation, FieldError> {
    let Some(issuer) = config.issuers.iter().find(|i| i.name == new.issuer) else {
        let known: Vec<&str> = config.issuers.iter().map(|i| i.name.as_str()).collect();
        return Err(FieldError::new(
            "issuer",
            format!("no issuer named \"{}\" (known: {})", new.issuer, known.join(", ")),
        ));
    };
    if new.claims.is_empty() {
        return Err(FieldError::new(
            "claims",
            "at least one condition is needed: without one the revocation would refuse every token of the issuer",
        ));
    }
    crate::config::claim_conditions("claims", new.claims.clone()).map_err(|e| match e {
        crate::config::ConfigError::Invalid { key, message } => FieldError::new(key, message),
        other => FieldError::new("claims", other.to_string()),
    })?;
    let longest = now + issuer.max_token_lifetime;
    let expires = match new.expires.as_deref().map(str::trim) {
        None | Some("") => longest,
        Some(text) => expiry(text, now)?.min(longest),
    };
    Ok(Revocation {
        id: uuid::Uuid::new_v4().to_string(),
        issuer: new.issuer,
        claims: new.claims,
        reason: text("reason", new.reason)?,
        revoked_by: text("revoked_by", new.revoked_by)?,
        created_ms: unix_ms(now),
        expires_ms: unix_ms(expires),
    })
}

/// An RFC 3339 time, or a duration from `now`; never in the past.
fn expiry(text: &str, now: SystemTime) -> Result<SystemTime, FieldError> {
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(at) => at,
        Err(_) => match humantime::parse_duration(text) {
            Ok(after) if !after.is_zero() => now + after,
            _ => {
                return Err(FieldError::new(
                    "expires",
                    format!("\"{text}\" is neither an RFC 3339 time (2026-12-03T15:00:00Z) nor a duration (\"30m\")"),
                ));
            }
        },
    };
    if at <= now {
        return Err(FieldError::new("expires", format!("\"{text}\" is in the past")));
    }
    Ok(at)
}

fn text(field: &str, value: Option<String>) -> Result<Option<String>, FieldError> {
    let Some(value) = value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else { return Ok(None) };
    if value.chars().count() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(FieldError::new(field, format!("at most {MAX_TEXT} characters, no control characters")));
    }
    Ok(Some(value))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time of a Unix millisecond count.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
