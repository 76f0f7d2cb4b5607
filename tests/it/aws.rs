//! `kind = "aws"` through the real proxy: presigned STS GetCallerIdentity tokens minted the way
//! `aws eks get-token` mints them, checked against a fake STS on loopback TLS that verifies the SigV4
//! signature for real and counts its calls. Every refusal that needs no network must leave the STS
//! untouched (no SSRF through Runway).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::support::sts::{
    FakeSts, Mint, ROLE_SESSION, UNKNOWN, USER, aws_issuer_block, presign, token_for_url, url_of,
};
use crate::support::*;
use serde_json::{Value, json};

const AUD: &str = "runway-test";
const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/ci-deploy";
const USER_ARN: &str = "arn:aws:iam::444455556666:user/ops/alice";
const INVALID_TOKEN: &str = "Bearer realm=\"runway\", error=\"invalid_token\", error_description=\"";

struct Fx {
    pki: Pki,
    sts: Option<FakeSts>,
    upstream: EchoUpstream,
    runway: Runway,
    client: TestClient,
}

/// One aws issuer `aws` (audience [`AUD`], `extra` appended to its block) on the fake STS, route `/aws`
/// open to it, plus `routes`.
async fn fixture(extra: &str, routes: &str) -> Fx {
    let pki = Pki::generate();
    let sts = FakeSts::start(&pki).await;
    let upstream = EchoUpstream::start(&pki).await;
    let config = format!(
        "{}{}{}{routes}",
        base_config(&pki, &upstream.url()),
        aws_issuer_block("aws", AUD, &sts, &pki, extra),
        open_route("aws", "/aws", "aws"),
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    Fx { pki, sts: Some(sts), upstream, runway, client }
}

impl Fx {
    fn sts(&self) -> &FakeSts {
        self.sts.as_ref().unwrap_or_else(|| panic!("the fake STS was stopped"))
    }

    fn mint(&self, credential: crate::support::sts::FakeCredential) -> Mint {
        Mint::cli(&self.sts().endpoint(), credential, AUD)
    }

    async fn get(&self, path: &str, token: &str) -> TestResponse {
        self.client.get(&self.runway.url(path), Some(token)).await
    }

    /// Expects `token` forwarded on `/aws`; returns the headers Kong received.
    async fn allowed(&self, token: &str) -> Value {
        let before = self.upstream.requests();
        let res = self.get("/aws", token).await;
        assert_eq!(res.status, 200, "expected the token to be accepted: {}", res.text());
        assert_eq!(self.upstream.requests(), before + 1);
        let headers = res.json()["headers"].clone();
        assert!(headers.get("authorization").is_none(), "the token never reaches Kong: {headers}");
        headers
    }

    /// Expects 401 invalid_token mentioning `needle`, nothing forwarded, the token not echoed.
    async fn refused(&self, token: &str, needle: &str) -> TestResponse {
        let before = self.upstream.requests();
        let res = self.get("/aws", token).await;
        assert_eq!(res.status, 401, "expected 401 for {needle:?}: {}", res.text());
        let www = res.header("www-authenticate").unwrap_or_default();
        assert!(www.starts_with(INVALID_TOKEN), "{www}");
        assert!(www.contains(needle), "WWW-Authenticate should mention {needle:?}: {www}");
        assert_eq!(res.json()["status"], 401);
        assert!(!res.text().contains(token) && !www.contains(token), "the token is never echoed");
        assert_eq!(self.upstream.requests(), before, "nothing reaches Kong");
        res
    }
}

/// The first audit event matching `matches`, waiting for it (events are written by a background writer).
async fn audit_event(pki: &Pki, matches: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..250 {
        if let Some(event) = audit_lines(pki).into_iter().find(|e| matches(e)) {
            return event;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no such audit event in {:#?}", audit_lines(pki));
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v[0].as_str())
}

#[tokio::test]
async fn a_role_session_token_reaches_kong_with_the_aws_headers_and_is_cached() {
    let fx = fixture("", "").await;
    let token = fx.mint(ROLE_SESSION).token();
    let headers = fx.allowed(&token).await;
    assert_eq!(header(&headers, "x-runway-issuer"), Some("aws"));
    assert_eq!(header(&headers, "x-runway-subject"), Some(ROLE_ARN), "subject = canonical ARN");
    assert_eq!(header(&headers, "x-runway-aws-arn"), Some(ROLE_ARN));
    assert_eq!(header(&headers, "x-runway-aws-account"), Some("111122223333"));
    assert_eq!(header(&headers, "x-runway-aws-session"), Some("gitlab-job-42"));
    assert_eq!(header(&headers, "x-runway-route"), Some("aws"));

    // STS was asked once, for our audience, for JSON, and found the signature good.
    let log = fx.sts().log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].audience.as_deref(), Some(AUD));
    assert_eq!(log[0].accept.as_deref(), Some("application/json"));
    assert_eq!(log[0].status, 200);

    // The same token again: from the cache.
    fx.allowed(&token).await;
    assert_eq!(fx.sts().calls(), 1, "a verified token is cached until it expires");

    // The audit trail names the canonical ARN.
    let event = audit_event(&fx.pki, |e| e["decision"] == "allow").await;
    assert_eq!(event["subject"], ROLE_ARN);
    assert_eq!(event["issuer"], "aws");

    // An IAM user: the ARN as it is, no session header.
    let headers = fx.allowed(&fx.mint(USER).token()).await;
    assert_eq!(header(&headers, "x-runway-subject"), Some(USER_ARN));
    assert_eq!(header(&headers, "x-runway-aws-account"), Some("444455556666"));
    assert_eq!(header(&headers, "x-runway-aws-session"), None);
}

#[tokio::test]
async fn an_xml_answer_is_read_too() {
    let fx = fixture("", "").await;
    fx.sts().set_xml(true);
    let headers = fx.allowed(&fx.mint(ROLE_SESSION).token()).await;
    assert_eq!(header(&headers, "x-runway-subject"), Some(ROLE_ARN));
    assert_eq!(header(&headers, "x-runway-aws-session"), Some("gitlab-job-42"));
    // An XML refusal is a refusal.
    fx.refused(&Mint::cli(&fx.sts().endpoint(), ROLE_SESSION, "other-cluster").token(), "SignatureDoesNotMatch").await;
}

#[tokio::test]
async fn sts_refusals_are_401() {
    let fx = fixture("", "").await;
    // Signed for another cluster: the signature covers x-k8s-aws-id, and Runway sends its own audience.
    let other = Mint::cli(&fx.sts().endpoint(), ROLE_SESSION, "other-cluster").token();
    fx.refused(&other, "STS refused the token for audience 'runway-test' (SignatureDoesNotMatch)").await;
    assert_eq!(fx.sts().log().last().map(|c| c.status), Some(403));

    // A signed parameter altered after signing (Version is allowed, but signed).
    let url = fx.mint(ROLE_SESSION).url().replace("Version=2011-06-15", "Version=2011-06-16");
    fx.refused(&token_for_url(&url), "SignatureDoesNotMatch").await;

    // Keys STS does not know.
    fx.refused(&fx.mint(UNKNOWN).token(), "InvalidClientTokenId").await;

    // Whatever STS refuses (403) is a 401.
    fx.sts().set_refuse_all(true);
    fx.refused(&fx.mint(USER).token(), "AccessDenied").await;
    assert_eq!(fx.sts().calls(), 4);
}

#[tokio::test]
async fn format_failures_are_refused_without_calling_sts() {
    let fx = fixture("", "").await;
    let endpoint = fx.sts().endpoint();
    let good = fx.mint(ROLE_SESSION);
    let good_url = good.url();
    let now = SystemTime::now();
    let cases: Vec<(String, String, &str)> = vec![
        ("expired".into(), Mint { at: now - Duration::from_secs(20 * 60), ..good.clone() }.token(), "expired"),
        (
            "signed in the future".into(),
            Mint { at: now + Duration::from_secs(10 * 60), ..good.clone() }.token(),
            "in the future",
        ),
        ("X-Amz-Expires over 900".into(), Mint { expires: 901, ..good.clone() }.token(), "over the 900s maximum"),
        (
            "host off the allowlist".into(),
            Mint::cli("https://sts.amazonaws.com", ROLE_SESSION, AUD).token(),
            "not an allowed STS endpoint",
        ),
        (
            "same host, other port".into(),
            token_for_url(&good_url.replace(&endpoint, "https://127.0.0.1:1")),
            "not an allowed STS endpoint",
        ),
        (
            "host name instead of the configured IP".into(),
            token_for_url(&good_url.replace("127.0.0.1", "localhost")),
            "not an allowed STS endpoint",
        ),
        ("plain http".into(), token_for_url(&good_url.replace("https://", "http://")), "not https"),
        ("another path".into(), token_for_url(&good_url.replace("/?Action", "/x?Action")), "path is not /"),
        (
            "tampered Action".into(),
            token_for_url(&good_url.replace("Action=GetCallerIdentity", "Action=AssumeRole")),
            "Action is not GetCallerIdentity",
        ),
        ("duplicate parameter".into(), token_for_url(&format!("{good_url}&X-Amz-Expires=60")), "more than once"),
        (
            "duplicate parameter, other case".into(),
            token_for_url(&format!("{good_url}&action=GetCallerIdentity")),
            "more than once",
        ),
        (
            "unknown parameter".into(),
            token_for_url(&format!("{good_url}&X-Amz-Target=AWSSecurityTokenServiceV20110615.GetCallerIdentity")),
            "unknown query parameter",
        ),
        (
            "audience not signed".into(),
            token_for_url(&presign(
                &format!("{endpoint}/?Action=GetCallerIdentity&Version=2011-06-15"),
                &[],
                &ROLE_SESSION,
                "us-east-1",
                now,
                60,
            )),
            "does not sign the x-k8s-aws-id header",
        ),
        (
            "oversize".into(),
            token_for_url(&format!("{good_url}&X-Amz-Credential=x{}", "a".repeat(3100))),
            "larger than 4096 bytes",
        ),
        ("bad base64".into(), "k8s-aws-v1.not*base64".into(), "not unpadded base64url"),
        ("padded base64".into(), format!("{}=", good.token()), "not unpadded base64url"),
        ("not a URL".into(), token_for_url("hello world"), "does not hold a URL"),
    ];
    for (what, token, needle) in &cases {
        let res = fx.refused(token, needle).await;
        assert!(res.json()["detail"].as_str().is_some_and(|d| d.contains(needle)), "{what}: {}", res.text());
        assert_eq!(fx.sts().calls(), 0, "{what}: STS must not be contacted");
    }
    // The well-formed token still passes, on the first STS call.
    fx.allowed(&good.token()).await;
    assert_eq!(fx.sts().calls(), 1);
}

#[tokio::test]
async fn sts_down_or_untrusted_is_503_with_retry_after() {
    let mut fx = fixture("", "").await;
    let token = fx.mint(ROLE_SESSION).token();
    fx.sts = None; // stops listening
    let res = fx.get("/aws", &token).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.header("retry-after").as_deref(), Some("5"));
    assert_eq!(res.header("content-type").as_deref(), Some("application/problem+json"));
    assert!(res.text().contains("STS could not check the token"), "{}", res.text());
    assert!(res.header("www-authenticate").is_none());
    assert_eq!(fx.upstream.requests(), 0);
    let event = audit_event(&fx.pki, |e| e["status"] == 503).await;
    assert_eq!(event["reason"], "sts_unavailable");
    assert_eq!(event["issuer"], "aws");

    // An STS whose certificate Runway does not trust: 503 too, never a 401.
    let pki = Pki::generate();
    let sts = FakeSts::start(&pki).await;
    let config = format!(
        "{}{}{}",
        base_config(&pki, &fx.upstream.url()),
        aws_issuer_block("aws", AUD, &sts, &pki, "")
            .replace(&pki.ca_pem.display().to_string(), &pki.rogue_ca_pem.display().to_string()),
        open_route("aws", "/aws", "aws"),
    );
    let runway = Runway::start(&pki, &config).await;
    let res = TestClient::new(&pki)
        .get(&runway.url("/aws"), Some(&Mint::cli(&sts.endpoint(), ROLE_SESSION, AUD).token()))
        .await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.header("retry-after").as_deref(), Some("5"));
    assert_eq!(sts.calls(), 0, "the TLS handshake fails before any request");
}

#[tokio::test]
async fn a_burst_of_50_with_one_new_token_makes_one_sts_call() {
    let fx = fixture("", "").await;
    fx.sts().set_delay(Duration::from_millis(300));
    let token = fx.mint(ROLE_SESSION).token();
    let client = Arc::new(TestClient::new(&fx.pki));
    let url = fx.runway.url("/aws");
    let requests = (0..50).map(|_| {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        tokio::spawn(async move { client.get(&url, Some(&token)).await.status })
    });
    let statuses = futures_util::future::join_all(requests).await;
    for status in statuses {
        assert_eq!(status.unwrap_or_else(|e| panic!("{e}")), 200);
    }
    assert_eq!(fx.sts().calls(), 1, "one STS call for the whole burst");
    assert_eq!(fx.upstream.requests(), 50);
    let (_, metrics) = fx.runway.admin_get("/metrics").await;
    assert!(metrics.contains("runway_token_cache_misses_total 1\n"), "{metrics}");
    assert!(metrics.contains("runway_token_cache_hits_total 49\n"), "{metrics}");
}

#[tokio::test]
async fn the_accounts_allowlist_refuses_other_accounts() {
    let fx = fixture("accounts = [\"111122223333\"]", "").await;
    fx.allowed(&fx.mint(ROLE_SESSION).token()).await;
    fx.refused(&fx.mint(USER).token(), "AWS account 444455556666 is not allowed here").await;
    assert_eq!(fx.sts().calls(), 2, "the account is known only once STS has answered");
    let event = audit_event(&fx.pki, |e| e["status"] == 401).await;
    assert_eq!(event["reason"], "account_not_allowed");
    assert_eq!(event["subject"], Value::Null, "a refused principal is not an identity");
}

#[tokio::test]
async fn policy_rules_match_the_aws_claims() {
    let routes = r#"
[[routes]]
name = "deploy"
path_prefix = "/deploy"
[[routes.allow]]
issuer = "aws"
claims = { arn = "arn:aws:iam::*:role/ci-*", session_name = "gitlab-job-*", account = ["111122223333"] }
"#;
    let fx = fixture("", routes).await;
    let res = fx.get("/deploy", &fx.mint(ROLE_SESSION).token()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = fx.get("/deploy", &fx.mint(USER).token()).await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(res.json()["detail"].as_str().is_some_and(|d| d.contains("account")), "{}", res.text());
}

/// Two aws issuers on one STS, told apart only by audience: the audience STS accepts picks the issuer.
#[tokio::test]
async fn several_aws_issuers_are_told_apart_by_the_audience_sts_accepts() {
    let pki = Pki::generate();
    let sts = FakeSts::start(&pki).await;
    let upstream = EchoUpstream::start(&pki).await;
    let config = format!(
        "{}{}{}{}{}",
        base_config(&pki, &upstream.url()),
        aws_issuer_block("cluster-a", "cluster-a", &sts, &pki, ""),
        aws_issuer_block("cluster-b", "cluster-b", &sts, &pki, ""),
        open_route("a", "/a", "cluster-a"),
        open_route("b", "/b", "cluster-b"),
    );
    let runway = Runway::start(&pki, &config).await;
    let client = TestClient::new(&pki);
    let token = Mint::cli(&sts.endpoint(), ROLE_SESSION, "cluster-b").token();
    let res = client.get(&runway.url("/b"), Some(&token)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["headers"]["x-runway-issuer"][0], "cluster-b");
    let audiences: Vec<Option<String>> = sts.log().into_iter().map(|c| c.audience).collect();
    assert_eq!(audiences, [Some("cluster-a".into()), Some("cluster-b".into())], "audiences tried in config order");
    // Cached as cluster-b's: the other route's rule does not match it, and STS is not asked again.
    let res = client.get(&runway.url("/a"), Some(&token)).await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(sts.calls(), 2);
}

/// AWS outbound identity federation JWTs (`sts:GetWebIdentityToken`) are `oidc` tokens: the account sits in
/// a nested claim reached with a JSON Pointer, in a condition and in an identity header.
#[tokio::test]
async fn federation_jwts_use_json_pointer_conditions() {
    const ISS: &str = "https://a1b2c3d4-e5f6-4789-abcd-ef0123456789.tokens.sts.global.api.aws";
    const FED_AUD: &str = "https://deploy.example.com";
    let pki = Pki::generate();
    let key = SigningKey::rsa("fed-1");
    let upstream = EchoUpstream::start(&pki).await;
    let jwks_file = pki.write_file("fed-jwks.json", jwks(&[&key]).to_string().as_bytes());
    let config = format!(
        "{}{}{}",
        base_config(&pki, &upstream.url()),
        issuer_block(
            "aws-federation",
            "oidc",
            ISS,
            FED_AUD,
            &format!(
                "jwks_file = \"{}\"\n[issuers.headers]\n\"X-Runway-Aws-Account\" = \"/https:~1~1sts.amazonaws.com~1/aws_account\"",
                jwks_file.display()
            )
        ),
        r#"
[[routes]]
name = "billing"
path_prefix = "/billing"
[[routes.allow]]
issuer = "aws-federation"
claims = { "/https:~1~1sts.amazonaws.com~1/aws_account" = ["123456789012", "210987654321"], sub = "arn:aws:iam::*:role/billing-*" }
"#
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let token = |account: &str| {
        key.mint(&claims(
            ISS,
            FED_AUD,
            json!({
                "sub": format!("arn:aws:iam::{account}:role/billing-export"),
                "https://sts.amazonaws.com/": {"aws_account": account, "source_region": "eu-west-1"},
            }),
        ))
    };
    let res = client.get(&runway.url("/billing"), Some(&token("123456789012"))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["headers"]["x-runway-aws-account"][0], "123456789012");
    let res = client.get(&runway.url("/billing"), Some(&token("999999999999"))).await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(res.text().contains("/https:~1~1sts.amazonaws.com~1/aws_account"), "{}", res.text());

    // No aws issuer here: an aws token is refused before anything is parsed or called.
    let res = client.get(&runway.url("/billing"), Some(&token_for_url("https://sts.amazonaws.com/"))).await;
    assert_eq!(res.status, 401);
    assert!(res.header("www-authenticate").is_some_and(|w| w.contains("aws tokens are not accepted here")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_issuer_and_the_verdict() {
    let fx = fixture("", "").await;
    let config = fx.runway.config_path.clone();
    let run = |token: String| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_runway"))
                .arg("explain")
                .arg("-c")
                .arg(&config)
                .args(["--method", "GET", "--url", "https://deploy.example.com/aws", "--token", &token])
                .output()
                .unwrap_or_else(|e| panic!("{e}"))
        })
    };
    let out = run(fx.mint(ROLE_SESSION).token()).await.unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "format:    aws presigned STS GetCallerIdentity URL",
        &format!("sts:       {}", fx.sts().endpoint()),
        "issuer:    candidates \"aws\"",
        "sts call:  accepted for audience \"runway-test\": issuer \"aws\"",
        &format!("identity:  sub \"{ROLE_ARN}\""),
        &format!("x-runway-aws-arn: {ROLE_ARN}"),
        "decision:  allow",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let out =
        run(Mint::cli(&fx.sts().endpoint(), ROLE_SESSION, "other").token()).await.unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("refusal:   401 STS refused the token"), "{text}");
    assert!(text.contains("decision:  deny"), "{text}");
    // The URL inside the token is what the CLI would print; the test support decodes it the same way.
    assert!(url_of(&fx.mint(USER).token()).starts_with(&format!("{}/?Action=GetCallerIdentity&", fx.sts().endpoint())));
}

/// `runway check` reads `sts_ca` and names the key when it is missing or not a CA bundle; contacts no STS.
#[tokio::test]
async fn check_reads_the_sts_ca() {
    let pki = Pki::generate();
    let sts = FakeSts::start(&pki).await;
    let check = |ca: &std::path::Path| {
        let config = format!(
            "{}{}",
            base_config(&pki, "https://127.0.0.1:1"),
            aws_issuer_block("aws", AUD, &sts, &pki, "")
                .replace(&pki.ca_pem.display().to_string(), &ca.display().to_string())
        );
        let path = pki.write_file("check.toml", config.as_bytes());
        std::process::Command::new(env!("CARGO_BIN_EXE_runway"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let out = check(&pki.ca_pem);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: 1 issuer(s), 0 route(s)"));
    for ca in [pki.dir.path().join("missing.pem"), pki.write_file("garbage.pem", b"not a certificate")] {
        let out = check(&ca);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("issuers[0].sts_ca: "), "the error names the key: {stderr}");
    }
    assert_eq!(sts.calls(), 0);
}
