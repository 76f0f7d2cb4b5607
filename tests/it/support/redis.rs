//! A real `redis-server` (the distribution's package, installed by `.ci/run`) as a child process on a
//! loopback port, without persistence. Stopped (killed) when dropped; can be stopped and started again on
//! the same port to play an outage.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) redis-server of this test.
pub struct TestRedis {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
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
        let Some(binary) = find_binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed, and CI is set: .ci/run installs it (apt package redis-server)"
            );
            eprintln!("note: redis-server is not installed; skipping this test (apt-get install redis-server)");
            return None;
        };
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("finding a free port: {e}"));
            l.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}")).port()
        };
        let mut redis = TestRedis { binary, port, child: None };
        redis.restart();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
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
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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

    fn pings(&self) -> bool {
        self.command("*1\r\n$4\r\nPING\r\n").is_some_and(|r| r.starts_with("+PONG"))
    }

    fn command(&self, resp: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        tcp.write_all(resp.as_bytes()).ok()?;
        let mut buf = [0u8; 256];
        let n = tcp.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
