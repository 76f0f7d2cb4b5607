//! The signed identity assertion (contract section 10): on every allowed request with an identity, a
//! short-lived ES256 JWT in the configured header (`Authorization: Bearer <jwt>` by default), which Kong's
//! OSS `jwt` plugin verifies with the public key from `runway keys public` (credential `key` = our `iss`,
//! `algorithm = ES256`).
//!
//! The key file holds the signing key (EC P-256, PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`) first. Any
//! further key in the same file (private, or just a `PUBLIC KEY`) is published but never signs: that is how
//! a rollover keeps the old and the new public key in `/.well-known/jwks.json` and `runway keys public`.
//!
//! Signing costs far more than the rest of a request's handling, so an assertion is reused for the same
//! identity on the same route until half of its lifetime has passed ([`Assertions::header_value`]).

pub mod layer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType, Jwk,
    ThumbprintHash,
};
use quick_cache::sync::Cache;
use rustls_pki_types::pem::{PemObject, SectionKind};
use serde_json::{Map, Value, json};

pub use layer::AssertionLayer;

use crate::auth::Identity;
use crate::config::AssertionConfig;

/// Identities (per route) whose assertion is kept for reuse.
const CACHE_CAPACITY: usize = 10_000;

/// Claims Runway sets itself; an audit claim of the same name is not copied over them.
const RESERVED_CLAIMS: &[&str] = &["iss", "aud", "sub", "iat", "exp", "nbf", "jti", "runway_issuer", "runway_route"];

/// The DER prefix of a P-256 SubjectPublicKeyInfo holding an uncompressed point (RFC 5480): SEQUENCE,
/// AlgorithmIdentifier { id-ecPublicKey, prime256v1 }, BIT STRING of 66 bytes. The 65-byte point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why the assertion key could not be loaded, or an assertion not made.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// The key file could not be read.
    #[error("{}: cannot read ({source})", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not PEM.
    #[error("{}: not a PEM file ({source})", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        source: rustls_pki_types::pem::Error,
    },
    /// A key in the file is not an EC P-256 key.
    #[error("{}: key {index} is not an EC P-256 key (ES256 needs prime256v1; PKCS#8 or SEC1 for private keys)", path.display())]
    NotP256 {
        /// The file.
        path: PathBuf,
        /// 1-based position among the file's keys.
        index: usize,
    },
    /// The file holds no private key.
    #[error(
        "{}: no private key (expected -----BEGIN PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY----- first)",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A block other than a key (e.g. a certificate).
    #[error("{}: only PRIVATE KEY, EC PRIVATE KEY and PUBLIC KEY blocks belong in the assertion key file", path.display())]
    UnexpectedBlock {
        /// The file.
        path: PathBuf,
    },
    /// The RFC 7638 thumbprint could not be computed.
    #[error("computing the key thumbprint: {0}")]
    Thumbprint(#[source] jsonwebtoken::errors::Error),
    /// Signing failed.
    #[error("signing the identity assertion failed")]
    Sign,
}

/// One public key as published: its `kid` and coordinates.
#[derive(Debug, Clone)]
pub struct PublishedKey {
    /// RFC 7638 thumbprint (SHA-256, base64url).
    pub kid: String,
    /// The public key as JWK parameters.
    jwk: EllipticCurveKeyParameters,
    /// SubjectPublicKeyInfo DER.
    spki: Vec<u8>,
}

impl PublishedKey {
    fn from_point(point: &[u8]) -> Result<PublishedKey, AssertionError> {
        let (x, y) = (&point[1..33], &point[33..65]);
        let jwk = EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        };
        let common = CommonParameters::default();
        let kid = Jwk { common, algorithm: AlgorithmParameters::EllipticCurve(jwk.clone()) }
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(AssertionError::Thumbprint)?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point);
        Ok(PublishedKey { kid, jwk, spki })
    }

    /// The public JWK, as served in `/.well-known/jwks.json`.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "EC", "crv": "P-256", "x": self.jwk.x, "y": self.jwk.y,
            "kid": self.kid, "use": "sig", "alg": "ES256",
        })
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo), as Kong's `rsa_public_key` takes it.
    pub fn pem(&self) -> String {
        let b64 = STANDARD.encode(&self.spki);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }
}

/// An assertion kept for reuse.
struct Minted {
    value: HeaderValue,
    reuse_until: u64,
}

/// The signing key, what it publishes, and the assertion cache.
pub struct Assertions {
    signing: EcdsaKeyPair,
    rng: SystemRandom,
    /// base64url of the JOSE header, the same for every assertion.
    header_b64: String,
    published: Vec<PublishedKey>,
    jwks: bytes::Bytes,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    header: HeaderName,
    audit_claims: Arc<[String]>,
    cache: Cache<[u8; 32], Arc<Minted>>,
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertions").field("kid", &self.kid()).field("issuer", &self.issuer).finish()
    }
}

impl Assertions {
    /// Reads the key file; `audit_claims` are the claims copied into each assertion (`[audit] claims`).
    pub fn load(config: &AssertionConfig, audit_claims: &[String]) -> Result<Assertions, AssertionError> {
        let (signing, published) = read_keys(&config.key)?;
        let kid = published.first().map(|k| k.kid.clone()).unwrap_or_default();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
        let jwks = json!({"keys": published.iter().map(PublishedKey::jwk).collect::<Vec<_>>()});
        Ok(Assertions {
            signing,
            rng: SystemRandom::new(),
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            jwks: bytes::Bytes::from(jwks.to_string()),
            published,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_secs: config.ttl.as_secs().max(1),
            header: config.header.clone(),
            audit_claims: audit_claims.to_vec().into(),
            cache: Cache::new(CACHE_CAPACITY),
        })
    }

    /// The `kid` of the signing key.
    pub fn kid(&self) -> &str {
        self.published.first().map_or("", |k| k.kid.as_str())
    }

    /// Every published key, the signing key first.
    pub fn published(&self) -> &[PublishedKey] {
        &self.published
    }

    /// `{"keys": [...]}`, the body of `/.well-known/jwks.json`.
    pub fn jwks(&self) -> bytes::Bytes {
        self.jwks.clone()
    }

    /// The PEM of every published key, the signing key first (`runway keys public`).
    pub fn public_pem(&self) -> String {
        self.published.iter().map(PublishedKey::pem).collect()
    }

    /// The request header the assertion goes in.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// `Bearer <jwt>` for this identity on `route`: reused while at least half its lifetime remains,
    /// else freshly minted.
    pub fn header_value(&self, identity: &Identity, route: &str) -> Result<HeaderValue, AssertionError> {
        let now = unix_secs();
        let subset = self.claim_subset(identity);
        let key = cache_key(route, identity, &subset);
        if let Some(minted) = self.cache.get(&key)
            && now < minted.reuse_until
        {
            return Ok(minted.value.clone());
        }
        let jwt = self.sign(identity, route, subset, now)?;
        let value = HeaderValue::try_from(format!("Bearer {jwt}")).map_err(|_| AssertionError::Sign)?;
        let minted = Minted { value: value.clone(), reuse_until: now + self.ttl_secs / 2 };
        self.cache.insert(key, Arc::new(minted));
        Ok(value)
    }

    /// A freshly minted assertion (no reuse).
    pub fn mint(&self, identity: &Identity, route: &str) -> Result<String, AssertionError> {
        self.sign(identity, route, self.claim_subset(identity), unix_secs())
    }

    fn claim_subset(&self, identity: &Identity) -> Map<String, Value> {
        let mut subset = Map::new();
        for name in self.audit_claims.iter().filter(|n| !RESERVED_CLAIMS.contains(&n.as_str())) {
            if let Some(v) = identity.claims.get(name) {
                subset.insert(name.clone(), v.clone());
            }
        }
        subset
    }

    fn sign(
        &self,
        identity: &Identity,
        route: &str,
        mut claims: Map<String, Value>,
        now: u64,
    ) -> Result<String, AssertionError> {
        claims.insert("iss".into(), Value::from(self.issuer.as_str()));
        claims.insert("aud".into(), Value::from(self.audience.as_str()));
        claims.insert("sub".into(), Value::from(identity.subject.as_str()));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + self.ttl_secs));
        claims.insert("jti".into(), Value::from(uuid::Uuid::new_v4().to_string()));
        claims.insert("runway_issuer".into(), Value::from(identity.issuer.as_str()));
        claims.insert("runway_route".into(), Value::from(route));
        let payload = serde_json::to_vec(&claims).map_err(|_| AssertionError::Sign)?;
        let mut jwt = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 96);
        jwt.push_str(&self.header_b64);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
        let signature = self.signing.sign(&self.rng, jwt.as_bytes()).map_err(|_| AssertionError::Sign)?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jwt);
        Ok(jwt)
    }
}

/// The same assertion serves requests of the same identity on the same route: what it asserts is the
/// route, the issuer, the subject and the copied claims, so those make the key.
fn cache_key(route: &str, identity: &Identity, subset: &Map<String, Value>) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [route, identity.issuer.as_str(), identity.subject.as_str()] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.update(Value::Object(subset.clone()).to_string().as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The signing key (the file's first private key) and every key to publish, the signing key first.
fn read_keys(path: &Path) -> Result<(EcdsaKeyPair, Vec<PublishedKey>), AssertionError> {
    let pem = std::fs::read(path).map_err(|source| AssertionError::Read { path: path.to_path_buf(), source })?;
    let mut signing: Option<EcdsaKeyPair> = None;
    let mut points: Vec<Vec<u8>> = Vec::new();
    let not_p256 = |index| AssertionError::NotP256 { path: path.to_path_buf(), index };
    for (i, section) in <(SectionKind, Vec<u8>)>::pem_slice_iter(&pem).enumerate() {
        let (kind, der) = section.map_err(|source| AssertionError::Pem { path: path.to_path_buf(), source })?;
        let point = match kind {
            SectionKind::PrivateKey | SectionKind::EcPrivateKey => {
                let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|_| not_p256(i + 1))?;
                let point = pair.public_key().as_ref().to_vec();
                signing.get_or_insert(pair);
                point
            }
            SectionKind::PublicKey => match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
                Some(point) if point.len() == 65 && point[0] == 0x04 => point.to_vec(),
                _ => return Err(not_p256(i + 1)),
            },
            _ => return Err(AssertionError::UnexpectedBlock { path: path.to_path_buf() }),
        };
        if point.len() != 65 {
            return Err(not_p256(i + 1));
        }
        points.push(point);
    }
    let signing = signing.ok_or_else(|| AssertionError::NoPrivateKey { path: path.to_path_buf() })?;
    // The signing key first, even when a public key block came before it; each key once.
    let mut published: Vec<PublishedKey> = Vec::with_capacity(points.len());
    for point in std::iter::once(signing.public_key().as_ref()).chain(points.iter().map(Vec::as_slice)) {
        let key = PublishedKey::from_point(point)?;
        if !published.iter().any(|k| k.kid == key.kid) {
            published.push(key);
        }
    }
    Ok((signing, published))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_by_hand() {
        // RFC 7638 §3: SHA-256 over {"crv","kty","x","y"} in lexicographic order, no whitespace.
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        let point = pair.public_key().as_ref();
        let key = PublishedKey::from_point(point).expect("published");
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        let text = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
        assert_eq!(key.kid, URL_SAFE_NO_PAD.encode(digest.as_ref()));
        assert!(key.pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let parsed = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(key.pem().as_bytes()).expect("pem");
        assert_eq!(parsed.as_ref(), key.spki.as_slice());
    }
}
