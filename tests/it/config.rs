//! Configuration loading and validation through the library (`runway::config::load`) on files written to
//! a temp dir: every refusal names the exact key at fault, TOML and YAML load alike, defaults are applied,
//! `RUNWAY__…` environment variables override the file, and relative paths resolve against the config's
//! directory.
//!
//! `load` reads no certificate or JWKS file (that is `runway check`'s job, tested in `tests/cli.rs`), so the
//! paths named here need not exist.
//!
//! Environment overrides are process-global, and this crate forbids `unsafe` (which `std::env::set_var`
//! needs in edition 2024). So those tests never touch this process's environment: they re-run this test
//! binary as a child (`env_child`) with the variables set on the child only, and read back what it loaded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use runway::config::{ClaimKey, Config, ConfigError, IssuerKind, KeySource, RouteMode, load};

/// A valid config: two issuers (gitlab by discovery, okta from a JWKS file), three routes.
const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8443"
tls_cert = "certs/server.pem"
tls_key = "certs/server-key.pem"

[admin]
listen = "127.0.0.1:9901"

[upstream]
url = "https://kong.internal:8443"
ca = "certs/kong-ca.pem"
client_cert = "certs/runway-client.pem"
client_key = "certs/runway-client-key.pem"

[[issuers]]
name = "gitlab"
kind = "gitlab"
issuer = "https://gitlab.example.com"
audiences = ["https://deploy.example.com"]

[[issuers]]
name = "okta"
kind = "okta"
issuer = "https://example.okta.com/oauth2/default"
audiences = ["api://deploy"]
jwks_file = "jwks/okta.json"

[[routes]]
name = "deploy"
path_prefix = "/deploy"
methods = ["POST"]
[[routes.allow]]
issuer = "gitlab"
claims = { project_path = ["platform/api", "platform/tools/*"], ref_protected = "true" }

[[routes]]
name = "status"
path_prefix = "/status"
anonymous = true

[[routes]]
name = "jobs"
path_prefix = "/jobs"
[[routes.allow]]
issuer = "okta"
claims = { scp = "jobs:run" }
"#;

/// The same config as [`GOOD`], in YAML.
const GOOD_YAML: &str = r#"
server:
  listen: "127.0.0.1:8443"
  tls_cert: certs/server.pem
  tls_key: certs/server-key.pem
admin:
  listen: "127.0.0.1:9901"
upstream:
  url: https://kong.internal:8443
  ca: certs/kong-ca.pem
  client_cert: certs/runway-client.pem
  client_key: certs/runway-client-key.pem
issuers:
  - name: gitlab
    kind: gitlab
    issuer: https://gitlab.example.com
    audiences: ["https://deploy.example.com"]
  - name: okta
    kind: okta
    issuer: https://example.okta.com/oauth2/default
    audiences:
      - api://deploy
    jwks_file: jwks/okta.json
routes:
  - name: deploy
    path_prefix: /deploy
    methods: [POST]
    allow:
      - issuer: gitlab
        claims:
          project_path: ["platform/api", "platform/tools/*"]
          ref_protected: "true"
  - name: status
    path_prefix: /status
    anonymous: true
  - name: jobs
    path_prefix: /jobs
    allow:
      - issuer: okta
        claims:
          scp: "jobs:run"
"#;

/// Writes `text` as `dir/name` and loads it.
fn load_in(dir: &Path, name: &str, text: &str) -> Result<Config, ConfigError> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    load(&path)
}

/// Loads `text` as a `.toml` file in a fresh temp dir; returns the dir too (paths resolve inside it).
fn load_toml(text: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = temp_dir();
    let result = load_in(dir.path(), "runway.toml", text);
    (dir, result)
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("runway-config-").tempdir().unwrap_or_else(|e| panic!("creating temp dir: {e}"))
}

/// Loads a config that must be valid.
fn load_ok(text: &str) -> (tempfile::TempDir, Config) {
    let (dir, result) = load_toml(text);
    match result {
        Ok(config) => (dir, config),
        Err(e) => panic!("expected a valid config, got: {e}\n{text}"),
    }
}

/// `GOOD` with `from` replaced by `to` (which must occur exactly once).
fn good_with(from: &str, to: &str) -> String {
    assert_eq!(GOOD.matches(from).count(), 1, "test bug: {from:?} must occur exactly once in GOOD");
    GOOD.replacen(from, to, 1)
}

/// `GOOD` with `lines` appended to the `[[issuers]]` block of `name` (so they may open a subtable).
fn issuer_with(name: &str, lines: &str) -> String {
    let start = GOOD.find(&format!("name = \"{name}\"\n")).unwrap_or_else(|| panic!("test bug: no issuer {name}"));
    let end = start + GOOD[start..].find("\n\n").unwrap_or_else(|| panic!("test bug: issuer {name} does not end"));
    format!("{}\n{lines}{}", &GOOD[..end], &GOOD[end..])
}

/// `GOOD` plus a third issuer of kind aws (index 2), with `lines` appended to its block.
fn aws_with(lines: &str) -> String {
    format!(
        "{GOOD}\n[[issuers]]\nname = \"aws\"\nkind = \"aws\"\naudiences = [\"runway-prod\"]\nregions = [\"us-east-1\", \"eu-west-1\"]\n{lines}\n"
    )
}

/// A bad config and what its error must say.
struct Case {
    what: &'static str,
    config: String,
    /// The error must start with this (the key, then ": ").
    key: &'static str,
    /// ...and contain this.
    says: &'static str,
}

fn case(what: &'static str, config: String, key: &'static str, says: &'static str) -> Case {
    Case { what, config, key, says }
}

fn bad_configs() -> Vec<Case> {
    vec![
        // Unknown keys, at every level.
        case("unknown top-level key", format!("lisen = \"0.0.0.0:8443\"\n{GOOD}"), "lisen", "unknown field `lisen`"),
        case(
            "unknown top-level section",
            format!("{GOOD}\n[metrics]\nenabled = true\n"),
            "metrics",
            "unknown field `metrics`",
        ),
        case(
            "unknown key in [server]",
            good_with("listen = \"127.0.0.1:8443\"", "lisen = \"127.0.0.1:8443\""),
            "server.lisen",
            "unknown field `lisen`",
        ),
        case(
            "unknown key in [admin]",
            good_with("listen = \"127.0.0.1:9901\"", "address = \"127.0.0.1:9901\""),
            "admin.address",
            "unknown field `address`",
        ),
        case(
            "unknown key in [upstream]",
            good_with("ca = ", "ca_file = "),
            "upstream.ca_file",
            "unknown field `ca_file`",
        ),
        case(
            "unknown key in [audit]",
            format!("{GOOD}\n[audit]\nfile = \"audit.log\"\n"),
            "audit.file",
            "unknown field `file`",
        ),
        case(
            "unknown key in [[issuers]]",
            issuer_with("okta", "audience = \"api://deploy\""),
            "issuers[1].audience",
            "unknown field `audience`",
        ),
        case(
            "unknown key in [[routes]]",
            good_with("path_prefix = \"/jobs\"", "pathprefix = \"/jobs\""),
            "routes[2].pathprefix",
            "unknown field `pathprefix`",
        ),
        case(
            "unknown key in [[routes.allow]]",
            good_with("claims = { scp", "claim = { scp"),
            "routes[2].allow[0].claim",
            "unknown field `claim`",
        ),
        // Missing required keys.
        case(
            "missing server.tls_cert",
            good_with("tls_cert = \"certs/server.pem\"\n", ""),
            "server.tls_cert",
            "required key is missing",
        ),
        case(
            "missing [upstream]",
            good_with("[upstream]\nurl = \"https://kong.internal:8443\"\n", "[audit]\n")
                .replace("ca = \"certs/kong-ca.pem\"\n", "")
                .replace("client_cert = \"certs/runway-client.pem\"\n", "")
                .replace("client_key = \"certs/runway-client-key.pem\"\n", ""),
            "upstream",
            "required key is missing",
        ),
        case(
            "route without path_prefix",
            good_with("path_prefix = \"/jobs\"\n", ""),
            "routes[2].path_prefix",
            "required key is missing",
        ),
        // Wrong types.
        case(
            "max_connections not a number",
            good_with("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:8443\"\nmax_connections = \"many\""),
            "server.max_connections",
            "",
        ),
        case(
            "preserve_host not a boolean",
            good_with(
                "url = \"https://kong.internal:8443\"",
                "url = \"https://kong.internal:8443\"\npreserve_host = \"sometimes\"",
            ),
            "upstream.preserve_host",
            "",
        ),
        // [server] and [admin] values.
        case(
            "listen without port",
            good_with("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1\""),
            "server.listen",
            "\"127.0.0.1\" is not an IP:port address",
        ),
        case(
            "admin listen on a host name",
            good_with("listen = \"127.0.0.1:9901\"", "listen = \"localhost:9901\""),
            "admin.listen",
            "is not an IP:port address",
        ),
        case(
            "bad trusted proxy",
            good_with(
                "listen = \"127.0.0.1:8443\"",
                "listen = \"127.0.0.1:8443\"\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
            ),
            "server.trusted_proxies[1]",
            "is not a CIDR",
        ),
        case(
            "zero max_connections",
            good_with("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:8443\"\nmax_connections = 0"),
            "server.max_connections",
            "at least 1",
        ),
        // Durations.
        case(
            "bad duration string",
            good_with("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:8443\"\nidle_timeout = \"soon\""),
            "server.idle_timeout",
            "\"soon\" is not a duration",
        ),
        case(
            "duration without unit",
            good_with("url = \"https://kong.internal:8443\"", "url = \"https://kong.internal:8443\"\ntimeout = \"30\""),
            "upstream.timeout",
            "is not a duration",
        ),
        case(
            "zero duration",
            good_with("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:8443\"\nrequest_timeout = \"0s\""),
            "server.request_timeout",
            "must be greater than zero",
        ),
        case(
            "zero issuer duration",
            issuer_with("gitlab", "max_token_lifetime = \"0s\""),
            "issuers[0].max_token_lifetime",
            "must be greater than zero",
        ),
        case(
            "refresh_interval below 1s",
            issuer_with("okta", "refresh_interval = \"500ms\""),
            "issuers[1].refresh_interval",
            "at least 1s",
        ),
        // Issuers.
        case(
            "unknown issuer kind",
            good_with("kind = \"okta\"", "kind = \"bitbucket\""),
            "issuers[1].kind",
            "unknown kind \"bitbucket\"",
        ),
        case(
            "algorithm none",
            issuer_with("gitlab", "algorithms = [\"none\"]"),
            "issuers[0].algorithms[0]",
            "\"none\" is never allowed",
        ),
        case("algorithm HS256", issuer_with("gitlab", "algorithms = [\"HS256\"]"), "issuers[0].algorithms[0]", "HMAC"),
        case(
            "unknown algorithm",
            issuer_with("okta", "algorithms = [\"RS256\", \"XS999\"]"),
            "issuers[1].algorithms[1]",
            "unknown algorithm \"XS999\"",
        ),
        case("empty algorithm list", issuer_with("okta", "algorithms = []"), "issuers[1].algorithms", "at least one"),
        case(
            "missing audiences",
            good_with("audiences = [\"https://deploy.example.com\"]\n", ""),
            "issuers[0].audiences",
            "required",
        ),
        case(
            "empty audiences",
            good_with("audiences = [\"api://deploy\"]", "audiences = []"),
            "issuers[1].audiences",
            "required",
        ),
        case(
            "missing issuer",
            good_with("issuer = \"https://gitlab.example.com\"\n", ""),
            "issuers[0].issuer",
            "required",
        ),
        case(
            "bad issuer name",
            good_with("name = \"okta\"", "name = \"okta prod\""),
            "issuers[1].name",
            "letters, digits",
        ),
        case(
            "jwks_uri over plain http on a remote host",
            issuer_with("gitlab", "jwks_uri = \"http://gitlab.example.com/oauth/discovery/keys\""),
            "issuers[0].jwks_uri",
            "plain http is allowed only on a loopback host",
        ),
        case(
            "discovery over plain http on a remote host",
            good_with("issuer = \"https://gitlab.example.com\"", "issuer = \"http://gitlab.example.com\""),
            "issuers[0].issuer",
            "must be https://",
        ),
        case(
            "both jwks_uri and jwks_file",
            issuer_with("okta", "jwks_uri = \"https://example.okta.com/oauth2/default/v1/keys\""),
            "issuers[1].jwks_file",
            "not both",
        ),
        case(
            "duplicate issuer names",
            good_with("name = \"okta\"", "name = \"gitlab\""),
            "issuers[1].name",
            "duplicate issuer name \"gitlab\"",
        ),
        case(
            "invalid header name in [issuers.headers]",
            issuer_with("okta", "[issuers.headers]\n\"X Runway Team\" = \"team\""),
            "issuers[1].headers.\"X Runway Team\"",
            "not a valid HTTP header name",
        ),
        case(
            "invalid JSON Pointer in [issuers.headers]",
            issuer_with("okta", "[issuers.headers]\n\"X-Runway-Team\" = \"/org/~2team\""),
            "issuers[1].headers.\"X-Runway-Team\"",
            "invalid JSON Pointer",
        ),
        case(
            "aws setting on a JWT issuer",
            issuer_with("gitlab", "regions = [\"us-east-1\"]"),
            "issuers[0].regions",
            "only valid for kind = \"aws\"",
        ),
        case(
            "aws issuer with an iss",
            aws_with("issuer = \"https://sts.amazonaws.com\""),
            "issuers[2].issuer",
            "aws tokens have no iss",
        ),
        case(
            "aws issuer with keys",
            aws_with("jwks_file = \"jwks.json\""),
            "issuers[2].jwks_file",
            "not valid for kind = \"aws\"",
        ),
        case("aws issuer with algorithms", aws_with("algorithms = [\"RS256\"]"), "issuers[2].algorithms", "SigV4"),
        case(
            "aws issuer with a lifetime",
            aws_with("max_token_lifetime = \"1h\""),
            "issuers[2].max_token_lifetime",
            "fixed at 15m",
        ),
        case(
            "aws issuer without audiences",
            aws_with("").replace("audiences = [\"runway-prod\"]\n", ""),
            "issuers[2].audiences",
            "x-k8s-aws-id",
        ),
        case(
            "aws audience that cannot be a header",
            aws_with("").replace("[\"runway-prod\"]", "[\"runway prod\"]"),
            "issuers[2].audiences[0]",
            "sent to STS as the x-k8s-aws-id header",
        ),
        case(
            "aws region that is not a region",
            aws_with("").replace("\"eu-west-1\"", "\"eu-west-1.evil.com\""),
            "issuers[2].regions[1]",
            "not an AWS region",
        ),
        case(
            "aws empty regions",
            aws_with("").replace("[\"us-east-1\", \"eu-west-1\"]", "[]"),
            "issuers[2].regions",
            "at least one region",
        ),
        case(
            "aws regions and sts_endpoint",
            aws_with("sts_endpoint = \"https://127.0.0.1:7443\""),
            "issuers[2].sts_endpoint",
            "not both",
        ),
        case(
            "aws plain-http sts_endpoint",
            aws_with("")
                .replace("regions = [\"us-east-1\", \"eu-west-1\"]", "sts_endpoint = \"http://127.0.0.1:7443\""),
            "issuers[2].sts_endpoint",
            "must be https://",
        ),
        case(
            "aws sts_endpoint with a path",
            aws_with("")
                .replace("regions = [\"us-east-1\", \"eu-west-1\"]", "sts_endpoint = \"https://vpce.example.com/sts\""),
            "issuers[2].sts_endpoint",
            "no path or query",
        ),
        case(
            "aws account that is not 12 digits",
            aws_with("accounts = [\"12345\"]"),
            "issuers[2].accounts[0]",
            "12 digits",
        ),
        case("aws empty accounts", aws_with("accounts = []"), "issuers[2].accounts", "allows no account"),
        // Routes.
        case(
            "route names an undefined issuer",
            good_with("issuer = \"okta\"\nclaims", "issuer = \"gitlb\"\nclaims"),
            "routes[2].allow[0].issuer",
            "no issuer named \"gitlb\" (known: gitlab, okta)",
        ),
        case(
            "duplicate route names",
            good_with("name = \"jobs\"", "name = \"deploy\""),
            "routes[2].name",
            "duplicate route name \"deploy\"",
        ),
        case(
            "two routes with the same host and prefix",
            good_with("path_prefix = \"/jobs\"", "path_prefix = \"/deploy/\""),
            "routes[2].path_prefix",
            "ambiguous",
        ),
        case(
            "path_prefix without a leading slash",
            good_with("path_prefix = \"/jobs\"", "path_prefix = \"jobs\""),
            "routes[2].path_prefix",
            "must start with '/'",
        ),
        case(
            "path_prefix with a dot-dot segment",
            good_with("path_prefix = \"/jobs\"", "path_prefix = \"/jobs/../admin\""),
            "routes[2].path_prefix",
            "no '.' or '..' segments",
        ),
        // Routes that loaded but that no request can reach (normalize_path refuses such a request path), so
        // their requests silently went to a less specific route; fuzz/fuzz_targets/config.rs checks this.
        case(
            "path_prefix with a backslash",
            good_with("path_prefix = \"/jobs\"", "path_prefix = \"/jobs\\\\admin\""),
            "routes[2].path_prefix",
            "control characters",
        ),
        case(
            "path_prefix with a control character",
            good_with("path_prefix = \"/jobs\"", "path_prefix = \"/jobs\\u0007\""),
            "routes[2].path_prefix",
            "control characters",
        ),
        case(
            "route host without preserve_host",
            good_with(
                "url = \"https://kong.internal:8443\"",
                "url = \"https://kong.internal:8443\"\npreserve_host = false",
            )
            .replace("path_prefix = \"/status\"", "host = \"status.example.com\"\npath_prefix = \"/status\""),
            "routes[1].host",
            "routes may not set a host when upstream.preserve_host = false",
        ),
        case(
            "host that is only a dot",
            good_with("path_prefix = \"/jobs\"", "host = \".\"\npath_prefix = \"/jobs\""),
            "routes[2].host",
            "must be a host name",
        ),
        case(
            "the same host with and without its trailing dot, same prefix",
            good_with("path_prefix = \"/jobs\"", "host = \"Jobs.example.com.\"\npath_prefix = \"/deploy\"").replace(
                "path_prefix = \"/deploy\"\nmethods",
                "host = \"jobs.example.com\"\npath_prefix = \"/deploy\"\nmethods",
            ),
            "routes[2].path_prefix",
            "ambiguous",
        ),
        case(
            "host with a port",
            good_with("path_prefix = \"/jobs\"", "host = \"jobs.example.com:443\"\npath_prefix = \"/jobs\""),
            "routes[2].host",
            "without port",
        ),
        case(
            "bad method",
            good_with("methods = [\"POST\"]", "methods = [\"POST\", \"GET POST\"]"),
            "routes[0].methods[1]",
            "\"GET POST\" is not an HTTP method",
        ),
        case(
            "empty method list",
            good_with("methods = [\"POST\"]", "methods = []"),
            "routes[0].methods",
            "at least one method",
        ),
        case(
            "anonymous route with allow rules",
            good_with("methods = [\"POST\"]", "methods = [\"POST\"]\nanonymous = true"),
            "routes[0].anonymous",
            "takes no allow rules",
        ),
        case(
            "bad mode",
            good_with("path_prefix = \"/jobs\"", "path_prefix = \"/jobs\"\nmode = \"shadow\""),
            "routes[2].mode",
            "unknown mode \"shadow\"",
        ),
        case(
            "invalid JSON Pointer in a claim condition",
            good_with("{ scp = \"jobs:run\" }", "{ \"/org/~2team\" = \"jobs\" }"),
            "routes[2].allow[0].claims.\"/org/~2team\"",
            "invalid JSON Pointer",
        ),
        case(
            "unquoted boolean claim value",
            good_with("ref_protected = \"true\"", "ref_protected = true"),
            "routes[0].allow[0].claims.ref_protected",
            "quote them (\"true\"",
        ),
        case(
            "empty claim value list",
            good_with("{ scp = \"jobs:run\" }", "{ scp = [] }"),
            "routes[2].allow[0].claims.\"scp\"",
            "empty list matches nothing",
        ),
        case(
            "one_time on an anonymous route",
            good_with("anonymous = true", "anonymous = true\none_time = true"),
            "routes[1].one_time",
            "no jti to use up",
        ),
        // [upstream].
        case(
            "upstream over plain http",
            good_with("url = \"https://kong.internal:8443\"", "url = \"http://kong.internal:8000\""),
            "upstream.url",
            "must be https://",
        ),
        case(
            "upstream url with a path",
            good_with("url = \"https://kong.internal:8443\"", "url = \"https://kong.internal:8443/api\""),
            "upstream.url",
            "no path or query",
        ),
        case(
            "client_cert without client_key",
            good_with("client_key = \"certs/runway-client-key.pem\"\n", ""),
            "upstream.client_key",
            "missing",
        ),
        case(
            "client_key without client_cert",
            good_with("client_cert = \"certs/runway-client.pem\"\n", ""),
            "upstream.client_cert",
            "missing",
        ),
        case(
            "bad server_name",
            good_with(
                "url = \"https://kong.internal:8443\"",
                "url = \"https://kong.internal:8443\"\nserver_name = \"kong internal\"",
            ),
            "upstream.server_name",
            "not a DNS name",
        ),
        // [audit], [replay], [assertion].
        case("empty audit path", format!("{GOOD}\n[audit]\npath = \"\"\n"), "audit.path", ""),
        case(
            "unknown replay store",
            format!("{GOOD}\n[replay]\nstore = \"memcached\"\n"),
            "replay.store",
            "unknown store \"memcached\" (expected memory or redis)",
        ),
        case(
            "redis store without a URL",
            format!("{GOOD}\n[replay]\nstore = \"redis\"\n"),
            "replay.redis_url",
            "required with store = \"redis\"",
        ),
        case(
            "redis URL of another scheme",
            format!("{GOOD}\n[replay]\nstore = \"redis\"\nredis_url = \"http://redis:6379\"\n"),
            "replay.redis_url",
            "must start with redis://",
        ),
        case(
            "unparsable redis URL (the password is not echoed)",
            format!("{GOOD}\n[replay]\nstore = \"redis\"\nredis_url = \"redis://:s3cret@redis:notaport\"\n"),
            "replay.redis_url",
            "not a usable Redis URL",
        ),
        case(
            "unknown [replay] key",
            format!("{GOOD}\n[replay]\nstore = \"redis\"\nurl = \"redis://redis\"\n"),
            "replay.url",
            "unknown field `url`",
        ),
        case(
            "[assertion] without key",
            format!("{GOOD}\n[assertion]\nissuer = \"runway\"\n"),
            "assertion.key",
            "required key is missing",
        ),
        case(
            "assertion ttl over an hour",
            format!("{GOOD}\n[assertion]\nkey = \"k.pem\"\nttl = \"2h\"\n"),
            "assertion.ttl",
            "between 1s and 1h",
        ),
        case(
            "assertion ttl under a second",
            format!("{GOOD}\n[assertion]\nkey = \"k.pem\"\nttl = \"500ms\"\n"),
            "assertion.ttl",
            "between 1s and 1h",
        ),
        case(
            "assertion header that Runway manages",
            format!("{GOOD}\n[assertion]\nkey = \"k.pem\"\nheader = \"X-Runway-Subject\"\n"),
            "assertion.header",
            "a header Runway or HTTP itself manages",
        ),
        case(
            "assertion header that is hop-by-hop",
            format!("{GOOD}\n[assertion]\nkey = \"k.pem\"\nheader = \"Connection\"\n"),
            "assertion.header",
            "a header Runway or HTTP itself manages",
        ),
        case(
            "assertion header that is not a header name",
            format!("{GOOD}\n[assertion]\nkey = \"k.pem\"\nheader = \"X Assertion\"\n"),
            "assertion.header",
            "not a valid HTTP header name",
        ),
        case(
            "empty assertion issuer",
            format!("{GOOD}\n[assertion]\nkey = \"k.pem\"\nissuer = \"\"\n"),
            "assertion.issuer",
            "non-empty",
        ),
    ]
}

#[test]
fn the_base_config_is_valid() {
    let (_dir, config) = load_ok(GOOD);
    assert_eq!(config.issuers.len(), 2);
    assert_eq!(config.routes.len(), 3);
}

#[test]
fn every_bad_config_is_refused_naming_the_key() {
    let mut failures = Vec::new();
    for c in bad_configs() {
        let (_dir, result) = load_toml(&c.config);
        let message = match result {
            Ok(_) => {
                failures.push(format!("{}: was accepted", c.what));
                continue;
            }
            Err(e) => e.to_string(),
        };
        // A key-less error (parse or top-level) starts with the file path instead.
        let key_ok = if c.key.is_empty() {
            message.contains("runway.toml: ")
        } else {
            message.starts_with(&format!("{}: ", c.key))
        };
        if !key_ok || !message.contains(c.says) {
            failures.push(format!("{}: expected \"{}: …{}…\", got \"{message}\"", c.what, c.key, c.says));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_route_host_with_a_trailing_dot_serves_its_host() {
    // Requests are routed by their host without its trailing dot, and a route written "deploy.example.com."
    // was kept with the dot: it never matched, and its requests fell through to the host-less route (the
    // reachability check of fuzz/fuzz_targets/config.rs flags such a route).
    let (_dir, config) =
        load_ok(&good_with("path_prefix = \"/jobs\"", "host = \"Jobs.Example.com.\"\npath_prefix = \"/jobs\""));
    assert_eq!(config.routes[2].host.as_deref(), Some("jobs.example.com"));
    let table = runway::routing::RouteTable::new(&config.routes);
    for host in ["jobs.example.com", "jobs.example.com.", "JOBS.example.com:8443"] {
        let found = table.find(Some(host), "/jobs/run", &http::Method::POST).map(|r| r.name.clone());
        assert_eq!(found.ok().as_deref(), Some("jobs"), "{host}");
    }
}

#[test]
fn a_route_host_needs_preserve_host() {
    // Without preserve_host Kong gets the upstream's host, not the client's: a route chosen by the client's
    // Host would then be enforced for a request that Kong routes by another host.
    let no_preserve = good_with(
        "url = \"https://kong.internal:8443\"",
        "url = \"https://kong.internal:8443\"\npreserve_host = false",
    );
    let with_host =
        no_preserve.replace("path_prefix = \"/status\"", "host = \"Status.Example.com\"\npath_prefix = \"/status\"");
    let (_dir, result) = load_toml(&with_host);
    match result {
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, "routes[1].host");
            assert_eq!(
                message,
                "routes may not set a host when upstream.preserve_host = false (Kong never sees the client's Host, \
                 so routing and forwarding would use different hosts)"
            );
        }
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
    // Without host routes, preserve_host = false is fine...
    let (_dir, c) = load_ok(&no_preserve);
    assert!(!c.upstream.preserve_host);
    // ...and with preserve_host (explicit or by default) a route may set a host.
    let (_dir, c) = load_ok(&with_host.replace("preserve_host = false", "preserve_host = true"));
    assert_eq!(c.routes[1].host.as_deref(), Some("status.example.com"));
    let (_dir, c) = load_ok(&with_host.replace("preserve_host = false\n", ""));
    assert!(c.upstream.preserve_host);
    // An environment override that turns preserve_host off is held to the same rule.
    let outcome = load_with_env(
        &with_host.replace("preserve_host = false\n", ""),
        &[("RUNWAY__UPSTREAM__PRESERVE_HOST", "false")],
    );
    assert!(outcome.starts_with("err routes[1].host: routes may not set a host"), "{outcome}");
}

#[test]
fn an_undefined_issuer_error_reads_exactly() {
    let (_dir, result) = load_toml(&good_with("issuer = \"okta\"\nclaims", "issuer = \"gitlb\"\nclaims"));
    let e = result.err().map(|e| e.to_string());
    assert_eq!(e.as_deref(), Some(r#"routes[2].allow[0].issuer: no issuer named "gitlb" (known: gitlab, okta)"#));
}

#[test]
fn a_validation_error_carries_the_key_separately() {
    let (_dir, result) = load_toml(&good_with("listen = \"127.0.0.1:8443\"", "listen = \"nowhere\""));
    match result {
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, "server.listen");
            assert!(message.contains("nowhere"), "{message}");
        }
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

#[test]
fn broken_toml_syntax_names_the_file() {
    let (dir, result) = load_toml("[server\nlisten = ");
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    let path = dir.path().join("runway.toml");
    assert!(message.starts_with(&format!("{}: ", path.display())), "{message}");
}

#[test]
fn an_unsupported_file_extension_is_refused() {
    let dir = temp_dir();
    for name in ["runway.json", "runway.ini", "runway"] {
        let result = load_in(dir.path(), name, GOOD);
        match result {
            Err(ConfigError::Load { path, message }) => {
                assert_eq!(path, dir.path().join(name));
                assert!(message.contains("unknown format"), "{name}: {message}");
                assert!(message.contains(".toml, .yaml or .yml"), "{name}: {message}");
            }
            other => panic!("{name}: expected a load error, got {other:?}"),
        }
    }
}

#[test]
fn a_missing_file_is_refused() {
    let dir = temp_dir();
    let path = dir.path().join("absent.toml");
    match load(&path) {
        Err(e @ ConfigError::Load { .. }) => {
            let message = e.to_string();
            assert!(message.starts_with(&path.display().to_string()), "{message}");
            assert!(message.contains("no such file"), "{message}");
        }
        other => panic!("expected a load error, got {other:?}"),
    }
    // A directory is not a config file either.
    let sub = dir.path().join("conf.toml");
    std::fs::create_dir(&sub).unwrap_or_else(|e| panic!("mkdir: {e}"));
    assert!(matches!(load(&sub), Err(ConfigError::Load { .. })));
}

/// Every field of the loaded config except `source`, for comparing two loads.
fn sections(c: &Config) -> String {
    format!("{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}", c.server, c.admin, c.upstream, c.audit, c.issuers, c.routes)
}

#[test]
fn yaml_loads_the_same_as_toml() {
    let dir = temp_dir();
    let toml = load_in(dir.path(), "runway.toml", GOOD).unwrap_or_else(|e| panic!("toml: {e}"));
    for name in ["runway.yaml", "runway.yml"] {
        let yaml = load_in(dir.path(), name, GOOD_YAML).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sections(&yaml), sections(&toml), "{name}");
        assert_eq!(yaml.source, dir.path().join(name));
    }
}

#[test]
fn yaml_unknown_keys_are_refused_too() {
    let dir = temp_dir();
    let text = GOOD_YAML.replace("  tls_key:", "  tls_keyy:");
    let message = load_in(dir.path(), "runway.yaml", &text).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.starts_with("server"), "{message}");
    assert!(message.contains("unknown field `tls_keyy`"), "{message}");
}

/// The smallest valid config, one issuer of each JWT kind.
const MINIMAL: &str = r#"
[server]
tls_cert = "server.pem"
tls_key = "server-key.pem"

[upstream]
url = "https://kong.internal"

[[issuers]]
name = "gl"
kind = "gitlab"
issuer = "https://gitlab.example.com"
audiences = ["a"]

[[issuers]]
name = "ok"
kind = "okta"
issuer = "https://example.okta.com"
audiences = ["a"]

[[issuers]]
name = "id"
kind = "oidc"
issuer = "https://idp.example.com"
audiences = ["a"]

[[routes]]
name = "r"
path_prefix = "/"
[[routes.allow]]
issuer = "gl"
"#;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn defaults_are_applied() {
    let (_dir, c) = load_ok(MINIMAL);
    let s = &c.server;
    assert_eq!(s.listen, addr("0.0.0.0:8443"));
    assert!(s.trusted_proxies.is_empty());
    assert_eq!(s.header_read_timeout, Duration::from_secs(10));
    assert_eq!(s.request_timeout, Duration::from_secs(60));
    assert_eq!(s.idle_timeout, Duration::from_secs(90));
    assert_eq!(s.shutdown_grace, Duration::from_secs(30));
    assert_eq!(s.max_connections, 10_000);
    assert_eq!(s.max_body_bytes, Some(104_857_600));
    assert_eq!(c.admin.listen, addr("127.0.0.1:9901"));

    let u = &c.upstream;
    assert_eq!(u.host, "kong.internal");
    assert_eq!(u.port, 443);
    assert_eq!(u.server_name, "kong.internal");
    assert!(u.ca.is_none());
    assert!(u.client_identity.is_none());
    assert!(u.preserve_host);
    assert_eq!(u.connect_timeout, Duration::from_secs(5));
    assert_eq!(u.timeout, Duration::from_secs(60));

    assert!(c.audit.path.is_none(), "default audit path is stdout");
    assert_eq!(
        c.audit.claims,
        ["project_path", "job_id", "pipeline_id", "ref", "environment", "user_login", "cid", "scp"]
    );

    let expected = [
        (IssuerKind::Gitlab, vec![Algorithm::RS256], 2 * 3600),
        (IssuerKind::Okta, vec![Algorithm::RS256], 3600),
        (IssuerKind::Oidc, vec![Algorithm::RS256, Algorithm::ES256], 3600),
    ];
    assert_eq!(c.issuers.len(), expected.len());
    for (issuer, (kind, algorithms, lifetime)) in c.issuers.iter().zip(expected) {
        assert_eq!(issuer.kind, kind, "{}", issuer.name);
        assert_eq!(issuer.algorithms, algorithms, "{}", issuer.name);
        assert_eq!(issuer.max_token_lifetime, Duration::from_secs(lifetime), "{}", issuer.name);
        assert_eq!(issuer.leeway, Duration::from_secs(60), "{}", issuer.name);
        assert_eq!(issuer.refresh_interval, Duration::from_secs(15 * 60));
        assert_eq!(issuer.kid_refetch_interval, Duration::from_secs(10));
        assert_eq!(issuer.keys, KeySource::Discovery);
        assert!(issuer.headers.is_empty());
    }

    let r = &c.routes[0];
    assert_eq!(r.path_prefix, "/");
    assert!(r.host.is_none());
    assert!(r.methods.is_none(), "default: any method");
    assert!(!r.anonymous);
    assert_eq!(r.mode, RouteMode::Enforce);
    assert_eq!(r.allow.len(), 1);
    assert!(r.allow[0].claims.is_empty());
}

#[test]
fn max_body_bytes_zero_means_unlimited() {
    let (_dir, c) =
        load_ok(&MINIMAL.replace("tls_key = \"server-key.pem\"", "tls_key = \"server-key.pem\"\nmax_body_bytes = 0"));
    assert_eq!(c.server.max_body_bytes, None);
    let (_dir, c) = load_ok(
        &MINIMAL.replace("tls_key = \"server-key.pem\"", "tls_key = \"server-key.pem\"\nmax_body_bytes = 1024"),
    );
    assert_eq!(c.server.max_body_bytes, Some(1024));
}

#[test]
fn explicit_values_override_the_defaults() {
    let text = MINIMAL
        .replace(
            "tls_key = \"server-key.pem\"",
            "tls_key = \"server-key.pem\"\nlisten = \"[::1]:443\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.10\"]\nheader_read_timeout = \"500ms\"\nrequest_timeout = \"2m\"\nidle_timeout = \"1h\"\nshutdown_grace = \"1s\"\nmax_connections = 5",
        )
        .replace(
            "url = \"https://kong.internal\"",
            "url = \"https://10.1.2.3:8443\"\nserver_name = \"kong.internal\"\npreserve_host = true\nconnect_timeout = \"250ms\"\ntimeout = \"3s\"",
        )
        .replace(
            "audiences = [\"a\"]\n\n[[issuers]]\nname = \"ok\"",
            "audiences = [\"a\"]\nalgorithms = [\"ES256\", \"PS256\", \"EdDSA\"]\nmax_token_lifetime = \"10m\"\nleeway = \"0s\"\nrefresh_interval = \"1s\"\nkid_refetch_interval = \"1m\"\njwks_uri = \"http://127.0.0.1:8080/jwks\"\n[issuers.headers]\n\"X-Runway-Namespace\" = \"namespace_path\"\n\"X-Runway-Aws-Account\" = \"/https:~1~1sts.amazonaws.com~1/aws_account\"\n\n[[issuers]]\nname = \"ok\"",
        )
        .replace(
            "name = \"r\"\npath_prefix = \"/\"",
            "name = \"r\"\nhost = \"Deploy.Example.COM\"\npath_prefix = \"/deploy/prod/\"\nmethods = [\"post\", \"PUT\"]\nmode = \"report\"",
        )
        + "claims = { userName = \"alice\", \"/kubernetes.io/namespace\" = [\"batch\", \"jobs-*\"], \"/https:~1~1sts.amazonaws.com~1/aws_account\" = \"123456789012\" }\n"
        + "[audit]\npath = \"audit/runway.jsonl\"\nclaims = [\"sub\"]\n";
    let (dir, c) = load_ok(&text);
    let s = &c.server;
    assert_eq!(s.listen, addr("[::1]:443"));
    assert_eq!(s.trusted_proxies.len(), 2);
    assert_eq!(s.trusted_proxies[1].to_string(), "192.168.1.10/32");
    assert_eq!(s.header_read_timeout, Duration::from_millis(500));
    assert_eq!(s.request_timeout, Duration::from_secs(120));
    assert_eq!(s.idle_timeout, Duration::from_secs(3600));
    assert_eq!(s.shutdown_grace, Duration::from_secs(1));
    assert_eq!(s.max_connections, 5);

    let u = &c.upstream;
    assert_eq!((u.host.as_str(), u.port), ("10.1.2.3", 8443));
    assert_eq!(u.server_name, "kong.internal");
    assert!(u.preserve_host, "a route with a host needs preserve_host (see the test below)");
    assert_eq!(u.connect_timeout, Duration::from_millis(250));
    assert_eq!(u.timeout, Duration::from_secs(3));

    assert_eq!(c.audit.path.as_deref(), Some(dir.path().join("audit/runway.jsonl").as_path()));
    assert_eq!(c.audit.claims, ["sub"]);

    let gl = &c.issuers[0];
    assert_eq!(gl.algorithms, [Algorithm::ES256, Algorithm::PS256, Algorithm::EdDSA]);
    assert_eq!(gl.max_token_lifetime, Duration::from_secs(600));
    assert_eq!(gl.leeway, Duration::ZERO, "a zero leeway is allowed");
    assert_eq!(gl.refresh_interval, Duration::from_secs(1));
    assert_eq!(gl.kid_refetch_interval, Duration::from_secs(60));
    assert_eq!(gl.keys, KeySource::Uri("http://127.0.0.1:8080/jwks".into()), "plain http is fine on loopback");
    let headers: Vec<(String, ClaimKey)> =
        gl.headers.iter().map(|(h, c)| (h.as_str().to_string(), c.clone())).collect();
    assert!(headers.contains(&("x-runway-namespace".into(), ClaimKey::Name("namespace_path".into()))));
    assert!(headers.contains(&(
        "x-runway-aws-account".into(),
        ClaimKey::Pointer("/https:~1~1sts.amazonaws.com~1/aws_account".into())
    )));

    let r = &c.routes[0];
    assert_eq!(r.host.as_deref(), Some("deploy.example.com"));
    assert_eq!(r.path_prefix, "/deploy/prod", "trailing slash trimmed");
    assert_eq!(r.methods.as_deref(), Some(&[http::Method::POST, http::Method::PUT][..]));
    assert_eq!(r.mode, RouteMode::Report);
    let conditions = &r.allow[0].claims;
    let find = |key: &ClaimKey| conditions.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    // Claim names keep their case; dotted and slashed pointers survive the config crate intact.
    assert_eq!(find(&ClaimKey::Name("userName".into())), Some(vec!["alice".to_string()]));
    assert_eq!(
        find(&ClaimKey::Pointer("/kubernetes.io/namespace".into())),
        Some(vec!["batch".to_string(), "jobs-*".to_string()])
    );
    assert_eq!(
        find(&ClaimKey::Pointer("/https:~1~1sts.amazonaws.com~1/aws_account".into())),
        Some(vec!["123456789012".to_string()])
    );
    // ...and the pointer reads the nested claim it names.
    let claims = serde_json::json!({"https://sts.amazonaws.com/": {"aws_account": "123456789012"}});
    assert_eq!(
        ClaimKey::Pointer("/https:~1~1sts.amazonaws.com~1/aws_account".into()).lookup(&claims),
        Some(&serde_json::json!("123456789012"))
    );
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let (dir, c) = load_ok(&format!("{GOOD}\n[audit]\npath = \"logs/audit.jsonl\"\n"));
    let d = dir.path();
    assert_eq!(c.source, d.join("runway.toml"));
    assert_eq!(c.server.tls_cert, d.join("certs/server.pem"));
    assert_eq!(c.server.tls_key, d.join("certs/server-key.pem"));
    assert_eq!(c.upstream.ca, Some(d.join("certs/kong-ca.pem")));
    assert_eq!(
        c.upstream.client_identity,
        Some((d.join("certs/runway-client.pem"), d.join("certs/runway-client-key.pem")))
    );
    assert_eq!(c.audit.path, Some(d.join("logs/audit.jsonl")));
    assert_eq!(c.issuers[1].keys, KeySource::File(d.join("jwks/okta.json")));

    // A config in a subdirectory resolves against that subdirectory.
    let sub = d.join("etc/runway");
    std::fs::create_dir_all(&sub).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let c = load_in(&sub, "runway.toml", GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.tls_cert, sub.join("certs/server.pem"));

    // Absolute paths are kept as they are.
    let abs = d.join("elsewhere/server.pem");
    let text = good_with("tls_cert = \"certs/server.pem\"", &format!("tls_cert = \"{}\"", abs.display()));
    let c = load_in(&sub, "abs.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.tls_cert, abs);
}

#[test]
fn an_aws_issuer_becomes_an_sts_allowlist() {
    let extra =
        "accounts = [\"123456789012\"]\nleeway = \"30s\"\n[issuers.headers]\n\"X-Runway-Aws-User-Id\" = \"user_id\"";
    let (_dir, c) = load_ok(&aws_with(extra));
    let aws = &c.issuers[2];
    assert_eq!((aws.kind, aws.kind.as_str()), (IssuerKind::Aws, "aws"));
    assert_eq!(aws.keys, KeySource::Sts);
    assert_eq!(aws.audiences, ["runway-prod"]);
    assert_eq!(aws.max_token_lifetime, Duration::from_secs(900), "fixed at 15m");
    assert_eq!(aws.leeway, Duration::from_secs(30));
    assert_eq!(aws.headers.len(), 1);
    let settings = aws.aws.as_ref().unwrap_or_else(|| panic!("an aws issuer has aws settings"));
    let endpoints: Vec<String> = settings.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(
        endpoints,
        ["https://sts.amazonaws.com", "https://sts.us-east-1.amazonaws.com", "https://sts.eu-west-1.amazonaws.com"]
    );
    assert_eq!(settings.accounts.as_deref(), Some(&["123456789012".to_string()][..]));
    assert_eq!(settings.sts_ca, None);
    assert!(c.issuers[0].aws.is_none(), "JWT issuers have no aws settings");

    // sts_endpoint replaces the allowlist; sts_ca resolves against the config's directory; leeway defaults.
    let text = aws_with("").replace(
        "regions = [\"us-east-1\", \"eu-west-1\"]",
        "sts_endpoint = \"https://127.0.0.1:7443\"\nsts_ca = \"certs/sts-ca.pem\"",
    );
    let (dir, c) = load_ok(&text);
    let settings = c.issuers[2].aws.clone().unwrap_or_else(|| panic!("aws settings"));
    let endpoints: Vec<String> = settings.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(endpoints, ["https://127.0.0.1:7443"]);
    assert_eq!(settings.sts_ca, Some(dir.path().join("certs/sts-ca.pem")));
    assert_eq!(c.issuers[2].leeway, Duration::from_secs(60));

    // No regions: the global endpoint only. China regions live under amazonaws.com.cn.
    let (_dir, c) = load_ok(&aws_with("").replace("regions = [\"us-east-1\", \"eu-west-1\"]\n", ""));
    let endpoints: Vec<String> = c.issuers[2].aws.iter().flat_map(|a| &a.endpoints).map(ToString::to_string).collect();
    assert_eq!(endpoints, ["https://sts.amazonaws.com"]);
    let (_dir, c) = load_ok(&aws_with("").replace("\"eu-west-1\"]", "\"cn-north-1\"]"));
    let endpoints: Vec<String> = c.issuers[2].aws.iter().flat_map(|a| &a.endpoints).map(ToString::to_string).collect();
    assert_eq!(endpoints[2], "https://sts.cn-north-1.amazonaws.com.cn");
}

#[test]
fn the_example_config_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let c = load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let names: Vec<&str> = c.issuers.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["gitlab", "okta", "aws-federation", "eks-prod", "aws"]);
    let kinds: Vec<IssuerKind> = c.issuers.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [IssuerKind::Gitlab, IssuerKind::Okta, IssuerKind::Oidc, IssuerKind::Oidc, IssuerKind::Aws]);
    assert!(c.issuers[4].aws.as_ref().is_some_and(|a| a.endpoints.len() == 3 && a.accounts.is_some()));
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    assert_eq!(c.issuers[1].keys, KeySource::File(base.join("jwks/okta.json")));
    assert_eq!(c.server.tls_cert, base.join("certs/server.pem"));
    assert!(c.issuers.iter().any(|i| i.headers.len() == 2));
    assert!(c.routes.iter().any(|r| r.mode == RouteMode::Report));
    assert!(c.routes.iter().any(|r| r.anonymous));
    assert!(c.routes.iter().any(|r| r.host.is_some()));
    let pointer = ClaimKey::Pointer("/https:~1~1sts.amazonaws.com~1/aws_account".into());
    assert!(
        c.routes.iter().flat_map(|r| &r.allow).any(|rule| rule.claims.iter().any(|(k, _)| *k == pointer)),
        "the example shows a JSON Pointer condition"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Environment overrides, in a child process.
// ---------------------------------------------------------------------------------------------------------

/// Set on the child only: the config file it loads.
const CHILD_CONFIG: &str = "RUNWAY_CONFIG_TEST_CHILD_CONFIG";
/// Set on the child only: where it writes what it loaded.
const CHILD_OUT: &str = "RUNWAY_CONFIG_TEST_CHILD_OUT";

/// Not a test of its own: when run as a child by [`load_with_env`], loads the config named by the
/// environment (with whatever `RUNWAY__…` variables it was given) and writes the outcome to a file.
#[test]
fn env_child() {
    let (Some(config), Some(out)) = (std::env::var_os(CHILD_CONFIG), std::env::var_os(CHILD_OUT)) else {
        return;
    };
    let outcome = match load(Path::new(&config)) {
        Ok(c) => format!(
            "ok listen={} admin={} max_connections={} preserve_host={} idle_timeout={:?}",
            c.server.listen, c.admin.listen, c.server.max_connections, c.upstream.preserve_host, c.server.idle_timeout
        ),
        Err(e) => format!("err {e}"),
    };
    std::fs::write(&out, outcome).unwrap_or_else(|e| panic!("writing child outcome: {e}"));
}

/// Loads `text` in a child process whose environment has `vars` (and no other `RUNWAY__` variable).
fn load_with_env(text: &str, vars: &[(&str, &str)]) -> String {
    let dir = temp_dir();
    let config = dir.path().join("runway.toml");
    let out = dir.path().join("outcome.txt");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("writing config: {e}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut cmd = Command::new(exe);
    cmd.args(["config::env_child", "--exact", "--test-threads=1", "--quiet"])
        .env(CHILD_CONFIG, &config)
        .env(CHILD_OUT, &out);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().to_ascii_uppercase().starts_with("RUNWAY__") {
            cmd.env_remove(name);
        }
    }
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("running the child: {e}"));
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("reading child outcome: {e}"))
}

#[test]
fn env_overrides_a_key_in_the_file() {
    let outcome = load_with_env(GOOD, &[("RUNWAY__SERVER__LISTEN", "127.0.0.1:18443")]);
    assert!(outcome.starts_with("ok listen=127.0.0.1:18443 admin=127.0.0.1:9901 "), "{outcome}");
    // Without the variable, the file's value.
    let outcome = load_with_env(GOOD, &[]);
    assert!(outcome.starts_with("ok listen=127.0.0.1:8443 "), "{outcome}");
}

#[test]
fn env_sets_keys_absent_from_the_file() {
    let outcome = load_with_env(
        GOOD,
        &[
            ("RUNWAY__ADMIN__LISTEN", "0.0.0.0:19901"),
            ("RUNWAY__SERVER__MAX_CONNECTIONS", "7"),
            ("RUNWAY__UPSTREAM__PRESERVE_HOST", "false"),
            ("RUNWAY__SERVER__IDLE_TIMEOUT", "5m"),
        ],
    );
    assert_eq!(
        outcome,
        "ok listen=127.0.0.1:8443 admin=0.0.0.0:19901 max_connections=7 preserve_host=false idle_timeout=300s"
    );
}

#[test]
fn a_bad_env_value_names_the_key() {
    let outcome = load_with_env(GOOD, &[("RUNWAY__SERVER__LISTEN", "not-an-address")]);
    assert!(outcome.starts_with("err server.listen: \"not-an-address\" is not an IP:port address"), "{outcome}");
    let outcome = load_with_env(GOOD, &[("RUNWAY__SERVER__IDLE_TIMEOUT", "forever")]);
    assert!(outcome.starts_with("err server.idle_timeout: \"forever\" is not a duration"), "{outcome}");
    let outcome = load_with_env(GOOD, &[("RUNWAY__SERVER__MAX_CONNECTIONS", "lots")]);
    assert!(outcome.starts_with("err server.max_connections: "), "{outcome}");
}

#[test]
fn an_unknown_env_key_is_an_error_too() {
    let outcome = load_with_env(GOOD, &[("RUNWAY__SERVER__LISEN", "127.0.0.1:1")]);
    assert!(outcome.starts_with("err server"), "{outcome}");
    assert!(outcome.contains("unknown field `lisen`"), "{outcome}");
}

// ---------------------------------------------------------------------------------------------------------
// [replay], [assertion], one_time.
// ---------------------------------------------------------------------------------------------------------

#[test]
fn replay_assertion_and_one_time_load_with_their_defaults() {
    use runway::config::ReplayStoreConfig;
    let (_dir, c) = load_ok(GOOD);
    assert_eq!(c.replay, ReplayStoreConfig::Memory, "no [replay]: the memory store");
    assert!(c.assertion.is_none());
    assert!(c.routes.iter().all(|r| !r.one_time));

    let text = format!(
        "{}\n[replay]\nstore = \"redis\"\nredis_url = \"redis://:pw@redis.internal:6379/2\"\n\n[assertion]\nkey = \"certs/assertion-key.pem\"\n",
        good_with("path_prefix = \"/jobs\"", "path_prefix = \"/jobs\"\none_time = true")
    );
    let (dir, c) = load_ok(&text);
    assert_eq!(c.replay, ReplayStoreConfig::Redis { url: "redis://:pw@redis.internal:6379/2".into() });
    assert_eq!(c.routes.iter().filter(|r| r.one_time).map(|r| r.name.as_str()).collect::<Vec<_>>(), ["jobs"]);
    let a = c.assertion.unwrap_or_else(|| panic!("[assertion] loaded"));
    assert_eq!(a.key, dir.path().join("certs/assertion-key.pem"));
    assert_eq!((a.issuer.as_str(), a.audience.as_str()), ("runway", "kong"));
    assert_eq!(a.ttl, Duration::from_secs(60));
    assert_eq!(a.header.as_str(), "authorization");

    let text = format!(
        "{GOOD}\n[replay]\nstore = \"memory\"\nredis_url = \"redis://ignored:6379\"\n\n[assertion]\nkey = \"/etc/runway/a.pem\"\nissuer = \"runway-2\"\naudience = \"kong-prod\"\nttl = \"30s\"\nheader = \"X-Identity-Assertion\"\n"
    );
    let (_dir, c) = load_ok(&text);
    assert_eq!(c.replay, ReplayStoreConfig::Memory, "the contract's example sets both: memory ignores the URL");
    let a = c.assertion.unwrap_or_else(|| panic!("[assertion] loaded"));
    assert_eq!(a.key, PathBuf::from("/etc/runway/a.pem"));
    assert_eq!((a.issuer.as_str(), a.audience.as_str(), a.ttl), ("runway-2", "kong-prod", Duration::from_secs(30)));
    assert_eq!(a.header.as_str(), "x-identity-assertion");
}

#[test]
fn the_example_config_shows_replay_assertion_and_a_one_time_route() {
    use runway::config::ReplayStoreConfig;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let c = load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(matches!(c.replay, ReplayStoreConfig::Redis { .. }), "{:?}", c.replay);
    assert!(c.routes.iter().any(|r| r.one_time && !r.anonymous));
    let a = c.assertion.unwrap_or_else(|| panic!("the example has [assertion]"));
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    assert_eq!(a.key, base.join("certs/assertion-key.pem"));
    assert_eq!((a.issuer.as_str(), a.header.as_str()), ("runway", "authorization"));
}
