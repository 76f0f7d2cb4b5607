//! `kind = "github"` end to end (contract sections 2 and 3): a fake issuer mints tokens shaped like GitHub
//! Actions' (claim names and types as GitHub's OpenID Connect reference documents them: ids, numbers and
//! booleans as strings, `sub` = `repo:OWNER/REPO:environment:NAME`), Runway verifies them with the kind's
//! defaults, applies the route's policy, and Kong's stand-in echoes the identity headers it received.
//! The fake issuer has its own URL, so the config sets `issuer` explicitly, as GitHub Enterprise Server does.

use std::time::Duration;

use crate::support::*;
use ::runway::config::{GITHUB_ACTIONS_ISSUER, IssuerKind};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const AUD: &str = "https://deploy.example.com";

const ROUTES: &str = r#"
[[routes]]
name = "deploy-production"
path_prefix = "/deploy/production"
methods = ["POST"]
[[routes.allow]]
issuer = "github"
claims = { repository = "octo-org/octo-repo", environment = "prod", ref = "refs/heads/main", event_name = ["push", "workflow_dispatch"], job_workflow_ref = "octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main" }

[[routes]]
name = "builds"
path_prefix = "/builds"
[[routes.allow]]
issuer = "github"
claims = { repository_id = "456789012" }
"#;

struct Fx {
    backends: Backends,
    runway: Runway,
    client: TestClient,
}

async fn fixture() -> Fx {
    let backends = Backends::start().await;
    let issuer = format!(
        "\n[[issuers]]\nname = \"github\"\nkind = \"github\"\nissuer = \"{}\"\naudiences = [\"{AUD}\"]\n",
        backends.idp.issuer()
    );
    let config = format!("{}{issuer}{ROUTES}", base_config(&backends.pki, &backends.upstream.url()));
    let runway = Runway::start(&backends.pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&backends.pki);
    Fx { backends, runway, client }
}

/// The claims of a GitHub Actions token for a `push` to main of octo-org/octo-repo, in a job using the
/// `prod` environment (the example of GitHub's reference); `changes` replace or (with null) remove claims.
fn github_claims(issuer: &str, changes: Value) -> Value {
    let iat = now();
    let mut claims = json!({
        "jti": "example-id",
        "sub": "repo:octo-org/octo-repo:environment:prod",
        "environment": "prod",
        "aud": AUD,
        "ref": "refs/heads/main",
        "sha": "example-sha",
        "repository": "octo-org/octo-repo",
        "repository_owner": "octo-org",
        "actor_id": "12",
        "repository_visibility": "private",
        "repository_id": "456789012",
        "repository_owner_id": "65432",
        "run_id": "example-run-id",
        "run_number": "10",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "workflow": "example-workflow",
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref_type": "branch",
        "ref_protected": "true",
        "job_workflow_ref": "octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main",
        "workflow_ref": "octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main",
        "job_workflow_sha": "example-sha",
        "iss": issuer,
        "nbf": iat - 5,
        "iat": iat,
        "exp": iat + 300,
    });
    if let (Some(map), Value::Object(changes)) = (claims.as_object_mut(), changes) {
        for (k, v) in changes {
            if v.is_null() {
                map.remove(&k);
            } else {
                map.insert(k, v);
            }
        }
    }
    claims
}

impl Fx {
    fn token(&self, changes: Value) -> String {
        self.backends.key.mint(&github_claims(&self.backends.idp.issuer(), changes))
    }

    async fn post(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> TestResponse {
        let mut req = Request::post(self.runway.url(path)).header("authorization", format!("Bearer {token}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from_static(b"{}"))).unwrap_or_else(|e| panic!("request: {e}"));
        self.client.send(req).await
    }
}

#[tokio::test]
async fn a_github_token_reaches_kong_with_the_github_identity_headers() {
    let fx = fixture().await;
    let spoofed = [("x-runway-repository", "evil/repo"), ("X-Runway-Actor", "root"), ("x_runway_workflow", "x")];
    let res = fx.post("/deploy/production/releases", &fx.token(json!({})), &spoofed).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let echo = res.json();
    let h = &echo["headers"];
    assert_eq!(h["x-runway-issuer"], json!(["github"]));
    assert_eq!(h["x-runway-subject"], json!(["repo:octo-org/octo-repo:environment:prod"]));
    assert_eq!(h["x-runway-route"], json!(["deploy-production"]));
    assert_eq!(h["x-runway-repository"], json!(["octo-org/octo-repo"]), "Runway's, not the client's");
    assert_eq!(h["x-runway-workflow"], json!(["octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main"]));
    assert_eq!(h["x-runway-ref"], json!(["refs/heads/main"]));
    assert_eq!(h["x-runway-environment"], json!(["prod"]));
    assert_eq!(h["x-runway-actor"], json!(["octocat"]));
    for absent in ["authorization", "x_runway_workflow", "x-runway-project", "x-runway-user", "x-runway-job-id"] {
        assert!(h.get(absent).is_none(), "{absent} must not reach Kong: {h}");
    }
}

#[tokio::test]
async fn identity_headers_are_sent_only_for_claims_the_token_has() {
    let fx = fixture().await;
    // A job without `environment:`, started by a bot without an actor claim: no such headers at all.
    let token = fx.token(json!({
        "environment": null, "actor": null, "job_workflow_ref": null,
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
    }));
    let res = fx.post("/builds/42", &token, &[("x-runway-environment", "prod")]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let h = &res.json()["headers"];
    assert_eq!(h["x-runway-repository"], json!(["octo-org/octo-repo"]));
    assert_eq!(h["x-runway-ref"], json!(["refs/heads/main"]));
    for absent in ["x-runway-environment", "x-runway-actor", "x-runway-workflow"] {
        assert!(h.get(absent).is_none(), "{absent}: claim absent, header absent (and a client's copy stripped): {h}");
    }
}

#[tokio::test]
async fn the_route_policy_refuses_pull_requests_other_repositories_and_jobs_without_the_environment() {
    let fx = fixture().await;
    let cases = [
        (json!({"event_name": "pull_request"}), "\"event_name\""),
        (json!({"event_name": "pull_request_target"}), "\"event_name\""),
        (json!({"ref": "refs/heads/feature"}), "\"ref\""),
        (json!({"repository": "octo-org/octo-repo-fork"}), "\"repository\""),
        (json!({"environment": null}), "\"environment\" is missing"),
        (
            json!({"job_workflow_ref": "octo-org/octo-repo/.github/workflows/other.yml@refs/heads/main"}),
            "job_workflow_ref",
        ),
    ];
    for (changes, named) in cases {
        let res = fx.post("/deploy/production", &fx.token(changes.clone()), &[]).await;
        assert_eq!(res.status, 403, "{changes}: {}", res.text());
        let detail = res.json()["detail"].as_str().unwrap_or_default().to_string();
        assert!(detail.contains("deploy-production") && detail.contains(named), "{changes}: {detail}");
    }
    assert_eq!(fx.backends.upstream.requests(), 0, "nothing refused reached Kong");
}

#[tokio::test]
async fn the_kind_defaults_hold_at_verification() {
    let fx = fixture().await;
    // max_token_lifetime: 1h by default for github.
    let long = fx.token(json!({"exp": now() + 2 * 3600}));
    let res = fx.post("/builds", &long, &[]).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let challenge = res.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("invalid_token") && challenge.contains("lifetime"), "{challenge}");

    // The audience is required to match.
    let res = fx.post("/builds", &fx.token(json!({"aud": "https://github.com/octo-org"})), &[]).await;
    assert_eq!(res.status, 401, "{}", res.text());

    // RS256 only: an ES256 token signed by a key the issuer really publishes is refused for its algorithm.
    let ec = SigningKey::ec("ec-1");
    fx.backends.idp.set_jwks(jwks(&[&fx.backends.key, &ec]));
    let es256 = ec.mint(&github_claims(&fx.backends.idp.issuer(), json!({})));
    let res = fx.post("/builds", &es256, &[]).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let challenge = res.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("not allowed"), "{challenge}");
}

#[test]
fn the_kind_defaults_in_config() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let write = |issuer_lines: &str| {
        let path = dir.path().join("runway.toml");
        let text = format!(
            "[server]\ntls_cert = \"a.pem\"\ntls_key = \"b.pem\"\n[upstream]\nurl = \"https://kong\"\n[[issuers]]\nname = \"github\"\nkind = \"github\"\n{issuer_lines}\n"
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        ::runway::config::load(&path)
    };
    let config = write("audiences = [\"https://deploy.example.com\"]").unwrap_or_else(|e| panic!("{e}"));
    let github = &config.issuers[0];
    assert_eq!((github.kind, github.kind.as_str()), (IssuerKind::Github, "github"));
    assert_eq!(github.issuer, GITHUB_ACTIONS_ISSUER);
    assert_eq!(github.issuer, "https://token.actions.githubusercontent.com");
    assert_eq!(github.algorithms, [jsonwebtoken::Algorithm::RS256]);
    assert_eq!(github.max_token_lifetime, Duration::from_secs(3600));
    assert_eq!(github.leeway, Duration::from_secs(60));
    assert_eq!(github.keys, ::runway::config::KeySource::Discovery);

    // GitHub Enterprise Server: the issuer is set.
    let ghes = write("issuer = \"https://ghe.example.com/_services/token\"\naudiences = [\"a\"]")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ghes.issuers[0].issuer, "https://ghe.example.com/_services/token");

    // Audiences are required, as for every kind.
    let err = write("").map(|_| ()).unwrap_err().to_string();
    assert!(err.starts_with("issuers[0].audiences: required"), "{err}");
    // AWS-only keys are refused.
    let err = write("audiences = [\"a\"]\naccounts = [\"123456789012\"]").map(|_| ()).unwrap_err().to_string();
    assert!(err.starts_with("issuers[0].accounts: only valid for kind = \"aws\""), "{err}");
}

#[test]
fn an_unknown_kind_names_github_among_the_kinds() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("runway.toml");
    let text = "[server]\ntls_cert = \"a\"\ntls_key = \"b\"\n[upstream]\nurl = \"https://kong\"\n[[issuers]]\nname = \"gh\"\nkind = \"githb\"\naudiences = [\"a\"]\n";
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let err = ::runway::config::load(&path).map(|_| ()).unwrap_err().to_string();
    assert_eq!(err, "issuers[0].kind: unknown kind \"githb\" (expected gitlab, github, okta, oidc or aws)");
}
