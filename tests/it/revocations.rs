//! Revocations (contract section 11): cut off a pipeline at once, on every replica. Two Runways share a real
//! `redis-server`; a revocation posted to one refuses the matching token on the other within a second, cached
//! tokens included; expiry and delete lift it; a Redis outage keeps the known set in force and a restart of
//! Redis (which loses its data) does not lift it; a new replica loads the set before it reports ready; the API
//! needs the admin token and names the field of a bad request; `runway revoke` drives it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{Value, json};

const AUD: &str = "https://deploy.example.com";
const TOKEN: &str = "revocation-admin-token";

const ROUTES: &str = r#"
[[routes]]
name = "deploy"
path_prefix = "/deploy"
[[routes.allow]]
issuer = "gitlab"
claims = { environment = "production" }

[[routes]]
name = "shadow"
path_prefix = "/shadow"
mode = "report"
[[routes.allow]]
issuer = "gitlab"
claims = { environment = "production" }
"#;

struct Fx {
    b: Backends,
    client: TestClient,
    token_file: std::path::PathBuf,
}

async fn fixture() -> Fx {
    let b = Backends::start().await;
    let client = TestClient::new(&b.pki);
    let token_file = b.pki.write_file("admin-token", format!("{TOKEN}\n").as_bytes());
    Fx { b, client, token_file }
}

impl Fx {
    fn config(&self, extra: &str) -> String {
        let admin = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n", self.token_file.display());
        format!(
            "{}{}{ROUTES}{extra}",
            base_config(&self.b.pki, &self.b.upstream.url()).replace("[admin]\nlisten = \"127.0.0.1:0\"\n", &admin),
            issuer_block("gitlab", "gitlab", &self.b.idp.issuer(), AUD, ""),
        )
    }

    async fn runway(&self, extra: &str) -> Runway {
        let runway = Runway::start(&self.b.pki, &self.config(extra)).await;
        runway.wait_ready().await;
        runway
    }

    fn token(&self, pipeline_id: u64) -> String {
        let extra = json!({"environment": "production", "pipeline_id": pipeline_id, "project_path": "platform/api"});
        self.b.key.mint(&claims(&self.b.idp.issuer(), AUD, extra))
    }

    async fn status(&self, runway: &Runway, path: &str, token: &str) -> u16 {
        self.client.get(&runway.url(path), Some(token)).await.status.as_u16()
    }
}

fn redis_block(redis: &TestRedis) -> String {
    format!("\n[replay]\nstore = \"redis\"\nredis_url = \"{}\"\n", redis.url())
}

async fn api(admin: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, text) = admin_send(admin, method, path, &[("Authorization", &auth)], body).await;
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}")))
}

async fn revoke(admin: SocketAddr, body: Value) -> String {
    let (status, answer) = api(admin, "POST", "/revocations", &body.to_string()).await;
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_str().unwrap_or_else(|| panic!("no id: {answer}")).to_string()
}

/// Polls until `runway` answers `want` for `token` on `/deploy`; how long that took.
async fn until_status(fx: &Fx, runway: &Runway, token: &str, want: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = fx.status(runway, "/deploy/x", token).await;
        if status == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "still {status} (want {want}) after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_revoked(res: &TestResponse) {
    assert_eq!(res.status, 401, "{}", res.text());
    assert_eq!(
        res.header("www-authenticate").unwrap_or_default(),
        "Bearer realm=\"runway\", error=\"invalid_token\", error_description=\"token revoked\""
    );
}

#[tokio::test]
async fn a_revocation_posted_to_one_replica_refuses_the_token_on_the_other_within_a_second() {
    let Some(redis) = TestRedis::start() else { return };
    let fx = fixture().await;
    let one = fx.runway(&redis_block(&redis)).await;
    let two = fx.runway(&redis_block(&redis)).await;
    let (bad, good) = (fx.token(1717), fx.token(1718));
    // Both tokens verified once on replica two: from now on they are served from its verified-token cache.
    assert_eq!(fx.status(&two, "/deploy/x", &bad).await, 200);
    assert_eq!(fx.status(&two, "/deploy/x", &good).await, 200);

    let posted = Instant::now();
    let id = revoke(
        one.admin,
        json!({"issuer": "gitlab", "claims": {"pipeline_id": "1717", "project_path": "platform/*"},
               "reason": "runner compromised", "revoked_by": "sre-on-call"}),
    )
    .await;
    assert_revoked(&fx.client.get(&one.url("/deploy/x"), Some(&bad)).await);
    until_status(&fx, &two, &bad, 401, Duration::from_secs(1)).await;
    let propagation = posted.elapsed();
    eprintln!("revocation propagated to the other replica in {propagation:?}");
    assert!(propagation < Duration::from_secs(1), "{propagation:?}");
    assert_revoked(&fx.client.get(&two.url("/deploy/x"), Some(&bad)).await);
    assert_eq!(fx.status(&two, "/deploy/x", &good).await, 200, "an unrelated pipeline is unaffected");
    // Report mode forwards it as a would-deny, without identity.
    let shadow = fx.client.get(&two.url("/shadow/x"), Some(&bad)).await;
    assert_eq!(shadow.status, 200);
    assert_eq!(shadow.json()["headers"]["x-runway-subject"], Value::Null);

    let (status, listed) = api(two.admin, "GET", "/revocations", "").await;
    assert_eq!(status, 200);
    assert_eq!(listed["store"], "redis");
    let entries = listed["revocations"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(
        (entries[0]["id"].as_str(), entries[0]["reason"].as_str()),
        (Some(id.as_str()), Some("runner compromised"))
    );
    assert_eq!(entries[0]["revoked_by"], "sre-on-call");
    assert_eq!(two.metric("runway_revocations_active", &[]).await, Some(1.0));
    let labels = [("issuer", "gitlab"), ("decision", "deny"), ("reason", "revoked")];
    assert_eq!(two.metric("runway_auth_decisions_total", &labels).await, Some(2.0));

    // Lifted on replica two, it stops applying on replica one within a second.
    let deleted = Instant::now();
    let (status, answer) = api(two.admin, "DELETE", &format!("/revocations/{id}"), "").await;
    assert_eq!((status, answer["deleted"].as_str()), (200, Some(id.as_str())));
    until_status(&fx, &one, &bad, 200, Duration::from_secs(1)).await;
    eprintln!("lifting propagated in {:?}", deleted.elapsed());
    let (status, answer) = api(one.admin, "DELETE", &format!("/revocations/{id}"), "").await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["field"], "id");

    let audit: Vec<Value> = audit_lines(&fx.b.pki).into_iter().filter(|e| e["reason"] == "revoked").collect();
    assert!(audit.iter().any(|e| e["decision"] == "deny" && e["status"] == 401 && e["route"] == "deploy"), "{audit:?}");
    assert!(audit.iter().any(|e| e["decision"] == "would_deny" && e["route"] == "shadow"), "{audit:?}");
}

#[tokio::test]
async fn expiry_lifts_a_revocation_and_a_long_one_is_capped_to_the_token_lifetime() {
    let fx = fixture().await;
    let runway = fx.runway("").await;
    let bad = fx.token(42);
    assert_eq!(fx.status(&runway, "/deploy/x", &bad).await, 200);
    let (status, answer) = api(
        runway.admin,
        "POST",
        "/revocations",
        &json!({"issuer": "gitlab", "claims": {"pipeline_id": "42"}, "expires": "2s"}).to_string(),
    )
    .await;
    assert_eq!((status, answer["store"].as_str()), (201, Some("memory")), "{answer}");
    assert_revoked(&fx.client.get(&runway.url("/deploy/x"), Some(&bad)).await);
    until_status(&fx, &runway, &bad, 200, Duration::from_secs(4)).await;
    let (_, listed) = api(runway.admin, "GET", "/revocations", "").await;
    assert_eq!(listed["revocations"], json!([]), "an expired revocation is not listed");

    // gitlab's max_token_lifetime is 2h: a week is capped to it, since no token it could match lives longer.
    let (status, answer) = api(
        runway.admin,
        "POST",
        "/revocations",
        &json!({"issuer": "gitlab", "claims": {"project_path": "platform/api"}, "expires": "7d"}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let expires = humantime::parse_rfc3339(answer["expires"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("expires {answer}: {e}"));
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    assert!(left <= Duration::from_secs(7200) && left > Duration::from_secs(7100), "{left:?}");

    // Revocations are not part of the config: a reload keeps them.
    assert_eq!(api(runway.admin, "POST", "/reload", "").await.0, 200);
    assert_revoked(&fx.client.get(&runway.url("/deploy/x"), Some(&bad)).await);
}

#[tokio::test]
async fn a_redis_outage_keeps_known_revocations_in_force_and_recovery_converges() {
    let Some(mut redis) = TestRedis::start() else { return };
    let fx = fixture().await;
    let one = fx.runway(&redis_block(&redis)).await;
    let two = fx.runway(&redis_block(&redis)).await;
    let (first, second) = (fx.token(1), fx.token(2));
    assert_eq!(fx.status(&two, "/deploy/x", &first).await, 200);
    revoke(one.admin, json!({"issuer": "gitlab", "claims": {"pipeline_id": "1"}})).await;
    until_status(&fx, &two, &first, 401, Duration::from_secs(1)).await;

    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for runway in [&one, &two] {
        assert_revoked(&fx.client.get(&runway.url("/deploy/x"), Some(&first)).await);
        assert_eq!(fx.status(runway, "/deploy/x", &second).await, 200);
    }
    // A new revocation cannot be shared: refused rather than applied on one replica only.
    let (status, answer) = api(
        one.admin,
        "POST",
        "/revocations",
        &json!({"issuer": "gitlab", "claims": {"pipeline_id": "2"}}).to_string(),
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["field"], "store");
    // Still ready (the known set is in force), and the outage is visible.
    let (status, ready) = eventually("the outage shows in /readyz", Duration::from_secs(12), || async {
        let (status, ready) = two.readyz().await;
        ready["revocations"]["sync_error"].is_string().then_some((status, ready))
    })
    .await;
    assert_eq!(status, 200, "{ready}");
    assert!(two.metric("runway_revocation_sync_errors_total", &[]).await.unwrap_or(0.0) >= 1.0);

    // Redis comes back empty (no persistence): the replicas write back what they know, and new ones propagate.
    redis.restart();
    let recovered = Instant::now();
    let id = eventually("Redis takes revocations again", Duration::from_secs(15), || async {
        let body = json!({"issuer": "gitlab", "claims": {"pipeline_id": "2"}}).to_string();
        let (status, answer) = api(one.admin, "POST", "/revocations", &body).await;
        (status == 201).then(|| answer["id"].as_str().unwrap_or_default().to_string())
    })
    .await;
    until_status(&fx, &two, &second, 401, Duration::from_secs(15)).await;
    eprintln!(
        "after Redis recovery a new revocation reached the other replica {:?} after the restart",
        recovered.elapsed()
    );
    assert_revoked(&fx.client.get(&two.url("/deploy/x"), Some(&first)).await);
    let (_, listed) = api(two.admin, "GET", "/revocations", "").await;
    let ids: Vec<&str> =
        listed["revocations"].as_array().map_or(vec![], |l| l.iter().filter_map(|r| r["id"].as_str()).collect());
    assert_eq!(ids.len(), 2, "the known one was written back beside the new one ({id}): {listed}");
    let (_, ready) = two.readyz().await;
    assert_eq!(ready["revocations"]["sync_error"], Value::Null, "{ready}");
}

#[tokio::test]
async fn a_new_replica_reports_ready_only_once_it_has_the_set() {
    let Some(mut redis) = TestRedis::start() else { return };
    let fx = fixture().await;
    let one = fx.runway(&redis_block(&redis)).await;
    let bad = fx.token(99);
    revoke(one.admin, json!({"issuer": "gitlab", "claims": {"pipeline_id": "99"}})).await;

    // A replica starting now is ready with the revocation already in force.
    let two = Runway::start(&fx.b.pki, &fx.config(&redis_block(&redis))).await;
    two.wait_ready().await;
    assert_revoked(&fx.client.get(&two.url("/deploy/x"), Some(&bad)).await);

    // One that starts while Redis is down is not ready until it could load the set.
    redis.stop();
    let three = Runway::start(&fx.b.pki, &fx.config(&redis_block(&redis))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, ready) = three.readyz().await;
    assert_eq!(status, 503, "{ready}");
    let missing = ready["missing"].to_string();
    assert!(missing.contains("revocations: not loaded"), "{ready}");
    // Redis came back empty. The replicas that knew the set write it back (at their next sync, within 5 s);
    // the new one, which never knew it, must not mark the empty set as the truth.
    redis.restart();
    three.wait_ready().await;
    until_status(&fx, &three, &bad, 401, Duration::from_secs(7)).await;
    assert_revoked(&fx.client.get(&one.url("/deploy/x"), Some(&bad)).await);
    assert_revoked(&fx.client.get(&two.url("/deploy/x"), Some(&bad)).await);
}

#[tokio::test]
async fn the_revocation_api_needs_the_admin_token_and_names_the_bad_field() {
    let fx = fixture().await;
    let runway = fx.runway("").await;
    let body = json!({"issuer": "gitlab", "claims": {"pipeline_id": "1"}}).to_string();
    for (method, path) in [("POST", "/revocations"), ("GET", "/revocations"), ("DELETE", "/revocations/x")] {
        for auth in [None, Some("Bearer wrong"), Some("Basic revocation-admin-token")] {
            let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
            let (status, _, text) = admin_send(runway.admin, method, path, &headers, &body).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {text}");
        }
    }
    assert_eq!(runway.metric("runway_revocations_active", &[]).await, Some(0.0));

    let in_an_hour = humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600)).to_string();
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"issuer": "okta", "claims": {"cid": "x"}}), "issuer", "no issuer named \"okta\""),
        (json!({"claims": {"cid": "x"}}), "issuer", "missing field"),
        (json!({"issuer": "gitlab"}), "claims", "at least one condition"),
        (json!({"issuer": "gitlab", "claims": {}}), "claims", "at least one condition"),
        (json!({"issuer": "gitlab", "claims": {"pipeline_id": []}}), "claims.\"pipeline_id\"", "empty list"),
        (json!({"issuer": "gitlab", "claims": {"/bad~pointer": "x"}}), "claims.\"/bad~pointer\"", "~"),
        (json!({"issuer": "gitlab", "claims": {"pipeline_id": 7}}), "claims.pipeline_id", "string"),
        (
            json!({"issuer": "gitlab", "claims": {"a": "b"}, "expires": "2020-01-01T00:00:00Z"}),
            "expires",
            "in the past",
        ),
        (json!({"issuer": "gitlab", "claims": {"a": "b"}, "expires": "soon"}), "expires", "neither"),
        (json!({"issuer": "gitlab", "claims": {"a": "b"}, "expire": in_an_hour}), "expire", "unknown field"),
        (json!({"issuer": "gitlab", "claims": {"a": "b"}, "reason": "a\u{7}b"}), "reason", "control"),
    ];
    for (body, field, says) in cases {
        let (status, answer) = api(runway.admin, "POST", "/revocations", &body.to_string()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains(says)), "{body}: {answer}");
    }
    let (status, answer) = api(runway.admin, "POST", "/revocations", "{not json").await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("body")), "{answer}");
    let (status, _, _) =
        admin_send(runway.admin, "PUT", "/revocations", &[("Authorization", "Bearer revocation-admin-token")], "")
            .await;
    assert_eq!(status, 405);
    assert_eq!(api(runway.admin, "GET", "/revocations", "").await.1["revocations"], json!([]), "nothing was added");
}

fn runway_cli(args: &[&str], token_file: Option<&std::path::Path>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runway"));
    command.args(args).env_remove("RUNWAY_ADMIN_TOKEN").env_remove("RUNWAY_ADMIN_URL");
    if let Some(file) = token_file {
        command.arg("--token-file").arg(file);
    }
    command.output().unwrap_or_else(|e| panic!("running runway: {e}"))
}

#[tokio::test]
async fn runway_revoke_list_and_delete_drive_the_api() {
    let fx = fixture().await;
    let runway = fx.runway("").await;
    let admin = format!("http://{}", runway.admin);
    let bad = fx.token(5);
    let file = fx.token_file.clone();
    let out = tokio::task::spawn_blocking({
        let (admin, file) = (admin.clone(), file.clone());
        move || {
            runway_cli(
                &[
                    "revoke",
                    "--admin",
                    &admin,
                    "--issuer",
                    "gitlab",
                    "--claim",
                    "pipeline_id=5",
                    "--claim",
                    "pipeline_id=6",
                    "--reason",
                    "incident 42",
                    "--by",
                    "alice",
                    "--expires",
                    "30m",
                ],
                Some(&file),
            )
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer["claims"], json!({"pipeline_id": ["5", "6"]}));
    assert_eq!((answer["reason"].as_str(), answer["revoked_by"].as_str()), (Some("incident 42"), Some("alice")));
    let id = answer["id"].as_str().unwrap_or_default().to_string();
    assert_revoked(&fx.client.get(&runway.url("/deploy/x"), Some(&bad)).await);

    let run = |args: Vec<String>, with_token: bool| {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            runway_cli(&args, with_token.then_some(file.as_path()))
        })
    };
    let list = run(vec!["revocations".into(), "list".into(), "--admin".into(), admin.clone()], true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
    // Refused: wrong token (exit 1), unknown issuer (exit 1, names the field), bad argument (exit 2).
    let mut env_token = std::process::Command::new(env!("CARGO_BIN_EXE_runway"));
    env_token.args(["revocations", "list", "--admin", &admin]).env("RUNWAY_ADMIN_TOKEN", "wrong");
    let wrong = tokio::task::spawn_blocking(move || env_token.output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wrong.status.code(), Some(1), "{}", String::from_utf8_lossy(&wrong.stderr));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
    let unknown = run(
        vec![
            "revoke".into(),
            "--admin".into(),
            admin.clone(),
            "--issuer".into(),
            "nope".into(),
            "--claim".into(),
            "a=b".into(),
        ],
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("issuer: no issuer named \"nope\""),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let usage = run(
        vec![
            "revoke".into(),
            "--admin".into(),
            admin.clone(),
            "--issuer".into(),
            "gitlab".into(),
            "--claim".into(),
            "no-equals".into(),
        ],
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("NAME=PATTERN"));

    let delete = run(vec!["revocations".into(), "delete".into(), "--admin".into(), admin.clone(), id.clone()], true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(delete.status.success(), "{}", String::from_utf8_lossy(&delete.stderr));
    assert_eq!(fx.status(&runway, "/deploy/x", &bad).await, 200);
    let again = run(vec!["revocations".into(), "delete".into(), "--admin".into(), admin.clone(), id], true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.status.code(), Some(1), "a second delete finds nothing");
}

#[tokio::test]
async fn explain_reports_a_matching_revocation_from_the_shared_store() {
    let Some(redis) = TestRedis::start() else { return };
    let fx = fixture().await;
    let runway = fx.runway(&redis_block(&redis)).await;
    let (bad, good) = (fx.token(31), fx.token(32));
    let id = revoke(runway.admin, json!({"issuer": "gitlab", "claims": {"pipeline_id": "31"}, "reason": "leak"})).await;
    let config = runway.config_path.clone();
    let url = runway.url("/deploy/x");
    let explain = move |token: String| {
        let (config, url) = (config.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runway"));
            command.arg("explain").arg("-c").arg(&config).args(["--method", "GET", "--url", &url, "--token", &token]);
            command.output().unwrap_or_else(|e| panic!("running runway explain: {e}"))
        })
    };
    let out = explain(bad).await.unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("revocations: 1 in force (loaded from Redis)"), "{stdout}");
    assert!(stdout.contains(&format!("revoked:   revocation {id}")) && stdout.contains("\"leak\""), "{stdout}");
    assert!(stdout.contains("token revoked"), "{stdout}");
    let out = explain(good).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}
