//! Request paths: [`normalize_path`] and [`RouteTable::find`] over a small table whose routes a confused
//! path could swap (`/deploy/staging` vs `/deploy/production`, `/public` vs `/admin`).
//!
//! Input: the raw request path, as bytes (only UTF-8 inputs reach `normalize_path`, whose argument is a
//! `&str`; an input that `http::Uri` parses is also routed by the path hyper would hand over).
//!
//! Oracle for every accepted path (contract section 4: nothing that Kong or a backend could read as another
//! path): the decoded result starts with `/`, holds no `;`, `\`, `%` or control character, no empty, `.`
//! or `..` segment (one trailing `/` allowed) and no segment ending in `.` or space; decoding it once more
//! changes nothing (no double-decoding trick); its NFKC form (what a Unicode-normalising backend sees) has
//! the same segments count and no `;`, `\`, `%`, `.` or `..` segment either; the raw input held no `;` and
//! only well-formed escapes, none of them for `/`, `\`, `%` or `;`; normalising the result again gives it
//! back; a plain path is not copied; and the route found is the one a plain reference model picks from the
//! decoded segments. Conversely a path of letters, digits, `-`, `_` and single `/` is never refused.

#![no_main]

use std::borrow::Cow;
use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use runway::config::{RouteConfig, RouteMode};
use runway::routing::{RouteError, RouteTable, normalize_path};
use unicode_normalization::UnicodeNormalization;

const PREFIXES: [(&str, &str); 6] = [
    ("root", "/"),
    ("public", "/public"),
    ("admin", "/admin"),
    ("deploy", "/deploy"),
    ("staging", "/deploy/staging"),
    ("production", "/deploy/production"),
];

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let routes: Vec<RouteConfig> = PREFIXES
            .iter()
            .map(|(name, prefix)| RouteConfig {
                name: (*name).into(),
                host: None,
                path_prefix: (*prefix).into(),
                methods: None,
                anonymous: *name == "public",
                mode: RouteMode::Enforce,
                one_time: false,
                allow: vec![],
            })
            .collect();
        RouteTable::new(&routes)
    })
}

/// The segments of a path without its leading `/` and one trailing `/` (`/` has none).
fn segments(path: &str) -> Vec<&str> {
    let body = path.strip_prefix('/').unwrap_or(path);
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.is_empty() { vec![] } else { body.split('/').collect() }
}

/// The reference router: the longest configured prefix made of whole leading segments.
fn reference_route(decoded: &str) -> &'static str {
    let segs = segments(decoded);
    PREFIXES
        .iter()
        .filter(|(_, prefix)| {
            let p = segments(prefix);
            p.len() <= segs.len() && p.iter().zip(&segs).all(|(a, b)| a == b)
        })
        .max_by_key(|(_, prefix)| segments(prefix).len())
        .map_or("none", |(name, _)| *name)
}

/// The raw path's escapes: each `%` followed by two hex digits, and none encoding `/`, `\`, `%` or `;`.
fn escapes_are_safe(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(hi), Some(lo)) = (b.get(i + 1), b.get(i + 2)) else { return false };
            let (Some(hi), Some(lo)) = ((*hi as char).to_digit(16), (*lo as char).to_digit(16)) else {
                return false;
            };
            if matches!(hi * 16 + lo, 0x2f | 0x5c | 0x25 | 0x3b) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn check_accepted(raw: &str, decoded: &str) {
    assert!(decoded.starts_with('/'), "{decoded:?}");
    assert!(!raw.contains(';'), "a raw ';' passed: {raw:?}");
    assert!(escapes_are_safe(raw), "a malformed or dangerous escape passed: {raw:?}");
    for bad in [';', '\\', '%'] {
        assert!(!decoded.contains(bad), "{bad:?} in the accepted path {decoded:?} (raw {raw:?})");
    }
    assert!(!decoded.chars().any(char::is_control), "control character in {decoded:?} (raw {raw:?})");
    assert!(!decoded.contains("//"), "empty segment in {decoded:?} (raw {raw:?})");
    for seg in segments(decoded) {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "segment {seg:?} in {decoded:?} (raw {raw:?})");
        assert!(!seg.ends_with(['.', ' ']), "segment {seg:?} Windows would trim, in {decoded:?} (raw {raw:?})");
    }
    // Decoding once more (a backend that decodes twice) reads the same path.
    let twice = percent_decode_str(decoded).decode_utf8_lossy();
    assert_eq!(twice, decoded, "a second decoding changes {decoded:?} (raw {raw:?})");
    // A Unicode-normalising backend sees the same segments, none of them a dot segment.
    let nfkc: String = decoded.nfkc().collect();
    assert_eq!(
        nfkc.matches('/').count(),
        decoded.matches('/').count(),
        "NFKC adds a '/': {nfkc:?} from {decoded:?} (raw {raw:?})"
    );
    for bad in [';', '\\', '%'] {
        assert!(!nfkc.contains(bad), "NFKC makes {bad:?}: {nfkc:?} from {decoded:?} (raw {raw:?})");
    }
    for seg in segments(&nfkc) {
        assert!(seg != "." && seg != "..", "NFKC makes segment {seg:?}: {nfkc:?} from {decoded:?} (raw {raw:?})");
    }
    // The accepted result is a fixpoint.
    match normalize_path(decoded) {
        Ok(again) => assert_eq!(again, decoded, "normalising {decoded:?} again"),
        Err(e) => panic!("the accepted {decoded:?} (raw {raw:?}) is refused when normalised again: {e}"),
    }
}

fn route(raw: &str) {
    let result = normalize_path(raw);
    let found = table().find(Some("deploy.example.com"), raw, &Method::POST);
    match (&result, &found) {
        (Ok(decoded), Ok(route)) => {
            check_accepted(raw, decoded);
            let plain = raw.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'%' | b';' | b'\\'));
            assert!(!plain || matches!(decoded, Cow::Borrowed(_)), "a plain path was copied: {raw:?}");
            assert_eq!(route.name, reference_route(decoded), "route for {decoded:?} (raw {raw:?})");
        }
        (Err(RouteError::BadPath(_)), Err(RouteError::BadPath(_))) => {}
        _ => panic!("normalize_path and find disagree on {raw:?}: {result:?} / {:?}", found.map(|r| r.name.clone())),
    }
    // Letters, digits, '-', '_' and single slashes are always fine.
    let simple = raw.starts_with('/')
        && !raw.contains("//")
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_'));
    if simple {
        assert!(result.is_ok(), "the plain path {raw:?} is refused: {result:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        route(raw);
    }
    // What hyper hands over: the path of a parsed request target.
    if let Ok(uri) = http::Uri::try_from(data)
        && uri.scheme().is_none()
        && uri.path().starts_with('/')
    {
        route(uri.path());
    }
});
