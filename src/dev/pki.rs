//! The demo's throwaway PKI: one CA, Runway's server certificate, the client certificate Runway shows
//! Kong, and the Kong stand-in's certificate. ECDSA P-256 throughout (fast to generate).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::DevError;

/// Paths of the generated files.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The CA certificate (trust this one with curl `--cacert`).
    pub ca: PathBuf,
    /// Runway's listener certificate and key (SAN localhost, 127.0.0.1).
    pub server: (PathBuf, PathBuf),
    /// The client certificate Runway presents to Kong.
    pub client: (PathBuf, PathBuf),
    /// The Kong stand-in's certificate and key.
    pub kong: (PathBuf, PathBuf),
}

const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1"];

impl DevPki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> Result<DevPki, DevError> {
        let mut ca_params = params(&[], "Runway dev CA")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(DevError::pki)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(DevError::pki)?;
        let ca = Issuer::new(ca_params, ca_key);
        let write = |name: &str, text: &str| -> Result<PathBuf, DevError> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| DevError::io(&path, e))?;
            Ok(path)
        };
        let leaf = |names: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose| -> Result<(String, String), DevError> {
            let mut p = params(names, cn)?;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![usage];
            p.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().map_err(DevError::pki)?;
            let cert = p.signed_by(&key, &ca).map_err(DevError::pki)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(LOCAL_NAMES, "runway", ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_cert, client_key) = leaf(&[], "runway-client", ExtendedKeyUsagePurpose::ClientAuth)?;
        let (kong_cert, kong_key) = leaf(LOCAL_NAMES, "kong", ExtendedKeyUsagePurpose::ServerAuth)?;
        Ok(DevPki {
            ca: write("ca.pem", &ca_cert.pem())?,
            server: (write("server.pem", &server_cert)?, write("server-key.pem", &server_key)?),
            client: (write("runway-client.pem", &client_cert)?, write("runway-client-key.pem", &client_key)?),
            kong: (write("kong.pem", &kong_cert)?, write("kong-key.pem", &kong_key)?),
        })
    }
}

fn params(names: &[&str], cn: &str) -> Result<CertificateParams, DevError> {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(DevError::pki)?;
    p.distinguished_name.push(DnType::CommonName, cn);
    Ok(p)
}
