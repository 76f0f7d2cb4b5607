//! `kind = "aws"`: presigned STS GetCallerIdentity tokens (contract section 5).
//!
//! [`presigned`] holds a token to aws-iam-authenticator's rules without any network call, [`sts`] makes the
//! one call that proves it, [`arn`] turns the answer into the canonical principal. This module picks the
//! issuer, remembers verdicts, and makes a burst of requests with one new token cost one STS call.
//!
//! **Which issuer.** An aws token has no `iss`, and its audience is not in the URL: `x-k8s-aws-id` is only
//! *named* in `X-Amz-SignedHeaders`, its value is inside the signature. So the candidates are the aws
//! issuers whose STS allowlist holds the URL's endpoint (and whose leeway admits its `X-Amz-Date`), and
//! their audiences are tried in config order, each distinct audience once: STS accepts the audience the
//! token was signed for and refuses the others (`SignatureDoesNotMatch`). The issuer is then the first
//! candidate with that audience whose `accounts` admit the principal. With one aws issuer with one
//! audience (the usual case) that is exactly one call; in general at most one call per distinct audience,
//! a number fixed by the config, never by the token. An unreachable STS ends the search at once (503): an
//! outage is never reported as a refusal.
//!
//! **The cache.** Verdicts, an identity or an STS refusal, are kept until the token expires (15 minutes
//! after `X-Amz-Date`, plus leeway), keyed by the token's SHA-256, in a bounded `quick_cache` (the crate the
//! JWT cache uses). The first request for a token holds the entry's placeholder while it asks STS; every
//! concurrent request with that token waits for it and shares its verdict: one STS call per burst. A
//! failure to reach STS is shared the same way but kept only one second, so an outage does not outlive
//! itself. The format and time rules run on every request, cached or not, before the cache is consulted.

pub mod arn;
pub mod presigned;
pub mod sts;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub use presigned::{Presigned, TOKEN_PREFIX};
use sts::{CallerIdentity, StsClient, StsError};

use super::{AuthError, Identity, Reason, Refusal, TokenDigest, unix_now};
use crate::config::{AwsConfig, IssuerConfig, IssuerKind, StsEndpoint};
use crate::metrics::Metrics;
use crate::tls::{self, TlsError};

/// Verdicts remembered at once (one per token).
pub const CACHE_CAPACITY: usize = 10_000;
/// How long a failure to reach STS is shared with later requests for the same token.
const UNAVAILABLE_TTL: Duration = Duration::from_secs(1);
/// How many times a stale cache entry is replaced before verifying without the cache.
const CACHE_ATTEMPTS: usize = 3;

/// An aws issuer's STS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AwsBuildError {
    /// `sts_ca` could not be read or holds no usable CA certificate.
    #[error("{key}: {path}: {message}")]
    StsCa {
        /// Config key, e.g. `issuers[2].sts_ca`.
        key: String,
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the client configuration.
    #[error("{key}: {message}")]
    Tls {
        /// Config key.
        key: String,
        /// What rustls said.
        message: String,
    },
}

struct AwsIssuer {
    config: IssuerConfig,
    aws: AwsConfig,
    sts: StsClient,
}

/// What was concluded about one token.
#[derive(Debug)]
struct Verdict {
    outcome: Outcome,
    /// Unix seconds after which the verdict must not be used.
    until: f64,
}

#[derive(Debug)]
enum Outcome {
    Verified(Arc<Identity>),
    Refused { issuer: String, reason: Reason, detail: String },
    Unavailable { issuer: String },
}

impl Verdict {
    fn result(&self) -> Result<Arc<Identity>, Refusal> {
        match &self.outcome {
            Outcome::Verified(identity) => Ok(identity.clone()),
            Outcome::Refused { issuer, reason, detail } => {
                Err(Refusal { issuer: Some(issuer.clone()), error: AuthError::invalid(*reason, detail.clone()) })
            }
            Outcome::Unavailable { issuer } => Err(Refusal {
                issuer: Some(issuer.clone()),
                error: AuthError::StsUnavailable { issuer: issuer.clone() },
            }),
        }
    }
}

/// Every `kind = "aws"` issuer of a config, their STS clients and the verdict cache.
pub struct AwsIssuers {
    issuers: Vec<AwsIssuer>,
    verdicts: quick_cache::sync::Cache<TokenDigest, Arc<Verdict>>,
    metrics: Arc<Metrics>,
}

impl AwsIssuers {
    /// Builds the aws issuers of `configs` (reading each `sts_ca`); `None` when there are none. Contacts no
    /// network.
    pub fn new(configs: &[IssuerConfig], metrics: Arc<Metrics>) -> Result<Option<AwsIssuers>, AwsBuildError> {
        let mut system_roots = None;
        let mut issuers = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let (IssuerKind::Aws, Some(aws)) = (config.kind, &config.aws) else { continue };
            let roots = system_roots.get_or_insert_with(tls::system_roots).clone();
            let tls = client_config(&format!("issuers[{index}].sts_ca"), roots, aws)?;
            issuers.push(AwsIssuer { config: config.clone(), aws: aws.clone(), sts: StsClient::new(tls) });
        }
        if issuers.is_empty() {
            return Ok(None);
        }
        Ok(Some(AwsIssuers { issuers, verdicts: quick_cache::sync::Cache::new(CACHE_CAPACITY), metrics }))
    }

    /// Names of the aws issuers whose allowlist holds `endpoint`, in config order.
    pub fn issuers_for(&self, endpoint: &StsEndpoint) -> Vec<&str> {
        self.issuers.iter().filter(|i| i.aws.endpoints.contains(endpoint)).map(|i| i.config.name.as_str()).collect()
    }

    /// Verifies an aws token (`k8s-aws-v1.…`): format and time rules, then the cache, then STS.
    pub async fn authenticate(&self, token: &str, digest: &TokenDigest) -> Result<Arc<Identity>, Refusal> {
        // With a single aws issuer every refusal is its own; with several, only once the endpoint picks them.
        let sole = match self.issuers.as_slice() {
            [only] => Some(only.config.name.clone()),
            _ => None,
        };
        let presigned = Presigned::parse(token).map_err(|error| Refusal { issuer: sole.clone(), error })?;
        let hosted: Vec<&AwsIssuer> =
            self.issuers.iter().filter(|i| i.aws.endpoints.contains(&presigned.endpoint)).collect();
        if hosted.is_empty() {
            let detail =
                format!("presigned URL names {}, which is not an allowed STS endpoint", shown(&presigned.endpoint));
            return Err(Refusal { issuer: sole, error: AuthError::invalid(Reason::WrongIssuer, detail) });
        }
        let now = unix_now();
        let mut live = Vec::with_capacity(hosted.len());
        let mut late = None;
        for issuer in hosted {
            match presigned.check_time(now, issuer.config.leeway) {
                Ok(()) => live.push(issuer),
                Err(error) => {
                    late.get_or_insert(Refusal { issuer: Some(issuer.config.name.clone()), error });
                }
            }
        }
        if live.is_empty() {
            return Err(late.unwrap_or_else(|| AuthError::invalid(Reason::Expired, "aws token expired").into()));
        }
        let fingerprint = digest.fingerprint();
        for _ in 0..CACHE_ATTEMPTS {
            match self.verdicts.get_value_or_guard_async(digest).await {
                Ok(verdict) if verdict.until > unix_now() => {
                    self.metrics.token_cache_hits.inc();
                    return verdict.result();
                }
                Ok(stale) => {
                    self.verdicts.remove_if(digest, |v| Arc::ptr_eq(v, &stale));
                }
                Err(placeholder) => {
                    // Concurrent requests with this token wait on the placeholder until the verdict is in.
                    self.metrics.token_cache_misses.inc();
                    let verdict = Arc::new(self.verify(&presigned, &live, &fingerprint).await);
                    let _ = placeholder.insert(verdict.clone());
                    return verdict.result();
                }
            }
        }
        self.metrics.token_cache_misses.inc();
        self.verify(&presigned, &live, &fingerprint).await.result()
    }

    /// Asks STS, audience by audience, until one is accepted, refused everywhere, or STS cannot answer.
    async fn verify(&self, presigned: &Presigned, live: &[&AwsIssuer], fingerprint: &str) -> Verdict {
        let until = live.iter().map(|i| expiry(presigned, i)).fold(0.0, f64::max);
        let mut tried: Vec<&str> = Vec::new();
        let mut refusal = None;
        for issuer in live {
            for audience in &issuer.config.audiences {
                if tried.contains(&audience.as_str()) {
                    continue;
                }
                tried.push(audience);
                match issuer.sts.get_caller_identity(&presigned.uri, audience).await {
                    Ok(caller) => return admit(presigned, live, audience, caller, fingerprint),
                    Err(StsError::Refused { status, code }) => {
                        refusal = Some(code.unwrap_or_else(|| status.to_string()))
                    }
                    Err(StsError::Unavailable(why)) => {
                        tracing::warn!(
                            issuer = %issuer.config.name,
                            endpoint = %presigned.endpoint,
                            token_sha256 = fingerprint,
                            error = %why,
                            "STS could not check an aws token"
                        );
                        let issuer = issuer.config.name.clone();
                        return Verdict {
                            outcome: Outcome::Unavailable { issuer },
                            until: unix_now() + UNAVAILABLE_TTL.as_secs_f64(),
                        };
                    }
                }
            }
        }
        let audiences: Vec<String> = tried.iter().map(|a| format!("\"{a}\"")).collect();
        let detail = format!(
            "STS refused the token for audience {} ({}): it is signed for another audience, altered, or its \
             credentials are not valid",
            audiences.join(", "),
            refusal.unwrap_or_default()
        );
        let issuer = live.first().map(|i| i.config.name.clone()).unwrap_or_default();
        Verdict { outcome: Outcome::Refused { issuer, reason: Reason::StsRefused, detail }, until }
    }
}

/// STS accepted the token for `audience`: canonical principal, account allowlist, identity.
fn admit(
    presigned: &Presigned,
    live: &[&AwsIssuer],
    audience: &str,
    caller: CallerIdentity,
    fingerprint: &str,
) -> Verdict {
    let with_audience: Vec<&AwsIssuer> =
        live.iter().copied().filter(|i| i.config.audiences.iter().any(|a| a == audience)).collect();
    let first = with_audience.first().map(|i| i.config.name.clone()).unwrap_or_default();
    let until = with_audience.iter().map(|i| expiry(presigned, i)).fold(0.0, f64::max);
    let refuse = |issuer: String, reason: Reason, detail: String| Verdict {
        outcome: Outcome::Refused { issuer, reason, detail },
        until,
    };
    let principal = match arn::canonicalize(&caller.arn) {
        Ok(p) => p,
        Err(e) => return refuse(first, Reason::BadClaim, format!("STS names a principal Runway cannot use: {e}")),
    };
    if caller.account != principal.account {
        return refuse(first, Reason::BadClaim, "STS answered an Account that is not its ARN's".into());
    }
    let admitted =
        with_audience.iter().find(|i| i.aws.accounts.as_ref().is_none_or(|a| a.contains(&principal.account)));
    let Some(issuer) = admitted else {
        let detail = format!("AWS account {} is not allowed here", principal.account);
        return refuse(first, Reason::AccountNotAllowed, detail);
    };
    let mut claims = json!({
        "sub": principal.arn,
        "arn": principal.arn,
        "raw_arn": principal.raw_arn,
        "account": principal.account,
        "user_id": caller.user_id,
        "aud": audience,
    });
    if let (Some(session), Some(map)) = (principal.session_name, claims.as_object_mut()) {
        map.insert("session_name".into(), Value::String(session));
    }
    let name = issuer.config.name.clone();
    match Identity::from_claims(&issuer.config, claims, fingerprint) {
        Ok(identity) => Verdict { outcome: Outcome::Verified(Arc::new(identity)), until: expiry(presigned, issuer) },
        Err(AuthError::Invalid { reason, detail }) => refuse(name, reason, detail),
        Err(other) => refuse(name, Reason::BadClaim, other.to_string()),
    }
}

/// When an issuer stops accepting the token: 15 minutes after `X-Amz-Date`, plus its leeway.
fn expiry(presigned: &Presigned, issuer: &AwsIssuer) -> f64 {
    presigned.expires_at() as f64 + issuer.config.leeway.as_secs_f64()
}

/// An endpoint for an error description: at most 100 characters of it.
fn shown(endpoint: &StsEndpoint) -> String {
    endpoint.to_string().chars().take(100).collect()
}

/// System roots plus the issuer's `sts_ca`; no client certificate.
fn client_config(
    key: &str,
    mut roots: rustls::RootCertStore,
    aws: &AwsConfig,
) -> Result<rustls::ClientConfig, AwsBuildError> {
    if let Some(path) = &aws.sts_ca {
        let file_error =
            |message: String| AwsBuildError::StsCa { key: key.to_string(), path: path.display().to_string(), message };
        let certs = tls::load_certs("sts_ca", path).map_err(|e| match e {
            TlsError::File { message, .. } | TlsError::Rejected { message, .. } => file_error(message),
        })?;
        for cert in certs {
            roots.add(cert).map_err(|e| file_error(format!("not a usable CA certificate ({e})")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AwsBuildError::Tls { key: key.to_string(), message: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
