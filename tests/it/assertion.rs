//! The signed identity assertion (contract section 10), checked the way Kong's OSS `jwt` plugin checks it,
//! with an independent verifier: the public key is the PEM printed by the real binary
//! (`runway keys public -c FILE`), the signature is checked with aws-lc-rs directly over the signing input,
//! and the plugin's rules are applied by hand (credential found by `iss` = "runway", algorithm equal to
//! the credential's ES256, `exp` checked, `maximum_expiration`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const AUD: &str = "https://deploy.example.com";
/// Kong: `config.maximum_expiration` of the jwt plugin in deploy/kong/kong.yml.
const KONG_MAXIMUM_EXPIRATION: i64 = 120;

const ROUTES: &str = r#"
[[routes]]
name = "deploy"
path_prefix = "/deploy"
[[routes.allow]]
issuer = "gitlab"

[[routes]]
name = "status"
path_prefix = "/status"
anonymous = true

[[routes]]
name = "shadow"
path_prefix = "/shadow"
mode = "report"
[[routes.allow]]
issuer = "gitlab"
claims = { environment = "production" }
"#;

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A fresh P-256 key as PKCS#8 PEM, and the key itself.
fn pkcs8_key() -> (String, EcdsaKeyPair) {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap_or_else(|e| panic!("key: {e}"));
    let der = pair.to_pkcs8v1().unwrap_or_else(|e| panic!("pkcs8: {e}"));
    (pem("PRIVATE KEY", der.as_ref()), pair)
}

/// A fresh P-256 key as SEC1 (`EC PRIVATE KEY`) PEM, and the key itself.
fn sec1_key() -> (String, EcdsaKeyPair) {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap_or_else(|e| panic!("key: {e}"));
    let der = pair.private_key().as_der().unwrap_or_else(|e| panic!("sec1: {e}"));
    (pem("EC PRIVATE KEY", der.as_ref()), pair)
}

fn public_pem(pair: &EcdsaKeyPair) -> String {
    pem("PUBLIC KEY", spki(pair).as_ref())
}

fn spki(pair: &EcdsaKeyPair) -> Vec<u8> {
    pair.public_key().as_der().unwrap_or_else(|e| panic!("spki: {e}")).as_ref().to_vec()
}

struct Fx {
    pki: Pki,
    idp: TestIdp,
    key: SigningKey,
    upstream: EchoUpstream,
    client: TestClient,
}

async fn fixture() -> Fx {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let client = TestClient::new(&pki);
    Fx { pki, idp, key, upstream, client }
}

impl Fx {
    fn config(&self, extra: &str) -> String {
        format!(
            "{}{}{}{}",
            base_config(&self.pki, &self.upstream.url()),
            issuer_block("gitlab", "gitlab", &self.idp.issuer(), AUD, ""),
            ROUTES,
            extra
        )
    }

    fn assertion_block(&self, key_pem: &str, extra: &str) -> String {
        let path = self.pki.write_file("assertion-key.pem", key_pem.as_bytes());
        format!("\n[assertion]\nkey = \"{}\"\n{extra}", path.display())
    }

    fn token(&self, extra: Value) -> String {
        let mut base = json!({
            "project_path": "platform/api", "job_id": "1234", "ref": "main", "environment": "production",
            "user_login": "alice", "jti": "client-jti"
        });
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        self.key.mint(&claims(&self.idp.issuer(), AUD, base))
    }

    async fn get(&self, runway: &Runway, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        let mut req = Request::get(runway.url(path));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.client.send(req.body(Full::new(Bytes::new())).unwrap_or_else(|e| panic!("request: {e}"))).await
    }
}

/// `runway keys public -c FILE` with the real binary: (exit code, stdout, stderr).
fn keys_public(config: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args(["--log-format", "text", "keys", "public", "-c"])
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("running runway: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every `PUBLIC KEY` block of a PEM text, as SubjectPublicKeyInfo DER.
fn public_keys(pem_text: &str) -> Vec<Vec<u8>> {
    pem_text
        .split("-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .map(|rest| {
            let body = rest.split("-----END PUBLIC KEY-----").next().unwrap_or_default();
            let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            STANDARD.decode(b64).unwrap_or_else(|e| panic!("base64: {e}"))
        })
        .collect()
}

/// RFC 7638 thumbprint of a P-256 SubjectPublicKeyInfo, computed here from the point (the last 65 bytes).
fn thumbprint(spki: &[u8]) -> String {
    assert_eq!(spki.len(), 91, "P-256 SPKI with an uncompressed point");
    let point = &spki[26..];
    assert_eq!(point[0], 0x04);
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..]);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
}

/// What Kong's jwt plugin does with `Authorization: Bearer <jwt>` and a consumer credential
/// `{key: "runway", algorithm: "ES256", rsa_public_key: <PEM>}`, `key_claim_name = iss`,
/// `claims_to_verify = [exp]`, `maximum_expiration = 120`. Returns (header, claims) when it would pass.
fn kong_verify(authorization: &str, credential_pem: &str) -> Result<(Value, Value), String> {
    let jwt = authorization.strip_prefix("Bearer ").ok_or("no Bearer prefix")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts[..] else { return Err(format!("{} parts", parts.len())) };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string());
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|e| e.to_string())?;
    let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|e| e.to_string())?;
    // The credential is looked up by the key claim (iss).
    if claims["iss"] != "runway" {
        return Err(format!("no credential for iss {}", claims["iss"]));
    }
    // The token's algorithm must equal the credential's.
    if header["alg"] != "ES256" {
        return Err(format!("algorithm {} is not the credential's ES256", header["alg"]));
    }
    let spki = public_keys(credential_pem).into_iter().next().ok_or("no public key in the credential")?;
    let key = signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &spki);
    key.verify(format!("{h}.{c}").as_bytes(), &decode(s)?).map_err(|_| "invalid signature".to_string())?;
    let exp = claims["exp"].as_i64().ok_or("exp is not a number")?;
    let now = now();
    if exp <= now {
        return Err("token expired".into());
    }
    if exp - now > KONG_MAXIMUM_EXPIRATION {
        return Err(format!("exp is {}s away, over maximum_expiration", exp - now));
    }
    Ok((header, claims))
}

fn assertion_of(res: &TestResponse) -> String {
    assert_eq!(res.status, 200, "{}", res.text());
    let echo = res.json();
    let values = echo["headers"]["authorization"].as_array().cloned().unwrap_or_default();
    assert_eq!(values.len(), 1, "exactly one Authorization reaches Kong: {values:?}");
    values[0].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn kong_verifies_the_assertion_with_the_key_runway_prints() {
    let fx = fixture().await;
    let (key_pem, _) = pkcs8_key();
    let config = fx.config(&fx.assertion_block(&key_pem, "issuer = \"runway\"\naudience = \"kong\"\nttl = \"60s\"\n"));
    let runway = Runway::start(&fx.pki, &config).await;
    runway.wait_ready().await;

    let (code, printed, stderr) = keys_public(&runway.config_path);
    assert_eq!(code, 0, "{stderr}");
    assert!(printed.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{printed}");
    assert_eq!(public_keys(&printed).len(), 1);

    let token = fx.token(json!({}));
    let res = fx.get(&runway, "/deploy/app", &[("authorization", &format!("Bearer {token}"))]).await;
    let authorization = assertion_of(&res);
    assert!(!authorization.contains(&token), "the client's token never reaches Kong");
    let (header, claims) = kong_verify(&authorization, &printed).unwrap_or_else(|e| panic!("Kong would refuse: {e}"));

    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], thumbprint(&public_keys(&printed)[0]), "kid = RFC 7638 thumbprint");
    let now = now();
    assert_eq!(claims["aud"], "kong");
    assert_eq!(claims["sub"], "user-1");
    assert_eq!(claims["runway_issuer"], "gitlab");
    assert_eq!(claims["runway_route"], "deploy");
    let iat = claims["iat"].as_i64().expect("iat");
    assert!((now - 5..=now + 1).contains(&iat), "iat {iat} now {now}");
    assert_eq!(claims["exp"].as_i64(), Some(iat + 60));
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty() && j != "client-jti"));
    // The audit claim subset ([audit] claims: the defaults), only those the token has.
    for (name, value) in
        [("project_path", "platform/api"), ("job_id", "1234"), ("ref", "main"), ("environment", "production")]
    {
        assert_eq!(claims[name], value, "{name}");
    }
    assert_eq!(claims["user_login"], "alice");
    assert_eq!(claims.get("pipeline_id"), None, "absent from the token, absent here");
    let names: Vec<&String> = claims.as_object().expect("object").keys().collect();
    assert_eq!(names.len(), 13, "{names:?}");

    // The identity headers are still there beside it.
    assert_eq!(res.json()["headers"]["x-runway-subject"], json!(["user-1"]));

    // Tampering is caught by the same check.
    let mut parts: Vec<String> = authorization.split('.').map(str::to_string).collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
    payload["sub"] = json!("root");
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    assert_eq!(kong_verify(&parts.join("."), &printed).err().as_deref(), Some("invalid signature"));

    // The admin listener publishes the same key.
    let (status, body) = runway.admin_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let jwks: Value = serde_json::from_str(&body).expect("jwks json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], header["kid"]);
    assert_eq!((keys[0]["kty"].as_str(), keys[0]["crv"].as_str()), (Some("EC"), Some("P-256")));
    assert_eq!((keys[0]["alg"].as_str(), keys[0]["use"].as_str()), (Some("ES256"), Some("sig")));
}

#[tokio::test]
async fn an_assertion_is_reused_for_the_same_identity_and_route_only() {
    let fx = fixture().await;
    let (key_pem, _) = sec1_key();
    let runway = Runway::start(&fx.pki, &fx.config(&fx.assertion_block(&key_pem, ""))).await;
    runway.wait_ready().await;
    let token = fx.token(json!({}));
    let bearer = format!("Bearer {token}");
    let first = assertion_of(&fx.get(&runway, "/deploy/a", &[("authorization", &bearer)]).await);
    let again = assertion_of(&fx.get(&runway, "/deploy/b", &[("authorization", &bearer)]).await);
    assert_eq!(first, again, "same identity, same route: reused");
    // Another token with the same identity and claims: the same assertion.
    let same_identity = fx.token(json!({"jti": "other"}));
    let third =
        assertion_of(&fx.get(&runway, "/deploy", &[("authorization", &format!("Bearer {same_identity}"))]).await);
    assert_eq!(first, third);
    // Another job: another assertion.
    let other_job = fx.token(json!({"job_id": "5678"}));
    let fourth = assertion_of(&fx.get(&runway, "/deploy", &[("authorization", &format!("Bearer {other_job}"))]).await);
    assert_ne!(first, fourth);
    let (printed_code, printed, _) = keys_public(&runway.config_path);
    assert_eq!(printed_code, 0);
    let (_, claims) = kong_verify(&fourth, &printed).unwrap_or_else(|e| panic!("SEC1 key: Kong would refuse: {e}"));
    assert_eq!(claims["job_id"], "5678");
}

#[tokio::test]
async fn no_assertion_on_anonymous_routes_or_report_mode_would_deny() {
    let fx = fixture().await;
    let (key_pem, _) = pkcs8_key();
    let runway = Runway::start(&fx.pki, &fx.config(&fx.assertion_block(&key_pem, ""))).await;
    runway.wait_ready().await;
    let token = fx.token(json!({}));
    let bearer = format!("Bearer {token}");

    let anonymous = fx.get(&runway, "/status", &[("authorization", &bearer)]).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.json()["headers"]["authorization"], Value::Null, "the client's credential is stripped");

    let staging = fx.token(json!({"environment": "staging"}));
    let would_deny = fx.get(&runway, "/shadow", &[("authorization", &format!("Bearer {staging}"))]).await;
    assert_eq!(would_deny.status, 200);
    assert_eq!(would_deny.json()["headers"]["authorization"], Value::Null);
    assert_eq!(would_deny.json()["headers"]["x-runway-route"], json!(["shadow"]));
    let no_token = fx.get(&runway, "/shadow", &[]).await;
    assert_eq!(no_token.json()["headers"]["authorization"], Value::Null);

    // Report mode, allowed: vouched for like any allowed request.
    let allowed = fx.get(&runway, "/shadow", &[("authorization", &bearer)]).await;
    let (_, printed, _) = keys_public(&runway.config_path);
    let (_, claims) = kong_verify(&assertion_of(&allowed), &printed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims["runway_route"], "shadow");

    // A refused request never reaches Kong at all.
    let refused = fx.get(&runway, "/deploy", &[("authorization", "Bearer not.a.token")]).await;
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn a_custom_header_carries_it_and_a_client_copy_never_passes() {
    let fx = fixture().await;
    let (key_pem, _) = pkcs8_key();
    let block = fx.assertion_block(&key_pem, "header = \"X-Identity-Assertion\"\n");
    let runway = Runway::start(&fx.pki, &fx.config(&block)).await;
    runway.wait_ready().await;
    let token = fx.token(json!({}));
    let spoof = ("x-identity-assertion", "Bearer forged");
    let res = fx.get(&runway, "/deploy", &[("authorization", &format!("Bearer {token}")), spoof]).await;
    assert_eq!(res.status, 200);
    let h = &res.json()["headers"];
    assert_eq!(h["authorization"], Value::Null);
    let values = h["x-identity-assertion"].as_array().cloned().unwrap_or_default();
    assert_eq!(values.len(), 1, "{values:?}");
    let (_, printed, _) = keys_public(&runway.config_path);
    kong_verify(values[0].as_str().unwrap_or_default(), &printed).unwrap_or_else(|e| panic!("{e}"));
    let anonymous = fx.get(&runway, "/status", &[spoof]).await;
    assert_eq!(anonymous.json()["headers"]["x-identity-assertion"], Value::Null, "a client's copy is removed");
}

#[tokio::test]
async fn during_a_rollover_old_and_new_keys_are_published_and_the_first_signs() {
    let fx = fixture().await;
    let (new_pem, new_pair) = pkcs8_key();
    let (_, old_pair) = sec1_key();
    // New signing key first; the old key stays published as a PUBLIC KEY block until Kong has switched.
    let file = format!("{new_pem}{}", public_pem(&old_pair));
    let runway = Runway::start(&fx.pki, &fx.config(&fx.assertion_block(&file, ""))).await;
    runway.wait_ready().await;

    let (code, printed, stderr) = keys_public(&runway.config_path);
    assert_eq!(code, 0, "{stderr}");
    let printed_keys = public_keys(&printed);
    assert_eq!(printed_keys.len(), 2);
    assert_eq!(printed_keys[0], spki(&new_pair), "the signing key first");
    assert_eq!(printed_keys[1], spki(&old_pair));

    let (status, body) = runway.admin_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let jwks: Value = serde_json::from_str(&body).expect("json");
    let kids: Vec<&str> = jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
    assert_eq!(kids, vec![thumbprint(&printed_keys[0]).as_str(), thumbprint(&printed_keys[1]).as_str()]);

    let token = fx.token(json!({}));
    let res = fx.get(&runway, "/deploy", &[("authorization", &format!("Bearer {token}"))]).await;
    let (header, _) = kong_verify(&assertion_of(&res), &printed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(header["kid"], kids[0]);
}

fn write_config(fx: &Fx, extra: &str) -> PathBuf {
    fx.pki.write_file("runway.toml", fx.config(extra).as_bytes())
}

#[tokio::test]
async fn without_assertion_keys_public_exits_1_and_there_is_no_jwks() {
    let fx = fixture().await;
    let path = write_config(&fx, "");
    let (code, stdout, stderr) = keys_public(&path);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("[assertion]"), "{stderr}");
    let runway = Runway::start(&fx.pki, &fx.config("")).await;
    let (status, _) = runway.admin_get("/.well-known/jwks.json").await;
    assert_eq!(status, 404);

    // A key file that is not EC P-256: refused by `keys public` and at start, naming the key.
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
    let block = fx.assertion_block(&rsa.serialize_pem(), "");
    let path = write_config(&fx, &block);
    let (code, _, stderr) = keys_public(&path);
    assert_eq!(code, 1);
    assert!(stderr.contains("assertion.key") && stderr.contains("not an EC P-256 key"), "{stderr}");
    let err = Runway::try_start(&fx.pki, &fx.config(&block)).await.err().expect("refused");
    assert!(err.contains("assertion.key"), "{err}");
}
