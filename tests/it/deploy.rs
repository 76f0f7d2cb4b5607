//! The monitoring files under `deploy/` against the real thing: the Grafana dashboard and the Prometheus alert
//! rules parse, carry the panels and alerts operators rely on, and every `runway_*` metric (and every label in
//! a selector) that their PromQL reads is exported by a live Runway's `/metrics`. A dashboard or rule that
//! names a metric Runway does not export fails here, not silently in production.
//!
//! The YAML is parsed with the `config` crate's YAML format (already a dependency), so no YAML crate is added.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::support::*;
use serde_json::{Value, json};

const AUD: &str = "https://deploy.example.com";

/// A report-mode route: its refusals are forwarded and counted as would-deny (`runway_would_deny_total`).
const SHADOW_ROUTE: &str = r#"
[[routes]]
name = "shadow"
path_prefix = "/shadow"
mode = "report"
[[routes.allow]]
issuer = "gitlab"
"#;

/// Panels the dashboard must have, by title.
const PANELS: &[&str] = &[
    "Request rate by route",
    "Error ratio by status class",
    "Request latency p50 / p99",
    "Proxy overhead p50 / p99",
    "Auth denials by reason",
    "Auth denials by issuer",
    "Token cache hits / misses",
    "Token cache hit ratio",
    "Replays refused",
    "Replay store errors",
    "JWKS freshness",
    "JWKS usable keys",
    "Upstream errors by kind",
    "Active connections",
    "TLS handshake failures",
    "Audit queue waits / write errors",
    "Build info",
    "Would-deny rate by route and reason",
    "Would-deny share per route",
    "Revocations in force",
    "Requests refused as revoked",
    "Revocation sync errors",
    "Trace export errors",
];

/// Alerts the rule file must have, by name.
const ALERTS: &[&str] = &[
    "RunwayJwksStale",
    "RunwayIssuerNoUsableKeys",
    "RunwayAuthDenialSpike",
    "RunwayUpstream5xxRatio",
    "RunwayNoReadyReplicas",
    "RunwayConfigReloadFailed",
    "RunwayAuditWriteErrors",
    "RunwayReplayStoreErrors",
    "RunwayRevocationSyncFailing",
    "RunwayTraceExportFailing",
];

/// The datasource reference every query must use.
const DATASOURCE_UID: &str = "${DS_PROMETHEUS}";

fn deploy_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn dashboard() -> Value {
    let text = deploy_file("grafana/runway-dashboard.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("dashboard is not JSON: {e}"))
}

/// The rule file as JSON, parsed with the `config` crate's YAML support.
fn rules_file() -> Value {
    let text = deploy_file("prometheus/runway-alerts.yml");
    config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .unwrap_or_else(|e| panic!("alert rules are not valid YAML: {e}"))
}

/// Every rule of every group.
fn rules(file: &Value) -> Vec<Value> {
    let groups = file["groups"].as_array().unwrap_or_else(|| panic!("no `groups` list: {file}"));
    let mut out = Vec::new();
    for group in groups {
        assert!(group["name"].as_str().is_some_and(|n| !n.is_empty()), "group without a name: {group}");
        let list = group["rules"].as_array().unwrap_or_else(|| panic!("group without `rules`: {group}"));
        out.extend(list.iter().cloned());
    }
    out
}

/// Every panel, rows' nested panels included (collapsed rows keep theirs under `panels`).
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL expression in the dashboard: panel targets and template-variable queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.to_string());
            }
        }
    }
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            for q in [&var["query"], &var["query"]["query"], &var["definition"]] {
                if let Some(q) = q.as_str() {
                    out.push(q.to_string());
                }
            }
        }
    }
    out
}

/// Every alert and recording rule expression.
fn rule_exprs(file: &Value) -> Vec<String> {
    rules(file).iter().filter_map(|r| r["expr"].as_str().map(str::to_string)).collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A label matcher list `name="v", other=~"w"}...` (also a sample's label set), read up to its closing brace:
/// the label names, in order.
fn label_names(matchers: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = matchers.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| is_ident(*c))).collect();
        if name.is_empty() {
            break;
        }
        names.push(name);
        // Operator, then the quoted value (escapes skipped).
        while chars.next_if(|c| *c != '"').is_some() {}
        chars.next();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
    }
    names
}

/// `runway_*` selectors in a PromQL expression: the name as written and the labels its matchers name.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    let mut prev: Option<char> = None;
    while let Some(pos) = rest.find("runway_") {
        let before = rest[..pos].chars().next_back().or(prev);
        let after = &rest[pos..];
        let name: String = after.chars().take_while(|c| is_ident(*c)).collect();
        let tail = &after[name.len()..];
        if before.is_some_and(is_ident) {
            // Part of a longer identifier (`xrunway_...`): skip it whole.
        } else {
            let labels = match tail.trim_start().strip_prefix('{') {
                Some(inner) => label_names(inner),
                None => Vec::new(),
            };
            out.push((name.clone(), labels));
        }
        prev = name.chars().next_back();
        rest = tail;
    }
    out
}

/// The metric family a referenced name belongs to, and whether the reference is a histogram series.
fn family(name: &str) -> (&str, bool) {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return (base, true);
        }
    }
    (name, false)
}

/// What a scrape exposes: `# TYPE` per family, and the label names seen on each family's samples.
struct Scrape {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    types.insert(name.to_string(), kind.to_string());
                }
            }
        }
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let name: String = line.chars().take_while(|c| is_ident(*c)).collect();
            let fam = match family(&name) {
                (base, true) if types.get(base).is_some_and(|t| t == "histogram") => base.to_string(),
                _ => name.clone(),
            };
            let set = labels.entry(fam).or_default();
            if let Some(inner) = line[name.len()..].strip_prefix('{') {
                set.extend(label_names(inner));
            }
        }
        Scrape { types, labels }
    }

    /// What is wrong with the references `exprs` make, one line per problem (empty when all is exported).
    fn problems(&self, source: &str, exprs: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for expr in exprs {
            for (name, labels) in selectors(expr) {
                let (fam, histogram_series) = family(&name);
                match self.types.get(fam) {
                    None => out.push(format!("{source}: `{name}` is not exported (no `# TYPE {fam}`) in: {expr}")),
                    Some(kind) if histogram_series && kind != "histogram" => {
                        out.push(format!("{source}: `{name}` reads a histogram series but `{fam}` is a {kind}"))
                    }
                    Some(_) => {
                        let seen = self.labels.get(fam).cloned().unwrap_or_default();
                        for label in labels.iter().filter(|l| !seen.contains(*l)) {
                            out.push(format!("{source}: `{fam}` has no label `{label}` (seen: {seen:?}) in: {expr}"));
                        }
                    }
                }
            }
        }
        out
    }
}

#[test]
fn the_scanner_finds_metric_names_and_matcher_labels() {
    let expr = r#"sum by (le) (rate(runway_request_duration_seconds_bucket{route=~"$route", x="a,}b\"c"}[5m]))
        / ignore(xrunway_not_this) + time() - runway_jwks_keys > 0 and on (job) up{job="runway"}"#;
    assert_eq!(
        selectors(expr),
        vec![
            ("runway_request_duration_seconds_bucket".to_string(), vec!["route".to_string(), "x".to_string()]),
            ("runway_jwks_keys".to_string(), vec![]),
        ]
    );
    assert_eq!(family("runway_request_duration_seconds_bucket"), ("runway_request_duration_seconds", true));
    assert_eq!(family("runway_requests_total"), ("runway_requests_total", false));
    let scrape = Scrape::parse(
        "# TYPE runway_requests_total counter\nrunway_requests_total{route=\"a\",status=\"200\"} 1\n\
         # TYPE runway_up_seconds histogram\nrunway_up_seconds_bucket{le=\"+Inf\"} 1\nrunway_up_seconds_count 1\n",
    );
    let ok = [r#"rate(runway_requests_total{status=~"5.."}[5m]) + runway_up_seconds_count"#.to_string()];
    assert_eq!(scrape.problems("t", &ok), Vec::<String>::new());
    for bad in [
        "rate(runway_request_total[5m])",
        r#"rate(runway_requests_total{code="500"}[5m])"#,
        "rate(runway_requests_total_bucket[5m])",
    ] {
        assert_eq!(scrape.problems("t", &[bad.to_string()]).len(), 1, "{bad} must be reported");
    }
}

#[test]
fn dashboard_is_importable_and_has_every_panel() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| (36..=41).contains(&v)), "schemaVersion: {dash:.0}");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), "a stable uid");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()), "a title");

    let vars = dash["templating"]["list"].as_array().unwrap_or_else(|| panic!("no templating list"));
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no `{name}` variable"));
    let ds = var("DS_PROMETHEUS");
    assert_eq!((&ds["type"], &ds["query"]), (&json!("datasource"), &json!("prometheus")));
    for (name, metric) in [("route", "runway_requests_total"), ("issuer", "runway_jwks_keys")] {
        let v = var(name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["definition"], format!("label_values({metric}, {name})"), "{name}");
        assert_eq!(v["datasource"]["uid"], DATASOURCE_UID, "{name}");
    }

    let all = panels(&dash);
    let titles: BTreeSet<&str> = all.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in PANELS {
        assert!(titles.contains(want), "no panel titled {want:?}; panels: {titles:#?}");
    }
    let mut ids = BTreeSet::new();
    for panel in &all {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(panel["id"].as_u64().is_some_and(|id| ids.insert(id)), "{title}: missing or duplicate id");
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: no gridPos");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], DATASOURCE_UID, "{title}: query not on the datasource variable");
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("runway_")), "{title}: {t}");
        }
    }

    let panel = |title: &str| *all.iter().find(|p| p["title"] == title).unwrap_or_else(|| panic!("{title}"));
    // The overhead comes from the histogram that measures it, never from a difference of two quantiles (which
    // goes negative on real traffic).
    let overhead = panel("Proxy overhead p50 / p99");
    let exprs: Vec<&str> =
        overhead["targets"].as_array().into_iter().flatten().filter_map(|t| t["expr"].as_str()).collect();
    assert!(
        !exprs.is_empty()
            && exprs.iter().all(|e| e.contains("runway_proxy_overhead_seconds_bucket")
                && !e.contains(" - ")
                && !e.contains("runway_upstream_duration_seconds")),
        "overhead quantiles from runway_proxy_overhead_seconds: {exprs:?}"
    );
    // Enforced denials only: a report-mode refusal (would_deny) was forwarded, it is not a denial.
    let denials = [panel("Auth denials by reason"), panel("Auth denials by issuer")];
    for p in denials {
        assert!(p["targets"][0]["expr"].as_str().is_some_and(|e| e.contains(r#"decision="deny""#)), "{p}");
    }
    // The share of a route's requests that would be refused: would-deny rate over that route's request rate.
    let share = panel("Would-deny share per route");
    let share = share["targets"][0]["expr"].as_str().unwrap_or_default();
    assert!(
        share.contains("sum by (route) (rate(runway_would_deny_total")
            && share.contains("sum by (route) (rate(runway_requests_total"),
        "would-deny share per route: {share}"
    );
}

#[test]
fn alert_rules_are_well_formed_and_complete() {
    let file = rules_file();
    let all = rules(&file);
    let raw = deploy_file("prometheus/runway-alerts.yml");
    let raw_alerts = raw.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert_eq!(all.len(), raw_alerts, "every `- alert:` in the text parsed as a rule");

    let mut names = BTreeSet::new();
    for rule in &all {
        let name = rule["alert"].as_str().unwrap_or_else(|| panic!("a rule without `alert`: {rule}"));
        assert!(names.insert(name), "{name} defined twice");
        assert!(rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{name}: no expr");
        let pending = rule["for"].as_str().unwrap_or_else(|| panic!("{name}: no `for`"));
        assert!(
            pending.strip_suffix(['s', 'm', 'h']).is_some_and(|n| n.parse::<u32>().is_ok()),
            "{name}: `for: {pending}` is not a duration"
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["critical", "warning", "info"].contains(&severity), "{name}: severity {severity:?}");
        for field in ["summary", "description"] {
            let text = rule["annotations"][field].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: no annotations.{field}");
        }
    }
    for want in ALERTS {
        assert!(names.contains(want), "no alert {want}; have {names:?}");
    }

    let rule = |name: &str| all.iter().find(|r| r["alert"] == name).unwrap_or_else(|| panic!("{name}"));
    let expr = |name: &str| rule(name)["expr"].as_str().unwrap_or_default().to_string();
    let stale = rule("RunwayJwksStale");
    assert!(expr("RunwayJwksStale").contains("time() - runway_jwks_last_success_timestamp_seconds > 1800"));
    assert!(
        stale["annotations"]["description"].as_str().is_some_and(|d| d.contains("2x the configured refresh_interval")),
        "document the 2 x refresh_interval rule: {stale}"
    );
    assert!(expr("RunwayIssuerNoUsableKeys").contains("runway_jwks_keys == 0"));
    // Report mode neither pages (would_deny is no denial) nor dilutes the ratio (nor is it a decision).
    let spike = expr("RunwayAuthDenialSpike");
    assert!(spike.contains(r#"runway_auth_decisions_total{decision="deny"}"#), "{spike}");
    assert!(!spike.contains("runway_auth_decisions_total["), "unfiltered decisions count would_deny: {spike}");
    assert_eq!(spike.matches(r#"runway_auth_decisions_total{decision=~"allow|deny"}"#).count(), 2, "{spike}");
    assert!(expr("RunwayUpstream5xxRatio").contains(r#"runway_requests_total{status=~"502|503|504"}"#));
    assert!(
        expr("RunwayConfigReloadFailed").contains(r#"increase(runway_config_reloads_total{result="error"}[15m]) > 0"#)
    );
    assert!(expr("RunwayAuditWriteErrors").contains("increase(runway_audit_write_errors_total[5m]) > 0"));
    assert!(expr("RunwayRevocationSyncFailing").contains("increase(runway_revocation_sync_errors_total["));
    assert!(expr("RunwayTraceExportFailing").contains("increase(runway_trace_export_errors_total["));
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_read_is_exported() {
    let Backends { pki, key, idp, upstream } = Backends::start().await;
    let config = format!(
        "{}{}{}{SHADOW_ROUTE}",
        base_config(&pki, &upstream.url()),
        issuer_block("gitlab", "gitlab", &idp.issuer(), AUD, ""),
        open_route("api", "/api", "gitlab"),
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));

    // Traffic so the labelled series exist: allowed, denied, a report-mode refusal (would_deny, forwarded), no
    // route, and Kong gone (an upstream error).
    assert_eq!(client.get(&runway.url("/api/ok"), Some(&token)).await.status, 200);
    assert_eq!(client.get(&runway.url("/api/ok"), None).await.status, 401);
    assert_eq!(client.get(&runway.url("/shadow/ok"), None).await.status, 200);
    assert_eq!(client.get(&runway.url("/nowhere"), Some(&token)).await.status, 404);
    drop(upstream);
    let res = client.get(&runway.url("/api/ok"), Some(&token)).await;
    assert_eq!(res.status, 502, "Kong is down: {}", res.text());

    let (status, text) = runway.admin_get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    let scrape = Scrape::parse(&text);

    let dash_exprs = dashboard_exprs(&dashboard());
    let rule_exprs = rule_exprs(&rules_file());
    let referenced: BTreeSet<String> = dash_exprs
        .iter()
        .chain(&rule_exprs)
        .flat_map(|e| selectors(e))
        .map(|(name, _)| family(&name).0.to_string())
        .collect();
    // Guard against a scanner that finds nothing and so passes vacuously.
    assert!(referenced.len() >= 15, "suspiciously few metrics referenced: {referenced:?}");

    let mut problems = scrape.problems("dashboard", &dash_exprs);
    problems.extend(scrape.problems("alerts", &rule_exprs));
    assert!(problems.is_empty(), "deploy/ reads metrics Runway does not export:\n{}\n\n{text}", problems.join("\n"));

    // And the reverse, as information for whoever extends the dashboard.
    let unused: Vec<&String> = scrape.types.keys().filter(|f| !referenced.contains(*f)).collect();
    eprintln!("exported but not on the dashboard or in any rule: {unused:?}");
    runway.stop().await;
}
