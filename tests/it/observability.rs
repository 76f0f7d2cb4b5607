//! Metrics and the audit trail: exact series after a known mix of traffic, every audit field, the raw
//! token absent from every output, and no audit event lost at SIGTERM.

use std::time::Duration;

use crate::support::metrics::value;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const AUD: &str = "https://deploy.example.com";

const ROUTES: &str = r#"
[[routes]]
name = "deploy"
path_prefix = "/deploy"
methods = ["POST"]
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

fn sha256_prefix(token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

async fn post(client: &TestClient, url: &str, token: Option<&str>) -> TestResponse {
    let mut req = Request::post(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    client.send(req.body(Full::new(Bytes::new())).unwrap_or_else(|e| panic!("{e}"))).await
}

#[tokio::test]
async fn metrics_and_audit_describe_every_request() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let config = format!(
        "{}{}{ROUTES}",
        base_config(&pki, &upstream.url())
            .replace("[audit]", "[audit]\nclaims = [\"environment\", \"project_path\", \"job_id\"]"),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let good = key.mint(&claims(&idp.issuer(), AUD, json!({"environment": "production", "job_id": 7})));
    let staging = key.mint(&claims(&idp.issuer(), AUD, json!({"environment": "staging"})));
    let t = now();
    let expired = key.mint(&claims(&idp.issuer(), AUD, json!({"iat": t - 900, "exp": t - 600})));

    assert_eq!(post(&client, &runway.url("/deploy/a?secret=1"), Some(&good)).await.status, 200);
    assert_eq!(post(&client, &runway.url("/deploy/b"), Some(&good)).await.status, 200);
    assert_eq!(post(&client, &runway.url("/deploy/a"), Some(&staging)).await.status, 403);
    assert_eq!(post(&client, &runway.url("/deploy/a"), Some(&expired)).await.status, 401);
    assert_eq!(post(&client, &runway.url("/deploy/a"), None).await.status, 401);
    assert_eq!(post(&client, &runway.url("/deploy/a"), Some("garbage")).await.status, 401);
    assert_eq!(client.get(&runway.url("/deploy/a"), Some(&good)).await.status, 405);
    assert_eq!(post(&client, &runway.url("/nowhere"), Some(&good)).await.status, 404);
    assert_eq!(post(&client, &runway.url("/shadow"), Some(&staging)).await.status, 200);

    let (status, text) = runway.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let v = |name: &str, labels: &[(&str, &str)]| value(&text, name, labels);
    assert_eq!(v("runway_requests_total", &[("route", "deploy"), ("status", "200")]), Some(2.0));
    assert_eq!(v("runway_requests_total", &[("route", "deploy"), ("status", "403")]), Some(1.0));
    assert_eq!(v("runway_requests_total", &[("route", "deploy"), ("status", "401")]), Some(3.0));
    assert_eq!(v("runway_requests_total", &[("route", "deploy"), ("status", "405")]), Some(1.0));
    assert_eq!(v("runway_requests_total", &[("route", "-"), ("status", "404")]), Some(1.0));
    assert_eq!(v("runway_requests_total", &[("route", "shadow"), ("status", "200")]), Some(1.0));
    let decisions = |issuer: &str, decision: &str, reason: &str| {
        v("runway_auth_decisions_total", &[("issuer", issuer), ("decision", decision), ("reason", reason)])
    };
    assert_eq!(decisions("gitlab", "allow", "none"), Some(2.0));
    assert_eq!(decisions("gitlab", "deny", "policy"), Some(1.0), "the enforced refusal");
    assert_eq!(decisions("gitlab", "would_deny", "policy"), Some(1.0), "report mode: counted as a shadow denial");
    assert_eq!(decisions("gitlab", "deny", "expired"), Some(1.0));
    assert_eq!(decisions("-", "deny", "missing"), Some(1.0));
    assert_eq!(decisions("-", "deny", "malformed"), Some(1.0));
    assert_eq!(v("runway_request_duration_seconds_count", &[("route", "deploy")]), Some(7.0));
    assert_eq!(v("runway_upstream_duration_seconds_count", &[]), Some(3.0));
    assert_eq!(v("runway_jwks_keys", &[("issuer", "gitlab")]), Some(1.0));
    assert!(v("runway_jwks_refresh_total", &[("issuer", "gitlab"), ("result", "ok")]).is_some_and(|n| n >= 1.0));
    assert!(v("runway_jwks_last_success_timestamp_seconds", &[("issuer", "gitlab")]).is_some_and(|ts| ts > 1.6e9));
    // good (verified, then a hit), staging (verified, then a hit on the shadow route), expired (verified and
    // refused, never cached); garbage never reaches an issuer.
    assert_eq!(v("runway_token_cache_misses_total", &[]), Some(3.0), "three tokens were fully verified");
    assert_eq!(v("runway_token_cache_hits_total", &[]), Some(2.0), "repeats skip the signature check");
    assert_eq!(v("runway_build_info", &[("version", ::runway::VERSION)]), Some(1.0));
    assert_eq!(v("runway_config_reloads_total", &[("result", "error")]), Some(0.0));
    assert!(v("runway_connections_active", &[]).is_some());
    for token in [&good, &staging, &expired] {
        assert!(!text.contains(token.as_str()), "a token reached /metrics");
    }
    assert!(!text.contains("user-1") && !text.contains("/deploy/a"), "subjects and paths never become labels");

    runway.stop().await;
    let lines = audit_lines(&pki);
    assert_eq!(lines.len(), 9, "one event per request: {lines:#?}");
    let first = &lines[0];
    for field in [
        "ts",
        "request_id",
        "decision",
        "status",
        "reason",
        "route",
        "issuer",
        "subject",
        "claims",
        "token_sha256",
        "method",
        "path",
        "client_ip",
        "duration_ms",
    ] {
        assert!(first.get(field).is_some(), "audit field {field} missing: {first}");
    }
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["status"], 200);
    assert_eq!(first["reason"], Value::Null);
    assert_eq!(first["route"], "deploy");
    assert_eq!(first["issuer"], "gitlab");
    assert_eq!(first["subject"], "user-1");
    assert_eq!(
        first["claims"],
        json!({"environment": "production", "job_id": 7}),
        "configured subset, absent left out"
    );
    assert_eq!(first["token_sha256"], sha256_prefix(&good));
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/deploy/a", "no query string");
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert!(first["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    assert!(first["ts"].as_str().is_some_and(|ts| ts.ends_with('Z') && ts.contains('T')), "RFC 3339: {}", first["ts"]);

    let by_status =
        |status: u16, nth: usize| lines.iter().filter(|l| l["status"] == status).nth(nth).cloned().unwrap_or_default();
    let forbidden = by_status(403, 0);
    assert_eq!((forbidden["decision"].as_str(), forbidden["reason"].as_str()), (Some("deny"), Some("policy")));
    assert_eq!(forbidden["subject"], "user-1", "who was refused is recorded");
    assert_eq!(forbidden["claims"], json!({"environment": "staging"}));
    let expired_line = by_status(401, 0);
    assert_eq!(expired_line["reason"], "expired");
    assert_eq!(expired_line["issuer"], "gitlab");
    assert_eq!(expired_line["token_sha256"], sha256_prefix(&expired));
    let missing = by_status(401, 1);
    assert_eq!((missing["reason"].as_str(), missing["token_sha256"].as_str()), (Some("missing"), None));
    let garbage = by_status(401, 2);
    assert_eq!(garbage["token_sha256"], sha256_prefix("garbage"), "fingerprinted even when malformed");
    assert_eq!(by_status(405, 0)["reason"], "method_not_allowed");
    let not_found = by_status(404, 0);
    assert_eq!((not_found["reason"].as_str(), not_found["route"].as_str()), (Some("no_route"), None));
    let shadow = lines.iter().find(|l| l["route"] == "shadow").cloned().unwrap_or_default();
    assert_eq!((shadow["decision"].as_str(), shadow["reason"].as_str()), (Some("would_deny"), Some("policy")));
    assert_eq!(shadow["subject"], "user-1");
    let request_ids: std::collections::HashSet<&str> = lines.iter().filter_map(|l| l["request_id"].as_str()).collect();
    assert_eq!(request_ids.len(), 9, "request ids are unique");

    let raw = std::fs::read_to_string(audit_path(&pki)).unwrap_or_default();
    for token in [&good, &staging, &expired] {
        assert!(!raw.contains(token.as_str()), "a raw token reached the audit log");
    }
}

/// The real binary (`runway serve`) with one gitlab issuer and an open route.
async fn spawn_serve(pki: &Pki, idp: &TestIdp, upstream: &EchoUpstream) -> Binary {
    let config = format!(
        "{}{}{}",
        base_config(pki, &upstream.url()),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
        open_route("all", "/", "gitlab")
    );
    Binary::spawn(pki, &config).await
}

#[tokio::test]
async fn the_binary_flushes_every_event_on_sigterm_and_logs_no_token() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let runway = spawn_serve(&pki, &idp, &upstream).await;
    let client = TestClient::new(&pki);
    let base = runway.url("");
    let t = now();
    let good = key.mint(&claims(&idp.issuer(), AUD, json!({})));
    let bad = key.mint(&claims(&idp.issuer(), AUD, json!({"iat": t - 900, "exp": t - 600})));
    let forged = SigningKey::rsa("k1").mint(&claims(&idp.issuer(), AUD, json!({})));
    // Keys load in the background: wait for the first 200.
    for _ in 0..100 {
        if client.get(&format!("{base}/warm"), Some(&good)).await.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    const N: usize = 60;
    for i in 0..N {
        let token = [&good, &bad, &forged][i % 3];
        client.get(&format!("{base}/req/{i}"), Some(token)).await;
    }
    runway.signal("TERM");
    let output = runway.wait().await;
    assert!(output.status.success(), "exit status after SIGTERM: {:?}", output.status);
    let lines: Vec<Value> =
        audit_lines(&pki).into_iter().filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/req/"))).collect();
    assert_eq!(lines.len(), N, "every event of the last requests is on disk");
    assert_eq!(lines.last().and_then(|l| l["path"].as_str()), Some(format!("/req/{}", N - 1).as_str()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let audit = std::fs::read_to_string(audit_path(&pki)).unwrap_or_default();
    for token in [&good, &bad, &forged] {
        assert!(!stderr.contains(token.as_str()), "a raw token reached the process log");
        assert!(!audit.contains(token.as_str()), "a raw token reached the audit log");
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!stderr.contains(signature) && !audit.contains(signature));
    }
    assert!(stderr.contains(&sha256_prefix(&bad)), "refusals are logged with the token's fingerprint");
    let logs: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}")))
        .collect();
    let refusal = logs
        .iter()
        .find(|l| l["message"] == "request refused" && l["token_sha256"] == sha256_prefix(&bad))
        .unwrap_or_else(|| panic!("no refusal logged for the expired token"));
    assert_eq!(refusal["reason"], "expired");
    assert_eq!(refusal["status"], 401);
    assert_eq!(refusal["route"], "all");
    assert_eq!(refusal["span"]["name"], "request", "logged inside the request span");
    assert_eq!(refusal["span"]["request_id"], refusal["request_id"]);
}

#[tokio::test]
async fn a_full_disk_is_counted_requests_still_pass_and_a_reopen_recovers() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    // The audit path leads to /dev/full (every write fails with ENOSPC) until the link is removed.
    std::os::unix::fs::symlink("/dev/full", audit_path(&pki)).unwrap_or_else(|e| panic!("{e}"));
    let config = format!(
        "{}{}{}",
        base_config(&pki, &upstream.url()),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
        open_route("all", "/", "gitlab")
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));
    for _ in 0..3 {
        assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.status, 200);
    }
    let errors = || async { runway.metric("runway_audit_write_errors_total", &[]).await.unwrap_or(0.0) };
    eventually("failed audit writes to be counted", Duration::from_secs(2), || async {
        (errors().await >= 1.0).then_some(())
    })
    .await;

    // Space again (logrotate moved the file away): SIGHUP reopens the path, and events land there.
    std::fs::remove_file(audit_path(&pki)).unwrap_or_else(|e| panic!("{e}"));
    runway.reopen_audit().await;
    eventually("events in the reopened audit file", Duration::from_secs(2), || async {
        assert_eq!(client.get(&runway.url("/after"), Some(&token)).await.status, 200);
        audit_lines(&pki).iter().any(|l| l["path"] == "/after").then_some(())
    })
    .await;
    let settled = errors().await;
    for _ in 0..3 {
        assert_eq!(client.get(&runway.url("/after"), Some(&token)).await.status, 200);
    }
    eventually("the last events on disk", Duration::from_secs(2), || async {
        (audit_lines(&pki).iter().filter(|l| l["path"] == "/after").count() >= 4).then_some(())
    })
    .await;
    assert_eq!(errors().await, settled, "no audit write fails once the disk has room");
}

#[tokio::test]
async fn sighup_reopens_the_audit_file_for_logrotate() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let runway = spawn_serve(&pki, &idp, &upstream).await;
    let client = TestClient::new(&pki);
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));
    let get = |p: String| {
        let (client, token, url) = (&client, &token, runway.url(&p));
        async move { client.get(&url, Some(token)).await.status }
    };
    for _ in 0..100 {
        if get("/warm".into()).await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get("/before".into()).await, 200);
    let rotated = pki.dir.path().join("audit.jsonl.1");
    // logrotate: wait until the event is on disk, move the file, signal.
    for _ in 0..100 {
        if audit_lines(&pki).iter().any(|l| l["path"] == "/before") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(audit_path(&pki), &rotated).unwrap_or_else(|e| panic!("{e}"));
    runway.signal("HUP");
    let mut reopened = false;
    for _ in 0..100 {
        if audit_path(&pki).exists() {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "SIGHUP did not reopen the audit file");
    assert_eq!(get("/after".into()).await, 200);
    runway.signal("TERM");
    let output = runway.wait().await;
    assert!(output.status.success(), "SIGHUP must not stop the process: {:?}", output.status);
    let old = std::fs::read_to_string(&rotated).unwrap_or_default();
    let new: Vec<String> = audit_lines(&pki).iter().filter_map(|l| l["path"].as_str().map(str::to_string)).collect();
    assert!(old.contains("\"/before\"") && !old.contains("\"/after\""), "old file: {old}");
    assert_eq!(new, vec!["/after".to_string()], "new events go to the reopened file");
}

#[tokio::test]
async fn alerting_series_exist_before_the_first_event() {
    let pki = Pki::generate();
    let upstream = EchoUpstream::start(&pki).await;
    let runway = Runway::start(&pki, &format!("{}{}", base_config(&pki, &upstream.url()), "")).await;
    let (_, text) = runway.admin_get("/metrics").await;
    for kind in ["connect", "request", "timeout"] {
        assert_eq!(value(&text, "runway_upstream_errors_total", &[("kind", kind)]), Some(0.0), "{kind}");
    }
    for result in ["ok", "error"] {
        assert_eq!(value(&text, "runway_config_reloads_total", &[("result", result)]), Some(0.0));
    }
}

#[tokio::test]
async fn the_audit_event_is_written_before_the_response_completes() {
    // Contract section 7: a client that reads the audit file right after its response finds its event.
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let config = format!(
        "{}{}{ROUTES}",
        base_config(&pki, &upstream.url()),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, "")
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let good = key.mint(&claims(&idp.issuer(), AUD, json!({"environment": "production"})));
    let clients = [TestClient::new(&pki), TestClient::http2(&pki)];
    for i in 0..40 {
        let client = &clients[i % 2];
        let id = format!("written-before-{i}");
        let (path, token) = match i % 4 {
            0 => ("/deploy/x", Some(good.as_str())),
            1 => ("/deploy/x", None),
            2 => ("/nowhere", None),
            _ => ("/shadow/x", None),
        };
        let mut req = Request::post(runway.url(path)).header("x-request-id", &id);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = client.send(req.body(Full::new(Bytes::new())).unwrap_or_else(|e| panic!("{e}"))).await;
        let events = audit_lines(&pki);
        let event = events.iter().find(|e| e["request_id"] == id.as_str());
        assert!(event.is_some_and(|e| e["status"] == resp.status.as_u16()), "{path}: no event for {id} yet");
    }
}

/// `runway_proxy_overhead_seconds` is Runway's own time on each request Kong answered: a slow Kong makes the
/// request slower but not the overhead, and refusals (which never reach Kong) are not in it.
#[tokio::test]
async fn proxy_overhead_excludes_kongs_time_and_counts_only_forwarded_requests() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let config = format!(
        "{}{}{ROUTES}",
        base_config(&pki, &upstream.url()),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, "")
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let good = key.mint(&claims(&idp.issuer(), AUD, json!({"environment": "production"})));
    let staging = key.mint(&claims(&idp.issuer(), AUD, json!({"environment": "staging"})));
    upstream.set_delay(Duration::from_millis(300));
    for _ in 0..3 {
        assert_eq!(post(&client, &runway.url("/deploy/x"), Some(&good)).await.status, 200);
    }
    assert_eq!(post(&client, &runway.url("/deploy/x"), Some(&staging)).await.status, 403);
    assert_eq!(post(&client, &runway.url("/deploy/x"), None).await.status, 401);
    // A report-mode would-deny is forwarded, so it is Runway's overhead too.
    assert_eq!(post(&client, &runway.url("/shadow/x"), Some(&staging)).await.status, 200);

    let (_, text) = runway.admin_get("/metrics").await;
    let count = value(&text, "runway_proxy_overhead_seconds_count", &[]);
    let sum = value(&text, "runway_proxy_overhead_seconds_sum", &[]).unwrap_or(f64::NAN);
    let requests = value(&text, "runway_request_duration_seconds_sum", &[("route", "deploy")]).unwrap_or(0.0);
    assert_eq!(count, Some(4.0), "three allowed and one would-deny reached Kong:\n{text}");
    assert!(requests >= 0.9, "the requests took Kong's 300 ms each: {requests}");
    assert!((0.0..0.25).contains(&sum), "Kong's 1.2 s is not Runway's overhead: {sum}");
    let fastest = value(&text, "runway_proxy_overhead_seconds_bucket", &[("le", "0.25")]);
    assert_eq!(fastest, Some(4.0), "{text}");
    // The shadow route's refusal is counted per route, the signal that it is (not) ready to enforce.
    let shadow = value(&text, "runway_would_deny_total", &[("route", "shadow"), ("reason", "policy")]);
    assert_eq!(shadow, Some(1.0), "{text}");
    assert_eq!(value(&text, "runway_would_deny_total", &[("route", "deploy"), ("reason", "policy")]), None);
}
