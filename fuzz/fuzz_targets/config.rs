//! Config loading: TOML text → [`runway::config::load`] (the `config` crate, the raw serde structs with
//! unknown keys refused, then validation), and for a config that loads, the route table built from it.
//!
//! Input: the TOML file. It is written to a file named `runway.toml` in a temp directory, because loading
//! goes through a path (format by extension, relative paths resolved against the file's directory). No
//! file the config names is read: that happens when the proxy starts, not at load.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use runway::routing::{RouteError, RouteTable};

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("runway-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("runway.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = config_path();
    std::fs::write(path, data).expect("writing the config file");
    let Ok(config) = runway::config::load(path) else { return };
    let table = RouteTable::new(&config.routes);
    for route in &config.routes {
        // Every route a config accepts can be reached: requesting its own prefix on its own host finds it.
        match table.find(route.host.as_deref(), &route.path_prefix, &Method::GET) {
            Ok(found) => assert_eq!(found.name, route.name, "prefix {:?} host {:?}", route.path_prefix, route.host),
            Err(RouteError::MethodNotAllowed { route: found, .. }) => assert_eq!(found.name, route.name),
            Err(e) => panic!(
                "route {:?} (host {:?}, prefix {:?}) can never match: {e}",
                route.name, route.host, route.path_prefix
            ),
        }
    }
});
