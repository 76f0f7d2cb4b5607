//! AWS STS, faked on 127.0.0.1 over TLS, and tokens minted the way `aws eks get-token` mints them.
//!
//! The fake answers `GET /?Action=GetCallerIdentity&…` presigned URLs. It checks the SigV4 query signature
//! for real: it signs the request it received again with `aws-sigv4` (the AWS SDK for Rust's signer), using
//! the secret of the access key named in `X-Amz-Credential`, the request's own `X-Amz-Date`,
//! `X-Amz-Expires`, credential scope and the headers listed in `X-Amz-SignedHeaders` with the values that
//! arrived, and compares signatures. So a proxy that sends the wrong `x-k8s-aws-id`, or a URL altered
//! after signing, gets `403 SignatureDoesNotMatch`, as from STS. It also refuses expired URLs (15 minutes
//! after `X-Amz-Date`), unknown keys and wrong session tokens, answers JSON (or XML on request), and counts
//! every request.
//!
//! The minter does what botocore's `generate_presigned_url('get_caller_identity', ExpiresIn=60)` does after
//! the CLI's `before-sign` hook adds `x-k8s-aws-id`: presign `GET https://HOST/?Action=GetCallerIdentity&
//! Version=2011-06-15` with `host` and `x-k8s-aws-id` as signed headers, then `k8s-aws-v1.` + unpadded
//! base64url of the URL.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::pki::Pki;

/// The region the fake credentials sign for.
pub const REGION: &str = "us-east-1";
/// What `aws eks get-token` puts in `X-Amz-Expires`.
pub const CLI_EXPIRES: u64 = 60;

/// A fixed fake credential and the principal STS reports for it.
#[derive(Debug, Clone, Copy)]
pub struct FakeCredential {
    /// Access key id.
    pub access_key_id: &'static str,
    /// Secret access key (only the fake STS and the minter know it).
    pub secret: &'static str,
    /// Session token of temporary credentials.
    pub session_token: Option<&'static str>,
    /// `Arn` from GetCallerIdentity.
    pub arn: &'static str,
    /// `Account`.
    pub account: &'static str,
    /// `UserId`.
    pub user_id: &'static str,
}

/// A CI runner's role session (temporary credentials, with a session token).
pub const ROLE_SESSION: FakeCredential = FakeCredential {
    access_key_id: "ASIAFAKEROLE00000001",
    secret: "fake/role/secret/0000000000000000000000",
    session_token: Some("FwoGZXIvYXdzEFAKE//session+token/0001=="),
    arn: "arn:aws:sts::111122223333:assumed-role/ci-deploy/gitlab-job-42",
    account: "111122223333",
    user_id: "AROAFAKEROLEID000001:gitlab-job-42",
};

/// An IAM user in another account (long-lived credentials, no session token).
pub const USER: FakeCredential = FakeCredential {
    access_key_id: "AKIAFAKEUSER00000002",
    secret: "fake/user/secret/0000000000000000000000",
    session_token: None,
    arn: "arn:aws:iam::444455556666:user/ops/alice",
    account: "444455556666",
    user_id: "AIDAFAKEUSERID000002",
};

/// Credentials STS has never heard of.
pub const UNKNOWN: FakeCredential = FakeCredential {
    access_key_id: "AKIAFAKEUNKNOWN00003",
    secret: "fake/unknown/secret/000000000000000000",
    session_token: None,
    arn: "",
    account: "",
    user_id: "",
};

const KNOWN: [FakeCredential; 2] = [ROLE_SESSION, USER];

/// One request as the fake STS received it.
#[derive(Debug, Clone)]
pub struct StsCall {
    /// `Accept`.
    pub accept: Option<String>,
    /// `x-k8s-aws-id`.
    pub audience: Option<String>,
    /// The status the fake answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    calls: AtomicUsize,
    log: Mutex<Vec<StsCall>>,
    xml: AtomicBool,
    refuse_all: AtomicBool,
    delay: Mutex<Duration>,
}

/// The fake STS. Stops (and drops every connection) when dropped.
pub struct FakeSts {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FakeSts {
    /// Serves HTTPS with the PKI's server certificate (SAN 127.0.0.1 and localhost, signed by the test CA).
    pub async fn start(pki: &Pki) -> FakeSts {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("binding fake STS: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("fake STS local_addr: {e}"));
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(pki.server_config()), state.clone()));
        FakeSts { addr, state, task }
    }

    /// `https://127.0.0.1:PORT`: what `sts_endpoint` must say, and where tokens are minted for.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Requests received so far.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Every request received, in order.
    pub fn log(&self) -> Vec<StsCall> {
        lock(&self.state.log).clone()
    }

    /// Answer XML instead of JSON (as some endpoints do whatever `Accept` says).
    pub fn set_xml(&self, xml: bool) {
        self.state.xml.store(xml, Ordering::SeqCst);
    }

    /// Refuse every request with `403 AccessDenied`.
    pub fn set_refuse_all(&self, refuse: bool) {
        self.state.refuse_all.store(refuse, Ordering::SeqCst);
    }

    /// Wait this long before answering (lets a burst of requests pile up).
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }
}

impl Drop for FakeSts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while conns.try_join_next().is_some() {}
        let (acceptor, state) = (acceptor.clone(), state.clone());
        conns.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let delay = *lock(&state.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let header_text = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let xml = state.xml.load(Ordering::SeqCst);
    let response = if state.refuse_all.load(Ordering::SeqCst) {
        error(StatusCode::FORBIDDEN, "AccessDenied", "refused by the test", xml)
    } else {
        match check(&req) {
            Ok(credential) => identity(credential, xml),
            Err((status, code, message)) => error(status, code, message, xml),
        }
    };
    lock(&state.log).push(StsCall {
        accept: header_text("accept"),
        audience: header_text("x-k8s-aws-id"),
        status: response.status().as_u16(),
    });
    Ok(response)
}

type Failure = (StatusCode, &'static str, &'static str);

/// What STS checks, in its order: action, key, session token, expiry, signature.
fn check(req: &Request<Incoming>) -> Result<FakeCredential, Failure> {
    let params = query_params(req.uri().query().unwrap_or_default());
    let get = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let sig_mismatch = (StatusCode::FORBIDDEN, "SignatureDoesNotMatch", "signature does not match");
    if req.uri().path() != "/" || get("Action") != Some("GetCallerIdentity") {
        return Err((StatusCode::BAD_REQUEST, "InvalidAction", "only GetCallerIdentity"));
    }
    let credential = get("X-Amz-Credential").unwrap_or_default();
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, _day, region, "sts", "aws4_request"] = scope.as_slice() else {
        return Err((StatusCode::BAD_REQUEST, "IncompleteSignature", "bad credential scope"));
    };
    let Some(known) = KNOWN.iter().find(|c| c.access_key_id == *key_id) else {
        return Err((StatusCode::FORBIDDEN, "InvalidClientTokenId", "unknown access key"));
    };
    if get("X-Amz-Security-Token") != known.session_token {
        return Err((StatusCode::FORBIDDEN, "InvalidClientTokenId", "bad session token"));
    }
    let signed_at = get("X-Amz-Date").and_then(amz_date).ok_or(sig_mismatch)?;
    if SystemTime::now() > signed_at + Duration::from_secs(900) {
        return Err((StatusCode::FORBIDDEN, "ExpiredToken", "request has expired"));
    }
    let expires = get("X-Amz-Expires").and_then(|e| e.parse::<u64>().ok()).ok_or(sig_mismatch)?;
    // The headers the client signed, with the values that arrived (a missing one cannot match).
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    for name in get("X-Amz-SignedHeaders").unwrap_or_default().split(';') {
        let value = match name {
            "host" => Some(host.clone()),
            other => req.headers().get(other).and_then(|v| v.to_str().ok()).map(str::to_string),
        };
        headers.push((name.to_string(), value.ok_or(sig_mismatch)?));
    }
    // Sign again what arrived, minus what signing adds, and compare.
    let unsigned: Vec<String> = params
        .iter()
        .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("x-amz-"))
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let url = format!("https://{host}/?{}", unsigned.join("&"));
    let expected = presign(&url, &headers, known, region, signed_at, expires);
    let expected_sig = query_params(expected.split_once('?').map(|(_, q)| q).unwrap_or_default())
        .into_iter()
        .find(|(k, _)| k == "X-Amz-Signature")
        .map(|(_, v)| v);
    if expected_sig.as_deref() != get("X-Amz-Signature") {
        return Err(sig_mismatch);
    }
    Ok(*known)
}

fn identity(c: FakeCredential, xml: bool) -> Response<Full<Bytes>> {
    if xml {
        let body = format!(
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
             <GetCallerIdentityResult>\n    <Arn>{}</Arn>\n    <UserId>{}</UserId>\n    <Account>{}</Account>\n  \
             </GetCallerIdentityResult>\n  <ResponseMetadata>\n    <RequestId>fake-1</RequestId>\n  \
             </ResponseMetadata>\n</GetCallerIdentityResponse>\n",
            c.arn, c.user_id, c.account
        );
        return reply(StatusCode::OK, "text/xml", body);
    }
    let body = serde_json::json!({
        "GetCallerIdentityResponse": {
            "GetCallerIdentityResult": {"Account": c.account, "Arn": c.arn, "UserId": c.user_id},
            "ResponseMetadata": {"RequestId": "fake-1"},
        }
    });
    reply(StatusCode::OK, "application/json", body.to_string())
}

fn error(status: StatusCode, code: &str, message: &str, xml: bool) -> Response<Full<Bytes>> {
    if xml {
        let body = format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
             <Code>{code}</Code><Message>{message}</Message></Error><RequestId>fake-1</RequestId></ErrorResponse>"
        );
        return reply(status, "text/xml", body);
    }
    let body =
        serde_json::json!({"Error": {"Code": code, "Message": message, "Type": "Sender"}, "RequestId": "fake-1"});
    reply(status, "application/json", body.to_string())
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Query pairs, percent-decoded, in order (duplicates kept).
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

/// SigV4 URI encoding (unreserved characters kept).
fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

fn amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &text[0..4],
        &text[4..6],
        &text[6..8],
        &text[9..11],
        &text[11..13],
        &text[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// Presigns `GET url` with `headers` signed: what botocore's `generate_presigned_url` does.
pub fn presign(
    url: &str,
    headers: &[(String, String)],
    credential: &FakeCredential,
    region: &str,
    at: SystemTime,
    expires: u64,
) -> String {
    let identity = Credentials::new(
        credential.access_key_id,
        credential.secret,
        credential.session_token.map(str::to_string),
        None,
        "runway-tests",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(expires));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(at)
        .settings(settings)
        .build()
        .unwrap_or_else(|e| panic!("signing params: {e}"))
        .into();
    let signable = SignableRequest::new(
        "GET",
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&[]),
    )
    .unwrap_or_else(|e| panic!("signable request {url}: {e}"));
    let (instructions, _) = sign(signable, &params).unwrap_or_else(|e| panic!("signing {url}: {e}")).into_parts();
    let mut request = Request::get(url).body(()).unwrap_or_else(|e| panic!("request {url}: {e}"));
    instructions.apply_to_request_http1x(&mut request);
    request.uri().to_string()
}

/// How to mint a token; [`Mint::cli`] is what `aws eks get-token --cluster-name AUDIENCE` makes.
#[derive(Debug, Clone)]
pub struct Mint {
    /// `https://host[:port]` of the STS the URL points to.
    pub endpoint: String,
    /// Credentials that sign.
    pub credential: FakeCredential,
    /// `x-k8s-aws-id`.
    pub audience: String,
    /// Signing time.
    pub at: SystemTime,
    /// `X-Amz-Expires`.
    pub expires: u64,
}

impl Mint {
    /// Now, 60 s, `credential` signing for `audience` against `endpoint`.
    pub fn cli(endpoint: &str, credential: FakeCredential, audience: &str) -> Mint {
        Mint {
            endpoint: endpoint.to_string(),
            credential,
            audience: audience.to_string(),
            at: SystemTime::now(),
            expires: CLI_EXPIRES,
        }
    }

    /// The presigned URL.
    pub fn url(&self) -> String {
        let url = format!("{}/?Action=GetCallerIdentity&Version=2011-06-15", self.endpoint);
        let headers = [("x-k8s-aws-id".to_string(), self.audience.clone())];
        presign(&url, &headers, &self.credential, REGION, self.at, self.expires)
    }

    /// `k8s-aws-v1.` + unpadded base64url of the presigned URL.
    pub fn token(&self) -> String {
        token_for_url(&self.url())
    }
}

/// `k8s-aws-v1.` + unpadded base64url of `url` (what the CLI does with any URL).
pub fn token_for_url(url: &str) -> String {
    format!("k8s-aws-v1.{}", URL_SAFE_NO_PAD.encode(url))
}

/// The URL inside an aws token.
pub fn url_of(token: &str) -> String {
    let body = token.strip_prefix("k8s-aws-v1.").unwrap_or_else(|| panic!("not an aws token"));
    let bytes = URL_SAFE_NO_PAD.decode(body).unwrap_or_else(|e| panic!("not base64url: {e}"));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
}

/// Seconds since the epoch of a time (for tests that move the signing time).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One `kind = "aws"` issuer pointing at the fake STS, trusting the test CA; `extra` appended verbatim.
pub fn aws_issuer_block(name: &str, audience: &str, sts: &FakeSts, pki: &Pki, extra: &str) -> String {
    let (endpoint, ca) = (sts.endpoint(), pki.ca_pem.display());
    format!(
        "\n[[issuers]]\nname = \"{name}\"\nkind = \"aws\"\naudiences = [\"{audience}\"]\n\
         sts_endpoint = \"{endpoint}\"\nsts_ca = \"{ca}\"\n{extra}\n"
    )
}
