//! The shared store: one Redis for every replica. A use is recorded with one atomic command,
//! `SET runway:replay:<sha256> 1 NX PX <ms until the token expires>`: `OK` is the first use, nil a replay.
//!
//! One multiplexed connection per Runway process (redis' `ConnectionManager`), made on first use so that
//! `runway check` contacts nothing, and re-made in the background when it breaks. Every command is bounded
//! by [`COMMAND_TIMEOUT`]: when Redis is slow or gone, a `one_time` request fails fast with 503 instead of
//! hanging, and the next one tries again.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{ReplayKey, ReplayStore, StoreError, StoreFuture, Use, unix_ms};

/// Longest wait for one replay check, reconnecting included.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);
/// Longest wait for a TCP connection (and the handshake) to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for Redis to answer a command on an open connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Key prefix, so the keys are recognisable in a Redis shared with other applications.
const KEY_PREFIX: &str = "runway:replay:";

/// See the module docs.
pub struct RedisStore {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
}

impl RedisStore {
    /// Parses `url` (`redis://[user:password@]host[:port][/db]`); connects on first use.
    pub fn new(url: &str) -> Result<RedisStore, redis::RedisError> {
        Ok(RedisStore { client: redis::Client::open(url)?, connection: OnceCell::new() })
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        let manager = self
            .connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(250));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(manager.clone())
    }

    async fn set_nx(&self, key: &ReplayKey, until_ms: u64) -> Result<Use, StoreError> {
        let mut connection = self.connection().await.map_err(StoreError::Redis)?;
        let ttl_ms = until_ms.saturating_sub(unix_ms()).max(1);
        let reply: redis::Value = redis::cmd("SET")
            .arg(format!("{KEY_PREFIX}{}", key.hex()))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut connection)
            .await
            .map_err(StoreError::Redis)?;
        match reply {
            redis::Value::Okay => Ok(Use::First),
            redis::Value::Nil => Ok(Use::Replayed),
            _ => Err(StoreError::UnexpectedReply),
        }
    }
}

impl ReplayStore for RedisStore {
    fn first_use<'a>(&'a self, key: &'a ReplayKey, until_ms: u64) -> StoreFuture<'a> {
        Box::pin(async move {
            tokio::time::timeout(COMMAND_TIMEOUT, self.set_nx(key, until_ms))
                .await
                .unwrap_or(Err(StoreError::Timeout(COMMAND_TIMEOUT)))
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
