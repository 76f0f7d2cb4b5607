//! A real `redis-server` (the distribution's package, installed by `.ci/run`) as a child process on a
//! loopback port, without persistence. Stopped (killed) when dropped; can be stopped and started again on
//! the same port to play an outage. [`TestRedis::start_tls`] starts one that speaks TLS only (Debian builds
//! redis-server with TLS), with a password or an ACL user, as managed Redis services do.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pki::{self, Pki, Usage};

/// A running (or stopped) redis-server of this test.
pub struct TestRedis {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
    /// The listener and auth arguments (plain: none beyond the port).
    args: Vec<String>,
    /// TLS only: how the helper's own commands reach it (trusting the test CA).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// What the helper's own commands send as `AUTH` first (none without auth).
    auth: Vec<String>,
}

/// Who may use a TLS test Redis.
#[derive(Debug, Clone, Copy)]
pub enum RedisAuth<'a> {
    /// Anyone (no `AUTH`).
    Open,
    /// The `default` user with this password (`--requirepass`).
    Password(&'a str),
    /// Only this ACL user (name, password); the `default` user is off.
    User(&'a str, &'a str),
}

/// `redis-server`, or `None` with a note on stderr locally; a panic when `CI` is set (CI installs it; a skipped test
/// there would hide a gap).
fn installed_binary() -> Option<PathBuf> {
    let binary = find_binary();
    if binary.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed, and CI is set: .ci/run installs it (apt package redis-server)"
        );
        eprintln!("note: redis-server is not installed; skipping this test (apt-get install redis-server)");
    }
    binary
}

/// Where `redis-server` is, if installed.
fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

impl TestRedis {
    /// Starts one on a free loopback port. Without `redis-server` installed: `None` with a note on stderr
    /// locally, a panic when `CI` is set (CI installs it; a skipped test there would hide a gap).
    pub fn start() -> Option<TestRedis> {
        let binary = installed_binary()?;
        let port = free_port();
        let mut redis = TestRedis {
            binary,
            port,
            child: None,
            args: vec!["--port".into(), port.to_string()],
            tls: None,
            auth: vec![],
        };
        redis.restart();
        Some(redis)
    }

    /// Starts one on a free loopback port that speaks TLS only (`--port 0 --tls-port PORT`), with a server
    /// certificate from `pki`'s CA (SANs `localhost`, `127.0.0.1`), no client certificate asked
    /// (`--tls-auth-clients no`), and `auth`. `None` without `redis-server`, as [`TestRedis::start`].
    pub fn start_tls(pki: &Pki, auth: RedisAuth<'_>) -> Option<TestRedis> {
        let binary = installed_binary()?;
        let port = free_port();
        let (cert, key) = pki.issue(&format!("redis-{port}"), "redis", Usage::Server);
        let path = |p: &std::path::Path| p.display().to_string();
        let mut args: Vec<String> = ["--port", "0", "--tls-port", &port.to_string()].map(String::from).to_vec();
        args.extend(["--tls-cert-file".into(), path(&cert), "--tls-key-file".into(), path(&key)]);
        args.extend(["--tls-ca-cert-file".into(), path(&pki.ca_pem), "--tls-auth-clients".into(), "no".into()]);
        let auth = match auth {
            RedisAuth::Open => vec![],
            RedisAuth::Password(password) => {
                args.extend(["--requirepass".into(), password.into()]);
                vec![password.to_string()]
            }
            RedisAuth::User(name, password) => {
                // Each --user is one `user` line of redis.conf: the default user off, this one with every right.
                args.extend(["--user", "default", "off"].map(String::from));
                args.extend(["--user".into(), name.into(), "on".into(), format!(">{password}")]);
                args.extend(["~*", "&*", "+@all"].map(String::from));
                vec![name.to_string(), password.to_string()]
            }
        };
        let roots = {
            let mut roots = rustls::RootCertStore::empty();
            for cert in pki::load_certs(&pki.ca_pem) {
                roots.add(cert).unwrap_or_else(|e| panic!("test CA: {e}"));
            }
            roots
        };
        let tls = rustls::ClientConfig::builder_with_provider(pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("client protocol versions: {e}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut redis = TestRedis { binary, port, child: None, args, tls: Some(Arc::new(tls)), auth };
        redis.restart();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://` for a TLS one.
    pub fn url(&self) -> String {
        self.url_with("")
    }

    /// [`TestRedis::url`] with `userinfo` (e.g. `":password@"`, `"user:password@"`) before the host.
    pub fn url_with(&self, userinfo: &str) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{userinfo}127.0.0.1:{}/0", self.port)
    }

    /// Changes the `default` user's password (`CONFIG SET requirepass`; open connections stay logged in) and
    /// keeps it for restarts.
    pub fn set_password(&mut self, password: &str) {
        let reply = self.run(&["CONFIG", "SET", "requirepass", password]);
        assert!(reply.as_deref().is_some_and(|r| r.starts_with("+OK")), "CONFIG SET requirepass: {reply:?}");
        self.auth = vec![password.to_string()];
        match self.args.iter().position(|a| a == "--requirepass") {
            Some(i) => self.args[i + 1] = password.to_string(),
            None => self.args.extend(["--requirepass".into(), password.into()]),
        }
    }

    /// Closes every client connection (`CLIENT KILL TYPE normal`), as a failover or an idle timeout would.
    pub fn kill_clients(&self) {
        let reply = self.run(&["CLIENT", "KILL", "TYPE", "normal"]);
        assert!(reply.as_deref().is_some_and(|r| r.starts_with(':')), "CLIENT KILL: {reply:?}");
    }

    /// Runs one command (after `AUTH`, if the server wants it) and returns its reply's first line.
    pub fn run(&self, args: &[&str]) -> Option<String> {
        let mut resp = format!("*{}\r\n", args.len());
        for arg in args {
            resp.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.command(&resp)
    }

    /// Kills the server (an outage, as abrupt as a crash) and waits until the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis on port {} did not stop", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.binary)
            .args(&self.args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pings() {
            assert!(Instant::now() < deadline, "redis-server on port {} never answered PING", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Number of keys in db 0 (`DBSIZE`), over a plain RESP exchange.
    pub fn dbsize(&self) -> i64 {
        let reply = self.command("*1\r\n$6\r\nDBSIZE\r\n").unwrap_or_else(|| panic!("DBSIZE failed"));
        reply.trim_start_matches(':').trim().parse().unwrap_or_else(|e| panic!("DBSIZE reply {reply:?}: {e}"))
    }

    /// Number of replay keys (`runway:replay:*`) in db 0: what one_time routes recorded, nothing else (revocations
    /// share the Redis).
    pub fn replay_keys(&self) -> i64 {
        let script = "return #redis.call('KEYS', ARGV[1])";
        let reply = self.run(&["EVAL", script, "0", "runway:replay:*"]).unwrap_or_else(|| panic!("EVAL KEYS failed"));
        reply.trim_start_matches(':').trim().parse().unwrap_or_else(|e| panic!("EVAL KEYS reply {reply:?}: {e}"))
    }

    fn pings(&self) -> bool {
        self.command("*1\r\n$4\r\nPING\r\n").is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends `resp` (after `AUTH`, if the server wants it) and returns the last reply line, over TLS for a TLS
    /// server.
    fn command(&self, resp: &str) -> Option<String> {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = String::new();
        if !self.auth.is_empty() {
            request.push_str(&format!("*{}\r\n$4\r\nAUTH\r\n", self.auth.len() + 1));
            for arg in &self.auth {
                request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
        }
        request.push_str(resp);
        let replies = if self.auth.is_empty() { 1 } else { 2 };
        match &self.tls {
            None => exchange(tcp, &request, replies),
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1").ok()?;
                let connection = rustls::ClientConnection::new(config.clone(), name).ok()?;
                exchange(rustls::StreamOwned::new(connection, tcp), &request, replies)
            }
        }
    }
}

/// Writes `request` and reads until `replies` one-line replies came; returns the last one.
fn exchange(mut stream: impl Read + Write, request: &str, replies: usize) -> Option<String> {
    stream.write_all(request.as_bytes()).ok()?;
    stream.flush().ok()?;
    let mut received = Vec::new();
    let mut buf = [0u8; 256];
    while received.windows(2).filter(|w| w == b"\r\n").count() < replies {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    text.split("\r\n").filter(|l| !l.is_empty()).nth(replies - 1).map(|l| format!("{l}\r\n"))
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("finding a free port: {e}"));
    l.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}")).port()
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
