#![allow(dead_code)]
//! Shared integration-test support for Runway: a throw-away PKI, JWT minting, a fake OIDC
//! issuer, an mTLS echo upstream standing in for Kong, and an HTTPS test client.
//!
//! Everything listens on 127.0.0.1 port 0 with real TLS (aws-lc-rs provider, passed
//! explicitly), and every background server stops when its handle is dropped.

pub mod client;
mod der;
pub mod idp;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod runway;
pub mod sts;
pub mod tokens;
pub mod upstream;

#[allow(unused_imports)]
pub use client::{TestClient, TestResponse, served_certificate_cn, streaming_body_sha256};
#[allow(unused_imports)]
pub use idp::TestIdp;
#[allow(unused_imports)]
pub use pki::Pki;
#[allow(unused_imports)]
pub use raw::{RawResponse, RawTls, frames};
#[allow(unused_imports)]
pub use redis::TestRedis;
#[allow(unused_imports)]
pub use runway::{
    Backends, Binary, Runway, audit_lines, audit_path, base_config, claims, free_port, issuer_block, metric_value,
    open_route,
};
#[allow(unused_imports)]
pub use tokens::{SigningKey, b64url, hs256, jwks, now, unsigned};
#[allow(unused_imports)]
pub use upstream::EchoUpstream;
