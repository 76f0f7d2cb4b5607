//! The configuration exactly as written: serde structs that mirror the file, with unknown keys rejected.
//!
//! Nothing here is interpreted yet (durations are strings, paths are unchecked); `validate` turns this into
//! the typed [`crate::config::Config`] and names the key at fault when something is wrong.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`: the TLS listener.
    pub server: RawServer,
    /// `[admin]`: the plain-HTTP admin listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[upstream]`: Kong.
    pub upstream: RawUpstream,
    /// `[audit]`: the audit trail.
    #[serde(default)]
    pub audit: RawAudit,
    /// `[[issuers]]`: who may sign tokens.
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    /// `[[routes]]`: what each path requires.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// `[replay]`: store for `one_time` routes.
    pub replay: Option<RawReplay>,
    /// `[assertion]`: identity assertion minted for Kong.
    pub assertion: Option<RawAssertion>,
    /// `[tracing]`: OpenTelemetry traces (off when absent).
    pub tracing: Option<RawTracing>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Socket address of the TLS listener.
    pub listen: Option<String>,
    /// PEM certificate chain.
    pub tls_cert: String,
    /// PEM private key.
    pub tls_key: String,
    /// CIDRs whose forwarding headers are kept.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Time allowed for a client to send its request head.
    pub header_read_timeout: Option<String>,
    /// Time allowed for a whole request, upstream included.
    pub request_timeout: Option<String>,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Option<String>,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Option<String>,
    /// Connections accepted at once.
    pub max_connections: Option<u64>,
    /// Largest request body forwarded; 0 = unlimited.
    pub max_body_bytes: Option<u64>,
    /// Verified tokens remembered; 0 disables the cache.
    pub token_cache_size: Option<u64>,
    /// Requests in flight at once; above it requests are shed with 503.
    pub max_concurrent_requests: Option<u64>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Socket address of the admin listener.
    pub listen: Option<String>,
    /// File holding the bearer token for the state-changing admin endpoints.
    pub token_file: Option<String>,
}

/// `[upstream]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URL of Kong (https).
    pub url: String,
    /// CA bundle that verifies Kong's certificate.
    pub ca: Option<String>,
    /// Client certificate presented to Kong.
    pub client_cert: Option<String>,
    /// Key of the client certificate.
    pub client_key: Option<String>,
    /// TLS server name expected from Kong; default: host of `url`.
    pub server_name: Option<String>,
    /// Forward the client's Host header.
    pub preserve_host: Option<bool>,
    /// `auto`, `http1` or `http2`.
    pub protocol: Option<String>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Option<String>,
    /// Time to Kong's response head.
    pub timeout: Option<String>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// "-" for stdout, else a file.
    pub path: Option<String>,
    /// Claims copied into each event.
    pub claims: Option<Vec<String>>,
}

/// One `[[issuers]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// Name used by routes, headers, logs and metrics.
    pub name: String,
    /// gitlab | github | okta | oidc | aws.
    pub kind: String,
    /// Exact `iss` value (JWT kinds).
    pub issuer: Option<String>,
    /// Accepted audiences.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// JWKS location instead of discovery.
    pub jwks_uri: Option<String>,
    /// Static JWKS file.
    pub jwks_file: Option<String>,
    /// Allowed JWS algorithms.
    pub algorithms: Option<Vec<String>>,
    /// Largest accepted `exp - iat`.
    pub max_token_lifetime: Option<String>,
    /// Clock skew allowed.
    pub leeway: Option<String>,
    /// Background JWKS refresh period.
    pub refresh_interval: Option<String>,
    /// Least time between two refetches caused by unknown key ids.
    pub kid_refetch_interval: Option<String>,
    /// Extra identity headers: header name = claim name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// aws: accepted STS regions.
    pub regions: Option<Vec<String>>,
    /// aws: fixed STS endpoint.
    pub sts_endpoint: Option<String>,
    /// aws: extra CA bundle for the STS.
    pub sts_ca: Option<String>,
    /// aws: account allowlist.
    pub accounts: Option<Vec<String>>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Route name (headers, audit, metrics).
    pub name: String,
    /// Exact host, without port.
    pub host: Option<String>,
    /// Segment-aware path prefix.
    pub path_prefix: String,
    /// Allowed methods; default any.
    pub methods: Option<Vec<String>>,
    /// No token needed.
    #[serde(default)]
    pub anonymous: bool,
    /// "enforce" (default) or "report".
    pub mode: Option<String>,
    /// Each jti passes once.
    #[serde(default)]
    pub one_time: bool,
    /// Allow rules, OR-ed.
    #[serde(default)]
    pub allow: Vec<RawRule>,
}

/// One `[[routes.allow]]` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Issuer name the token must come from.
    pub issuer: String,
    /// Claim conditions, AND-ed.
    #[serde(default)]
    pub claims: BTreeMap<String, RawPatterns>,
}

/// A claim condition's value: one pattern or a list of them.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum RawPatterns {
    /// One pattern.
    One(String),
    /// Any of these.
    Many(Vec<String>),
}

const PATTERN_HINT: &str =
    "a string or a list of strings; booleans and numbers are compared by their text, so quote them (\"true\", \"42\")";

impl<'de> Deserialize<'de> for RawPatterns {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Patterns;
        impl<'de> serde::de::Visitor<'de> for Patterns {
            type Value = RawPatterns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(PATTERN_HINT)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPatterns, E> {
                Ok(RawPatterns::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawPatterns, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<PatternItem>()? {
                    items.push(item.0);
                }
                Ok(RawPatterns::Many(items))
            }
        }
        deserializer.deserialize_any(Patterns)
    }
}

/// One list element: strings only, with the same hint for anything else.
struct PatternItem(String);

impl<'de> Deserialize<'de> for PatternItem {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Item;
        impl serde::de::Visitor<'_> for Item {
            type Value = PatternItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(PATTERN_HINT)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PatternItem, E> {
                Ok(PatternItem(v.to_string()))
            }
        }
        deserializer.deserialize_any(Item)
    }
}

/// `[replay]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplay {
    /// "memory" or "redis".
    pub store: Option<String>,
    /// Redis URL: `redis://`, `rediss://` (TLS) or `unix://`.
    pub redis_url: Option<String>,
    /// PEM CA bundle for a `rediss://` server's certificate (instead of the system roots).
    pub redis_ca: Option<String>,
    /// File holding the Redis password (instead of one in the URL).
    pub redis_password_file: Option<String>,
}

/// `[assertion]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    /// EC P-256 private key file.
    pub key: String,
    /// `iss` of the assertion.
    pub issuer: Option<String>,
    /// `aud` of the assertion.
    pub audience: Option<String>,
    /// Lifetime of the assertion.
    pub ttl: Option<String>,
    /// Header carrying it.
    pub header: Option<String>,
}

/// `[tracing]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// Base URL of the OTLP/HTTP receiver; spans go to `{otlp_endpoint}/v1/traces`.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: Option<String>,
    /// Share of new traces sampled, 0 to 1 (parent-based).
    pub sample_ratio: Option<f64>,
    /// Accept a client's `traceparent` from any peer, not only `server.trusted_proxies`.
    pub trust_client_context: Option<bool>,
    /// Extra headers sent with every export (e.g. a collector's API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}
