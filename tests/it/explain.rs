//! `runway explain`: the route, each verification step, each rule and condition with the actual claim value,
//! the headers Kong would get; exit 0 allow, 1 deny (404/405 included), 2 usage or config error.

use std::process::{Command, Output};

use crate::support::*;
use serde_json::json;

const AUD: &str = "https://deploy.example.com";
const ISS: &str = "https://gitlab.example.com";

fn setup() -> (Pki, SigningKey, std::path::PathBuf) {
    let pki = Pki::generate();
    let key = SigningKey::rsa("k1");
    let jwks_file = pki.write_file("jwks.json", jwks(&[&key]).to_string().as_bytes());
    let config = format!(
        "{}{}{}",
        base_config(&pki, "https://127.0.0.1:1"),
        issuer_block("gitlab", "gitlab", ISS, AUD, &format!("jwks_file = \"{}\"", jwks_file.display())),
        r#"
[[routes]]
name = "deploy-production"
path_prefix = "/deploy/production"
methods = ["POST"]
[[routes.allow]]
issuer = "gitlab"
claims = { project_path = ["platform/api", "platform/tools/*"], environment = "production" }

[[routes]]
name = "status"
path_prefix = "/status"
anonymous = true
"#
    );
    let path = pki.write_file("explain.toml", config.as_bytes());
    (pki, key, path)
}

fn explain(config: &std::path::Path, method: &str, url: &str, token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runway"));
    cmd.arg("explain").arg("-c").arg(config).args(["--method", method, "--url", url]);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.output().unwrap_or_else(|e| panic!("{e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn allowed_request_prints_every_step_and_the_headers() {
    let (_pki, key, config) = setup();
    let token = key.mint(&claims(ISS, AUD, json!({"project_path": "platform/tools/cli", "environment": "production"})));
    let out = explain(&config, "POST", "https://deploy.example.com/deploy/production/app", Some(&token));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for expected in [
        "route:     \"deploy-production\"",
        "header:    alg RS256, kid k1, typ JWT",
        "issuer:    \"gitlab\" (kind gitlab",
        "signature: valid",
        "  exp      ",
        "  iat      ",
        "project_path = \"platform/tools/cli\", expected one of [\"platform/api\",\"platform/tools/*\"]: ok",
        "environment = \"production\", expected \"production\": ok",
        "x-runway-subject: user-1",
        "x-runway-project: platform/tools/cli",
        // From the proxy's own pipeline, run with a recording last step in place of Kong.
        "pipeline:  forwarded to Kong",
        "x-runway-route: deploy-production",
        "x-forwarded-proto: https",
        "x-forwarded-host: deploy.example.com",
        "decision:  allow",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains(&token), "the token is not echoed");
}

#[test]
fn denied_request_names_the_failing_condition() {
    let (_pki, key, config) = setup();
    let token = key.mint(&claims(ISS, AUD, json!({"project_path": "platform/api", "environment": "staging"})));
    let out = explain(&config, "POST", "https://deploy.example.com/deploy/production", Some(&token));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("environment = \"staging\", expected \"production\": FAILS"), "{text}");
    assert!(text.contains("refusal:   403"), "{text}");
    assert!(text.contains("pipeline:  refused: 403 route \"deploy-production\": "), "{text}");
    assert!(text.contains("decision:  deny"));
    assert!(!text.contains("headers to Kong"), "nothing is forwarded on an enforced deny");
}

#[test]
fn refused_tokens_say_why() {
    let (_pki, key, config) = setup();
    let t = now();
    let expired = key.mint(&claims(ISS, AUD, json!({"iat": t - 900, "exp": t - 600})));
    let out = explain(&config, "POST", "https://x/deploy/production", Some(&expired));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("refusal:   401 token expired"), "{text}");
    assert!(text.contains("s ago)"), "the actual exp is shown relative to now: {text}");
    let forged = SigningKey::rsa("k1").mint(&claims(ISS, AUD, json!({})));
    let text = stdout(&explain(&config, "POST", "https://x/deploy/production", Some(&forged)));
    assert!(text.contains("401 token signature does not verify"), "{text}");
    let text = stdout(&explain(&config, "POST", "https://x/deploy/production", None));
    assert!(text.contains("token:     none given") && text.contains("401"), "{text}");
}

#[test]
fn time_claims_past_year_9999_are_explained_not_a_crash() {
    // An IdP writing exp in milliseconds signs a token that is a date in the year 55000: humantime cannot
    // format it, and explain used to panic there (exit 101) instead of naming the refusal.
    let (_pki, key, config) = setup();
    let t = now();
    for (exp, shown) in [(json!(t * 1000), format!("{}", t * 1000)), (json!(1e300), "1e+300".to_string())] {
        let token = key.mint(&claims(ISS, AUD, json!({"iat": t, "exp": exp})));
        let out = explain(&config, "POST", "https://x/deploy/production", Some(&token));
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(&format!("  exp      {shown} (not a date")), "{text}");
        assert!(text.contains("refusal:   401 token lifetime"), "{text}");
    }
}

#[test]
fn routing_outcomes_and_exit_codes() {
    let (pki, _key, config) = setup();
    let out = explain(&config, "GET", "https://x/nowhere", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("-> 404"));
    let out = explain(&config, "GET", "https://x/deploy/production", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("-> 405"));
    let out = explain(&config, "GET", "https://x/status", None);
    assert_eq!(out.status.code(), Some(0), "anonymous routes are allowed without a token");
    assert!(stdout(&out).contains("x-runway-route: status"));

    let bad = pki.write_file("bad.toml", b"[server]\nlisen = 1\n");
    let out = explain(&bad, "GET", "https://x/", None);
    assert_eq!(out.status.code(), Some(2), "config error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("server"));
    let out = explain(&config, "GET", "not a url at all", None);
    assert_eq!(out.status.code(), Some(2), "bad --url");
    let missing = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args(["explain", "-c"])
        .arg(&config)
        .args(["--url", "https://x/"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(missing.status.code(), Some(2), "usage error: --method missing");
}

#[test]
fn a_one_time_route_needs_a_jti_and_the_assertion_is_shown() {
    let (pki, key, config) = setup();
    let signing = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let key_file = pki.write_file("assertion-key.pem", signing.serialize_pem().as_bytes());
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{text}\n[[routes]]\nname = \"release\"\npath_prefix = \"/release\"\none_time = true\n[[routes.allow]]\nissuer = \"gitlab\"\n\n[assertion]\nkey = \"{}\"\n",
        key_file.display()
    );
    let path = pki.write_file("one-time.toml", text.as_bytes());

    let without = key.mint(&claims(ISS, AUD, json!({})));
    let out = explain(&path, "POST", "https://deploy.example.com/release", Some(&without));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("refusal:   401 token has no jti"), "{}", stdout(&out));

    let with = key.mint(&claims(ISS, AUD, json!({"jti": "j-1"})));
    for _ in 0..2 {
        // explain uses nothing up: the same token is allowed every time.
        let out = explain(&path, "POST", "https://deploy.example.com/release", Some(&with));
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("replay:    one_time route: jti \"j-1\" passes once"), "{text}");
        assert!(text.contains("  authorization: Bearer <ES256 assertion, kid "), "{text}");
    }

    // With a shared (Redis) replay store, explain runs the pipeline over a private store of its own: it
    // neither contacts Redis (nothing listens here, which would be a 503) nor uses the jti up.
    let shared = format!(
        "{}\n[replay]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:{}/0\"\n",
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}")),
        crate::support::free_port()
    );
    let shared_path = pki.write_file("one-time-redis.toml", shared.as_bytes());
    let out = explain(&shared_path, "POST", "https://deploy.example.com/release", Some(&with));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("pipeline:  forwarded to Kong"), "{text}");
}
