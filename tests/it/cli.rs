//! The `runway` binary itself (`CARGO_BIN_EXE_runway`), run as a child process with no network: `--version`,
//! `check` (exit codes, the one-line summary, errors naming the key, `RUNWAY_CONFIG`), the shipped
//! `config/example.toml`, and `serve` starting, answering `/healthz`, logging JSON to stderr and stopping
//! with status 0 on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A `runway` command with a clean environment: no inherited `RUNWAY_CONFIG` or `RUNWAY__…` overrides.
fn runway() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runway"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().to_ascii_uppercase().starts_with("RUNWAY") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running runway: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `runway check -c path`.
fn check(path: &Path) -> Output {
    run(runway().arg("check").arg("-c").arg(path))
}

/// Asserts `check` failed with exit 1, printed nothing on stdout, and named `key` on stderr.
fn assert_refused(out: &Output, key: &str) {
    assert_eq!(out.status.code(), Some(1), "expected exit 1\nstdout: {}\nstderr: {}", stdout(out), stderr(out));
    assert!(stdout(out).is_empty(), "nothing on stdout: {}", stdout(out));
    let err = stderr(out);
    assert!(err.contains(&format!("{key}: ")), "stderr should name {key}: {err}");
}

/// Every non-empty line is a JSON object with a level and a message.
fn assert_json_lines(text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some(), "no level: {line}");
        assert!(v.get("message").is_some(), "no message: {line}");
    }
}

const JWKS_ISSUER: &str = "https://idp.example.com";
const AUD: &str = "https://deploy.example.com";

/// A valid config in the PKI dir (absolute paths): a discovery issuer (never contacted by `check`) and a
/// JWKS-file issuer as `issuers[1]`; `extra` is appended.
fn write_config(pki: &Pki, extra: &str) -> PathBuf {
    let key = SigningKey::rsa("file-1");
    let jwks_path = pki.write_file("jwks.json", serde_json::to_string(&jwks(&[&key])).unwrap_or_default().as_bytes());
    let config = format!(
        "{}{}{}{}{}",
        base_config(pki, "https://127.0.0.1:9"),
        issuer_block("gitlab", "gitlab", "https://gitlab.example.com", AUD, ""),
        issuer_block("files", "oidc", JWKS_ISSUER, AUD, &format!("jwks_file = \"{}\"", jwks_path.display())),
        open_route("deploy", "/deploy", "gitlab"),
        extra
    );
    pki.write_file("runway.toml", config.as_bytes())
}

/// The config of [`write_config`] with the line starting `key = ` set to `key = "value"`.
fn with_value(pki: &Pki, key: &str, value: &Path) -> PathBuf {
    let path = write_config(pki, "");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let prefix = format!("{key} = ");
    let mut found = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(&prefix) {
            found = true;
            out.push_str(&format!("{key} = \"{}\"\n", value.display()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(found, "test bug: no {key} in the config");
    pki.write_file("runway.toml", out.as_bytes())
}

#[test]
fn version_prints_the_version() {
    let out = run(runway().arg("--version"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("runway {}", env!("CARGO_PKG_VERSION")));
}

/// Copies `config/example.toml` into a temp dir and creates every file it names there.
fn example_dir() -> (Pki, PathBuf) {
    let pki = Pki::generate();
    let dir = pki.dir.path();
    for sub in ["certs", "jwks"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap_or_else(|e| panic!("mkdir {sub}: {e}"));
    }
    let copy = |from: &Path, to: &str| {
        std::fs::copy(from, dir.join(to)).unwrap_or_else(|e| panic!("copying to {to}: {e}"));
    };
    copy(&pki.server_cert, "certs/server.pem");
    copy(&pki.server_key, "certs/server-key.pem");
    copy(&pki.ca_pem, "certs/kong-ca.pem");
    copy(&pki.client_cert, "certs/runway-client.pem");
    copy(&pki.client_key, "certs/runway-client-key.pem");
    let okta = SigningKey::rsa("okta-1");
    pki.write_file("jwks/okta.json", serde_json::to_string_pretty(&jwks(&[&okta])).unwrap_or_default().as_bytes());
    // [assertion] key: EC P-256, PKCS#8 (rcgen's default key type).
    let assertion = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("assertion key: {e}"));
    pki.write_file("certs/assertion-key.pem", assertion.serialize_pem().as_bytes());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let path = dir.join("example.toml");
    std::fs::copy(&example, &path).unwrap_or_else(|e| panic!("copying the example: {e}"));
    (pki, path)
}

#[test]
fn check_accepts_the_example_config() {
    let (pki, path) = example_dir();
    let out = check(&path);
    assert!(out.status.success(), "config/example.toml must pass `runway check`:\n{}", stderr(&out));
    let summary = stdout(&out);
    assert_eq!(summary.lines().count(), 1, "one line: {summary}");
    assert!(summary.starts_with("ok: 5 issuer(s), 6 route(s); listen 0.0.0.0:8443, admin 127.0.0.1:9901"), "{summary}");
    assert!(summary.contains("kong.internal:8443"), "{summary}");
    assert_json_lines(&stderr(&out));

    // Relative `-c` from another working directory: paths still resolve against the file's directory.
    let out = run(runway().current_dir(pki.dir.path()).args(["check", "-c", "example.toml"]));
    assert!(out.status.success(), "{}", stderr(&out));

    // `keys public` prints the example's assertion key (the example's Redis is never contacted).
    let out = run(runway().args(["keys", "public", "-c"]).arg(&path));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).matches("-----BEGIN PUBLIC KEY-----").count(), 1, "{}", stdout(&out));

    // The files it names are really read: without the assertion key, or the JWKS file, it is refused.
    let key = pki.dir.path().join("certs/assertion-key.pem");
    std::fs::write(&key, "not a key").unwrap_or_else(|e| panic!("write: {e}"));
    assert_refused(&check(&path), "assertion.key");
    std::fs::remove_file(&key).unwrap_or_else(|e| panic!("rm: {e}"));
    assert_refused(&check(&path), "assertion.key");
    std::fs::remove_file(pki.dir.path().join("jwks/okta.json")).unwrap_or_else(|e| panic!("rm: {e}"));
    assert_refused(&check(&path), "issuers[1].jwks_file");
}

#[test]
fn check_accepts_a_valid_config() {
    let pki = Pki::generate();
    let path = write_config(&pki, "");
    let out = check(&path);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout(&out);
    assert_eq!(
        summary,
        format!(
            "ok: 2 issuer(s), 1 route(s); listen 127.0.0.1:0, admin 127.0.0.1:0, upstream https://127.0.0.1:9/; \
             lint: 1 error(s), 2 warning(s) (details: runway lint -c {})\n",
            path.display()
        )
    );
}

#[test]
fn check_refuses_an_unknown_key() {
    let pki = Pki::generate();
    let path = write_config(&pki, "");
    let text = std::fs::read_to_string(&path).unwrap_or_default().replacen("listen = ", "lisen = ", 1);
    let path = pki.write_file("runway.toml", text.as_bytes());
    let out = check(&path);
    assert_refused(&out, "server.lisen");
    assert!(stderr(&out).contains("unknown field `lisen`"), "{}", stderr(&out));
}

#[test]
fn check_refuses_a_missing_config_file() {
    let pki = Pki::generate();
    let path = pki.dir.path().join("absent.toml");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains(&format!("{}: no such file", path.display())), "{}", stderr(&out));
}

#[test]
fn check_refuses_a_key_that_does_not_match_the_certificate() {
    let pki = Pki::generate();
    let (_cert, key) = pki.mismatched_key_pair();
    let out = check(&with_value(&pki, "tls_key", &key));
    assert_refused(&out, "server.tls_key");
    assert!(stderr(&out).contains("does not belong to the certificate"), "{}", stderr(&out));
}

#[test]
fn check_refuses_missing_or_unusable_tls_files() {
    let pki = Pki::generate();
    let missing = pki.dir.path().join("absent.pem");
    let not_pem = pki.write_file("not-pem.pem", b"this is not PEM\n");
    let a_dir = pki.dir.path().join("a-directory.pem");
    std::fs::create_dir(&a_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let cases: [(&str, &str, &Path); 8] = [
        ("tls_cert", "server.tls_cert", &missing),
        ("tls_cert", "server.tls_cert", &not_pem),
        ("tls_cert", "server.tls_cert", &a_dir),
        ("tls_key", "server.tls_key", &missing),
        ("tls_key", "server.tls_key", &not_pem),
        ("ca", "upstream.ca", &missing),
        ("client_cert", "upstream.client_cert", &missing),
        ("client_key", "upstream.client_key", &not_pem),
    ];
    for (field, key, file) in cases {
        let out = check(&with_value(&pki, field, file));
        assert_refused(&out, key);
        assert!(stderr(&out).contains(&file.display().to_string()), "{key}: the file is named: {}", stderr(&out));
    }
}

#[test]
fn check_refuses_a_jwks_file_that_is_not_json() {
    let pki = Pki::generate();
    let path = write_config(&pki, "");
    pki.write_file("jwks.json", b"-----BEGIN PUBLIC KEY-----\nnot json\n");
    let out = check(&path);
    assert_refused(&out, "issuers[1].jwks_file");
    assert!(stderr(&out).contains(&pki.dir.path().join("jwks.json").display().to_string()), "{}", stderr(&out));

    // A missing JWKS file, likewise.
    std::fs::remove_file(pki.dir.path().join("jwks.json")).unwrap_or_else(|e| panic!("rm: {e}"));
    assert_refused(&check(&path), "issuers[1].jwks_file");
}

#[test]
fn check_reads_runway_config_when_c_is_absent() {
    let pki = Pki::generate();
    let path = write_config(&pki, "");
    let out = run(runway().arg("check").env("RUNWAY_CONFIG", &path));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ok: 2 issuer(s)"), "{}", stdout(&out));

    // It really is that file: a broken one is refused.
    let bad = pki.write_file("bad.toml", b"[server]\nlisen = \"x\"\n");
    let out = run(runway().arg("check").env("RUNWAY_CONFIG", &bad));
    assert_refused(&out, "server.lisen");

    // `-c` wins over the variable.
    let out = run(runway().arg("check").arg("-c").arg(&path).env("RUNWAY_CONFIG", &bad));
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------------------------------------

/// Plain-HTTP GET: the status code, or `None` if nothing answers.
fn http_get(port: u16, path: &str) -> Option<u16> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).ok()?;
    raw.get(9..12)?.parse().ok()
}

/// Kills the child (SIGKILL) if a test fails before it has exited.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_starts_logs_json_and_stops_on_sigterm() {
    let pki = Pki::generate();
    // Only the JWKS-file issuer, so readiness needs no network.
    let key = SigningKey::rsa("file-1");
    let jwks_path = pki.write_file("jwks.json", serde_json::to_string(&jwks(&[&key])).unwrap_or_default().as_bytes());
    let config = format!(
        "{}{}{}",
        base_config(&pki, "https://127.0.0.1:9").replace("[admin]", "shutdown_grace = \"2s\"\n\n[admin]"),
        issuer_block("files", "oidc", JWKS_ISSUER, AUD, &format!("jwks_file = \"{}\"", jwks_path.display())),
        open_route("deploy", "/deploy", "files"),
    );
    let path = pki.write_file("runway.toml", config.as_bytes());
    let (listen, admin) = (free_port(), free_port());
    let log = pki.dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
    let child = runway()
        .current_dir(pki.dir.path())
        .arg("serve")
        .arg("-c")
        .arg(&path)
        .env("RUNWAY__SERVER__LISTEN", format!("127.0.0.1:{listen}"))
        .env("RUNWAY__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning runway serve: {e}"));
    let mut guard = Guard(Some(child));
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Up: /healthz answers 200 on the admin port given through the environment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http_get(admin, "/healthz") == Some(200) {
            break;
        }
        if let Some(child) = guard.0.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("runway serve exited early ({status}):\n{}", read_log());
        }
        assert!(Instant::now() < deadline, "runway serve never answered /healthz:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(admin, "/readyz"), Some(200), "keys come from a file: ready at once");
    assert!(
        TcpStream::connect(("127.0.0.1", listen)).is_ok(),
        "the TLS listener is on the port given through RUNWAY__SERVER__LISTEN"
    );

    // SIGTERM: graceful stop, exit 0.
    let pid = guard.0.as_ref().map(Child::id).unwrap_or_default();
    let kill = run(Command::new("kill").arg("-TERM").arg(pid.to_string()));
    assert!(kill.status.success(), "kill -TERM: {}", stderr(&kill));
    let status = guard.0.as_mut().and_then(|child| wait_for_exit(child, Duration::from_secs(10)));
    let Some(status) = status else {
        panic!("runway serve did not exit within 10s of SIGTERM:\n{}", read_log());
    };
    guard.0 = None;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM:\n{}", read_log());
    assert!(http_get(admin, "/healthz").is_none(), "the admin port is closed after exit");

    // stderr: JSON lines only, telling the story.
    let text = read_log();
    assert_json_lines(&text);
    for message in ["runway is serving", "stop signal received", "runway stopped"] {
        assert!(text.contains(&format!("\"message\":\"{message}\"")), "no {message:?} log line:\n{text}");
    }
}

#[test]
fn serve_refuses_an_invalid_config_naming_the_key() {
    let pki = Pki::generate();
    let path = with_value(&pki, "tls_key", &pki.mismatched_key_pair().1);
    let out = run(runway().arg("serve").arg("-c").arg(&path));
    assert_refused(&out, "server.tls_key");
}

#[test]
fn check_refuses_an_unusable_admin_token_file() {
    let pki = Pki::generate();
    let empty = pki.write_file("admin-token", b"\n");
    let admin = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n", empty.display());
    let path = write_config(&pki, "");
    let text =
        std::fs::read_to_string(&path).unwrap_or_default().replace("[admin]\nlisten = \"127.0.0.1:0\"\n", &admin);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let out = check(&path);
    assert_refused(&out, "admin.token_file");
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
    std::fs::write(&empty, "a-token\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(check(&path).status.success(), "{}", stderr(&check(&path)));
}
