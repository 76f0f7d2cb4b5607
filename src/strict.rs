//! The strict reading of a request head: what hyper lets through but Runway refuses to interpret, because
//! Kong could read the request differently from the way routing and policy did (framing, target host), or
//! because Runway cannot proxy it at all (CONNECT tunnels, protocol upgrades).
//!
//! Hyper itself answers what it cannot parse (invalid bytes, obs-fold, conflicting `Content-Length`, a
//! `Transfer-Encoding` whose last coding is not `chunked`) with 400 and closes, before the pipeline runs.
//! What is checked here runs first thing in the pipeline (see `headers::Sanitize`), on the head as the
//! client sent it, so each refusal is audited and counted like any other.

use http::header::{HOST, TRANSFER_ENCODING, UPGRADE};
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Uri, Version};

use crate::error::Rejection;

/// Refuses a head that is ambiguous or that asks for something Runway cannot forward.
pub fn check<B>(req: &Request<B>) -> Result<(), Rejection> {
    let refuse = |why: &str| Err(Rejection::BadRequest(why.to_string()));
    if req.method() == Method::CONNECT {
        return refuse("CONNECT is not supported: Runway does not open tunnels");
    }
    let headers = req.headers();
    if headers.contains_key(UPGRADE) {
        return refuse("protocol upgrades (Upgrade: h2c, websocket, ...) are not supported: Runway cannot proxy them");
    }
    if !chunked_only(headers.get_all(TRANSFER_ENCODING).iter()) {
        return refuse("Transfer-Encoding must be exactly \"chunked\"");
    }
    let mut hosts = headers.get_all(HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return refuse("more than one Host header"),
        (Some(value), None) => Some(parse_host(value).ok_or_else(|| bad("invalid Host header"))?),
        (None, _) => None,
    };
    match (req.uri().authority(), host) {
        (Some(target), _) if target.as_str().contains('@') => refuse("request target holds user information"),
        (Some(target), Some(host)) if !same_authority(req.uri(), target, &host) => {
            refuse("the request target's authority and the Host header name different hosts")
        }
        (_, None) if req.version() == Version::HTTP_11 => refuse("HTTP/1.1 request without a Host header"),
        _ => Ok(()),
    }
}

fn bad(why: &str) -> Rejection {
    Rejection::BadRequest(why.to_string())
}

/// No `Transfer-Encoding`, or exactly one coding, `chunked`: hyper only checks that `chunked` comes last, and
/// a coding in front of it (`gzip, chunked`) would reach Kong as a body it cannot know is encoded.
fn chunked_only<'a>(mut values: impl Iterator<Item = &'a HeaderValue>) -> bool {
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"),
        (Some(_), Some(_)) => false,
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 section 7.2), nothing else: routing and Kong must read the same host.
/// `http` parses more than that (user information, a port that is not a number), hence the round trip.
fn parse_host(value: &HeaderValue) -> Option<Authority> {
    let text = value.to_str().ok()?;
    let authority = text.parse::<Authority>().ok()?;
    let rebuilt_len = authority.host().len() + authority.port().map_or(0, |p| p.as_str().len() + 1);
    (authority.as_str() == text && text.len() == rebuilt_len && !text.contains('@')).then_some(authority)
}

/// Same host (case-insensitively) and same port, an absent port being the scheme's default.
fn same_authority(uri: &Uri, target: &Authority, host: &Authority) -> bool {
    let default = if uri.scheme_str() == Some("http") { 80 } else { 443 };
    target.host().eq_ignore_ascii_case(host.host())
        && target.port_u16().unwrap_or(default) == host.port_u16().unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri).version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    fn verdict(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<(), String> {
        check(&request(method, uri, Version::HTTP_11, headers)).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_requests_pass() {
        assert_eq!(verdict("GET", "/x", &[("host", "localhost:8443")]), Ok(()));
        assert_eq!(verdict("GET", "/x", &[("host", "[::1]:8443")]), Ok(()));
        assert_eq!(verdict("POST", "/x", &[("host", "a.example"), ("transfer-encoding", "Chunked ")]), Ok(()));
        assert_eq!(verdict("GET", "https://A.example/x", &[("host", "a.example:443")]), Ok(()));
        assert_eq!(check(&request("GET", "/x", Version::HTTP_10, &[])).map_err(|e| e.to_string()), Ok(()));
        assert_eq!(
            check(&request("GET", "https://a.example/x", Version::HTTP_2, &[])).map_err(|e| e.to_string()),
            Ok(())
        );
    }

    #[test]
    fn ambiguous_or_unsupported_heads_are_refused() {
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("CONNECT", "evil.example:443", &[("host", "evil.example:443")], "CONNECT"),
            ("GET", "/x", &[("host", "a"), ("upgrade", "h2c")], "upgrades"),
            ("GET", "/x", &[("host", "a"), ("upgrade", "websocket")], "upgrades"),
            ("POST", "/x", &[("host", "a"), ("transfer-encoding", "gzip, chunked")], "Transfer-Encoding"),
            (
                "POST",
                "/x",
                &[("host", "a"), ("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")],
                "Transfer-Encoding",
            ),
            ("GET", "/x", &[("host", "a"), ("host", "b")], "more than one Host"),
            ("GET", "/x", &[("host", "evil@a.example")], "invalid Host"),
            ("GET", "/x", &[("host", "a.example:https")], "invalid Host"),
            ("GET", "/x", &[("host", "a.example/x")], "invalid Host"),
            ("GET", "/x", &[("host", "a.example:")], "invalid Host"),
            ("GET", "/x", &[("host", "a.example:99999")], "invalid Host"),
            ("GET", "https://evil.example/x", &[("host", "localhost")], "different hosts"),
            ("GET", "https://a.example:8443/x", &[("host", "a.example")], "different hosts"),
            ("GET", "https://u@a.example/x", &[("host", "a.example")], "user information"),
            ("GET", "/x", &[], "without a Host"),
            ("GET", "https://a.example:8443/x", &[], "without a Host"),
        ];
        for (method, uri, headers, why) in cases {
            let verdict = verdict(method, uri, headers);
            assert!(verdict.as_ref().is_err_and(|e| e.contains(why)), "{method} {uri} {headers:?}: {verdict:?}");
        }
    }
}
