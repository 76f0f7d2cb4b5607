//! Configuration: loading (file + `RUNWAY__…` environment), the typed and validated [`Config`], and the
//! defaults every key falls back to.
//!
//! Loading has two stages: [`raw`] mirrors the file with unknown keys rejected, and [`validate`] turns it
//! into [`Config`], naming the key and the fix for anything wrong. Relative paths are resolved against the
//! directory of the config file, so `runway check -c /etc/runway/runway.toml` works from anywhere.

pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;

pub use validate::{claim_conditions, is_loopback, parse_duration, validate, validate_url_is_fetchable};

/// Default TLS listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default time for a client to send its request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time for a whole request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default keep-alive idle time.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default grace period on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default body cap (100 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 104_857_600;
/// Default number of verified tokens remembered.
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 10_000;
/// `server.max_concurrent_requests`: far above what two cores forward at Kong's usual latency, low enough that
/// a stalled Kong cannot make Runway hold unbounded memory in waiting requests.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4096;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default upstream response timeout.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Default JWKS refresh period.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Default least time between two unknown-kid refetches.
pub const DEFAULT_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Default clock skew.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Lifetime of an aws token, fixed: STS accepts a presigned GetCallerIdentity URL for 15 minutes after its
/// `X-Amz-Date`, whatever its `X-Amz-Expires` says.
pub const AWS_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The global STS host, always accepted by an aws issuer without `sts_endpoint`.
pub const AWS_GLOBAL_STS_HOST: &str = "sts.amazonaws.com";
/// Default `[assertion] issuer`.
pub const DEFAULT_ASSERTION_ISSUER: &str = "runway";
/// Default `[assertion] audience`.
pub const DEFAULT_ASSERTION_AUDIENCE: &str = "kong";
/// Default `[assertion] ttl`.
pub const DEFAULT_ASSERTION_TTL: Duration = Duration::from_secs(60);
/// Longest `[assertion] ttl`: an assertion is for one hop, not a session.
pub const MAX_ASSERTION_TTL: Duration = Duration::from_secs(3600);
/// Default `[assertion] header`.
pub const DEFAULT_ASSERTION_HEADER: &str = "authorization";
/// `[tracing] service_name` when neither the key nor `OTEL_SERVICE_NAME` sets it.
pub const DEFAULT_TRACING_SERVICE_NAME: &str = "runway";
/// OTLP/HTTP base URL when neither `[tracing] otlp_endpoint` nor an `OTEL_EXPORTER_OTLP_*ENDPOINT` variable sets
/// one: OpenTelemetry's own default (a collector beside the process).
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4318";
/// The OTLP/HTTP path for traces, appended to a base URL.
pub const OTLP_TRACES_PATH: &str = "/v1/traces";
/// `[tracing] sample_ratio` when neither the key nor `OTEL_TRACES_SAMPLER(_ARG)` sets it: OpenTelemetry's default
/// sampler (parent-based, always on).
pub const DEFAULT_SAMPLE_RATIO: f64 = 1.0;
/// Default audit claims.
pub const DEFAULT_AUDIT_CLAIMS: &[&str] =
    &["project_path", "job_id", "pipeline_id", "ref", "environment", "user_login", "cid", "scp"];

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("{path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A key holds a value that cannot work.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `routes[2].allow[0].issuer`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// A bad value at `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), message: message.into() }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[upstream]`.
    pub upstream: UpstreamConfig,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[[issuers]]`, in file order.
    pub issuers: Vec<IssuerConfig>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[replay]`: where `one_time` routes record used token ids (memory when the section is absent).
    pub replay: ReplayStoreConfig,
    /// `[assertion]`: the identity assertion minted for Kong, when configured.
    pub assertion: Option<AssertionConfig>,
    /// `[tracing]`: OpenTelemetry traces, when configured (off otherwise).
    pub tracing: Option<TracingConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TLS listener address.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub tls_cert: PathBuf,
    /// PEM private key.
    pub tls_key: PathBuf,
    /// Peers whose `X-Forwarded-*` headers are kept.
    pub trusted_proxies: Vec<IpNet>,
    /// Time allowed for the request head (and the TLS handshake).
    pub header_read_timeout: Duration,
    /// Time allowed for a whole request, up to the response head.
    pub request_timeout: Duration,
    /// Keep-alive idle time.
    pub idle_timeout: Duration,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Largest request body; `None` = unlimited.
    pub max_body_bytes: Option<u64>,
    /// Verified tokens remembered; 0 = no cache.
    pub token_cache_size: usize,
    /// Requests in flight at once (all connections); above it, 503 + `Retry-After`.
    pub max_concurrent_requests: usize,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Plain-HTTP admin listener.
    pub listen: SocketAddr,
    /// Bearer token for `/reload` and `/revocations`; `None` = those answer loopback peers only.
    pub token_file: Option<PathBuf>,
}

/// `[upstream]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL of Kong.
    pub url: http::Uri,
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// CA bundle for Kong's certificate; `None` = system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mTLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// TLS server name.
    pub server_name: String,
    /// Forward the client's Host header.
    pub preserve_host: bool,
    /// The HTTP version spoken to Kong.
    pub protocol: UpstreamProtocol,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Time to Kong's response head.
    pub timeout: Duration,
}

/// `[audit]`.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `None` = stdout.
    pub path: Option<PathBuf>,
    /// Claims copied into each event.
    pub claims: Vec<String>,
}

/// The `iss` of GitHub Actions OIDC tokens on github.com: the default `issuer` of `kind = "github"` (GitHub
/// Enterprise Server issues `https://HOSTNAME/_services/token` instead, so it stays overridable).
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Which preset an issuer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerKind {
    /// GitLab CI `id_tokens`.
    Gitlab,
    /// GitHub Actions OIDC tokens (`permissions: id-token: write`).
    Github,
    /// Okta access tokens.
    Okta,
    /// Any OIDC issuer.
    Oidc,
    /// Presigned STS GetCallerIdentity tokens (`aws eks get-token`), checked by calling STS.
    Aws,
}

impl IssuerKind {
    /// The name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Gitlab => "gitlab",
            IssuerKind::Github => "github",
            IssuerKind::Okta => "okta",
            IssuerKind::Oidc => "oidc",
            IssuerKind::Aws => "aws",
        }
    }

    /// The kind named in config (`kind = "..."`), if there is one by that name.
    pub fn parse(name: &str) -> Option<IssuerKind> {
        [IssuerKind::Gitlab, IssuerKind::Github, IssuerKind::Okta, IssuerKind::Oidc, IssuerKind::Aws]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// Algorithms accepted when `algorithms` is left out (none for aws: STS checks its SigV4 tokens).
    pub fn default_algorithms(self) -> &'static [Algorithm] {
        match self {
            IssuerKind::Gitlab | IssuerKind::Github | IssuerKind::Okta => &[Algorithm::RS256],
            IssuerKind::Oidc => &[Algorithm::RS256, Algorithm::ES256],
            IssuerKind::Aws => &[],
        }
    }

    /// `max_token_lifetime` when it is left out: GitLab's tokens live as long as the job's timeout (the
    /// usual 1h plus headroom), GitHub's, Okta's and most IdPs' at most an hour; aws is fixed by STS.
    pub fn default_max_token_lifetime(self) -> Duration {
        const HOUR: Duration = Duration::from_secs(3600);
        match self {
            IssuerKind::Gitlab => Duration::from_secs(2 * 3600),
            IssuerKind::Github | IssuerKind::Okta | IssuerKind::Oidc => HOUR,
            IssuerKind::Aws => AWS_TOKEN_LIFETIME,
        }
    }

    /// `issuer` when it is left out: only GitHub Actions has one well-known issuer.
    pub fn default_issuer(self) -> Option<&'static str> {
        match self {
            IssuerKind::Github => Some(GITHUB_ACTIONS_ISSUER),
            IssuerKind::Gitlab | IssuerKind::Okta | IssuerKind::Oidc | IssuerKind::Aws => None,
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery,
    /// A fixed JWKS URL.
    Uri(String),
    /// A static JWKS file.
    File(PathBuf),
    /// Kind aws: no keys; STS checks each token.
    Sts,
}

/// One validated `[[issuers]]` entry.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Name used by routes, headers, logs and metrics.
    pub name: String,
    /// Preset.
    pub kind: IssuerKind,
    /// Exact `iss` (empty for kind aws, whose tokens have none).
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Key source.
    pub keys: KeySource,
    /// Allowed algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Largest `exp - iat`.
    pub max_token_lifetime: Duration,
    /// Clock skew.
    pub leeway: Duration,
    /// Background refresh period.
    pub refresh_interval: Duration,
    /// Least time between unknown-kid refetches.
    pub kid_refetch_interval: Duration,
    /// Extra identity headers: header → claim.
    pub headers: Vec<(HeaderName, ClaimKey)>,
    /// Kind aws: the STS settings; `None` for the JWT kinds.
    pub aws: Option<AwsConfig>,
}

/// The STS settings of a `kind = "aws"` issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// The only places a token's presigned URL may point to (https, this host, this port): the global and
    /// regional STS hosts, or exactly `sts_endpoint`.
    pub endpoints: Vec<StsEndpoint>,
    /// Extra CA bundle for the STS, added to the system roots.
    pub sts_ca: Option<PathBuf>,
    /// Accounts whose principals are accepted; `None` = any.
    pub accounts: Option<Vec<String>>,
}

/// One STS endpoint an aws token may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsEndpoint {
    /// Lower-case host name, or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (443 unless `sts_endpoint` names another).
    pub port: u16,
}

impl std::fmt::Display for StsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bracketed;
        let host = if self.host.contains(':') {
            bracketed = format!("[{}]", self.host);
            bracketed.as_str()
        } else {
            self.host.as_str()
        };
        match self.port {
            443 => write!(f, "https://{host}"),
            port => write!(f, "https://{host}:{port}"),
        }
    }
}

/// A claim reference: a top-level name, or a JSON Pointer when it starts with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimKey {
    /// A top-level claim.
    Name(String),
    /// An RFC 6901 pointer into nested claims.
    Pointer(String),
}

impl ClaimKey {
    /// Reads the claim from a token's claims.
    pub fn lookup<'a>(&self, claims: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        match self {
            ClaimKey::Name(name) => claims.get(name),
            ClaimKey::Pointer(pointer) => claims.pointer(pointer),
        }
    }

    /// As written in the config.
    pub fn as_str(&self) -> &str {
        match self {
            ClaimKey::Name(s) | ClaimKey::Pointer(s) => s,
        }
    }
}

/// The HTTP version spoken to Kong (`upstream.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// ALPN decides, h2 preferred.
    #[default]
    Auto,
    /// HTTP/1.1 only, over a pool of keep-alive connections.
    Http1,
    /// h2 only: an upstream that cannot speak it gets a 502.
    Http2,
}

/// Enforce or only report a route's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// Deny what the policy denies.
    Enforce,
    /// Decide and audit, forward anyway.
    Report,
}

/// One validated `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Route name.
    pub name: String,
    /// Exact lower-case host, no port.
    pub host: Option<String>,
    /// Path prefix without a trailing slash (`/` stays `/`).
    pub path_prefix: String,
    /// Allowed methods; `None` = any.
    pub methods: Option<Vec<Method>>,
    /// No token needed.
    pub anonymous: bool,
    /// Enforce or report.
    pub mode: RouteMode,
    /// Each token's `jti` passes once (replay protection).
    pub one_time: bool,
    /// Allow rules, OR-ed.
    pub allow: Vec<RuleConfig>,
}

/// `[replay]`: the store behind `one_time` routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStoreConfig {
    /// In-process, bounded: right for one replica.
    Memory,
    /// A Redis shared by every replica.
    Redis {
        /// Where the Redis is and how to reach it: the URL with the `[replay]` keys that go with it (the field
        /// keeps the name it had when the URL was all there was; it compares equal to a `String` holding only
        /// that URL).
        url: RedisConfig,
    },
}

impl ReplayStoreConfig {
    /// The Redis settings, with `store = "redis"`.
    pub fn redis(&self) -> Option<&RedisConfig> {
        match self {
            ReplayStoreConfig::Memory => None,
            ReplayStoreConfig::Redis { url } => Some(url),
        }
    }
}

/// `[replay]` with `store = "redis"`: how to reach the Redis (contract sections 10 and 13). Only paths: the files
/// are read when a client is made ([`crate::replay::redis::client`]), at start, at each reload that builds a new
/// store, and at each reconnection, so `runway lint` opens none of them and a rotated password is picked up.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis_url`, as written: `redis://` or `rediss://` (TLS) `[user[:password]@]host[:port][/db]`, or
    /// `unix://`. May hold a password, so it is never logged ([`std::fmt::Debug`] hides the password).
    pub url: String,
    /// `redis_ca`: PEM bundle of the CAs that may sign the server's certificate, trusted instead of the system
    /// roots; `rediss://` only. `None` = the system roots.
    pub ca: Option<PathBuf>,
    /// `redis_password_file`: file holding the password (surrounding whitespace ignored), for the URL's user or
    /// the `default` user; never together with a password in the URL.
    pub password_file: Option<PathBuf>,
}

impl RedisConfig {
    /// Whether the URL asks for TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.url.get(..9).is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
    }

    /// The URL with its password, if any, replaced by `***` (`user:***@`, or `pass=***` in a `unix://` query):
    /// for logs and `Debug`.
    pub fn redacted_url(&self) -> String {
        let (head, query) = match self.url.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (self.url.as_str(), None),
        };
        let mut out = match head.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_at(rest.find(['/', '#']).unwrap_or(rest.len()));
                let user_host =
                    authority.rsplit_once('@').and_then(|(info, host)| Some((info.split_once(':')?.0, host)));
                match user_host {
                    Some((user, host)) => format!("{scheme}://{user}:***@{host}{path}"),
                    None => head.to_string(),
                }
            }
            None => head.to_string(),
        };
        if let Some(query) = query {
            let pairs: Vec<&str> =
                query.split('&').map(|pair| if pair.starts_with("pass=") { "pass=***" } else { pair }).collect();
            out = format!("{out}?{}", pairs.join("&"));
        }
        out
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("ca", &self.ca)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// Just a URL, no CA, no password file.
impl From<&str> for RedisConfig {
    fn from(url: &str) -> RedisConfig {
        RedisConfig { url: url.to_string(), ca: None, password_file: None }
    }
}

/// Equal to a URL when it is that URL with no CA and no password file.
impl PartialEq<String> for RedisConfig {
    fn eq(&self, url: &String) -> bool {
        self.url == *url && self.ca.is_none() && self.password_file.is_none()
    }
}

/// `[assertion]`: a short-lived ES256 JWT minted for Kong's `jwt` plugin on every allowed request.
#[derive(Debug, Clone)]
pub struct AssertionConfig {
    /// PEM file: the EC P-256 signing key (PKCS#8 or SEC1) first; further keys are published only.
    pub key: PathBuf,
    /// `iss` (Kong: the credential's `key`).
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// Lifetime of each assertion.
    pub ttl: Duration,
    /// Request header that carries it, as `Bearer <jwt>`.
    pub header: HeaderName,
}

/// `[tracing]`: OpenTelemetry traces exported over OTLP/HTTP protobuf (contract section 12). Each value is the
/// key's, else the standard `OTEL_*` variable's, else the default (see `validate`).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans are POSTed: `{otlp_endpoint}/v1/traces`, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given.
    pub traces_url: http::Uri,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces sampled (0 to 1); a trusted caller's sampled flag decides for its own traces.
    pub sample_ratio: f64,
    /// Accept a client's `traceparent`/`tracestate` from any peer, not only from `server.trusted_proxies`.
    pub trust_client_context: bool,
    /// Extra headers sent with every export.
    pub headers: ExportHeaders,
}

impl TracingConfig {
    /// Whether `other` exports to the same place in the same way (a reload can then keep the exporter and its
    /// queue; `trust_client_context` is read per connection and needs no new exporter).
    pub fn same_export(&self, other: &TracingConfig) -> bool {
        self.traces_url == other.traces_url
            && self.service_name == other.service_name
            && self.sample_ratio == other.sample_ratio
            && self.headers == other.headers
    }
}

/// `[tracing.headers]`: often a collector's API key, so `Debug` names the headers and never shows a value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExportHeaders(pub Vec<(HeaderName, http::HeaderValue)>);

impl std::fmt::Debug for ExportHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

/// One allow rule.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// Issuer name.
    pub issuer: String,
    /// Conditions, AND-ed: claim → patterns (any may match).
    pub claims: Vec<(ClaimKey, Vec<String>)>,
}

/// Loads and validates a config file, with `RUNWAY__SECTION__KEY` environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let raw = load_raw(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    validate(raw, path, &base)
}

fn load_raw(path: &Path) -> Result<raw::RawConfig, ConfigError> {
    let load_err = |message: String| ConfigError::Load { path: path.to_path_buf(), message };
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => config::FileFormat::Toml,
        Some("yaml" | "yml") => config::FileFormat::Yaml,
        _ => {
            return Err(load_err("unknown format: the file name must end in .toml, .yaml or .yml".into()));
        }
    };
    if !path.is_file() {
        return Err(load_err("no such file".into()));
    }
    let built = config::Config::builder()
        .add_source(config::File::from(path).format(format).required(true))
        .add_source(config::Environment::with_prefix("RUNWAY").prefix_separator("__").separator("__").try_parsing(true))
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    serde_path_to_error::deserialize(built).map_err(|e| {
        let key = e.path().to_string();
        let error = e.into_inner();
        if let Some(field) = missing_field(&error) {
            let full = if key == "." { field.to_string() } else { format!("{key}.{field}") };
            return ConfigError::invalid(full, "required key is missing");
        }
        let message = plain_message(error);
        if key == "." { load_err(message) } else { ConfigError::invalid(key, message) }
    })
}

/// The name of a missing required field (the config crate reports it with a mangled path).
fn missing_field(error: &config::ConfigError) -> Option<&str> {
    match error {
        config::ConfigError::At { error, .. } => missing_field(error),
        config::ConfigError::NotFound(path) => path.rsplit(['.', ']']).next(),
        _ => None,
    }
}

/// The config crate's error without its own key and origin decorations (the key is named by the caller,
/// from serde's path, which keeps the dots).
fn plain_message(error: config::ConfigError) -> String {
    match error {
        config::ConfigError::At { error, .. } => plain_message(*error),
        config::ConfigError::Type { unexpected, expected, .. } => {
            format!("invalid type: {unexpected}, expected {expected}")
        }
        config::ConfigError::NotFound(_) => "missing required key".to_string(),
        other => other.to_string(),
    }
}
