//! The audit trail (contract section 7): one JSON line per request, written before the response completes,
//! by a dedicated thread with group commit: the thread sleeps until an event arrives, then encodes and
//! writes everything queued by then in one `write`, and releases every request waiting on that batch. Under
//! load a batch holds many events, so the cost of a write is shared, and encoding happens off the request
//! path. The queue is bounded: when it is full the request waits for room (counted) rather than lose an
//! event. A failed write (full disk) is counted and logged, and its requests go on. The file is reopened on
//! SIGHUP (logrotate) and everything queued is written on shutdown.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Events held in memory at most before requests wait.
pub const QUEUE_CAPACITY: usize = 4096;

/// One audit event.
#[derive(Debug, Serialize)]
pub struct Event {
    /// RFC 3339 time the request arrived.
    pub ts: String,
    /// Request id.
    pub request_id: String,
    /// `allow`, `deny` or `would_deny`.
    pub decision: &'static str,
    /// Status sent to the client.
    pub status: u16,
    /// Closed-vocabulary reason; null on allow.
    pub reason: Option<&'static str>,
    /// Route name; null when no route matched.
    pub route: Option<String>,
    /// Issuer name, when a token was verified.
    pub issuer: Option<String>,
    /// Subject, when a token was verified.
    pub subject: Option<String>,
    /// The configured claim subset (absent claims left out); null without a verified token.
    pub claims: Option<Map<String, Value>>,
    /// First 16 hex digits of the SHA-256 of the presented token.
    pub token_sha256: Option<String>,
    /// Request method.
    pub method: String,
    /// Request path, without the query string.
    pub path: String,
    /// Client address.
    pub client_ip: Option<String>,
    /// Time to the response head, in milliseconds.
    pub duration_ms: f64,
}

/// Formats a time as RFC 3339 with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

enum Message {
    /// An event, and the request waiting until it is written.
    Event(Box<Event>, oneshot::Sender<()>),
    Reopen,
    Stop(oneshot::Sender<()>),
}

/// Where events go, and how to stop it.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
}

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
#[error("audit.path: cannot open {path}: {message}")]
pub struct AuditError {
    /// The file.
    pub path: String,
    /// OS error.
    pub message: String,
}

enum Sink {
    Stdout(std::io::Stdout),
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(path: Option<&Path>) -> Result<Sink, AuditError> {
        match path {
            None => Ok(Sink::Stdout(std::io::stdout())),
            Some(p) => Ok(Sink::File { path: p.to_path_buf(), file: open_append(p)? }),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(s) => s,
            Sink::File { file, .. } => file,
        }
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError { path: path.display().to_string(), message: e.to_string() })
}

impl AuditLog {
    /// Opens the sink (stdout when `path` is `None`) and starts the writer thread.
    pub fn start(path: Option<&Path>, metrics: Arc<Metrics>) -> Result<AuditLog, AuditError> {
        let sink = Sink::open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("runway-audit".into())
            .spawn(move || write_loop(sink, rx, &writer_metrics))
            .map_err(|e| AuditError { path: "audit writer".into(), message: e.to_string() })?;
        Ok(AuditLog { tx, metrics })
    }

    /// Hands an event to the writer and waits until the batch holding it has been written (or its write
    /// failed, which is counted and logged). Waits for room first when the queue is full.
    pub async fn record(&self, event: Event) {
        let (written, wait) = oneshot::channel();
        match self.tx.try_send(Message::Event(Box::new(event), written)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.metrics.audit_queue_waits.inc();
                if self.tx.send(msg).await.is_err() {
                    return self.lost();
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return self.lost(),
        }
        if wait.await.is_err() {
            self.lost();
        }
    }

    fn lost(&self) {
        self.metrics.audit_write_errors.inc();
        tracing::error!("audit writer has stopped: event not written");
    }

    /// Reopens the file (after logrotate moved it).
    pub async fn reopen(&self) {
        let _ = self.tx.send(Message::Reopen).await;
    }

    /// Writes and flushes everything queued so far, then stops the writer.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Reports write failures once per run of failures, and the recovery.
struct Health<'a> {
    metrics: &'a Metrics,
    failing: bool,
}

impl Health<'_> {
    fn report(&mut self, result: std::io::Result<()>, what: &str) -> bool {
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!("audit writes succeed again");
                }
                self.failing = false;
                true
            }
            Err(e) => {
                self.metrics.audit_write_errors.inc();
                // Log the first failure of a run, not every batch of a full disk.
                if !self.failing {
                    tracing::error!(error = %e, "audit {what} failed");
                }
                self.failing = true;
                false
            }
        }
    }
}

fn write_loop(mut sink: Sink, mut rx: mpsc::Receiver<Message>, metrics: &Metrics) {
    let mut health = Health { metrics, failing: false };
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::with_capacity(256);
    // Sleeps until something arrives; then takes everything queued by then as one batch.
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut stop = None;
        while let Some(message) = next.take() {
            match message {
                Message::Event(event, written) => {
                    encode(&event, &mut batch, &mut health);
                    waiting.push(written);
                }
                Message::Reopen => {
                    commit(&mut sink, &mut batch, &mut waiting, &mut health);
                    reopen(&mut sink, &mut health);
                }
                Message::Stop(done) => stop = Some(done),
            }
            if stop.is_none() {
                next = rx.try_recv().ok();
            }
        }
        commit(&mut sink, &mut batch, &mut waiting, &mut health);
        if let Some(done) = stop {
            let _ = done.send(());
            return;
        }
    }
}

fn encode(event: &Event, batch: &mut Vec<u8>, health: &mut Health<'_>) {
    let mark = batch.len();
    match serde_json::to_writer(&mut *batch, event) {
        Ok(()) => batch.push(b'\n'),
        Err(e) => {
            batch.truncate(mark);
            health.report(Err(std::io::Error::other(e)), "event encoding");
        }
    }
}

/// Writes the batch in one `write`, then releases the requests waiting on it, whatever the outcome.
fn commit(sink: &mut Sink, batch: &mut Vec<u8>, waiting: &mut Vec<oneshot::Sender<()>>, health: &mut Health<'_>) {
    if !batch.is_empty() {
        let events = batch.iter().filter(|&&b| b == b'\n').count() as u64;
        let writer = sink.writer();
        if health.report(writer.write_all(batch).and_then(|()| writer.flush()), "write") {
            health.metrics.audit_events.inc_by(events);
        }
        batch.clear();
    }
    for written in waiting.drain(..) {
        let _ = written.send(());
    }
}

fn reopen(sink: &mut Sink, health: &mut Health<'_>) {
    if let Sink::File { path, file } = sink {
        match open_append(path) {
            Ok(f) => {
                *file = f;
                tracing::info!(path = %path.display(), "audit file reopened");
            }
            Err(e) => {
                health.report(Err(std::io::Error::other(e.to_string())), "reopen");
            }
        }
    }
}
