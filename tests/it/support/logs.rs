//! Runway's log lines, captured in-process: one global JSON `tracing` subscriber (the binary's format) whose
//! writer sends each line to the buffer of the thread that logged it, if that thread is capturing.
//!
//! `#[tokio::test]` runs every task of the test (Runway, the fake IdP, Kong, the client) on the test's own
//! thread, so a test sees everything Runway logs for it and nothing from the tests running beside it.
//! Threads Runway starts itself (the audit writer) are not captured. (Not a per-thread subscriber: tracing
//! caches whether a call site is enabled across threads, and a thread without one would switch call sites
//! off for the others.)

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

type Buffer = Arc<Mutex<Vec<u8>>>;

thread_local! {
    static CAPTURE: RefCell<Option<Buffer>> = const { RefCell::new(None) };
}

/// The captured lines. Capture stops when this is dropped.
pub struct Logs {
    buffer: Buffer,
}

/// Writes to the current thread's capture buffer; discards when the thread is not capturing.
struct ThreadSink;

impl Write for ThreadSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(buffer) = capture.borrow().as_ref() {
                buffer.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn install_subscriber() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| ThreadSink)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .unwrap_or_else(|e| panic!("another global tracing subscriber is installed: {e}"));
    });
}

impl Logs {
    /// Captures this thread's events at `info` and above (Runway's default level), as JSON lines.
    pub fn capture() -> Logs {
        install_subscriber();
        let buffer = Buffer::default();
        CAPTURE.with(|capture| *capture.borrow_mut() = Some(buffer.clone()));
        Logs { buffer }
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

impl Drop for Logs {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}
