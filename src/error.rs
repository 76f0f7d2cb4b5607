//! Every response Runway makes itself is built here, from one enum, so status codes, `WWW-Authenticate`
//! and the problem+json body (RFC 9457) stay consistent. Pinned by a table test.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::ResponseBody;
use crate::auth::AuthError;

/// Why Runway answered instead of Kong.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// A request Runway will not interpret (ambiguous path…).
    #[error("{0}")]
    BadRequest(String),
    /// No route.
    #[error("no route for this path")]
    NotFound,
    /// Route found, method not listed.
    #[error("method not allowed on route \"{route}\"")]
    MethodNotAllowed {
        /// Route name.
        route: String,
        /// `Allow` header.
        allow: HeaderValue,
    },
    /// Token missing or refused.
    #[error(transparent)]
    Unauthorized(AuthError),
    /// Valid token, no allow rule matched.
    #[error("route \"{route}\": {detail}")]
    Forbidden {
        /// Route name.
        route: String,
        /// The first failing condition of the closest rule.
        detail: String,
    },
    /// Body over `max_body_bytes`.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client stopped sending the request body for `server.header_read_timeout`.
    #[error("the request body stalled: no bytes arrived for {}s", .idle.as_secs_f64())]
    RequestTimeout {
        /// How long nothing came.
        idle: std::time::Duration,
    },
    /// Request headers over 64 KiB.
    #[error("request headers are larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More requests in flight than `server.max_concurrent_requests`: shed, not queued.
    #[error("runway is overloaded ({limit} requests in flight); retry shortly")]
    Overloaded {
        /// The bound.
        limit: usize,
    },
    /// A dependency is not ready (issuer keys never loaded).
    #[error("{0}")]
    Unavailable(String),
    /// kind aws: STS could not check the token (unreachable, untrusted certificate, failing).
    #[error(transparent)]
    StsUnavailable(AuthError),
    /// A `one_time` route whose replay store cannot answer: refused rather than risk a replay.
    #[error("the replay store is unavailable ({0})")]
    ReplayUnavailable(#[source] crate::replay::StoreError),
    /// The identity assertion could not be made.
    #[error(transparent)]
    AssertionFailed(crate::assertion::AssertionError),
    /// Kong unreachable, TLS failure, broken response.
    #[error("upstream: {0}")]
    BadGateway(String),
    /// Kong or the whole request too slow.
    #[error("{0}")]
    GatewayTimeout(String),
}

impl Rejection {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::BadRequest(_) => StatusCode::BAD_REQUEST,
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Rejection::Forbidden { .. } => StatusCode::FORBIDDEN,
            Rejection::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Rejection::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::Unavailable(_) | Rejection::ReplayUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::StsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::AssertionFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Rejection::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Rejection::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The closed-vocabulary reason, for logs, metrics and audit.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadRequest(_) => "bad_request",
            Rejection::NotFound => "no_route",
            Rejection::MethodNotAllowed { .. } => "method_not_allowed",
            Rejection::Unauthorized(e) => e.reason(),
            Rejection::Forbidden { .. } => "policy",
            Rejection::PayloadTooLarge { .. } => "body_too_large",
            Rejection::RequestTimeout { .. } => "body_timeout",
            Rejection::HeadersTooLarge { .. } => "headers_too_large",
            Rejection::Overloaded { .. } => "overloaded",
            Rejection::Unavailable(_) => "keys_unavailable",
            Rejection::StsUnavailable(e) => e.reason(),
            Rejection::ReplayUnavailable(_) => "replay_store_unavailable",
            Rejection::AssertionFailed(_) => "assertion_failed",
            Rejection::BadGateway(_) => "upstream_error",
            Rejection::GatewayTimeout(_) => "upstream_timeout",
        }
    }

    /// The response. `request_id` goes into the body; the request-id layer sets the header.
    pub fn into_response(self, request_id: &str) -> Response<ResponseBody> {
        let status = self.status();
        let detail = self.to_string();
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
            "request_id": request_id,
        });
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match &self {
            Rejection::Unauthorized(AuthError::Missing) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"runway\""));
            }
            Rejection::Unauthorized(e) => {
                let value = format!(
                    "Bearer realm=\"runway\", error=\"invalid_token\", error_description=\"{}\"",
                    quoted_string_safe(&e.to_string())
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(WWW_AUTHENTICATE, v);
                }
            }
            Rejection::Forbidden { .. } => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"runway\", error=\"insufficient_scope\""),
                );
            }
            Rejection::MethodNotAllowed { allow, .. } => {
                headers.insert(ALLOW, allow.clone());
            }
            Rejection::Unavailable(_) | Rejection::StsUnavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Rejection::ReplayUnavailable(_) | Rejection::Overloaded { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// RFC 6750 error_description: printable ASCII without `"` and `\`.
fn quoted_string_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

/// An error and its causes on one line (`a: b: c`), a cause already ending the text not repeated: for logs
/// and the admin API's answers.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assertion::AssertionError;
    use crate::auth::Reason;
    use crate::replay::ReplayError;
    use http_body_util::BodyExt;

    fn body(r: Response<ResponseBody>) -> serde_json::Value {
        let Either::Right(full) = r.into_body() else { panic!("own responses are Full") };
        let bytes = futures_util::FutureExt::now_or_never(full.collect()).expect("ready").expect("full").to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn table() {
        let cases: Vec<(Rejection, u16, Option<&str>)> = vec![
            (Rejection::BadRequest("x".into()), 400, None),
            (Rejection::NotFound, 404, None),
            (Rejection::MethodNotAllowed { route: "r".into(), allow: HeaderValue::from_static("POST") }, 405, None),
            (Rejection::Unauthorized(AuthError::Missing), 401, Some("Bearer realm=\"runway\"")),
            (
                Rejection::Unauthorized(AuthError::invalid(Reason::Expired, "token expired 5s ago")),
                401,
                Some("Bearer realm=\"runway\", error=\"invalid_token\", error_description=\"token expired 5s ago\""),
            ),
            (
                Rejection::Forbidden { route: "r".into(), detail: "d".into() },
                403,
                Some("Bearer realm=\"runway\", error=\"insufficient_scope\""),
            ),
            (Rejection::PayloadTooLarge { limit: 1 }, 413, None),
            (Rejection::HeadersTooLarge { limit: 1 }, 431, None),
            (Rejection::RequestTimeout { idle: std::time::Duration::from_secs(1) }, 408, None),
            (Rejection::Unavailable("keys".into()), 503, None),
            (Rejection::Overloaded { limit: 8 }, 503, None),
            (Rejection::from(AuthError::StsUnavailable { issuer: "aws".into() }), 503, None),
            (
                Rejection::from(AuthError::invalid(Reason::StsRefused, "STS refused the token")),
                401,
                Some("Bearer realm=\"runway\", error=\"invalid_token\", error_description=\"STS refused the token\""),
            ),
            (
                Rejection::from(ReplayError::Replayed),
                401,
                Some("Bearer realm=\"runway\", error=\"invalid_token\", error_description=\"token already used\""),
            ),
            (
                Rejection::from(ReplayError::MissingJti),
                401,
                Some("Bearer realm=\"runway\", error=\"invalid_token\", error_description=\"token has no jti\""),
            ),
            (
                Rejection::from(ReplayError::Store(crate::replay::StoreError::Timeout(
                    std::time::Duration::from_secs(1),
                ))),
                503,
                None,
            ),
            (Rejection::from(AssertionError::Sign), 500, None),
            (Rejection::BadGateway("x".into()), 502, None),
            (Rejection::GatewayTimeout("x".into()), 504, None),
        ];
        for (rejection, status, www) in cases {
            let response = rejection.into_response("rid-1");
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
            assert_eq!(response.headers().get(WWW_AUTHENTICATE).map(|v| v.to_str().expect("ascii")), www, "{status}");
            if status == 405 {
                assert_eq!(response.headers()[ALLOW], "POST");
            }
            if status == 503 {
                assert!(response.headers().contains_key(RETRY_AFTER), "a 503 says when to retry");
            }
            let json = body(response);
            assert_eq!(json["status"], status);
            assert_eq!(json["type"], "about:blank");
            assert_eq!(json["request_id"], "rid-1");
            assert!(json["title"].is_string() && json["detail"].is_string());
        }
    }

    #[test]
    fn error_description_is_header_safe() {
        assert_eq!(quoted_string_safe("a \"b\" \\ é\n"), "a 'b' / ??");
    }
}
