//! A client of the admin API, for the `runway revoke` and `runway revocations` commands: plain HTTP/1.1 to the
//! admin listener, with the bearer token when one is given.

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Longest wait for one admin call.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// `--admin` is not a usable base URL.
    #[error("--admin: {0}")]
    Url(String),
    /// The admin listener could not be reached or did not answer in time.
    #[error("cannot reach the admin listener at {url}: {detail}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        detail: String,
    },
    /// The admin listener refused: its status and its message (which names the field).
    #[error("refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The server's `error`, or the body.
        message: String,
    },
}

/// See the module docs.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// For the admin listener at `url` (`http://host:port`), with `token` if the listener needs one.
    pub fn new(url: &str, token: Option<String>) -> Result<AdminClient, AdminClientError> {
        let uri: Uri = url.parse().map_err(|e| AdminClientError::Url(format!("\"{url}\" is not a URL ({e})")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(AdminClientError::Url(format!(
                "\"{url}\": the admin listener speaks plain HTTP: give http://host:port"
            )));
        }
        let base = url.trim_end_matches('/').to_string();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(AdminClient { base, token, client })
    }

    /// Calls `method path` with an optional JSON body; the JSON answer of a 2xx, else the refusal.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, AdminClientError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |detail: String| AdminClientError::Unreachable { url: url.clone(), detail };
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some(json) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(payload)).map_err(|e| AdminClientError::Url(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| unreachable(crate::error::chain(&e)))?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
            Ok::<_, AdminClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer in {TIMEOUT:?}")))??;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        let message = json
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string(), str::to_string);
        Err(AdminClientError::Refused { status, message })
    }
}
