//! Authentication: from the presented credential to a verified [`Identity`].
//!
//! `jwt` parses and checks tokens, `keys` and `jwks` own each issuer's keys, `fetch` talks to identity
//! providers, `identity` turns verified claims into the headers Kong receives.

pub mod aws;
pub mod cache;
pub mod fetch;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod layer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub use cache::TokenDigest;
use cache::{TokenCache, Verified};
pub use identity::Identity;
use jwks::{JwksError, KeyStore};
use jwt::{ClaimRules, Jwt};
use keys::{KeyLookup, KeySet, VerifyingKey};

use crate::config::{IssuerConfig, IssuerKind};
use crate::metrics::Metrics;
use fetch::Fetcher;

/// Why a token was refused. One closed vocabulary, shared by responses, logs, metrics and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No token presented.
    Missing,
    /// Not a well-formed token.
    Malformed,
    /// Over the size cap.
    TooLarge,
    /// `alg` is none, unknown, or not allowed for the issuer or key.
    DisallowedAlg,
    /// `jku`, `x5u`, `jwk` or `x5c` header.
    ForbiddenHeader,
    /// `crit` header.
    UnknownCrit,
    /// `typ` other than JWT / at+jwt.
    UnsupportedType,
    /// No key with the token's `kid`.
    UnknownKey,
    /// Signature does not verify.
    BadSignature,
    /// `iss` not configured.
    WrongIssuer,
    /// `aud` not accepted.
    WrongAudience,
    /// Past `exp`.
    Expired,
    /// `nbf` or `iat` in the future.
    NotYetValid,
    /// No `exp`.
    MissingExp,
    /// `exp - iat` over the issuer's maximum.
    LifetimeTooLong,
    /// A claim that cannot be used (no `sub`, control characters).
    BadClaim,
    /// A `one_time` route: the token's `jti` was already used.
    Replayed,
    /// A `one_time` route: the token has no `jti`.
    MissingJti,
    /// kind aws: STS refused the presigned URL (wrong audience, altered, bad credentials).
    StsRefused,
    /// kind aws: the principal's account is not in the issuer's `accounts`.
    AccountNotAllowed,
    /// The verified identity matches an active revocation.
    Revoked,
}

impl Reason {
    /// The label used everywhere (`auth_decisions_total{reason}`, audit `reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too_large",
            Reason::DisallowedAlg => "disallowed_alg",
            Reason::ForbiddenHeader => "forbidden_header",
            Reason::UnknownCrit => "unknown_crit",
            Reason::UnsupportedType => "unsupported_typ",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::MissingExp => "missing_exp",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::BadClaim => "bad_claim",
            Reason::Replayed => "replayed",
            Reason::MissingJti => "missing_jti",
            Reason::StsRefused => "sts_refused",
            Reason::AccountNotAllowed => "account_not_allowed",
            Reason::Revoked => "revoked",
        }
    }
}

/// Authentication failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential at all.
    #[error("no token")]
    Missing,
    /// The credential was refused.
    #[error("{detail}")]
    Invalid {
        /// Closed vocabulary.
        reason: Reason,
        /// Human explanation (never contains the token).
        detail: String,
    },
    /// The issuer's keys have never been loaded.
    #[error("keys for issuer \"{issuer}\" are not available yet")]
    KeysUnavailable {
        /// Issuer name.
        issuer: String,
    },
    /// kind aws: STS could not be asked (unreachable, untrusted certificate, failing, throttling).
    #[error("STS could not check the token for issuer \"{issuer}\" (unreachable or failing); retry later")]
    StsUnavailable {
        /// Issuer name.
        issuer: String,
    },
}

impl AuthError {
    /// A refused token.
    pub fn invalid(reason: Reason, detail: impl Into<String>) -> Self {
        AuthError::Invalid { reason, detail: detail.into() }
    }

    /// The label for metrics and audit.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => Reason::Missing.as_str(),
            AuthError::Invalid { reason, .. } => reason.as_str(),
            AuthError::KeysUnavailable { .. } => "keys_unavailable",
            AuthError::StsUnavailable { .. } => "sts_unavailable",
        }
    }
}

/// One configured issuer at run time.
pub struct Issuer {
    /// Its configuration.
    pub config: IssuerConfig,
    /// Its keys.
    pub keys: Arc<KeyStore>,
}

impl Issuer {
    /// Verifies a parsed token that names this issuer: header, signature, claims, then the identity.
    pub async fn verify(&self, jwt: &Jwt<'_>, token_fingerprint: &str) -> Result<Identity, AuthError> {
        let alg = jwt.check_header(&self.config.algorithms)?;
        self.verify_signature(jwt, alg).await?;
        jwt::check_claims(&jwt.claims, &self.claim_rules(), unix_now())?;
        Identity::from_claims(&self.config, jwt.claims.clone(), token_fingerprint)
    }

    /// Checks the signature with this issuer's keys; an unknown kid triggers the (rate-limited) refetch.
    pub async fn verify_signature(&self, jwt: &Jwt<'_>, alg: jsonwebtoken::Algorithm) -> Result<(), AuthError> {
        let keys = self.keys.current();
        if !keys.loaded {
            return Err(AuthError::KeysUnavailable { issuer: self.config.name.clone() });
        }
        let kid = jwt.header.kid.as_deref();
        match verify_with(&keys, kid, alg, jwt) {
            Err(AuthError::Invalid { reason: Reason::UnknownKey, .. }) if kid.is_some() => {
                match self.keys.refetch_for_unknown_kid(&keys).await {
                    Some(newer) => verify_with(&newer, kid, alg, jwt),
                    None => Err(unknown_key()),
                }
            }
            other => other,
        }
    }

    /// The claim rules this issuer imposes.
    pub fn claim_rules(&self) -> ClaimRules<'_> {
        ClaimRules {
            issuer: &self.config.issuer,
            audiences: &self.config.audiences,
            leeway: self.config.leeway,
            max_lifetime: self.config.max_token_lifetime,
        }
    }
}

fn unknown_key() -> AuthError {
    AuthError::invalid(Reason::UnknownKey, "token is signed with a key this issuer does not publish")
}

fn verify_with(keys: &KeySet, kid: Option<&str>, alg: jsonwebtoken::Algorithm, jwt: &Jwt<'_>) -> Result<(), AuthError> {
    let candidates: Vec<&VerifyingKey> = match keys.lookup(kid, alg) {
        KeyLookup::Found(k) => k,
        KeyLookup::WrongAlgorithm => {
            return Err(AuthError::invalid(Reason::DisallowedAlg, "token algorithm does not match its key"));
        }
        KeyLookup::Unknown => return Err(unknown_key()),
    };
    let signature = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, jwt.signature)
        .map_err(|_| AuthError::invalid(Reason::Malformed, "token signature is not base64url"))?;
    if candidates.iter().any(|key| key.verify(alg, jwt.signing_input.as_bytes(), &signature)) {
        return Ok(());
    }
    Err(AuthError::invalid(Reason::BadSignature, "token signature does not verify"))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// All issuers, indexed by their exact `iss`.
pub struct Authenticator {
    issuers: Vec<Arc<Issuer>>,
    by_iss: HashMap<String, Vec<Arc<Issuer>>>,
    metrics: Arc<Metrics>,
    cache: TokenCache,
    /// kind aws issuers, when any: they have no keys and no `iss` (see [`aws`]).
    aws: Option<aws::AwsIssuers>,
}

/// A refused token, with the issuer it was checked against when one was found.
#[derive(Debug)]
pub struct Refusal {
    /// Issuer name, when the token's `iss` named a configured issuer.
    pub issuer: Option<String>,
    /// Why.
    pub error: AuthError,
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Self {
        Refusal { issuer: None, error }
    }
}

impl Authenticator {
    /// Builds the issuers (reading any `jwks_file` now). Remote keys load once [`Authenticator::refreshers`]
    /// run. On a reload, `previous` is the authenticator being replaced: issuers that kept their `iss`, key
    /// source and algorithms start from its keys (see [`KeyStore::inherit`]).
    pub fn new(
        configs: &[IssuerConfig],
        fetcher: &Fetcher,
        metrics: Arc<Metrics>,
        cache_capacity: usize,
        previous: Option<&Authenticator>,
    ) -> Result<Self, (String, JwksError)> {
        let mut issuers = Vec::with_capacity(configs.len());
        let mut by_iss: HashMap<String, Vec<Arc<Issuer>>> = HashMap::new();
        for config in configs.iter().filter(|c| c.kind != IssuerKind::Aws) {
            let mut keys = KeyStore::new(config, fetcher, metrics.clone()).map_err(|e| (config.name.clone(), e))?;
            if let Some(old) = previous.and_then(|p| p.same_keys_as(config)) {
                keys.inherit(&old.keys);
            }
            let issuer = Arc::new(Issuer { config: config.clone(), keys: Arc::new(keys) });
            by_iss.entry(config.issuer.clone()).or_default().push(issuer.clone());
            issuers.push(issuer);
        }
        Ok(Authenticator { issuers, by_iss, metrics, cache: TokenCache::new(cache_capacity), aws: None })
    }

    /// The issuer of this authenticator whose keys `config` would fetch from the same place, for the same
    /// `iss`, with the same algorithms.
    fn same_keys_as(&self, config: &IssuerConfig) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|i| {
            i.config.name == config.name
                && i.config.issuer == config.issuer
                && i.config.keys == config.keys
                && i.config.algorithms == config.algorithms
        })
    }

    /// Adds the kind aws issuers (built apart: they need STS clients, not keys).
    pub fn with_aws(mut self, aws: Option<aws::AwsIssuers>) -> Self {
        self.aws = aws;
        self
    }

    /// The kind aws issuers, if any.
    pub fn aws(&self) -> Option<&aws::AwsIssuers> {
        self.aws.as_ref()
    }

    /// The JWT issuers, in config order (kind aws issuers are in [`Authenticator::aws`]).
    pub fn issuers(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    /// Background tasks that keep remote keys fresh.
    pub fn refreshers(&self) -> Vec<impl Future<Output = ()> + Send + 'static> {
        self.issuers.iter().map(|i| i.keys.clone().run_refresher()).collect()
    }

    /// The issuer a token's (unverified) `iss` and `aud` point to, if any is configured.
    pub fn issuer_for(&self, jwt: &Jwt<'_>) -> Option<&Arc<Issuer>> {
        let candidates = self.by_iss.get(jwt.issuer()?)?;
        candidates.iter().find(|i| audience_matches(&jwt.claims, &i.config.audiences)).or(candidates.first())
    }

    /// Verifies a bearer token and returns who presented it.
    /// `digest` is the token's SHA-256 ([`TokenDigest::of`]), computed once by the caller.
    pub async fn authenticate(&self, token: &str, digest: &TokenDigest) -> Result<Arc<Identity>, Refusal> {
        // kind aws: presigned STS URLs, not JWTs; their own rules, cache and single flight (`aws`).
        if token.starts_with(aws::TOKEN_PREFIX) {
            return match &self.aws {
                Some(aws) => aws.authenticate(token, digest).await,
                None => Err(AuthError::invalid(Reason::WrongIssuer, "aws tokens are not accepted here").into()),
            };
        }
        let now = unix_now();
        if let Some(hit) = self.cache.get(digest, now)
            && self.issuers.get(hit.issuer).is_some_and(|i| i.keys.generation() == hit.generation)
        {
            self.metrics.token_cache_hits.inc();
            return Ok(hit.identity.clone());
        }
        let jwt = Jwt::parse(token)?;
        if jwt.issuer().is_none() {
            return Err(AuthError::invalid(Reason::WrongIssuer, "token has no iss").into());
        }
        // Several entries may share an iss with different audiences: issuer_for prefers the one the token is for.
        let issuer = self
            .issuer_for(&jwt)
            .ok_or_else(|| AuthError::invalid(Reason::WrongIssuer, "token issuer is not trusted here"))?;
        self.metrics.token_cache_misses.inc();
        let generation = issuer.keys.generation();
        let identity = issuer
            .verify(&jwt, &digest.fingerprint())
            .await
            .map(Arc::new)
            .map_err(|error| Refusal { issuer: Some(issuer.config.name.clone()), error })?;
        let exp = jwt.claims.get("exp").and_then(Value::as_f64).unwrap_or(now);
        if let Some(index) = self.issuers.iter().position(|i| Arc::ptr_eq(i, issuer)) {
            let verified = Verified { identity: identity.clone(), issuer: index, generation, exp };
            self.cache.insert(*digest, Arc::new(verified));
        }
        Ok(identity)
    }
}

fn audience_matches(claims: &Value, audiences: &[String]) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => audiences.contains(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| audiences.iter().any(|x| x == a)),
        _ => false,
    }
}

/// The first 16 hex digits of the SHA-256 of the presented token: safe to log, enough to correlate.
pub fn fingerprint(token: &str) -> String {
    TokenDigest::of(token).fingerprint()
}

/// Extracts the bearer token from an `Authorization` value. `Ok(None)` when the header is absent or not a
/// bearer credential.
pub fn bearer_token(value: Option<&http::HeaderValue>) -> Result<Option<&str>, AuthError> {
    let Some(value) = value else { return Ok(None) };
    let value = value
        .to_str()
        .map_err(|_| AuthError::invalid(Reason::Malformed, "Authorization header is not visible ASCII"))?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::invalid(Reason::Malformed, "empty bearer token"));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let v = HeaderValue::from_static("bEaReR abc.def.ghi");
        assert_eq!(bearer_token(Some(&v)).ok().flatten(), Some("abc.def.ghi"));
        let basic = HeaderValue::from_static("Basic dXNlcjpwYXNz");
        assert_eq!(bearer_token(Some(&basic)).ok().flatten(), None);
        assert!(bearer_token(Some(&HeaderValue::from_static("Bearer  "))).is_err());
        assert_eq!(bearer_token(None).ok().flatten(), None);
    }

    #[test]
    fn fingerprint_is_sha256_prefix() {
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(fingerprint("abc"), "ba7816bf8f01cfea");
    }
}
