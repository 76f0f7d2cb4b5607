//! Hardening (contract sections 3 and 4), tried as an ordinary CI client and as an attacker would:
//! every refusal made before the body was read reaches clients that are still uploading (curl over
//! HTTP/1.1 and h2, python `requests`, hyper); nothing the client wrote arrives at Kong looking like
//! Runway's word (trailers, configured header names, `Connection` tokens); paths that Kong or a Tomcat
//! backend could read differently are refused; a request-timeout 504 is attributed to what was decided.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

const CAP: u64 = 16 * 1024;
const SIZES: [usize; 3] = [64 * 1024, 1024 * 1024, 8 * 1024 * 1024];

struct Fixture {
    b: Backends,
    runway: Runway,
    allowed: String,
    expired: String,
    forbidden: String,
}

/// Routes: `/deploy` (PUT/POST/GET, project platform/api), `/deploy/production` (environment
/// production), `/public` (anonymous), `/shadow` (report mode); bodies above 16 KiB are refused.
async fn fixture(extra: &str, server_extra: &str) -> Fixture {
    fixture_towards(extra, server_extra, None).await
}

/// [`fixture`], with `upstream.url` pointing elsewhere when `upstream` is given.
async fn fixture_towards(extra: &str, server_extra: &str, upstream: Option<String>) -> Fixture {
    let b = Backends::start().await;
    let issuer = b.idp.issuer();
    let base = base_config(&b.pki, &upstream.unwrap_or_else(|| b.upstream.url()))
        .replace("[server]\n", &format!("[server]\nmax_body_bytes = {CAP}\n{server_extra}\n"));
    let config = format!(
        r#"{base}
{issuer_block}
[issuers.headers]
"X-Gitlab-Namespace" = "namespace_path"

[[routes]]
name = "deploy"
path_prefix = "/deploy"
methods = ["PUT", "POST", "GET"]
[[routes.allow]]
issuer = "gitlab"
claims = {{ project_path = "platform/api" }}

[[routes]]
name = "production"
path_prefix = "/deploy/production"
[[routes.allow]]
issuer = "gitlab"
claims = {{ environment = "production" }}

[[routes]]
name = "public"
path_prefix = "/public"
anonymous = true

[[routes]]
name = "shadow"
path_prefix = "/shadow"
mode = "report"
[[routes.allow]]
issuer = "gitlab"
claims = {{ project_path = "nobody/*" }}
{extra}
"#,
        issuer_block = issuer_block("gitlab", "gitlab", &issuer, "runway", ""),
    );
    let runway = Runway::start(&b.pki, &config).await;
    runway.wait_ready().await;
    let mint = |extra: Value| b.key.mint(&claims(&issuer, "runway", extra));
    let allowed = mint(json!({"project_path": "platform/api", "environment": "staging", "namespace_path": "platform"}));
    let expired = mint(json!({"project_path": "platform/api", "iat": now() - 900, "exp": now() - 600}));
    let forbidden = mint(json!({"project_path": "someone/else"}));
    Fixture { b, runway, allowed, expired, forbidden }
}

/// A refused upload: method, path, token, expected status.
struct Refusal {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    token: Option<String>,
    status: u16,
}

fn refusals(fx: &Fixture) -> Vec<Refusal> {
    let case = |name, method, path, token: Option<&String>, status| Refusal {
        name,
        method,
        path,
        token: token.cloned(),
        status,
    };
    vec![
        case("401 missing", "PUT", "/deploy/app", None, 401),
        case("401 expired", "PUT", "/deploy/app", Some(&fx.expired), 401),
        case("403", "PUT", "/deploy/app", Some(&fx.forbidden), 403),
        case("404", "PUT", "/nowhere", Some(&fx.allowed), 404),
        case("405", "DELETE", "/deploy/app", Some(&fx.allowed), 405),
        case("413", "PUT", "/deploy/app", Some(&fx.allowed), 413),
    ]
}

fn upload_file(dir: &Path, size: usize) -> PathBuf {
    let path = dir.join(format!("upload-{size}.bin"));
    if !path.exists() {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, bytes).unwrap();
    }
    path
}

/// Runs curl; returns (exit code, status, body).
fn curl(fx: &Fixture, version: &str, extra: &[&str], refusal: &Refusal, file: &Path) -> (i32, u16, String) {
    let body_out = fx.b.pki.dir.path().join("curl-body.out");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", version, "--cacert"]).arg(&fx.b.pki.ca_pem);
    cmd.args(["-X", refusal.method, "-o"]).arg(&body_out).args(["-w", "%{http_code}"]);
    cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    if let Some(token) = &refusal.token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    cmd.args(extra).arg(fx.runway.url(refusal.path));
    let out = cmd.output().expect("curl runs (apt package curl)");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    let body = std::fs::read_to_string(&body_out).unwrap_or_default();
    let _ = std::fs::remove_file(&body_out);
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0, "curl {version} {extra:?} exited {code}: {}", String::from_utf8_lossy(&out.stderr));
    (code, status, body)
}

fn assert_problem(body: &str, status: u16, what: &str) {
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"));
    assert_eq!(json["status"], status, "{what}: {body}");
    assert!(json["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_every_refusal_while_uploading_over_http1_and_h2() {
    let fx = fixture("", "").await;
    let dir = fx.b.pki.dir.path().to_path_buf();
    for size in SIZES {
        let file = upload_file(&dir, size);
        for refusal in refusals(&fx) {
            // curl sends `Expect: 100-continue` above 1 MiB on HTTP/1.1; `-H Expect:` makes it upload at once.
            for (version, extra) in
                [("--http2", &[][..]), ("--http1.1", &[][..]), ("--http1.1", &["-H", "Expect:"][..])]
            {
                let what = format!("curl {version} {extra:?} {} ({size} bytes)", refusal.name);
                let (_, status, body) = tokio::task::block_in_place(|| curl(&fx, version, extra, &refusal, &file));
                assert_eq!(status, refusal.status, "{what}: {body}");
                assert_problem(&body, refusal.status, &what);
            }
        }
    }
    assert_eq!(fx.b.upstream.requests(), 0, "no refused body reaches Kong");
    let ok =
        Refusal { name: "allowed", method: "GET", path: "/deploy/app", token: Some(fx.allowed.clone()), status: 200 };
    let empty = upload_file(&dir, 0);
    let (_, status, _) = tokio::task::block_in_place(|| curl(&fx, "--http2", &[], &ok, &empty));
    assert_eq!(status, 200);
    assert_eq!(fx.b.upstream.requests(), 1);
}

const PYTHON_UPLOADS: &str = r#"
import json, sys, requests
spec = json.load(sys.stdin)
session = requests.Session()
out = []
for case in spec["cases"]:
    headers = {"Authorization": "Bearer " + case["token"]} if case["token"] else {}
    try:
        # requests writes the whole body before it reads the answer.
        r = session.request(case["method"], case["url"], data=b"r" * case["size"], headers=headers, verify=spec["ca"], timeout=60)
        out.append({"status": r.status_code, "body": r.text})
    except Exception as e:
        out.append({"error": repr(e)})
print(json.dumps(out))
"#;

fn python_requests(ca: &Path, cases: &[Value]) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_UPLOADS])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let spec = json!({"ca": ca, "cases": cases});
    child.stdin.take().unwrap().write_all(spec.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python requests failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("python output ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_sees_every_refusal_after_writing_its_whole_body() {
    let fx = fixture("", "").await;
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    for size in SIZES {
        for refusal in refusals(&fx) {
            cases.push(json!({"method": refusal.method, "url": fx.runway.url(refusal.path), "token": refusal.token, "size": size}));
            expected.push((refusal.status, format!("{} ({size} bytes)", refusal.name)));
        }
    }
    // The same session goes on after every refusal: the connection was drained, not broken.
    cases.push(json!({"method": "GET", "url": fx.runway.url("/deploy/app"), "token": fx.allowed, "size": 0}));
    expected.push((200, "allowed, after the refusals".into()));
    let results = tokio::task::block_in_place(|| python_requests(&fx.b.pki.ca_pem, &cases));
    assert_eq!(results.len(), expected.len());
    for (result, (status, what)) in results.iter().zip(&expected) {
        assert_eq!(result["status"], *status, "python requests, {what}: {result}");
        if *status != 200 {
            assert_problem(result["body"].as_str().unwrap_or(""), *status, what);
        }
    }
    assert_eq!(fx.b.upstream.requests(), 1, "only the allowed request reached Kong");
}

fn upload(
    method: &str,
    url: &str,
    token: Option<&str>,
    size: usize,
    content_length: bool,
) -> Request<crate::support::client::Body> {
    let chunk = Bytes::from(vec![b'h'; 64 * 1024]);
    let frames = (0..size.div_ceil(chunk.len())).map(move |i| {
        let len = (size - i * chunk.len()).min(chunk.len());
        Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
    });
    let mut req = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if content_length {
        req = req.header("content-length", size);
    }
    req.body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()).unwrap()
}

#[tokio::test]
async fn hyper_sees_every_refusal_and_the_connection_goes_on() {
    let fx = fixture("", "").await;
    for client in [TestClient::new(&fx.b.pki), TestClient::http2(&fx.b.pki)] {
        for size in SIZES {
            for refusal in refusals(&fx) {
                let req = upload(refusal.method, &fx.runway.url(refusal.path), refusal.token.as_deref(), size, true);
                let resp = client.send_body(req).await.unwrap_or_else(|e| panic!("{} ({size}): {e}", refusal.name));
                assert_eq!(resp.status, refusal.status, "{} ({size}, {:?})", refusal.name, resp.version);
                assert_problem(&resp.text(), refusal.status, refusal.name);
            }
        }
        // A chunked upload over the cap (no Content-Length): 413 mid-stream, also seen by the client.
        let req = upload("PUT", &fx.runway.url("/deploy/app"), Some(&fx.allowed), 1024 * 1024, false);
        let resp = client.send_body(req).await.unwrap_or_else(|e| panic!("chunked 413: {e}"));
        assert_eq!(resp.status, 413, "{}", resp.text());
        let before = fx.b.upstream.requests();
        let ok = client.get(&fx.runway.url("/deploy/app"), Some(&fx.allowed)).await;
        assert_eq!(ok.status, 200, "the next request works: {}", ok.text());
        assert_eq!(fx.b.upstream.requests(), before + 1);
    }
    // Only the two chunked 413s (whose refusal comes mid-stream) and the two allowed requests reached Kong.
    assert_eq!(fx.b.upstream.requests(), 4);
}

#[tokio::test]
async fn a_drain_is_bounded_and_forwards_nothing() {
    // A client that keeps its upload open without sending: the drain gives up after the stall timeout,
    // the connection closes, and nothing is forwarded.
    let fx = fixture("", "header_read_timeout = \"500ms\"").await;
    let mut raw = RawTls::connect(&fx.b.pki, fx.runway.addr, &[b"http/1.1"]).await;
    let head = "PUT /deploy/app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\n";
    raw.send(head.as_bytes()).await.unwrap();
    raw.send(&[b'x'; 4096]).await.unwrap();
    let resp = raw.response().await.expect("the 401 arrives while the upload is open");
    assert_eq!(resp.status, 401);
    assert!(raw.closed(Duration::from_secs(5)).await, "closed once the client stopped sending");
    assert_eq!(fx.b.upstream.requests(), 0);
}

fn echo_headers(resp: &TestResponse) -> Value {
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["headers"].clone()
}

fn with_headers(url: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        req = req.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), *value);
    }
    req.body(Full::default()).unwrap()
}

#[tokio::test]
async fn configured_header_names_are_protected_in_every_spelling_on_every_kind_of_route() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
    let b_dir = tempfile::tempdir().unwrap();
    let key_path = b_dir.path().join("assertion-key.pem");
    std::fs::write(&key_path, key).unwrap();
    let extra = format!("\n[assertion]\nkey = \"{}\"\nheader = \"X-Kong-Assertion\"\n", key_path.display());
    let fx = fixture(&extra, "").await;
    let spoofs: &[(&str, &str)] = &[
        ("x-gitlab-namespace", "admins"),
        ("X_Gitlab_Namespace", "admins"),
        ("x_gitlab-namespace", "admins"),
        ("x-kong-assertion", "Bearer forged"),
        ("X_KONG_ASSERTION", "Bearer forged"),
        ("x-runway-subject", "root"),
        ("X_Runway_Subject", "root"),
    ];
    let clients = [TestClient::new(&fx.b.pki), TestClient::http2(&fx.b.pki)];
    for client in &clients {
        // Allowed: Runway's own values, and nothing of the client's beside them.
        let headers =
            echo_headers(&client.send(with_headers(&fx.runway.url("/deploy/app"), Some(&fx.allowed), spoofs)).await);
        assert_eq!(headers["x-gitlab-namespace"], json!(["platform"]), "{headers}");
        assert_eq!(headers["x-runway-subject"], json!(["user-1"]), "{headers}");
        let assertion = headers["x-kong-assertion"].as_array().cloned().unwrap_or_default();
        assert_eq!(assertion.len(), 1, "{headers}");
        assert_ne!(assertion[0], "Bearer forged");
        // Anonymous and report-mode would-deny: none of them at all.
        for (path, token) in [("/public/x", None), ("/shadow/x", Some(fx.allowed.as_str())), ("/shadow/x", None)] {
            let headers = echo_headers(&client.send(with_headers(&fx.runway.url(path), token, spoofs)).await);
            for name in [
                "x-gitlab-namespace",
                "x_gitlab_namespace",
                "x_gitlab-namespace",
                "x-kong-assertion",
                "x_kong_assertion",
                "x-runway-subject",
                "x_runway_subject",
            ] {
                assert!(headers.get(name).is_none(), "{path}: {name} reached Kong: {headers}");
            }
        }
    }
}

#[tokio::test]
async fn connection_tokens_cannot_remove_what_runway_adds() {
    let fx = fixture("", "").await;
    let client = TestClient::new(&fx.b.pki);
    let named = "X-Request-Id, x_request_id, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Runway-Subject, X-Runway-Route, X-Gitlab-Namespace, Host";
    let req = with_headers(
        &fx.runway.url("/deploy/app"),
        Some(&fx.allowed),
        &[("connection", named), ("x-request-id", "ci-job-42")],
    );
    let resp = client.send(req).await;
    let headers = echo_headers(&resp);
    assert_eq!(headers["x-request-id"], json!(["ci-job-42"]), "{headers}");
    assert_eq!(resp.header("x-request-id").as_deref(), Some("ci-job-42"));
    assert_eq!(headers["x-forwarded-for"], json!(["127.0.0.1"]), "{headers}");
    assert_eq!(headers["x-forwarded-proto"], json!(["https"]), "{headers}");
    assert!(headers["x-forwarded-host"].as_array().is_some_and(|v| v.len() == 1), "{headers}");
    assert_eq!(headers["x-runway-subject"], json!(["user-1"]), "{headers}");
    assert_eq!(headers["x-runway-route"], json!(["deploy"]), "{headers}");
    assert_eq!(headers["x-gitlab-namespace"], json!(["platform"]), "{headers}");
    assert!(headers.get("connection").is_none(), "{headers}");
    let audit = eventually("the audit event", Duration::from_secs(5), || async {
        audit_lines(&fx.b.pki).into_iter().find(|e| e["request_id"] == "ci-job-42")
    })
    .await;
    assert_eq!(audit["decision"], "allow");
}

fn body_with_trailers(trailers: &[(&str, &str)]) -> crate::support::client::Body {
    let mut map = HeaderMap::new();
    for (name, value) in trailers {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    let frames = vec![Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"artifact"))), Ok(Frame::trailers(map))];
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

const SPOOFED_TRAILERS: &[(&str, &str)] = &[
    ("x-runway-subject", "root"),
    ("authorization", "Bearer forged"),
    ("x-forwarded-for", "10.0.0.1"),
    ("x-gitlab-namespace", "admins"),
    ("x-innocent", "still-not-forwarded"),
];

#[tokio::test]
async fn request_trailers_never_reach_kong() {
    let fx = fixture("", "").await;
    // h2 from the client, h2 to Kong (the echo upstream speaks h2; Runway prefers it by ALPN).
    let client = TestClient::http2(&fx.b.pki);
    for path in ["/deploy/app", "/public/x", "/shadow/x"] {
        let req = Request::post(fx.runway.url(path))
            .header("authorization", format!("Bearer {}", fx.allowed))
            .body(body_with_trailers(SPOOFED_TRAILERS))
            .unwrap();
        let resp = client.send_body(req).await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        let echo = resp.json();
        assert_eq!(echo["version"], "HTTP/2.0", "Kong is reached over h2: {echo}");
        assert_eq!(echo["body_len"], 8, "{echo}");
        assert_eq!(echo["trailers"], json!({}), "h2 trailers reached Kong on {path}: {echo}");
    }
    // HTTP/1.1 chunked trailers, written by hand (hyper's client only sends declared ones).
    let mut raw = RawTls::connect(&fx.b.pki, fx.runway.addr, &[b"http/1.1"]).await;
    let trailer_lines: String = SPOOFED_TRAILERS.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    let request = format!(
        "POST /deploy/app HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nTrailer: x-runway-subject\r\n\r\n8\r\nartifact\r\n0\r\n{trailer_lines}\r\n",
        fx.allowed
    );
    raw.send(request.as_bytes()).await.unwrap();
    let resp = raw.response().await.expect("a response");
    assert_eq!(resp.status, 200);
    let echo = resp.json();
    assert_eq!(echo["body_len"], 8, "{echo}");
    assert_eq!(echo["trailers"], json!({}), "chunked trailers reached Kong: {echo}");
    assert!(echo["headers"].get("trailer").is_none(), "{echo}");
}

#[tokio::test]
async fn paths_a_backend_could_read_differently_are_refused() {
    let fx = fixture("", "").await;
    let paths = [
        "/deploy/staging/..;/production/app",
        "/deploy/staging/.;/production",
        "/deploy/production;x/app",
        "/deploy/production;jsessionid=1",
        "/public/..;/deploy/production/app",
        "/public/.;/x",
        "/public;/deploy",
        "/deploy/staging/%2e%2e;/production",
        "/deploy/staging/%2E%2E/production",
        "/deploy/staging/.%2e/production",
        "/deploy/production%3bx/app",
        "/deploy/production%3Bx/app",
        "/public/%2e%2e%3b/deploy/production",
        "/public/%2e%2e%2fdeploy/production",
        "/public/..%5cdeploy",
        "/public/%u002e%u002e/deploy",
    ];
    let clients = [TestClient::new(&fx.b.pki), TestClient::http2(&fx.b.pki)];
    for client in &clients {
        for path in paths {
            let resp = client.get(&fx.runway.url(path), Some(&fx.allowed)).await;
            assert_eq!(resp.status, 400, "{path} ({:?}): {}", resp.version, resp.text());
            assert_problem(&resp.text(), 400, path);
            let anonymous = client.get(&fx.runway.url(path), None).await;
            assert_eq!(anonymous.status, 400, "{path} without a token: {}", anonymous.text());
        }
    }
    assert_eq!(fx.b.upstream.requests(), 0, "none reached Kong");
    // What they spell out is still reachable the honest way, and only as policy says.
    let client = &clients[0];
    assert_eq!(client.get(&fx.runway.url("/deploy/production/app"), Some(&fx.allowed)).await.status, 403);
    assert_eq!(client.get(&fx.runway.url("/deploy/%70roduction/app"), Some(&fx.allowed)).await.status, 403);
    assert_eq!(client.get(&fx.runway.url("/public/caf%C3%A9"), None).await.status, 200);
}

#[tokio::test]
async fn a_request_timeout_is_attributed_to_what_was_decided() {
    let fx = fixture("", "request_timeout = \"300ms\"").await;
    fx.b.upstream.set_delay(Duration::from_secs(2));
    let client = TestClient::new(&fx.b.pki);
    let resp = client
        .send(with_headers(&fx.runway.url("/deploy/app"), Some(&fx.allowed), &[("x-request-id", "slow-kong-1")]))
        .await;
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert_problem(&resp.text(), 504, "timeout");
    let event = eventually("the audit event", Duration::from_secs(5), || async {
        audit_lines(&fx.b.pki).into_iter().find(|e| e["request_id"] == "slow-kong-1")
    })
    .await;
    assert_eq!(event["status"], 504, "{event}");
    assert_eq!(event["decision"], "allow", "an allowed, forwarded request: {event}");
    assert_eq!(event["route"], "deploy", "{event}");
    assert_eq!(event["issuer"], "gitlab", "{event}");
    assert_eq!(event["subject"], "user-1", "{event}");
    assert!(event["token_sha256"].as_str().is_some_and(|t| t.len() == 16), "{event}");
    assert_eq!(fx.runway.metric("runway_requests_total", &[("route", "deploy"), ("status", "504")]).await, Some(1.0));
    assert_eq!(fx.runway.metric("runway_requests_total", &[("route", "-"), ("status", "504")]).await, None);
    assert_eq!(
        fx.runway
            .metric("runway_auth_decisions_total", &[("issuer", "gitlab"), ("decision", "allow"), ("reason", "none")])
            .await,
        Some(1.0)
    );

    // A refused request that times out elsewhere keeps its deny; a report-mode one its would_deny.
    let resp = client
        .send(with_headers(&fx.runway.url("/shadow/x"), Some(&fx.allowed), &[("x-request-id", "slow-kong-2")]))
        .await;
    assert_eq!(resp.status, 504);
    let event = eventually("the would-deny audit event", Duration::from_secs(5), || async {
        audit_lines(&fx.b.pki).into_iter().find(|e| e["request_id"] == "slow-kong-2")
    })
    .await;
    assert_eq!(event["decision"], "would_deny", "{event}");
    assert_eq!(event["route"], "shadow", "{event}");
    assert_eq!(event["reason"], "policy", "{event}");
}

#[tokio::test]
async fn an_upstream_error_is_attributed_to_the_allowed_request() {
    let down = format!("https://{}", unused_addr());
    let fx = fixture_towards("", "", Some(down)).await;
    let client = TestClient::new(&fx.b.pki);
    let resp = client
        .send(with_headers(&fx.runway.url("/deploy/app"), Some(&fx.allowed), &[("x-request-id", "kong-down-1")]))
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    let event = eventually("the audit event", Duration::from_secs(5), || async {
        audit_lines(&fx.b.pki).into_iter().find(|e| e["request_id"] == "kong-down-1")
    })
    .await;
    assert_eq!(
        (&event["status"], &event["decision"], &event["route"], &event["issuer"], &event["subject"]),
        (&json!(502), &json!("allow"), &json!("deploy"), &json!("gitlab"), &json!("user-1")),
        "{event}"
    );
    assert_eq!(fx.runway.metric("runway_requests_total", &[("route", "deploy"), ("status", "502")]).await, Some(1.0));
}
