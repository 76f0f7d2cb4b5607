//! An issuer's usable verification keys, built from a JWKS: each key is bound to the algorithms its own
//! type allows (RFC 8725 §3.1), so a token can never pick an algorithm its key was not made for.
//!
//! Keys are parsed into aws-lc-rs public keys once, when the JWKS loads, so a verification is the
//! signature check alone.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use serde_json::Value;

/// One verification key, parsed once for each algorithm it may be used with.
pub struct VerifyingKey {
    /// `kid`, when the JWKS gives one.
    pub kid: Option<String>,
    /// Algorithms allowed for this key (its type's, its `alg`, and the issuer's, intersected), each with
    /// the key parsed for it.
    parsed: Vec<(Algorithm, ParsedPublicKey)>,
}

impl VerifyingKey {
    /// Algorithms this key verifies.
    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.parsed.iter().map(|(a, _)| *a)
    }

    /// Whether `signature` is this key's signature of `message` under `alg`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.parsed.iter().any(|(a, key)| *a == alg && key.verify_sig(message, signature).is_ok())
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithms: Vec<Algorithm> = self.algorithms().collect();
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("algorithms", &algorithms).finish()
    }
}

/// The result of looking a token's key up.
#[derive(Debug)]
pub enum KeyLookup<'a> {
    /// Keys to try, in order.
    Found(Vec<&'a VerifyingKey>),
    /// The kid exists but its key is not for this algorithm (algorithm confusion attempt or misconfiguration).
    WrongAlgorithm,
    /// No key with this kid (or, without a kid, no key for the algorithm).
    Unknown,
}

/// A snapshot of an issuer's keys.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    /// Set once keys were loaded at least once (even if the set is empty).
    pub loaded: bool,
    /// Increments on every successful load; lets waiters see that someone else refreshed.
    pub generation: u64,
}

impl KeySet {
    /// Builds a key set from a JWKS document, keeping the keys usable with `allowed`. Returns the set and the
    /// number of entries skipped.
    pub fn from_jwks(doc: &Value, allowed: &[Algorithm], generation: u64) -> Result<(KeySet, usize), String> {
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "not a JWKS document (no \"keys\" array)".to_string())?;
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(key) = serde_json::from_value::<Jwk>(entry.clone()).ok().and_then(|jwk| usable(&jwk, allowed)) {
                keys.push(key);
            }
        }
        let skipped = entries.len() - keys.len();
        Ok((KeySet { keys, loaded: true, generation }, skipped))
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Finds the keys a token with this `kid` and algorithm may be verified with.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> KeyLookup<'_> {
        let mut found = Vec::new();
        let mut kid_seen = false;
        for key in &self.keys {
            if kid.is_some() && key.kid.as_deref() != kid {
                continue;
            }
            kid_seen = true;
            if key.algorithms().any(|a| a == alg) {
                found.push(key);
            }
        }
        match (found.is_empty(), kid_seen && kid.is_some()) {
            (false, _) => KeyLookup::Found(found),
            (true, true) => KeyLookup::WrongAlgorithm,
            (true, false) => KeyLookup::Unknown,
        }
    }
}

fn usable(jwk: &Jwk, allowed: &[Algorithm]) -> Option<VerifyingKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
        // Symmetric keys never verify issuer tokens: accepting one would allow HMAC forgeries.
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(declared_algorithm(a)?),
    };
    let algorithms: Vec<Algorithm> =
        by_type.iter().copied().filter(|a| declared.is_none_or(|d| d == *a) && allowed.contains(a)).collect();
    let bytes = public_key_bytes(&jwk.algorithm)?;
    let parsed: Vec<(Algorithm, ParsedPublicKey)> = algorithms
        .into_iter()
        .filter_map(|a| Some((a, ParsedPublicKey::new(verification_algorithm(a)?, &bytes).ok()?)))
        .collect();
    if parsed.is_empty() {
        return None;
    }
    Some(VerifyingKey { kid: jwk.common.key_id.clone(), parsed })
}

/// The public key in the form aws-lc-rs parses: SPKI DER for RSA (built by aws-lc-rs from n and e), the
/// uncompressed point for EC, the raw key for Ed25519.
fn public_key_bytes(params: &AlgorithmParameters) -> Option<Vec<u8>> {
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok();
    match params {
        AlgorithmParameters::RSA(p) => {
            let components = aws_lc_rs::rsa::PublicKeyComponents { n: b64(&p.n)?, e: b64(&p.e)? };
            let der: aws_lc_rs::encoding::PublicKeyX509Der<'static> = components.as_der().ok()?;
            Some(der.as_ref().to_vec())
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (x, y) = (b64(&p.x)?, b64(&p.y)?);
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Some(point)
        }
        AlgorithmParameters::OctetKeyPair(p) => b64(&p.x),
        _ => None,
    }
}

fn verification_algorithm(a: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match a {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        _ => return None,
    })
}

fn declared_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn keys_are_bound_to_their_type_and_alg() {
        let doc = json!({"keys": [
            {"kty":"RSA","kid":"r1","alg":"RS256","n":N,"e":"AQAB"},
            {"kty":"RSA","kid":"enc","use":"enc","n":N,"e":"AQAB"},
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"mismatch","alg":"ES256","n":N,"e":"AQAB"},
            {"kty":"weird"}
        ]});
        let (set, skipped) = KeySet::from_jwks(&doc, &[Algorithm::RS256, Algorithm::ES256], 1).expect("jwks");
        assert_eq!(set.len(), 1);
        assert_eq!(skipped, 4);
        assert!(matches!(set.lookup(Some("r1"), Algorithm::RS256), KeyLookup::Found(k) if k.len() == 1));
        assert!(matches!(set.lookup(Some("r1"), Algorithm::ES256), KeyLookup::WrongAlgorithm));
        assert!(matches!(set.lookup(Some("h"), Algorithm::RS256), KeyLookup::Unknown));
        assert!(matches!(set.lookup(None, Algorithm::RS256), KeyLookup::Found(_)));
        assert!(matches!(set.lookup(None, Algorithm::ES256), KeyLookup::Unknown));
    }

    #[test]
    fn not_a_jwks() {
        assert!(KeySet::from_jwks(&json!({"kty":"RSA"}), &[Algorithm::RS256], 1).is_err());
    }
}
