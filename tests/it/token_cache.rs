//! The verified-token cache: repeats skip the signature check, but never outlive the token, never survive
//! the withdrawal of the key that verified them, and can be switched off.

use std::time::Duration;

use crate::support::*;
use serde_json::json;

const AUD: &str = "cache";

async fn counters(runway: &Runway) -> (f64, f64) {
    let (_, text) = runway.admin_get("/metrics").await;
    let read = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    (read("runway_token_cache_hits_total "), read("runway_token_cache_misses_total "))
}

async fn start(pki: &Pki, idp: &TestIdp, upstream: &EchoUpstream, server_extra: &str, issuer_extra: &str) -> Runway {
    let config = format!(
        "{}{}{}",
        base_config(pki, &upstream.url()).replace("[admin]", &format!("{server_extra}\n\n[admin]")),
        issuer_block("ci", "oidc", &idp.issuer(), AUD, issuer_extra),
        open_route("all", "/", "ci")
    );
    let runway = Runway::start(pki, &config).await;
    runway.wait_ready().await;
    runway
}

#[tokio::test]
async fn repeats_hit_and_distinct_tokens_miss() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let runway = start(&pki, &idp, &upstream, "", "").await;
    let client = TestClient::new(&pki);
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));
    for _ in 0..5 {
        assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.status, 200);
    }
    assert_eq!(counters(&runway).await, (4.0, 1.0));
    let other = key.mint(&claims(&idp.issuer(), AUD, json!({"sub": "user-2"})));
    let res = client.get(&runway.url("/x"), Some(&other)).await;
    assert_eq!(res.json()["headers"]["x-runway-subject"], json!(["user-2"]), "a different token is a different entry");
    assert_eq!(counters(&runway).await, (4.0, 2.0));
}

#[tokio::test]
async fn a_withdrawn_key_stops_cached_tokens_after_the_next_refresh() {
    let pki = Pki::generate();
    let (k1, k2) = (SigningKey::rsa("k1"), SigningKey::rsa("k2"));
    let idp = TestIdp::start(jwks(&[&k1, &k2])).await;
    let upstream = EchoUpstream::start(&pki).await;
    let runway = start(&pki, &idp, &upstream, "", "refresh_interval = \"1s\"").await;
    let client = TestClient::new(&pki);
    let token = k1.mint(&claims(&idp.issuer(), AUD, json!({})));
    assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.status, 200);
    assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.status, 200);
    assert_eq!(counters(&runway).await.0, 1.0, "cached");
    idp.set_jwks(jwks(&[&k2]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let res = client.get(&runway.url("/x"), Some(&token)).await;
        if res.status == 401 {
            assert!(res.header("www-authenticate").is_some_and(|h| h.contains("error=\"invalid_token\"")));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a token verified by a withdrawn key is still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_expires() {
    let pki = Pki::generate();
    let key = SigningKey::ec("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let upstream = EchoUpstream::start(&pki).await;
    let runway = start(&pki, &idp, &upstream, "", "leeway = \"0s\"").await;
    let client = TestClient::new(&pki);
    let t = now();
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({"iat": t, "exp": t + 2})));
    assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.status, 200);
    assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let res = client.get(&runway.url("/x"), Some(&token)).await;
    assert_eq!(res.status, 401);
    assert!(res.header("www-authenticate").is_some_and(|h| h.contains("expired")));
}

#[tokio::test]
async fn size_zero_disables_the_cache() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let runway = start(&pki, &idp, &upstream, "token_cache_size = 0", "").await;
    let client = TestClient::new(&pki);
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));
    for _ in 0..3 {
        assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.status, 200);
    }
    assert_eq!(counters(&runway).await, (0.0, 3.0));
}
