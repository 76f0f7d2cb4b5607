//! The audit trail (contract section 7): one JSON line per request, written by a dedicated thread behind a
//! bounded queue so a slow disk never sits on the request path. When the queue is full the request waits
//! for room (counted) rather than lose an event. The writer drains the queue every 10 ms (100 ms when idle)
//! with one write and one flush per batch, so requests never wake it. The file is reopened on SIGHUP
//! (logrotate) and everything queued is flushed on shutdown.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Events held in memory at most before requests wait.
pub const QUEUE_CAPACITY: usize = 4096;
/// How often the writer drains the queue while events arrive: the most an event waits before it is written.
const BUSY_TICK: std::time::Duration = std::time::Duration::from_millis(10);
/// How often the writer looks when nothing has arrived for a while.
const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

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
    Line(Vec<u8>),
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
    File { path: PathBuf, file: BufWriter<File> },
}

impl Sink {
    fn open(path: Option<&Path>) -> Result<Sink, AuditError> {
        match path {
            None => Ok(Sink::Stdout(std::io::stdout())),
            Some(p) => {
                Ok(Sink::File { path: p.to_path_buf(), file: BufWriter::with_capacity(64 * 1024, open_append(p)?) })
            }
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

    /// Queues an event; waits for room when the queue is full.
    pub async fn record(&self, event: &Event) {
        let mut line = match serde_json::to_vec(event) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit event could not be encoded");
                self.metrics.audit_write_errors.inc();
                return;
            }
        };
        line.push(b'\n');
        match self.tx.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.metrics.audit_queue_waits.inc();
                if self.tx.send(msg).await.is_err() {
                    self.lost();
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.lost(),
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

fn write_loop(mut sink: Sink, mut rx: mpsc::Receiver<Message>, metrics: &Metrics) {
    let mut failing = false;
    let mut report = |result: std::io::Result<()>, what: &str| match result {
        Ok(()) => {
            if failing {
                tracing::info!("audit writes succeed again");
            }
            failing = false;
        }
        Err(e) => {
            metrics.audit_write_errors.inc();
            // Log the first failure of a run, not every event of a full disk.
            if !failing {
                tracing::error!(error = %e, "audit {what} failed");
            }
            failing = true;
        }
    };
    // The writer polls on a short timer instead of waiting on the channel: a request that queues an event
    // then wakes nobody, and each tick writes everything queued with one flush. Busy: every BUSY_TICK; idle:
    // backing off to IDLE_TICK. Shutdown and reopen requests are handled within one tick.
    let mut tick = BUSY_TICK;
    loop {
        std::thread::sleep(tick);
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(Message::Line(line)) => {
                    let result = sink.writer().write_all(&line);
                    if result.is_ok() {
                        metrics.audit_events.inc();
                    }
                    report(result, "write");
                    wrote = true;
                }
                Ok(Message::Reopen) => {
                    report(sink.writer().flush(), "flush");
                    if let Sink::File { path, file } = &mut sink {
                        match open_append(path) {
                            Ok(f) => {
                                *file = BufWriter::with_capacity(64 * 1024, f);
                                tracing::info!(path = %path.display(), "audit file reopened");
                            }
                            Err(e) => report(Err(std::io::Error::other(e.to_string())), "reopen"),
                        }
                    }
                }
                Ok(Message::Stop(done)) => {
                    report(sink.writer().flush(), "flush");
                    let _ = done.send(());
                    return;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    report(sink.writer().flush(), "flush");
                    return;
                }
            }
        }
        if wrote {
            report(sink.writer().flush(), "flush");
            tick = BUSY_TICK;
        } else {
            tick = (tick * 2).min(IDLE_TICK);
        }
    }
}
