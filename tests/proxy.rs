//! End-to-end behaviour of the proxy over real loopback TLS: what reaches Kong, what the client sees.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use support::*;

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
    let pki = Pki::generate();
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let upstream = EchoUpstream::start(&pki).await;
    let config = format!(
        "{}{}{}",
        base_config(&pki, &upstream.url()),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
        routes
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    Fx {
        pki,
        idp,
        key,
        upstream,
        runway,
        client,
    }
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

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut req = Request::post(self.runway.url(path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.client
            .send(
                req.body(Full::new(Bytes::from_static(b"hello")))
                    .expect("request"),
            )
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
    let res = fx
        .post("/deploy/production/app?x=1", Some(&token), &spoofed)
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-request-id").as_deref(), Some("req-abc-123"));
    let echo = res.json();
    let h = &echo["headers"];
    assert_eq!(
        echo["client_cert_cn"], "runway-client",
        "Kong sees Runway's client certificate"
    );
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
    assert_eq!(
        h["x-forwarded-host"],
        json!([format!("localhost:{}", fx.runway.addr.port())])
    );
    assert_eq!(h["x-request-id"], json!(["req-abc-123"]));
    assert_eq!(
        echo["host"],
        format!("localhost:{}", fx.runway.addr.port()),
        "Host preserved"
    );
    for gone in [
        "authorization",
        "proxy-authorization",
        "x_runway_subject",
        "x-real-ip",
    ] {
        assert!(h.get(gone).is_none(), "{gone} must not reach Kong: {h}");
    }
    drop(fx.pki);
}
