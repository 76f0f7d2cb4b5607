//! Fetching JSON from identity providers (discovery documents, JWKS): https, or plain http on loopback,
//! bounded in time and size, with `Cache-Control: max-age` reported to the caller. A fetch a traced request
//! waits for (an unknown key id's refetch) is a CLIENT span under its `verify` span; one a background refresh
//! starts belongs to no request and makes none.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde_json::Value;

use crate::config::validate_url_is_fetchable;
use crate::otel::{StepSpan, attr};

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

    /// GETs `url` and parses it as JSON. Returns the document and its `max-age`, if any. `what` names the span
    /// when a traced request waits for this fetch (`jwks fetch`, `oidc discovery`).
    pub async fn get_json(&self, url: &str, what: &'static str) -> Result<(Value, Option<Duration>), FetchError> {
        let span = StepSpan::child_of_current(what, SpanKind::Client);
        let result = self.fetch(url, span.as_ref()).await;
        if let Some(span) = span {
            span.end();
        }
        result
    }

    async fn fetch(&self, url: &str, span: Option<&StepSpan>) -> Result<(Value, Option<Duration>), FetchError> {
        let err = |message: String| FetchError { url: url.to_string(), message };
        let failed = |error_type: &'static str| {
            if let Some(span) = span {
                span.fail(error_type);
            }
        };
        validate_url_is_fetchable(url).map_err(err)?;
        let request = http::Request::get(url)
            .header(ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| err(e.to_string()))?;
        if let Some(span) = span {
            span.set_all(|| client_attributes(request.uri()));
        }
        // One deadline for the whole fetch: a slow head followed by a slow body must not take twice as long.
        let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
        let response = tokio::time::timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| {
                failed("timeout");
                err("timed out".into())
            })?
            .map_err(|e| {
                failed("connect");
                err(error_chain(&e))
            })?;
        if let Some(span) = span {
            span.answered(response.status());
        }
        if !response.status().is_success() {
            return Err(err(format!("answered {}", response.status())));
        }
        let max_age = response.headers().get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
        let body = tokio::time::timeout_at(deadline, Limited::new(response.into_body(), MAX_DOCUMENT_BYTES).collect())
            .await
            .map_err(|_| {
                failed("timeout");
                err("timed out reading the body".into())
            })?
            .map_err(|e| {
                failed("body");
                err(format!("could not read the body ({e})"))
            })?
            .to_bytes();
        let doc = serde_json::from_slice(&body).map_err(|e| {
            failed("not_json");
            err(format!("not JSON ({e})"))
        })?;
        Ok((doc, max_age))
    }
}

/// A CLIENT span's HTTP attributes: method, host, port and the URL without its query (an IdP's URLs carry no
/// secret, but no attribute ever holds a query string).
pub fn client_attributes(uri: &http::Uri) -> Vec<KeyValue> {
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
    let host = uri.host().unwrap_or_default().to_string();
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map_or("", |a| a.as_str());
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host_port)| host_port);
    let without_query = format!("{scheme}://{authority}{}", uri.path());
    vec![
        KeyValue::new(attr::HTTP_REQUEST_METHOD, "GET"),
        KeyValue::new(attr::SERVER_ADDRESS, host),
        KeyValue::new(attr::SERVER_PORT, i64::from(port)),
        KeyValue::new(attr::URL_FULL, without_query),
    ]
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
