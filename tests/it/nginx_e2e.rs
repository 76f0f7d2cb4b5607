//! End to end against a real nginx standing in for Kong: Runway → nginx over mTLS (HTTP/1.1 and h2), and nginx
//! refusing anyone who comes without Runway's client certificate.
//!
//! nginx comes from the distribution (`.ci/run` installs Debian's `nginx`). Without it the tests print a skip note
//! and pass, unless the `CI` environment variable is set: then a missing nginx is a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::pki::{CLIENT_CN, ROGUE_CLIENT_CN};
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const AUD: &str = "https://deploy.example.com";

/// The echo nginx answers with: what it received, as JSON (no value the tests send needs escaping).
const ECHO_BODY: &str = concat!(
    r#"{"client_verify":"$ssl_client_verify","client_dn":"$ssl_client_s_dn","protocol":"$server_protocol","#,
    r#""host":"$host","uri":"$request_uri","subject":"$http_x_runway_subject","issuer":"$http_x_runway_issuer","#,
    r#""route":"$http_x_runway_route","authorization":"$http_authorization","#,
    r#""proxy_authorization":"$http_proxy_authorization","forwarded_for":"$http_x_forwarded_for","#,
    r#""forwarded_proto":"$http_x_forwarded_proto","forwarded_host":"$http_x_forwarded_host","#,
    r#""request_id":"$http_x_request_id"}"#,
);

/// One access-log line per request nginx handled (JSON-escaped by nginx itself).
const LOG_FORMAT: &str =
    r#"{"uri":"$request_uri","status":"$status","client_verify":"$ssl_client_verify","client_dn":"$ssl_client_s_dn"}"#;

/// The nginx binary: `/usr/sbin/nginx`, else the first `nginx` on `PATH`.
fn nginx_binary() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return Some(sbin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("nginx")).find(|p| p.is_file())
}

/// The nginx binary, or `None` (after a skip note) when it is missing outside CI. Panics when it is missing in CI.
fn require_nginx(test: &str) -> Option<PathBuf> {
    let found = nginx_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx not found (/usr/sbin/nginx or PATH) and CI is set: .ci/run must install it (apt-get install nginx)"
        );
        eprintln!("SKIPPED {test}: nginx not found (/usr/sbin/nginx or PATH); `apt-get install nginx` to run it");
    }
    found
}

/// A running nginx (single process, no daemon) with everything it writes inside its own temp dir; killed on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx on a free port: TLS with the upstream certificate, a client certificate chaining to the test CA
    /// required, `http2` on the listener if asked, and one location echoing what it received.
    async fn start(binary: &Path, pki: &Pki, http2: bool) -> Nginx {
        let mut last_error = String::new();
        // A port picked this way can be taken by someone else before nginx binds it: then try another.
        for _ in 0..3 {
            match Nginx::try_start(binary, pki, http2).await {
                Ok(nginx) => return nginx,
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_error}")
    }

    async fn try_start(binary: &Path, pki: &Pki, http2: bool) -> Result<Nginx, String> {
        let dir = tempfile::Builder::new()
            .prefix("runway-nginx-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating nginx temp dir: {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir.path(), pki, addr, http2))
            .unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap_or_else(|e| panic!("creating stderr.log: {e}"));
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut nginx = Nginx { child, dir, addr };

        // nginx writes its pid file only once its listening socket is open, so "pid file holds our child's pid"
        // means the port is nginx's (not a stranger's that happened to grab it).
        let pid_file = nginx.dir.path().join("nginx.pid");
        let pid = nginx.child.id().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!(
                    "nginx exited during startup ({status}) on {addr}\nstderr: {}\nerror.log: {}",
                    read(&stderr_path),
                    read(&nginx.dir.path().join("error.log")),
                ));
            }
            if read(&pid_file).trim() == pid && tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(nginx);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen on {addr} within 5 s\nerror.log: {}",
                    read(&nginx.dir.path().join("error.log"))
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `https://127.0.0.1:PORT` (Runway's `upstream.url`).
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `https://localhost:PORT{path}` (the name test clients verify the upstream certificate against).
    fn direct_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// The access log, one JSON object per request nginx handled.
    fn access_log(&self) -> Vec<Value> {
        read(&self.dir.path().join("access.log"))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits (at most 2 s) until a request for `uri` is in the access log, then returns the whole log. nginx logs a
    /// request right after sending its response, so this closes that small race; and as one nginx process handles
    /// requests in order, every earlier request is logged by then too.
    async fn access_log_through(&self, uri: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let log = self.access_log();
            if log.iter().any(|l| l["uri"] == uri) {
                return log;
            }
            assert!(tokio::time::Instant::now() < deadline, "{uri} never showed up in nginx's access log: {log:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Nginx {
    /// What nginx echoed; panics with the body and nginx's error log if `res` is not the echo.
    fn echo(&self, res: &TestResponse) -> Value {
        let error_log = || read(&self.dir.path().join("error.log"));
        assert_eq!(res.status, 200, "{}\nnginx error.log:\n{}", res.text(), error_log());
        let content_type = res.header("content-type");
        assert_eq!(content_type.as_deref(), Some("application/json"), "{}\nerror.log:\n{}", res.text(), error_log());
        res.json()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every path nginx writes to lives in `dir`, so it runs the same as root or not.
fn nginx_conf(dir: &Path, pki: &Pki, addr: SocketAddr, http2: bool) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid "{d}/nginx.pid";
error_log "{d}/error.log" info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path "{d}/client_body";
    proxy_temp_path "{d}/proxy";
    fastcgi_temp_path "{d}/fastcgi";
    uwsgi_temp_path "{d}/uwsgi";
    scgi_temp_path "{d}/scgi";
    log_format echo escape=json '{LOG_FORMAT}';
    access_log "{d}/access.log" echo;
    # Like Kong (OpenResty): headers with underscores are read, and $http_x_runway_subject matches them too.
    underscores_in_headers on;
    server {{
        listen {addr} ssl{http2};
        server_name localhost;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate "{cert}";
        ssl_certificate_key "{key}";
        ssl_client_certificate "{ca}";
        ssl_verify_client on;
        ssl_verify_depth 2;
        location / {{
            default_type application/json;
            return 200 '{ECHO_BODY}';
        }}
    }}
}}
"#,
        http2 = if http2 { " http2" } else { "" },
        cert = pki.upstream_cert.display(),
        key = pki.upstream_key.display(),
        ca = pki.ca_pem.display(),
    )
}

/// PKI, IdP, nginx, and Runway forwarding to nginx with a gitlab issuer, `/e2e` for any gitlab token and an
/// anonymous `/public`.
struct Fx {
    pki: Pki,
    idp: TestIdp,
    key: SigningKey,
    nginx: Nginx,
    runway: Runway,
    client: TestClient,
}

async fn fixture(binary: &Path, http2: bool) -> Fx {
    let pki = Pki::generate();
    let key = SigningKey::rsa("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let nginx = Nginx::start(binary, &pki, http2).await;
    let config = format!(
        "{}{}{}\n[[routes]]\nname = \"public\"\npath_prefix = \"/public\"\nanonymous = true\n",
        base_config(&pki, &nginx.url()),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
        open_route("e2e", "/e2e", "gitlab"),
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    Fx { pki, idp, key, nginx, runway, client }
}

impl Fx {
    async fn get(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> TestResponse {
        let mut req = Request::get(self.runway.url(path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.client.send(req.body(Full::new(Bytes::new())).unwrap_or_else(|e| panic!("request: {e}"))).await
    }
}

async fn through_runway(http2: bool, test: &str) {
    let Some(binary) = require_nginx(test) else { return };
    let fx = fixture(&binary, http2).await;
    let protocol = if http2 { "HTTP/2.0" } else { "HTTP/1.1" };
    let token = fx.key.mint(&claims(&fx.idp.issuer(), AUD, json!({"sub": "deployer-7"})));

    // A valid token: nginx sees Runway's client certificate and the verified identity, nothing the client forged.
    let spoofed = [
        ("x-runway-subject", "root"),
        ("x-runway-issuer", "okta"),
        ("x-runway-route", "admin"),
        ("x-forwarded-for", "6.6.6.6"),
        ("proxy-authorization", "Basic abc"),
        ("x-request-id", "e2e-req-1"),
    ];
    let res = fx.get("/e2e/deploy?x=1", Some(&token), &spoofed).await;
    let seen = fx.nginx.echo(&res);
    assert_eq!(seen["client_verify"], "SUCCESS", "{seen}");
    assert_eq!(seen["client_dn"], format!("CN={CLIENT_CN}"), "nginx sees Runway's client certificate: {seen}");
    assert_eq!(seen["protocol"], protocol, "ALPN towards nginx: {seen}");
    assert_eq!(seen["uri"], "/e2e/deploy?x=1");
    assert_eq!(seen["host"], "localhost", "Host preserved: {seen}");
    assert_eq!(seen["subject"], "deployer-7", "spoofed X-Runway-Subject replaced by the token's sub: {seen}");
    assert_eq!(seen["issuer"], "gitlab");
    assert_eq!(seen["route"], "e2e");
    assert_eq!(seen["authorization"], "", "the token never reaches Kong: {seen}");
    assert_eq!(seen["proxy_authorization"], "");
    assert_eq!(seen["forwarded_for"], "127.0.0.1", "client X-Forwarded-For replaced (nobody trusted): {seen}");
    assert_eq!(seen["forwarded_proto"], "https");
    assert_eq!(seen["forwarded_host"], format!("localhost:{}", fx.runway.addr.port()));
    assert_eq!(seen["request_id"], "e2e-req-1");
    assert_eq!(res.header("x-request-id").as_deref(), Some("e2e-req-1"));

    // Anonymous route: no identity at all, even spelled with underscores (nginx folds them into the same variable).
    let res =
        fx.get("/public/status", Some(&token), &[("x_runway_subject", "root"), ("x-runway-subject", "root")]).await;
    let seen = fx.nginx.echo(&res);
    assert_eq!(seen["subject"], "", "no identity on anonymous routes, forged ones stripped: {seen}");
    assert_eq!(seen["issuer"], "");
    assert_eq!(seen["route"], "public");
    assert_eq!(seen["authorization"], "");
    assert_eq!(seen["client_dn"], format!("CN={CLIENT_CN}"));

    // A forged token (right kid, wrong key) and no token at all: 401 from Runway, nginx never asked.
    let forger = SigningKey::rsa("k1");
    let forged = forger.mint(&claims(&fx.idp.issuer(), AUD, json!({"sub": "root"})));
    let res = fx.get("/e2e/forged-marker", Some(&forged), &[]).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let res = fx.get("/e2e/missing-marker", None, &[]).await;
    assert_eq!(res.status, 401, "{}", res.text());

    let res = fx.get("/e2e/after", Some(&token), &[]).await;
    assert_eq!(fx.nginx.echo(&res)["subject"], "deployer-7");
    let log = fx.nginx.access_log_through("/e2e/after").await;
    let uris: Vec<&str> = log.iter().filter_map(|l| l["uri"].as_str()).collect();
    assert_eq!(uris, ["/e2e/deploy?x=1", "/public/status", "/e2e/after"], "requests nginx handled: {log:?}");
    assert!(log.iter().all(|l| l["client_dn"] == format!("CN={CLIENT_CN}")), "{log:?}");
    drop(fx.pki);
}

#[tokio::test]
async fn runway_reaches_nginx_over_mtls_http1() {
    through_runway(false, "runway_reaches_nginx_over_mtls_http1").await;
}

/// Over h2 the client's host must reach nginx as `:authority` alone: nginx before 1.29 (Debian's 1.22/1.26,
/// Kong's OpenResty) answers 400 "client sent duplicate host header" when `host` comes along too.
#[tokio::test]
async fn runway_reaches_nginx_over_mtls_http2() {
    through_runway(true, "runway_reaches_nginx_over_mtls_http2").await;
}

/// Not 200 (nginx's 400 for a missing or untrusted client certificate, or a failed handshake): nginx served nothing.
fn assert_refused(outcome: Result<TestResponse, String>, what: &str) -> String {
    match outcome {
        Ok(res) => {
            assert_ne!(res.status, 200, "{what}: nginx answered 200: {}", res.text());
            assert!(!res.text().contains("client_dn"), "{what}: nginx echoed: {}", res.text());
            format!("{} {}", res.status, res.text())
        }
        Err(e) => e,
    }
}

#[tokio::test]
async fn nginx_refuses_direct_requests_without_runways_certificate() {
    let Some(binary) = require_nginx("nginx_refuses_direct_requests_without_runways_certificate") else { return };
    let pki = Pki::generate();
    let nginx = Nginx::start(&binary, &pki, false).await;
    let get = |client: TestClient, path: &str| {
        let req = Request::get(nginx.direct_url(path)).body(Full::new(Bytes::new()));
        async move { client.try_send(req.unwrap_or_else(|e| panic!("request: {e}"))).await }
    };

    let no_cert = assert_refused(get(TestClient::new(&pki), "/no-cert").await, "no client certificate");
    assert!(no_cert.starts_with("400 ") && no_cert.contains("No required SSL certificate"), "{no_cert}");

    let rogue = TestClient::with_client_cert(&pki, &pki.rogue_client_cert, &pki.rogue_client_key);
    let rogue = assert_refused(get(rogue, "/rogue-cert").await, &format!("{ROGUE_CLIENT_CN} certificate"));
    assert!(!rogue.starts_with("400 ") || rogue.contains("SSL certificate error"), "{rogue}");

    // Control: Runway's own certificate gets through, so the refusals above are about the certificate.
    let runway_cert = TestClient::with_client_cert(&pki, &pki.client_cert, &pki.client_key);
    let res = get(runway_cert, "/runway-cert").await.unwrap_or_else(|e| panic!("with Runway's certificate: {e}"));
    assert_eq!(nginx.echo(&res)["client_dn"], format!("CN={CLIENT_CN}"));
    let log = nginx.access_log_through("/runway-cert").await;
    let served: Vec<&str> = log.iter().filter(|l| l["status"] == "200").filter_map(|l| l["uri"].as_str()).collect();
    assert_eq!(served, ["/runway-cert"], "only the request with Runway's certificate was served: {log:?}");
}
