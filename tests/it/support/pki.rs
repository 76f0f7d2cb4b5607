//! Test PKI: a throw-away CA with server, client and upstream certificates (plus an unrelated
//! "rogue" CA) written as PEM files into a temp dir, and rustls configs built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Subject CN of [`Pki::client_cert`] (Runway's client certificate towards the upstream).
pub const CLIENT_CN: &str = "runway-client";
/// Subject CN of [`Pki::rogue_client_cert`].
pub const ROGUE_CLIENT_CN: &str = "rogue-client";

/// All certificates and keys a test needs, as PEM files inside `dir` (deleted on drop).
pub struct Pki {
    /// Temp dir holding every file below; removed when the `Pki` is dropped.
    pub dir: tempfile::TempDir,
    /// The test CA certificate (PEM).
    pub ca_pem: PathBuf,
    /// Runway's listener certificate: SAN `localhost` + `127.0.0.1`, signed by the CA.
    pub server_cert: PathBuf,
    /// Key of `server_cert` (PKCS#8 PEM).
    pub server_key: PathBuf,
    /// Runway's client certificate for mTLS to the upstream (CN [`CLIENT_CN`]), signed by the CA.
    pub client_cert: PathBuf,
    /// Key of `client_cert` (PKCS#8 PEM).
    pub client_key: PathBuf,
    /// The upstream's server certificate: SAN `localhost` + `127.0.0.1`, signed by the CA.
    pub upstream_cert: PathBuf,
    /// Key of `upstream_cert` (PKCS#8 PEM).
    pub upstream_key: PathBuf,
    /// A second CA, unrelated to `ca_pem`.
    pub rogue_ca_pem: PathBuf,
    /// A client certificate issued by the rogue CA (CN [`ROGUE_CLIENT_CN`]).
    pub rogue_client_cert: PathBuf,
    /// Key of `rogue_client_cert` (PKCS#8 PEM).
    pub rogue_client_key: PathBuf,
    /// The test CA's signing side, for certificates issued later ([`Pki::issue`]).
    ca: Issuer<'static, KeyPair>,
}

/// What a certificate from [`Pki::issue`] is for.
#[derive(Debug, Clone, Copy)]
pub enum Usage {
    /// A TLS server (SANs `localhost` and `127.0.0.1`).
    Server,
    /// A TLS client.
    Client,
}

/// The aws-lc-rs provider, passed explicitly so nothing depends on a process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads every certificate from a PEM file.
pub fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("reading certificates from {}: {e}", path.display()))
}

/// Reads the private key from a PEM file.
pub fn load_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("reading private key from {}: {e}", path.display()))
}

fn roots(ca_pem: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_pem) {
        roots.add(cert).unwrap_or_else(|e| panic!("adding {} to root store: {e}", ca_pem.display()));
    }
    Arc::new(roots)
}

fn new_key() -> KeyPair {
    // rcgen's default is ECDSA P-256 with SHA-256.
    KeyPair::generate().unwrap_or_else(|e| panic!("generating key pair: {e}"))
}

fn params(sans: &[&str], cn: &str) -> CertificateParams {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap_or_else(|e| panic!("certificate params: {e}"));
    params.distinguished_name.push(DnType::CommonName, cn);
    params
}

/// A self-signed CA: returns its PEM and an issuer that can sign leaf certificates.
fn new_ca(cn: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut ca = params(&[], cn);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = new_key();
    let cert = ca.self_signed(&key).unwrap_or_else(|e| panic!("self-signing CA: {e}"));
    (cert.pem(), Issuer::new(ca, key))
}

/// A leaf certificate signed by `issuer`: returns `(cert PEM, key PKCS#8 PEM)`.
fn new_leaf(
    issuer: &Issuer<'static, KeyPair>,
    sans: &[&str],
    cn: &str,
    eku: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut leaf = params(sans, cn);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![eku];
    leaf.use_authority_key_identifier_extension = true;
    let key = new_key();
    let cert = leaf.signed_by(&key, issuer).unwrap_or_else(|e| panic!("signing leaf {cn}: {e}"));
    (cert.pem(), key.serialize_pem())
}

const SERVER_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

impl Pki {
    /// Generates the whole PKI (ECDSA P-256 everywhere, so it is fast) into a fresh temp dir.
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("runway-pki-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating temp dir: {e}"));
        let write = |name: &str, contents: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            path
        };

        let (ca_pem, ca) = new_ca("Runway Test CA");
        let (server_cert, server_key) =
            new_leaf(&ca, &SERVER_SANS, "runway-server", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = new_leaf(&ca, &[], CLIENT_CN, ExtendedKeyUsagePurpose::ClientAuth);
        let (upstream_cert, upstream_key) =
            new_leaf(&ca, &SERVER_SANS, "upstream", ExtendedKeyUsagePurpose::ServerAuth);
        let (rogue_ca_pem, rogue) = new_ca("Rogue Test CA");
        let (rogue_client_cert, rogue_client_key) =
            new_leaf(&rogue, &[], ROGUE_CLIENT_CN, ExtendedKeyUsagePurpose::ClientAuth);

        Pki {
            ca_pem: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            upstream_cert: write("upstream.pem", &upstream_cert),
            upstream_key: write("upstream-key.pem", &upstream_key),
            rogue_ca_pem: write("rogue-ca.pem", &rogue_ca_pem),
            rogue_client_cert: write("rogue-client.pem", &rogue_client_cert),
            rogue_client_key: write("rogue-client-key.pem", &rogue_client_key),
            ca,
            dir,
        }
    }

    /// Client config trusting only `ca_pem`, ALPN `h2` + `http/1.1`, no client certificate.
    /// This is how test clients talk to Runway.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("client protocol versions: {e}"))
            .with_root_certificates(roots(&self.ca_pem))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Like [`Pki::client_config`], but presenting `cert`/`key` as client certificate
    /// (e.g. `client_cert` or `rogue_client_cert`), to talk to the upstream directly.
    pub fn client_config_with_cert(&self, cert: &Path, key: &Path) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("client protocol versions: {e}"))
            .with_root_certificates(roots(&self.ca_pem))
            .with_client_auth_cert(load_certs(cert), load_key(key))
            .unwrap_or_else(|e| panic!("client certificate {}: {e}", cert.display()));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The upstream's server config: `upstream_cert`, REQUIRES a client certificate chaining
    /// to `ca_pem`, ALPN `h2` + `http/1.1`.
    pub fn upstream_server_config(&self) -> Arc<ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&self.ca_pem), provider())
            .build()
            .unwrap_or_else(|e| panic!("client verifier: {e}"));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("server protocol versions: {e}"))
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(&self.upstream_cert), load_key(&self.upstream_key))
            .unwrap_or_else(|e| panic!("upstream certificate: {e}"));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A server config with Runway's own listener cert (`server_cert`), no client auth,
    /// ALPN `h2` + `http/1.1`: lets support self-tests stand in for Runway.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("server protocol versions: {e}"))
            .with_no_client_auth()
            .with_single_cert(load_certs(&self.server_cert), load_key(&self.server_key))
            .unwrap_or_else(|e| panic!("server certificate: {e}"));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Writes `contents` to `dir/name` (configs, JWKS files, ...) and returns the path.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// A new certificate from the test CA, written as `{name}.pem` and `{name}-key.pem` (a renewal, as
    /// cert-manager would make one): returns `(cert, key)` paths.
    pub fn issue(&self, name: &str, cn: &str, usage: Usage) -> (PathBuf, PathBuf) {
        let (sans, eku): (&[&str], _) = match usage {
            Usage::Server => (&SERVER_SANS, ExtendedKeyUsagePurpose::ServerAuth),
            Usage::Client => (&[], ExtendedKeyUsagePurpose::ClientAuth),
        };
        let (cert, key) = new_leaf(&self.ca, sans, cn, eku);
        (
            self.write_file(&format!("{name}.pem"), cert.as_bytes()),
            self.write_file(&format!("{name}-key.pem"), key.as_bytes()),
        )
    }

    /// `(cert, key)` files that do not belong together: `server_cert` with a freshly
    /// generated, unrelated key (for config-check tests).
    pub fn mismatched_key_pair(&self) -> (PathBuf, PathBuf) {
        let key = self.write_file("mismatched-key.pem", new_key().serialize_pem().as_bytes());
        (self.server_cert.clone(), key)
    }
}
