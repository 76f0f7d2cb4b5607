//! Raw → typed: every check that a value can work, with errors that name the key and the fix.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;

use super::raw::{RawAssertion, RawConfig, RawIssuer, RawPatterns, RawReplay, RawRoute, RawUpstream};
use super::*;

mod aws;
pub mod traces;

/// Validates a raw config read from `source`; relative paths are resolved against `base`.
pub fn validate(raw: RawConfig, source: &Path, base: &Path) -> Result<Config, ConfigError> {
    let s = raw.server;
    let server = ServerConfig {
        listen: socket_addr("server.listen", s.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?,
        tls_cert: file_path("server.tls_cert", &s.tls_cert, base)?,
        tls_key: file_path("server.tls_key", &s.tls_key, base)?,
        trusted_proxies: s
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, c)| cidr(&format!("server.trusted_proxies[{i}]"), c))
            .collect::<Result<_, _>>()?,
        header_read_timeout: duration(
            "server.header_read_timeout",
            &s.header_read_timeout,
            DEFAULT_HEADER_READ_TIMEOUT,
        )?,
        request_timeout: duration("server.request_timeout", &s.request_timeout, DEFAULT_REQUEST_TIMEOUT)?,
        idle_timeout: duration("server.idle_timeout", &s.idle_timeout, DEFAULT_IDLE_TIMEOUT)?,
        shutdown_grace: duration("server.shutdown_grace", &s.shutdown_grace, DEFAULT_SHUTDOWN_GRACE)?,
        max_connections: match s.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(0) => {
                return Err(ConfigError::invalid("server.max_connections", "must be at least 1"));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        },
        max_concurrent_requests: match s.max_concurrent_requests {
            None => DEFAULT_MAX_CONCURRENT_REQUESTS,
            Some(0) => {
                return Err(ConfigError::invalid("server.max_concurrent_requests", "must be at least 1"));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        },
        token_cache_size: s
            .token_cache_size
            .map_or(DEFAULT_TOKEN_CACHE_SIZE, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        max_body_bytes: match s.max_body_bytes {
            None => Some(DEFAULT_MAX_BODY_BYTES),
            Some(0) => None,
            Some(n) => Some(n),
        },
    };
    let admin = AdminConfig {
        listen: socket_addr("admin.listen", raw.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN))?,
        token_file: raw.admin.token_file.as_deref().map(|f| file_path("admin.token_file", f, base)).transpose()?,
    };
    let upstream = upstream(raw.upstream, base)?;
    let audit = AuditConfig {
        path: match raw.audit.path.as_deref() {
            None | Some("-") => None,
            Some("") => {
                return Err(ConfigError::invalid("audit.path", "must be \"-\" (stdout) or a file path"));
            }
            Some(p) => Some(resolve(p, base)),
        },
        claims: raw.audit.claims.unwrap_or_else(|| DEFAULT_AUDIT_CLAIMS.iter().map(|c| c.to_string()).collect()),
    };
    let replay = replay(raw.replay, base)?;
    let assertion = raw.assertion.map(|a| assertion(a, base)).transpose()?;
    let tracing = raw.tracing.map(|t| traces::tracing(t, &|name| std::env::var(name).ok())).transpose()?;

    let mut issuers = Vec::with_capacity(raw.issuers.len());
    let mut names = HashSet::new();
    for (i, r) in raw.issuers.into_iter().enumerate() {
        let key = format!("issuers[{i}]");
        if !names.insert(r.name.clone()) {
            return Err(ConfigError::invalid(format!("{key}.name"), format!("duplicate issuer name \"{}\"", r.name)));
        }
        issuers.push(issuer(&key, r, base)?);
    }
    let known: Vec<&str> = issuers.iter().map(|i| i.name.as_str()).collect();
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut route_names = HashSet::new();
    let mut route_keys = HashSet::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        if !route_names.insert(r.name.clone()) {
            return Err(ConfigError::invalid(format!("{key}.name"), format!("duplicate route name \"{}\"", r.name)));
        }
        let route = route(&key, r, &known)?;
        if route.host.is_some() && !upstream.preserve_host {
            return Err(ConfigError::invalid(
                format!("{key}.host"),
                "routes may not set a host when upstream.preserve_host = false (Kong never sees the client's \
                 Host, so routing and forwarding would use different hosts)",
            ));
        }
        if !route_keys.insert((route.host.clone(), route.path_prefix.clone())) {
            return Err(ConfigError::invalid(
                format!("{key}.path_prefix"),
                "another route has the same host and path_prefix: the match would be ambiguous",
            ));
        }
        routes.push(route);
    }
    Ok(Config {
        source: source.to_path_buf(),
        server,
        admin,
        upstream,
        audit,
        issuers,
        routes,
        replay,
        assertion,
        tracing,
    })
}

fn upstream(u: RawUpstream, base: &Path) -> Result<UpstreamConfig, ConfigError> {
    let url: http::Uri = u.url.parse().map_err(|e| ConfigError::invalid("upstream.url", format!("not a URL ({e})")))?;
    if url.scheme_str() != Some("https") {
        return Err(ConfigError::invalid("upstream.url", "must be https:// (Runway talks to Kong over mTLS only)"));
    }
    let host = url
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ConfigError::invalid("upstream.url", "has no host"))?;
    if url.path() != "/" && !url.path().is_empty() || url.query().is_some() {
        return Err(ConfigError::invalid("upstream.url", "must be scheme://host[:port] with no path or query"));
    }
    let client_identity = match (u.client_cert, u.client_key) {
        (Some(c), Some(k)) => {
            Some((file_path("upstream.client_cert", &c, base)?, file_path("upstream.client_key", &k, base)?))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::invalid("upstream.client_key", "missing: client_cert needs its key"));
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid("upstream.client_cert", "missing: client_key needs its certificate"));
        }
    };
    let server_name = u.server_name.unwrap_or_else(|| host.clone());
    if rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err() {
        return Err(ConfigError::invalid(
            "upstream.server_name",
            format!("\"{server_name}\" is not a DNS name or IP address"),
        ));
    }
    Ok(UpstreamConfig {
        port: url.port_u16().unwrap_or(443),
        host,
        url,
        ca: u.ca.map(|p| file_path("upstream.ca", &p, base)).transpose()?,
        client_identity,
        server_name,
        preserve_host: u.preserve_host.unwrap_or(true),
        protocol: match u.protocol.as_deref() {
            None | Some("auto") => UpstreamProtocol::Auto,
            Some("http1") => UpstreamProtocol::Http1,
            Some("http2") => UpstreamProtocol::Http2,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "upstream.protocol",
                    format!("unknown protocol \"{other}\" (expected auto, http1 or http2)"),
                ));
            }
        },
        connect_timeout: duration("upstream.connect_timeout", &u.connect_timeout, DEFAULT_CONNECT_TIMEOUT)?,
        timeout: duration("upstream.timeout", &u.timeout, DEFAULT_UPSTREAM_TIMEOUT)?,
    })
}

fn issuer_kind(key: &str, kind: &str) -> Result<IssuerKind, ConfigError> {
    IssuerKind::parse(kind).ok_or_else(|| {
        ConfigError::invalid(
            format!("{key}.kind"),
            format!("unknown kind \"{kind}\" (expected gitlab, github, okta, oidc or aws)"),
        )
    })
}

fn issuer(key: &str, r: RawIssuer, base: &Path) -> Result<IssuerConfig, ConfigError> {
    let kind = issuer_kind(key, &r.kind)?;
    if r.name.is_empty() || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ConfigError::invalid(format!("{key}.name"), "use letters, digits, '-' and '_' only"));
    }
    if kind == IssuerKind::Aws {
        return aws::issuer(key, r, base);
    }
    for field in ["regions", "sts_endpoint", "sts_ca", "accounts"] {
        let set = match field {
            "regions" => r.regions.is_some(),
            "sts_endpoint" => r.sts_endpoint.is_some(),
            "sts_ca" => r.sts_ca.is_some(),
            _ => r.accounts.is_some(),
        };
        if set {
            return Err(ConfigError::invalid(format!("{key}.{field}"), "only valid for kind = \"aws\""));
        }
    }
    let issuer = r
        .issuer
        .filter(|s| !s.is_empty())
        .or_else(|| kind.default_issuer().map(str::to_string))
        .ok_or_else(|| ConfigError::invalid(format!("{key}.issuer"), "required: the exact iss of the tokens"))?;
    if r.audiences.is_empty() || r.audiences.iter().any(String::is_empty) {
        return Err(ConfigError::invalid(
            format!("{key}.audiences"),
            "required: at least one non-empty audience the tokens must be issued for",
        ));
    }
    let keys = match (r.jwks_uri, r.jwks_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(format!("{key}.jwks_file"), "set jwks_uri or jwks_file, not both"));
        }
        (Some(uri), None) => {
            fetchable_url(&format!("{key}.jwks_uri"), &uri)?;
            KeySource::Uri(uri)
        }
        (None, Some(file)) => KeySource::File(file_path(&format!("{key}.jwks_file"), &file, base)?),
        (None, None) => {
            fetchable_url(&format!("{key}.issuer"), &issuer)?;
            KeySource::Discovery
        }
    };
    let algorithms = match r.algorithms {
        None => kind.default_algorithms().to_vec(),
        Some(list) if list.is_empty() => {
            return Err(ConfigError::invalid(format!("{key}.algorithms"), "must list at least one algorithm"));
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(j, a)| algorithm(&format!("{key}.algorithms[{j}]"), a))
            .collect::<Result<_, _>>()?,
    };
    let refresh_interval = duration(&format!("{key}.refresh_interval"), &r.refresh_interval, DEFAULT_REFRESH_INTERVAL)?;
    if refresh_interval < Duration::from_secs(1) {
        return Err(ConfigError::invalid(format!("{key}.refresh_interval"), "must be at least 1s"));
    }
    let headers = issuer_headers(key, r.headers)?;
    Ok(IssuerConfig {
        name: r.name,
        kind,
        issuer,
        audiences: r.audiences,
        keys,
        algorithms,
        max_token_lifetime: duration(
            &format!("{key}.max_token_lifetime"),
            &r.max_token_lifetime,
            kind.default_max_token_lifetime(),
        )?,
        leeway: duration_or_zero(&format!("{key}.leeway"), &r.leeway, DEFAULT_LEEWAY)?,
        refresh_interval,
        kid_refetch_interval: duration(
            &format!("{key}.kid_refetch_interval"),
            &r.kid_refetch_interval,
            DEFAULT_KID_REFETCH_INTERVAL,
        )?,
        headers,
        aws: None,
    })
}

/// `[issuers.headers]`: header name = claim name or JSON Pointer.
fn issuer_headers(
    key: &str,
    raw: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, ClaimKey)>, ConfigError> {
    raw.into_iter()
        .map(|(h, claim)| {
            let name = HeaderName::from_str(&h)
                .map_err(|_| ConfigError::invalid(format!("{key}.headers.\"{h}\""), "not a valid HTTP header name"))?;
            Ok((name, claim_key(&format!("{key}.headers.\"{h}\""), &claim)?))
        })
        .collect()
}

fn algorithm(key: &str, name: &str) -> Result<Algorithm, ConfigError> {
    if name.eq_ignore_ascii_case("none") {
        return Err(ConfigError::invalid(key, "\"none\" is never allowed: unsigned tokens prove nothing"));
    }
    let alg = Algorithm::from_str(name).map_err(|_| {
        ConfigError::invalid(
            key,
            format!("unknown algorithm \"{name}\" (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"),
        )
    })?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{name} is an HMAC algorithm: it needs a shared secret, and issuers publish public keys (algorithm confusion)"
            ),
        ));
    }
    Ok(alg)
}

fn fetchable_url(key: &str, url: &str) -> Result<(), ConfigError> {
    validate_url_is_fetchable(url).map_err(|message| ConfigError::invalid(key, message))
}

/// A discovery or JWKS URL must be https, or plain http on a loopback host.
pub fn validate_url_is_fetchable(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("\"{url}\" is not a URL ({e})"))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(format!("\"{url}\" must be https:// (plain http is allowed only on a loopback host)")),
        _ => Err(format!("\"{url}\" must be an absolute https:// URL")),
    }
}

/// Whether a URL host names this machine.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn route(key: &str, r: RawRoute, known: &[&str]) -> Result<RouteConfig, ConfigError> {
    if r.name.is_empty() || r.name.chars().any(|c| c.is_control() || c == '"') {
        return Err(ConfigError::invalid(
            format!("{key}.name"),
            "must be non-empty, without quotes or control characters",
        ));
    }
    if !r.path_prefix.starts_with('/') {
        return Err(ConfigError::invalid(format!("{key}.path_prefix"), "must start with '/'"));
    }
    // normalize_path: what requests are held to, so no route is one that no request can reach.
    if r.path_prefix.split('/').any(|seg| seg == "." || seg == "..")
        || r.path_prefix.contains('%')
        || r.path_prefix.contains("//")
        || crate::routing::normalize_path(&r.path_prefix).is_err()
    {
        return Err(ConfigError::invalid(
            format!("{key}.path_prefix"),
            "must be a plain path: no '.' or '..' segments, no '//', '\\', ';', control characters, percent-encoding, \
             segments ending in '.' or ' ', or Unicode look-alikes of '.', '/', '\\', ';' or '%'",
        ));
    }
    let path_prefix = match r.path_prefix.trim_end_matches('/') {
        "" => "/".to_string(),
        p => p.to_string(),
    };
    let host = match r.host {
        None => None,
        Some(h) if matches!(h.as_str(), "" | ".") || h.contains(':') || h.contains('/') => {
            return Err(ConfigError::invalid(format!("{key}.host"), "must be a host name without port or path"));
        }
        // Requests are routed by their host without its trailing dot (routing::strip_port): so is the route.
        Some(h) => Some(h.strip_suffix('.').unwrap_or(&h).to_ascii_lowercase()),
    };
    let methods = match r.methods {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ConfigError::invalid(
                format!("{key}.methods"),
                "must list at least one method (or be left out for any)",
            ));
        }
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(j, m)| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                        ConfigError::invalid(format!("{key}.methods[{j}]"), format!("\"{m}\" is not an HTTP method"))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let mode = match r.mode.as_deref() {
        None | Some("enforce") => RouteMode::Enforce,
        Some("report") => RouteMode::Report,
        Some(other) => {
            return Err(ConfigError::invalid(
                format!("{key}.mode"),
                format!("unknown mode \"{other}\" (expected enforce or report)"),
            ));
        }
    };
    if r.one_time && r.anonymous {
        return Err(ConfigError::invalid(
            format!("{key}.one_time"),
            "an anonymous route has no token, so no jti to use up: remove one_time or anonymous",
        ));
    }
    if r.anonymous && !r.allow.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.anonymous"),
            "an anonymous route takes no allow rules: remove anonymous or the rules",
        ));
    }
    let mut allow = Vec::with_capacity(r.allow.len());
    for (j, rule) in r.allow.into_iter().enumerate() {
        let rkey = format!("{key}.allow[{j}]");
        if !known.contains(&rule.issuer.as_str()) {
            return Err(ConfigError::invalid(
                format!("{rkey}.issuer"),
                format!(
                    "no issuer named \"{}\" (known: {})",
                    rule.issuer,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            ));
        }
        let claims = claim_conditions(&format!("{rkey}.claims"), rule.claims)?;
        allow.push(RuleConfig { issuer: rule.issuer, claims });
    }
    Ok(RouteConfig {
        name: r.name,
        host,
        path_prefix,
        methods,
        anonymous: r.anonymous,
        mode,
        one_time: r.one_time,
        allow,
    })
}

/// Claim conditions as written (`claims = { name = "pattern" or [...] }`), checked: a claim name or JSON
/// Pointer, at least one pattern each. `key` names the table in errors (`routes[0].allow[1].claims`).
pub fn claim_conditions(
    key: &str,
    claims: std::collections::BTreeMap<String, RawPatterns>,
) -> Result<Vec<(ClaimKey, Vec<String>)>, ConfigError> {
    claims
        .into_iter()
        .map(|(claim, patterns)| {
            let ckey = format!("{key}.\"{claim}\"");
            let patterns = match patterns {
                RawPatterns::One(p) => vec![p],
                RawPatterns::Many(list) if list.is_empty() => {
                    return Err(ConfigError::invalid(ckey, "an empty list matches nothing: give at least one value"));
                }
                RawPatterns::Many(list) => list,
            };
            Ok((claim_key(&ckey, &claim)?, patterns))
        })
        .collect()
}

fn claim_key(key: &str, claim: &str) -> Result<ClaimKey, ConfigError> {
    if claim.is_empty() {
        return Err(ConfigError::invalid(key, "empty claim name"));
    }
    if !claim.starts_with('/') {
        return Ok(ClaimKey::Name(claim.to_string()));
    }
    // RFC 6901: '~' must be followed by 0 or 1.
    let bytes = claim.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(ConfigError::invalid(
                key,
                "invalid JSON Pointer: '~' must be followed by 0 or 1 (~0 = '~', ~1 = '/')",
            ));
        }
    }
    Ok(ClaimKey::Pointer(claim.to_string()))
}

fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::invalid(key, format!("\"{value}\" is not an IP:port address (e.g. \"0.0.0.0:8443\")"))
    })
}

fn cidr(key: &str, value: &str) -> Result<IpNet, ConfigError> {
    value.parse::<IpNet>().or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|_| {
        ConfigError::invalid(key, format!("\"{value}\" is not a CIDR (e.g. \"10.0.0.0/8\") or an IP address"))
    })
}

fn file_path(key: &str, value: &str, base: &Path) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::invalid(key, "empty path"));
    }
    Ok(resolve(value, base))
}

fn resolve(value: &str, base: &Path) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Parses a duration string such as "500ms", "30s", "5m", "1h"; must be above zero.
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        ConfigError::invalid(
            key,
            format!("\"{value}\" is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"5m\", \"1h\""),
        )
    })?;
    Ok(d)
}

fn duration(key: &str, value: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    let d = duration_or_zero(key, value, default)?;
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

fn duration_or_zero(key: &str, value: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    value.as_deref().map_or(Ok(default), |v| parse_duration(key, v))
}

fn replay(raw: Option<RawReplay>, base: &Path) -> Result<ReplayStoreConfig, ConfigError> {
    let Some(raw) = raw else { return Ok(ReplayStoreConfig::Memory) };
    match raw.store.as_deref() {
        // The contract's example sets a redis_url beside store = "memory": the memory store ignores the Redis keys.
        None | Some("memory") => Ok(ReplayStoreConfig::Memory),
        Some("redis") => Ok(ReplayStoreConfig::Redis { url: redis(raw, base)? }),
        Some(other) => {
            Err(ConfigError::invalid("replay.store", format!("unknown store \"{other}\" (expected memory or redis)")))
        }
    }
}

/// `[replay]` with `store = "redis"` (contract section 13). Paths only: the CA bundle and the password file are
/// read when the client is made (`runway check` does), so `runway lint` opens neither.
fn redis(raw: RawReplay, base: &Path) -> Result<RedisConfig, ConfigError> {
    use redis::IntoConnectionInfo;
    const URL: &str = "replay.redis_url";
    // Never echo the URL: it may hold a password.
    let url = raw.redis_url.filter(|u| !u.is_empty()).ok_or_else(|| {
        ConfigError::invalid(
            URL,
            "required with store = \"redis\" (e.g. \"redis://redis:6379/0\", or rediss:// for TLS)",
        )
    })?;
    let tls = match url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase()).as_deref() {
        Some("rediss") => true,
        Some("redis" | "unix" | "redis+unix") => false,
        _ => return Err(ConfigError::invalid(URL, "must start with redis://, rediss:// (TLS) or unix:// (a socket)")),
    };
    let info = url.as_str().into_connection_info().map_err(|_| {
        ConfigError::invalid(URL, "not a usable Redis URL (redis[s]://[user:password@]host[:port][/db])")
    })?;
    if matches!(info.addr(), redis::ConnectionAddr::TcpTls { insecure: true, .. }) {
        return Err(ConfigError::invalid(
            URL,
            "#insecure would accept any server certificate: give the server's CA in replay.redis_ca instead",
        ));
    }
    let ca = raw.redis_ca.map(|p| file_path("replay.redis_ca", &p, base)).transpose()?;
    if ca.is_some() && !tls {
        return Err(ConfigError::invalid(
            "replay.redis_ca",
            "needs a rediss:// (TLS) redis_url: over redis:// or a socket no certificate is checked",
        ));
    }
    let password_file =
        raw.redis_password_file.map(|p| file_path("replay.redis_password_file", &p, base)).transpose()?;
    let settings = info.redis_settings();
    let url_password = settings.password().is_some_and(|p| !p.is_empty());
    if password_file.is_some() && url_password {
        return Err(ConfigError::invalid(
            "replay.redis_password_file",
            "replay.redis_url holds a password too: keep one of them (the file keeps it out of the config)",
        ));
    }
    if settings.username().is_some() && !url_password && password_file.is_none() {
        return Err(ConfigError::invalid(
            URL,
            "names a user but no password: add it (user:password@) or set replay.redis_password_file",
        ));
    }
    Ok(RedisConfig { url, ca, password_file })
}

fn assertion(raw: RawAssertion, base: &Path) -> Result<AssertionConfig, ConfigError> {
    let non_empty = |key: &str, value: Option<String>, default: &str| match value {
        None => Ok(default.to_string()),
        Some(v) if v.is_empty() || v.chars().any(char::is_control) => {
            Err(ConfigError::invalid(key, "must be non-empty, without control characters"))
        }
        Some(v) => Ok(v),
    };
    let ttl = duration("assertion.ttl", &raw.ttl, DEFAULT_ASSERTION_TTL)?;
    if ttl < Duration::from_secs(1) || ttl > MAX_ASSERTION_TTL {
        return Err(ConfigError::invalid("assertion.ttl", "must be between 1s and 1h (an assertion is for one hop)"));
    }
    let header = raw.header.as_deref().unwrap_or(DEFAULT_ASSERTION_HEADER).to_ascii_lowercase();
    let header = HeaderName::from_str(&header)
        .map_err(|_| ConfigError::invalid("assertion.header", "not a valid HTTP header name"))?;
    let name = header.as_str().replace('_', "-");
    let reserved = crate::forward::HOP_BY_HOP.contains(&name.as_str())
        || ["host", "content-length", "content-type", "x-request-id", "forwarded", "proxy-authorization"]
            .contains(&name.as_str())
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-runway-");
    if reserved {
        return Err(ConfigError::invalid(
            "assertion.header",
            format!(
                "\"{header}\" is a header Runway or HTTP itself manages: use Authorization or a header of your own"
            ),
        ));
    }
    Ok(AssertionConfig {
        key: file_path("assertion.key", &raw.key, base)?,
        issuer: non_empty("assertion.issuer", raw.issuer, DEFAULT_ASSERTION_ISSUER)?,
        audience: non_empty("assertion.audience", raw.audience, DEFAULT_ASSERTION_AUDIENCE)?,
        ttl,
        header,
    })
}
