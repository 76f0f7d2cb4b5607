//! Runway: an identity-aware reverse proxy in front of Kong.
//!
//! A request's path through the crate, in order: [`server`] accepts and terminates TLS ([`tls`]) and wraps
//! the request [`body`] (trailers dropped; an unread remainder drained after an early answer); [`proxy`]
//! composes the pipeline: [`request_id`], [`observe`] (which makes the request's [`context`], the record
//! every step fills in), the rescue in [`layer`] (the one place a refusal becomes a response, built by
//! [`error`]), [`overload`], [`limit`] (timeout), [`headers`] (refuse what [`strict`] will not interpret,
//! strip what the client may not say), [`routing`], [`auth`] (verify the token), [`policy`] (may they?),
//! [`limit`] (body cap), [`replay`] (a `one_time` route's token passes once), [`headers`] (say who they
//! are), [`assertion`] (and sign it), then [`forward`] to Kong over mTLS. [`observe`] records [`metrics`]
//! and the [`audit`] trail for every request, and with `[tracing]` its trace ([`otel`]: a span per step,
//! exported over OTLP); [`admin`] serves metrics, health and readiness; [`config`] loads and validates it all,
//! and [`lint`] reviews its trust policy.

pub mod admin;
pub mod assertion;
pub mod audit;
pub mod auth;
pub mod body;
pub mod config;
pub mod context;
pub mod dev;
pub mod error;
pub mod explain;
pub mod forward;
pub mod headers;
pub mod layer;
pub mod limit;
pub mod lint;
pub mod metrics;
pub mod observe;
pub mod otel;
pub mod overload;
pub mod policy;
pub mod proxy;
pub mod replay;
pub mod request_id;
pub mod revoke;
pub mod routing;
pub mod server;
pub mod strict;
pub mod tls;

/// The body of every response Runway sends: Kong's, streamed, or Runway's own.
pub type ResponseBody = http_body_util::Either<forward::UpstreamBody, http_body_util::Full<bytes::Bytes>>;

/// A response from the pipeline.
pub type Response = http::Response<ResponseBody>;

/// The version, as `runway --version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
