//! Key lifecycle against the fake IdP: discovery, static keys, rotation, removal, the unknown-kid refetch
//! limits, IdP outages, `Cache-Control: max-age`, and readiness.

use std::time::{Duration, Instant};

use crate::support::*;
use futures_util::future::join_all;
use serde_json::json;

const AUD: &str = "https://deploy.example.com";
const UNKNOWN_KEY: &str = "token is signed with a key this issuer does not publish";

/// PKI, upstream, client; Runways are started per test with [`Env::runway`].
struct Env {
    pki: Pki,
    upstream: EchoUpstream,
    client: TestClient,
}

impl Env {
    async fn new() -> Env {
        let pki = Pki::generate();
        let upstream = EchoUpstream::start(&pki).await;
        let client = TestClient::new(&pki);
        Env { pki, upstream, client }
    }

    /// Runway with one gitlab issuer (`extra` appended to its block) and a route `/` open to it.
    async fn runway(&self, issuer: &str, extra: &str) -> Runway {
        let config = format!(
            "{}{}{}",
            base_config(&self.pki, &self.upstream.url()),
            issuer_block("gitlab", "gitlab", issuer, AUD, extra),
            open_route("all", "/", "gitlab"),
        );
        Runway::start(&self.pki, &config).await
    }

    async fn call(&self, runway: &Runway, token: &str) -> TestResponse {
        self.client.get(&runway.url("/x"), Some(token)).await
    }

    /// Expects the token to be forwarded.
    async fn accepted(&self, runway: &Runway, token: &str) {
        let before = self.upstream.requests();
        let res = self.call(runway, token).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(self.upstream.requests(), before + 1);
    }

    /// Expects a 401 for an unknown key, with nothing forwarded.
    async fn unknown_key(&self, runway: &Runway, token: &str) {
        let before = self.upstream.requests();
        let res = self.call(runway, token).await;
        assert_unknown_key(&res);
        assert_eq!(self.upstream.requests(), before);
    }
}

fn assert_unknown_key(res: &TestResponse) {
    assert_eq!(res.status, 401, "{}", res.text());
    assert_eq!(
        res.header("www-authenticate"),
        Some(format!("Bearer realm=\"runway\", error=\"invalid_token\", error_description=\"{UNKNOWN_KEY}\""))
    );
    assert_eq!(res.json()["detail"], UNKNOWN_KEY);
}

fn token(key: &SigningKey, idp: &TestIdp) -> String {
    key.mint(&claims(&idp.issuer(), AUD, json!({})))
}

/// A token for `idp`'s issuer, signed by `key` but naming a fresh random kid.
fn random_kid_token(key: &SigningKey, idp: &TestIdp) -> String {
    let header = json!({"alg": "RS256", "kid": uuid::Uuid::new_v4().to_string(), "typ": "JWT"});
    key.sign_with_header(&header, &claims(&idp.issuer(), AUD, json!({})))
}

#[tokio::test]
async fn discovery_is_used_by_default() {
    let env = Env::new().await;
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let runway = env.runway(&idp.issuer(), "").await;
    runway.wait_ready().await;
    assert!(idp.discovery_fetches() >= 1, "the discovery document was fetched");
    assert!(idp.jwks_fetches() >= 1, "the discovered jwks_uri was fetched");
    env.accepted(&runway, &token(&key, &idp)).await;
    let (status, body) = runway.readyz().await;
    assert_eq!((status, &body["ready"], &body["missing"]), (200, &json!(true), &json!([])), "{body}");
    assert_eq!(body["revocations"]["store"], "memory", "{body}");
}

#[tokio::test]
async fn configured_jwks_uri_skips_discovery() {
    let env = Env::new().await;
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let runway = env.runway(&idp.issuer(), &format!("jwks_uri = \"{}\"", idp.jwks_uri())).await;
    runway.wait_ready().await;
    env.accepted(&runway, &token(&key, &idp)).await;
    assert!(idp.jwks_fetches() >= 1);
    assert_eq!(idp.discovery_fetches(), 0, "jwks_uri is configured: no discovery");
}

#[tokio::test]
async fn jwks_file_works_without_an_idp() {
    let env = Env::new().await;
    let key = SigningKey::rsa("k1");
    let file = env.pki.write_file("gitlab-jwks.json", jwks(&[&key]).to_string().as_bytes());
    // An https issuer nobody serves: only the file can provide keys.
    let issuer = "https://gitlab.invalid";
    let runway = env.runway(issuer, &format!("jwks_file = \"{}\"", file.display())).await;
    runway.wait_ready().await;
    env.accepted(&runway, &key.mint(&claims(issuer, AUD, json!({})))).await;
    // A kid the file does not hold is unknown (and there is nothing to refetch).
    let other = SigningKey::rsa("k2");
    env.unknown_key(&runway, &other.mint(&claims(issuer, AUD, json!({})))).await;
}

#[tokio::test]
async fn rotated_key_is_accepted_at_once() {
    let env = Env::new().await;
    let k1 = SigningKey::rsa("k1");
    let k2 = SigningKey::rsa("k2");
    let idp = TestIdp::start(jwks(&[&k1])).await;
    let runway = env.runway(&idp.issuer(), "refresh_interval = \"1h\"\nkid_refetch_interval = \"300ms\"").await;
    runway.wait_ready().await;
    env.accepted(&runway, &token(&k1, &idp)).await;
    // The initial load counts against the refetch interval: let it pass.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = idp.jwks_fetches();
    idp.set_jwks(jwks(&[&k1, &k2]));
    env.accepted(&runway, &token(&k2, &idp)).await;
    assert_eq!(idp.jwks_fetches(), before + 1, "the unknown kid triggered exactly one refetch");
    env.accepted(&runway, &token(&k1, &idp)).await;
    env.accepted(&runway, &token(&k2, &idp)).await;
    assert_eq!(idp.jwks_fetches(), before + 1, "known kids never refetch");
}

#[tokio::test]
async fn removed_key_stops_being_accepted_after_the_next_refresh() {
    let env = Env::new().await;
    let k1 = SigningKey::rsa("k1");
    let k2 = SigningKey::rsa("k2");
    let idp = TestIdp::start(jwks(&[&k1, &k2])).await;
    let runway = env.runway(&idp.issuer(), "refresh_interval = \"1s\"").await;
    runway.wait_ready().await;
    let old = token(&k1, &idp);
    env.accepted(&runway, &old).await;
    let before = idp.jwks_fetches();
    idp.set_jwks(jwks(&[&k2]));
    let started = Instant::now();
    eventually("k1 to be refused", Duration::from_secs(4), || async {
        (env.call(&runway, &old).await.status != 200).then_some(())
    })
    .await;
    assert!(idp.jwks_fetches() > before, "the key went away with a refresh");
    assert!(started.elapsed() < Duration::from_secs(3), "refresh_interval is 1s: {:?}", started.elapsed());
    env.unknown_key(&runway, &old).await;
    env.accepted(&runway, &token(&k2, &idp)).await;
}

#[tokio::test]
async fn unknown_kid_flood_is_rate_limited() {
    let env = Env::new().await;
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let runway = env.runway(&idp.issuer(), "refresh_interval = \"1h\"\nkid_refetch_interval = \"10s\"").await;
    runway.wait_ready().await;
    let client = TestClient::http2(&env.pki);
    let before = idp.jwks_fetches() + idp.discovery_fetches();
    let url = runway.url("/x");
    let attacker = SigningKey::rsa("attacker");
    for _batch in 0..4 {
        let tokens: Vec<String> = (0..50).map(|_| random_kid_token(&attacker, &idp)).collect();
        let responses = join_all(tokens.iter().map(|t| client.get(&url, Some(t)))).await;
        for res in &responses {
            assert_unknown_key(res);
        }
    }
    let grew = idp.jwks_fetches() + idp.discovery_fetches() - before;
    assert!(grew <= 1, "200 random kids within kid_refetch_interval made {grew} fetches");
    assert_eq!(env.upstream.requests(), 0);
    // Known keys are unaffected.
    env.accepted(&runway, &token(&key, &idp)).await;
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_refetch() {
    let env = Env::new().await;
    let k1 = SigningKey::rsa("k1");
    let k2 = SigningKey::rsa("k2");
    let idp = TestIdp::start(jwks(&[&k1])).await;
    let runway = env.runway(&idp.issuer(), "refresh_interval = \"1h\"\nkid_refetch_interval = \"1s\"").await;
    runway.wait_ready().await;
    let client = TestClient::http2(&env.pki);
    let url = runway.url("/x");
    let attacker = SigningKey::rsa("attacker");
    // Interleaved: a new, genuinely published kid, and random kids nobody publishes.
    let tokens: Vec<(bool, String)> = (0..100)
        .map(|i| if i % 2 == 0 { (true, token(&k2, &idp)) } else { (false, random_kid_token(&attacker, &idp)) })
        .collect();
    // Warm the h2 connection up so the flood arrives at once.
    assert_eq!(client.get(&url, None).await.status, 401);
    // Let the initial load's refetch interval pass; then rotate k2 in and make the IdP slow, so requests pile
    // up behind the one fetch in flight.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    idp.set_jwks(jwks(&[&k1, &k2]));
    idp.set_delay(Duration::from_millis(500));
    let before = idp.jwks_fetches();
    let responses = join_all(tokens.iter().map(|(_, t)| client.get(&url, Some(t)))).await;
    for ((published, _), res) in tokens.iter().zip(&responses) {
        if *published {
            assert_eq!(res.status, 200, "waiters share the refetched keys: {}", res.text());
        } else {
            assert_unknown_key(res);
        }
    }
    assert_eq!(env.upstream.requests(), 50);
    let grew = idp.jwks_fetches() - before;
    assert!((1..=2).contains(&grew), "100 concurrent unknown kids made {grew} JWKS fetches (expected one shared)");
    assert_eq!(idp.discovery_fetches(), 1, "refetches reuse the discovered jwks_uri");
}

#[tokio::test]
async fn known_keys_keep_working_while_the_idp_is_down() {
    let env = Env::new().await;
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let runway = env.runway(&idp.issuer(), "refresh_interval = \"1s\"\nkid_refetch_interval = \"1s\"").await;
    runway.wait_ready().await;
    env.accepted(&runway, &token(&key, &idp)).await;
    idp.set_down(true);
    let attempts = || idp.jwks_fetches() + idp.discovery_fetches();
    let before = attempts();
    // Two failed attempts: the first has certainly been handled by the time the second arrives.
    eventually("two failed refreshes", Duration::from_secs(5), || async { (attempts() >= before + 2).then_some(()) })
        .await;
    env.accepted(&runway, &token(&key, &idp)).await;
    // An unknown kid is still a 401, not a 503.
    env.unknown_key(&runway, &token(&SigningKey::rsa("k9"), &idp)).await;
    assert_eq!(runway.readyz().await.0, 200, "keys once loaded keep the proxy ready");
}

#[tokio::test]
async fn idp_down_since_start_gives_503_until_it_recovers() {
    let env = Env::new().await;
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    idp.set_down(true);
    let runway = env.runway(&idp.issuer(), "").await;
    let problem = eventually("/readyz to report the failed fetch", Duration::from_secs(5), || async {
        runway.readyz_problem().await.filter(|p| p.contains("answered 503"))
    })
    .await;
    assert!(problem.starts_with("issuer \"gitlab\": no usable keys"), "{problem}");

    let token = token(&key, &idp);
    let res = env.call(&runway, &token).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.header("content-type").as_deref(), Some("application/problem+json"));
    assert!(res.header("www-authenticate").is_none());
    assert!(res.header("retry-after").is_some());
    let body = res.json();
    assert_eq!(body["status"], 503);
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
    assert!(body["detail"].as_str().unwrap_or_default().contains("gitlab"), "{body}");
    assert!(!res.text().contains(&token));
    assert_eq!(env.upstream.requests(), 0);

    // Back up: the background retry (first backoff ~2 s) loads the keys.
    idp.set_down(false);
    eventually("/readyz to turn 200", Duration::from_secs(10), || async {
        (runway.readyz().await.0 == 200).then_some(())
    })
    .await;
    env.accepted(&runway, &token).await;
}

#[tokio::test]
async fn cache_control_max_age_drives_refreshes() {
    let env = Env::new().await;
    let key = SigningKey::rsa("k1");
    let cached = TestIdp::start(jwks(&[&key])).await;
    cached.set_cache_control(Some("max-age=1"));
    let plain = TestIdp::start(jwks(&[&key])).await;
    let extra = "refresh_interval = \"1h\"\nkid_refetch_interval = \"1s\"";
    let with_max_age = env.runway(&cached.issuer(), extra).await;
    let without = env.runway(&plain.issuer(), extra).await;
    with_max_age.wait_ready().await;
    without.wait_ready().await;
    let started = Instant::now();
    let (cached_before, plain_before) = (cached.jwks_fetches(), plain.jwks_fetches());
    eventually("max-age=1 to cause refetches", Duration::from_secs(4), || async {
        (cached.jwks_fetches() >= cached_before + 2).then_some(())
    })
    .await;
    if let Some(rest) = Duration::from_millis(2500).checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    assert_eq!(plain.jwks_fetches(), plain_before, "no max-age and refresh_interval = 1h: no refetch");
    env.accepted(&with_max_age, &token(&key, &cached)).await;
    env.accepted(&without, &token(&key, &plain)).await;
}

#[tokio::test]
async fn max_age_with_a_refresh_interval_below_the_kid_refetch_interval() {
    // refresh_interval = 1s with the default kid_refetch_interval (10s): the refresh period must stay 1s
    // whatever max-age the IdP sends.
    let env = Env::new().await;
    let k1 = SigningKey::rsa("k1");
    let k2 = SigningKey::rsa("k2");
    let idp = TestIdp::start(jwks(&[&k1, &k2])).await;
    idp.set_cache_control(Some("max-age=30"));
    let runway = env.runway(&idp.issuer(), "refresh_interval = \"1s\"").await;
    runway.wait_ready().await;
    // The first load already carried max-age: one more fetch proves the refresher survived it.
    let before = idp.jwks_fetches();
    eventually("a periodic refresh", Duration::from_secs(4), || async { (idp.jwks_fetches() > before).then_some(()) })
        .await;
    let old = token(&k1, &idp);
    env.accepted(&runway, &old).await;
    idp.set_jwks(jwks(&[&k2]));
    eventually("k1 to be refused", Duration::from_secs(4), || async {
        (env.call(&runway, &old).await.status != 200).then_some(())
    })
    .await;
    env.unknown_key(&runway, &old).await;
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let env = Env::new().await;
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    // Same discovery URL, but the IdP's document says "http://127.0.0.1:PORT", not ".../".
    let configured = format!("{}/", idp.issuer());
    let runway = env.runway(&configured, "").await;
    let problem = eventually("/readyz to name the mismatch", Duration::from_secs(5), || async {
        runway.readyz_problem().await.filter(|p| p.contains("discovery names issuer"))
    })
    .await;
    assert!(problem.starts_with("issuer \"gitlab\": no usable keys"), "{problem}");
    assert!(problem.contains(&idp.issuer()) && problem.contains(&configured), "{problem}");
    // Tokens for the configured issuer: keys never loaded.
    let res = env.call(&runway, &key.mint(&claims(&configured, AUD, json!({})))).await;
    assert_eq!(res.status, 503, "{}", res.text());
    // Tokens claiming what the IdP calls itself: not a configured issuer.
    let res = env.call(&runway, &token(&key, &idp)).await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(idp.discovery_fetches() >= 1);
    assert_eq!(idp.jwks_fetches(), 0, "the JWKS of a mismatched discovery document is never fetched");
    assert_eq!(env.upstream.requests(), 0);
}
