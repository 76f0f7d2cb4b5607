//! Faults in what Runway depends on, and recovery from them without a restart: an IdP that is slow, refuses
//! connections or serves garbage; a Kong that refuses connections, breaks off mid-response, answers too late
//! or restarts under a pooled connection. Each fault must give the documented status (contract §4, §6), a
//! log line naming it, and no trace once the fault is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use serde_json::{Value, json};

const AUD: &str = "https://deploy.example.com";
/// Every fetch Runway makes to an IdP is bounded by this.
const FETCH_TIMEOUT: Duration = ::runway::auth::fetch::FETCH_TIMEOUT;
const REFRESH_FAILED: &str = "JWKS refresh failed; keeping the keys already known";
const UPSTREAM_FAILED: &str = "upstream request failed";

/// Runway in front of `kong` with one gitlab issuer at `issuer` (`extra` appended to its block), a route `/`
/// open to it, and short timeouts: keys refreshed every second, Kong given 500 ms to connect and 1 s to answer.
async fn runway(pki: &Pki, kong: &str, issuer: &str, extra: &str) -> Runway {
    let config = format!(
        "{}{}{}",
        base_config(pki, kong).replace("[upstream]\n", "[upstream]\nconnect_timeout = \"500ms\"\ntimeout = \"1s\"\n"),
        issuer_block(
            "gitlab",
            "gitlab",
            issuer,
            AUD,
            &format!("refresh_interval = \"1s\"\nkid_refetch_interval = \"1s\"\n{extra}")
        ),
        open_route("all", "/", "gitlab"),
    );
    Runway::start(pki, &config).await
}

/// A token never presented before (its own `jti`), so it is verified against the keys, not found in the
/// token cache.
fn fresh(key: &SigningKey, issuer: &str) -> String {
    key.mint(&claims(issuer, AUD, json!({"jti": uuid::Uuid::new_v4().to_string()})))
}

/// Asserts a problem+json answer from Runway with `status` and a `detail` containing `detail`.
fn assert_problem(res: &TestResponse, status: u16, detail: &str) {
    assert_eq!(res.status, status, "{}", res.text());
    assert_eq!(res.header("content-type").as_deref(), Some("application/problem+json"));
    let body = res.json();
    assert_eq!(body["status"], status, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains(detail)), "detail should name {detail:?}: {body}");
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
}

/// The issuer's keys never loaded: 503 with `Retry-After`, naming the issuer, nothing forwarded.
async fn assert_keys_unavailable(client: &TestClient, runway: &Runway, kong: &EchoUpstream, token: &str) {
    let before = kong.requests();
    let res = client.get(&runway.url("/x"), Some(token)).await;
    assert_problem(&res, 503, "keys for issuer \"gitlab\" are not available yet");
    assert!(res.header("retry-after").is_some(), "a 503 says when to retry");
    assert!(res.header("www-authenticate").is_none(), "not the client's fault");
    assert_eq!(kong.requests(), before, "nothing reached Kong");
}

async fn refresh_count(runway: &Runway, result: &str) -> f64 {
    runway.metric("runway_jwks_refresh_total", &[("issuer", "gitlab"), ("result", result)]).await.unwrap_or(0.0)
}

async fn upstream_errors(runway: &Runway, kind: &str) -> f64 {
    runway.metric("runway_upstream_errors_total", &[("kind", kind)]).await.unwrap_or(0.0)
}

/// Waits (at most 5 s) for `/readyz` to turn 200, then expects `token` to be forwarded; returns how long
/// readiness took.
async fn recovers(runway: &Runway, client: &TestClient, token: &str) -> Duration {
    let started = Instant::now();
    eventually("/readyz to turn 200", Duration::from_secs(5), || async {
        (runway.readyz().await.0 == 200).then_some(())
    })
    .await;
    let recovery = started.elapsed();
    let res = client.get(&runway.url("/x"), Some(token)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    recovery
}

// ---------------------------------------------------------------------------------------------------------
// The IdP

#[tokio::test]
async fn an_idp_slower_than_the_fetch_timeout_gives_503_until_it_answers_in_time() {
    let logs = Logs::capture();
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    idp.set_hang(true);
    let runway = runway(&pki, &upstream.url(), &idp.issuer(), &format!("jwks_uri = \"{}\"", idp.jwks_uri())).await;
    let client = TestClient::new(&pki);
    let token = fresh(&key, &idp.issuer());

    // The first fetch hangs: not ready, and the issuer's tokens get 503 at once (no request waits on the IdP).
    eventually("the first fetch to reach the IdP", Duration::from_secs(2), || async {
        (idp.jwks_fetches() >= 1).then_some(())
    })
    .await;
    let problem = runway.readyz_problem().await.unwrap_or_default();
    assert_eq!(problem, "issuer \"gitlab\": no usable keys yet");
    let started = Instant::now();
    assert_keys_unavailable(&client, &runway, &upstream, &token).await;
    assert!(started.elapsed() < Duration::from_millis(500), "a 503 does not wait for the IdP: {:?}", started.elapsed());

    // Runway gives up after its fetch timeout and says so, in /readyz and in the log.
    let problem = eventually("/readyz to report the timeout", FETCH_TIMEOUT + Duration::from_secs(3), || async {
        runway.readyz_problem().await.filter(|p| p.contains("timed out"))
    })
    .await;
    assert!(problem.starts_with("issuer \"gitlab\": no usable keys") && problem.contains(&idp.jwks_uri()), "{problem}");
    let line = logs.wait_for(REFRESH_FAILED, "error", "timed out", Duration::from_secs(1)).await;
    assert_eq!(line["issuer"], "gitlab", "{line}");
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(refresh_count(&runway, "error").await >= 1.0);
    assert_keys_unavailable(&client, &runway, &upstream, &token).await;

    // The IdP answers in time again: the keys load on the next retry, without a restart.
    idp.set_hang(false);
    let recovery = recovers(&runway, &client, &token).await;
    assert_eq!(upstream.requests(), 1);
    eprintln!("slow IdP: ready {recovery:?} after it answered in time");
}

#[tokio::test]
async fn a_hanging_refresh_does_not_hold_up_requests_with_known_keys() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let runway = runway(&pki, &upstream.url(), &idp.issuer(), &format!("jwks_uri = \"{}\"", idp.jwks_uri())).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let url = runway.url("/x");
    let mut baseline = Duration::ZERO;
    for _ in 0..20 {
        let token = fresh(&key, &idp.issuer());
        let started = Instant::now();
        assert_eq!(client.get(&url, Some(&token)).await.status, 200);
        baseline = baseline.max(started.elapsed());
    }

    // The next periodic refresh hangs, holding the fetch lock for up to the fetch timeout.
    idp.set_hang(true);
    let before = idp.jwks_fetches();
    eventually("a refresh to hang", Duration::from_secs(3), || async { (idp.jwks_fetches() > before).then_some(()) })
        .await;
    let (ok_before, error_before) = (refresh_count(&runway, "ok").await, refresh_count(&runway, "error").await);
    let mut worst = Duration::ZERO;
    let window = Instant::now();
    for _ in 0..100 {
        let token = fresh(&key, &idp.issuer());
        let started = Instant::now();
        let res = client.get(&url, Some(&token)).await;
        assert_eq!(res.status, 200, "{}", res.text());
        worst = worst.max(started.elapsed());
    }
    let window = window.elapsed();
    assert_eq!(
        (refresh_count(&runway, "ok").await, refresh_count(&runway, "error").await),
        (ok_before, error_before),
        "the refresh was still hanging during every request"
    );
    assert_eq!(runway.readyz().await.0, 200, "known keys keep the proxy ready");
    assert!(worst < Duration::from_millis(300), "slowest request while a refresh hangs: {worst:?}");
    eprintln!(
        "hanging refresh: 100 fresh tokens in {window:?}, slowest {worst:?} (slowest of 20 before the hang: {baseline:?})"
    );

    // A kid Runway does not know waits for the fetch in flight (it might bring that key), not for another one.
    let fetches = idp.jwks_fetches();
    let started = Instant::now();
    let res = client.get(&url, Some(&fresh(&SigningKey::rsa("k2"), &idp.issuer()))).await;
    let waited = started.elapsed();
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(waited < FETCH_TIMEOUT + Duration::from_secs(1), "an unknown kid waited {waited:?}");
    assert_eq!(idp.jwks_fetches(), fetches, "the failed fetch is not repeated for the waiting request");
    eprintln!("hanging refresh: an unknown kid got its 401 after {waited:?}");
    idp.set_hang(false);
}

#[tokio::test]
async fn an_idp_refusing_connections_at_start_gives_503_until_it_comes_up() {
    let logs = Logs::capture();
    let pki = Pki::generate();
    let key = SigningKey::rsa("k1");
    let upstream = EchoUpstream::start(&pki).await;
    let idp_addr = unused_addr();
    let issuer = format!("http://{idp_addr}");
    let runway = runway(&pki, &upstream.url(), &issuer, "").await;
    let client = TestClient::new(&pki);
    let token = fresh(&key, &issuer);

    let problem = eventually("/readyz to report the refused connection", Duration::from_secs(3), || async {
        runway.readyz_problem().await.filter(|p| p.contains("refused"))
    })
    .await;
    assert!(problem.starts_with("issuer \"gitlab\": no usable keys"), "{problem}");
    assert!(problem.contains(&format!("{issuer}/.well-known/openid-configuration")), "names what failed: {problem}");
    let line = logs.wait_for(REFRESH_FAILED, "error", "Connection refused", Duration::from_secs(1)).await;
    assert_eq!(line["issuer"], "gitlab", "{line}");
    assert_keys_unavailable(&client, &runway, &upstream, &token).await;
    // Retries back off but never beyond refresh_interval (1 s here).
    let attempts = refresh_count(&runway, "error").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let retried = refresh_count(&runway, "error").await - attempts;
    assert!((1.0..=4.0).contains(&retried), "{retried} retries in 2.2 s");

    let _idp = TestIdp::start_on(idp_addr, jwks(&[&key])).await;
    let recovery = recovers(&runway, &client, &token).await;
    assert!(recovery < Duration::from_millis(1500), "the next retry (within 1 s) loads the keys: {recovery:?}");
    logs.wait_for("JWKS loaded", "issuer", "gitlab", Duration::from_secs(1)).await;
    eprintln!("IdP refusing connections at start: ready {recovery:?} after it came up");
}

#[tokio::test]
async fn known_keys_keep_working_while_the_idp_refuses_connections() {
    let logs = Logs::capture();
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let runway = runway(&pki, &upstream.url(), &idp.issuer(), "").await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let (idp_addr, issuer) = (idp.addr(), idp.issuer());

    let errors = refresh_count(&runway, "error").await;
    idp.stop().await;
    eventually("two failed refreshes", Duration::from_secs(4), || async {
        (refresh_count(&runway, "error").await >= errors + 2.0).then_some(())
    })
    .await;
    let line = logs.wait_for(REFRESH_FAILED, "error", "Connection refused", Duration::from_secs(1)).await;
    assert_eq!(line["issuer"], "gitlab", "{line}");
    for _ in 0..5 {
        let res = client.get(&runway.url("/x"), Some(&fresh(&key, &issuer))).await;
        assert_eq!(res.status, 200, "known keys keep working: {}", res.text());
    }
    assert_eq!(runway.readyz().await.0, 200, "keys once loaded keep the proxy ready");

    // Back on the same address with a rotated key set: refreshes succeed again, no restart needed.
    let k2 = SigningKey::rsa("k2");
    let idp = TestIdp::start_on(idp_addr, jwks(&[&key, &k2])).await;
    let ok = refresh_count(&runway, "ok").await;
    eventually("a successful refresh", Duration::from_secs(3), || async {
        (refresh_count(&runway, "ok").await > ok).then_some(())
    })
    .await;
    assert!(idp.jwks_fetches() >= 1);
    let res = client.get(&runway.url("/x"), Some(&fresh(&k2, &issuer))).await;
    assert_eq!(res.status, 200, "{}", res.text());
}

/// What a broken IdP may serve instead of its discovery document and JWKS.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    /// A proxy's error page.
    Html,
    /// JSON, but not a JWKS.
    NotJwks,
    /// A JWKS whose only key Runway may not use (symmetric).
    NoUsableKey,
    /// 2 MiB, over Runway's 1 MiB cap.
    Huge,
    /// A discovery document naming another issuer (the JWKS is HTML, so Runway rediscovers).
    OtherIssuer,
}

const GARBAGE: [Garbage; 5] =
    [Garbage::Html, Garbage::OtherIssuer, Garbage::NotJwks, Garbage::NoUsableKey, Garbage::Huge];

impl Garbage {
    fn serve(self, idp: &TestIdp) {
        let html = || Some(("text/html", Bytes::from_static(b"<html><body><h1>502 Bad Gateway</h1></body></html>")));
        let json = |doc: Value| Some(("application/json", Bytes::from(doc.to_string())));
        idp.set_discovery(None);
        match self {
            Garbage::Html => idp.set_jwks_raw(html()),
            Garbage::NotJwks => idp.set_jwks_raw(json(json!({"error": "maintenance"}))),
            Garbage::NoUsableKey => {
                idp.set_jwks_raw(json(json!({"keys": [{"kty": "oct", "kid": "hmac", "k": b64url(b"secret")}]})))
            }
            Garbage::Huge => idp.set_jwks_raw(json(json!({"keys": [], "padding": "x".repeat(2 << 20)}))),
            Garbage::OtherIssuer => {
                idp.set_jwks_raw(html());
                idp.set_discovery(Some(json!({"issuer": "https://other.example", "jwks_uri": idp.jwks_uri()})));
            }
        }
    }

    /// What Runway's error says.
    fn error(self) -> &'static str {
        match self {
            Garbage::Html => "not JSON",
            Garbage::NotJwks => "not a JWKS document",
            Garbage::NoUsableKey => "no key usable with the issuer's algorithms (1 skipped)",
            Garbage::Huge => "length limit exceeded",
            Garbage::OtherIssuer => "discovery names issuer \"https://other.example\"",
        }
    }
}

#[tokio::test]
async fn garbage_from_an_idp_never_loaded_shows_in_readyz_until_good_keys_arrive() {
    let logs = Logs::capture();
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    Garbage::Html.serve(&idp);
    let runway = runway(&pki, &upstream.url(), &idp.issuer(), "").await;
    let client = TestClient::new(&pki);
    let token = fresh(&key, &idp.issuer());
    for garbage in GARBAGE {
        garbage.serve(&idp);
        let problem = eventually(&format!("/readyz to report {garbage:?}"), Duration::from_secs(4), || async {
            runway.readyz_problem().await.filter(|p| p.contains(garbage.error()))
        })
        .await;
        assert!(problem.starts_with("issuer \"gitlab\": no usable keys ("), "{garbage:?}: {problem}");
        let line = logs.wait_for(REFRESH_FAILED, "error", garbage.error(), Duration::from_secs(1)).await;
        assert_eq!(line["issuer"], "gitlab", "{line}");
        assert_keys_unavailable(&client, &runway, &upstream, &token).await;
    }
    idp.set_jwks_raw(None);
    idp.set_discovery(None);
    let recovery = recovers(&runway, &client, &token).await;
    eprintln!("garbage from an IdP never loaded: ready {recovery:?} after good keys");
}

#[tokio::test]
async fn garbage_from_an_idp_keeps_the_known_keys() {
    let logs = Logs::capture();
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let runway = runway(&pki, &upstream.url(), &idp.issuer(), "").await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let issuer = idp.issuer();
    for garbage in GARBAGE {
        garbage.serve(&idp);
        let line = logs.wait_for(REFRESH_FAILED, "error", garbage.error(), Duration::from_secs(4)).await;
        assert_eq!(line["issuer"], "gitlab", "{line}");
        let res = client.get(&runway.url("/x"), Some(&fresh(&key, &issuer))).await;
        assert_eq!(res.status, 200, "{garbage:?}: the known key is kept: {}", res.text());
        assert_eq!(runway.readyz().await.0, 200, "{garbage:?}");
        assert_eq!(runway.metric("runway_jwks_keys", &[("issuer", "gitlab")]).await, Some(1.0), "{garbage:?}");
    }
    // Good keys again, rotated: the new key is accepted (a refresh, or the unknown-kid refetch).
    let k2 = SigningKey::rsa("k2");
    idp.set_jwks(jwks(&[&key, &k2]));
    idp.set_jwks_raw(None);
    idp.set_discovery(None);
    eventually("the rotated key to be accepted", Duration::from_secs(4), || async {
        let res = client.get(&runway.url("/x"), Some(&fresh(&k2, &issuer))).await;
        (res.status == 200).then_some(())
    })
    .await;
    assert_eq!(runway.metric("runway_jwks_keys", &[("issuer", "gitlab")]).await, Some(2.0));
}

// ---------------------------------------------------------------------------------------------------------
// Kong

#[tokio::test]
async fn kong_refusing_connections_gives_502_until_it_comes_up() {
    let logs = Logs::capture();
    let pki = Pki::generate();
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let kong_addr = unused_addr();
    let runway = runway(&pki, &format!("https://{kong_addr}"), &idp.issuer(), "").await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);

    for n in 1..=2 {
        let started = Instant::now();
        let res = client.get(&runway.url("/x"), Some(&fresh(&key, &idp.issuer()))).await;
        assert_problem(&res, 502, "could not connect to the upstream");
        assert!(started.elapsed() < Duration::from_millis(500), "refused is immediate: {:?}", started.elapsed());
        assert_eq!(upstream_errors(&runway, "connect").await, f64::from(n));
    }
    let line = logs.wait_for(UPSTREAM_FAILED, "error", "Connection refused", Duration::from_secs(1)).await;
    let error = line["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("connect: ") && error.contains(&kong_addr.to_string()), "names Kong's address: {line}");
    assert!(line["span"]["request_id"].is_string(), "logged inside the request span: {line}");

    let kong = EchoUpstream::start_on(pki.upstream_server_config(), kong_addr).await;
    let res = client.get(&runway.url("/x"), Some(&fresh(&key, &idp.issuer()))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(kong.requests(), 1);
    assert_eq!(upstream_errors(&runway, "connect").await, 2.0);
}

/// Kong's TLS config (client certificate required) offering only the protocols in `alpn`.
fn kong_tls(pki: &Pki, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let mut config = (*pki.upstream_server_config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

const HTTP1_ONLY: &[&[u8]] = &[b"http/1.1"];
const H2_OR_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

#[tokio::test]
async fn kong_breaking_off_mid_response_aborts_the_client_response() {
    let logs = Logs::capture();
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    upstream.stop().await;
    let token = fresh(&key, &idp.issuer());
    for (kong_protocol, kong_alpn) in [("HTTP/1.1", HTTP1_ONLY), ("h2", H2_OR_HTTP1)] {
        let kong = EchoUpstream::start_with_config(kong_tls(&pki, kong_alpn)).await;
        let runway = runway(&pki, &kong.url(), &idp.issuer(), "").await;
        runway.wait_ready().await;
        let mut aborted = 0.0;
        for (client, protocol) in [(TestClient::new(&pki), "HTTP/1.1"), (TestClient::http2(&pki), "h2")] {
            for path in ["/abort/4096", "/abort-chunked/4096"] {
                let case = format!("Kong {kong_protocol}, client {protocol}, {path}");
                let request = http::Request::get(runway.url(path))
                    .header("authorization", format!("Bearer {token}"))
                    .body(Default::default())
                    .unwrap_or_else(|e| panic!("{e}"));
                match client.try_send(request).await {
                    Err(e) => {
                        assert!(e.contains("reading response body"), "{case}: the head came, then the body failed: {e}")
                    }
                    Ok(res) => panic!(
                        "{case}: a broken body reached the client as complete: {} with {} bytes",
                        res.status,
                        res.body.len()
                    ),
                }
                aborted += 1.0;
                eventually(&format!("{case}: the break to be counted"), Duration::from_secs(1), || async {
                    (upstream_errors(&runway, "request").await >= aborted).then_some(())
                })
                .await;
                let res = client.get(&runway.url("/x"), Some(&token)).await;
                assert_eq!(res.status, 200, "{case}: the next request works: {}", res.text());
            }
        }
        assert_eq!(upstream_errors(&runway, "request").await, 4.0);
    }
    let lines = logs.matching("upstream response broke off mid-body: client response aborted", "request_id", "-");
    assert_eq!(lines.len(), 8, "one log line per broken response, with its request id: {lines:#?}");
    assert!(
        lines.iter().all(|l| l["level"] == "WARN" && l["error"].as_str().is_some_and(|e| !e.is_empty())),
        "{lines:#?}"
    );
}

/// Kong sends the head and part of the body, then nothing: after `upstream.timeout` (1 s here) without a
/// byte, the client's response is aborted (never completed), logged and counted as a timeout.
#[tokio::test]
async fn kong_stalling_mid_body_aborts_the_client_response_after_the_upstream_timeout() {
    let logs = Logs::capture();
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let runway = runway(&pki, &upstream.url(), &idp.issuer(), "").await;
    runway.wait_ready().await;
    let token = fresh(&key, &idp.issuer());
    for client in [TestClient::new(&pki), TestClient::http2(&pki)] {
        let request = http::Request::get(runway.url("/stall/1024"))
            .header("authorization", format!("Bearer {token}"))
            .body(Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(5), client.try_send(request)).await;
        let took = started.elapsed();
        match outcome {
            Ok(Err(e)) => assert!(e.contains("reading response body"), "the head came, then the body failed: {e}"),
            Ok(Ok(res)) => {
                panic!("a stalled body reached the client as complete: {} ({} bytes)", res.status, res.body.len())
            }
            Err(_) => panic!("the client still waits after 5 s: the stall is not bounded"),
        }
        assert!(took >= Duration::from_millis(950), "aborted before upstream.timeout: {took:?}");
        assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.status, 200, "the next request works");
    }
    assert_eq!(upstream_errors(&runway, "timeout").await, 2.0);
    let line = logs
        .wait_for(
            "upstream response stalled mid-body: client response aborted",
            "error",
            "no response body bytes",
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(line["level"], "WARN", "{line}");
}

#[tokio::test]
async fn kong_slower_than_the_upstream_timeout_gives_504_until_it_is_fast_again() {
    let logs = Logs::capture();
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let runway = runway(&pki, &upstream.url(), &idp.issuer(), "").await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let token = fresh(&key, &idp.issuer());
    assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.status, 200);

    upstream.set_delay(Duration::from_millis(1500));
    let started = Instant::now();
    let res = client.get(&runway.url("/x"), Some(&token)).await;
    let took = started.elapsed();
    assert_problem(&res, 504, "upstream did not answer in time");
    assert!((Duration::from_millis(950)..Duration::from_secs(2)).contains(&took), "upstream.timeout is 1 s: {took:?}");
    assert_eq!(upstream_errors(&runway, "timeout").await, 1.0);
    let line = logs.wait_for(UPSTREAM_FAILED, "error", "timed out", Duration::from_secs(1)).await;
    assert_eq!(line["level"], "WARN", "{line}");

    upstream.set_delay(Duration::ZERO);
    let res = client.get(&runway.url("/x"), Some(&token)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(upstream_errors(&runway, "timeout").await, 1.0);
    eprintln!("slow Kong: 504 after {took:?}");
}

/// Kong (HTTP/1.1 only, or offering h2) stops and a new one starts on the same port while Runway holds pooled
/// connections to the old one: the request in flight fails, none after it.
async fn kong_restarts(alpn: &[&[u8]]) {
    let logs = Logs::capture();
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let tls = || kong_tls(&pki, alpn);
    let addr = upstream.addr();
    upstream.stop().await;
    let mut kong = EchoUpstream::start_on(tls(), addr).await;
    let runway = runway(&pki, &format!("https://{addr}"), &idp.issuer(), "").await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let token = fresh(&key, &idp.issuer());
    let url = runway.url("/x");
    // Two at once, so HTTP/1.1 pools two connections.
    let (a, b) = tokio::join!(client.get(&url, Some(&token)), client.get(&url, Some(&token)));
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));

    // A slow request is in flight when Kong stops; a new Kong is up right after.
    kong.set_delay(Duration::from_millis(600));
    let before = kong.requests();
    let in_flight_url = runway.url("/in-flight");
    let (in_flight, restarted) = tokio::join!(client.get(&in_flight_url, Some(&token)), async {
        eventually("the request to reach Kong", Duration::from_secs(2), || async {
            (kong.requests() > before).then_some(())
        })
        .await;
        kong.stop().await;
        EchoUpstream::start_on(tls(), addr).await
    });
    assert_problem(&in_flight, 502, "the upstream exchange failed");
    logs.wait_for(UPSTREAM_FAILED, "error", "request: ", Duration::from_secs(1)).await;
    kong = restarted;
    let failed = upstream_errors(&runway, "request").await + upstream_errors(&runway, "connect").await;
    for i in 0..5 {
        let res = client.get(&url, Some(&token)).await;
        assert_eq!(res.status, 200, "request {i} after the restart: {}", res.text());
    }
    // Again, with only idle pooled connections: each restart must cost nothing.
    for round in 0..5 {
        let (a, b) = tokio::join!(client.get(&url, Some(&token)), client.get(&url, Some(&token)));
        assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200), "round {round}, before the restart");
        if round > 0 {
            // This Kong served four requests over at most two connections: Runway holds pooled ones to it.
            assert_eq!(kong.requests(), 4);
            assert!(kong.connections() <= 2, "{} connections", kong.connections());
        }
        kong.stop().await;
        kong = EchoUpstream::start_on(tls(), addr).await;
        let (a, b) = tokio::join!(client.get(&url, Some(&token)), client.get(&url, Some(&token)));
        assert_eq!(
            (a.status.as_u16(), b.status.as_u16()),
            (200, 200),
            "round {round}, right after the restart: {} {}",
            a.text(),
            b.text()
        );
        assert!(kong.connections() >= 1);
    }
    let after = upstream_errors(&runway, "request").await + upstream_errors(&runway, "connect").await;
    assert_eq!(after, failed, "no request failed after the one in flight");
}

#[tokio::test]
async fn kong_restarting_under_pooled_http1_connections_costs_at_most_the_request_in_flight() {
    kong_restarts(HTTP1_ONLY).await;
}

#[tokio::test]
async fn kong_restarting_under_a_pooled_h2_connection_costs_at_most_the_request_in_flight() {
    kong_restarts(H2_OR_HTTP1).await;
}
