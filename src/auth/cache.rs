//! The verified-token cache: a CI job's repeated calls with one token skip the signature check.
//!
//! Keyed by the SHA-256 of the whole presented token. An entry never outlives its token (`exp`), and it
//! records the generation of the key set that verified it: when the issuer's keys change (a key removed on
//! refresh), every entry of that issuer is verified afresh, so a withdrawn key stops working for cached
//! tokens too. Bounded; a token that fails verification is never cached.

use std::sync::Arc;

use super::Identity;

/// The SHA-256 of a presented token: cache key and source of `token_sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// Hashes a token.
    pub fn of(token: &str) -> TokenDigest {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        TokenDigest(bytes)
    }

    /// The first 16 hex digits: safe to log, enough to correlate.
    pub fn fingerprint(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(16);
        for b in &self.0[..8] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }
}

/// A verified token.
#[derive(Debug)]
pub struct Verified {
    /// Who it proves.
    pub identity: Arc<Identity>,
    /// Index of the issuer that verified it.
    pub issuer: usize,
    /// That issuer's key-set generation at verification.
    pub generation: u64,
    /// The token's `exp` (Unix seconds).
    pub exp: f64,
}

/// Bounded cache of verified tokens; capacity 0 disables it.
pub struct TokenCache {
    cache: Option<quick_cache::sync::Cache<TokenDigest, Arc<Verified>>>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { cache: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)) }
    }

    /// A still-valid entry for this token.
    pub fn get(&self, digest: &TokenDigest, now: f64) -> Option<Arc<Verified>> {
        let entry = self.cache.as_ref()?.get(digest)?;
        if now > entry.exp {
            if let Some(cache) = &self.cache {
                cache.remove(digest);
            }
            return None;
        }
        Some(entry)
    }

    /// Remembers a verified token.
    pub fn insert(&self, digest: TokenDigest, verified: Arc<Verified>) {
        if let Some(cache) = &self.cache {
            cache.insert(digest, verified);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_prefix() {
        assert_eq!(TokenDigest::of("abc").fingerprint(), "ba7816bf8f01cfea");
    }
}
