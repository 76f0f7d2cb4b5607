//! Self-tests for `tests/support`: prove the PKI, upstream, IdP, client and token minting
//! work before Runway's own integration tests rely on them.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::pki::CLIENT_CN;
use crate::support::{
    EchoUpstream, Pki, SigningKey, TestClient, TestIdp, hs256, jwks, now, streaming_body_sha256, unsigned,
};
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type MtlsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A hyper client presenting `cert`/`key`, talking directly to the upstream.
fn mtls_client(pki: &Pki, cert: &Path, key: &Path, h2: bool) -> MtlsClient {
    let mut tls = (*pki.client_config_with_cert(cert, key)).clone();
    tls.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    Client::builder(TokioExecutor::new()).http2_only(h2).build(HttpsConnector::from((http, tls)))
}

/// Sends `req`, returning status, version and the whole body.
async fn call(client: &MtlsClient, req: Request<Full<Bytes>>) -> Result<(StatusCode, Version, Bytes), String> {
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (status, version) = (resp.status(), resp.version());
    let body = resp.into_body().collect().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, version, body.to_bytes()))
}

fn to_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Polls `f` until it returns `want` (or 5 s pass), returning the last value.
async fn eventually(want: usize, f: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while f() != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[tokio::test]
async fn upstream_echoes_requests_from_trusted_client_cert() {
    let pki = Pki::generate();
    let upstream = EchoUpstream::start(&pki).await;

    let h1 = mtls_client(&pki, &pki.client_cert, &pki.client_key, false);
    let url = format!("https://localhost:{}/some/path?a=1&b=%20x", upstream.addr().port());
    let req = Request::post(&url)
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, version, body) = call(&h1, req).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, Version::HTTP_11);
    let echo = to_json(&body);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], "/some/path?a=1&b=%20x");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["host"], format!("localhost:{}", upstream.addr().port()));
    assert_eq!(echo["headers"]["x-multi"], json!(["one", "two"]));
    assert_eq!(echo["body_len"], 5);
    assert_eq!(echo["body_sha256"], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert_eq!(echo["client_cert_cn"], CLIENT_CN);

    let h2 = mtls_client(&pki, &pki.client_cert, &pki.client_key, true);
    let req =
        Request::get(format!("{}/status/418", upstream.url())).body(Full::default()).unwrap_or_else(|e| panic!("{e}"));
    let (status, version, body) = call(&h2, req).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert_eq!(version, Version::HTTP_2);
    let echo = to_json(&body);
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["host"], upstream.addr().to_string());
    assert_eq!(echo["body_len"], 0);

    assert_eq!(upstream.connections(), 2);
    assert_eq!(upstream.requests(), 2);
    assert_eq!(upstream.handshake_failures(), 0);
}

#[tokio::test]
async fn upstream_refuses_missing_and_rogue_client_certs() {
    let pki = Pki::generate();
    let upstream = EchoUpstream::start(&pki).await;
    let url = format!("{}/x", upstream.url());

    // No client certificate at all.
    let mut tls = (*pki.client_config()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let no_cert: MtlsClient = Client::builder(TokioExecutor::new()).build(HttpsConnector::from((http, tls)));
    let req = Request::get(&url).body(Full::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(call(&no_cert, req).await.is_err(), "no-cert request succeeded");
    assert_eq!(eventually(1, || upstream.handshake_failures()).await, 1);

    // A certificate from an unrelated CA.
    let rogue = mtls_client(&pki, &pki.rogue_client_cert, &pki.rogue_client_key, false);
    let req = Request::get(&url).body(Full::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(call(&rogue, req).await.is_err(), "rogue-cert request succeeded");
    assert_eq!(eventually(2, || upstream.handshake_failures()).await, 2);

    assert_eq!(upstream.connections(), 0);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn upstream_streams_n_bytes_and_delays() {
    let pki = Pki::generate();
    let upstream = EchoUpstream::start(&pki).await;
    for h2 in [false, true] {
        let client = mtls_client(&pki, &pki.client_cert, &pki.client_key, h2);
        for n in [0u64, 1, 65_536, 200_001] {
            let req = Request::get(format!("{}/stream/{n}", upstream.url()))
                .body(Full::default())
                .unwrap_or_else(|e| panic!("{e}"));
            let (status, _, body) = call(&client, req).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body.len() as u64, n);
            assert!(body.iter().all(|&b| b == b'x'));
        }
    }

    upstream.set_delay(Duration::from_millis(300));
    let client = mtls_client(&pki, &pki.client_cert, &pki.client_key, false);
    let started = Instant::now();
    let req = Request::get(upstream.url()).body(Full::default()).unwrap_or_else(|e| panic!("{e}"));
    let (status, _, _) = call(&client, req).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn test_client_speaks_h1_and_h2_to_the_server_cert() {
    let pki = Pki::generate();
    // An echo server with Runway's listener cert and no client auth stands in for Runway.
    let server = EchoUpstream::start_with_config(pki.server_config()).await;
    let port = server.addr().port();

    let h1 = TestClient::new(&pki);
    let resp = h1.get(&format!("https://localhost:{port}/a?b=c"), Some("tok")).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.version, Version::HTTP_11);
    assert_eq!(resp.header("content-type").as_deref(), Some("application/json"));
    let echo = resp.json();
    assert_eq!(echo["uri"], "/a?b=c");
    assert_eq!(echo["headers"]["authorization"], json!(["Bearer tok"]));
    assert_eq!(echo["client_cert_cn"], Value::Null);

    let h2 = TestClient::http2(&pki);
    let resp = h2.get(&format!("https://127.0.0.1:{port}/"), None).await;
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.json()["version"], "HTTP/2.0");
    assert!(resp.json()["headers"].get("authorization").is_none());

    let req = Request::put(format!("https://localhost:{port}/p"))
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap_or_else(|e| panic!("{e}"));
    let echo = h2.send(req).await.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body_len"], 3);

    let total = 32 * 1024 * 1024 + 123;
    for client in [&h1, &h2] {
        let resp = client.post_streaming(&format!("https://localhost:{port}/upload"), Some("t"), total).await;
        let echo = resp.json();
        assert_eq!(echo["body_len"], total);
        assert_eq!(echo["body_sha256"], streaming_body_sha256(total));
        assert!(echo["headers"].get("content-length").is_none());
    }

    // The upstream demands a client cert, which TestClient does not have.
    let upstream = EchoUpstream::start(&pki).await;
    let req = Request::get(upstream.url()).body(Full::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(h1.try_send(req).await.is_err());

    // A server certificate from another CA is not trusted.
    let rogue = EchoUpstream::start_with_config(Pki::generate().server_config()).await;
    let req = Request::get(format!("https://localhost:{}/", rogue.addr().port()))
        .body(Full::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let err = h1.try_send(req).await.err().unwrap_or_default();
    assert!(err.contains("certificate"), "unexpected error: {err}");
}

#[tokio::test]
async fn idp_serves_discovery_and_jwks_and_can_go_down() {
    let key = SigningKey::ec("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let resp =
                client.get(url.parse().unwrap_or_else(|e| panic!("{e}"))).await.unwrap_or_else(|e| panic!("{e}"));
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.unwrap_or_else(|e| panic!("{e}")).to_bytes();
            (parts, body)
        }
    };

    assert!(idp.issuer().starts_with("http://127.0.0.1:"));
    let (parts, body) = get(format!("{}/.well-known/openid-configuration", idp.issuer())).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-type"], "application/json");
    let doc = to_json(&body);
    assert_eq!(doc["issuer"], idp.issuer());
    assert_eq!(doc["jwks_uri"], idp.jwks_uri());
    assert_eq!(doc["id_token_signing_alg_values_supported"], json!(["RS256", "ES256"]));
    assert_eq!(idp.discovery_fetches(), 1);

    let (parts, body) = get(idp.jwks_uri()).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(parts.headers.get("cache-control").is_none());
    assert_eq!(to_json(&body)["keys"][0]["kid"], "k1");
    assert_eq!(idp.jwks_fetches(), 1);

    idp.set_cache_control(Some("max-age=60"));
    let rotated = SigningKey::rsa("k2");
    idp.set_jwks(jwks(&[&rotated]));
    let (parts, body) = get(idp.jwks_uri()).await;
    assert_eq!(parts.headers["cache-control"], "max-age=60");
    assert_eq!(to_json(&body)["keys"][0]["kid"], "k2");

    idp.set_down(true);
    assert_eq!(get(idp.jwks_uri()).await.0.status, StatusCode::SERVICE_UNAVAILABLE);
    let discovery = format!("{}/.well-known/openid-configuration", idp.issuer());
    assert_eq!(get(discovery.clone()).await.0.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(idp.jwks_fetches(), 3);
    assert_eq!(idp.discovery_fetches(), 2);

    idp.set_down(false);
    assert_eq!(get(idp.jwks_uri()).await.0.status, StatusCode::OK);
    assert_eq!(get(format!("{}/nope", idp.issuer())).await.0.status, StatusCode::NOT_FOUND);
    assert_eq!(idp.jwks_fetches(), 4);

    idp.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(get(discovery).await.0.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

fn b64d(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap_or_else(|e| panic!("bad base64url {s:?}: {e}"))
}

/// `(signing input, signature bytes)` of a compact JWS.
fn split(token: &str) -> (String, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').unwrap_or_else(|| panic!("not a JWS: {token}"));
    (input.to_string(), b64d(sig))
}

fn jwk_str<'a>(jwk: &'a Value, field: &str) -> &'a str {
    jwk[field].as_str().unwrap_or_else(|| panic!("JWK lacks {field}: {jwk}"))
}

#[test]
fn rs256_token_verifies_against_its_jwk() {
    let key = SigningKey::rsa("rsa-1");
    let claims = json!({"sub": "svc", "iat": now(), "exp": now() + 60});
    let token = key.mint(&claims);
    let header = to_json(&b64d(token.split('.').next().unwrap_or_default()));
    assert_eq!(header, json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}));
    assert_eq!(to_json(&b64d(token.split('.').nth(1).unwrap_or_default())), claims);

    let jwk = key.jwk();
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["alg"], "RS256");
    let (n, e) = (b64d(jwk_str(&jwk, "n")), b64d(jwk_str(&jwk, "e")));
    assert_eq!(n.len(), 256);
    assert_ne!(n[0], 0);
    assert_eq!(e, vec![1, 0, 1]);
    let public = RsaPublicKeyComponents { n: &n, e: &e };
    let (input, sig) = split(&token);
    public
        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &sig)
        .unwrap_or_else(|e| panic!("RS256 signature does not verify: {e:?}"));
    let mut bad = sig.clone();
    bad[10] ^= 1;
    assert!(public.verify(&signature::RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &bad).is_err());

    // The SPKI DER and PEM describe the same key.
    UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key.public_key_der())
        .verify(input.as_bytes(), &sig)
        .unwrap_or_else(|e| panic!("SPKI DER does not verify: {e:?}"));
    let pem = key.rsa_public_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(der, key.public_key_der());

    // sign_with_header keeps the header verbatim.
    let odd = json!({"alg": "RS256", "kid": "other", "x": 1});
    let token = key.sign_with_header(&odd, &claims);
    assert_eq!(to_json(&b64d(token.split('.').next().unwrap_or_default())), odd);
    let (input, sig) = split(&token);
    assert!(public.verify(&signature::RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &sig).is_ok());
}

#[test]
fn es256_token_verifies_against_its_jwk() {
    let key = SigningKey::ec("ec-1");
    let token = key.mint(&json!({"sub": "svc"}));
    let jwk = key.jwk();
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["kid"], "ec-1");
    let (x, y) = (b64d(jwk_str(&jwk, "x")), b64d(jwk_str(&jwk, "y")));
    assert_eq!((x.len(), y.len()), (32, 32));
    let point = [&[0x04][..], &x, &y].concat();
    let (input, sig) = split(&token);
    assert_eq!(sig.len(), 64, "ES256 signatures are fixed r||s");
    let public = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point);
    public.verify(input.as_bytes(), &sig).unwrap_or_else(|e| panic!("ES256 signature does not verify: {e:?}"));
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, key.public_key_der())
        .verify(input.as_bytes(), &sig)
        .unwrap_or_else(|e| panic!("SPKI DER does not verify: {e:?}"));
    let other = SigningKey::ec("ec-2").mint(&json!({"sub": "svc"}));
    let (input, sig) = split(&other);
    assert!(public.verify(input.as_bytes(), &sig).is_err());

    let set = jwks(&[&key, &SigningKey::rsa("r")]);
    assert_eq!(set["keys"].as_array().map(Vec::len), Some(2));
}

#[test]
fn hs256_and_unsigned_tokens() {
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({"sub": "x"});
    let token = hs256(b"secret", &header, &claims);
    // Known answer computed with the same inputs by an independent HMAC (RFC 2104).
    let (input, sig) = split(&token);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"secret");
    assert!(aws_lc_rs::hmac::verify(&key, input.as_bytes(), &sig).is_ok());
    assert_eq!(sig.len(), 32);

    let none = unsigned(&json!({"alg": "none"}), &claims);
    assert!(none.ends_with('.'));
    assert_eq!(none.matches('.').count(), 2);
    assert_eq!(to_json(&b64d(none.split('.').next().unwrap_or_default()))["alg"], "none");
}

#[test]
fn pki_files_and_mismatched_pair() {
    let pki = Pki::generate();
    for path in [
        &pki.ca_pem,
        &pki.server_cert,
        &pki.server_key,
        &pki.client_cert,
        &pki.client_key,
        &pki.upstream_cert,
        &pki.upstream_key,
        &pki.rogue_ca_pem,
        &pki.rogue_client_cert,
        &pki.rogue_client_key,
    ] {
        assert!(path.starts_with(pki.dir.path()), "{}", path.display());
        assert!(path.is_file(), "{}", path.display());
    }
    let key = std::fs::read_to_string(&pki.server_key).unwrap_or_default();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "not PKCS#8: {key}");

    let (cert, key) = pki.mismatched_key_pair();
    let result = rustls::ServerConfig::builder_with_provider(crate::support::pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_no_client_auth()
        .with_single_cert(crate::support::pki::load_certs(&cert), crate::support::pki::load_key(&key));
    assert!(result.is_err(), "mismatched pair was accepted");

    let written = pki.write_file("x.json", b"{}");
    assert_eq!(std::fs::read(&written).unwrap_or_default(), b"{}");
}

/// True once nothing accepts TCP connections on `addr` any more (polls up to 5 s).
async fn stops_listening(addr: std::net::SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn servers_stop_when_dropped() {
    let pki = Pki::generate();
    let upstream = EchoUpstream::start(&pki).await;
    let idp = TestIdp::start(json!({"keys": []})).await;
    let (upstream_addr, idp_addr) = (upstream.addr(), idp.addr());
    assert!(tokio::net::TcpStream::connect(upstream_addr).await.is_ok());
    assert!(tokio::net::TcpStream::connect(idp_addr).await.is_ok());
    drop(upstream);
    drop(idp);
    assert!(stops_listening(upstream_addr).await, "upstream still listening");
    assert!(stops_listening(idp_addr).await, "IdP still listening");
}
