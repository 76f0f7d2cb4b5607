//! Who may call the state-changing admin endpoints (`POST /reload`, the revocation API).
//!
//! With `admin.token_file`, a caller presents `Authorization: Bearer <token>`; the file is read when the config
//! is built, so a replaced file takes effect at the next reload. Without it those endpoints answer loopback
//! peers only: the admin listener is plain HTTP and, in a sidecar, often bound on the pod network.
//! The read-only endpoints (`/metrics`, `/healthz`, `/readyz`, the assertion JWKS) never come through here.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{SHA256, digest};
use http::HeaderMap;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Nothing but whitespace: every caller would be refused, or worse, an empty bearer accepted.
    #[error("{path} is empty: write the admin token into it")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A token that cannot travel in an HTTP header.
    #[error("{path}: the token must be visible ASCII without spaces (it is sent as `Authorization: Bearer <token>`)")]
    NotAToken {
        /// The file.
        path: PathBuf,
    },
}

/// The rule for protected endpoints, built from one config.
#[derive(Clone)]
pub enum AdminAccess {
    /// Callers must present this token; only its digest is kept, and compared in constant time.
    Token([u8; 32]),
    /// No token configured: loopback peers only.
    LoopbackOnly,
}

/// Why a caller was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong bearer token: 401.
    Token,
    /// Not a loopback peer while no token is configured: 403.
    NotLoopback,
}

impl AdminAccess {
    /// Reads `admin.token_file` (surrounding whitespace ignored), or loopback-only when it is not set.
    pub fn load(token_file: Option<&Path>) -> Result<AdminAccess, TokenFileError> {
        let Some(path) = token_file else { return Ok(AdminAccess::LoopbackOnly) };
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenFileError::Read { path: path.to_path_buf(), source })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty { path: path.to_path_buf() });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenFileError::NotAToken { path: path.to_path_buf() });
        }
        Ok(AdminAccess::Token(sha256(token.as_bytes())))
    }

    /// Whether a request with these headers, from `peer`, may use a protected endpoint.
    pub fn check(&self, headers: &HeaderMap, peer: IpAddr) -> Result<(), Denied> {
        match self {
            AdminAccess::Token(expected) => {
                let presented = bearer(headers).ok_or(Denied::Token)?;
                // Digests have a fixed length, so the comparison says nothing about the token's length either.
                aws_lc_rs::constant_time::verify_slices_are_equal(&sha256(presented.as_bytes()), expected)
                    .map_err(|_| Denied::Token)
            }
            AdminAccess::LoopbackOnly => match peer.to_canonical().is_loopback() {
                true => Ok(()),
                false => Err(Denied::NotLoopback),
            },
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// The credential of a single `Authorization: Bearer` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in authorization {
            h.append(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const POD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn a_token_is_required_from_every_peer_when_configured() {
        let access = AdminAccess::Token(sha256(b"s3cret"));
        assert_eq!(access.check(&headers(&["Bearer s3cret"]), POD), Ok(()));
        assert_eq!(access.check(&headers(&["bearer s3cret"]), POD), Ok(()));
        assert_eq!(access.check(&headers(&[]), LOOPBACK), Err(Denied::Token));
        assert_eq!(access.check(&headers(&["Bearer s3cre"]), LOOPBACK), Err(Denied::Token));
        assert_eq!(access.check(&headers(&["Basic s3cret"]), POD), Err(Denied::Token));
        assert_eq!(access.check(&headers(&["Bearer "]), POD), Err(Denied::Token));
        assert_eq!(access.check(&headers(&["Bearer s3cret", "Bearer s3cret"]), POD), Err(Denied::Token));
    }

    #[test]
    fn without_a_token_only_loopback_peers_pass() {
        let access = AdminAccess::LoopbackOnly;
        assert_eq!(access.check(&headers(&[]), LOOPBACK), Ok(()));
        assert_eq!(access.check(&headers(&[]), "::1".parse().unwrap()), Ok(()));
        assert_eq!(access.check(&headers(&[]), "::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(access.check(&headers(&[]), POD), Err(Denied::NotLoopback));
        assert_eq!(access.check(&headers(&[]), "::ffff:10.1.2.3".parse().unwrap()), Err(Denied::NotLoopback));
    }

    #[test]
    fn the_token_file_is_trimmed_and_must_hold_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret\n").unwrap();
        let access = AdminAccess::load(Some(&path)).unwrap();
        assert_eq!(access.check(&headers(&["Bearer s3cret"]), POD), Ok(()));
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(AdminAccess::load(Some(&path)), Err(TokenFileError::Empty { .. })));
        std::fs::write(&path, "two words").unwrap();
        assert!(matches!(AdminAccess::load(Some(&path)), Err(TokenFileError::NotAToken { .. })));
        let missing = dir.path().join("missing");
        assert!(matches!(AdminAccess::load(Some(&missing)), Err(TokenFileError::Read { .. })));
        assert!(matches!(AdminAccess::load(None), Ok(AdminAccess::LoopbackOnly)));
    }
}
