//! TLS material and configurations: PEM loading, the listener's rustls server config, and the mTLS client
//! config Runway presents to Kong. One crypto provider throughout: aws-lc-rs.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ServerConfig as ServerSection, UpstreamConfig};

/// ALPN protocols offered by the listener and to Kong, in preference order.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Why TLS material could not be used. `key` is the config key that names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM file could not be read or holds nothing usable.
    #[error("{key}: {path}: {message}")]
    File {
        /// Config key.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material (e.g. key does not match the certificate).
    #[error("{key}: {message}")]
    Rejected {
        /// Config key.
        key: &'static str,
        /// What rustls said, in words.
        message: String,
    },
}

/// The process-wide crypto provider (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM certificate chain; at least one certificate.
pub fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File { key, path: path.display().to_string(), message };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |message: String| TlsError::File { key, path: path.display().to_string(), message };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| err(format!("no usable private key ({e})")))
}

/// Reads a CA bundle into a root store.
pub fn load_roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            key,
            path: path.display().to_string(),
            message: format!("not a usable CA certificate ({e})"),
        })?;
    }
    Ok(roots)
}

/// The listener's config: TLS 1.2 and 1.3, ALPN h2 + http/1.1, the certificate checked against its key.
pub fn server_config(server: &ServerSection) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs("server.tls_cert", &server.tls_cert)?;
    let key = load_key("server.tls_key", &server.tls_key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rejected { key: "server", message: e.to_string() })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rejected { key: "server.tls_key", message: describe(&e) })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client config towards Kong: its CA (or the system roots), Runway's client certificate, ALPN.
pub fn upstream_client_config(upstream: &UpstreamConfig) -> Result<ClientConfig, TlsError> {
    let roots = match &upstream.ca {
        Some(ca) => load_roots("upstream.ca", ca)?,
        None => system_roots(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rejected { key: "upstream", message: e.to_string() })?
        .with_root_certificates(roots);
    let config = match &upstream.client_identity {
        Some((cert, key)) => {
            let certs = load_certs("upstream.client_cert", cert)?;
            let key = load_key("upstream.client_key", key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Rejected { key: "upstream.client_key", message: describe(&e) })?
        }
        None => builder.with_no_client_auth(),
    };
    // ALPN is left to hyper-rustls, which offers h2 and http/1.1 to match the client it builds.
    Ok(config)
}

/// A client config for fetching from identity providers: system roots, no client certificate.
pub fn public_client_config() -> Result<ClientConfig, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected { key: "issuers", message: e.to_string() })?
        .with_root_certificates(system_roots())
        .with_no_client_auth();
    Ok(config)
}

/// The machine's trusted roots (honours `SSL_CERT_FILE` / `SSL_CERT_DIR`); unreadable entries are skipped.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "skipping unreadable system CA certificates");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the private key does not belong to the certificate".to_string(),
        other => other.to_string(),
    }
}
