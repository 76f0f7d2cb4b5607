//! `one_time` routes (contract sections 2 and 10): a token's jti passes once per route, in memory for one
//! replica and in a real Redis (`redis-server` on a loopback port) shared by several; only an allowed
//! request uses a jti up; Redis down means 503 on one_time routes only, and recovery when it returns.

use std::time::Duration;

use crate::support::redis::RedisAuth;
use crate::support::*;
use serde_json::{Value, json};

const AUD: &str = "https://deploy.example.com";

const ROUTES: &str = r#"
[[routes]]
name = "release"
path_prefix = "/release"
one_time = true
[[routes.allow]]
issuer = "gitlab"
claims = { environment = "production" }

[[routes]]
name = "release-shadow"
path_prefix = "/shadow"
one_time = true
mode = "report"
[[routes.allow]]
issuer = "gitlab"
claims = { environment = "production" }

[[routes]]
name = "approve"
path_prefix = "/approve"
one_time = true
[[routes.allow]]
issuer = "gitlab"

[[routes]]
name = "status"
path_prefix = "/status"
[[routes.allow]]
issuer = "gitlab"
"#;

struct Fx {
    pki: Pki,
    idp: TestIdp,
    key: SigningKey,
    _upstream: EchoUpstream,
    client: TestClient,
}

async fn fixture() -> Fx {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let client = TestClient::new(&pki);
    Fx { pki, idp, key, _upstream: upstream, client }
}

impl Fx {
    fn config(&self, replay: &str) -> String {
        format!(
            "{}{}{}{}",
            base_config(&self.pki, &self._upstream.url()),
            issuer_block("gitlab", "gitlab", &self.idp.issuer(), AUD, ""),
            ROUTES,
            replay
        )
    }

    async fn runway(&self, replay: &str) -> Runway {
        let runway = Runway::start(&self.pki, &self.config(replay)).await;
        runway.wait_ready().await;
        runway
    }

    /// Like [`Fx::runway`], for a Redis that cannot be used: without waiting for `/readyz` (with `store = "redis"`
    /// revocations are shared through Redis, and it stays 503 until they are loaded), ready once the route without
    /// `one_time` lets a token through (the issuer's keys are loaded).
    async fn runway_redis_unusable(&self, replay: &str) -> Runway {
        let runway = Runway::start(&self.pki, &self.config(replay)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.client.get(&runway.url("/status"), Some(&self.fresh())).await.status != 200 {
            assert!(tokio::time::Instant::now() < deadline, "runway never served /status");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        runway
    }

    fn token(&self, extra: Value) -> String {
        self.key.mint(&claims(&self.idp.issuer(), AUD, extra))
    }

    fn fresh(&self) -> String {
        self.token(json!({"environment": "production", "jti": uuid::Uuid::new_v4().to_string()}))
    }
}

fn assert_refused(res: &TestResponse, description: &str) {
    assert_eq!(res.status, 401, "{}", res.text());
    let www = res.header("www-authenticate").unwrap_or_default();
    assert_eq!(www, format!("Bearer realm=\"runway\", error=\"invalid_token\", error_description=\"{description}\""));
    assert_eq!(res.json()["detail"], description);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test]
async fn memory_store_lets_a_jti_through_once_per_route() {
    let fx = fixture().await;
    let runway = fx.runway("").await;
    let token = fx.fresh();
    let first = fx.client.get(&runway.url("/release/1"), Some(&token)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["headers"]["x-runway-subject"], json!(["user-1"]));
    assert_refused(&fx.client.get(&runway.url("/release/1"), Some(&token)).await, "token already used");
    assert_refused(&fx.client.get(&runway.url("/release/other"), Some(&token)).await, "token already used");
    // The same jti on another one_time route is another key; a route without one_time does not care.
    assert_eq!(fx.client.get(&runway.url("/approve"), Some(&token)).await.status, 200);
    assert_refused(&fx.client.get(&runway.url("/approve"), Some(&token)).await, "token already used");
    for _ in 0..3 {
        assert_eq!(fx.client.get(&runway.url("/status"), Some(&token)).await.status, 200);
    }

    let (_, metrics) = runway.admin_get("/metrics").await;
    assert_eq!(metric(&metrics, "runway_replay_refused_total"), 3.0);
    assert_eq!(metric(&metrics, "runway_replay_store_errors_total"), 0.0);
    assert!(
        metrics.contains("runway_auth_decisions_total{decision=\"deny\",issuer=\"gitlab\",reason=\"replayed\"} 3"),
        "{metrics}"
    );
    runway.stop().await;
    let replayed: Vec<Value> =
        audit_lines(&fx.pki).into_iter().filter(|e| e["reason"] == "replayed").collect::<Vec<_>>();
    assert_eq!(replayed.len(), 3);
    assert_eq!(replayed[0]["decision"], "deny");
    assert_eq!(replayed[0]["status"], 401);
    assert_eq!(replayed[0]["subject"], "user-1");
}

#[tokio::test]
async fn a_token_without_jti_is_refused_on_one_time_routes_only() {
    let fx = fixture().await;
    let runway = fx.runway("[replay]\nstore = \"memory\"\n").await;
    let token = fx.token(json!({"environment": "production"}));
    assert_refused(&fx.client.get(&runway.url("/release"), Some(&token)).await, "token has no jti");
    let empty = fx.token(json!({"environment": "production", "jti": ""}));
    assert_refused(&fx.client.get(&runway.url("/release"), Some(&empty)).await, "token has no jti");
    let number = fx.token(json!({"environment": "production", "jti": 42}));
    assert_refused(&fx.client.get(&runway.url("/release"), Some(&number)).await, "token has no jti");
    assert_eq!(fx.client.get(&runway.url("/status"), Some(&token)).await.status, 200);
    // Report mode: a would_deny, forwarded without identity.
    let shadow = fx.client.get(&runway.url("/shadow"), Some(&token)).await;
    assert_eq!(shadow.status, 200);
    assert_eq!(shadow.json()["headers"]["x-runway-subject"], Value::Null);
    runway.stop().await;
    let events = audit_lines(&fx.pki);
    assert_eq!(events.iter().filter(|e| e["reason"] == "missing_jti").count(), 4, "{events:?}");
}

#[tokio::test]
async fn only_an_allowed_request_uses_the_jti_up() {
    let fx = fixture().await;
    let runway = fx.runway("").await;
    let jti = uuid::Uuid::new_v4().to_string();
    let staging = fx.token(json!({"environment": "staging", "jti": jti}));
    let production = fx.token(json!({"environment": "production", "jti": jti}));

    // Denied by policy (403) twice: nothing recorded.
    for _ in 0..2 {
        assert_eq!(fx.client.get(&runway.url("/release"), Some(&staging)).await.status, 403);
    }
    // A missing token and a bad signature are refused before any jti is looked at.
    assert_eq!(fx.client.get(&runway.url("/release"), None).await.status, 401);
    // The same jti, now allowed: passes once.
    assert_eq!(fx.client.get(&runway.url("/release"), Some(&production)).await.status, 200);
    assert_refused(&fx.client.get(&runway.url("/release"), Some(&production)).await, "token already used");

    // Report mode: a would_deny (policy) uses nothing up; the allowed request does; its replay is a
    // would_deny forwarded without identity.
    let jti = uuid::Uuid::new_v4().to_string();
    let staging = fx.token(json!({"environment": "staging", "jti": jti}));
    let production = fx.token(json!({"environment": "production", "jti": jti}));
    let denied = fx.client.get(&runway.url("/shadow"), Some(&staging)).await;
    assert_eq!(denied.status, 200);
    assert_eq!(denied.json()["headers"]["x-runway-subject"], Value::Null);
    let allowed = fx.client.get(&runway.url("/shadow"), Some(&production)).await;
    assert_eq!(allowed.json()["headers"]["x-runway-subject"], json!(["user-1"]));
    let replayed = fx.client.get(&runway.url("/shadow"), Some(&production)).await;
    assert_eq!(replayed.status, 200, "report mode forwards anyway");
    assert_eq!(replayed.json()["headers"]["x-runway-subject"], Value::Null);
    assert_eq!(replayed.json()["headers"]["x-runway-route"], json!(["release-shadow"]));
    runway.stop().await;
    let shadow: Vec<Value> = audit_lines(&fx.pki).into_iter().filter(|e| e["route"] == "release-shadow").collect();
    let decisions: Vec<(&str, &str)> =
        shadow.iter().map(|e| (e["decision"].as_str().unwrap_or("?"), e["reason"].as_str().unwrap_or("-"))).collect();
    assert_eq!(decisions, vec![("would_deny", "policy"), ("allow", "-"), ("would_deny", "replayed")]);
}

fn redis_block(redis: &TestRedis) -> String {
    format!("\n[replay]\nstore = \"redis\"\nredis_url = \"{}\"\n", redis.url())
}

#[tokio::test]
async fn two_replicas_sharing_redis_refuse_a_token_replayed_from_one_to_the_other() {
    let Some(redis) = TestRedis::start() else { return };
    let fx = fixture().await;
    let a = fx.runway(&redis_block(&redis)).await;
    let b = fx.runway(&redis_block(&redis)).await;
    let token = fx.fresh();
    assert_eq!(fx.client.get(&a.url("/release"), Some(&token)).await.status, 200);
    assert_refused(&fx.client.get(&b.url("/release"), Some(&token)).await, "token already used");
    assert_refused(&fx.client.get(&a.url("/release"), Some(&token)).await, "token already used");

    // Concurrent first uses through both replicas: exactly one passes.
    let token = fx.fresh();
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let url = if i % 2 == 0 { a.url("/approve") } else { b.url("/approve") };
            let client = TestClient::new(&fx.pki);
            let token = token.clone();
            tokio::spawn(async move { client.get(&url, Some(&token)).await.status.as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap_or_else(|e| panic!("{e}")));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 401, 401, 401, 401, 401, 401, 401]);
    // One key per recorded use: route + issuer + jti, hashed (no token material in Redis).
    assert_eq!(redis.replay_keys(), 2);
}

#[tokio::test]
async fn redis_down_fails_one_time_routes_closed_and_recovers_when_it_returns() {
    let Some(mut redis) = TestRedis::start() else { return };
    let fx = fixture().await;
    let runway = fx.runway(&redis_block(&redis)).await;
    assert_eq!(fx.client.get(&runway.url("/release"), Some(&fx.fresh())).await.status, 200);

    redis.stop();
    let token = fx.fresh();
    let started = std::time::Instant::now();
    let down = fx.client.get(&runway.url("/release"), Some(&token)).await;
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(started.elapsed() < Duration::from_secs(3), "a Redis outage must fail fast: {:?}", started.elapsed());
    assert!(down.header("retry-after").is_some());
    assert!(down.json()["detail"].as_str().unwrap_or_default().starts_with("the replay store is unavailable"));
    assert_eq!(fx.client.get(&runway.url("/approve"), Some(&fx.fresh())).await.status, 503);
    // Routes without one_time do not depend on Redis.
    for _ in 0..3 {
        assert_eq!(fx.client.get(&runway.url("/status"), Some(&token)).await.status, 200);
    }
    let (_, metrics) = runway.admin_get("/metrics").await;
    assert!(metric(&metrics, "runway_replay_store_errors_total") >= 2.0, "{metrics}");
    let (ready, _) = runway.admin_get("/readyz").await;
    assert_eq!(ready, 200, "a Redis outage does not take the replica out of the load balancer");

    redis.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        // The token refused with 503 was not used up: it passes once Redis is back.
        let res = fx.client.get(&runway.url("/release"), Some(&token)).await;
        if res.status == 200 {
            break;
        }
        assert_eq!(res.status, 503, "{}", res.text());
        assert!(tokio::time::Instant::now() < deadline, "no recovery after Redis came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_refused(&fx.client.get(&runway.url("/release"), Some(&token)).await, "token already used");
    runway.stop().await;
    let unavailable = audit_lines(&fx.pki).into_iter().filter(|e| e["reason"] == "replay_store_unavailable").count();
    assert!(unavailable >= 2);
}

#[tokio::test]
async fn runway_starts_while_redis_is_down() {
    let Some(mut redis) = TestRedis::start() else { return };
    redis.stop();
    let fx = fixture().await;
    let runway = fx.runway_redis_unusable(&redis_block(&redis)).await;
    assert_eq!(fx.client.get(&runway.url("/release"), Some(&fx.fresh())).await.status, 503);
    assert_eq!(fx.client.get(&runway.url("/status"), Some(&fx.fresh())).await.status, 200);
    redis.restart();
    let token = fx.fresh();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while fx.client.get(&runway.url("/release"), Some(&token)).await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "no recovery after Redis came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_before_the_jti_is_used() {
    let fx = fixture().await;
    let config = fx.config("").replace("\n[admin]", "max_body_bytes = 16\n\n[admin]");
    let runway = Runway::start(&fx.pki, &config).await;
    runway.wait_ready().await;
    let token = fx.fresh();
    let big = http::Request::post(runway.url("/release"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; 64])))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fx.client.send(big).await.status, 413);
    assert_eq!(fx.client.get(&runway.url("/release"), Some(&token)).await.status, 200);
    assert_refused(&fx.client.get(&runway.url("/release"), Some(&token)).await, "token already used");
}

// ---------------------------------------------------------------------------------------------------------
// Redis over TLS (contract section 13): rediss://, redis_ca, a password in the URL or in redis_password_file,
// against a real redis-server that speaks TLS only.
// ---------------------------------------------------------------------------------------------------------

/// `[replay]` for `url` (written as is), with extra keys (`redis_ca = ...`, `redis_password_file = ...`).
fn redis_tls_block(url: &str, extra: &str) -> String {
    format!("\n[replay]\nstore = \"redis\"\nredis_url = \"{url}\"\n{extra}\n")
}

fn ca_key(path: &std::path::Path) -> String {
    format!("redis_ca = \"{}\"\n", path.display())
}

fn password_file_key(path: &std::path::Path) -> String {
    format!("redis_password_file = \"{}\"\n", path.display())
}

/// A first use passes, its replay is refused, and the use is one key in Redis.
async fn assert_one_time_works(fx: &Fx, runway: &Runway, redis: &TestRedis) {
    let before = redis.replay_keys();
    let token = fx.fresh();
    let first = fx.client.get(&runway.url("/release"), Some(&token)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_refused(&fx.client.get(&runway.url("/release"), Some(&token)).await, "token already used");
    assert_eq!(redis.replay_keys(), before + 1, "the use is recorded in this Redis");
}

/// 503 on both one_time routes, fast, saying `cause`; the route without one_time does not care.
async fn assert_fails_closed(fx: &Fx, runway: &Runway, cause: &str) {
    let started = std::time::Instant::now();
    let res = fx.client.get(&runway.url("/release"), Some(&fx.fresh())).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(started.elapsed() < Duration::from_secs(3), "fails fast: {:?}", started.elapsed());
    assert!(res.header("retry-after").is_some());
    let detail = res.json()["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.starts_with("the replay store is unavailable"), "{detail}");
    assert!(detail.contains(cause), "{detail}");
    assert_eq!(fx.client.get(&runway.url("/approve"), Some(&fx.fresh())).await.status, 503);
    for _ in 0..3 {
        assert_eq!(fx.client.get(&runway.url("/status"), Some(&fx.fresh())).await.status, 200);
    }
}

#[tokio::test]
async fn rediss_with_the_default_users_password_in_the_url() {
    let fx = fixture().await;
    let Some(redis) = TestRedis::start_tls(&fx.pki, RedisAuth::Password("tls-s3cret")) else { return };
    // `:password@`, no user: the default user.
    let url = redis.url_with(":tls-s3cret@");
    assert!(url.starts_with("rediss://"));
    let runway = fx.runway(&redis_tls_block(&url, &ca_key(&fx.pki.ca_pem))).await;
    assert_one_time_works(&fx, &runway, &redis).await;
    // A second replica on the same Redis sees the use.
    let other = fx.runway(&redis_tls_block(&url, &ca_key(&fx.pki.ca_pem))).await;
    let token = fx.fresh();
    assert_eq!(fx.client.get(&runway.url("/approve"), Some(&token)).await.status, 200);
    assert_refused(&fx.client.get(&other.url("/approve"), Some(&token)).await, "token already used");
}

#[tokio::test]
async fn rediss_with_an_acl_user_and_password_in_the_url() {
    let fx = fixture().await;
    let Some(redis) = TestRedis::start_tls(&fx.pki, RedisAuth::User("runway", "user-pw")) else { return };
    let runway = fx.runway(&redis_tls_block(&redis.url_with("runway:user-pw@"), &ca_key(&fx.pki.ca_pem))).await;
    assert_one_time_works(&fx, &runway, &redis).await;
}

#[tokio::test]
async fn rediss_with_the_password_in_redis_password_file() {
    let fx = fixture().await;
    // The default user: the file's password, surrounding whitespace (echo's newline) ignored.
    let Some(redis) = TestRedis::start_tls(&fx.pki, RedisAuth::Password("from-a-file")) else { return };
    let file = fx.pki.write_file("redis-password", b"  from-a-file\n");
    let extra = format!("{}{}", ca_key(&fx.pki.ca_pem), password_file_key(&file));
    let runway = fx.runway(&redis_tls_block(&redis.url(), &extra)).await;
    assert_one_time_works(&fx, &runway, &redis).await;

    // An ACL user named in the URL, its password in the file.
    let Some(users) = TestRedis::start_tls(&fx.pki, RedisAuth::User("runway", "user-file-pw")) else { return };
    let file = fx.pki.write_file("redis-user-password", b"user-file-pw\n");
    let extra = format!("{}{}", ca_key(&fx.pki.ca_pem), password_file_key(&file));
    let runway = fx.runway(&redis_tls_block(&users.url_with("runway@"), &extra)).await;
    assert_one_time_works(&fx, &runway, &users).await;
}

#[tokio::test]
async fn an_untrusted_redis_certificate_fails_one_time_routes_closed() {
    let fx = fixture().await;
    let Some(redis) = TestRedis::start_tls(&fx.pki, RedisAuth::Password("pw")) else { return };
    let url = redis.url_with(":pw@");
    // A CA that did not sign the server's certificate.
    let runway = fx.runway_redis_unusable(&redis_tls_block(&url, &ca_key(&fx.pki.rogue_ca_pem))).await;
    assert_fails_closed(&fx, &runway, "invalid peer certificate: UnknownIssuer").await;
    let (_, metrics) = runway.admin_get("/metrics").await;
    assert!(metric(&metrics, "runway_replay_store_errors_total") >= 2.0, "{metrics}");
    // No redis_ca: the system roots, which do not hold the test CA.
    let runway = fx.runway_redis_unusable(&redis_tls_block(&url, "")).await;
    assert_fails_closed(&fx, &runway, "invalid peer certificate: UnknownIssuer").await;
    assert_eq!(redis.replay_keys(), 0, "nothing was recorded");
}

#[tokio::test]
async fn a_wrong_redis_password_fails_one_time_routes_closed_until_the_file_holds_the_right_one() {
    let fx = fixture().await;
    let Some(redis) = TestRedis::start_tls(&fx.pki, RedisAuth::Password("right")) else { return };
    let runway = fx.runway_redis_unusable(&redis_tls_block(&redis.url_with(":wrong@"), &ca_key(&fx.pki.ca_pem))).await;
    assert_fails_closed(&fx, &runway, "Password authentication failed").await;

    // The same through a password file; fixing the file is enough (read again at each connection attempt):
    // no reload, no restart.
    let file = fx.pki.write_file("redis-password", b"wrong\n");
    let extra = format!("{}{}", ca_key(&fx.pki.ca_pem), password_file_key(&file));
    let runway = fx.runway_redis_unusable(&redis_tls_block(&redis.url(), &extra)).await;
    assert_fails_closed(&fx, &runway, "Password authentication failed").await;
    fx.pki.write_file("redis-password", b"right\n");
    let token = fx.fresh();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = fx.client.get(&runway.url("/release"), Some(&token)).await;
        if res.status == 200 {
            break;
        }
        assert_eq!(res.status, 503, "{}", res.text());
        assert!(tokio::time::Instant::now() < deadline, "the corrected password file was never used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_refused(&fx.client.get(&runway.url("/release"), Some(&token)).await, "token already used");
}

/// Rotation: Redis takes a new password (open connections stay logged in), the file is replaced; the next
/// connection (after a failover, an idle timeout, a restart) logs in with the new one. A reload keeps the store
/// (same `[replay]`): nothing breaks, and the file is still read at the next connection.
#[tokio::test]
async fn a_replaced_password_file_is_used_from_the_next_connection() {
    let fx = fixture().await;
    let Some(mut redis) = TestRedis::start_tls(&fx.pki, RedisAuth::Password("old-pw")) else { return };
    let file = fx.pki.write_file("redis-password", b"old-pw\n");
    let extra = format!("{}{}", ca_key(&fx.pki.ca_pem), password_file_key(&file));
    let runway = fx.runway(&redis_tls_block(&redis.url(), &extra)).await;
    assert_one_time_works(&fx, &runway, &redis).await;

    redis.set_password("new-pw");
    fx.pki.write_file("redis-password", b"new-pw\n");
    assert_eq!(fx.client.get(&runway.url("/release"), Some(&fx.fresh())).await.status, 200, "still connected");
    let (status, body) = runway.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fx.client.get(&runway.url("/release"), Some(&fx.fresh())).await.status, 200, "reload kept it");

    redis.kill_clients();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = fx.client.get(&runway.url("/release"), Some(&fx.fresh())).await;
        if res.status == 200 {
            break;
        }
        assert_eq!(res.status, 503, "{}", res.text());
        assert!(tokio::time::Instant::now() < deadline, "never reconnected with the new password");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_one_time_works(&fx, &runway, &redis).await;
    // A connection Redis closed (idle timeout, failover) costs no request: the check goes again on a new one.
    redis.kill_clients();
    assert_one_time_works(&fx, &runway, &redis).await;
}

/// `runway check` over `[replay]`: reads `redis_ca` and `redis_password_file`, names the key at fault, and
/// connects to nothing.
#[test]
fn check_validates_the_redis_settings_and_files_without_connecting() {
    let pki = Pki::generate();
    // A listener where the URL points: a check that connected would show up in its backlog.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let password = pki.write_file("redis-password", b"pw\n");
    let check = |replay: &str| {
        let config = format!(
            "{}{}{}{}",
            base_config(&pki, "https://127.0.0.1:1"),
            issuer_block("gitlab", "gitlab", "https://gitlab.example.com", AUD, ""),
            ROUTES,
            replay
        );
        let path = pki.write_file("check.toml", config.as_bytes());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runway"))
            .args(["check", "-c"])
            .arg(&path)
            .env_remove("RUNWAY_CONFIG")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let url = format!("rediss://127.0.0.1:{port}/0");
    let good = format!("{}{}", ca_key(&pki.ca_pem), password_file_key(&password));
    assert_eq!(check(&redis_tls_block(&url, &good)), (Some(0), String::new()));
    let user_url = format!("rediss://runway:pw@127.0.0.1:{port}/0");
    assert_eq!(check(&redis_tls_block(&user_url, &ca_key(&pki.ca_pem))), (Some(0), String::new()));

    let missing = pki.dir.path().join("missing.pem");
    let garbage = pki.write_file("garbage.pem", b"not a certificate");
    let empty = pki.write_file("empty-password", b" \n\t\n");
    let refused: Vec<(String, &str, &str)> = vec![
        (redis_tls_block(&url, &ca_key(&missing)), "replay.redis_ca", "missing.pem"),
        (redis_tls_block(&url, &ca_key(&garbage)), "replay.redis_ca", "no CERTIFICATE block found"),
        (
            redis_tls_block(&url, &format!("{}{}", ca_key(&pki.ca_pem), password_file_key(&empty))),
            "replay.redis_password_file",
            "empty",
        ),
        (redis_tls_block(&url, &password_file_key(&missing)), "replay.redis_password_file", "missing.pem"),
        (
            redis_tls_block(&format!("rediss://:pw@127.0.0.1:{port}/0"), &password_file_key(&password)),
            "replay.redis_password_file",
            "holds a password too",
        ),
        (
            redis_tls_block(&format!("redis://127.0.0.1:{port}/0"), &ca_key(&pki.ca_pem)),
            "replay.redis_ca",
            "needs a rediss://",
        ),
        (
            redis_tls_block(&format!("rediss://runway@127.0.0.1:{port}/0"), &ca_key(&pki.ca_pem)),
            "replay.redis_url",
            "names a user but no password",
        ),
        (redis_tls_block(&format!("rediss://127.0.0.1:{port}/#insecure"), ""), "replay.redis_url", "#insecure"),
        (redis_tls_block(&format!("rediss://127.0.0.1:{port}/0"), "redis_ca = \"\"\n"), "replay.redis_ca", "empty"),
    ];
    for (replay, key, reason) in refused {
        let (code, stderr) = check(&replay);
        assert_eq!(code, Some(1), "{replay}\n{stderr}");
        assert!(stderr.starts_with("runway: ") && stderr.contains(key), "names {key}: {stderr}");
        assert!(stderr.contains(reason), "says {reason:?}: {stderr}");
        assert!(!stderr.contains(":pw@"), "never echoes the URL's password: {stderr}");
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("runway check connected to the Redis URL: {other:?}"),
    }
}
