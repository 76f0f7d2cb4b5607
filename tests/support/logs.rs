//! Runway's log lines, captured in-process: a JSON `tracing` subscriber (the binary's format) installed as the
//! current thread's default, writing into memory.
//!
//! `#[tokio::test]` runs every task of the test (Runway, the fake IdP, Kong, the client) on the test's own
//! thread, so a thread-local subscriber sees everything Runway logs for that test and nothing from the tests
//! running beside it. Threads Runway starts itself (the audit writer) are not captured.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::subscriber::DefaultGuard;

/// The captured lines. Capture stops when this is dropped.
pub struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures this thread's events at `info` and above (Runway's default level), as JSON lines.
    pub fn capture() -> Logs {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || sink.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        Logs { buffer, _guard: tracing::subscriber::set_default(subscriber) }
    }

    /// Every line so far, parsed.
    pub fn lines(&self) -> Vec<Value> {
        let raw = self.buffer.lock().unwrap_or_else(PoisonError::into_inner).clone();
        String::from_utf8_lossy(&raw)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
            .collect()
    }

    /// Lines whose `message` is `message` and whose `field` (a top-level key) contains `needle`.
    pub fn matching(&self, message: &str, field: &str, needle: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["message"] == message && l[field].as_str().is_some_and(|v| v.contains(needle)))
            .collect()
    }

    /// Waits (polling every 20 ms, at most `limit`) for a line like [`Logs::matching`]'s; panics with every
    /// line captured so far when none comes.
    pub async fn wait_for(&self, message: &str, field: &str, needle: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.matching(message, field, needle).into_iter().next() {
                return line;
            }
            if Instant::now() >= deadline {
                let all: Vec<String> = self.lines().iter().map(Value::to_string).collect();
                panic!(
                    "no log line {message:?} with {field} containing {needle:?} within {limit:?}; got:\n{}",
                    all.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
