//! An aws token before any network call: `k8s-aws-v1.` + unpadded base64url of a presigned STS
//! GetCallerIdentity URL, held to aws-iam-authenticator's rules. Nothing here contacts anything: a token
//! that fails here never makes Runway call out (no SSRF through Runway).
//!
//! What `aws eks get-token --cluster-name NAME` makes: botocore presigns GetCallerIdentity with the
//! `x-k8s-aws-id: NAME` header added before signing, `ExpiresIn=60`, GET, then `k8s-aws-v1.` +
//! `urlsafe_b64encode(url).rstrip("=")`. The URL looks like
//! `https://sts.REGION.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256
//! &X-Amz-Credential=AKID%2FDATE%2FREGION%2Fsts%2Faws4_request&X-Amz-Date=…&X-Amz-Expires=60
//! &X-Amz-SignedHeaders=host%3Bx-k8s-aws-id[&X-Amz-Security-Token=…]&X-Amz-Signature=…`.
//! STS accepts it for 15 minutes after `X-Amz-Date`, whatever `X-Amz-Expires` says.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::{AuthError, Reason};
use crate::config::{AWS_TOKEN_LIFETIME, StsEndpoint};

/// What every aws token starts with.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// Largest aws token accepted, prefix included.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Largest `X-Amz-Expires` accepted, in seconds.
pub const MAX_EXPIRES_SECS: u64 = 900;
/// The signed header that carries the audience.
pub const AUDIENCE_HEADER: &str = "x-k8s-aws-id";
/// The only signing algorithm.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Query parameters a presigned GetCallerIdentity URL may hold (compared lower-case).
const KNOWN_PARAMETERS: [&str; 9] = [
    "action",
    "version",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-signedheaders",
];

/// A presigned URL that passed every format rule. Time is checked separately ([`Presigned::check_time`]),
/// against each issuer's leeway.
#[derive(Debug, Clone)]
pub struct Presigned {
    /// The URL STS will be asked, exactly as the token holds it.
    pub uri: http::Uri,
    /// The STS endpoint it names (host lower-cased).
    pub endpoint: StsEndpoint,
    /// `X-Amz-Date`, Unix seconds.
    pub signed_at: u64,
    /// `X-Amz-Expires`, seconds (informational: STS ignores it).
    pub expires_in: u64,
    /// `X-Amz-SignedHeaders`.
    pub signed_headers: String,
    /// The region of the credential scope (`X-Amz-Credential`), when well-formed.
    pub region: Option<String>,
}

fn malformed(detail: impl Into<String>) -> AuthError {
    AuthError::invalid(Reason::Malformed, detail)
}

impl Presigned {
    /// Applies every rule that needs no clock and no network.
    pub fn parse(token: &str) -> Result<Presigned, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::invalid(
                Reason::TooLarge,
                format!("aws token is larger than {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        let body = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| malformed(format!("aws token does not start with {TOKEN_PREFIX}")))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| malformed("aws token is not unpadded base64url after k8s-aws-v1."))?;
        let url = String::from_utf8(bytes).map_err(|_| malformed("aws token does not hold a UTF-8 URL"))?;
        if url.contains('#') {
            return Err(malformed("presigned URL has a fragment"));
        }
        let uri: http::Uri = url.parse().map_err(|_| malformed("aws token does not hold a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(malformed("presigned URL is not https"));
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if authority.contains('@') {
            return Err(malformed("presigned URL has user information"));
        }
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if host.is_empty() {
            return Err(malformed("presigned URL has no host"));
        }
        let endpoint = StsEndpoint { host, port: uri.port_u16().unwrap_or(443) };
        if uri.path() != "/" {
            return Err(malformed("presigned URL path is not /"));
        }
        let params = Params::parse(uri.query().unwrap_or_default())?;
        if params.get("action") != Some("GetCallerIdentity") {
            return Err(malformed("presigned URL Action is not GetCallerIdentity"));
        }
        if params.get("x-amz-algorithm") != Some(ALGORITHM) {
            return Err(malformed(format!("presigned URL X-Amz-Algorithm is not {ALGORITHM}")));
        }
        let signed_headers = params.get("x-amz-signedheaders").unwrap_or_default();
        if !signed_headers.split(';').any(|h| h.eq_ignore_ascii_case(AUDIENCE_HEADER)) {
            return Err(malformed(format!("presigned URL does not sign the {AUDIENCE_HEADER} header (the audience)")));
        }
        let expires_in = params
            .get("x-amz-expires")
            .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| malformed("presigned URL X-Amz-Expires is missing or not a number of seconds"))?;
        if expires_in > MAX_EXPIRES_SECS {
            return Err(AuthError::invalid(
                Reason::LifetimeTooLong,
                format!("presigned URL X-Amz-Expires is {expires_in}s, over the {MAX_EXPIRES_SECS}s maximum"),
            ));
        }
        let signed_at = params
            .get("x-amz-date")
            .and_then(parse_amz_date)
            .ok_or_else(|| malformed("presigned URL X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ"))?;
        let credential = params.get("x-amz-credential").unwrap_or_default();
        let scope: Vec<&str> = credential.split('/').collect();
        if scope.len() != 5 || scope[0].is_empty() || scope[3] != "sts" || scope[4] != "aws4_request" {
            return Err(malformed("presigned URL X-Amz-Credential is not KEY/DATE/REGION/sts/aws4_request"));
        }
        if params.get("x-amz-signature").is_none_or(|s| s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(malformed("presigned URL X-Amz-Signature is missing or not 64 hex digits"));
        }
        Ok(Presigned {
            uri,
            endpoint,
            signed_at,
            expires_in,
            signed_headers: signed_headers.to_string(),
            region: Some(scope[2].to_string()).filter(|r| !r.is_empty()),
        })
    }

    /// When STS stops accepting the URL: 15 minutes after `X-Amz-Date` (Unix seconds).
    pub fn expires_at(&self) -> u64 {
        self.signed_at.saturating_add(AWS_TOKEN_LIFETIME.as_secs())
    }

    /// Not expired (15 minutes after `X-Amz-Date`, plus `leeway`) and not signed in the future (beyond
    /// `leeway`).
    pub fn check_time(&self, now: f64, leeway: Duration) -> Result<(), AuthError> {
        let leeway = leeway.as_secs_f64();
        let expires_at = self.expires_at() as f64;
        if now > expires_at + leeway {
            return Err(AuthError::invalid(
                Reason::Expired,
                format!("aws token expired {}s ago (valid 15 minutes after X-Amz-Date)", (now - expires_at) as u64),
            ));
        }
        let signed_at = self.signed_at as f64;
        if signed_at > now + leeway {
            return Err(AuthError::invalid(
                Reason::NotYetValid,
                format!("aws token X-Amz-Date is {}s in the future", (signed_at - now) as u64),
            ));
        }
        Ok(())
    }
}

/// The query parameters, keys lower-cased, each present once.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Result<Params, AuthError> {
        let mut params: Vec<(String, String)> = Vec::with_capacity(KNOWN_PARAMETERS.len());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(raw_key)?.to_ascii_lowercase();
            if !KNOWN_PARAMETERS.contains(&key.as_str()) {
                let shown: String = key.chars().take(40).collect();
                return Err(malformed(format!("presigned URL has an unknown query parameter \"{shown}\"")));
            }
            if params.iter().any(|(k, _)| *k == key) {
                return Err(malformed(format!("presigned URL has the query parameter \"{key}\" more than once")));
            }
            params.push((key, decode(raw_value)?));
        }
        Ok(Params(params))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Form-style percent-decoding (`+` is a space), strict: a `%` must start a valid escape and the result
/// must be UTF-8.
fn decode(raw: &str) -> Result<String, AuthError> {
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(malformed("presigned URL query has a broken percent-escape"));
        }
        if *b == b';' {
            return Err(malformed("presigned URL query uses ';' as a separator"));
        }
    }
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| malformed("presigned URL query is not UTF-8"))
}

/// `YYYYMMDDTHHMMSSZ` (UTC) → Unix seconds.
pub fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits.bytes().all(|c| c.is_ascii_digit()).then(|| digits.parse().ok()).flatten()
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (years from 1970), after H. Hinnant's algorithm.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn url(query: &str) -> String {
        format!("https://sts.us-east-1.amazonaws.com/?{query}")
    }

    fn good_query() -> String {
        format!(
            "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIDEXAMPLE%2F20240102%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20240102T030405Z\
             &X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature={SIG}"
        )
    }

    fn token(url: &str) -> String {
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(url))
    }

    fn refusal(url: &str) -> (Reason, String) {
        match Presigned::parse(&token(url)) {
            Err(AuthError::Invalid { reason, detail }) => (reason, detail),
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_cli_shaped_url_passes() {
        let p = Presigned::parse(&token(&url(&good_query()))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.endpoint, StsEndpoint { host: "sts.us-east-1.amazonaws.com".into(), port: 443 });
        assert_eq!(p.signed_at, 1_704_164_645);
        assert_eq!(p.expires_at(), 1_704_164_645 + 900);
        assert_eq!(p.expires_in, 60);
        assert_eq!(p.region.as_deref(), Some("us-east-1"));
        // Parameter names are compared case-insensitively; order does not matter.
        let lower = good_query().replace("X-Amz-", "x-amz-").replace("Action=", "action=");
        assert!(Presigned::parse(&token(&url(&lower))).is_ok());
        let with_session = format!("{}&X-Amz-Security-Token=FwoGZXIvYXdzE%2B%2F%2F", good_query());
        assert!(Presigned::parse(&token(&url(&with_session))).is_ok());
    }

    #[test]
    fn every_rule_has_its_own_description() {
        let q = good_query();
        let cases: Vec<(String, Reason, &str)> = vec![
            (url(&q).replace("https://", "http://"), Reason::Malformed, "not https"),
            (url(&q).replace(".com/?", ".com/x?"), Reason::Malformed, "path is not /"),
            (url(&q).replace("https://", "https://user@"), Reason::Malformed, "user information"),
            (format!("{}#frag", url(&q)), Reason::Malformed, "fragment"),
            (url(&q.replace("GetCallerIdentity", "AssumeRole")), Reason::Malformed, "Action"),
            (url(&q.replace("Action=GetCallerIdentity&", "")), Reason::Malformed, "Action"),
            (url(&q.replace("HMAC-SHA256", "HMAC-SHA1")), Reason::Malformed, "X-Amz-Algorithm"),
            (url(&q.replace("host%3Bx-k8s-aws-id", "host")), Reason::Malformed, "x-k8s-aws-id"),
            (url(&q.replace("Expires=60", "Expires=901")), Reason::LifetimeTooLong, "over the 900s"),
            (url(&q.replace("Expires=60", "Expires=-1")), Reason::Malformed, "X-Amz-Expires"),
            (url(&q.replace("Expires=60", "Expires=")), Reason::Malformed, "X-Amz-Expires"),
            (url(&q.replace("20240102T030405Z", "2024-01-02T03:04:05Z")), Reason::Malformed, "X-Amz-Date"),
            (url(&q.replace("20240102T030405Z", "20241302T030405Z")), Reason::Malformed, "X-Amz-Date"),
            (url(&q.replace("%2Fsts%2F", "%2Fs3%2F")), Reason::Malformed, "X-Amz-Credential"),
            (url(&q.replace(SIG, "abc")), Reason::Malformed, "X-Amz-Signature"),
            (url(&format!("{q}&X-Amz-Expires=60")), Reason::Malformed, "more than once"),
            (url(&format!("{q}&x-amz-expires=60")), Reason::Malformed, "more than once"),
            (url(&format!("{q}&Action=GetCallerIdentity")), Reason::Malformed, "more than once"),
            (url(&format!("{q}&X-Amz-Target=x")), Reason::Malformed, "unknown query parameter \"x-amz-target\""),
            (url(&format!("{q}&Version")), Reason::Malformed, "more than once"),
            (url(&format!("{q}&redirect=https://evil")), Reason::Malformed, "unknown query parameter"),
            (url(&format!("{q}&X-Amz-Security-Token=%zz")), Reason::Malformed, "percent-escape"),
            (url(&format!("{q};Action=GetCallerIdentity")), Reason::Malformed, "';'"),
        ];
        for (u, reason, needle) in cases {
            let (got, detail) = refusal(&u);
            assert_eq!(got, reason, "{u}: {detail}");
            assert!(detail.contains(needle), "{u}: {detail:?} should mention {needle:?}");
        }
    }

    #[test]
    fn format_and_size() {
        let oversize = format!("{TOKEN_PREFIX}{}", "A".repeat(MAX_TOKEN_BYTES));
        assert!(matches!(Presigned::parse(&oversize), Err(AuthError::Invalid { reason: Reason::TooLarge, .. })));
        for bad in ["k8s-aws-v1.!!!", "k8s-aws-v1.aGVsbG8=", "k8s-aws-v1.aGVsbG8"] {
            assert!(
                matches!(Presigned::parse(bad), Err(AuthError::Invalid { reason: Reason::Malformed, .. })),
                "{bad}"
            );
        }
        // Standard base64 (with '+' and '/') is not base64url.
        let standard = base64::engine::general_purpose::STANDARD_NO_PAD.encode(url(&good_query()) + "??>>");
        assert!(Presigned::parse(&format!("{TOKEN_PREFIX}{standard}")).is_err());
    }

    #[test]
    fn time_rules() {
        let p = Presigned::parse(&token(&url(&good_query()))).unwrap_or_else(|e| panic!("{e}"));
        let t = p.signed_at as f64;
        let leeway = Duration::from_secs(60);
        assert!(p.check_time(t, leeway).is_ok());
        assert!(p.check_time(t + 900.0 + 60.0, leeway).is_ok());
        assert!(matches!(
            p.check_time(t + 900.0 + 61.0, leeway),
            Err(AuthError::Invalid { reason: Reason::Expired, .. })
        ));
        assert!(p.check_time(t - 60.0, leeway).is_ok());
        assert!(matches!(p.check_time(t - 61.0, leeway), Err(AuthError::Invalid { reason: Reason::NotYetValid, .. })));
        assert!(p.check_time(t + 901.0, Duration::ZERO).is_err());
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20000301T000000Z"), Some(951_868_800));
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        for bad in
            ["", "20240102T030405", "20240102 030405Z", "2024010aT030405Z", "20240102T250405Z", "+2024010T030405Z"]
        {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }
}
