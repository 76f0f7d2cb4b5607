//! A raw TLS client for hostile-input tests: connects trusting only the test CA, with the ALPN of the test's
//! choice, writes exactly the bytes it is given, and reads back an HTTP/1.1 response, HTTP/2 frames, or the
//! connection's close. [`frames`] has the few HTTP/2 pieces needed to write frames by hand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::pki::Pki;

/// How long a read waits before the test fails.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// One TLS connection, driven byte by byte.
pub struct RawTls {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

/// An HTTP/1.1 response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("response body ({}) is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }
}

impl RawTls {
    /// Connects to `addr` as `localhost`, offering `alpn` (empty: no ALPN).
    pub async fn connect(pki: &Pki, addr: SocketAddr, alpn: &[&[u8]]) -> RawTls {
        RawTls::try_connect(pki, addr, alpn).await.unwrap_or_else(|e| panic!("raw TLS connect to {addr}: {e}"))
    }

    /// Like `connect`, returning the error.
    pub async fn try_connect(pki: &Pki, addr: SocketAddr, alpn: &[&[u8]]) -> std::io::Result<RawTls> {
        let mut config = (*pki.client_config()).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        let stream = TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
        Ok(RawTls { stream, buf: Vec::new() })
    }

    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }

    /// The TLS stream itself (to hand to another client, e.g. the `h2` crate).
    pub fn into_inner(self) -> TlsStream<TcpStream> {
        assert!(self.buf.is_empty(), "bytes already read would be lost");
        self.stream
    }

    /// Hands the connection (ALPN `h2`) to the `h2` crate's client, whose connection task is spawned.
    pub async fn h2_client(self) -> h2::client::SendRequest<bytes::Bytes> {
        let (client, connection) =
            h2::client::handshake(self.into_inner()).await.unwrap_or_else(|e| panic!("h2 handshake: {e}"));
        tokio::spawn(connection);
        client
    }

    /// Writes `bytes` and flushes. An error means the server has closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads more into the buffer; `false` once the connection is closed (or reset).
    async fn fill(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("nothing read within {READ_LIMIT:?}; buffered: {:?}", String::from_utf8_lossy(&self.buf)),
        }
    }

    /// Takes `n` buffered bytes, reading more as needed; `None` if the connection closes first.
    async fn take(&mut self, n: usize, deadline: tokio::time::Instant) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill(deadline).await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Takes bytes up to and including `delimiter`; `None` if the connection closes first.
    async fn take_through(&mut self, delimiter: &[u8], deadline: tokio::time::Instant) -> Option<Vec<u8>> {
        loop {
            if let Some(at) = self.buf.windows(delimiter.len()).position(|w| w == delimiter) {
                return Some(self.buf.drain(..at + delimiter.len()).collect());
            }
            if !self.fill(deadline).await {
                return None;
            }
        }
    }

    /// Reads one HTTP/1.1 response; `None` if the connection closed without one. Panics after 10 s.
    pub async fn response(&mut self) -> Option<RawResponse> {
        let deadline = tokio::time::Instant::now() + READ_LIMIT;
        let head = self.take_through(b"\r\n\r\n", deadline).await?;
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1.x status line: {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut response = RawResponse { status, headers, body: Vec::new() };
        if let Some(len) = response.header("content-length").and_then(|v| v.parse().ok()) {
            response.body = self.take(len, deadline).await?;
        } else if response.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let size_line = self.take_through(b"\r\n", deadline).await?;
                let size = String::from_utf8_lossy(&size_line);
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or_default(), 16)
                    .unwrap_or_else(|e| panic!("bad chunk size {size:?}: {e}"));
                let chunk = self.take(size + 2, deadline).await?;
                if size == 0 {
                    break;
                }
                response.body.extend_from_slice(&chunk[..size]);
            }
        } else if !matches!(status, 100..=199 | 204 | 304) {
            // No length: the body runs to the close.
            while self.fill(deadline).await {}
            response.body = std::mem::take(&mut self.buf);
        }
        Some(response)
    }

    /// Whether the server closes the connection within `within` (anything it sends meanwhile is dropped).
    pub async fn closed(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// HTTP/2 client start: the preface and an empty SETTINGS frame; then reads the server's SETTINGS and
    /// acknowledges them. Returns the server's settings as (identifier, value) pairs.
    pub async fn h2_handshake(&mut self) -> Vec<(u16, u32)> {
        let mut hello = frames::PREFACE.to_vec();
        hello.extend(frames::frame(frames::SETTINGS, 0, 0, &[]));
        self.send(&hello).await.unwrap_or_else(|e| panic!("h2 preface: {e}"));
        let settings = loop {
            let frame = self.frame().await.unwrap_or_else(|| panic!("closed before the server's SETTINGS"));
            if frame.kind == frames::SETTINGS && frame.flags & frames::ACK == 0 {
                break frame;
            }
        };
        self.send(&frames::frame(frames::SETTINGS, frames::ACK, 0, &[])).await.unwrap_or_else(|e| panic!("{e}"));
        settings
            .payload
            .chunks_exact(6)
            .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32::from_be_bytes([s[2], s[3], s[4], s[5]])))
            .collect()
    }

    /// Reads one HTTP/2 frame; `None` if the connection closed first. Panics after 10 s.
    pub async fn frame(&mut self) -> Option<frames::Frame> {
        let deadline = tokio::time::Instant::now() + READ_LIMIT;
        let head = self.take(9, deadline).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let payload = self.take(len, deadline).await?;
        Some(frames::Frame { kind: head[3], flags: head[4], stream, payload })
    }

    /// Reads frames until one matches `wanted`; `None` if the connection closed first.
    pub async fn frame_where(&mut self, wanted: impl Fn(&frames::Frame) -> bool) -> Option<frames::Frame> {
        loop {
            let frame = self.frame().await?;
            if wanted(&frame) {
                return Some(frame);
            }
        }
    }
}

/// HTTP/2 by hand (RFC 9113): frame types, flags, and header blocks as HPACK literals (RFC 7541 section
/// 6.2.2: never indexed, no Huffman), so a test can send what no well-behaved client would.
pub mod frames {
    /// The client connection preface.
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    /// DATA frame.
    pub const DATA: u8 = 0x0;
    /// HEADERS frame.
    pub const HEADERS: u8 = 0x1;
    /// RST_STREAM frame.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS frame.
    pub const SETTINGS: u8 = 0x4;
    /// GOAWAY frame.
    pub const GOAWAY: u8 = 0x7;
    /// CONTINUATION frame.
    pub const CONTINUATION: u8 = 0x9;
    /// END_STREAM flag.
    pub const END_STREAM: u8 = 0x1;
    /// ACK flag (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS flag.
    pub const END_HEADERS: u8 = 0x4;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).
    pub const SETTINGS_ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
    /// Error code PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// Error code FRAME_SIZE_ERROR.
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    /// Error code REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// The default (and smallest) SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME: usize = 16_384;

    /// One frame read off the wire.
    #[derive(Debug)]
    pub struct Frame {
        /// Type.
        pub kind: u8,
        /// Flags.
        pub flags: u8,
        /// Stream id.
        pub stream: u32,
        /// Payload.
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM or GOAWAY frame.
        pub fn error_code(&self) -> Option<u32> {
            let at = match self.kind {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            let code = self.payload.get(at..at + 4)?;
            Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]))
        }
    }

    /// One frame: 9-byte header, then the payload.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap_or_else(|_| panic!("frame payload too long"));
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// HPACK integer with an `N`-bit prefix (RFC 7541 section 5.1); the prefix's high bits are zero.
    fn integer(out: &mut Vec<u8>, prefix_bits: u32, mut value: usize) {
        let max = (1usize << prefix_bits) - 1;
        if value < max {
            out.push(value as u8);
            return;
        }
        out.push(max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        out.push(value as u8);
    }

    /// A header block of literal fields, never indexed, names and values sent as given.
    pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.push(0x10);
            integer(&mut out, 7, name.len());
            out.extend_from_slice(name.as_bytes());
            integer(&mut out, 7, value.len());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// A HEADERS frame carrying `fields`, split into CONTINUATION frames past the default frame size.
    pub fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
        let block = header_block(fields);
        let pieces: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let last = if i + 1 == pieces.len() { END_HEADERS } else { 0 };
            if i == 0 {
                let end = if end_stream { END_STREAM } else { 0 };
                out.extend(frame(HEADERS, end | last, stream, piece));
            } else {
                out.extend(frame(CONTINUATION, last, stream, piece));
            }
        }
        out
    }

    /// A GET with the usual pseudo-headers for `https://localhost{path}`, ending the stream.
    pub fn get(stream: u32, path: &str) -> Vec<u8> {
        headers(stream, &[(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", path)], true)
    }
}
