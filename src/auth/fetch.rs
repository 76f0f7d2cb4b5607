//! Fetching JSON from identity providers (discovery documents, JWKS): https, or plain http on loopback,
//! bounded in time and size, with `Cache-Control: max-age` reported to the caller.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::validate_url_is_fetchable;

/// Largest document accepted from an identity provider.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Time allowed for one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed. The message is for logs and `/readyz`.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct FetchError {
    /// What was fetched.
    pub url: String,
    /// What went wrong.
    pub message: String,
}

/// A small HTTP client for identity providers.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Fetcher {
    /// A client trusting the system roots.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Fetcher { client: Client::builder(TokioExecutor::new()).build(https) }
    }

    /// GETs `url` and parses it as JSON. Returns the document and its `max-age`, if any.
    pub async fn get_json(&self, url: &str) -> Result<(Value, Option<Duration>), FetchError> {
        let err = |message: String| FetchError { url: url.to_string(), message };
        validate_url_is_fetchable(url).map_err(err)?;
        let request = http::Request::get(url)
            .header(ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| err(e.to_string()))?;
        // One deadline for the whole fetch: a slow head followed by a slow body must not take twice as long.
        let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
        let response = tokio::time::timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(|e| err(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(err(format!("answered {}", response.status())));
        }
        let max_age = response.headers().get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
        let body = tokio::time::timeout_at(deadline, Limited::new(response.into_body(), MAX_DOCUMENT_BYTES).collect())
            .await
            .map_err(|_| err("timed out reading the body".into()))?
            .map_err(|e| err(format!("could not read the body ({e})")))?
            .to_bytes();
        let doc = serde_json::from_slice(&body).map_err(|e| err(format!("not JSON ({e})")))?;
        Ok((doc, max_age))
    }
}

/// `max-age` from a Cache-Control value; `no-store`/`no-cache` count as 0.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|d| {
        let lower = d.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        lower.strip_prefix("max-age=").and_then(|s| s.trim_matches('"').parse::<u64>().ok()).map(Duration::from_secs)
    })
}

/// Renders an error and its sources on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        assert_eq!(max_age("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
