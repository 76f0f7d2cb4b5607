//! A tiny DER reader, just enough to pull the RSA modulus/exponent out of a PKCS#1
//! `RSAPublicKey` and the subject CN out of an X.509 certificate without extra crates.

/// Splits one DER TLV off the front of `input`: `(tag, contents, rest)`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (len_bytes, rest) = input.split_at(n);
        input = rest;
        len_bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    let (contents, rest) = input.split_at(len);
    Some((tag, contents, rest))
}

/// Like [`tlv`], but insists on `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = tlv(input)?;
    (t == tag).then_some((contents, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
/// OID 2.5.4.3 (id-at-commonName), DER contents.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// Strips the sign-padding zero bytes DER puts in front of positive integers.
fn unsigned(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        if rest.is_empty() {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// `(n, e)` of a PKCS#1 `RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }`, as
/// big-endian bytes without leading zeros (the form JWK `n`/`e` need).
pub fn rsa_public_components(pkcs1: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (seq, _) = expect(pkcs1, SEQUENCE)?;
    let (n, rest) = expect(seq, INTEGER)?;
    let (e, _) = expect(rest, INTEGER)?;
    Some((unsigned(n).to_vec(), unsigned(e).to_vec()))
}

/// The first subject commonName of a DER X.509 certificate, if any.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (cert, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    // Optional `[0] EXPLICIT version`.
    let (tag, _, after_version) = tlv(tbs)?;
    let mut rest = if tag == 0xa0 { after_version } else { tbs };
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (mut rdns, _) = expect(rest, SEQUENCE)?;
    while !rdns.is_empty() {
        let (set, next) = expect(rdns, SET)?;
        rdns = next;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (atv, next) = expect(atvs, SEQUENCE)?;
            atvs = next;
            let (oid, value) = expect(atv, OID)?;
            if oid == COMMON_NAME {
                let (_, value, _) = tlv(value)?;
                return Some(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    None
}
