//! Compact JWS parsing and the RFC 8725 checks that do not need a key: header rules, then the time,
//! issuer and audience claims once the signature has been verified.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

use super::{AuthError, Reason};

/// Tokens above this size are refused before any parsing (contract: 16 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The JOSE header fields Runway looks at. Unknown fields are ignored; duplicates are refused by serde.
#[derive(Debug, Deserialize)]
pub struct JoseHeader {
    /// Signature algorithm as written.
    pub alg: String,
    /// Key id.
    pub kid: Option<String>,
    /// Media type of the token.
    pub typ: Option<String>,
    /// Extensions the recipient must understand.
    pub crit: Option<Value>,
    /// Key URL (never followed).
    pub jku: Option<Value>,
    /// Certificate URL (never followed).
    pub x5u: Option<Value>,
    /// Embedded key (never trusted).
    pub jwk: Option<Value>,
    /// Embedded certificate chain (never trusted).
    pub x5c: Option<Value>,
}

/// A parsed, not yet verified, token.
#[derive(Debug)]
pub struct Jwt<'a> {
    /// The decoded header.
    pub header: JoseHeader,
    /// The decoded claims (a JSON object).
    pub claims: Value,
    /// `base64(header).base64(claims)`: what the signature covers.
    pub signing_input: &'a str,
    /// The base64url signature.
    pub signature: &'a str,
}

impl<'a> Jwt<'a> {
    /// Splits and decodes a compact JWS. Fails on anything that is not exactly three base64url parts with
    /// a JSON object header and a JSON object payload.
    pub fn parse(token: &'a str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::invalid(Reason::TooLarge, format!("token is larger than {MAX_TOKEN_BYTES} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            let detail = if token.split('.').count() == 5 {
                "encrypted tokens (JWE) are not accepted"
            } else {
                "token is not a JWT (expected three dot-separated parts)"
            };
            return Err(AuthError::invalid(Reason::Malformed, detail));
        };
        let header: JoseHeader = decode_json(h, "header")?;
        let claims: Value = decode_json(p, "payload")?;
        if !claims.is_object() {
            return Err(AuthError::invalid(Reason::Malformed, "token payload is not a JSON object"));
        }
        let signing_input = &token[..h.len() + 1 + p.len()];
        Ok(Jwt { header, claims, signing_input, signature: s })
    }

    /// The unverified `iss`, used only to pick the issuer whose keys must then verify the token.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// Header rules: no `none`, only the issuer's algorithms, no key-carrying headers, no `crit`, a known
    /// `typ`. Returns the algorithm to verify with.
    pub fn check_header(&self, allowed: &[Algorithm]) -> Result<Algorithm, AuthError> {
        let h = &self.header;
        for (name, present) in
            [("jku", h.jku.is_some()), ("x5u", h.x5u.is_some()), ("jwk", h.jwk.is_some()), ("x5c", h.x5c.is_some())]
        {
            if present {
                return Err(AuthError::invalid(
                    Reason::ForbiddenHeader,
                    format!("token header \"{name}\" is not accepted: keys come only from the issuer's JWKS"),
                ));
            }
        }
        if h.crit.is_some() {
            return Err(AuthError::invalid(
                Reason::UnknownCrit,
                "token header \"crit\" names extensions runway does not support",
            ));
        }
        if let Some(typ) = &h.typ {
            let lower = typ.to_ascii_lowercase();
            let bare = lower.strip_prefix("application/").unwrap_or(&lower);
            if bare != "jwt" && bare != "at+jwt" {
                return Err(AuthError::invalid(Reason::UnsupportedType, "token typ must be JWT or at+jwt"));
            }
        }
        if h.alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::invalid(Reason::DisallowedAlg, "unsigned tokens (alg none) are not accepted"));
        }
        let alg: Algorithm =
            h.alg.parse().map_err(|_| AuthError::invalid(Reason::DisallowedAlg, "token algorithm is not supported"))?;
        if !allowed.contains(&alg) {
            return Err(AuthError::invalid(
                Reason::DisallowedAlg,
                format!("algorithm {alg:?} is not allowed for this issuer"),
            ));
        }
        Ok(alg)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::invalid(Reason::Malformed, format!("token {what} is not base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::invalid(Reason::Malformed, format!("token {what} is not valid JSON")))
}

/// The claim rules an issuer imposes, checked after the signature.
#[derive(Debug, Clone)]
pub struct ClaimRules<'a> {
    /// Exact `iss`.
    pub issuer: &'a str,
    /// One must appear in `aud`.
    pub audiences: &'a [String],
    /// Allowed clock skew.
    pub leeway: Duration,
    /// Largest `exp - iat`.
    pub max_lifetime: Duration,
}

/// Checks `iss`, `aud`, `exp`, `nbf`, `iat` and the lifetime against `now` (Unix seconds).
pub fn check_claims(claims: &Value, rules: &ClaimRules<'_>, now: f64) -> Result<(), AuthError> {
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
        return Err(AuthError::invalid(Reason::WrongIssuer, "token issuer does not match"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => rules.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => {
            list.iter().any(|a| a.as_str().is_some_and(|a| rules.audiences.iter().any(|x| x == a)))
        }
        _ => false,
    };
    if !aud_ok {
        return Err(AuthError::invalid(
            Reason::WrongAudience,
            format!("token audience is not accepted (expected {})", rules.audiences.join(" or ")),
        ));
    }
    let leeway = rules.leeway.as_secs_f64();
    let exp = match claims.get("exp") {
        None => return Err(AuthError::invalid(Reason::MissingExp, "token has no exp")),
        Some(v) => time_claim(v, "exp")?,
    };
    if now > exp + leeway {
        return Err(AuthError::invalid(Reason::Expired, format!("token expired {}s ago", (now - exp) as i64)));
    }
    let nbf = claims.get("nbf").map(|v| time_claim(v, "nbf")).transpose()?;
    let iat = claims.get("iat").map(|v| time_claim(v, "iat")).transpose()?;
    if nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(AuthError::invalid(Reason::NotYetValid, "token is not valid yet (nbf is in the future)"));
    }
    if iat.is_some_and(|iat| iat > now + leeway) {
        return Err(AuthError::invalid(Reason::NotYetValid, "token is not valid yet (iat is in the future)"));
    }
    // Without iat, the lifetime still counts from the earliest moment the token claims to be valid.
    let start = iat.or(nbf).unwrap_or(now);
    let max = rules.max_lifetime.as_secs_f64();
    if exp - start > max {
        return Err(AuthError::invalid(
            Reason::LifetimeTooLong,
            format!("token lifetime {}s exceeds this issuer's maximum of {}s", (exp - start) as i64, max as i64),
        ));
    }
    Ok(())
}

fn time_claim(v: &Value, name: &str) -> Result<f64, AuthError> {
    v.as_f64()
        .filter(|t| t.is_finite())
        .ok_or_else(|| AuthError::invalid(Reason::Malformed, format!("token {name} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(header: Value, claims: Value) -> String {
        format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    fn reason(r: Result<impl std::fmt::Debug, AuthError>) -> Reason {
        match r {
            Err(AuthError::Invalid { reason, .. }) => reason,
            other => panic!("expected an invalid-token error, got {other:?}"),
        }
    }

    #[test]
    fn header_rules() {
        let ok = [Algorithm::RS256];
        let check = |h: Value| {
            let t = token(h, json!({}));
            let jwt = Jwt::parse(&t)?;
            jwt.check_header(&ok)
        };
        assert_eq!(check(json!({"alg":"RS256"})).ok(), Some(Algorithm::RS256));
        assert_eq!(check(json!({"alg":"RS256","typ":"application/at+JWT"})).ok(), Some(Algorithm::RS256));
        assert_eq!(reason(check(json!({"alg":"none"}))), Reason::DisallowedAlg);
        assert_eq!(reason(check(json!({"alg":"NoNe"}))), Reason::DisallowedAlg);
        assert_eq!(reason(check(json!({"alg":"HS256"}))), Reason::DisallowedAlg);
        assert_eq!(reason(check(json!({"alg":"ES256"}))), Reason::DisallowedAlg);
        assert_eq!(reason(check(json!({"alg":"RS256","jku":"https://evil"}))), Reason::ForbiddenHeader);
        assert_eq!(reason(check(json!({"alg":"RS256","x5u":"https://evil"}))), Reason::ForbiddenHeader);
        assert_eq!(reason(check(json!({"alg":"RS256","jwk":{}}))), Reason::ForbiddenHeader);
        assert_eq!(reason(check(json!({"alg":"RS256","x5c":[]}))), Reason::ForbiddenHeader);
        assert_eq!(reason(check(json!({"alg":"RS256","crit":["exp"]}))), Reason::UnknownCrit);
        assert_eq!(reason(check(json!({"alg":"RS256","typ":"dpop+jwt"}))), Reason::UnsupportedType);
    }

    #[test]
    fn malformed_tokens() {
        for t in ["", "a", "a.b", "a.b.c.d", "!!.e30.c2ln", "e30.!!.c2ln", "bnVsbA.e30.c2ln"] {
            assert_eq!(reason(Jwt::parse(t)), Reason::Malformed, "{t}");
        }
        let array_payload = token(json!({"alg":"RS256"}), json!([1]));
        assert_eq!(reason(Jwt::parse(&array_payload)), Reason::Malformed);
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(reason(Jwt::parse(&big)), Reason::TooLarge);
    }

    #[test]
    fn claim_rules() {
        let auds = vec!["api".to_string()];
        let rules = ClaimRules {
            issuer: "https://i",
            audiences: &auds,
            leeway: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
        };
        let now = 1_000_000.0;
        let check = |c: Value| check_claims(&c, &rules, now);
        assert!(check(json!({"iss":"https://i","aud":"api","exp":now+600.0,"iat":now})).is_ok());
        assert!(check(json!({"iss":"https://i","aud":["x","api"],"exp":now+600.0})).is_ok());
        assert!(check(json!({"iss":"https://i","aud":"api","exp":now-30.0})).is_ok(), "within leeway");
        assert_eq!(reason(check(json!({"iss":"https://i","aud":"api","exp":now-61.0}))), Reason::Expired);
        assert_eq!(reason(check(json!({"iss":"https://j","aud":"api","exp":now+1.0}))), Reason::WrongIssuer);
        assert_eq!(reason(check(json!({"iss":"https://i","aud":"apix","exp":now+1.0}))), Reason::WrongAudience);
        assert_eq!(reason(check(json!({"iss":"https://i","aud":["x"],"exp":now+1.0}))), Reason::WrongAudience);
        assert_eq!(reason(check(json!({"iss":"https://i","exp":now+1.0}))), Reason::WrongAudience);
        assert_eq!(reason(check(json!({"iss":"https://i","aud":"api"}))), Reason::MissingExp);
        assert_eq!(reason(check(json!({"iss":"https://i","aud":"api","exp":"soon"}))), Reason::Malformed);
        assert_eq!(
            reason(check(json!({"iss":"https://i","aud":"api","exp":now+60.0,"nbf":now+120.0}))),
            Reason::NotYetValid
        );
        assert_eq!(
            reason(check(json!({"iss":"https://i","aud":"api","exp":now+600.0,"iat":now+120.0}))),
            Reason::NotYetValid
        );
        assert_eq!(
            reason(check(json!({"iss":"https://i","aud":"api","exp":now+7200.0,"iat":now}))),
            Reason::LifetimeTooLong
        );
        assert_eq!(
            reason(check(json!({"iss":"https://i","aud":"api","exp":now+7200.0}))),
            Reason::LifetimeTooLong,
            "no iat: counted from now"
        );
    }
}
