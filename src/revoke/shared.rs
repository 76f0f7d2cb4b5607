//! Revocations shared by every replica through the `[replay]` Redis: one hash holds them
//! (`runway:revocations`, id → JSON), and a change is announced on a channel (`runway:revocations:changed`)
//! that every replica subscribes to and answers with a full reload of the hash. The full reload also runs
//! every few seconds, so a replica that missed a message, or was cut off, converges by itself.
//! Expired entries are removed by whichever replica loads them first.
//!
//! A Redis that restarts without persistence comes back empty. A marker key (`runway:revocations:present`),
//! written with every change, tells such a Redis apart from one where every revocation was lifted: a replica
//! that finds the marker gone writes back the set it knows, so a Redis restart never lifts a revocation. (A
//! revocation lifted in the few seconds before such a restart can come back that way: it fails closed.)

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use redis::aio::MultiplexedConnection;

use super::Revocation;
use crate::config::RedisConfig;
use crate::replay::StoreError;
use crate::replay::redis::{ClientError, RedisConnection, client};

const HASH: &str = "runway:revocations";
const CHANNEL: &str = "runway:revocations:changed";
const MARKER: &str = "runway:revocations:present";
/// Longest wait for one Redis exchange, connecting included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the shared store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The `[replay]` Redis settings or their files.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// No connection to Redis.
    #[error(transparent)]
    Connect(#[from] StoreError),
    /// Redis refused or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// This replica has not loaded the shared set yet, so it cannot tell a lost set from an empty one.
    #[error("this replica has not loaded the shared revocations yet")]
    NotLoaded,
}

/// See the module docs.
pub struct Shared {
    connection: RedisConnection,
}

impl Shared {
    /// For the Redis of `config`; connects on first use.
    pub fn new(config: RedisConfig) -> Shared {
        let outage = "new revocations are refused (the known ones stay in force)";
        Shared { connection: RedisConnection::new(config, "revocations", outage) }
    }

    /// The Redis settings it uses.
    pub fn config(&self) -> &RedisConfig {
        self.connection.config()
    }

    /// Runs `work` on the shared connection within [`COMMAND_TIMEOUT`]; after a failure the connection is made
    /// anew next time.
    async fn with_connection<T, F, Fut>(&self, work: F) -> Result<T, SyncError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, SyncError>>,
    {
        let attempt = async {
            let (id, connection) = self.connection.get().await?;
            let result = work(connection).await;
            if result.is_err() {
                self.connection.forget(id).await;
            }
            result
        };
        tokio::time::timeout(COMMAND_TIMEOUT, attempt).await.unwrap_or(Err(SyncError::Timeout(COMMAND_TIMEOUT)))
    }

    /// Stores a revocation and tells every replica (writing back `known` first if Redis lost its data).
    pub async fn put(&self, revocation: &Revocation, known: &[Revocation], now_ms: u64) -> Result<(), SyncError> {
        let json = serde_json::to_string(revocation).unwrap_or_default();
        self.with_connection(|mut connection| async move {
            restore_if_lost(&mut connection, known, now_ms).await?;
            redis::pipe()
                .atomic()
                .hset(HASH, &revocation.id, json)
                .ignore()
                .set(MARKER, 1)
                .ignore()
                .publish(CHANNEL, &revocation.id)
                .ignore()
                .query_async::<()>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    /// Removes a revocation and tells every replica; `false` if no replica had it.
    pub async fn delete(&self, id: &str, known: &[Revocation], now_ms: u64) -> Result<bool, SyncError> {
        self.with_connection(|mut connection| async move {
            restore_if_lost(&mut connection, known, now_ms).await?;
            let (removed,): (u64,) = redis::pipe()
                .atomic()
                .hdel(HASH, id)
                .publish(CHANNEL, id)
                .ignore()
                .query_async(&mut connection)
                .await?;
            Ok(removed > 0)
        })
        .await
    }

    /// Every stored revocation still in force at `now_ms`; expired ones are removed from Redis on the way. A
    /// Redis that lost its data (no marker) gets `known` written back first, when this replica has a known set.
    pub async fn load(&self, now_ms: u64, known: Option<&[Revocation]>) -> Result<Vec<Revocation>, SyncError> {
        self.with_connection(|mut connection| async move {
            // Only a replica that has loaded the set may say what it was: a new one would mark it empty.
            if let Some(known) = known {
                restore_if_lost(&mut connection, known, now_ms).await?;
            }
            let all: Vec<(String, String)> = redis::cmd("HGETALL").arg(HASH).query_async(&mut connection).await?;
            let mut active = Vec::with_capacity(all.len());
            let mut expired = Vec::new();
            for (id, json) in all {
                match serde_json::from_str::<Revocation>(&json) {
                    Ok(r) if r.expires_ms > now_ms => active.push(r),
                    Ok(_) => expired.push(id),
                    // Not ours to delete: a newer Runway may have written it. It revokes nothing here.
                    Err(e) => tracing::warn!(id = %id, error = %e, "unreadable revocation in Redis skipped"),
                }
            }
            if !expired.is_empty() {
                redis::cmd("HDEL").arg(HASH).arg(&expired).query_async::<()>(&mut connection).await?;
            }
            Ok(active)
        })
        .await
    }

    /// A stream that yields once per announced change, and ends when the subscription's connection does.
    pub async fn subscribe(&self) -> Result<impl Stream<Item = ()> + Send + use<>, SyncError> {
        let subscribe = async {
            let mut pubsub = client(self.config())?.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok(pubsub.into_on_message().map(|_| ()))
        };
        tokio::time::timeout(COMMAND_TIMEOUT, subscribe).await.unwrap_or(Err(SyncError::Timeout(COMMAND_TIMEOUT)))
    }
}

/// Writes `known` back when the marker is gone (Redis restarted empty), so that no change made afterwards, by
/// any replica, can hide the revocations in force from the others.
async fn restore_if_lost(
    connection: &mut MultiplexedConnection,
    known: &[Revocation],
    now_ms: u64,
) -> Result<(), SyncError> {
    let marked: bool = redis::cmd("EXISTS").arg(MARKER).query_async(connection).await?;
    if marked {
        return Ok(());
    }
    let mut restore = redis::pipe();
    restore.atomic();
    let mut restored = 0;
    for revocation in known.iter().filter(|r| r.expires_ms > now_ms) {
        restore.hset(HASH, &revocation.id, serde_json::to_string(revocation).unwrap_or_default()).ignore();
        restored += 1;
    }
    restore.set(MARKER, 1).ignore().publish(CHANNEL, "restored").ignore();
    restore.query_async::<()>(connection).await?;
    if restored > 0 {
        tracing::warn!(restored, "revocations: Redis had lost them; wrote back the known set");
    }
    Ok(())
}
