//! `one_time` routes (contract sections 2 and 10): a token's jti passes once per route, in memory for one
//! replica and in a real Redis (`redis-server` on a loopback port) shared by several; only an allowed
//! request uses a jti up; Redis down means 503 on one_time routes only, and recovery when it returns.

use std::time::Duration;

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
    assert_eq!(redis.dbsize(), 2);
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
    let runway = fx.runway(&redis_block(&redis)).await;
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
