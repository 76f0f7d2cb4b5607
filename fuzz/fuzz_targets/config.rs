//! Config loading: TOML text → [`runway::config::load`] (the `config` crate, the raw serde structs with
//! unknown keys refused, then validation); then, for a config that loads, what is computed from it alone:
//! the route table, and the replay check's arithmetic with each issuer's durations at their extremes.
//!
//! Input: the TOML file. It is written to a file named `runway.toml` in a temp directory, because loading
//! goes through a path (format by extension, relative paths resolved against the file's directory). No
//! file the config names is read: that happens when the proxy starts, not at load.

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use http::Method;
use libfuzzer_sys::fuzz_target;
use runway::auth::Identity;
use runway::config::{Config, ReplayStoreConfig};
use runway::metrics::Metrics;
use runway::replay::layer::Replay;
use runway::routing::{RouteError, RouteTable};
use serde_json::json;

struct Fixture {
    path: PathBuf,
    runtime: tokio::runtime::Runtime,
    metrics: Arc<Metrics>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("runway-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Fixture {
            path: dir.join("runway.toml"),
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"),
            metrics: Arc::new(Metrics::new().expect("metrics")),
        }
    })
}

/// Every route a config accepts can be reached: requesting its own prefix on its own host finds it.
fn routes(config: &Config) -> RouteTable {
    let table = RouteTable::new(&config.routes);
    for route in &config.routes {
        match table.find(route.host.as_deref(), &route.path_prefix, &Method::GET) {
            Ok(found) => assert_eq!(found.name, route.name, "prefix {:?} host {:?}", route.path_prefix, route.host),
            Err(RouteError::MethodNotAllowed { route: found, .. }) => assert_eq!(found.name, route.name),
            Err(e) => panic!(
                "route {:?} (host {:?}, prefix {:?}) can never match: {e}",
                route.name, route.host, route.path_prefix
            ),
        }
    }
    table
}

/// The replay check (memory store) for a token of each issuer at the latest `exp` it could be accepted
/// with: lifetime and leeway, whatever the config says, must not overflow.
fn replay(f: &Fixture, config: &Config, table: &RouteTable) {
    let Some(first) = config.routes.first() else { return };
    let Ok(route) = table.find(first.host.as_deref(), &first.path_prefix, &Method::POST) else { return };
    let store = runway::replay::store(&ReplayStoreConfig::Memory).expect("memory store");
    let replay = Replay::new(store, config, f.metrics.clone());
    for issuer in &config.issuers {
        let exp = runway::auth::unix_now() + issuer.max_token_lifetime.as_secs_f64() + issuer.leeway.as_secs_f64();
        let identity = Identity {
            issuer: issuer.name.clone(),
            kind: issuer.kind,
            subject: "fuzz".into(),
            claims: json!({"jti": "fuzz", "exp": exp}),
            headers: vec![],
            token_sha256: "0123456789abcdef".into(),
        };
        let first_use = f.runtime.block_on(replay.check(&route, &identity));
        assert!(first_use.is_ok(), "first use of a jti: {first_use:?}");
        let second_use = f.runtime.block_on(replay.check(&route, &identity));
        assert!(second_use.is_err(), "a jti passes once, for issuer {:?}", issuer.name);
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    std::fs::write(&f.path, data).expect("writing the config file");
    let Ok(config) = runway::config::load(&f.path) else { return };
    let table = routes(&config);
    replay(f, &config, &table);
});
