//! Runway itself, in-process, on loopback port 0: config written to the PKI directory, loaded through the
//! same path as `runway serve`, stopped when dropped. Plus the config snippets most tests share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use runway::server::{Server, ShutdownHandle};
use serde_json::{Value, json};

use super::pki::Pki;
use super::tokens::now;

/// A running Runway.
pub struct Runway {
    /// TLS listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The config file it runs.
    pub config_path: PathBuf,
    handle: ShutdownHandle,
    audit: Option<runway::audit::AuditLog>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Runway {
    /// Writes `config` as `runway.toml` next to the PKI and starts Runway on it.
    pub async fn start(pki: &Pki, config: &str) -> Runway {
        Self::try_start(pki, config).await.unwrap_or_else(|e| panic!("runway did not start: {e}\n{config}"))
    }

    /// Like `start`, checking the files the config names for changes every `interval` (hot reload tests).
    pub async fn start_watching(pki: &Pki, config: &str, interval: Duration) -> Runway {
        Self::start_inner(pki, config, Some(interval)).await.unwrap_or_else(|e| panic!("runway did not start: {e}"))
    }

    /// Like `start`, returning the error instead of panicking.
    pub async fn try_start(pki: &Pki, config: &str) -> Result<Runway, String> {
        Self::start_inner(pki, config, None).await
    }

    async fn start_inner(pki: &Pki, config: &str, watch: Option<Duration>) -> Result<Runway, String> {
        let config_path = pki.write_file("runway.toml", config.as_bytes());
        let loaded = runway::config::load(&config_path).map_err(|e| e.to_string())?;
        let mut server = Server::start(loaded).await.map_err(|e| runway::error::chain(&e))?;
        if let Some(interval) = watch {
            server = server.watch_files_every(interval);
        }
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let handle = server.shutdown_handle();
        let audit = server.audit();
        let task = tokio::spawn(server.run());
        Ok(Runway { addr, admin, config_path, handle, audit, task: Some(task) })
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Plain-HTTP GET on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        admin_request(self.admin, "GET", path).await
    }

    /// `POST /reload` on the admin listener: (status, JSON body).
    pub async fn reload(&self) -> (u16, Value) {
        let (status, body) = admin_request(self.admin, "POST", "/reload").await;
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("/reload answered non-JSON ({e}): {body}")))
    }

    /// Rewrites the config file it runs (then `reload`, SIGHUP, or a watched file change applies it).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).unwrap_or_else(|e| panic!("writing the config: {e}"));
    }

    /// `/readyz` as (status, JSON body).
    pub async fn readyz(&self) -> (u16, Value) {
        let (status, body) = self.admin_get("/readyz").await;
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/readyz body is not JSON ({e}): {body}"));
        (status, json)
    }

    /// The single `missing` entry of a not-ready `/readyz`; panics if it is ready.
    pub async fn readyz_problem(&self) -> Option<String> {
        match self.readyz().await {
            (503, body) => {
                assert_eq!(body["ready"], false, "{body}");
                let missing = body["missing"].as_array().cloned().unwrap_or_default();
                assert_eq!(missing.len(), 1, "{body}");
                missing[0].as_str().map(str::to_string)
            }
            (status, body) => panic!("expected /readyz 503, got {status}: {body}"),
        }
    }

    /// The current value of one `/metrics` series (exact labels).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (status, text) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "/metrics: {text}");
        super::metrics::value(&text, name, labels)
    }

    /// What SIGHUP does to the audit log: reopens its file.
    pub async fn reopen_audit(&self) {
        match &self.audit {
            Some(audit) => audit.reopen().await,
            None => panic!("this Runway has no audit log"),
        }
    }

    /// Waits until `/readyz` answers 200 (at most 10 s).
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.admin_get("/readyz").await;
            if status == 200 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "runway never became ready: {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful stop; waits for `run` to return.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
        }
    }

    /// The handle, to stop it from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Waits for `run` to return (after a shutdown).
    pub async fn join(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Runway {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One HTTP/1.1 request with an empty body on a plain-HTTP listener (the admin one): (status, body).
pub async fn admin_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let (status, _, body) = admin_send(addr, method, path, &[], "").await;
    (status, body)
}

/// One HTTP/1.1 request on a plain-HTTP listener, with extra headers and a body:
/// (status, response head, body).
pub async fn admin_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("admin connect: {e}"));
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    tcp.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("admin write: {e}"));
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap_or_else(|e| panic!("admin read: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

/// A loopback port that was free a moment ago (for programs that cannot be given port 0).
pub fn free_port() -> u16 {
    super::unused_addr().port()
}

/// The real `runway serve` binary on free loopback ports, debug logs; stdout and stderr go to files (a pipe
/// nobody reads would block it once full); killed on drop unless [`Binary::wait`] collected it.
pub struct Binary {
    child: Option<std::process::Child>,
    logs: (PathBuf, PathBuf),
    /// TLS port.
    pub port: u16,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The config file it runs.
    pub config_path: PathBuf,
}

impl Binary {
    /// Writes `config` as `serve.toml` next to the PKI and runs `runway serve` on it (listeners overridden by
    /// environment, as a deployment would); returns once the TLS port accepts.
    pub async fn spawn(pki: &Pki, config: &str) -> Binary {
        let config_path = pki.write_file("serve.toml", config.as_bytes());
        let (port, admin) = (free_port(), free_port());
        let logs = (pki.dir.path().join("serve.stdout"), pki.dir.path().join("serve.stderr"));
        let file = |path: &PathBuf| std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_runway"))
            .args(["serve", "-c"])
            .arg(&config_path)
            .env("RUNWAY__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUNWAY__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
            .args(["--log-level", "debug"])
            .stdout(file(&logs.0))
            .stderr(file(&logs.1))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn runway: {e}"));
        let binary =
            Binary { child: Some(child), logs, port, admin: SocketAddr::from(([127, 0, 0, 1], admin)), config_path };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return binary;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("runway never listened on {port}");
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().map(|c| c.id().to_string()).unwrap_or_default();
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// What it has written to stderr so far (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.logs.1).unwrap_or_default()
    }

    /// Waits for the process to exit: its status and everything it printed.
    pub async fn wait(mut self) -> std::process::Output {
        let mut child = self.child.take().unwrap_or_else(|| panic!("already collected"));
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("waiting for runway: {e}"));
        let read = |path: &PathBuf| std::fs::read(path).unwrap_or_default();
        std::process::Output { status, stdout: read(&self.logs.0), stderr: read(&self.logs.1) }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `[server]`, `[admin]` and `[upstream]` for loopback, port 0, mTLS to `upstream_url`.
pub fn base_config(pki: &Pki, upstream_url: &str) -> String {
    base_config_trusting(pki, upstream_url, &[])
}

/// [`base_config`] with `server.trusted_proxies` set to `trusted` (CIDRs).
pub fn base_config_trusting(pki: &Pki, upstream_url: &str, trusted: &[&str]) -> String {
    let trusted: Vec<String> = trusted.iter().map(|cidr| format!("\"{cidr}\"")).collect();
    // No line at all for none: the text other tests edit stays as it was.
    let trusted = match trusted.is_empty() {
        true => String::new(),
        false => format!("trusted_proxies = [{}]\n", trusted.join(", ")),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
{trusted}
[admin]
listen = "127.0.0.1:0"

[upstream]
url = "{upstream_url}"
ca = "{ca}"
client_cert = "{client_cert}"
client_key = "{client_key}"
server_name = "localhost"

[audit]
path = "{audit}"
"#,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        ca = pki.ca_pem.display(),
        client_cert = pki.client_cert.display(),
        client_key = pki.client_key.display(),
        audit = audit_path(pki).display(),
    )
}

/// Where `base_config` sends the audit log.
pub fn audit_path(pki: &Pki) -> PathBuf {
    pki.dir.path().join("audit.jsonl")
}

/// The audit log's lines, parsed.
pub fn audit_lines(pki: &Pki) -> Vec<Value> {
    std::fs::read_to_string(audit_path(pki))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
        .collect()
}

/// One `[[issuers]]` block; `extra` is appended verbatim (TOML lines).
pub fn issuer_block(name: &str, kind: &str, issuer: &str, audience: &str, extra: &str) -> String {
    format!(
        "\n[[issuers]]\nname = \"{name}\"\nkind = \"{kind}\"\nissuer = \"{issuer}\"\naudiences = [\"{audience}\"]\n{extra}\n"
    )
}

/// One `[[routes]]` block allowing `issuer` with no claim conditions.
pub fn open_route(name: &str, prefix: &str, issuer: &str) -> String {
    format!("\n[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\n[[routes.allow]]\nissuer = \"{issuer}\"\n")
}

/// Standard valid claims: iss, aud, sub, iat = now, exp = now + 300; `extra` fields merged in.
pub fn claims(issuer: &str, audience: &str, extra: Value) -> Value {
    let t = now();
    let mut c = json!({"iss": issuer, "aud": audience, "sub": "user-1", "iat": t, "exp": t + 300});
    if let (Some(map), Value::Object(more)) = (c.as_object_mut(), extra) {
        for (k, v) in more {
            if v.is_null() {
                map.remove(&k);
            } else {
                map.insert(k, v);
            }
        }
    }
    c
}

/// What most end-to-end tests stand Runway between: a PKI, an RSA signing key (`k1`), a fake IdP publishing
/// it, and the mTLS echo upstream.
pub struct Backends {
    /// Certificates and keys.
    pub pki: Pki,
    /// The IdP's signing key.
    pub key: super::tokens::SigningKey,
    /// The IdP.
    pub idp: super::idp::TestIdp,
    /// Kong's stand-in.
    pub upstream: super::upstream::EchoUpstream,
}

impl Backends {
    /// Starts all four.
    pub async fn start() -> Backends {
        let pki = Pki::generate();
        let key = super::tokens::SigningKey::rsa("k1");
        let idp = super::idp::TestIdp::start(super::tokens::jwks(&[&key])).await;
        let upstream = super::upstream::EchoUpstream::start(&pki).await;
        Backends { pki, key, idp, upstream }
    }
}
