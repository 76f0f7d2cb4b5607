#![allow(dead_code)]
//! Shared integration-test support for Runway: a throw-away PKI, JWT minting, a fake OIDC
//! issuer, an mTLS echo upstream standing in for Kong, an HTTPS test client, and an OTLP/HTTP trace receiver.
//!
//! Everything listens on 127.0.0.1 port 0 with real TLS (aws-lc-rs provider, passed
//! explicitly), and every background server stops when its handle is dropped.

pub mod client;
mod der;
pub mod idp;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod runway;
pub mod serve;
pub mod sts;
pub mod tokens;
pub mod upstream;

#[allow(unused_imports)]
pub use client::{TestClient, TestResponse, served_certificate_cn, streaming_body_sha256};
#[allow(unused_imports)]
pub use idp::TestIdp;
#[allow(unused_imports)]
pub use logs::Logs;
#[allow(unused_imports)]
pub use pki::Pki;
#[allow(unused_imports)]
pub use raw::{RawResponse, RawTls, frames};
#[allow(unused_imports)]
pub use redis::TestRedis;
#[allow(unused_imports)]
pub use runway::{
    Backends, Binary, Runway, admin_request, admin_send, audit_lines, audit_path, base_config, base_config_trusting,
    claims, free_port, issuer_block, open_route,
};
#[allow(unused_imports)]
pub use tokens::{SigningKey, b64url, hs256, jwks, now, unsigned};
#[allow(unused_imports)]
pub use upstream::EchoUpstream;

/// Polls `check` every 25 ms until it yields a value; panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A loopback address nothing listens on (bound, then released): a server that is down, or not up yet.
pub fn unused_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("binding a probe port: {e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("probe local_addr: {e}"))
}
