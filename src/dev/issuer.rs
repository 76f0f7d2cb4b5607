//! The demo's token issuer: an OIDC discovery document and a JWKS over plain HTTP on loopback, and an
//! ES256 key that mints GitLab-style CI job tokens.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::DevError;

/// A running local issuer.
pub struct DevIssuer {
    /// Its `iss` (and discovery base URL).
    pub url: String,
    key: EncodingKey,
    kid: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DevIssuer {
    /// Generates a key and serves discovery + JWKS on 127.0.0.1.
    pub async fn start() -> Result<DevIssuer, DevError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| DevError::Setup("generating the issuer key failed".into()))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| DevError::Setup("loading the issuer key failed".into()))?;
        // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        let (x, y) = (point.get(1..33).unwrap_or_default(), point.get(33..65).unwrap_or_default());
        let kid = "runway-dev-1".to_string();
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| DevError::Setup(format!("issuer: {e}")))?;
        let addr: SocketAddr = listener.local_addr().map_err(|e| DevError::Setup(format!("issuer: {e}")))?;
        let url = format!("http://127.0.0.1:{}", addr.port());
        let discovery = json!({
            "issuer": url, "jwks_uri": format!("{url}/jwks"),
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let documents = Arc::new((discovery.to_string(), jwks.to_string()));
        let task = tokio::spawn(serve(listener, documents));
        Ok(DevIssuer { url, key: EncodingKey::from_ec_der(pkcs8.as_ref()), kid, task })
    }

    /// Signs `claims` as an ES256 JWT.
    pub fn mint(&self, claims: &Value) -> Result<String, DevError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| DevError::Setup(format!("minting a token: {e}")))
    }
}

async fn serve(listener: TcpListener, documents: Arc<(String, String)>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let documents = documents.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (status, body) = match req.uri().path() {
                    "/.well-known/openid-configuration" => (StatusCode::OK, documents.0.clone()),
                    "/jwks" => (StatusCode::OK, documents.1.clone()),
                    _ => (StatusCode::NOT_FOUND, "{}".to_string()),
                };
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                std::future::ready(Ok::<_, Infallible>(response))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}
