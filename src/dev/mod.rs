//! `runway dev`: a complete local demo from the one binary (contract section 9). A throwaway CA and
//! certificates, a local token issuer, a Kong stand-in that demands Runway's client certificate, and Runway
//! between them on a sample config, all on 127.0.0.1; then ready-to-paste `curl` commands.

mod issuer;
mod kong;
mod pki;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::server::Server;
use issuer::DevIssuer;
use kong::DevKong;
use pki::DevPki;

/// The audience the demo's tokens are issued for.
pub const AUDIENCE: &str = "https://deploy.example.com";
/// Ports tried first, so the printed commands stay the same from run to run when they are free.
const PREFERRED: (u16, u16) = (8443, 9901);

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Something the demo sets up.
    #[error("{0}")]
    Setup(String),
}

impl DevError {
    fn pki(e: rcgen::Error) -> Self {
        DevError::Setup(format!("generating certificates: {e}"))
    }

    fn io(path: &Path, e: std::io::Error) -> Self {
        DevError::Setup(format!("{}: {e}", path.display()))
    }
}

/// A set-up demo: files written, servers bound; [`Demo::run`] serves until SIGINT/SIGTERM.
pub struct Demo {
    server: Server,
    instructions: String,
    _issuer: DevIssuer,
    _kong: DevKong,
}

impl Demo {
    /// Serves; once Runway has loaded the issuer's keys, hands the instructions to `announce`.
    pub async fn run(self, announce: impl FnOnce(&str)) -> Result<(), DevError> {
        let Demo { server, instructions, _issuer, _kong } = self;
        let ready = server.readiness();
        tokio::spawn(crate::server::signals(server.shutdown_handle(), server.reloader()));
        let running = tokio::spawn(server.run());
        wait_for_keys(ready).await?;
        announce(&instructions);
        running.await.map_err(|e| DevError::Setup(format!("runway stopped: {e}")))
    }
}

/// Sets the demo up in `dir` (created if missing).
pub async fn start(dir: &Path) -> Result<Demo, DevError> {
    std::fs::create_dir_all(dir).map_err(|e| DevError::io(dir, e))?;
    let dir = dir.canonicalize().map_err(|e| DevError::io(dir, e))?;
    let pki = DevPki::generate(&dir)?;
    let issuer = DevIssuer::start().await?;
    let kong = DevKong::start(&pki).await?;
    let (listen, admin) = (free_or_any(PREFERRED.0), free_or_any(PREFERRED.1));
    let config_path = dir.join("runway.toml");
    let text = sample_config(&dir, &pki, &issuer.url, kong.port, listen, admin);
    std::fs::write(&config_path, text).map_err(|e| DevError::io(&config_path, e))?;
    let config = crate::config::load(&config_path).map_err(|e| DevError::Setup(e.to_string()))?;
    let server = Server::start(config).await.map_err(|e| DevError::Setup(e.to_string()))?;
    let instructions = instructions(&dir, &pki, &issuer, &kong, &server)?;
    Ok(Demo { server, instructions, _issuer: issuer, _kong: kong })
}

/// A fresh directory for the demo's files under the system temp dir.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join(format!("runway-dev-{}", std::process::id()))
}

fn free_or_any(port: u16) -> u16 {
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() { port } else { 0 }
}

async fn wait_for_keys(ready: impl Fn() -> bool) -> Result<(), DevError> {
    for _ in 0..200 {
        if ready() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Err(DevError::Setup("the local issuer's keys did not load within 5 s".into()))
}

fn sample_config(dir: &Path, pki: &DevPki, issuer: &str, kong_port: u16, listen: u16, admin: u16) -> String {
    let p = |path: &Path| path.display().to_string();
    format!(
        r#"# Written by `runway dev`: a sample configuration (contract section 2).

[server]
listen = "127.0.0.1:{listen}"
tls_cert = "{server_cert}"
tls_key = "{server_key}"

[admin]
listen = "127.0.0.1:{admin}"

[upstream]                 # the Kong stand-in: it accepts only Runway's client certificate
url = "https://127.0.0.1:{kong_port}"
ca = "{ca}"
client_cert = "{client_cert}"
client_key = "{client_key}"
server_name = "localhost"

[audit]
path = "{audit}"

[[issuers]]                # the local token issuer, playing GitLab
name = "gitlab"
kind = "gitlab"
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256"]

[[routes]]
name = "deploy-production"
path_prefix = "/deploy/production"
methods = ["POST", "PUT"]
[[routes.allow]]
issuer = "gitlab"
claims = {{ project_path = ["platform/api", "platform/tools/*"], ref_protected = "true", environment = "production", environment_protected = "true" }}

[[routes]]
name = "status"
path_prefix = "/status"
anonymous = true
"#,
        server_cert = p(&pki.server.0),
        server_key = p(&pki.server.1),
        ca = p(&pki.ca),
        client_cert = p(&pki.client.0),
        client_key = p(&pki.client.1),
        audit = p(&dir.join("audit.jsonl")),
    )
}

fn job_claims(issuer: &str, environment: &str, iat: i64, exp: i64) -> Value {
    json!({
        "iss": issuer, "aud": AUDIENCE, "iat": iat, "nbf": iat, "exp": exp,
        "sub": "project_path:platform/api:ref_type:branch:ref:main",
        "project_path": "platform/api", "namespace_path": "platform", "ref": "main", "ref_type": "branch",
        "ref_protected": "true", "environment": environment,
        // GitLab says whether the job's environment is protected; in the demo only production is.
        "environment_protected": (environment == "production").to_string(), "job_id": "4242", "pipeline_id": "1717",
        "user_login": "alice",
    })
}

fn instructions(
    dir: &Path,
    pki: &DevPki,
    issuer: &DevIssuer,
    kong: &DevKong,
    server: &Server,
) -> Result<String, DevError> {
    let now = crate::auth::unix_now() as i64;
    let allowed = issuer.mint(&job_claims(&issuer.url, "production", now, now + 3600))?;
    let denied = issuer.mint(&job_claims(&issuer.url, "staging", now, now + 3600))?;
    let expired = issuer.mint(&job_claims(&issuer.url, "production", now - 1800, now - 600))?;
    let base = format!("https://localhost:{}", server.local_addr().port());
    let curl = |token: &str| {
        format!(
            "curl -sS --cacert {ca} -X POST -H 'Authorization: Bearer {token}' {base}/deploy/production/app",
            ca = pki.ca.display()
        )
    };
    Ok(format!(
        r#"Runway dev demo is running (Ctrl-C stops everything).

  files:          {dir}  (runway.toml, certificates, audit.jsonl)
  runway:         {base}
  admin:          http://{admin}/metrics  /healthz  /readyz
  token issuer:   {issuer}/.well-known/openid-configuration
  kong stand-in:  https://127.0.0.1:{kong}  (refuses anyone without Runway's client certificate; echoes what it got)

# allowed: a GitLab CI job token for platform/api on a protected ref, environment production (200, Kong's echo)
{allowed}
# denied: the same job on environment staging (403; the detail names the failing condition)
{denied}
# expired: a token that expired ten minutes ago (401, error="invalid_token")
{expired}
"#,
        dir = dir.display(),
        admin = server.admin_addr(),
        issuer = issuer.url,
        kong = kong.port,
        allowed = curl(&allowed),
        denied = curl(&denied),
        expired = curl(&expired),
    ))
}
