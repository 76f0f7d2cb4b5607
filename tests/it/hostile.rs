//! Hostile HTTP over a real TLS socket: request smuggling attempts, malformed heads, ambiguous targets,
//! tunnels and upgrades, oversized heads, HTTP/2 protocol abuse, slow clients. Each case asserts what Runway
//! answers and that the echo upstream ("Kong") never saw the request, or saw it with one reading only.
//!
//! Who answers: hyper refuses what it cannot parse with a bare 400/431 and closes, before the pipeline (so
//! no audit event and no metric); Runway's own refusals are problem+json, audited and counted.

use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::{Method, Request};
use serde_json::json;

const AUD: &str = "hostile";

/// Anything without a host-specific route is anonymous, so a hostile request that slipped through would
/// reach the upstream: every test can see whether it did.
const ROUTES: &str = r#"
[[routes]]
name = "open"
path_prefix = "/"
anonymous = true

[[routes]]
name = "deploy"
host = "deploy.example.com"
path_prefix = "/"
[[routes.allow]]
issuer = "ci"
"#;

struct Fx {
    b: Backends,
    runway: Runway,
}

async fn fixture() -> Fx {
    fixture_with("header_read_timeout = \"1s\"").await
}

/// The fixture with these `[server]` lines.
async fn fixture_with(server: &str) -> Fx {
    let b = Backends::start().await;
    let config = format!(
        "{}{}{}",
        base_config(&b.pki, &b.upstream.url()).replace("[admin]", &format!("{server}\n\n[admin]")),
        issuer_block("ci", "oidc", &b.idp.issuer(), AUD, ""),
        ROUTES
    );
    let runway = Runway::start(&b.pki, &config).await;
    runway.wait_ready().await;
    Fx { b, runway }
}

/// Who wrote a refusal.
#[derive(Debug, PartialEq)]
enum By {
    /// hyper, before the pipeline: no problem+json body.
    Hyper,
    /// Runway's pipeline: problem+json.
    Runway,
}

impl Fx {
    async fn h1(&self) -> RawTls {
        RawTls::connect(&self.b.pki, self.runway.addr, &[b"http/1.1"]).await
    }

    async fn h2(&self) -> RawTls {
        let conn = RawTls::connect(&self.b.pki, self.runway.addr, &[b"h2"]).await;
        assert_eq!(conn.alpn(), Some(&b"h2"[..]));
        conn
    }

    /// Sends one hand-written h2 request as stream 1 of a fresh connection: the type and error code of the
    /// first frame the server sends about it (or a GOAWAY).
    async fn h2_answer(&self, fields: &[(&str, &str)], end_stream: bool) -> (u8, Option<u32>) {
        let mut conn = self.h2().await;
        conn.h2_handshake().await;
        conn.send(&frames::headers(1, fields, end_stream)).await.unwrap_or_else(|e| panic!("send: {e}"));
        let answer = conn.frame_where(|f| f.stream == 1 || f.kind == frames::GOAWAY).await;
        let answer = answer.unwrap_or_else(|| panic!("closed without answering {fields:?}"));
        (answer.kind, answer.error_code())
    }

    /// Sends `raw` on a fresh HTTP/1.1 connection: the response, and whether the connection closed after it.
    async fn exchange(&self, raw: &[u8]) -> (Option<RawResponse>, bool) {
        let mut conn = self.h1().await;
        // A write can fail when the server has already answered and closed: the response is still readable.
        let _ = conn.send(raw).await;
        let response = conn.response().await;
        (response, conn.closed(Duration::from_secs(3)).await)
    }

    /// `raw` is refused with `status` by `by`, and the upstream never sees it.
    async fn refused(&self, raw: &[u8], status: u16, by: By) -> RawResponse {
        let what = shown(raw);
        let before = self.b.upstream.requests();
        let (response, closed) = self.exchange(raw).await;
        let response = response.unwrap_or_else(|| panic!("closed without a response: {what:?}"));
        assert_eq!(response.status, status, "{what:?}: {response:?}");
        let problem = response.header("content-type") == Some("application/problem+json");
        assert_eq!(if problem { By::Runway } else { By::Hyper }, by, "{what:?}: {response:?}");
        if by == By::Hyper {
            assert!(closed, "hyper closes after a parse error: {what:?}");
        }
        assert_eq!(self.b.upstream.requests(), before, "forwarded: {what:?}");
        response
    }

    /// A well-formed request on a new connection is still served (Runway is not wedged).
    async fn still_serves(&self) {
        let before = self.b.upstream.requests();
        let (response, _) = self.exchange(b"GET /alive HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
        assert_eq!(response.map(|r| r.status), Some(200));
        assert_eq!(self.b.upstream.requests(), before + 1);
    }
}

/// The start of a request, for failure messages.
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.chars().take(160).collect()
}

/// Waits (briefly) for `f` to hold: the upstream counts an aborted body only once its read fails.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- Request smuggling: Content-Length and Transfer-Encoding ----

/// `Content-Length` together with `Transfer-Encoding: chunked`. Hyper cannot be made to refuse it and the
/// pipeline cannot see it (hyper drops the `Content-Length` before the request exists), so the choice is
/// hyper's RFC 9112 section 6.3 reading: chunked wins, the length is discarded, and the connection is
/// closed after the response. That is one reading end to end: Kong gets the chunked body re-framed by
/// Runway, without the client's `Content-Length`, and nothing after the body is read as a second request.
#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_only_and_closes() {
    let fx = fixture().await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for head in [
        "Content-Length: 60\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 60\r\n",
        "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let before = fx.b.upstream.requests();
        let raw = format!("POST /smuggle HTTP/1.1\r\nHost: localhost\r\n{head}\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}");
        let (response, closed) = fx.exchange(raw.as_bytes()).await;
        let response = response.unwrap_or_else(|| panic!("no response: {head:?}"));
        assert_eq!(response.status, 200, "{head:?}");
        let echo = response.json();
        assert_eq!(echo["uri"], "/smuggle");
        assert_eq!(echo["body_len"], 5, "the chunked reading: {echo}");
        assert!(echo["headers"].get("content-length").is_none_or(|v| v == &json!(["5"])), "{echo}");
        assert!(closed, "the connection must close after a CL + TE request: {head:?}");
        assert_eq!(fx.b.upstream.requests(), before + 1, "the bytes after the body were not a second request");
    }
}

#[tokio::test]
async fn conflicting_or_invalid_content_lengths_are_refused_by_hyper() {
    let fx = fixture().await;
    for cl in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5,6\r\n",
        "Content-Length: abc\r\n",
        "Content-Length: -5\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: 99999999999999999999999\r\n",
    ] {
        let raw = format!("POST /x HTTP/1.1\r\nHost: localhost\r\n{cl}\r\nhello");
        fx.refused(raw.as_bytes(), 400, By::Hyper).await;
    }
    fx.still_serves().await;
}

#[tokio::test]
async fn transfer_encoding_other_than_exactly_chunked_is_refused() {
    let fx = fixture().await;
    let body = "5\r\nhello\r\n0\r\n\r\n";
    // Hyper accepts these (chunked comes last) and the pipeline refuses them: a coding before chunked
    // would reach Kong as a body it cannot know is encoded.
    for te in ["Transfer-Encoding: gzip, chunked\r\n", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"] {
        let raw = format!("POST /x HTTP/1.1\r\nHost: localhost\r\n{te}\r\n{body}");
        let response = fx.refused(raw.as_bytes(), 400, By::Runway).await;
        assert!(response.json()["detail"].as_str().is_some_and(|d| d.contains("Transfer-Encoding")), "{response:?}");
    }
    // Hyper refuses these itself: chunked is not the last coding, or HTTP/1.0 has no Transfer-Encoding.
    for (version, te) in [
        ("1.1", "Transfer-Encoding: chunked, identity\r\n"),
        ("1.1", "Transfer-Encoding: xchunked\r\n"),
        ("1.1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
        ("1.1", "Transfer-Encoding: identity\r\n"),
        ("1.0", "Transfer-Encoding: chunked\r\n"),
    ] {
        let raw = format!("POST /x HTTP/{version}\r\nHost: localhost\r\n{te}\r\n{body}");
        fx.refused(raw.as_bytes(), 400, By::Hyper).await;
    }
    // Exactly chunked, in any case, is the one accepted spelling.
    let raw = format!("POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: Chunked\r\n\r\n{body}");
    let (response, _) = fx.exchange(raw.as_bytes()).await;
    let response = response.unwrap_or_else(|| panic!("no response"));
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["body_len"], 5);
}

// ---- Malformed heads: hyper's parser refuses them ----

#[tokio::test]
async fn malformed_heads_are_refused_by_hyper() {
    let fx = fixture().await;
    let cases: &[&[u8]] = &[
        // obs-fold: a header line starting with a space or a tab.
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n\tb\r\n\r\n",
        b"GET /x HTTP/1.1\r\n Host: localhost\r\n\r\n",
        // Invalid bytes: NUL and a lone CR in values, bytes >= 0x80 and separators in names.
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-\x80: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nX\xc3\xa9: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-A : a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nX(A): a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: localhost\r\n: a\r\n\r\n",
        // Junk in the request line.
        b"GET /x HTTP/1.1 junk\r\nHost: localhost\r\n\r\n",
        b"GET /x HTTP/9.9\r\nHost: localhost\r\n\r\n",
        b"GET /x\x01y HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"G(T /x HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET\r\nHost: localhost\r\n\r\n",
        b"\x16\x03\x01junk\r\n\r\n",
    ];
    for raw in cases {
        fx.refused(raw, 400, By::Hyper).await;
    }
    fx.still_serves().await;
}

// ---- The target host: routing and Kong must read the same one ----

#[tokio::test]
async fn absolute_form_must_name_the_host_that_host_names() {
    let fx = fixture().await;
    let refusals: &[(&[u8], &str)] = &[
        (b"GET https://evil.example/x HTTP/1.1\r\nHost: localhost\r\n\r\n", "different hosts"),
        (b"GET https://localhost:8443/x HTTP/1.1\r\nHost: localhost\r\n\r\n", "different hosts"),
        (b"GET https://deploy.example.com/x HTTP/1.1\r\nHost: localhost\r\n\r\n", "different hosts"),
        (b"GET https://user@localhost/x HTTP/1.1\r\nHost: localhost\r\n\r\n", "user information"),
        // Routing would have matched "x@deploy.example.com" against no host route (so: the anonymous
        // catch-all) while Kong was sent `Host: deploy.example.com`.
        (b"GET /x HTTP/1.1\r\nHost: x@deploy.example.com\r\n\r\n", "invalid Host"),
        (b"GET /x HTTP/1.1\r\nHost: deploy.example.com:https\r\n\r\n", "invalid Host"),
        (b"GET /x HTTP/1.1\r\nHost: localhost\r\nHost: deploy.example.com\r\n\r\n", "more than one Host"),
        (b"GET /x HTTP/1.1\r\n\r\n", "without a Host"),
        (b"GET https://localhost/x HTTP/1.1\r\n\r\n", "without a Host"),
    ];
    for (raw, why) in refusals {
        let response = fx.refused(raw, 400, By::Runway).await;
        let detail = response.json()["detail"].as_str().unwrap_or_default().to_string();
        assert!(detail.contains(why), "{:?}: {detail}", shown(raw));
    }
    // The same authority in both places is one reading: forwarded, with that host.
    for raw in [
        &b"GET https://localhost/x HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        b"GET https://LOCALHOST:443/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ] {
        let (response, _) = fx.exchange(raw).await;
        let response = response.unwrap_or_else(|| panic!("no response"));
        assert_eq!(response.status, 200, "{:?}", shown(raw));
        let host = response.json()["host"].as_str().unwrap_or_default().to_ascii_lowercase();
        assert!(host == "localhost" || host == "localhost:443", "{host}");
    }
    // HTTP/1.0 needs no Host: routing sees none, and Kong is sent its own.
    let (response, _) = fx.exchange(b"GET /x HTTP/1.0\r\n\r\n").await;
    let response = response.unwrap_or_else(|| panic!("no response"));
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["host"], fx.b.upstream.addr().to_string());
}

#[tokio::test]
async fn h2_authority_and_host_must_agree() {
    let fx = fixture().await;
    let mut client = fx.h2().await.h2_client().await;
    for (uri, host, status) in [
        ("https://evil.example/x", Some("localhost"), 400),
        ("https://localhost/x", Some("deploy.example.com"), 400),
        ("https://localhost/x", Some("localhost"), 200),
        ("https://localhost/x", None, 200),
    ] {
        let mut req = Request::get(uri);
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let req = req.body(()).expect("request");
        client = client.ready().await.expect("ready");
        let (response, _) = client.send_request(req, true).expect("send");
        let response = response.await.expect("response");
        assert_eq!(response.status(), status, "{uri} host {host:?}");
    }
    assert_eq!(fx.b.upstream.requests(), 2);
}

// ---- Tunnels and upgrades: never forwarded ----

#[tokio::test]
async fn connect_is_refused_over_http1_and_h2() {
    let fx = fixture().await;
    let response =
        fx.refused(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 400, By::Runway).await;
    assert!(response.json()["detail"].as_str().is_some_and(|d| d.contains("CONNECT")));

    // h2 plain CONNECT (RFC 9113 section 8.5): :method and :authority only.
    let client = fx.h2().await.h2_client().await;
    let mut client = client.ready().await.expect("ready");
    let req = Request::builder().method(Method::CONNECT).uri("evil.example:443").body(()).expect("request");
    let (response, _) = client.send_request(req, false).expect("send");
    assert_eq!(response.await.expect("response").status(), 400);

    // h2 extended CONNECT (RFC 8441): Runway does not advertise it, and a :protocol is a stream error.
    let settings = fx.h2().await.h2_handshake().await;
    assert!(!settings.contains(&(frames::SETTINGS_ENABLE_CONNECT_PROTOCOL, 1)), "{settings:?}");
    let fields = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", "/chat"),
    ];
    assert_eq!(fx.h2_answer(&fields, false).await, (frames::RST_STREAM, Some(frames::PROTOCOL_ERROR)));
    assert_eq!(fx.b.upstream.requests(), 0);
}

#[tokio::test]
async fn upgrades_are_refused_never_forwarded() {
    let fx = fixture().await;
    for raw in [
        // h2c (RFC 7540 section 3.2).
        &b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
           HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"[..],
        b"GET /chat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        // Upgrade without Connection: still an upgrade request, still refused.
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: localhost\r\nUpgrade: websocket\r\n\r\n",
    ] {
        let response = fx.refused(raw, 400, By::Runway).await;
        assert!(response.json()["detail"].as_str().is_some_and(|d| d.contains("upgrades")), "{response:?}");
    }
    // In h2, Upgrade and Connection are connection-specific: the h2 layer resets the stream.
    let fields =
        [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", "/"), ("upgrade", "h2c")];
    assert_eq!(fx.h2_answer(&fields, true).await, (frames::RST_STREAM, Some(frames::PROTOCOL_ERROR)));
    assert_eq!(fx.b.upstream.requests(), 0);
}

// ---- Oversized heads ----

#[tokio::test]
async fn oversized_headers_get_431() {
    let fx = fixture().await;
    // Over 64 KiB but within hyper's buffer: Runway's own 431 (problem+json, audited).
    let big = "a".repeat(65 * 1024);
    let raw = format!("GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
    fx.refused(raw.as_bytes(), 431, By::Runway).await;
    // Split over many fields, same total.
    let many: String = (0..20).map(|i| format!("X-Part-{i}: {}\r\n", "b".repeat(3300))).collect();
    let raw = format!("GET /x HTTP/1.1\r\nHost: localhost\r\n{many}\r\n");
    fx.refused(raw.as_bytes(), 431, By::Runway).await;
    // Far past it, hyper's read buffer (max_buf_size, 72 KiB, checked after each read: the cut-off lies
    // between 100 and 200 KiB) fills first: hyper's 431, and the connection closes.
    let huge = "a".repeat(200 * 1024);
    let raw = format!("GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {huge}\r\n\r\n");
    fx.refused(raw.as_bytes(), 431, By::Hyper).await;
    // Just under the limit passes.
    let fits = "a".repeat(60 * 1024);
    let raw = format!("GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {fits}\r\n\r\n");
    let (response, _) = fx.exchange(raw.as_bytes()).await;
    assert_eq!(response.map(|r| r.status), Some(200));
}

#[tokio::test]
async fn too_many_header_fields_get_431() {
    let fx = fixture().await;
    let fields = |n: usize| -> String { (0..n).map(|i| format!("X-F{i}: v\r\n")).collect() };
    // 128 fields at most, Host included.
    let raw = format!("GET /x HTTP/1.1\r\nHost: localhost\r\n{}\r\n", fields(128));
    fx.refused(raw.as_bytes(), 431, By::Hyper).await;
    let raw = format!("GET /x HTTP/1.1\r\nHost: localhost\r\n{}\r\n", fields(127));
    let (response, _) = fx.exchange(raw.as_bytes()).await;
    assert_eq!(response.map(|r| r.status), Some(200));
}

#[tokio::test]
async fn h2_oversized_header_list() {
    let fx = fixture().await;
    let mut conn = fx.h2().await;
    let settings = conn.h2_handshake().await;
    assert!(settings.contains(&(frames::SETTINGS_MAX_HEADER_LIST_SIZE, 64 * 1024)), "{settings:?}");
    let client = fx.h2().await.h2_client().await;
    let mut client = client.ready().await.expect("ready");
    let big = "a".repeat(70 * 1024);
    let req = Request::get("https://localhost/x").header("x-big", big.as_str()).body(()).expect("request");
    let (response, _) = client.send_request(req, true).expect("send");
    let response = response.await;
    // The h2 layer answers 431 itself (RFC 9113 section 10.5.1) and resets the stream.
    assert_eq!(response.map(|r| r.status().as_u16()).map_err(|e| e.to_string()), Ok(431));
    // The connection survives it.
    let mut client = client.ready().await.expect("ready after a 431");
    let (response, _) =
        client.send_request(Request::get("https://localhost/x").body(()).expect("req"), true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
    assert_eq!(fx.b.upstream.requests(), 1);
}

// ---- HTTP/2 protocol abuse ----

#[tokio::test]
async fn h2_streams_over_the_concurrency_limit_are_refused() {
    let fx = fixture().await;
    // Every forwarded request takes a while, so the first streams are all open when the last one comes.
    fx.b.upstream.set_delay(Duration::from_secs(2));
    let mut conn = fx.h2().await;
    let settings = conn.h2_handshake().await;
    let limit = settings
        .iter()
        .find(|(id, _)| *id == frames::SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no SETTINGS_MAX_CONCURRENT_STREAMS: {settings:?}"));
    assert_eq!(limit, 256);
    let streams: Vec<u32> = (0..=limit).map(|i| 2 * i + 1).collect();
    let burst: Vec<u8> = streams.iter().flat_map(|&id| frames::get(id, "/slow")).collect();
    conn.send(&burst).await.expect("send");
    let (mut refused, mut answered) = (Vec::new(), 0);
    while answered + refused.len() < streams.len() {
        let frame = conn.frame().await.expect("connection closed");
        match frame.kind {
            frames::RST_STREAM => {
                assert_eq!(frame.error_code(), Some(frames::REFUSED_STREAM), "{frame:?}");
                refused.push(frame.stream);
            }
            frames::HEADERS => answered += 1,
            frames::GOAWAY => panic!("GOAWAY instead of REFUSED_STREAM: {frame:?}"),
            _ => {}
        }
    }
    assert_eq!(refused, vec![streams[limit as usize]], "exactly the stream past the limit is refused");
    assert_eq!(answered, limit as usize);
    assert_eq!(fx.b.upstream.requests(), limit as usize);
}

#[tokio::test]
async fn malformed_h2_ends_the_connection_and_runway_keeps_serving() {
    let fx = fixture().await;
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("DATA on stream 0", frames::frame(frames::DATA, 0, 0, b"x"), frames::PROTOCOL_ERROR),
        ("HEADERS on an even stream", frames::get(2, "/x"), frames::PROTOCOL_ERROR),
        (
            "a frame over SETTINGS_MAX_FRAME_SIZE",
            frames::frame(frames::HEADERS, frames::END_HEADERS, 1, &vec![0u8; frames::MAX_FRAME + 1]),
            frames::FRAME_SIZE_ERROR,
        ),
        (
            // RFC 9113 section 6.5 asks for FRAME_SIZE_ERROR; the h2 crate says PROTOCOL_ERROR.
            "a SETTINGS frame of 5 bytes",
            frames::frame(frames::SETTINGS, 0, 0, &[0, 3, 0, 0, 0]),
            frames::PROTOCOL_ERROR,
        ),
        // RFC 9113 section 4.3 asks for COMPRESSION_ERROR; the h2 crate says PROTOCOL_ERROR.
        (
            "an invalid HPACK index",
            frames::frame(frames::HEADERS, 5, 1, &[0xff, 0xff, 0xff, 0x7f]),
            frames::PROTOCOL_ERROR,
        ),
        ("CONTINUATION without HEADERS", frames::frame(frames::CONTINUATION, 4, 1, &[]), frames::PROTOCOL_ERROR),
    ];
    for (what, bytes, code) in cases {
        let mut conn = fx.h2().await;
        conn.h2_handshake().await;
        conn.send(&bytes).await.expect("send");
        let goaway = conn.frame_where(|f| f.kind == frames::GOAWAY).await;
        let goaway = goaway.unwrap_or_else(|| panic!("{what}: closed without GOAWAY"));
        assert_eq!(goaway.error_code(), Some(code), "{what}: {goaway:?}");
        assert!(conn.closed(Duration::from_secs(3)).await, "{what}: connection left open");
    }
    // A bad preface: the bytes are not HTTP/2, so hyper reads them as HTTP/1 and refuses them.
    let mut conn = fx.h2().await;
    conn.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").await.expect("send");
    assert!(conn.closed(Duration::from_secs(3)).await, "bad preface: connection left open");
    assert_eq!(fx.b.upstream.requests(), 0);
    fx.still_serves().await;
    let client = fx.h2().await.h2_client().await;
    let mut client = client.ready().await.expect("ready");
    let (response, _) =
        client.send_request(Request::get("https://localhost/x").body(()).expect("req"), true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
}

// ---- Slow clients ----

/// Slowloris: header bytes trickle in, well within any per-byte idle limit. Hyper's
/// `header_read_timeout` (1 s here) closes the connection; hyper sends no 408, it just closes.
#[tokio::test]
async fn slow_request_heads_are_cut_off_at_header_read_timeout() {
    let fx = fixture().await;
    let mut slow = fx.h1().await;
    slow.send(b"GET /x HTTP/1.1\r\nHost: localhost\r\n").await.expect("send");
    let started = Instant::now();
    let mut cut_after = None;
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.send(b"X-Slow: y\r\n").await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        if i == 2 {
            // Meanwhile another client is served normally.
            fx.still_serves().await;
        }
    }
    // Whatever hyper sent before closing is still readable: nothing.
    let response = slow.response().await;
    let elapsed = cut_after.unwrap_or_else(|| started.elapsed());
    assert!(response.is_none(), "hyper closes without a response, got {response:?}");
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2500), "cut after {elapsed:?}");
    assert_eq!(fx.b.upstream.requests(), 1, "only the other client's request was forwarded");
}

/// Headers complete, then the body stalls: after `header_read_timeout` without a byte, 408, and Kong sees
/// the request aborted, never complete.
#[tokio::test]
async fn a_stalled_body_gets_408_and_the_upstream_sees_it_aborted() {
    let fx = fixture().await;
    for (framing, first) in
        [("Content-Length: 100\r\n", "0123456789"), ("Transfer-Encoding: chunked\r\n", "a\r\n0123456789\r\n")]
    {
        let before = (fx.b.upstream.requests(), fx.b.upstream.aborted());
        let mut conn = fx.h1().await;
        let head = format!("POST /upload HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n{first}");
        conn.send(head.as_bytes()).await.expect("send");
        let started = Instant::now();
        let response = conn.response().await.unwrap_or_else(|| panic!("{framing}: closed without a response"));
        let waited = started.elapsed();
        assert_eq!(response.status, 408, "{framing}: {response:?}");
        assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "{framing}: {waited:?}");
        assert!(response.json()["detail"].as_str().is_some_and(|d| d.contains("stalled")), "{response:?}");
        assert!(conn.closed(Duration::from_secs(3)).await, "{framing}: connection kept after a 408");
        assert_eq!(fx.b.upstream.requests(), before.0 + 1, "{framing}: the request was on its way");
        eventually("the upstream sees the body aborted", || fx.b.upstream.aborted() == before.1 + 1).await;
    }
}

/// The timer runs per gap between body bytes, not for the whole body: a slow but live upload completes.
#[tokio::test]
async fn a_slow_but_steady_body_is_not_cut_off() {
    let fx = fixture().await;
    let mut conn = fx.h1().await;
    conn.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 8\r\n\r\n").await.expect("send");
    for byte in b"abcdefgh" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.send(&[*byte]).await.expect("send");
    }
    let response = conn.response().await.expect("response");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["body_len"], 8);
    assert_eq!(fx.b.upstream.aborted(), 0);
}

#[tokio::test]
async fn a_stalled_h2_body_gets_408() {
    let fx = fixture().await;
    let client = fx.h2().await.h2_client().await;
    let mut client = client.ready().await.expect("ready");
    let req = Request::post("https://localhost/upload").header("content-length", "100").body(()).expect("req");
    let (response, mut body) = client.send_request(req, false).expect("send");
    body.send_data(Bytes::from_static(b"0123456789"), false).expect("data");
    let started = Instant::now();
    let response = response.await.expect("response");
    assert_eq!(response.status(), 408);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    eventually("the upstream sees the body aborted", || fx.b.upstream.aborted() == 1).await;
    assert_eq!(fx.b.upstream.requests(), 1);
}

// ---- Runway's own refusals are audited and counted ----

#[tokio::test]
async fn pipeline_refusals_are_audited_and_counted() {
    let fx = fixture().await;
    fx.refused(b"GET https://evil.example/a HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, By::Runway).await;
    fx.refused(b"GET /b HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", 400, By::Runway)
        .await;
    fx.refused(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 400, By::Runway).await;
    let big = "a".repeat(65 * 1024);
    fx.refused(format!("GET /c HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n").as_bytes(), 431, By::Runway).await;
    let mut conn = fx.h1().await;
    conn.send(b"POST /d HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n12345").await.expect("send");
    assert_eq!(conn.response().await.map(|r| r.status), Some(408));
    // Hyper's own refusals happen before the pipeline: neither audited nor counted.
    fx.refused(b"GET /e HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n", 400, By::Hyper).await;

    let expected = [
        ("/a", 400, "bad_request", None),
        ("/b", 400, "bad_request", None),
        ("", 400, "bad_request", None),
        ("/c", 431, "headers_too_large", None),
        ("/d", 408, "body_timeout", Some("open")),
    ];
    eventually("five audit events", || audit_lines(&fx.b.pki).len() >= expected.len()).await;
    let lines = audit_lines(&fx.b.pki);
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (path, status, reason, route) in expected {
        let line =
            lines.iter().find(|l| l["path"] == path).unwrap_or_else(|| panic!("no event for {path:?}: {lines:#?}"));
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["decision"], "deny", "{line}");
        assert_eq!(line["reason"], reason, "{line}");
        assert_eq!(line["route"].as_str(), route, "{line}");
        assert!(line["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
    }
    let (_, metrics) = fx.runway.admin_get("/metrics").await;
    for needle in [
        "runway_requests_total{route=\"-\",status=\"400\"} 3",
        "runway_requests_total{route=\"-\",status=\"431\"} 1",
        "runway_requests_total{route=\"open\",status=\"408\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    let upstream_errors: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("runway_upstream_errors_total{") && !l.ends_with(" 0")).collect();
    assert!(upstream_errors.is_empty(), "a stalled client is not an upstream error: {upstream_errors:?}");
}

/// hyper-util reads the first bytes to tell HTTP/1.1 from h2 without a timer: a preface trickled byte by byte
/// must still be cut off at `header_read_timeout`.
#[tokio::test]
async fn a_trickled_h2_preface_is_cut_off_at_header_read_timeout() {
    let fx = fixture().await;
    let mut conn = fx.h2().await;
    let started = Instant::now();
    let mut cut_after = None;
    for byte in frames::PREFACE.iter().cycle().take(40) {
        if conn.send(&[*byte]).await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let elapsed = cut_after.unwrap_or_else(|| started.elapsed());
    assert!(cut_after.is_some() || conn.closed(Duration::from_millis(100)).await, "still open after {elapsed:?}");
    assert!(elapsed < Duration::from_millis(2500), "cut after {elapsed:?}, header_read_timeout is 1 s");
    fx.still_serves().await;
}

/// Idle means no request in flight, whatever bytes move: h2 PINGs do not keep a connection open past
/// `idle_timeout`, while a response that takes longer than it to arrive does not count as idle.
#[tokio::test]
async fn an_h2_connection_kept_alive_only_by_pings_is_closed_at_idle_timeout() {
    let fx = fixture_with("header_read_timeout = \"1s\"\nidle_timeout = \"2s\"").await;
    fx.b.upstream.set_delay(Duration::from_millis(2500));
    let mut conn = fx.h2().await;
    conn.h2_handshake().await;
    conn.send(&frames::get(1, "/slow")).await.unwrap_or_else(|e| panic!("send: {e}"));
    let answer = conn.frame_where(|f| f.stream == 1 || f.kind == frames::GOAWAY).await;
    assert_eq!(answer.map(|f| f.kind), Some(frames::HEADERS), "a slow answer (2.5 s) is not idleness (2 s)");
    fx.b.upstream.set_delay(Duration::ZERO);
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(8) {
        if conn.send(&frames::frame(0x6, 0, 0, &[0; 8])).await.is_err() || conn.closed(Duration::from_millis(300)).await
        {
            closed = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(closed, "PINGs kept the connection open for {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(1500), "closed too early: {elapsed:?}");
}
