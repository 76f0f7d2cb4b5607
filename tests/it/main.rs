//! Runway's integration tests, one binary (so the support code and the crate are compiled and linked once):
//! real sockets, real TLS and real HTTP on 127.0.0.1, a fake IdP, an mTLS echo upstream standing in for
//! Kong, and the clients users have (curl, python `requests`, hyper). Shared support lives in `support/`.

mod support;

mod admin;
mod assertion;
mod aws;
mod cli;
mod config;
mod deploy;
mod deploy_files;
mod dev;
mod explain;
mod faults;
mod github;
mod hardening;
mod hostile;
mod jwks;
mod lint;
mod listener;
mod nginx_e2e;
mod observability;
mod proxy;
mod reload;
mod replay;
mod revocations;
mod support_selftest;
mod token_cache;
mod tracing;
mod verification;
