//! End-to-end behaviour of the proxy over real loopback TLS: what reaches Kong, what the client sees.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;

/// A fixture: PKI, an IdP with one RSA key, the mTLS echo upstream, and Runway with a gitlab issuer.
struct Fx {
    pki: Pki,
    idp: TestIdp,
    key: SigningKey,
    upstream: EchoUpstream,
    runway: Runway,
    client: TestClient,
}

const AUD: &str = "https://deploy.example.com";

async fn fixture(routes: &str) -> Fx {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let config = format!(
        "{}{}{}",
        base_config(&pki, &upstream.url()),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
        routes
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    Fx { pki, idp, key, upstream, runway, client }
}

const ROUTES: &str = r#"
[[routes]]
name = "deploy-production"
path_prefix = "/deploy/production"
methods = ["POST", "PUT"]
[[routes.allow]]
issuer = "gitlab"
claims = { project_path = ["platform/api", "platform/tools/*"], ref_protected = "true", environment = "production" }

[[routes]]
name = "status"
path_prefix = "/status"
anonymous = true

[[routes]]
name = "any-gitlab"
path_prefix = "/"
[[routes.allow]]
issuer = "gitlab"
"#;

impl Fx {
    fn gitlab_token(&self, extra: serde_json::Value) -> String {
        let mut base = json!({
            "project_path": "platform/api", "ref_protected": "true", "environment": "production",
            "job_id": "1234", "pipeline_id": "99", "ref": "main", "user_login": "alice"
        });
        if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        self.key.mint(&claims(&self.idp.issuer(), AUD, base))
    }

    async fn post(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> TestResponse {
        let mut req = Request::post(self.runway.url(path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.client
            .send(req.body(Full::new(Bytes::from_static(b"hello"))).unwrap_or_else(|e| panic!("request: {e}")))
            .await
    }
}

#[tokio::test]
async fn allowed_request_reaches_kong_with_verified_identity_only() {
    let fx = fixture(ROUTES).await;
    let token = fx.gitlab_token(json!({}));
    let spoofed = [
        ("x-runway-subject", "root"),
        ("x_runway_subject", "root"),
        ("X-Runway-Issuer", "okta"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("proxy-authorization", "Basic abc"),
        ("x-request-id", "req-abc-123"),
    ];
    let res = fx.post("/deploy/production/app?x=1", Some(&token), &spoofed).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-request-id").as_deref(), Some("req-abc-123"));
    let echo = res.json();
    let h = &echo["headers"];
    assert_eq!(echo["client_cert_cn"], "runway-client", "Kong sees Runway's client certificate");
    assert_eq!(echo["version"], "HTTP/2.0", "h2 negotiated with Kong by ALPN");
    assert_eq!(echo["uri"], "/deploy/production/app?x=1");
    assert_eq!(echo["body_len"], 5);
    assert_eq!(h["x-runway-subject"], json!(["user-1"]));
    assert_eq!(h["x-runway-issuer"], json!(["gitlab"]));
    assert_eq!(h["x-runway-route"], json!(["deploy-production"]));
    assert_eq!(h["x-runway-project"], json!(["platform/api"]));
    assert_eq!(h["x-runway-job-id"], json!(["1234"]));
    assert_eq!(h["x-runway-pipeline-id"], json!(["99"]));
    assert_eq!(h["x-runway-ref"], json!(["main"]));
    assert_eq!(h["x-runway-environment"], json!(["production"]));
    assert_eq!(h["x-runway-user"], json!(["alice"]));
    assert_eq!(h["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], json!(["https"]));
    assert_eq!(h["x-forwarded-host"], json!([format!("localhost:{}", fx.runway.addr.port())]));
    assert_eq!(h["x-request-id"], json!(["req-abc-123"]));
    assert_eq!(echo["host"], format!("localhost:{}", fx.runway.addr.port()), "Host preserved");
    for gone in ["authorization", "proxy-authorization", "x_runway_subject", "x-real-ip"] {
        assert!(h.get(gone).is_none(), "{gone} must not reach Kong: {h}");
    }
    drop(fx.pki);
}

#[tokio::test]
async fn routing_answers_before_the_token_is_read() {
    let fx = fixture(
        r#"
[[routes]]
name = "deploy-production"
path_prefix = "/deploy/production"
methods = ["POST", "PUT"]
[[routes.allow]]
issuer = "gitlab"
"#,
    )
    .await;
    let res = fx.client.get(&fx.runway.url("/nowhere"), None).await;
    assert_eq!(res.status, 404);
    assert_eq!(res.header("content-type").as_deref(), Some("application/problem+json"));
    assert!(res.header("www-authenticate").is_none());
    let body = res.json();
    assert_eq!(body["status"], 404);
    assert_eq!(body["request_id"].as_str(), res.header("x-request-id").as_deref());

    let res = fx.client.get(&fx.runway.url("/deploy/production"), Some("garbage")).await;
    assert_eq!(res.status, 405, "405 does not depend on the token");
    assert_eq!(res.header("allow").as_deref(), Some("POST, PUT"));

    for bad in ["/deploy/staging/../production", "/deploy//production", "/deploy/production%2f..%2fx"] {
        let res = fx.post(bad, None, &[]).await;
        assert_eq!(res.status, 400, "{bad}");
    }
    assert_eq!(fx.upstream.requests(), 0);
}

#[tokio::test]
async fn policy_denial_names_route_and_failing_condition() {
    let fx = fixture(ROUTES).await;
    let token = fx.gitlab_token(json!({"environment": "staging"}));
    let res = fx.post("/deploy/production", Some(&token), &[]).await;
    assert_eq!(res.status, 403);
    assert_eq!(
        res.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"runway\", error=\"insufficient_scope\"")
    );
    let detail = res.json()["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains("deploy-production") && detail.contains("environment") && detail.contains("staging"),
        "{detail}"
    );
    let glob = fx.gitlab_token(json!({"project_path": "platform/tools/cli"}));
    assert_eq!(fx.post("/deploy/production", Some(&glob), &[]).await.status, 200);
    let other = fx.gitlab_token(json!({"project_path": "platform/toolsx"}));
    assert_eq!(fx.post("/deploy/production", Some(&other), &[]).await.status, 403);
    assert_eq!(fx.upstream.requests(), 1);
}

#[tokio::test]
async fn anonymous_route_is_sanitised_and_carries_no_identity() {
    let fx = fixture(ROUTES).await;
    let token = fx.gitlab_token(json!({}));
    let res = fx.post("/status", Some(&token), &[("x-runway-subject", "root")]).await;
    assert_eq!(res.status, 200);
    let h = &res.json()["headers"];
    assert_eq!(h["x-runway-route"], json!(["status"]));
    assert!(h.get("x-runway-subject").is_none() && h.get("x-runway-issuer").is_none(), "{h}");
    assert!(h.get("authorization").is_none());
    assert!(h.get("x-request-id").is_some() && h.get("x-forwarded-for").is_some());
    assert_eq!(fx.post("/status", None, &[]).await.status, 200);
}

#[tokio::test]
async fn report_mode_forwards_without_identity() {
    let fx = fixture(
        r#"
[[routes]]
name = "shadow"
path_prefix = "/shadow"
mode = "report"
[[routes.allow]]
issuer = "gitlab"
claims = { environment = "production" }
"#,
    )
    .await;
    let denied = fx.gitlab_token(json!({"environment": "staging"}));
    for token in [Some(denied.as_str()), None, Some("not-a-token")] {
        let res = fx.post("/shadow/x", token, &[]).await;
        assert_eq!(res.status, 200, "report mode forwards anyway ({token:?})");
        let h = &res.json()["headers"];
        assert_eq!(h["x-runway-route"], json!(["shadow"]));
        assert!(h.get("x-runway-subject").is_none(), "no identity on would_deny: {h}");
        assert!(h.get("authorization").is_none());
    }
    let allowed = fx.gitlab_token(json!({}));
    let res = fx.post("/shadow/x", Some(&allowed), &[]).await;
    assert_eq!(res.json()["headers"]["x-runway-subject"], json!(["user-1"]));
}

#[tokio::test]
async fn http2_clients_are_served() {
    let fx = fixture(ROUTES).await;
    let client = TestClient::http2(&fx.pki);
    let token = fx.gitlab_token(json!({}));
    let res = client.get(&fx.runway.url("/anything"), Some(&token)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.version, http::Version::HTTP_2);
    let echo = res.json();
    assert_eq!(echo["headers"]["x-runway-subject"], json!(["user-1"]));
    assert_eq!(echo["host"], format!("localhost:{}", fx.runway.addr.port()));
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let config = format!(
        "{}{}{}",
        base_config(&pki, &upstream.url()).replace("[admin]", "max_body_bytes = 1024\n\n[admin]"),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
        open_route("all", "/", "gitlab")
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));

    let big = Request::post(runway.url("/up"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(vec![b'x'; 2048])))
        .expect("request");
    assert_eq!(client.send(big).await.status, 413);
    let streamed = client.post_streaming(&runway.url("/up"), Some(&token), 4096).await;
    assert_eq!(streamed.status, 413, "chunked bodies are capped mid-stream");
    let small = client.post_streaming(&runway.url("/up"), Some(&token), 1000).await;
    assert_eq!(small.status, 200);

    let huge = Request::get(runway.url("/up"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-filler", "a".repeat(60 * 1024))
        .header("x-filler-2", "b".repeat(8 * 1024))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = client.try_send(huge).await;
    assert!(matches!(&res, Ok(r) if r.status == 431), "headers over 64 KiB: {:?}", res.map(|r| r.status));
}

#[tokio::test]
async fn upstream_failures_map_to_502_and_504() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let routes = open_route("all", "/", "gitlab");
    let issuer = issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, "");
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));
    let client = TestClient::new(&pki);

    // Slow upstream: 504.
    let slow = base_config(&pki, &upstream.url())
        .replace("server_name = \"localhost\"", "server_name = \"localhost\"\ntimeout = \"300ms\"");
    let runway = Runway::start(&pki, &format!("{slow}{issuer}{routes}")).await;
    runway.wait_ready().await;
    upstream.set_delay(Duration::from_secs(2));
    let res = client.get(&runway.url("/x"), Some(&token)).await;
    assert_eq!(res.status, 504);
    assert_eq!(res.header("content-type").as_deref(), Some("application/problem+json"));
    upstream.set_delay(Duration::ZERO);
    runway.stop().await;

    // Runway presenting a client certificate from another CA: Kong refuses the handshake, 502.
    let rogue = base_config(&pki, &upstream.url())
        .replace(&pki.client_cert.display().to_string(), &pki.rogue_client_cert.display().to_string())
        .replace(&pki.client_key.display().to_string(), &pki.rogue_client_key.display().to_string());
    let runway = Runway::start(&pki, &format!("{rogue}{issuer}{routes}")).await;
    runway.wait_ready().await;
    let before = upstream.requests();
    let res = client.get(&runway.url("/x"), Some(&token)).await;
    assert_eq!(res.status, 502);
    assert_eq!(upstream.requests(), before, "nothing reached Kong");
    runway.stop().await;

    // Kong down: 502.
    let dead_url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("https://127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    let runway = Runway::start(&pki, &format!("{}{issuer}{routes}", base_config(&pki, &dead_url))).await;
    runway.wait_ready().await;
    let res = client.get(&runway.url("/x"), Some(&token)).await;
    assert_eq!(res.status, 502);
    assert!(res.header("x-request-id").is_some());
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let fx = fixture(ROUTES).await;
    let token = fx.gitlab_token(json!({}));
    for _ in 0..20 {
        assert_eq!(fx.client.get(&fx.runway.url("/x"), Some(&token)).await.status, 200);
    }
    assert_eq!(fx.upstream.requests(), 20);
    assert_eq!(fx.upstream.connections(), 1, "sequential requests share one pooled connection");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let fx = fixture(ROUTES).await;
    let token = fx.gitlab_token(json!({}));
    fx.upstream.set_delay(Duration::from_millis(800));
    let client = TestClient::new(&fx.pki);
    let url = fx.runway.url("/slow");
    let in_flight = tokio::spawn(async move { client.get(&url, Some(&token)).await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let handle = fx.runway.shutdown_handle();
    handle.shutdown();
    assert_eq!(in_flight.await.expect("join"), 200, "the in-flight request completes");
    let Fx { runway, .. } = fx;
    tokio::time::timeout(Duration::from_secs(5), runway.join()).await.expect("run returns after draining");
}

#[tokio::test]
async fn http1_only_upstream_is_served_over_http1() {
    let pki = Pki::generate();
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let mut tls = (*pki.upstream_server_config()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let upstream = EchoUpstream::start_with_config(std::sync::Arc::new(tls)).await;
    let config = format!(
        "{}{}{}",
        base_config(&pki, &upstream.url()),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
        open_route("all", "/", "gitlab")
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));
    let res = TestClient::http2(&pki).get(&runway.url("/x"), Some(&token)).await;
    assert_eq!(res.status, 200);
    let echo = res.json();
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["host"], format!("localhost:{}", runway.addr.port()), "Host preserved for an h2 client too");
    assert_eq!(echo["headers"]["x-runway-subject"], json!(["user-1"]));
    assert_eq!(echo["client_cert_cn"], "runway-client");
}

#[tokio::test]
async fn upstream_protocol_chooses_what_is_spoken_to_kong() {
    let pki = Pki::generate();
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let both = EchoUpstream::start(&pki).await;
    let mut h1_only = (*pki.upstream_server_config()).clone();
    h1_only.alpn_protocols = vec![b"http/1.1".to_vec()];
    let h1_only = EchoUpstream::start_with_config(std::sync::Arc::new(h1_only)).await;
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));
    let client = TestClient::new(&pki);
    for (upstream, protocol, expected) in [
        (&both, "auto", Some("HTTP/2.0")),
        (&both, "http1", Some("HTTP/1.1")),
        (&both, "http2", Some("HTTP/2.0")),
        (&h1_only, "auto", Some("HTTP/1.1")),
        (&h1_only, "http2", None),
    ] {
        let config = format!(
            "{}{}{}",
            base_config(&pki, &upstream.url())
                .replace("[upstream]\n", &format!("[upstream]\nprotocol = \"{protocol}\"\n")),
            issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
            open_route("all", "/", "gitlab")
        );
        let runway = Runway::start(&pki, &config).await;
        runway.wait_ready().await;
        let connections = upstream.connections();
        for _ in 0..3 {
            let res = client.get(&runway.url("/x"), Some(&token)).await;
            match expected {
                Some(version) => {
                    assert_eq!(res.status, 200, "{protocol}: {}", res.text());
                    assert_eq!(res.json()["version"], version, "protocol = {protocol}");
                }
                None => assert_eq!(res.status, 502, "an upstream that cannot speak h2: {}", res.text()),
            }
        }
        if expected.is_some() {
            assert_eq!(
                upstream.connections(),
                connections + 1,
                "{protocol}: one kept-alive connection serves all three"
            );
        }
        runway.stop().await;
    }
    let (_dir, bad) = {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = format!(
            "{}{}{}",
            base_config(&pki, &both.url()).replace("[upstream]\n", "[upstream]\nprotocol = \"h3\"\n"),
            issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
            open_route("all", "/", "gitlab")
        );
        let path = dir.path().join("runway.toml");
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("{e}"));
        let err = ::runway::config::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        (dir, err)
    };
    assert!(bad.contains("upstream.protocol") && bad.contains("\"h3\""), "{bad}");
}
