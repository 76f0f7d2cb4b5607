//! The shared store: one Redis for every replica. A use is recorded with one atomic command,
//! `SET runway:replay:<sha256> 1 NX PX <ms until the token expires>`: `OK` is the first use, nil a replay.
//!
//! **Reaching Redis** ([`client`], contract section 13): `redis://` or `rediss://` (TLS over rustls with the
//! aws-lc-rs provider, the only one in the build), `[user[:password]@]`, or a password read from
//! `redis_password_file` (no user = Redis' `default` user). With `redis_ca` the server's certificate must chain to
//! one of its CAs, which replace the system roots (a private CA pinned, as managed Redis services hand out);
//! without it, the system roots. The host name of the URL is what the certificate must name.
//!
//! **The connection**: one multiplexed connection per Runway process, made on first use (so `runway check`
//! contacts nothing) and made again, with a fresh [`client`], after any error on it: the password file and the CA
//! bundle are read again at each connection, so a rotated password or CA counts from the next connection, a
//! failover endpoint's name is resolved again, and a password that was wrong at one attempt can be right at the
//! next (redis' `ConnectionManager` never retries after an authentication failure). A check that finds its
//! connection closed by Redis (an idle timeout, a failover) is sent once more on a new one. After a failed attempt,
//! requests fail at once for [`RECONNECT_PAUSE`] instead of asking a Redis that refuses them again and again.
//! Every check is bounded by [`COMMAND_TIMEOUT`]: when Redis is slow, gone, untrusted or refuses the password,
//! a `one_time` request fails fast with 503 (fail closed) and a later one tries again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, TlsCertificates};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::Mutex;

use super::{ReplayKey, ReplayStore, StoreError, StoreFuture, Use, unix_ms};
use crate::config::RedisConfig;

/// Longest wait for one replay check, connecting included.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);
/// After a failed connection attempt, how long requests fail at once before the next attempt.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// Longest wait for a connection to Redis: TCP, the TLS handshake and `AUTH`.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for Redis to answer a command on an open connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Key prefix, so the keys are recognisable in a Redis shared with other applications.
const KEY_PREFIX: &str = "runway:replay:";

/// Why [`client`] could not make a client: a `[replay]` setting or a file it names. Names the config key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// `redis_ca` or `redis_password_file` cannot be read, or holds nothing usable.
    #[error("{key}: {}: {message}", .path.display())]
    File {
        /// Config key, e.g. `replay.redis_ca`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The redis crate refused the URL (never echoed: it may hold a password) or the TLS settings.
    #[error("{key}: {error}")]
    Redis {
        /// Config key.
        key: &'static str,
        /// What the redis crate said.
        error: RedisError,
    },
}

impl ClientError {
    /// The config key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            ClientError::File { key, .. } | ClientError::Redis { key, .. } => key,
        }
    }
}

/// For callers that deal in redis errors ([`super::store`]): the key stays first in the description.
impl From<ClientError> for RedisError {
    fn from(error: ClientError) -> RedisError {
        let key = error.key();
        let detail = match error {
            ClientError::File { path, message, .. } => format!("{}: {message}", path.display()),
            ClientError::Redis { error, .. } => error.to_string(),
        };
        RedisError::from((ErrorKind::InvalidClientConfig, key, detail))
    }
}

/// A redis client for `config`: the URL, the password from `redis_password_file` if set, and for `rediss://` the
/// CA bundle of `redis_ca` if set (else the system roots). Reads the files each time it is called (call it again
/// for each new connection to pick up a rotated password or CA) and contacts no network.
///
/// For anything else that shares the `[replay]` Redis (e.g. a pub/sub channel): the same URL, credentials and
/// trust as the replay store.
pub fn client(config: &RedisConfig) -> Result<redis::Client, ClientError> {
    let url_error = |error| ClientError::Redis { key: "replay.redis_url", error };
    let mut info = config.url.as_str().into_connection_info().map_err(url_error)?;
    if let Some(path) = &config.password_file {
        let password = read_password(path)?;
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        if let Some(path) = &config.ca {
            return Err(ClientError::File {
                key: "replay.redis_ca",
                path: path.clone(),
                message: "needs a rediss:// (TLS) redis_url".into(),
            });
        }
        return redis::Client::open(info).map_err(url_error);
    }
    // redis builds its rustls config with the process-wide provider: make sure it is aws-lc-rs, the one this build
    // uses everywhere (nothing to do when one is installed already).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root_cert = config.ca.as_deref().map(read_ca).transpose()?;
    redis::Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert })
        .map_err(|error| ClientError::Redis { key: "replay.redis_ca", error })
}

/// The password: the file's text without surrounding whitespace (a trailing newline, as `echo` writes it).
fn read_password(path: &Path) -> Result<String, ClientError> {
    let error =
        |message: String| ClientError::File { key: "replay.redis_password_file", path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| error("not UTF-8 text".into()))?;
    match text.trim() {
        "" => Err(error("empty: it must hold the password".into())),
        password => Ok(password.to_string()),
    }
}

/// The CA bundle as PEM, once checked: at least one certificate, each usable as a trust anchor.
fn read_ca(path: &Path) -> Result<Vec<u8>, ClientError> {
    let error = |message: String| ClientError::File { key: "replay.redis_ca", path: path.to_path_buf(), message };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(error("no CERTIFICATE block found".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| error(format!("not a usable CA certificate ({e})")))?;
    }
    Ok(pem)
}

/// See the module docs.
pub struct RedisStore {
    connection: RedisConnection,
}

/// One multiplexed connection to the `[replay]` Redis, shared by every caller of one user (the replay store, the
/// revocation store): made on first use, made anew with a fresh [`client`] after [`RedisConnection::forget`], and
/// after a failed attempt refused at once for [`RECONNECT_PAUSE`].
pub struct RedisConnection {
    config: RedisConfig,
    /// Who uses it and what an outage means, for the log (`"replay store"`, `"one_time routes answer 503"`).
    user: (&'static str, &'static str),
    slot: Mutex<Slot>,
}

/// The connection, shared by every request; held locked while connecting, so one attempt runs at a time.
#[derive(Default)]
struct Slot {
    /// The open connection, numbered so that an error drops only the connection it happened on.
    open: Option<(u64, MultiplexedConnection)>,
    /// Connections made so far.
    made: u64,
    /// When the last attempt failed, and why.
    failed: Option<(Instant, StoreError)>,
}

impl RedisConnection {
    /// For `config`, used by `user` (its name, and what it cannot do while Redis is away); contacts nothing.
    pub fn new(config: RedisConfig, user: &'static str, outage: &'static str) -> RedisConnection {
        RedisConnection { config, user: (user, outage), slot: Mutex::new(Slot::default()) }
    }

    /// The Redis settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The open connection and its number, or a new one.
    pub async fn get(&self) -> Result<(u64, MultiplexedConnection), StoreError> {
        let mut slot = self.slot.lock().await;
        if let Some((id, connection)) = &slot.open {
            return Ok((*id, connection.clone()));
        }
        if let Some((at, error)) = &slot.failed
            && at.elapsed() < RECONNECT_PAUSE
        {
            return Err(error.clone());
        }
        let (user, outage) = self.user;
        match self.connect().await {
            Ok(connection) => {
                if slot.failed.take().is_some() {
                    tracing::info!(url = %self.config.redacted_url(), "{user}: connected to Redis again");
                }
                slot.made += 1;
                slot.open = Some((slot.made, connection.clone()));
                Ok((slot.made, connection))
            }
            Err(error) => {
                // Once per cause, not once per attempt: an outage would flood the log.
                let reason = crate::error::chain(&error);
                match &slot.failed {
                    Some((_, before)) if crate::error::chain(before) == reason => {
                        tracing::debug!(error = %reason, "{user}: Redis still unreachable");
                    }
                    _ => tracing::warn!(
                        url = %self.config.redacted_url(),
                        error = %reason,
                        "{user}: cannot connect to Redis; {outage} until it can"
                    ),
                }
                slot.failed = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, StoreError> {
        // A new client each time: the password file and the CA bundle as they are now.
        let client = client(&self.config).map_err(StoreError::Client)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        client.get_multiplexed_async_connection_with_config(&config).await.map_err(StoreError::Redis)
    }

    /// Drops connection `id` after an error on it, unless another one replaced it already.
    pub async fn forget(&self, id: u64) {
        let mut slot = self.slot.lock().await;
        if slot.open.as_ref().is_some_and(|(open, _)| *open == id) {
            slot.open = None;
        }
    }
}

impl RedisStore {
    /// Checks `config` by making a client from it (so the files it names are read: `runway check` reports them);
    /// connects on first use.
    pub fn new(config: &RedisConfig) -> Result<RedisStore, ClientError> {
        client(config)?;
        let connection = RedisConnection::new(config.clone(), "replay store", "one_time routes answer 503");
        Ok(RedisStore { connection })
    }

    async fn set_nx(&self, key: &ReplayKey, until_ms: u64) -> Result<Use, StoreError> {
        match self.try_set_nx(key, until_ms).await {
            // The connection was found closed (Redis' idle timeout, a failover, a restart): once more, on a new
            // one. Never a second first use: had the first SET reached Redis, the second would answer a replay.
            Err(StoreError::Redis(error)) if error.is_connection_dropped() => self.try_set_nx(key, until_ms).await,
            other => other,
        }
    }

    async fn try_set_nx(&self, key: &ReplayKey, until_ms: u64) -> Result<Use, StoreError> {
        let (id, mut connection) = self.connection.get().await?;
        let ttl_ms = until_ms.saturating_sub(unix_ms()).max(1);
        let reply: Result<redis::Value, RedisError> = redis::cmd("SET")
            .arg(format!("{KEY_PREFIX}{}", key.hex()))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut connection)
            .await;
        match reply {
            Ok(redis::Value::Okay) => Ok(Use::First),
            Ok(redis::Value::Nil) => Ok(Use::Replayed),
            Ok(_) => Err(StoreError::UnexpectedReply),
            Err(error) => {
                // Whatever it was (a dropped connection, a timeout on a dead one, READONLY after a failover), the
                // next check starts from a new connection.
                self.connection.forget(id).await;
                Err(StoreError::Redis(error))
            }
        }
    }
}

impl ReplayStore for RedisStore {
    fn first_use<'a>(&'a self, key: &'a ReplayKey, until_ms: u64) -> StoreFuture<'a> {
        Box::pin(async move {
            tokio::time::timeout(COMMAND_TIMEOUT, self.set_nx(key, until_ms))
                .await
                .unwrap_or(Err(StoreError::Timeout(COMMAND_TIMEOUT)))
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, ca: Option<PathBuf>, password_file: Option<PathBuf>) -> RedisConfig {
        RedisConfig { url: url.to_string(), ca, password_file }
    }

    fn write(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn ca_pem() -> Vec<u8> {
        let cert = rcgen::generate_simple_self_signed(vec!["redis.internal".to_string()])
            .unwrap_or_else(|e| panic!("{e}"))
            .cert;
        cert.pem().into_bytes()
    }

    fn settings(client: &redis::Client) -> (Option<String>, Option<String>) {
        let settings = client.get_connection_info().redis_settings();
        (settings.username().map(str::to_string), settings.password().map(str::to_string))
    }

    fn file_error(result: Result<redis::Client, ClientError>) -> (&'static str, String) {
        match result {
            Err(e @ ClientError::File { .. }) => (e.key(), e.to_string()),
            Err(other) => panic!("expected a file error, got {other}"),
            Ok(_) => panic!("expected a file error, got a client"),
        }
    }

    #[test]
    fn client_takes_the_password_from_the_file_without_surrounding_whitespace() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let password = write(&dir, "password", b"\n  s3cret pw \t\n");
        let ca = write(&dir, "ca.pem", &ca_pem());
        let made = client(&config("rediss://redis.internal:6380/1", Some(ca.clone()), Some(password.clone())))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings(&made), (None, Some("s3cret pw".into())), "no user: the default user");
        assert!(matches!(made.get_connection_info().addr(), ConnectionAddr::TcpTls { insecure: false, .. }));
        let made = client(&config("rediss://runway@redis.internal:6380", Some(ca), Some(password)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings(&made), (Some("runway".into()), Some("s3cret pw".into())));
        let made = client(&config("rediss://:in-url@redis.internal", None, None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings(&made), (None, Some("in-url".into())));
        let made = client(&config("redis://redis.internal:6379/0", None, None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings(&made), (None, None));
    }

    #[test]
    fn client_names_the_password_file_when_it_is_empty_missing_or_not_text() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = "rediss://redis.internal:6380";
        for (name, contents, reason) in
            [("empty", &b""[..], "empty"), ("blank", b" \r\n\t\n", "empty"), ("binary", b"\xff\xfe", "UTF-8")]
        {
            let path = write(&dir, name, contents);
            let (key, text) = file_error(client(&config(url, None, Some(path))));
            assert_eq!(key, "replay.redis_password_file");
            assert!(text.starts_with("replay.redis_password_file: ") && text.contains(reason), "{text}");
        }
        let (key, _) = file_error(client(&config(url, None, Some(dir.path().join("missing")))));
        assert_eq!(key, "replay.redis_password_file");
    }

    #[test]
    fn client_checks_the_ca_bundle_and_refuses_it_without_tls() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = "rediss://redis.internal:6380";
        let garbage = write(&dir, "garbage.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let (key, text) = file_error(client(&config(url, Some(garbage), None)));
        assert_eq!(key, "replay.redis_ca");
        assert!(text.contains("no CERTIFICATE block found"), "{text}");
        let broken = write(&dir, "broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let (key, text) = file_error(client(&config(url, Some(broken), None)));
        assert_eq!(key, "replay.redis_ca");
        assert!(text.contains("not a usable CA certificate"), "{text}");
        let (key, _) = file_error(client(&config(url, Some(dir.path().join("missing.pem")), None)));
        assert_eq!(key, "replay.redis_ca");
        // A bundle: two CAs.
        let bundle = [ca_pem(), ca_pem()].concat();
        let bundle = write(&dir, "bundle.pem", &bundle);
        assert!(client(&config(url, Some(bundle.clone()), None)).is_ok());
        // Not over plain TCP: nothing would check the certificate.
        let (key, text) = file_error(client(&config("redis://redis.internal:6379", Some(bundle), None)));
        assert_eq!(key, "replay.redis_ca");
        assert!(text.contains("rediss://"), "{text}");
    }

    #[test]
    fn a_client_error_turned_into_a_redis_error_names_the_key_first() {
        let error = ClientError::File { key: "replay.redis_ca", path: "/etc/ca.pem".into(), message: "gone".into() };
        let redis: RedisError = error.into();
        assert!(redis.to_string().starts_with("replay.redis_ca"), "{redis}");
        assert!(redis.to_string().ends_with("/etc/ca.pem: gone"), "{redis}");
        assert_eq!(redis.kind(), ErrorKind::InvalidClientConfig);
    }

    #[test]
    fn replay_redis_config_never_shows_the_password() {
        for (url, shown) in [
            ("rediss://runway:s3cret@redis:6380/0", "rediss://runway:***@redis:6380/0"),
            ("rediss://:s3cret@redis", "rediss://:***@redis"),
            ("redis://redis:6379/0", "redis://redis:6379/0"),
            ("rediss://runway@redis:6380", "rediss://runway@redis:6380"),
            ("unix:///run/redis.sock?db=1&pass=s3cret", "unix:///run/redis.sock?db=1&pass=***"),
        ] {
            let config = RedisConfig::from(url);
            assert_eq!(config.redacted_url(), shown);
            assert!(!format!("{config:?}").contains("s3cret"), "{config:?}");
        }
        assert!(RedisConfig::from("rediss://redis").is_tls());
        assert!(RedisConfig::from("REDISS://redis").is_tls());
        assert!(!RedisConfig::from("redis://redis").is_tls());
    }

    /// `[replay]` as `runway check` loads it: each mistake names its key.
    #[test]
    fn replay_config_validation_names_the_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let load = |replay: &str| {
            let text = format!(
                "[server]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[upstream]\nurl = \"https://kong:8443\"\n\
                 [replay]\n{replay}\n"
            );
            let path = write(&dir, "runway.toml", text.as_bytes());
            crate::config::load(&path)
        };
        let loaded = load(
            "store = \"redis\"\nredis_url = \"rediss://runway@redis:6380/0\"\nredis_ca = \"ca.pem\"\nredis_password_file = \"pw\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let redis = loaded.replay.redis().unwrap_or_else(|| panic!("store = redis"));
        assert_eq!(redis.url, "rediss://runway@redis:6380/0");
        assert_eq!(redis.ca.as_deref(), Some(dir.path().join("ca.pem").as_path()), "relative to the config");
        assert_eq!(redis.password_file.as_deref(), Some(dir.path().join("pw").as_path()));
        for (replay, key, reason) in [
            ("", "replay.redis_url", "required"),
            ("redis_url = \"http://redis\"", "replay.redis_url", "must start with"),
            ("redis_url = \"rediss://redis/#insecure\"", "replay.redis_url", "#insecure"),
            ("redis_url = \"rediss://runway@redis\"", "replay.redis_url", "no password"),
            ("redis_url = \"redis://redis\"\nredis_ca = \"ca.pem\"", "replay.redis_ca", "rediss://"),
            ("redis_url = \"unix:///run/redis.sock\"\nredis_ca = \"ca.pem\"", "replay.redis_ca", "rediss://"),
            ("redis_url = \"rediss://redis\"\nredis_ca = \"\"", "replay.redis_ca", "empty path"),
            ("redis_url = \"rediss://:pw@redis\"\nredis_password_file = \"pw\"", "replay.redis_password_file", "too"),
            ("redis_url = \"rediss://u:pw@redis\"\nredis_password_file = \"pw\"", "replay.redis_password_file", "too"),
            ("redis_url = \"rediss://redis\"\nredis_password_file = \"\"", "replay.redis_password_file", "empty path"),
            ("redis_url = \"rediss://redis\"\nredis_pasword_file = \"pw\"", "replay", "unknown field"),
        ] {
            let replay = format!("store = \"redis\"\n{replay}");
            let error = load(&replay).err().unwrap_or_else(|| panic!("accepted: {replay}")).to_string();
            assert!(error.starts_with(key) && error.contains(reason), "{replay}: {error}");
            assert!(!error.contains(":pw@"), "never echoes the URL: {error}");
        }
        // The memory store ignores the Redis keys, as it ignores redis_url.
        let loaded = load("store = \"memory\"\nredis_url = \"redis://redis\"\nredis_ca = \"ca.pem\"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.replay, crate::config::ReplayStoreConfig::Memory);
    }
}
