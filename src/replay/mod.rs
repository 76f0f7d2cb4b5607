//! Replay protection for `one_time` routes (contract sections 2 and 10): a token's `jti` passes once per
//! route. The check runs after policy, so only an allowed request uses a jti up.
//!
//! Two stores behind one trait, [`ReplayStore`]: [`memory::MemoryStore`] (one replica) and
//! [`redis::RedisStore`] (shared by several replicas). Both record a key until the token can no longer be
//! accepted (its `exp` plus the issuer's leeway), and both answer "first use" to exactly one caller when
//! several race with the same key.

pub mod layer;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::ReplayStoreConfig;

/// Whether a key was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Recorded now: the request may pass.
    First,
    /// Already recorded and not yet expired: a replay.
    Replayed,
}

/// Why a store could not answer. The request is then refused with 503 (fail closed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No answer within the store's time limit.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// Redis refused the command or could not be reached.
    #[error("redis: {0}")]
    Redis(#[source] ::redis::RedisError),
    /// Redis answered something other than `OK` or nil to `SET NX`.
    #[error("redis: unexpected reply to SET NX")]
    UnexpectedReply,
    /// No client could be made: a file `[replay]` names became unreadable or unusable since start. The answer
    /// (503) does not say which; the log does.
    #[error("redis: unusable [replay] settings")]
    Client(#[source] redis::ClientError),
}

/// Why a request on a `one_time` route is refused (mapped to HTTP by the replay step, `layer`).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The token carries no usable `jti`.
    #[error("token has no jti")]
    MissingJti,
    /// The token's `jti` was already used on this route.
    #[error("token already used")]
    Replayed,
    /// The store could not answer.
    #[error("the replay store is unavailable ({0})")]
    Store(#[source] StoreError),
}

/// The future a store returns.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<Use, StoreError>> + Send + 'a>>;

/// Where used token ids are recorded.
pub trait ReplayStore: Send + Sync {
    /// Records `key` until `until_ms` (Unix milliseconds) unless it is already recorded; says which.
    /// Atomic: of several concurrent calls with one key, exactly one gets [`Use::First`].
    fn first_use<'a>(&'a self, key: &'a ReplayKey, until_ms: u64) -> StoreFuture<'a>;

    /// `memory` or `redis`, for logs.
    fn kind(&self) -> &'static str;
}

/// The stored key: SHA-256 of route name, issuer name and `jti`, so neither the jti nor its length shows
/// in the store, and the same jti on two routes (or from two issuers) is two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey([u8; 32]);

impl ReplayKey {
    /// The key for `jti` from `issuer` on `route`.
    pub fn new(route: &str, issuer: &str, jti: &str) -> ReplayKey {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        // Length-prefixed, so ("a", "bc") and ("ab", "c") differ.
        for part in [route, issuer, jti] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        ReplayKey(out)
    }

    /// The digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex of the digest.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Builds the configured store. Contacts no network: a Redis connection is made on first use. Reads the files
/// `[replay]` names (`redis_ca`, `redis_password_file`); an error names the key at fault first in its description.
pub fn store(config: &ReplayStoreConfig) -> Result<Arc<dyn ReplayStore>, redis::ClientError> {
    Ok(match config {
        ReplayStoreConfig::Memory => Arc::new(memory::MemoryStore::new(memory::DEFAULT_CAPACITY)),
        ReplayStoreConfig::Redis { url } => Arc::new(redis::RedisStore::new(url)?),
    })
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_routes_issuers_and_jtis() {
        let k = ReplayKey::new("r", "gitlab", "abc");
        assert_eq!(k, ReplayKey::new("r", "gitlab", "abc"));
        assert_ne!(k, ReplayKey::new("r2", "gitlab", "abc"));
        assert_ne!(k, ReplayKey::new("r", "okta", "abc"));
        assert_ne!(k, ReplayKey::new("r", "gitlab", "abd"));
        assert_ne!(ReplayKey::new("ab", "c", "x"), ReplayKey::new("a", "bc", "x"));
        assert_eq!(k.hex().len(), 64);
    }
}
