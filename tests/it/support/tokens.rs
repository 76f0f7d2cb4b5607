//! JWT minting for tests, independent of the `jsonwebtoken` crate: keys are generated and
//! signatures computed directly with aws-lc-rs, so Runway's verifier is checked against an
//! independent implementation.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use serde_json::{Value, json};

use super::der;

enum Material {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A JWS signing key (RS256 or ES256) with its `kid`; publish it via [`SigningKey::jwk`].
pub struct SigningKey {
    /// Key id, put in minted headers and in the JWK.
    pub kid: String,
    /// `"RS256"` or `"ES256"`.
    pub alg: &'static str,
    material: Material,
}

impl SigningKey {
    /// A fresh RSA 2048 key signing RS256.
    pub fn rsa(kid: &str) -> SigningKey {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap_or_else(|e| panic!("generating RSA key: {e:?}"));
        SigningKey { kid: kid.to_string(), alg: "RS256", material: Material::Rsa(pair) }
    }

    /// A fresh P-256 key signing ES256 (fixed-size `r||s` signatures, as JWS requires).
    pub fn ec(kid: &str) -> SigningKey {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .unwrap_or_else(|e| panic!("generating P-256 key: {e:?}"));
        SigningKey { kid: kid.to_string(), alg: "ES256", material: Material::Ec(pair) }
    }

    /// The public JWK: `kty`, `kid`, `use: "sig"`, `alg`, and `n`/`e` or `crv`/`x`/`y`.
    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::Rsa(pair) => {
                let (n, e) = der::rsa_public_components(pair.public_key().as_ref())
                    .unwrap_or_else(|| panic!("unparsable RSAPublicKey DER"));
                json!({
                    "kty": "RSA", "kid": self.kid, "use": "sig", "alg": self.alg,
                    "n": b64url(&n), "e": b64url(&e),
                })
            }
            Material::Ec(pair) => {
                let point = pair.public_key().as_ref();
                assert!(point.len() == 65 && point[0] == 0x04, "expected an uncompressed P-256 point");
                json!({
                    "kty": "EC", "kid": self.kid, "use": "sig", "alg": self.alg,
                    "crv": "P-256", "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
                })
            }
        }
    }

    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`) of the public key. RSA keys only.
    pub fn rsa_public_pem(&self) -> String {
        assert!(matches!(self.material, Material::Rsa(_)), "rsa_public_pem on a non-RSA key");
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.public_key_der());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// SPKI (X.509 SubjectPublicKeyInfo) DER of the public key.
    pub fn public_key_der(&self) -> Vec<u8> {
        let der = match &self.material {
            Material::Rsa(pair) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Material::Ec(pair) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
        };
        der.unwrap_or_else(|e| panic!("encoding public key: {e:?}"))
    }

    /// Signs `claims` with header `{"alg": self.alg, "kid": self.kid, "typ": "JWT"}`.
    pub fn mint(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"});
        self.sign_with_header(&header, claims)
    }

    /// Signs with `header` used verbatim (whatever its `alg` says), using this key's own
    /// algorithm.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.material {
            Material::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .unwrap_or_else(|e| panic!("RS256 signing: {e:?}"));
                sig
            }
            Material::Ec(pair) => {
                pair.sign(&rng, msg).unwrap_or_else(|e| panic!("ES256 signing: {e:?}")).as_ref().to_vec()
            }
        }
    }
}

/// `b64url(json(header)) + "." + b64url(json(claims))`.
fn signing_input(header: &Value, claims: &Value) -> String {
    let encode = |v: &Value| b64url(&serde_json::to_vec(v).unwrap_or_else(|e| panic!("serializing JSON: {e}")));
    format!("{}.{}", encode(header), encode(claims))
}

/// A JWKS document `{"keys": [...]}` with the public JWKs of `keys`.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// An HS256 (HMAC-SHA256) token with `header` verbatim. For the algorithm-confusion attack,
/// pass the RSA public key PEM bytes as `secret`.
pub fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

/// An unsigned token `b64(header).b64(claims).` (for `alg: none` attacks).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.", signing_input(header, claims))
}

/// Unpadded base64url.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    let secs =
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_else(|e| panic!("clock before 1970: {e}")).as_secs();
    i64::try_from(secs).unwrap_or(i64::MAX)
}
