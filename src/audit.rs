//! The audit trail (contract section 7): one JSON line per request, written before the response completes,
//! with group commit done by the requests themselves. A request encodes its event into the shared batch; if
//! no write is under way it becomes the writer: it writes the batch in one `write` and then, while more
//! events arrived during that write, writes those too, releasing each batch's requests as it lands. A request
//! that finds a write under way waits for the batch holding its event. Under load one `write` carries many
//! events; alone, a request pays one `write` and no thread hop (a dedicated writer thread cost two context
//! switches per request). A failed write (full disk) is counted and logged once per run of failures, and its
//! requests go on. The file is reopened on SIGHUP (logrotate). Writes go to the page cache, not to the disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Bytes of encoded events beyond which a request waits for the writer before adding its own (a stuck disk
/// must not grow memory without bound): counted in `audit_queue_waits_total`.
pub const MAX_PENDING_BYTES: usize = 4 << 20;

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
    /// The request's trace id (32 hex digits), with `[tracing]`: an audit line leads to its trace. Left out
    /// without `[tracing]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// Formats a time as RFC 3339 with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Where events go.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
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

struct Shared {
    pending: Mutex<Pending>,
    /// Taken only by the one writer of the moment (or a reopen), never while `pending` is held.
    sink: Mutex<Sink>,
    written: Notify,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Pending {
    /// Encoded events not yet handed to a writer.
    batch: Vec<u8>,
    events: u64,
    /// Events ever added, and ever written (or failed): a request waits until `done` passes its number.
    added: u64,
    done: u64,
    writing: bool,
    failing: bool,
}

enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(path: Option<&Path>) -> Result<Sink, AuditError> {
        match path {
            None => Ok(Sink::Stdout),
            Some(p) => Ok(Sink::File { path: p.to_path_buf(), file: open_append(p)? }),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File { file, .. } => file.write_all(bytes),
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
    /// Opens the sink (stdout when `path` is `None`).
    pub fn start(path: Option<&Path>, metrics: Arc<Metrics>) -> Result<AuditLog, AuditError> {
        let sink = Sink::open(path)?;
        let shared = Shared { pending: Mutex::default(), sink: Mutex::new(sink), written: Notify::new(), metrics };
        Ok(AuditLog { shared: Arc::new(shared) })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the event and returns once the batch holding it has been written (or its write failed, which
    /// is counted and logged).
    pub async fn record(&self, event: Event) {
        let backlog = {
            let pending = self.pending();
            (pending.batch.len() >= MAX_PENDING_BYTES).then_some(pending.added)
        };
        if let Some(added) = backlog {
            self.shared.metrics.audit_queue_waits.inc();
            self.wait_until(added).await;
        }
        let mine = {
            let mut pending = self.pending();
            let mark = pending.batch.len();
            if let Err(e) = serde_json::to_writer(&mut pending.batch, &event) {
                pending.batch.truncate(mark);
                drop(pending);
                self.shared.metrics.audit_write_errors.inc();
                tracing::error!(error = %e, "audit event could not be encoded");
                return;
            }
            pending.batch.push(b'\n');
            pending.events += 1;
            pending.added += 1;
            pending.added
        };
        self.wait_until(mine).await;
    }

    /// Returns once event `number` has been written. Whoever finds no write under way writes everything
    /// pending (one batch), then lets the next one lead: no request writes for others for long.
    async fn wait_until(&self, number: u64) {
        loop {
            let written = self.shared.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            let batch = {
                let mut pending = self.pending();
                if pending.done >= number {
                    return;
                }
                match pending.writing {
                    true => None,
                    false => {
                        pending.writing = true;
                        let events = std::mem::take(&mut pending.events);
                        Some((std::mem::take(&mut pending.batch), events, pending.added))
                    }
                }
            };
            match batch {
                Some((batch, events, upto)) => self.write_batch(batch, events, upto),
                None => written.await,
            }
        }
    }

    fn write_batch(&self, mut batch: Vec<u8>, events: u64, upto: u64) {
        let result = self.shared.sink.lock().unwrap_or_else(PoisonError::into_inner).write(&batch);
        self.report(result, events);
        {
            let mut pending = self.pending();
            pending.done = upto;
            pending.writing = false;
            // Hand the buffer back when nothing arrived meanwhile, so batches do not allocate afresh.
            if pending.batch.is_empty() {
                batch.clear();
                pending.batch = batch;
            }
        }
        self.shared.written.notify_waiters();
    }

    fn report(&self, result: std::io::Result<()>, events: u64) {
        let metrics = &self.shared.metrics;
        let mut pending = self.pending();
        match result {
            Ok(()) => {
                metrics.audit_events.inc_by(events);
                if pending.failing {
                    tracing::info!("audit writes succeed again");
                }
                pending.failing = false;
            }
            Err(e) => {
                metrics.audit_write_errors.inc();
                // Log the first failure of a run, not every batch of a full disk.
                if !pending.failing {
                    tracing::error!(error = %e, "audit write failed");
                }
                pending.failing = true;
            }
        }
    }

    /// Reopens the file (after logrotate moved it).
    pub async fn reopen(&self) {
        let mut sink = self.shared.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Sink::File { path, file } = &mut *sink {
            match open_append(path) {
                Ok(f) => {
                    *file = f;
                    tracing::info!(path = %path.display(), "audit file reopened");
                }
                Err(e) => {
                    self.shared.metrics.audit_write_errors.inc();
                    tracing::error!(error = %e, "audit reopen failed");
                }
            }
        }
    }

    /// Every event is written before its request's response completes: nothing is left to flush at exit.
    pub async fn shutdown(&self) {
        let added = self.pending().added;
        self.wait_until(added).await;
    }
}
