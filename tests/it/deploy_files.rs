//! The deployment files (`deploy/`, the `Dockerfile`) checked without a cluster or a Docker daemon: every YAML
//! and JSON file parses; every Kubernetes document has `apiVersion`, `kind` and `metadata.name`; the edge and
//! sidecar manifests carry the probes, security settings and scrape annotations operators rely on; every
//! Runway config under `deploy/` (TOML files and the `runway.toml` embedded in ConfigMaps) loads with Runway's
//! own loader, and every file such a config names is mounted where it says; the Kong, GitLab and Docker
//! files agree with it; the Prometheus Operator objects, the alert rules and their promtool unit tests agree
//! with each other and with the pods; every admin port beyond loopback has a token and a NetworkPolicy. Last,
//! the binary runs from an empty directory as a non-root user, as in the image.
//!
//! The same files are rendered and validated with the real tools (`kubectl kustomize`, kubernetes-validate,
//! check-jsonschema, promtool) by `.ci/deploy-checks.sh`.
//!
//! YAML is read with `yaml-rust2` (YAML 1.2). Kubernetes reads YAML 1.1, where `on`, `off`, `yes` and `no`
//! are booleans: [`kubernetes_documents_are_well_formed`] refuses them unquoted.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use runway::config::{Config, KeySource};
use yaml_rust2::{Yaml, YamlLoader};

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path relative to the repository root, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", shown(path)))
}

/// Every file under `dir` (recursively, dot files included) whose name ends with one of `suffixes`, sorted.
fn files_under(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", shown(&dir)));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("listing {}: {e}", shown(&dir))).path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// One parsed YAML document and the file it came from.
struct Doc {
    path: PathBuf,
    yaml: Yaml,
}

impl Doc {
    fn kind(&self) -> &str {
        self.yaml["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.yaml["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn what(&self) -> String {
        format!("{} {}/{}", shown(&self.path), self.kind(), self.name())
    }
}

/// Every non-empty document of every `*.yml` / `*.yaml` file under `deploy/`.
fn yaml_docs() -> Vec<Doc> {
    let mut docs = Vec::new();
    for path in files_under(&root().join("deploy"), &[".yml", ".yaml"]) {
        let text = read(&path);
        let parsed =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", shown(&path)));
        let before = docs.len();
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()).map(|yaml| Doc { path: path.clone(), yaml }));
        assert!(docs.len() > before, "{} holds no YAML document", shown(&path));
    }
    docs
}

/// The Kubernetes documents: everything under `deploy/kubernetes/`, and any document elsewhere with an
/// `apiVersion` or a `kind`.
fn kubernetes_docs() -> Vec<Doc> {
    let dir = root().join("deploy").join("kubernetes");
    yaml_docs()
        .into_iter()
        .filter(|d| d.path.starts_with(&dir) || !d.yaml["apiVersion"].is_badvalue() || !d.yaml["kind"].is_badvalue())
        .collect()
}

/// The Kubernetes documents of `deploy/kubernetes/<sub>/`.
fn docs_in(sub: &str) -> Vec<Doc> {
    let dir = root().join("deploy").join("kubernetes").join(sub);
    let docs: Vec<Doc> = kubernetes_docs().into_iter().filter(|d| d.path.starts_with(&dir)).collect();
    assert!(!docs.is_empty(), "no manifests in deploy/kubernetes/{sub}");
    docs
}

fn one<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs.iter().filter(|d| d.kind() == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}, found {}", found.len());
    found[0]
}

fn by_name<'a>(docs: &'a [Doc], kind: &str, name: &str) -> Option<&'a Doc> {
    docs.iter().find(|d| d.kind() == kind && d.name() == name)
}

fn list(node: &Yaml) -> &[Yaml] {
    node.as_vec().map(Vec::as_slice).unwrap_or_default()
}

fn string_list(node: &Yaml) -> Vec<&str> {
    list(node).iter().filter_map(Yaml::as_str).collect()
}

fn containers(pod_spec: &Yaml) -> &[Yaml] {
    list(&pod_spec["containers"])
}

fn container<'a>(pod_spec: &'a Yaml, name: &str) -> &'a Yaml {
    containers(pod_spec)
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container named {name}"))
}

fn env<'a>(container: &'a Yaml, name: &str) -> Option<&'a str> {
    list(&container["env"]).iter().find(|e| e["name"].as_str() == Some(name)).and_then(|e| e["value"].as_str())
}

/// A probe's or a Service's port, resolved through the container's named ports.
fn resolve_port(container: &Yaml, port: &Yaml) -> Option<i64> {
    match port {
        Yaml::Integer(p) => Some(*p),
        Yaml::String(name) => list(&container["ports"])
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64()),
        _ => None,
    }
}

/// `duration` in whole seconds for comparisons with Kubernetes' integer seconds.
fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn prestop_sleep(container: &Yaml) -> i64 {
    container["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------------
// Files mounted into a container: which file in the container comes from which ConfigMap / Secret key.
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// `key` of ConfigMap `name`.
    ConfigMap { name: String, key: String },
    /// `key` of Secret `name`.
    Secret { name: String, key: String },
}

/// The files a container sees: exact paths (items), and directories whose every key or file is provided
/// (sources without items, emptyDirs).
#[derive(Debug, Default)]
struct Mounts {
    files: BTreeMap<String, Source>,
    whole_dirs: Vec<String>,
}

impl Mounts {
    fn of(pod_spec: &Yaml, container: &Yaml) -> Mounts {
        let mut mounts = Mounts::default();
        for mount in list(&container["volumeMounts"]) {
            let name = mount["name"].as_str().unwrap_or_default();
            let at = mount["mountPath"].as_str().unwrap_or_default().trim_end_matches('/').to_string();
            let volume = list(&pod_spec["volumes"])
                .iter()
                .find(|v| v["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("volumeMount {name} has no volume"));
            let sources: Vec<&Yaml> = if volume["projected"].is_badvalue() {
                vec![volume]
            } else {
                list(&volume["projected"]["sources"]).iter().collect()
            };
            for source in sources {
                let (node, is_secret) = if !source["configMap"].is_badvalue() {
                    (&source["configMap"], false)
                } else if !source["secret"].is_badvalue() {
                    (&source["secret"], true)
                } else {
                    mounts.whole_dirs.push(at.clone());
                    continue;
                };
                let object = node["name"].as_str().or(node["secretName"].as_str()).unwrap_or_default().to_string();
                let items = list(&node["items"]);
                if items.is_empty() {
                    mounts.whole_dirs.push(at.clone());
                }
                for item in items {
                    let key = item["key"].as_str().unwrap_or_default().to_string();
                    let path = format!("{at}/{}", item["path"].as_str().unwrap_or_default());
                    let source = if is_secret {
                        Source::Secret { name: object.clone(), key }
                    } else {
                        Source::ConfigMap { name: object.clone(), key }
                    };
                    assert!(mounts.files.insert(path.clone(), source).is_none(), "{path} is mounted twice");
                }
            }
        }
        mounts
    }

    /// Where `path` comes from (`None`: a whole-directory mount provides it); panics when nothing does.
    fn source(&self, path: &Path, what: &str) -> Option<&Source> {
        let text = path.to_string_lossy();
        if let Some(source) = self.files.get(text.as_ref()) {
            return Some(source);
        }
        let in_whole_dir = self.whole_dirs.iter().any(|d| path.parent() == Some(Path::new(d)));
        assert!(in_whole_dir, "{what}: {text} is not mounted (mounted files: {:?})", self.files.keys());
        None
    }
}

/// Runway's config as a container of `pod_spec` sees it: the `-c` argument, the ConfigMap key mounted
/// there, loaded with Runway's loader. Also returns the container's mounts.
fn runway_config_of(docs: &[Doc], pod_spec: &Yaml, container: &Yaml) -> (Config, Mounts) {
    let args = string_list(&container["args"]);
    let at = args.iter().position(|a| *a == "-c" || *a == "--config").map(|i| i + 1);
    let path = at.and_then(|i| args.get(i)).unwrap_or_else(|| panic!("runway container has no `-c FILE` in args"));
    let mounts = Mounts::of(pod_spec, container);
    let Some(Source::ConfigMap { name, key }) = mounts.source(Path::new(path), "runway config") else {
        panic!("{path} does not come from a ConfigMap item");
    };
    let map = by_name(docs, "ConfigMap", name).unwrap_or_else(|| panic!("no ConfigMap {name} beside the Deployment"));
    let text = map.yaml["data"][key.as_str()].as_str().unwrap_or_else(|| panic!("ConfigMap {name} has no key {key}"));
    (load_config(text, &map.what()), mounts)
}

/// Loads a Runway config from text with `runway::config::load` (written to a temp dir as runway.toml).
fn load_config(text: &str, what: &str) -> Config {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let path = dir.path().join("runway.toml");
    fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    runway::config::load(&path).unwrap_or_else(|e| panic!("{what}: runway::config::load refused it: {e}"))
}

/// Every file a config names.
fn files_named_by(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let mut out =
        vec![("server.tls_cert", config.server.tls_cert.clone()), ("server.tls_key", config.server.tls_key.clone())];
    if let Some(ca) = &config.upstream.ca {
        out.push(("upstream.ca", ca.clone()));
    }
    if let Some((cert, key)) = &config.upstream.client_identity {
        out.push(("upstream.client_cert", cert.clone()));
        out.push(("upstream.client_key", key.clone()));
    }
    for issuer in &config.issuers {
        if let KeySource::File(path) = &issuer.keys {
            out.push(("issuers[].jwks_file", path.clone()));
        }
    }
    if let Some(assertion) = &config.assertion {
        out.push(("assertion.key", assertion.key.clone()));
    }
    if let Some(token) = &config.admin.token_file {
        out.push(("admin.token_file", token.clone()));
    }
    if let Some(redis) = config.replay.redis() {
        out.extend(redis.ca.clone().map(|ca| ("replay.redis_ca", ca)));
        out.extend(redis.password_file.clone().map(|file| ("replay.redis_password_file", file)));
    }
    out
}

/// Secrets an operator makes by hand (not issued by cert-manager), with their keys; each is documented in
/// deploy/kubernetes/README.md with the command that makes it.
const HAND_MADE_SECRETS: &[(&str, &[&str])] =
    &[("runway-assertion-key", &["key.pem"]), ("runway-admin-token", &["token"])];

// ---------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------

#[test]
fn every_yaml_and_json_file_parses() {
    let docs = yaml_docs();
    for expected in [
        "deploy/prometheus/runway-alerts.yml",
        "deploy/kubernetes/edge/deployment.yaml",
        "deploy/kubernetes/sidecar/deployment.yaml",
        "deploy/kong/kong.yml",
        "deploy/gitlab/.gitlab-ci.yml",
        "deploy/prometheus/prometheusrule.yaml",
        "deploy/prometheus/podmonitor.yaml",
        "deploy/kubernetes/sidecar/networkpolicy.yaml",
    ] {
        assert!(docs.iter().any(|d| d.path == root().join(expected)), "{expected} was not found or not parsed");
    }
    let json = files_under(&root().join("deploy"), &[".json"]);
    assert!(!json.is_empty(), "no JSON file under deploy/");
    for path in json {
        serde_json::from_str::<serde_json::Value>(&read(&path))
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", shown(&path)));
    }
}

#[test]
fn kubernetes_documents_are_well_formed() {
    let docs = kubernetes_docs();
    assert!(docs.len() >= 10, "only {} Kubernetes documents found", docs.len());
    for doc in &docs {
        let at = shown(&doc.path);
        assert!(doc.yaml["apiVersion"].as_str().is_some_and(|v| !v.is_empty()), "{at}: a document has no apiVersion");
        assert!(!doc.kind().is_empty(), "{at}: a document has no kind");
        assert!(!doc.name().is_empty(), "{at}: a {} has no metadata.name", doc.kind());
        assert!(doc.yaml["metadata"]["namespace"].is_badvalue(), "{}: manifests are namespace-agnostic", doc.what());
        // Label and annotation values must be strings: Kubernetes refuses `prometheus.io/scrape: true`.
        let template = &doc.yaml["spec"]["template"]["metadata"];
        for meta in [&doc.yaml["metadata"], template] {
            for field in ["labels", "annotations"] {
                for (k, v) in meta[field].as_hash().into_iter().flatten() {
                    assert!(v.as_str().is_some(), "{}: {field} {k:?} has a non-string value {v:?}", doc.what());
                }
            }
        }
        // Environment values must be strings too (`value: 2` is refused).
        let pod = &doc.yaml["spec"]["template"]["spec"];
        for c in containers(pod) {
            for e in list(&c["env"]) {
                assert!(e["value"].as_str().is_some(), "{}: env {:?} is not a string", doc.what(), e["name"]);
            }
        }
    }
    // YAML 1.1 booleans as plain scalars: a string to yaml-rust2, a boolean to Kubernetes.
    for path in files_under(&root().join("deploy").join("kubernetes"), &[".yml", ".yaml"]) {
        for (n, line) in read(&path).lines().enumerate() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            let code = line.split(" #").next().unwrap_or_default().trim_end();
            if let Some((_, value)) = code.split_once(": ") {
                let value = value.trim();
                assert!(
                    !["on", "off", "yes", "no", "y", "n", "On", "Off", "Yes", "No", "ON", "OFF"].contains(&value),
                    "{}:{}: `{value}` unquoted is a boolean to Kubernetes (YAML 1.1): quote it",
                    shown(&path),
                    n + 1
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Edge deployment
// ---------------------------------------------------------------------------------------------------------

#[test]
fn edge_deployment_probes_security_and_scraping() {
    let docs = docs_in("edge");
    let deployment = one(&docs, "Deployment");
    let what = deployment.what();
    let spec = &deployment.yaml["spec"];
    assert!(spec["replicas"].as_i64().is_some_and(|r| r >= 3), "{what}: at least 3 replicas");
    let pod = &spec["template"]["spec"];
    let runway = container(pod, "runway");

    // Probes on the admin port, which must then listen beyond loopback.
    let live = &runway["livenessProbe"]["httpGet"];
    let ready = &runway["readinessProbe"]["httpGet"];
    assert_eq!(live["path"].as_str(), Some("/healthz"), "{what}: liveness probe path");
    assert_eq!(ready["path"].as_str(), Some("/readyz"), "{what}: readiness probe path");
    assert_eq!(resolve_port(runway, &live["port"]), Some(9901), "{what}: liveness probe port");
    assert_eq!(resolve_port(runway, &ready["port"]), Some(9901), "{what}: readiness probe port");
    assert_eq!(env(runway, "RUNWAY__ADMIN__LISTEN"), Some("0.0.0.0:9901"), "{what}: admin listener for the probes");

    // Non-root, read-only, no capabilities.
    let pod_ctx = &pod["securityContext"];
    let ctx = &runway["securityContext"];
    assert!(
        pod_ctx["runAsNonRoot"].as_bool() == Some(true) || ctx["runAsNonRoot"].as_bool() == Some(true),
        "{what}: runAsNonRoot"
    );
    let uid = ctx["runAsUser"].as_i64().or(pod_ctx["runAsUser"].as_i64());
    assert!(uid.is_none_or(|u| u != 0), "{what}: runAsUser 0");
    assert_eq!(ctx["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}: readOnlyRootFilesystem");
    assert_eq!(ctx["allowPrivilegeEscalation"].as_bool(), Some(false), "{what}: allowPrivilegeEscalation");
    assert_eq!(string_list(&ctx["capabilities"]["drop"]), ["ALL"], "{what}: capabilities.drop");
    assert!(!runway["resources"]["requests"]["cpu"].is_badvalue(), "{what}: a CPU request (the HPA needs it)");
    assert!(!runway["resources"]["limits"]["memory"].is_badvalue(), "{what}: a memory limit");

    // Scraped on the admin port.
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"), "{what}: prometheus.io/scrape");
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("9901"), "{what}: prometheus.io/port");
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"), "{what}: prometheus.io/path");

    // The config: loads, listens where the container port says, drains within the grace period.
    let (config, _) = runway_config_of(&docs, pod, runway);
    let https = list(&runway["ports"]).iter().find(|p| p["name"].as_str() == Some("https"));
    assert_eq!(
        https.and_then(|p| p["containerPort"].as_i64()),
        Some(i64::from(config.server.listen.port())),
        "{what}: the https containerPort is [server] listen's port"
    );
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    let needed = prestop_sleep(runway) + secs(config.server.shutdown_grace);
    assert!(grace > needed, "{what}: terminationGracePeriodSeconds {grace} <= preStop + shutdown_grace ({needed})");
}

#[test]
fn edge_has_service_autoscaler_disruption_budget_and_network_policies() {
    let docs = docs_in("edge");
    let deployment = one(&docs, "Deployment");
    let pod_labels = &deployment.yaml["spec"]["template"]["metadata"]["labels"];
    let selects_pods = |selector: &Yaml| {
        let selector = selector.as_hash().unwrap_or_else(|| panic!("an empty or missing selector"));
        !selector.is_empty() && selector.iter().all(|(k, v)| &pod_labels[k.as_str().unwrap_or_default()] == v)
    };

    let service = one(&docs, "Service");
    assert!(selects_pods(&service.yaml["spec"]["selector"]), "{}: selector does not match the pods", service.what());
    let runway = container(&deployment.yaml["spec"]["template"]["spec"], "runway");
    for port in list(&service.yaml["spec"]["ports"]) {
        let target = resolve_port(runway, &port["targetPort"]);
        assert_eq!(target, Some(8443), "{}: only the TLS listener is exposed", service.what());
    }

    let hpa = one(&docs, "HorizontalPodAutoscaler");
    assert_eq!(hpa.yaml["apiVersion"].as_str(), Some("autoscaling/v2"), "{}", hpa.what());
    let target = &hpa.yaml["spec"]["scaleTargetRef"];
    assert_eq!((target["kind"].as_str(), target["name"].as_str()), (Some("Deployment"), Some(deployment.name())));
    let cpu = list(&hpa.yaml["spec"]["metrics"]).iter().any(|m| m["resource"]["name"].as_str() == Some("cpu"));
    assert!(cpu, "{}: scales on CPU", hpa.what());
    assert!(hpa.yaml["spec"]["minReplicas"].as_i64().is_some_and(|n| n >= 2), "{}: minReplicas >= 2", hpa.what());

    let pdb = one(&docs, "PodDisruptionBudget");
    assert!(selects_pods(&pdb.yaml["spec"]["selector"]["matchLabels"]), "{}: selector", pdb.what());
    let spec = &pdb.yaml["spec"];
    let bounded = spec["maxUnavailable"].as_i64() == Some(1) || spec["minAvailable"].as_i64().is_some_and(|n| n >= 2);
    assert!(bounded, "{}: maxUnavailable 1 or minAvailable >= 2", pdb.what());

    // Only Runway pods may reach Kong's proxy port.
    let kong = docs
        .iter()
        .filter(|d| d.kind() == "NetworkPolicy")
        .find(|d| d.yaml["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str() == Some("kong"))
        .unwrap_or_else(|| panic!("no NetworkPolicy selecting Kong's pods"));
    let rules = list(&kong.yaml["spec"]["ingress"]);
    let proxy_rules: Vec<&Yaml> =
        rules.iter().filter(|r| list(&r["ports"]).iter().any(|p| p["port"].as_i64() == Some(8443))).collect();
    assert!(!proxy_rules.is_empty(), "{}: no rule for Kong's proxy port", kong.what());
    for rule in proxy_rules {
        let peers = list(&rule["from"]);
        assert!(!peers.is_empty(), "{}: the proxy port is open to everyone", kong.what());
        for peer in peers {
            let name = &peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"];
            assert_eq!(name.as_str(), Some("runway"), "{}: a proxy-port peer that is not Runway", kong.what());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Sidecar deployment
// ---------------------------------------------------------------------------------------------------------

#[test]
fn sidecar_pod_runs_runway_in_front_of_a_loopback_kong() {
    let docs = docs_in("sidecar");
    let deployment = one(&docs, "Deployment");
    let what = deployment.what();
    let pod = &deployment.yaml["spec"]["template"]["spec"];
    assert_eq!(containers(pod).len(), 2, "{what}: Runway and Kong, two containers");
    let runway = container(pod, "runway");
    let kong = container(pod, "kong");

    // Kong: loopback, TLS only, client certificates required.
    let listen = env(kong, "KONG_PROXY_LISTEN").unwrap_or_else(|| panic!("{what}: no KONG_PROXY_LISTEN"));
    for listener in listen.split(',') {
        assert!(listener.trim().starts_with("127.0.0.1:"), "{what}: Kong proxy listener {listener} is not loopback");
        assert!(listener.split_whitespace().any(|w| w == "ssl"), "{what}: Kong proxy listener {listener} is not TLS");
    }
    assert_eq!(env(kong, "KONG_NGINX_PROXY_SSL_VERIFY_CLIENT"), Some("on"), "{what}: Kong verifies clients");

    // Runway: its config loads, its upstream is Kong's listener, its files are mounted.
    let (config, runway_mounts) = runway_config_of(&docs, pod, runway);
    let kong_addr = listen.split_whitespace().next().unwrap_or_default();
    assert_eq!(config.upstream.url.to_string().trim_end_matches('/'), format!("https://{kong_addr}"), "{what}");
    assert_ne!(i64::from(config.server.listen.port()), 8443, "{what}: Runway's listener collides with Kong's");
    for (key, path) in files_named_by(&config) {
        runway_mounts.source(&path, &format!("{what} runway {key}"));
    }
    assert_eq!(
        resolve_port(runway, &Yaml::String("https".into())),
        Some(i64::from(config.server.listen.port())),
        "{what}: the https containerPort is [server] listen's port"
    );

    // Every file Kong's environment names is mounted.
    let kong_mounts = Mounts::of(pod, kong);
    let kong_file = |var: &str| {
        let path = env(kong, var).unwrap_or_else(|| panic!("{what}: no {var}"));
        kong_mounts.source(Path::new(path), &format!("{what} kong {var}")).cloned()
    };
    for e in list(&kong["env"]) {
        if let (Some(name), Some(value)) = (e["name"].as_str(), e["value"].as_str())
            && value.starts_with("/etc/")
        {
            kong_file(name);
        }
    }

    // The mTLS wiring: Kong trusts the CA of the Secret holding Runway's client certificate; Runway trusts
    // the CA of the Secret holding Kong's certificate and expects the name that certificate is issued for.
    let secret_of = |source: Option<Source>| match source {
        Some(Source::Secret { name, key }) => (name, key),
        other => panic!("{what}: expected a Secret item, found {other:?}"),
    };
    let (client_cert, _) = secret_of(
        config
            .upstream
            .client_identity
            .as_ref()
            .and_then(|(cert, _)| runway_mounts.source(cert, "client_cert").cloned()),
    );
    assert_eq!(
        secret_of(kong_file("KONG_NGINX_PROXY_SSL_CLIENT_CERTIFICATE")),
        (client_cert, "ca.crt".to_string()),
        "{what}: Kong's client CA is not the CA of Runway's client certificate"
    );
    let (kong_cert, _) = secret_of(kong_file("KONG_SSL_CERT"));
    let runway_ca = config.upstream.ca.as_ref().and_then(|ca| runway_mounts.source(ca, "upstream.ca").cloned());
    assert_eq!(
        secret_of(runway_ca),
        (kong_cert.clone(), "ca.crt".to_string()),
        "{what}: Runway's upstream CA is not the CA of Kong's certificate"
    );
    let certificate = docs
        .iter()
        .find(|d| d.kind() == "Certificate" && d.yaml["spec"]["secretName"].as_str() == Some(kong_cert.as_str()))
        .unwrap_or_else(|| panic!("no Certificate issues Secret {kong_cert}"));
    let names = string_list(&certificate.yaml["spec"]["dnsNames"]);
    assert!(
        names.contains(&config.upstream.server_name.as_str()),
        "{what}: [upstream] server_name {} is not in {}'s dnsNames {names:?}",
        config.upstream.server_name,
        certificate.what()
    );

    // Shutdown order: Kong outlives Runway's drain; the pod's grace period covers both.
    let runway_done = prestop_sleep(runway) + secs(config.server.shutdown_grace);
    assert!(prestop_sleep(kong) > runway_done, "{what}: Kong stops before Runway has drained");
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    assert!(grace > prestop_sleep(kong) && grace > runway_done, "{what}: terminationGracePeriodSeconds {grace}");
}

#[test]
fn sidecar_network_policy_fences_the_admin_port_and_kong_has_pinned_workers() {
    let docs = docs_in("sidecar");
    let deployment = one(&docs, "Deployment");
    let pod_labels = &deployment.yaml["spec"]["template"]["metadata"]["labels"];
    let pod = &deployment.yaml["spec"]["template"]["spec"];
    let runway = container(pod, "runway");
    let policy = one(&docs, "NetworkPolicy");
    let what = policy.what();
    let selector = policy.yaml["spec"]["podSelector"]["matchLabels"].as_hash().unwrap_or_else(|| panic!("{what}"));
    assert!(
        !selector.is_empty() && selector.iter().all(|(k, v)| &pod_labels[k.as_str().unwrap_or_default()] == v),
        "{what}: podSelector does not select the sidecar pods"
    );
    assert_eq!(string_list(&policy.yaml["spec"]["policyTypes"]), ["Ingress"], "{what}: policyTypes");
    let rules = list(&policy.yaml["spec"]["ingress"]);
    let ports_of =
        |rule: &Yaml| -> Vec<i64> { list(&rule["ports"]).iter().filter_map(|p| p["port"].as_i64()).collect() };
    let https = resolve_port(runway, &Yaml::String("https".into())).unwrap_or_else(|| panic!("no https port"));
    let admin = resolve_port(runway, &Yaml::String("admin".into())).unwrap_or_else(|| panic!("no admin port"));
    assert!(rules.iter().any(|r| ports_of(r).contains(&https)), "{what}: no rule for Runway's TLS port {https}");
    // Every rule reaching the admin port names its peers: the monitoring namespace AND Prometheus' pods.
    let admin_rules: Vec<&Yaml> =
        rules.iter().filter(|r| ports_of(r).contains(&admin) || list(&r["ports"]).is_empty()).collect();
    assert!(!admin_rules.is_empty(), "{what}: no rule admits the admin port {admin}: the probes' scraper is cut off");
    for rule in admin_rules {
        let peers = list(&rule["from"]);
        assert!(!peers.is_empty(), "{what}: the admin port {admin} is open to everyone");
        for peer in peers {
            assert!(!peer["namespaceSelector"]["matchLabels"].is_badvalue(), "{what}: an admin peer without namespace");
            assert!(!peer["podSelector"]["matchLabels"].is_badvalue(), "{what}: an admin peer without pod selector");
        }
    }
    // The admin listener is beyond loopback here: the config must carry a token (contract section 6).
    assert_eq!(env(runway, "RUNWAY__ADMIN__LISTEN"), Some("0.0.0.0:9901"), "{}", deployment.what());
    let (config, _) = runway_config_of(&docs, pod, runway);
    assert_eq!(i64::from(config.admin.listen.port()), admin, "{}: the admin containerPort", deployment.what());

    // Kong's nginx workers: `auto` is one per CPU of the node; pinned, they fit the memory limit.
    let kong = container(pod, "kong");
    let workers: i64 = env(kong, "KONG_NGINX_WORKER_PROCESSES")
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{}: KONG_NGINX_WORKER_PROCESSES must be a number", deployment.what()));
    let limit = kong["resources"]["limits"]["memory"].as_str().unwrap_or_default();
    let limit_mib: i64 = match limit.strip_suffix("Gi") {
        Some(gi) => gi.parse::<i64>().map(|g| g * 1024).unwrap_or(0),
        None => limit.strip_suffix("Mi").and_then(|m| m.parse().ok()).unwrap_or(0),
    };
    assert!(
        workers >= 1 && workers * 256 <= limit_mib,
        "{}: {workers} Kong workers do not fit the {limit} memory limit (budget 256Mi each)",
        deployment.what()
    );
}

#[test]
fn every_admin_listener_beyond_loopback_requires_a_token() {
    for sub in ["edge", "sidecar"] {
        let docs = docs_in(sub);
        for deployment in docs.iter().filter(|d| d.kind() == "Deployment") {
            let pod = &deployment.yaml["spec"]["template"]["spec"];
            let runway = container(pod, "runway");
            let (config, mounts) = runway_config_of(&docs, pod, runway);
            let listen = env(runway, "RUNWAY__ADMIN__LISTEN").map(str::to_string);
            let ip = listen
                .as_deref()
                .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
                .map_or(config.admin.listen.ip(), |a| a.ip());
            if ip.is_loopback() {
                continue;
            }
            let token = config.admin.token_file.as_ref().unwrap_or_else(|| {
                panic!("{}: the admin listener is on {ip}, so [admin] token_file is required", deployment.what())
            });
            let source = mounts.source(token, &format!("{} admin.token_file", deployment.what()));
            assert!(
                matches!(source, Some(Source::Secret { .. })),
                "{}: admin.token_file must come from a Secret, not {source:?}",
                deployment.what()
            );
        }
    }
}

/// Every kustomization lists every manifest of its directory, so that a new file (a NetworkPolicy...) is applied;
/// the exceptions are the files documented as applied elsewhere.
#[test]
fn every_kustomization_lists_its_manifests() {
    const APPLIED_ELSEWHERE: &[&str] = &["deploy/kubernetes/edge/networkpolicy-kong.yaml"];
    let mut dirs: Vec<PathBuf> = files_under(&root().join("deploy"), &["kustomization.yaml"])
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "kustomizations found: {dirs:?}");
    for dir in dirs {
        let path = dir.join("kustomization.yaml");
        let k = &YamlLoader::load_from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", shown(&path)))[0];
        let listed = string_list(&k["resources"]);
        let mut present: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", shown(&dir)))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
            // Kubernetes objects only (runway-alerts.yml beside the PrometheusRule is a plain rule file).
            .filter(|p| {
                YamlLoader::load_from_str(&read(p)).is_ok_and(|d| d.iter().any(|d| !d["apiVersion"].is_badvalue()))
            })
            .filter(|p| !APPLIED_ELSEWHERE.contains(&shown(p).as_str()))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect();
        present.sort();
        let mut listed_sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
        listed_sorted.sort();
        assert_eq!(listed_sorted, present, "{}: resources vs the manifests beside it", shown(&path));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Prometheus: rules, their unit tests, the Operator objects
// ---------------------------------------------------------------------------------------------------------

fn yaml_file(relative: &str) -> Yaml {
    let path = root().join(relative);
    let mut docs = YamlLoader::load_from_str(&read(&path)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    assert_eq!(docs.len(), 1, "{relative}: one document");
    docs.remove(0)
}

/// `(name, expr)` of every alert of deploy/prometheus/runway-alerts.yml.
fn alerts() -> Vec<(String, String)> {
    let rules = yaml_file("deploy/prometheus/runway-alerts.yml");
    let out: Vec<(String, String)> = list(&rules["groups"])
        .iter()
        .flat_map(|g| list(&g["rules"]))
        .filter_map(|r| Some((r["alert"].as_str()?.to_string(), r["expr"].as_str()?.to_string())))
        .collect();
    assert!(out.len() >= 8, "only {} alerts", out.len());
    out
}

#[test]
fn the_prometheus_rule_carries_the_rule_files_groups() {
    let plain = yaml_file("deploy/prometheus/runway-alerts.yml");
    let operator = yaml_file("deploy/prometheus/prometheusrule.yaml");
    assert_eq!(operator["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(operator["kind"].as_str(), Some("PrometheusRule"));
    assert!(!plain["groups"].is_badvalue() && !list(&plain["groups"]).is_empty(), "runway-alerts.yml: no groups");
    assert!(
        operator["spec"]["groups"] == plain["groups"],
        "deploy/prometheus/prometheusrule.yaml's spec.groups differ from runway-alerts.yml's groups: \
         run `python3 .ci/deploy_checks.py prometheusrule --write`"
    );
}

#[test]
fn no_alert_depends_on_the_scrape_jobs_name() {
    for (name, expr) in alerts() {
        let squashed: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        for matcher in ["job=", "job!=", "job=~", "job!~"] {
            assert!(!squashed.contains(matcher), "{name}: selects a scrape job ({matcher}): {expr}");
        }
        // `up` covers every target of a job, Runway's or not (kubernetes-pods).
        let reads_up = squashed.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w == "up");
        assert!(!reads_up, "{name}: reads `up`, which does not tell Runway's targets from others: {expr}");
    }
}

#[test]
fn every_alert_has_promtool_tests_firing_and_quiet_under_kubernetes_pods() {
    let mut firing: BTreeMap<String, usize> = BTreeMap::new();
    let mut quiet: BTreeMap<String, usize> = BTreeMap::new();
    let mut under_kubernetes_pods: BTreeMap<String, usize> = BTreeMap::new();
    let files = files_under(&root().join("deploy/prometheus/tests"), &[".yml", ".yaml"]);
    assert!(!files.is_empty(), "no promtool tests under deploy/prometheus/tests");
    for path in files {
        let text = read(&path);
        let doc = &YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", shown(&path)))[0];
        assert_eq!(string_list(&doc["rule_files"]), ["../runway-alerts.yml"], "{}: rule_files", shown(&path));
        for test in list(&doc["tests"]) {
            let series: Vec<&str> = list(&test["input_series"]).iter().filter_map(|s| s["series"].as_str()).collect();
            let k8s = series.iter().any(|s| s.contains(r#"job="kubernetes-pods""#));
            for case in list(&test["alert_rule_test"]) {
                let name = case["alertname"].as_str().unwrap_or_default().to_string();
                let expected = list(&case["exp_alerts"]);
                // promtool compares annotations too: an expected alert without them could never pass.
                for alert in expected {
                    assert!(!alert["exp_annotations"].is_badvalue(), "{}: {name}: exp_annotations", shown(&path));
                }
                *if expected.is_empty() { quiet.entry(name.clone()) } else { firing.entry(name.clone()) }
                    .or_default() += 1;
                if k8s {
                    *under_kubernetes_pods.entry(name).or_default() += 1;
                }
            }
        }
    }
    for (name, _) in alerts() {
        assert!(firing.contains_key(&name), "{name}: no promtool case where it fires");
        assert!(quiet.contains_key(&name), "{name}: no promtool case where it stays quiet");
        assert!(under_kubernetes_pods.contains_key(&name), "{name}: no promtool case with job=\"kubernetes-pods\"");
    }
}

#[test]
fn the_pod_monitor_scrapes_both_layouts_admin_port() {
    let monitor = yaml_file("deploy/prometheus/podmonitor.yaml");
    assert_eq!(monitor["kind"].as_str(), Some("PodMonitor"));
    let endpoints = list(&monitor["spec"]["podMetricsEndpoints"]);
    assert_eq!(endpoints.len(), 1, "podmonitor.yaml: one endpoint");
    let port = endpoints[0]["port"].as_str().unwrap_or_default();
    assert_eq!(endpoints[0]["path"].as_str(), Some("/metrics"), "podmonitor.yaml: path");
    let selector = &monitor["spec"]["selector"];
    let selects = |labels: &Yaml| -> bool {
        let by_labels = selector["matchLabels"]
            .as_hash()
            .into_iter()
            .flatten()
            .all(|(k, v)| &labels[k.as_str().unwrap_or_default()] == v);
        let by_expressions = list(&selector["matchExpressions"]).iter().all(|e| {
            let value = labels[e["key"].as_str().unwrap_or_default()].as_str().unwrap_or_default();
            e["operator"].as_str() == Some("In") && string_list(&e["values"]).contains(&value)
        });
        by_labels && by_expressions
    };
    for sub in ["edge", "sidecar"] {
        let docs = docs_in(sub);
        let deployment = one(&docs, "Deployment");
        let template = &deployment.yaml["spec"]["template"];
        assert!(selects(&template["metadata"]["labels"]), "podmonitor.yaml does not select {}", deployment.what());
        let pod = &template["spec"];
        let (config, _) = runway_config_of(&docs, pod, container(pod, "runway"));
        // The named port is Runway's admin listener, and no other container of the pod has that name.
        let owners: Vec<&str> = containers(pod)
            .iter()
            .filter(|c| list(&c["ports"]).iter().any(|p| p["name"].as_str() == Some(port)))
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(owners, ["runway"], "{}: port {port:?}", deployment.what());
        assert_eq!(
            resolve_port(container(pod, "runway"), &Yaml::String(port.into())),
            Some(i64::from(config.admin.listen.port())),
            "{}: port {port:?} is the admin listener",
            deployment.what()
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Runway configs, mounts, Secrets
// ---------------------------------------------------------------------------------------------------------

#[test]
fn every_runway_config_under_deploy_loads() {
    let mut loaded = 0;
    for path in files_under(&root().join("deploy"), &[".toml"]) {
        load_config(&read(&path), &shown(&path));
        loaded += 1;
    }
    for doc in kubernetes_docs().iter().filter(|d| d.kind() == "ConfigMap") {
        for (key, value) in doc.yaml["data"].as_hash().into_iter().flatten() {
            let (Some(key), Some(text)) = (key.as_str(), value.as_str()) else { continue };
            if key.ends_with(".toml") {
                load_config(text, &format!("{} key {key}", doc.what()));
                loaded += 1;
            }
        }
    }
    assert!(loaded >= 3, "only {loaded} Runway configs found under deploy/");
}

#[test]
fn every_file_a_config_names_is_mounted_and_every_secret_is_issued() {
    for sub in ["edge", "sidecar"] {
        let docs = docs_in(sub);
        for deployment in docs.iter().filter(|d| d.kind() == "Deployment") {
            let pod = &deployment.yaml["spec"]["template"]["spec"];
            let runway = container(pod, "runway");
            let (config, mounts) = runway_config_of(&docs, pod, runway);
            for (key, path) in files_named_by(&config) {
                mounts.source(&path, &format!("{} {key}", deployment.what()));
            }
            // Every Secret the pod mounts is one a cert-manager Certificate here writes, with its keys.
            for volume in list(&pod["volumes"]) {
                for source in list(&volume["projected"]["sources"]) {
                    let secret = &source["secret"];
                    let Some(name) = secret["name"].as_str() else { continue };
                    if let Some((_, keys)) = HAND_MADE_SECRETS.iter().find(|(n, _)| *n == name) {
                        let readme = read(&root().join("deploy/kubernetes/README.md"));
                        assert!(
                            readme.contains(&format!("kubectl create secret generic {name}")),
                            "deploy/kubernetes/README.md does not say how to make Secret {name}"
                        );
                        for item in list(&secret["items"]) {
                            let key = item["key"].as_str().unwrap_or_default();
                            assert!(keys.contains(&key), "{}: Secret {name} has no key {key}", deployment.what());
                        }
                        continue;
                    }
                    let issued = docs
                        .iter()
                        .any(|d| d.kind() == "Certificate" && d.yaml["spec"]["secretName"].as_str() == Some(name));
                    assert!(
                        issued,
                        "{}: Secret {name} is not issued by a Certificate in deploy/kubernetes/{sub}",
                        deployment.what()
                    );
                    for item in list(&secret["items"]) {
                        let key = item["key"].as_str().unwrap_or_default();
                        assert!(
                            ["tls.crt", "tls.key", "ca.crt"].contains(&key),
                            "{}: Secret {name} has no key {key}",
                            deployment.what()
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Kong
// ---------------------------------------------------------------------------------------------------------

/// `KEY=value` lines of an env file.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{}: not KEY=value: {l}", shown(path)));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn kong_listens_on_tls_only_and_requires_runways_certificate() {
    let path = root().join("deploy/kong/kong.env");
    let vars = env_file(&path);
    let at = shown(&path);
    for (k, v) in &vars {
        assert!(k.starts_with("KONG_"), "{at}: {k} is not a Kong setting");
        assert!(!v.starts_with('"') && !v.starts_with('\''), "{at}: {k}: Docker and kubectl keep quotes literally");
    }
    let get = |k: &str| vars.get(k).map(String::as_str).unwrap_or_else(|| panic!("{at}: no {k}"));
    for listener in get("KONG_PROXY_LISTEN").split(',') {
        assert!(listener.split_whitespace().any(|w| w == "ssl"), "{at}: plain proxy listener {listener}");
    }
    assert_eq!(get("KONG_NGINX_PROXY_SSL_VERIFY_CLIENT"), "on", "{at}");
    assert!(get("KONG_NGINX_PROXY_SSL_CLIENT_CERTIFICATE").starts_with('/'), "{at}");
    assert!(get("KONG_NGINX_PROXY_SSL_VERIFY_DEPTH").parse::<u8>().is_ok(), "{at}");
    assert!(!get("KONG_TRUSTED_IPS").is_empty(), "{at}");
    assert_eq!(get("KONG_REAL_IP_HEADER"), "X-Forwarded-For", "{at}");
    assert_eq!(get("KONG_REAL_IP_RECURSIVE"), "on", "{at}");

    let kong_yml = read(&root().join("deploy/kong/kong.yml"));
    let docs = YamlLoader::load_from_str(&kong_yml).unwrap_or_else(|e| panic!("kong.yml: {e}"));
    let kong = &docs[0];
    assert_eq!(kong["_format_version"].as_str(), Some("3.0"), "kong.yml: _format_version");
    let routes: Vec<&Yaml> = list(&kong["services"]).iter().flat_map(|s| list(&s["routes"])).collect();
    let deploy = routes
        .iter()
        .find(|r| string_list(&r["paths"]).contains(&"/deploy/production"))
        .unwrap_or_else(|| panic!("kong.yml: no route for /deploy/production"));
    assert_eq!(deploy["strip_path"].as_bool(), Some(false), "kong.yml: the deploy route keeps its path");
    assert!(string_list(&deploy["hosts"]).contains(&"deploy.example.com"), "kong.yml: the deploy route's host");

    // The sidecar's copy is the same file.
    let sidecar = docs_in("sidecar");
    let embedded = sidecar
        .iter()
        .filter(|d| d.kind() == "ConfigMap")
        .find_map(|d| d.yaml["data"]["kong.yml"].as_str())
        .unwrap_or_else(|| panic!("no sidecar ConfigMap with kong.yml"));
    assert_eq!(embedded, kong_yml, "deploy/kubernetes/sidecar/configmap-kong.yaml differs from deploy/kong/kong.yml");
}

/// The P-256 point of a `PUBLIC KEY` PEM (SubjectPublicKeyInfo with an uncompressed point), if it is one.
fn p256_public_key(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body = pem.split("-----BEGIN PUBLIC KEY-----").nth(1)?.split("-----END PUBLIC KEY-----").next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    der.strip_prefix(&PREFIX[..]).filter(|p| p.len() == 65 && p[0] == 4).map(<[u8]>::to_vec)
}

/// Every Runway config of the Kubernetes deployments (edge and sidecar), with where it came from.
fn deployment_configs() -> Vec<(String, Config)> {
    let mut out = Vec::new();
    for sub in ["edge", "sidecar"] {
        let docs = docs_in(sub);
        for deployment in docs.iter().filter(|d| d.kind() == "Deployment") {
            let pod = &deployment.yaml["spec"]["template"]["spec"];
            let (config, _) = runway_config_of(&docs, pod, container(pod, "runway"));
            out.push((deployment.what(), config));
        }
    }
    out
}

#[test]
fn kong_verifies_runways_identity_assertion() {
    let kong_yml = read(&root().join("deploy/kong/kong.yml"));
    let docs = YamlLoader::load_from_str(&kong_yml).unwrap_or_else(|e| panic!("kong.yml: {e}"));
    let kong = &docs[0];
    let configs = deployment_configs();
    assert!(configs.len() >= 2);

    // The consumer's credential: found by the assertion's iss, ES256, a P-256 public key.
    let secrets: Vec<&Yaml> = list(&kong["consumers"]).iter().flat_map(|c| list(&c["jwt_secrets"])).collect();
    for (what, config) in &configs {
        let a = config.assertion.as_ref().unwrap_or_else(|| panic!("{what}: Kong's jwt plugin needs [assertion]"));
        let secret = secrets
            .iter()
            .find(|s| s["key"].as_str() == Some(a.issuer.as_str()))
            .unwrap_or_else(|| panic!("kong.yml: no jwt_secrets entry with key = {:?} ({what})", a.issuer));
        assert_eq!(secret["algorithm"].as_str(), Some("ES256"), "kong.yml: the credential's algorithm");
        let pem = secret["rsa_public_key"].as_str().unwrap_or_default();
        assert!(p256_public_key(pem).is_some(), "kong.yml: rsa_public_key is not a P-256 PUBLIC KEY PEM");
        assert_eq!(a.header.as_str(), "authorization", "{what}: Kong reads the assertion from Authorization");
    }

    // The jwt plugin on every service with a route that requires Runway's identity; none on the others.
    let ttl = configs.iter().filter_map(|(_, c)| c.assertion.as_ref()).map(|a| a.ttl.as_secs()).max().unwrap_or(0);
    for service in list(&kong["services"]) {
        let name = service["name"].as_str().unwrap_or_default();
        let needs_identity = list(&service["routes"]).iter().any(|r| !r["headers"]["x-runway-issuer"].is_badvalue());
        let jwt = list(&service["plugins"]).iter().find(|p| p["name"].as_str() == Some("jwt"));
        let Some(jwt) = jwt else {
            assert!(!needs_identity, "kong.yml: service {name} routes on X-Runway-Issuer but has no jwt plugin");
            continue;
        };
        assert!(needs_identity, "kong.yml: service {name} has a jwt plugin but anonymous routes get no assertion");
        let c = &jwt["config"];
        assert_eq!(c["key_claim_name"].as_str(), Some("iss"), "kong.yml {name}: key_claim_name");
        assert!(string_list(&c["claims_to_verify"]).contains(&"exp"), "kong.yml {name}: exp is verified");
        let max = c["maximum_expiration"].as_i64().unwrap_or(0);
        assert!(max > 0 && max >= i64::try_from(ttl).unwrap_or(i64::MAX), "kong.yml {name}: maximum_expiration {max}");
        assert_eq!(string_list(&c["header_names"]), ["authorization"], "kong.yml {name}: header_names");
        assert!(list(&c["uri_param_names"]).is_empty(), "kong.yml {name}: no ?jwt= from clients");
        assert!(list(&c["cookie_names"]).is_empty(), "kong.yml {name}: no cookies from clients");
    }
}

#[test]
fn the_redis_option_is_what_the_runway_configs_name() {
    use runway::config::ReplayStoreConfig;
    let docs = docs_in("redis");
    let service = one(&docs, "Service");
    let port = list(&service.yaml["spec"]["ports"]).first().and_then(|p| p["port"].as_i64()).unwrap_or_default();
    for (what, config) in deployment_configs() {
        let ReplayStoreConfig::Redis { url } = &config.replay else {
            panic!("{what}: several replicas need [replay] store = \"redis\"");
        };
        assert_eq!(url, &format!("redis://{}:{port}/0", service.name()), "{what}");
    }
    let deployment = one(&docs, "Deployment");
    let spec = &deployment.yaml["spec"];
    assert_eq!(spec["replicas"].as_i64(), Some(1), "one Redis: two would each hold half of the jtis");
    let redis = container(&spec["template"]["spec"], "redis");
    let args = string_list(&redis["args"]);
    let after = |flag: &str| args.iter().position(|a| *a == flag).and_then(|i| args.get(i + 1)).copied();
    assert_eq!(after("--maxmemory-policy"), Some("noeviction"), "an evicted jti could pass again");
    assert_eq!(redis["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    let policy = one(&docs, "NetworkPolicy");
    let allowed: Vec<&str> = list(&policy.yaml["spec"]["ingress"])
        .iter()
        .flat_map(|i| list(&i["from"]))
        .flat_map(|f| list(&f["podSelector"]["matchExpressions"]))
        .flat_map(|e| string_list(&e["values"]))
        .collect();
    assert_eq!(allowed, ["runway", "kong-runway"], "only Runway pods reach Redis");
}

// ---------------------------------------------------------------------------------------------------------
// GitLab
// ---------------------------------------------------------------------------------------------------------

#[test]
fn gitlab_job_asks_for_an_id_token_that_runways_route_accepts() {
    let path = root().join("deploy/gitlab/.gitlab-ci.yml");
    let docs = YamlLoader::load_from_str(&read(&path)).unwrap_or_else(|e| panic!(".gitlab-ci.yml: {e}"));
    let ci = &docs[0];
    let config = load_config(&read(&root().join("deploy/gitlab/runway-route.toml")), "runway-route.toml");
    let gitlab =
        config.issuers.iter().find(|i| i.kind.as_str() == "gitlab").unwrap_or_else(|| panic!("no gitlab issuer"));

    let job = &ci["deploy-production"];
    let tokens =
        job["id_tokens"].as_hash().unwrap_or_else(|| panic!(".gitlab-ci.yml: deploy-production has no id_tokens"));
    let (variable, token) = tokens.iter().next().unwrap_or_else(|| panic!("empty id_tokens"));
    let aud = token["aud"].as_str().unwrap_or_else(|| panic!(".gitlab-ci.yml: id_tokens without aud"));
    assert!(gitlab.audiences.iter().any(|a| a == aud), "aud {aud} is not among the issuer's audiences");
    let variable = variable.as_str().unwrap_or_default();
    let script = string_list(&job["script"]).join("\n");
    assert!(script.contains(&format!("Authorization: Bearer ${variable}")), "the job does not send ${variable}");
    assert!(script.contains("--fail-with-body"), "the job should fail on a refusal and print Runway's detail");
    assert_eq!(job["environment"]["name"].as_str(), Some("production"));
    let rules = format!("{:?}", job["rules"]);
    assert!(rules.contains("CI_COMMIT_REF_PROTECTED") && rules.contains("CI_DEFAULT_BRANCH"), "rules: {rules}");

    let route =
        config.routes.iter().find(|r| r.path_prefix == "/deploy/production").unwrap_or_else(|| panic!("no route"));
    for rule in route.allow.iter().filter(|r| r.issuer == gitlab.name) {
        let claim = |name: &str| {
            rule.claims.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v.clone()).unwrap_or_default()
        };
        assert_eq!(claim("ref_protected"), ["true"], "route {}: protected refs only", route.name);
        assert_eq!(claim("environment"), ["production"], "route {}: production only", route.name);
        assert!(!claim("project_path").is_empty(), "route {}: a project allowlist", route.name);
    }
    assert!(route.allow.iter().any(|r| r.issuer == gitlab.name), "route {}: no rule for GitLab", route.name);
}

// ---------------------------------------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------------------------------------

/// The Dockerfile's instructions (continuations joined, comments dropped), grouped by stage.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = read(&root().join("Dockerfile"));
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let instruction = std::mem::take(&mut pending);
        let (keyword, args) = instruction.split_once(char::is_whitespace).unwrap_or((&instruction, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stages.push(Vec::new());
        }
        let stage = stages.last_mut().unwrap_or_else(|| panic!("Dockerfile: {keyword} before FROM"));
        stage.push((keyword, args.trim().to_string()));
    }
    stages
}

#[test]
fn dockerfile_builds_locked_and_runs_distroless_as_nonroot() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "Dockerfile: a builder stage and a runtime stage");
    let arg = |stage: &[(String, String)], keyword: &str| -> Vec<String> {
        stage.iter().filter(|(k, _)| k == keyword).map(|(_, a)| a.clone()).collect()
    };

    let builder = stages
        .iter()
        .find(|s| arg(s, "FROM").first().is_some_and(|f| f.to_ascii_lowercase().ends_with(" as builder")))
        .unwrap_or_else(|| panic!("Dockerfile: no `FROM ... AS builder` stage"));
    let from = arg(builder, "FROM").join("");
    assert!(from.starts_with("rust:"), "Dockerfile: the builder should be the official rust image, is {from}");
    let runs = arg(builder, "RUN").join("\n");
    assert!(runs.contains("cargo build --release --locked"), "Dockerfile: `cargo build --release --locked`");

    // Everything cargo needs to read the manifest and build is copied in.
    let copied: Vec<String> = arg(builder, "COPY")
        .iter()
        .filter(|a| !a.starts_with("--from"))
        .flat_map(|a| {
            let words: Vec<&str> = a.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            words[..words.len().saturating_sub(1)]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for needed in cargo_inputs() {
        assert!(copied.contains(&needed), "Dockerfile: the builder does not COPY {needed} (copies {copied:?})");
    }

    let runtime = stages.last().unwrap_or_else(|| panic!("no stage"));
    let from = arg(runtime, "FROM").join("");
    assert!(from.starts_with("gcr.io/distroless/cc-debian12:nonroot"), "Dockerfile: runtime is {from}");
    let user = arg(runtime, "USER").join("");
    assert!(["nonroot", "nonroot:nonroot", "65532", "65532:65532"].contains(&user.as_str()), "Dockerfile: USER {user}");
    let copy = arg(runtime, "COPY").join("\n");
    assert!(
        // The builder copies the binary out of its target/ cache mount (not part of any layer) first.
        runs.contains("cp target/release/runway /usr/local/bin/runway")
            && copy.contains("--from=builder /usr/local/bin/runway /usr/local/bin/runway"),
        "Dockerfile: COPY {copy}"
    );
    let entrypoint = arg(runtime, "ENTRYPOINT").join("");
    let entrypoint: Vec<String> =
        serde_json::from_str(&entrypoint).unwrap_or_else(|e| panic!("ENTRYPOINT not exec form: {e}"));
    assert_eq!(entrypoint, ["/usr/local/bin/runway"], "Dockerfile: ENTRYPOINT");
    let cmd: Vec<String> = serde_json::from_str(&arg(runtime, "CMD").join("")).unwrap_or_else(|e| panic!("CMD: {e}"));
    assert_eq!(cmd, ["serve", "-c", "/etc/runway/runway.toml"], "Dockerfile: CMD");
    let exposed = arg(runtime, "EXPOSE").join(" ");
    for port in ["8443", "9901"] {
        assert!(exposed.split_whitespace().any(|p| p == port), "Dockerfile: EXPOSE {port}");
    }
    assert_eq!(arg(runtime, "HEALTHCHECK"), ["NONE"], "Dockerfile: HEALTHCHECK NONE (no shell to run a check)");

    let ignore = read(&root().join(".dockerignore"));
    let ignored: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for must in ["target/", ".git/", "fuzz/target/"] {
        assert!(ignored.contains(&must), ".dockerignore: {must}");
    }
    for needed in cargo_inputs() {
        let as_dir = format!("{needed}/");
        assert!(
            !ignored.contains(&needed.as_str()) && !ignored.contains(&as_dir.as_str()),
            ".dockerignore drops {needed}"
        );
    }
}

/// The top-level files and directories `cargo build` reads: the manifest and lock file, and the first path
/// component of every target and build script Cargo.toml declares.
fn cargo_inputs() -> Vec<String> {
    let manifest: serde_json::Value = config::Config::builder()
        .add_source(config::File::from_str(&read(&root().join("Cargo.toml")), config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .unwrap_or_else(|e| panic!("Cargo.toml: {e}"));
    let mut paths = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    let mut add = |path: &str| {
        let top = path.split('/').next().unwrap_or(path).to_string();
        if !paths.contains(&top) {
            paths.push(top);
        }
    };
    if let Some(path) = manifest["lib"]["path"].as_str() {
        add(path);
    }
    for bin in manifest["bin"].as_array().into_iter().flatten() {
        add(bin["path"].as_str().unwrap_or("src/main.rs"));
    }
    for bench in manifest["bench"].as_array().into_iter().flatten() {
        let name = bench["name"].as_str().unwrap_or_default();
        add(bench["path"].as_str().unwrap_or(&format!("benches/{name}.rs")));
    }
    match manifest["package"]["build"].as_str() {
        Some(script) => add(script),
        None if root().join("build.rs").exists() => add("build.rs"),
        None => {}
    }
    paths
}

// ---------------------------------------------------------------------------------------------------------
// The binary, as the image runs it
// ---------------------------------------------------------------------------------------------------------

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn run(mut command: Command, cwd: &Path) -> Output {
    command.current_dir(cwd).env_clear();
    command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn assert_version(output: &Output, who: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "runway --version as {who}: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), format!("runway {}", runway::VERSION), "runway --version as {who}");
}

#[test]
fn binary_runs_from_an_empty_directory_as_a_non_root_user() {
    // The binary alone in a world-readable directory under /tmp (tempdir's default mode is 0700, which
    // another user could not traverse), run from a second, empty directory with an empty environment:
    // no config file, no HOME, no PATH, as in the distroless image.
    let bin_dir = tempfile::Builder::new()
        .prefix("runway-bin-")
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("temp dir under /tmp: {e}"));
    let work_dir = tempfile::Builder::new()
        .prefix("runway-cwd-")
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("temp dir under /tmp: {e}"));
    for dir in [bin_dir.path(), work_dir.path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap_or_else(|e| panic!("chmod: {e}"));
    }
    let bin = bin_dir.path().join("runway");
    fs::copy(env!("CARGO_BIN_EXE_runway"), &bin).unwrap_or_else(|e| panic!("copying the binary: {e}"));
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap_or_else(|e| panic!("chmod: {e}"));

    let mut own = Command::new(&bin);
    own.arg("--version");
    assert_version(&run(own, work_dir.path()), "the current user");

    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if uid != 0 {
        println!("note: running as uid {uid}, already not root: the run above is the non-root run");
        return;
    }
    // As root: drop to nobody (65534) and to the image's nonroot (65532), which need no /etc/passwd entry
    // with setpriv; runuser needs a user name, so only nobody then.
    let as_user = |uid: u32, program: &Path| -> Option<Command> {
        if let Some(setpriv) = find_tool("setpriv") {
            let mut c = Command::new(setpriv);
            c.args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".to_string()]).arg(program);
            return Some(c);
        }
        if uid == 65534
            && let Some(runuser) = find_tool("runuser")
        {
            let mut c = Command::new(runuser);
            c.args(["-u", "nobody", "--"]).arg(program);
            return Some(c);
        }
        None
    };
    let mut ran = false;
    for uid in [65534, 65532] {
        let Some(mut command) = as_user(uid, &bin) else { continue };
        command.arg("--version");
        assert_version(&run(command, work_dir.path()), &format!("uid {uid}"));
        ran = true;
        // Control: the same switch, running `id -u`, really ends up as that user.
        if let Some(mut id) = find_tool("id").and_then(|id| as_user(uid, &id)) {
            id.arg("-u");
            let output = run(id, work_dir.path());
            let shown_uid = String::from_utf8_lossy(&output.stdout).trim().to_string();
            assert_eq!(shown_uid, uid.to_string(), "the user switch did not happen: {output:?}");
        }
    }
    if !ran {
        println!("note: neither setpriv nor runuser (util-linux) is installed: the non-root run was skipped");
    }
}
