//! The path a bearer token takes: `Authorization` value → [`bearer_token`] → [`Jwt::parse`] → header rules
//! → signature → claim rules → [`Identity`] (identity headers), against a fixed in-memory issuer.
//!
//! Input: the `Authorization` header value (`Bearer eyJ…`). A fuzzer cannot forge signatures, so a token
//! whose header says ES256 is also re-signed with the target's own key (published in the issuer's JWKS as
//! `fuzz-es256`) and verified again: that is how mutated claims reach the checks after the signature. The
//! claim rules are also run directly, at a fixed time, on every token that parses.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use runway::auth::fetch::Fetcher;
use runway::auth::jwt::{ClaimRules, Jwt, check_claims};
use runway::auth::{AuthError, Authenticator, Identity, TokenDigest, bearer_token};
use runway::config::{ClaimKey, IssuerConfig, IssuerKind, KeySource};
use runway::metrics::Metrics;
use serde_json::{Value, json};

const ISS: &str = "https://gitlab.example.com";
const AUD: &str = "https://deploy.example.com";
/// The time the direct claim checks run at (2023-11-14).
const NOW: f64 = 1_700_000_000.0;
/// Seeds carry `exp` = 2100-01-01: the issuer accepts lifetimes that long so they stay valid.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
const ALL_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    authenticator: Authenticator,
    gitlab: IssuerConfig,
    es256: EcdsaKeyPair,
}

fn issuer(name: &str, kind: IssuerKind, audience: &str, jwks: &std::path::Path) -> IssuerConfig {
    IssuerConfig {
        name: name.into(),
        kind,
        issuer: ISS.into(),
        audiences: vec![audience.into()],
        keys: KeySource::File(jwks.to_path_buf()),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        max_token_lifetime: CENTURY,
        leeway: Duration::from_secs(60),
        refresh_interval: Duration::from_secs(900),
        kid_refetch_interval: Duration::from_secs(10),
        headers: vec![
            (HeaderName::from_static("x-runway-namespace"), ClaimKey::Name("namespace_path".into())),
            (
                HeaderName::from_static("x-runway-account"),
                ClaimKey::Pointer("/https:~1~1sts.amazonaws.com~1/aws_account".into()),
            ),
        ],
        aws: None,
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let es256 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        let point = es256.public_key().as_ref();
        let mut jwks: Value = serde_json::from_str(include_str!("../keys/jwks.json")).expect("keys/jwks.json");
        let keys = jwks["keys"].as_array_mut().expect("keys/jwks.json has keys");
        keys.push(json!({
            "kty": "EC", "kid": "fuzz-es256", "use": "sig", "alg": "ES256", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }));
        let dir = std::env::temp_dir().join(format!("runway-fuzz-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("jwks.json");
        std::fs::write(&file, jwks.to_string()).expect("jwks file");
        let gitlab = issuer("gitlab", IssuerKind::Gitlab, AUD, &file);
        // Same iss, another audience: exercises the choice between issuers that share an iss.
        let okta = issuer("okta", IssuerKind::Okta, "api://other", &file);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let fetcher =
            runtime.block_on(async { Fetcher::new(runway::tls::public_client_config().expect("client TLS config")) });
        let metrics = std::sync::Arc::new(Metrics::new().expect("metrics"));
        // Cache off: every input is verified, and a crash never depends on what ran before.
        let authenticator =
            Authenticator::new(&[gitlab.clone(), okta], &fetcher, metrics, 0, None).expect("authenticator");
        let _ = std::fs::remove_dir_all(&dir);
        Fixture { runtime, authenticator, gitlab, es256 }
    })
}

/// The checks that need no key, run on any token that parses, at a fixed time.
fn unsigned_checks(f: &Fixture, token: &str) {
    let Ok(jwt) = Jwt::parse(token) else { return };
    assert_eq!(format!("{}.{}", jwt.signing_input, jwt.signature), token, "parse keeps the token's bytes");
    assert!(jwt.claims.is_object());
    let _ = jwt.check_header(&ALL_ALGORITHMS);
    let _ = jwt.check_header(&[Algorithm::ES256]);
    let audiences = [AUD.to_string()];
    let rules =
        ClaimRules { issuer: ISS, audiences: &audiences, leeway: Duration::from_secs(60), max_lifetime: CENTURY };
    let _ = check_claims(&jwt.claims, &rules, NOW);
    let rules = ClaimRules { leeway: Duration::ZERO, max_lifetime: Duration::from_secs(3600), ..rules };
    let _ = check_claims(&jwt.claims, &rules, NOW);
    if let Ok(identity) = Identity::from_claims(&f.gitlab, jwt.claims.clone(), "0123456789abcdef") {
        check_identity(&identity);
    }
}

fn check_identity(identity: &Identity) {
    assert!(!identity.subject.is_empty());
    for (name, value) in &identity.headers {
        assert!(name.as_str().starts_with("x-runway-"), "{name}");
        assert!(!value.as_bytes().iter().any(|b| b.is_ascii_control()), "control character in {name}");
    }
}

fn authenticate(f: &Fixture, token: &str) {
    let digest = TokenDigest::of(token);
    match f.runtime.block_on(f.authenticator.authenticate(token, &digest)) {
        Ok(identity) => {
            assert!(Jwt::parse(token).is_ok(), "an accepted token parses");
            check_identity(&identity);
        }
        Err(refusal) => {
            let shown = refusal_text(&refusal.error);
            // Contract section 4: the token never appears in a response or a log line. A token can also be a
            // piece of a fixed refusal text (the token `token is not a JWT (expected three dot-separated
            // parts)` is refused with exactly that text): the text quotes the token only if it depends on it,
            // that is if another token of the same shape is refused with another text.
            if token.len() >= 24 && shown.contains(token) {
                let other = same_shape(token);
                let digest = TokenDigest::of(&other);
                let other_shown = match f.runtime.block_on(f.authenticator.authenticate(&other, &digest)) {
                    Ok(_) => None,
                    Err(refusal) => Some(refusal_text(&refusal.error)),
                };
                assert_eq!(
                    other_shown.as_deref(),
                    Some(shown.as_str()),
                    "the refusal quotes the token: {shown:?} (for {other:?}: {other_shown:?})"
                );
            }
        }
    }
}

/// What a refusal shows (in `error_description` and the logs).
fn refusal_text(error: &AuthError) -> String {
    match error {
        AuthError::Invalid { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// The token with each letter and digit moved to the next one of its kind (`z` to `a`, `9` to `0`): the same
/// length, dots and punctuation, so the same parse steps, but other content.
fn same_shape(token: &str) -> String {
    token
        .chars()
        .map(|c| match c {
            'z' => 'a',
            'Z' => 'A',
            '9' => '0',
            'a'..='y' | 'A'..='Y' | '0'..='8' => char::from(c as u8 + 1),
            c => c,
        })
        .collect()
}

/// The token with its signature replaced by a valid ES256 one from the target's key.
fn resigned(f: &Fixture, token: &str) -> Option<String> {
    let jwt = Jwt::parse(token).ok()?;
    if jwt.header.alg != "ES256" {
        return None;
    }
    let signature = f.es256.sign(&SystemRandom::new(), jwt.signing_input.as_bytes()).ok()?;
    Some(format!("{}.{}", jwt.signing_input, URL_SAFE_NO_PAD.encode(signature.as_ref())))
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let token = match bearer_token(Some(&value)) {
        Ok(Some(token)) => token,
        Ok(None) | Err(_) => return,
    };
    assert!(!token.is_empty() && token.trim() == token);
    unsigned_checks(f, token);
    authenticate(f, token);
    if let Some(token) = resigned(f, token) {
        authenticate(f, &token);
    }
});
