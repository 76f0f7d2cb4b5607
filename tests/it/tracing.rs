//! `[tracing]` (contract section 12) end to end: Runway between the fake IdP and the echo Kong, exporting to a
//! real OTLP/HTTP receiver (`support::otlp`, decoding with `opentelemetry-proto`). The span tree of an allowed
//! and of a refused request, the `traceparent` Kong receives (continuing a trusted caller's trace, a new one
//! otherwise), no token or query string in any attribute, the audit `trace_id`, sampling at 0, a collector that
//! is down, reload, and config errors naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::otlp::{OtlpReceiver, Span};
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const AUD: &str = "https://deploy.example.com";
const QUERY: &str = "ticket=query-secret-4711";
/// A caller's W3C trace context, sampled.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

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

/// `[tracing]` towards `endpoint`, with `extra` lines.
fn tracing_section(endpoint: &str, extra: &str) -> String {
    format!("\n[tracing]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"runway-test\"\n{extra}\n")
}

/// A config: the backends, the gitlab issuer, [`ROUTES`], `more` (sections), trusting `trusted` peers.
fn config(b: &Backends, trusted: &[&str], more: &str) -> String {
    format!(
        "{}{}{ROUTES}{more}",
        base_config_trusting(&b.pki, &b.upstream.url(), trusted),
        issuer_block("gitlab", "gitlab", &b.idp.issuer(), AUD, ""),
    )
}

async fn start(b: &Backends, config: &str) -> Runway {
    let runway = Runway::start(&b.pki, config).await;
    runway.wait_ready().await;
    runway
}

fn token(b: &Backends, environment: &str) -> String {
    b.key.mint(&claims(&b.idp.issuer(), AUD, json!({"environment": environment})))
}

/// `POST url` with `X-Request-Id: id`, the bearer token and `headers`.
async fn post(client: &TestClient, url: &str, id: &str, token: Option<&str>, headers: &[(&str, &str)]) -> TestResponse {
    let mut req = Request::post(url).header("x-request-id", id);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    client.send(req.body(Full::new(Bytes::from_static(b"{}"))).unwrap_or_else(|e| panic!("request: {e}"))).await
}

/// The audit event of request `id`.
fn audit_of(b: &Backends, id: &str) -> Value {
    audit_lines(&b.pki).into_iter().find(|e| e["request_id"] == id).unwrap_or_else(|| panic!("no audit event for {id}"))
}

/// The one header Kong received (the echo lists each header's values).
fn kong_header(res: &TestResponse, name: &str) -> Option<String> {
    let values = res.json()["headers"][name].as_array().cloned()?;
    assert_eq!(values.len(), 1, "Kong got {name} {values:?}");
    values[0].as_str().map(str::to_string)
}

/// `traceparent` split: (trace id, span id, flags).
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00", "{traceparent}");
    (fields[1].to_string(), fields[2].to_string(), fields[3].to_string())
}

fn one<'a>(trace: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = trace.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "expected one {name:?} span in {trace:#?}");
    found[0]
}

fn names(trace: &[Span]) -> Vec<&str> {
    let mut names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names
}

/// No exported attribute holds any of `secrets`.
fn assert_nothing_leaks(spans: &[Span], secrets: &[&str]) {
    assert!(!spans.is_empty());
    for span in spans {
        for (key, value) in &span.attributes {
            for secret in secrets {
                assert!(!value.contains(secret), "attribute {key} of {:?} holds {secret:?}: {value}", span.name);
            }
        }
        assert!(!span.name.contains('?'), "a span name with a query: {}", span.name);
    }
}

#[tokio::test]
async fn an_allowed_request_is_one_trace_server_verify_policy_upstream_with_the_key_fetch_it_waited_for() {
    let b = Backends::start().await;
    let otlp = OtlpReceiver::start().await;
    let tracing =
        tracing_section(&otlp.endpoint(), "sample_ratio = 1.0\n[tracing.headers]\nx-collector-key = \"k-123\"");
    let runway = start(&b, &config(&b, &[], &tracing)).await;
    let client = TestClient::new(&b.pki);
    // The issuer starts signing with a key Runway has not seen: the first request waits for the refetch.
    let k2 = SigningKey::rsa("k2");
    b.idp.set_jwks(jwks(&[&b.key, &k2]));
    let fresh = k2.mint(&claims(&b.idp.issuer(), AUD, json!({"environment": "production"})));
    let fetches = b.idp.jwks_fetches();

    let url = runway.url(&format!("/deploy/app?{QUERY}"));
    let res = post(&client, &url, "allowed-1", Some(&fresh), &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(b.idp.jwks_fetches(), fetches + 1, "the unknown key id was refetched once");
    let traceparent = kong_header(&res, "traceparent").unwrap_or_else(|| panic!("Kong got no traceparent"));
    let (trace_id, kong_parent, flags) = parts(&traceparent);
    assert_eq!(flags, "01", "sampled");
    assert_eq!(audit_of(&b, "allowed-1")["trace_id"], trace_id.as_str(), "the audit line leads to the trace");

    let trace = otlp.wait_for(&trace_id, "upstream").await;
    assert_eq!(names(&trace), ["POST deploy", "jwks fetch", "policy", "upstream", "verify"]);
    let server = one(&trace, "POST deploy");
    let verify = one(&trace, "verify");
    let fetch = one(&trace, "jwks fetch");
    let policy = one(&trace, "policy");
    let upstream = one(&trace, "upstream");
    assert_eq!((server.kind.as_str(), server.parent_span_id.as_str()), ("SERVER", ""), "a new trace: a root span");
    assert_eq!(server.service, "runway-test");
    for child in [verify, policy, upstream] {
        assert_eq!(child.parent_span_id, server.span_id, "{} is a child of the server span", child.name);
    }
    assert_eq!(fetch.parent_span_id, verify.span_id, "the fetch the verification waited for is its child");
    assert_eq!(upstream.span_id, kong_parent, "Kong's traceparent names the upstream span");
    assert_eq!((verify.kind.as_str(), policy.kind.as_str()), ("INTERNAL", "INTERNAL"));
    assert_eq!((fetch.kind.as_str(), upstream.kind.as_str()), ("CLIENT", "CLIENT"));

    let fingerprint = fingerprint(&fresh);
    let expect = |span: &Span, pairs: &[(&str, &str)]| {
        for (key, value) in pairs {
            assert_eq!(span.attr(key), Some(*value), "{}.{key}: {:?}", span.name, span.attributes);
        }
    };
    expect(
        server,
        &[
            ("http.request.method", "POST"),
            ("http.route", "deploy"),
            ("http.response.status_code", "200"),
            ("url.path", "/deploy/app"),
            ("url.scheme", "https"),
            ("server.address", "localhost"),
            ("network.protocol.version", "1.1"),
            ("client.address", "127.0.0.1"),
            ("runway.decision", "allow"),
            ("runway.issuer", "gitlab"),
            ("runway.token_sha256", &fingerprint),
            ("runway.request_id", "allowed-1"),
        ],
    );
    assert_eq!(server.attr("runway.reason"), None, "no reason on allow");
    expect(verify, &[("runway.issuer", "gitlab"), ("runway.decision", "allow"), ("runway.token_sha256", &fingerprint)]);
    expect(
        fetch,
        &[("http.request.method", "GET"), ("http.response.status_code", "200"), ("url.full", &b.idp.jwks_uri())],
    );
    expect(policy, &[("runway.decision", "allow"), ("runway.reason", "none")]);
    expect(
        upstream,
        &[("http.request.method", "POST"), ("http.response.status_code", "200"), ("server.address", "127.0.0.1")],
    );
    assert!(trace.iter().all(|s| s.status != "ERROR"), "{trace:#?}");

    // The same token again: verified from the cache, no fetch, and a trace of its own.
    let again = post(&client, &url, "allowed-2", Some(&fresh), &[]).await;
    let (second, _, _) = parts(&kong_header(&again, "traceparent").unwrap_or_default());
    assert_ne!(second, trace_id, "one trace per request");
    assert_eq!(names(&otlp.wait_for(&second, "upstream").await), ["POST deploy", "policy", "upstream", "verify"]);

    // Never the token (nor its signature), never the query string; the configured export header arrives.
    let signature = fresh.rsplit('.').next().unwrap_or_default();
    assert_nothing_leaks(&otlp.spans(), &[&fresh, signature, QUERY, "query-secret"]);
    assert!(otlp.export_headers().iter().all(|h| h.get("x-collector-key").is_some_and(|v| v == "k-123")));
    assert!(otlp.export_headers().iter().all(|h| h["content-type"] == "application/x-protobuf"));
}

fn fingerprint(token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn refused_requests_have_no_upstream_span_and_name_the_reason() {
    let b = Backends::start().await;
    let otlp = OtlpReceiver::start().await;
    let runway = start(&b, &config(&b, &[], &tracing_section(&otlp.endpoint(), ""))).await;
    let client = TestClient::new(&b.pki);
    let before = b.upstream.requests();

    let staging = token(&b, "staging");
    let t = now();
    let expired = b.key.mint(&claims(&b.idp.issuer(), AUD, json!({"iat": t - 900, "exp": t - 600})));
    assert_eq!(
        post(&client, &runway.url(&format!("/deploy/x?{QUERY}")), "denied", Some(&staging), &[]).await.status,
        403
    );
    assert_eq!(post(&client, &runway.url("/deploy/x"), "expired", Some(&expired), &[]).await.status, 401);
    assert_eq!(post(&client, &runway.url("/nowhere"), "no-route", Some(&staging), &[]).await.status, 404);
    assert_eq!(b.upstream.requests(), before, "nothing reached Kong");

    let trace_of = |id: &str| audit_of(&b, id)["trace_id"].as_str().map(str::to_string).unwrap_or_default();
    let denied = otlp.wait_for(&trace_of("denied"), "policy").await;
    assert_eq!(names(&denied), ["POST deploy", "policy", "verify"], "no upstream span");
    let server = one(&denied, "POST deploy");
    assert_eq!(server.attr("runway.decision"), Some("deny"));
    assert_eq!(server.attr("runway.reason"), Some("policy"));
    assert_eq!(server.attr("http.response.status_code"), Some("403"));
    assert_eq!(server.status, "UNSET", "a 4xx is the client's, not a server error");
    let policy = one(&denied, "policy");
    assert_eq!((policy.attr("runway.decision"), policy.attr("runway.reason")), (Some("deny"), Some("policy")));

    let expired_trace = otlp.wait_for(&trace_of("expired"), "verify").await;
    assert_eq!(names(&expired_trace), ["POST deploy", "verify"], "refused before policy");
    let verify = one(&expired_trace, "verify");
    assert_eq!((verify.attr("runway.decision"), verify.attr("runway.reason")), (Some("deny"), Some("expired")));
    assert_eq!(one(&expired_trace, "POST deploy").attr("runway.reason"), Some("expired"));

    let no_route = otlp.wait_for(&trace_of("no-route"), "POST").await;
    assert_eq!(names(&no_route), ["POST"], "no route: the method alone names the span");
    assert_eq!(no_route[0].attr("runway.reason"), Some("no_route"));
    assert_eq!(no_route[0].attr("http.route"), None);

    // A report-mode denial is forwarded: its spans say would_deny, and there is an upstream span.
    let res = post(&client, &runway.url("/shadow/x"), "shadow", Some(&staging), &[]).await;
    assert_eq!(res.status, 200);
    let shadow = otlp.wait_for(&trace_of("shadow"), "upstream").await;
    assert_eq!(names(&shadow), ["POST shadow", "policy", "upstream", "verify"]);
    assert_eq!(one(&shadow, "policy").attr("runway.decision"), Some("would_deny"));
    assert_eq!(one(&shadow, "POST shadow").attr("runway.decision"), Some("would_deny"));
    assert_eq!(one(&shadow, "POST shadow").attr("runway.reason"), Some("policy"));

    assert_nothing_leaks(&otlp.spans(), &[&staging, &expired, QUERY, "query-secret"]);
}

#[tokio::test]
async fn one_time_and_asserted_routes_add_replay_and_assertion_spans() {
    let b = Backends::start().await;
    let otlp = OtlpReceiver::start().await;
    let signing = aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .unwrap_or_else(|e| panic!("key: {e}"));
    let der = signing.to_pkcs8v1().unwrap_or_else(|e| panic!("pkcs8: {e}"));
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", b64_standard(der.as_ref()));
    let key = b.pki.write_file("assertion-key.pem", pem.as_bytes());
    let once = "\n[[routes]]\nname = \"once\"\npath_prefix = \"/once\"\none_time = true\n[[routes.allow]]\nissuer = \"gitlab\"\n";
    let more = format!("{once}\n[assertion]\nkey = \"{}\"\n{}", key.display(), tracing_section(&otlp.endpoint(), ""));
    let runway = start(&b, &config(&b, &[], &more)).await;
    let client = TestClient::new(&b.pki);
    let jti = b.key.mint(&claims(&b.idp.issuer(), AUD, json!({"jti": "job-7-deploy"})));

    let first = post(&client, &runway.url("/once/go"), "once-1", Some(&jti), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let trace_id = audit_of(&b, "once-1")["trace_id"].as_str().map(str::to_string).unwrap_or_default();
    let trace = otlp.wait_for(&trace_id, "upstream").await;
    assert_eq!(names(&trace), ["POST once", "assertion", "policy", "replay", "upstream", "verify"]);
    let server = one(&trace, "POST once");
    assert!(trace.iter().filter(|s| s.name != "POST once").all(|s| s.parent_span_id == server.span_id));
    assert_eq!(one(&trace, "replay").attr("runway.decision"), Some("allow"));

    let replayed = post(&client, &runway.url("/once/go"), "once-2", Some(&jti), &[]).await;
    assert_eq!(replayed.status, 401);
    let trace_id = audit_of(&b, "once-2")["trace_id"].as_str().map(str::to_string).unwrap_or_default();
    let trace = otlp.wait_for(&trace_id, "replay").await;
    assert_eq!(names(&trace), ["POST once", "policy", "replay", "verify"], "refused: no assertion, no upstream");
    let replay = one(&trace, "replay");
    assert_eq!((replay.attr("runway.decision"), replay.attr("runway.reason")), (Some("deny"), Some("replayed")));
    assert_eq!(one(&trace, "POST once").attr("runway.reason"), Some("replayed"));
    // The assertion Kong got is a token too: it never becomes an attribute either.
    let assertion = first.json()["headers"]["authorization"][0].as_str().map(str::to_string).unwrap_or_default();
    assert!(assertion.starts_with("Bearer "), "{}", first.text());
    assert_nothing_leaks(&otlp.spans(), &[&jti, assertion.trim_start_matches("Bearer ")]);
}

fn b64_standard(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    text.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn an_aws_token_waits_for_sts_under_its_verify_span() {
    use crate::support::sts::{FakeSts, Mint, ROLE_SESSION, aws_issuer_block};
    let pki = Pki::generate();
    let sts = FakeSts::start(&pki).await;
    let upstream = EchoUpstream::start(&pki).await;
    let otlp = OtlpReceiver::start().await;
    let config = format!(
        "{}{}{}{}",
        base_config(&pki, &upstream.url()),
        aws_issuer_block("aws", "runway-test", &sts, &pki, ""),
        open_route("aws", "/aws", "aws"),
        tracing_section(&otlp.endpoint(), ""),
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let token = Mint::cli(&sts.endpoint(), ROLE_SESSION, "runway-test").token();

    let res = post(&client, &runway.url("/aws/x"), "aws-1", Some(&token), &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(sts.calls(), 1);
    let (trace_id, _, _) = parts(&kong_header(&res, "traceparent").unwrap_or_default());
    let trace = otlp.wait_for(&trace_id, "upstream").await;
    assert_eq!(names(&trace), ["POST aws", "policy", "sts GetCallerIdentity", "upstream", "verify"]);
    let call = one(&trace, "sts GetCallerIdentity");
    assert_eq!(call.parent_span_id, one(&trace, "verify").span_id);
    assert_eq!((call.kind.as_str(), call.attr("http.response.status_code")), ("CLIENT", Some("200")));
    assert_eq!(one(&trace, "verify").attr("runway.issuer"), Some("aws"));
    // The presigned URL's query is the signature: neither it nor the token is in any attribute.
    let url = crate::support::sts::url_of(&token);
    let query = url.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
    assert!(query.contains("X-Amz-Signature"), "{url}");
    assert_nothing_leaks(&otlp.spans(), &[&token, &query, "X-Amz-Signature"]);

    // The verdict is cached: the same token again makes no STS call and no STS span.
    let again = post(&client, &runway.url("/aws/x"), "aws-2", Some(&token), &[]).await;
    let (second, _, _) = parts(&kong_header(&again, "traceparent").unwrap_or_default());
    assert_eq!(names(&otlp.wait_for(&second, "upstream").await), ["POST aws", "policy", "upstream", "verify"]);
    assert_eq!(sts.calls(), 1);
}

#[tokio::test]
async fn kong_continues_a_trusted_callers_trace_and_starts_a_new_one_for_anyone_else() {
    let b = Backends::start().await;
    let otlp = OtlpReceiver::start().await;
    let client = TestClient::new(&b.pki);
    let good = token(&b, "production");
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let sent = [("traceparent", caller.as_str()), ("tracestate", "vendor=abc")];
    let section = tracing_section(&otlp.endpoint(), "");

    // The peer (127.0.0.1) is a trusted proxy: its trace goes on through Runway into Kong.
    let trusted = start(&b, &config(&b, &["127.0.0.1/32"], &section)).await;
    let res = post(&client, &trusted.url("/deploy/a"), "trusted", Some(&good), &sent).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let (trace_id, parent, flags) = parts(&kong_header(&res, "traceparent").unwrap_or_default());
    assert_eq!((trace_id.as_str(), flags.as_str()), (CALLER_TRACE, "01"), "the caller's trace and sampling");
    assert_ne!(parent, CALLER_SPAN, "Kong's parent is Runway's span, not the caller's");
    assert_eq!(kong_header(&res, "tracestate").as_deref(), Some("vendor=abc"), "a trusted tracestate goes on");
    assert_eq!(audit_of(&b, "trusted")["trace_id"], CALLER_TRACE);
    let trace = otlp.wait_for(CALLER_TRACE, "upstream").await;
    assert_eq!(one(&trace, "POST deploy").parent_span_id, CALLER_SPAN, "the server span continues the caller's");
    assert_eq!(one(&trace, "upstream").span_id, parent);
    trusted.stop().await;

    // Not a trusted peer: the caller's context is ignored, and neither header reaches Kong as the caller sent it.
    let untrusted = start(&b, &config(&b, &[], &section)).await;
    let res = post(&client, &untrusted.url("/deploy/a"), "untrusted", Some(&good), &sent).await;
    assert_eq!(res.status, 200);
    let (trace_id, _, _) = parts(&kong_header(&res, "traceparent").unwrap_or_default());
    assert_ne!(trace_id, CALLER_TRACE, "a new trace");
    let headers = res.json()["headers"].clone();
    assert!(headers.get("tracestate").is_none(), "the caller's tracestate reached Kong: {headers}");
    let trace = otlp.wait_for(&trace_id, "upstream").await;
    assert_eq!(one(&trace, "POST deploy").parent_span_id, "", "a root span");
    untrusted.stop().await;

    // trust_client_context = true: any peer's context is believed.
    let section = tracing_section(&otlp.endpoint(), "trust_client_context = true");
    let anyone = start(&b, &config(&b, &[], &section)).await;
    let res = post(&client, &anyone.url("/deploy/a"), "anyone", Some(&good), &sent).await;
    assert_eq!(parts(&kong_header(&res, "traceparent").unwrap_or_default()).0, CALLER_TRACE);
}

#[tokio::test]
async fn sample_ratio_zero_exports_nothing_but_kong_and_the_audit_still_get_the_trace() {
    let b = Backends::start().await;
    let otlp = OtlpReceiver::start().await;
    let runway = start(&b, &config(&b, &[], &tracing_section(&otlp.endpoint(), "sample_ratio = 0"))).await;
    let client = TestClient::new(&b.pki);

    let res = post(&client, &runway.url("/deploy/a"), "unsampled", Some(&token(&b, "production")), &[]).await;
    assert_eq!(res.status, 200);
    let (trace_id, span_id, flags) = parts(&kong_header(&res, "traceparent").unwrap_or_default());
    assert_eq!(flags, "00", "Kong is told the trace is not sampled");
    assert!(trace_id.len() == 32 && trace_id != "0".repeat(32) && span_id != "0".repeat(16));
    assert_eq!(audit_of(&b, "unsampled")["trace_id"], trace_id.as_str());
    assert_eq!(post(&client, &runway.url("/deploy/a"), "unsampled-403", Some(&token(&b, "qa")), &[]).await.status, 403);
    assert!(audit_of(&b, "unsampled-403")["trace_id"].as_str().is_some_and(|t| t.len() == 32));

    // Stopping flushes the exporter: whatever had been queued would be sent now.
    runway.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(otlp.spans().is_empty(), "sample_ratio 0 exported {:#?}", otlp.spans());
    assert!(otlp.export_headers().is_empty(), "not even an empty export");
}

#[tokio::test]
async fn a_collector_that_is_down_costs_requests_nothing_and_is_counted() {
    let b = Backends::start().await;
    let down = format!("http://{}", unused_addr());
    let runway = start(&b, &config(&b, &[], &tracing_section(&down, ""))).await;
    let client = TestClient::new(&b.pki);
    assert_eq!(runway.metric("runway_trace_export_errors_total", &[]).await, Some(0.0));

    for i in 0..20 {
        let res =
            post(&client, &runway.url("/deploy/a"), &format!("down-{i}"), Some(&token(&b, "production")), &[]).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(res.json()["headers"]["traceparent"].is_array(), "Kong still gets a traceparent");
    }
    let errors = eventually("a failed export counted", Duration::from_secs(20), || async {
        runway.metric("runway_trace_export_errors_total", &[]).await.filter(|n| *n >= 1.0)
    })
    .await;
    assert!(errors >= 1.0);
    let res = post(&client, &runway.url("/deploy/a"), "after", Some(&token(&b, "production")), &[]).await;
    assert_eq!(res.status, 200, "still serving after the failed exports");
}

#[tokio::test]
async fn a_reload_applies_a_changed_tracing_section() {
    let b = Backends::start().await;
    let (first, second) = (OtlpReceiver::start().await, OtlpReceiver::start().await);
    let runway = start(&b, &config(&b, &[], &tracing_section(&first.endpoint(), ""))).await;
    let client = TestClient::new(&b.pki);
    let good = token(&b, "production");
    let trace_of = |res: &TestResponse| parts(&kong_header(res, "traceparent").unwrap_or_default()).0;

    let before = trace_of(&post(&client, &runway.url("/deploy/a"), "r1", Some(&good), &[]).await);
    first.wait_for(&before, "upstream").await;

    runway.rewrite_config(&config(&b, &[], &tracing_section(&second.endpoint(), "")));
    assert_eq!(runway.reload().await.0, 200);
    let after = trace_of(&post(&client, &runway.url("/deploy/a"), "r2", Some(&good), &[]).await);
    second.wait_for(&after, "upstream").await;
    assert!(first.trace(&after).is_empty(), "the new section's collector only");

    // Without [tracing]: no span, no trace id, and Runway writes no traceparent.
    runway.rewrite_config(&config(&b, &[], ""));
    assert_eq!(runway.reload().await.0, 200);
    let res = post(&client, &runway.url("/deploy/a"), "r3", Some(&good), &[]).await;
    assert_eq!(res.status, 200);
    assert!(res.json()["headers"].get("traceparent").is_none(), "{}", res.text());
    assert_eq!(audit_of(&b, "r3").get("trace_id"), None, "no trace_id without [tracing]");
}

#[tokio::test]
async fn config_errors_in_the_tracing_section_name_the_key() {
    let b = Backends::start().await;
    let cases: BTreeMap<&str, (&str, &str)> = [
        ("sample_ratio above 1", ("otlp_endpoint = \"http://c:4318\"\nsample_ratio = 1.5", "tracing.sample_ratio")),
        ("sample_ratio text", ("sample_ratio = \"often\"", "tracing.sample_ratio")),
        ("no scheme", ("otlp_endpoint = \"otel-collector:4318\"", "tracing.otlp_endpoint")),
        ("grpc port as a URL with a query", ("otlp_endpoint = \"http://c:4317/?a=b\"", "tracing.otlp_endpoint")),
        ("unknown key", ("sampel_ratio = 0.1", "unknown field `sampel_ratio`")),
        ("bad header name", ("headers = { \"bad name\" = \"v\" }", "tracing.headers.\"bad name\"")),
    ]
    .into_iter()
    .collect();
    for (what, (lines, named)) in cases {
        let text = config(&b, &[], &format!("\n[tracing]\n{lines}\n"));
        let path = b.pki.write_file("tracing-bad.toml", text.as_bytes());
        let error = ::runway::config::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains(named), "{what}: expected the error to name {named:?}, got {error:?}");
    }

    // The shipped example shows the section.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let example = ::runway::config::load(&example).unwrap_or_else(|e| panic!("config/example.toml: {e}"));
    assert!(example.tracing.is_some_and(|t| t.sample_ratio == 0.01 && !t.trust_client_context));

    // `runway check` validates the section offline and names an environment variable at fault as it names keys.
    let good = b.pki.write_file("tracing-good.toml", config(&b, &[], "\n[tracing]\n").as_bytes());
    let check = |envs: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runway"));
        cmd.arg("check")
            .arg("-c")
            .arg(&good)
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        for (name, value) in envs {
            cmd.env(name, value);
        }
        cmd.output().unwrap_or_else(|e| panic!("runway check: {e}"))
    };
    let ok = check(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.invalid:4318")]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let summary = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        summary.contains("; tracing to http://otel-collector.invalid:4318/v1/traces at sample_ratio 1;"),
        "the variable applies when the key is absent: {summary}"
    );
    let bad = check(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("OTEL_TRACES_SAMPLER"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
