//! The one network call of an aws token: GET the presigned URL with `x-k8s-aws-id: AUDIENCE` and
//! `Accept: application/json`, over rustls (system roots plus the issuer's `sts_ca`), HTTP/1.1, never
//! following a redirect, bounded in time and size. STS answers JSON when asked; the XML form some endpoints
//! return anyway is read too.
//!
//! The XML reader is a deliberately small, tolerant extraction of three leaf elements (`Arn`, `Account`,
//! `UserId`) and of the error `Code`, with the five predefined entities decoded: the answer comes only from
//! an allowlisted endpoint over verified TLS, holds no markup we need to interpret, and an XML crate would
//! be a new dependency for three strings.
//!
//! The call a traced request waits for is a CLIENT span `sts GetCallerIdentity` under its `verify` span (a
//! concurrent request with the same token waits for that call and makes none). The span names the STS host,
//! never the presigned URL: its query string is the signature.

use std::time::Duration;

use bytes::Bytes;
use http::header::ACCEPT;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde_json::Value;

use super::presigned::AUDIENCE_HEADER;
use crate::auth::fetch::error_chain;
use crate::otel::{StepSpan, attr};

/// Time allowed to connect to STS.
pub const STS_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for the whole exchange, answer included.
pub const STS_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from STS.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Error codes that mean "slow down", not "no": a 503 for the client, not a 401.
const THROTTLING_CODES: [&str; 4] = ["Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"];

/// What GetCallerIdentity says about the signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// `Arn`.
    pub arn: String,
    /// `Account`.
    pub account: String,
    /// `UserId` (for a role session: `ROLEID:SESSION`).
    pub user_id: String,
}

/// Why STS did not confirm a token.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// STS answered and said no (403, or a 4xx that is not throttling): the token is refused.
    #[error("STS refused the token ({status}{})", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// STS error code (`SignatureDoesNotMatch`, `ExpiredToken`…), when it gave one.
        code: Option<String>,
    },
    /// STS could not be asked, or did not answer usefully: try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// An HTTP client for one issuer's STS endpoints.
#[derive(Clone)]
pub struct StsClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl StsClient {
    /// A client trusting `tls`'s roots; https only, HTTP/1.1.
    pub fn new(tls: rustls::ClientConfig) -> StsClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(STS_CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        StsClient { client: Client::builder(TokioExecutor::new()).build(https) }
    }

    /// Asks STS who signed `uri` for `audience`. hyper's client never follows redirects: a 3xx is an answer
    /// like any other, and not a 200.
    pub async fn get_caller_identity(&self, uri: &http::Uri, audience: &str) -> Result<CallerIdentity, StsError> {
        let span = StepSpan::child_of_current("sts GetCallerIdentity", SpanKind::Client);
        if let Some(span) = &span {
            span.set_all(|| {
                [
                    KeyValue::new(attr::HTTP_REQUEST_METHOD, "GET"),
                    KeyValue::new(attr::SERVER_ADDRESS, uri.host().unwrap_or_default().to_string()),
                    KeyValue::new(attr::SERVER_PORT, i64::from(uri.port_u16().unwrap_or(443))),
                ]
            });
        }
        let result = self.exchange(uri, audience).await;
        if let Some(span) = span {
            match &result {
                Ok((status, _)) => span.answered(*status),
                Err(StsError::Unavailable(_)) => span.fail("unavailable"),
                Err(StsError::Refused { .. }) => {}
            }
            span.end();
        }
        let (status, body) = result?;
        classify(status, &body)
    }

    async fn exchange(&self, uri: &http::Uri, audience: &str) -> Result<(http::StatusCode, Bytes), StsError> {
        let request = http::Request::get(uri.clone())
            .header(AUDIENCE_HEADER, audience)
            .header(ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| StsError::Unavailable(format!("could not build the STS request ({e})")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| StsError::Unavailable(error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| StsError::Unavailable(format!("could not read the STS answer ({e})")))?
                .to_bytes();
            Ok::<_, StsError>((status, body))
        };
        tokio::time::timeout(STS_TIMEOUT, exchange)
            .await
            .map_err(|_| StsError::Unavailable(format!("no answer within {}s", STS_TIMEOUT.as_secs())))?
    }
}

/// An STS answer → the caller, a refusal, or a failure to retry.
fn classify(status: http::StatusCode, body: &[u8]) -> Result<CallerIdentity, StsError> {
    if status == http::StatusCode::OK {
        return parse_identity(body)
            .ok_or_else(|| StsError::Unavailable("STS answered 200 without Arn, Account and UserId".into()));
    }
    let code = error_code(body);
    let throttled = code.as_deref().is_some_and(|c| THROTTLING_CODES.contains(&c));
    if status.is_client_error() && status != http::StatusCode::TOO_MANY_REQUESTS && !throttled {
        return Err(StsError::Refused { status: status.as_u16(), code });
    }
    Err(StsError::Unavailable(format!("STS answered {status}{}", code.map(|c| format!(" ({c})")).unwrap_or_default())))
}

/// `GetCallerIdentityResponse.GetCallerIdentityResult.{Arn,Account,UserId}`, from JSON or XML.
pub fn parse_identity(body: &[u8]) -> Option<CallerIdentity> {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        let result = json.pointer("/GetCallerIdentityResponse/GetCallerIdentityResult")?;
        let field = |name: &str| result.get(name).and_then(Value::as_str).map(str::to_string);
        return Some(CallerIdentity { arn: field("Arn")?, account: field("Account")?, user_id: field("UserId")? });
    }
    let text = std::str::from_utf8(body).ok()?;
    let result = xml_element(text, "GetCallerIdentityResult")?;
    Some(CallerIdentity {
        arn: xml_text(result, "Arn")?,
        account: xml_text(result, "Account")?,
        user_id: xml_text(result, "UserId")?,
    })
}

/// The `Code` of an STS error answer (JSON `{"Error":{"Code":…}}` or XML `<Error><Code>…`), when it is a
/// plain word.
fn error_code(body: &[u8]) -> Option<String> {
    let code = match serde_json::from_slice::<Value>(body) {
        Ok(json) => json.pointer("/Error/Code").and_then(Value::as_str).map(str::to_string),
        Err(_) => {
            std::str::from_utf8(body).ok().and_then(|t| xml_element(t, "Error")).and_then(|e| xml_text(e, "Code"))
        }
    }?;
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
        .then_some(code)
}

/// The content of the first `<name>…</name>` (or `<name attr…>…</name>`) in `text`.
fn xml_element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut from = 0;
    while let Some(at) = text[from..].find(&open) {
        let after = from + at + open.len();
        let rest = &text[after..];
        match rest.chars().next() {
            Some('>') => {
                let body = &rest[1..];
                return body.find(&close).map(|end| &body[..end]);
            }
            Some(c) if c.is_whitespace() => {
                let gt = rest.find('>')?;
                if rest[..gt].ends_with('/') {
                    return Some("");
                }
                let body = &rest[gt + 1..];
                return body.find(&close).map(|end| &body[..end]);
            }
            _ => from = after,
        }
    }
    None
}

/// A leaf element's text, trimmed, entities decoded; `None` if absent, empty or holding markup.
fn xml_text(text: &str, name: &str) -> Option<String> {
    let raw = xml_element(text, name)?.trim();
    if raw.is_empty() || raw.contains('<') {
        return None;
    }
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    const ARN: &str = "arn:aws:sts::123456789012:assumed-role/ci/job-1";

    #[test]
    fn json_and_xml_answers() {
        let json = serde_json::json!({"GetCallerIdentityResponse": {
            "GetCallerIdentityResult": {"Account": "123456789012", "Arn": ARN, "UserId": "AROAEXAMPLE:job-1"},
            "ResponseMetadata": {"RequestId": "r"},
        }})
        .to_string();
        let xml = format!(
            "<?xml version=\"1.0\"?>\n<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
             <GetCallerIdentityResult>\n    <Arn>{ARN}</Arn>\n    <UserId>AROAEXAMPLE:job-1</UserId>\n    \
             <Account>123456789012</Account>\n  </GetCallerIdentityResult>\n  <ResponseMetadata>\n    \
             <RequestId>r</RequestId>\n  </ResponseMetadata>\n</GetCallerIdentityResponse>\n"
        );
        let expected =
            CallerIdentity { arn: ARN.into(), account: "123456789012".into(), user_id: "AROAEXAMPLE:job-1".into() };
        assert_eq!(parse_identity(json.as_bytes()), Some(expected.clone()));
        assert_eq!(parse_identity(xml.as_bytes()), Some(expected));
        let entity = "<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/a&amp;b</Arn>\
                      <UserId>AIDA</UserId><Account>123456789012</Account></GetCallerIdentityResult>";
        assert_eq!(
            parse_identity(entity.as_bytes()).map(|c| c.arn).as_deref(),
            Some("arn:aws:iam::123456789012:user/a&b")
        );
        // Missing fields, markup inside a field, or another document: not an identity.
        assert_eq!(parse_identity(br#"{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Arn":"x"}}}"#), None);
        assert_eq!(parse_identity(b"<GetCallerIdentityResult><Arn><x/></Arn></GetCallerIdentityResult>"), None);
        assert_eq!(parse_identity(b"<html>hello</html>"), None);
        assert_eq!(parse_identity(b"{}"), None);
    }

    #[test]
    fn answers_are_classified() {
        let denied_json =
            br#"{"Error":{"Code":"SignatureDoesNotMatch","Message":"m","Type":"Sender"},"RequestId":"r"}"#;
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, denied_json),
            Err(StsError::Refused { status: 403, code: Some(c) }) if c == "SignatureDoesNotMatch"
        ));
        let expired_xml = b"<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code></Error></ErrorResponse>";
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, expired_xml),
            Err(StsError::Refused { code: Some(c), .. }) if c == "ExpiredToken"
        ));
        assert!(matches!(classify(StatusCode::FORBIDDEN, b""), Err(StsError::Refused { code: None, .. })));
        let throttled = br#"{"Error":{"Code":"Throttling","Message":"Rate exceeded"}}"#;
        assert!(matches!(classify(StatusCode::BAD_REQUEST, throttled), Err(StsError::Unavailable(_))));
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, b""), Err(StsError::Unavailable(_))));
        assert!(matches!(classify(StatusCode::SERVICE_UNAVAILABLE, b""), Err(StsError::Unavailable(_))));
        assert!(matches!(classify(StatusCode::FOUND, b""), Err(StsError::Unavailable(_))));
        assert!(matches!(classify(StatusCode::OK, b"not an identity"), Err(StsError::Unavailable(_))));
        // An error code that is not a plain word is not repeated.
        let odd = br#"{"Error":{"Code":"<script>"}}"#;
        assert!(matches!(classify(StatusCode::FORBIDDEN, odd), Err(StsError::Refused { code: None, .. })));
    }
}
