//! The TLS listener's own limits: TLS versions and ALPN, idle keep-alive connections closed,
//! `max_connections` enforced at accept, slow request heads cut off.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const AUD: &str = "listener";

struct Fx {
    pki: Pki,
    _idp: TestIdp,
    _upstream: EchoUpstream,
    runway: Runway,
    token: String,
}

async fn fixture(server_extra: &str) -> Fx {
    let pki = Pki::generate();
    let key = SigningKey::ec("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let upstream = EchoUpstream::start(&pki).await;
    let config = format!(
        "{}{}{}",
        base_config(&pki, &upstream.url()).replace("[admin]", &format!("{server_extra}\n\n[admin]")),
        issuer_block("ci", "oidc", &idp.issuer(), AUD, ""),
        open_route("all", "/", "ci")
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));
    Fx { pki, _idp: idp, _upstream: upstream, runway, token }
}

async fn tls_connect(fx: &Fx, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = (*fx.pki.client_config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(fx.runway.addr).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// Sends one keep-alive request and reads until the end of the (small, Content-Length) response.
async fn one_request(stream: &mut TlsStream<TcpStream>, token: &str) -> String {
    let req = format!("GET /x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    loop {
        let n = stream.read(&mut buf).await.unwrap_or_else(|e| panic!("read: {e}"));
        assert!(n > 0, "connection closed before the response ended");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: ").or_else(|| l.strip_prefix("Content-Length: ")))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return head.to_string();
            }
        }
    }
}

#[tokio::test]
async fn alpn_offers_h2_and_http1() {
    let fx = fixture("").await;
    let h2 = tls_connect(&fx, &[b"h2", b"http/1.1"]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h1 = tls_connect(&fx, &[b"http/1.1"]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let version = h1.get_ref().1.protocol_version();
    assert!(matches!(version, Some(rustls::ProtocolVersion::TLSv1_3)), "{version:?}");
}

#[tokio::test]
async fn tls_1_1_and_below_are_refused() {
    let fx = fixture("").await;
    // A TLS 1.0 ClientHello record: the server must answer with an alert or close, never a ServerHello.
    let mut tcp = TcpStream::connect(fx.runway.addr).await.unwrap_or_else(|e| panic!("{e}"));
    let hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x02, 0x00, 0x2f, 0x01, 0x00,
    ];
    tcp.write_all(hello).await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap_or(Ok(0)).unwrap_or(0);
    assert!(n == 0 || buf[0] == 0x15, "expected an alert (0x15) or a close, got {:?}", &buf[..n]);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let fx = fixture("idle_timeout = \"400ms\"").await;
    let mut stream = tls_connect(&fx, &[b"http/1.1"]).await.unwrap_or_else(|e| panic!("{e}"));
    let head = one_request(&mut stream, &fx.token).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Still open right after the response...
    let again = one_request(&mut stream, &fx.token).await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    // ...and closed once idle for longer than idle_timeout.
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "idle connection was not closed: {closed:?}");
}

#[tokio::test]
async fn max_connections_is_enforced_at_accept() {
    let fx = fixture("max_connections = 1").await;
    let mut first = tls_connect(&fx, &[b"http/1.1"]).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(one_request(&mut first, &fx.token).await.starts_with("HTTP/1.1 200"));
    // The second connection waits in the backlog: its handshake cannot complete while the first is open.
    let second = tokio::time::timeout(Duration::from_millis(600), tls_connect(&fx, &[b"http/1.1"])).await;
    assert!(second.is_err(), "a second connection was accepted beyond max_connections = 1");
    drop(first);
    let mut third = tokio::time::timeout(Duration::from_secs(5), tls_connect(&fx, &[b"http/1.1"]))
        .await
        .unwrap_or_else(|_| panic!("no connection accepted after the first closed"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(one_request(&mut third, &fx.token).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let fx = fixture("header_read_timeout = \"300ms\"").await;
    let mut stream = tls_connect(&fx, &[b"http/1.1"]).await.unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n").await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 4096];
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(started.elapsed() < Duration::from_secs(4), "slowloris connection held open");
    match read {
        Ok(Ok(n)) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
        }
        Ok(Err(_)) => {}
        Err(_) => panic!("no answer to a stalled request head"),
    }
}
