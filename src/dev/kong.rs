//! The demo's Kong stand-in: TLS that refuses any client without a certificate from the dev CA, and an
//! echo of what it received (method, URI, headers, the client certificate's subject) as JSON.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::DevError;
use super::pki::DevPki;
use crate::tls;

/// A running Kong stand-in.
pub struct DevKong {
    /// Its port on 127.0.0.1.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DevKong {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DevKong {
    /// Starts on 127.0.0.1, demanding a client certificate from the dev CA.
    pub async fn start(pki: &DevPki) -> Result<DevKong, DevError> {
        let setup = |e: &dyn std::fmt::Display| DevError::Setup(format!("kong stand-in: {e}"));
        let roots = Arc::new(tls::load_roots("ca", &pki.ca).map_err(|e| setup(&e))?);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots, tls::provider()).build().map_err(|e| setup(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                tls::load_certs("kong", &pki.kong.0).map_err(|e| setup(&e))?,
                tls::load_key("kong", &pki.kong.1).map_err(|e| setup(&e))?,
            )
            .map_err(|e| setup(&e))?;
        config.alpn_protocols = tls::ALPN.iter().map(|p| p.to_vec()).collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| setup(&e))?;
        let port = listener.local_addr().map_err(|e| setup(&e))?.port();
        let task = tokio::spawn(serve(listener, TlsAcceptor::from(Arc::new(config))));
        Ok(DevKong { port, task })
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor) {
    while let Ok((tcp, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let client = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| format!("{} bytes, verified against the dev CA", c.len()));
            let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (name, value) in req.headers() {
                    headers.entry(name.to_string()).or_default().push(String::from_utf8_lossy(value.as_bytes()).into());
                }
                let echo = json!({
                    "kong_stand_in": "this is what Kong would receive",
                    "method": req.method().as_str(),
                    "uri": req.uri().to_string(),
                    "version": format!("{:?}", req.version()),
                    "client_certificate": client,
                    "headers": headers,
                });
                let mut response = Response::new(Full::new(Bytes::from(format!("{echo:#}\n"))));
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                std::future::ready(Ok::<_, Infallible>(response))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
