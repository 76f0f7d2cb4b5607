//! The in-process store: a bounded cache of used keys, each with the time it stops mattering. Enough for
//! one replica; with several, each would only know its own requests (use [`super::redis`]).

use std::time::Duration;

use quick_cache::sync::{Cache, EntryAction, EntryResult};

use super::{ReplayKey, ReplayStore, StoreFuture, Use, unix_ms};

/// Keys held at most. At ~60 bytes per entry that is ~60 MiB when full; it fills only when more than this
/// many one_time requests arrive within a token lifetime. Beyond it the least useful entries are evicted,
/// and an evicted jti could pass again: run the redis store for such volumes.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// See the module docs.
pub struct MemoryStore {
    /// Key → Unix milliseconds until which it counts as used.
    used: Cache<ReplayKey, u64>,
}

impl MemoryStore {
    /// Holding at most `capacity` keys.
    pub fn new(capacity: usize) -> MemoryStore {
        MemoryStore { used: Cache::new(capacity.max(1)) }
    }

    /// The synchronous check behind [`ReplayStore::first_use`].
    pub fn record(&self, key: &ReplayKey, until_ms: u64) -> Use {
        let now = unix_ms();
        // Zero timeout: if another request is inserting this very key right now, it is the first use.
        match self.used.entry(key, Some(Duration::ZERO), |_, until| {
            if *until > now {
                EntryAction::Retain(Use::Replayed)
            } else {
                // An entry that outlived its token (the cache has no expiry of its own): reuse it.
                *until = until_ms;
                EntryAction::Retain(Use::First)
            }
        }) {
            EntryResult::Retained(verdict) => verdict,
            EntryResult::Vacant(guard) => {
                let _ = guard.insert(until_ms);
                Use::First
            }
            EntryResult::Timeout | EntryResult::Removed(..) | EntryResult::Replaced(..) => Use::Replayed,
        }
    }
}

impl ReplayStore for MemoryStore {
    fn first_use<'a>(&'a self, key: &'a ReplayKey, until_ms: u64) -> StoreFuture<'a> {
        let verdict = self.record(key, until_ms);
        Box::pin(std::future::ready(Ok(verdict)))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_key_is_used_once_until_it_expires() {
        let store = MemoryStore::new(100);
        let key = ReplayKey::new("r", "i", "j");
        let later = unix_ms() + 60_000;
        assert_eq!(store.record(&key, later), Use::First);
        assert_eq!(store.record(&key, later), Use::Replayed);
        assert_eq!(store.record(&ReplayKey::new("r", "i", "k"), later), Use::First);
        let expired = ReplayKey::new("r", "i", "old");
        assert_eq!(store.record(&expired, unix_ms().saturating_sub(1)), Use::First);
        assert_eq!(store.record(&expired, later), Use::First, "an expired entry no longer counts");
        assert_eq!(store.record(&expired, later), Use::Replayed);
    }

    #[test]
    fn concurrent_uses_let_exactly_one_through() {
        let store = Arc::new(MemoryStore::new(1000));
        let key = ReplayKey::new("r", "i", "race");
        let until = unix_ms() + 60_000;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || store.record(&key, until))
            })
            .collect();
        let verdicts: Vec<Use> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Use::First).count(), 1, "{verdicts:?}");
    }
}
