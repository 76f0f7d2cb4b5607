//! An aws token before any network call: [`Presigned::parse`] (the aws-iam-authenticator format rules)
//! and the time rules. The same input also goes to the two parsers that read what STS answers: the
//! principal ARN ([`arn::canonicalize`]) and the GetCallerIdentity body ([`sts::parse_identity`]).
//!
//! Input: the token text (`k8s-aws-v1.<base64url of a presigned URL>`), an ARN, or an STS answer body.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use runway::auth::aws::presigned::{AUDIENCE_HEADER, MAX_EXPIRES_SECS, Presigned};
use runway::auth::aws::{arn, sts};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = Presigned::parse(text) {
            // What a token that passes must hold (contract section 5).
            assert_eq!(p.uri.scheme_str(), Some("https"));
            assert_eq!(p.uri.path(), "/");
            assert!(!p.endpoint.host.is_empty());
            assert_eq!(p.endpoint.host, p.endpoint.host.to_ascii_lowercase());
            assert!(p.expires_in <= MAX_EXPIRES_SECS);
            assert!(p.signed_headers.split(';').any(|h| h.eq_ignore_ascii_case(AUDIENCE_HEADER)));
            let _ = p.endpoint.to_string();
            let signed_at = p.signed_at as f64;
            let leeway = Duration::from_secs(60);
            assert!(p.check_time(signed_at, Duration::ZERO).is_ok(), "valid the second it is signed");
            assert!(p.check_time(signed_at + 900.0, Duration::ZERO).is_ok(), "valid for 15 minutes");
            assert!(p.check_time(signed_at + 901.0, Duration::ZERO).is_err());
            assert!(p.check_time(signed_at - 61.0, leeway).is_err());
            let _ = p.check_time(runway::auth::unix_now(), leeway);
            assert!(p.expires_at() >= p.signed_at);
        }
        if let Ok(principal) = arn::canonicalize(text) {
            assert_eq!(principal.raw_arn, text);
            assert_eq!(principal.account.len(), 12);
            assert!(principal.arn.starts_with("arn:aws"));
            assert!(principal.arn.contains(&principal.account));
        }
    }
    if let Some(caller) = sts::parse_identity(data) {
        let _ = arn::canonicalize(&caller.arn);
    }
});
