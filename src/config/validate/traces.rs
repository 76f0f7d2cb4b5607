//! `[tracing]`: where spans go, how many are recorded, and whose trace context is believed (contract section
//! 12). Each setting is the key's when the file (or a `RUNWAY__TRACING__*` variable) sets it, else the standard
//! OpenTelemetry variable's, else the default: code over environment, the order OpenTelemetry SDKs use. The
//! variables are read here, once, so `runway check` reports a bad one by name, offline, like a bad key.

use std::str::FromStr;

use http::{HeaderName, HeaderValue, Uri};

use super::super::raw::RawTracing;
use crate::config::{
    ConfigError, DEFAULT_OTLP_ENDPOINT, DEFAULT_SAMPLE_RATIO, DEFAULT_TRACING_SERVICE_NAME, ExportHeaders,
    OTLP_TRACES_PATH, TracingConfig,
};

/// The traces URL exactly (no path appended), when `otlp_endpoint` is not set.
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The base URL of every signal (`/v1/traces` appended), when neither of the above is set.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `service.name`, when `service_name` is not set.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// The sampler, when `sample_ratio` is not set.
pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// The ratio of the `traceidratio` samplers.
pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// The export protocol: Runway speaks `http/protobuf` only, so anything else set here is refused.
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// The traces export protocol, same rule.
pub const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";

/// Reads an environment variable; an empty one counts as unset (as in every OpenTelemetry SDK).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Validates `[tracing]`, with `env` standing in for the process environment.
pub(crate) fn tracing(raw: RawTracing, env: Env<'_>) -> Result<TracingConfig, ConfigError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    for name in [OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL] {
        if let Some(protocol) = env(name).filter(|p| p.trim() != "http/protobuf") {
            return Err(ConfigError::invalid(
                name,
                format!("\"{protocol}\": Runway exports traces over OTLP/HTTP protobuf only (\"http/protobuf\")"),
            ));
        }
    }
    let traces_url =
        match (raw.otlp_endpoint, env(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), env(OTEL_EXPORTER_OTLP_ENDPOINT)) {
            (Some(base), _, _) => url("tracing.otlp_endpoint", &base, true)?,
            (None, Some(full), _) => url(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, &full, false)?,
            (None, None, Some(base)) => url(OTEL_EXPORTER_OTLP_ENDPOINT, &base, true)?,
            (None, None, None) => url("tracing.otlp_endpoint", DEFAULT_OTLP_ENDPOINT, true)?,
        };
    let service_name = match (raw.service_name, env(OTEL_SERVICE_NAME)) {
        (Some(name), _) => service_name("tracing.service_name", name)?,
        (None, Some(name)) => service_name(OTEL_SERVICE_NAME, name)?,
        (None, None) => DEFAULT_TRACING_SERVICE_NAME.to_string(),
    };
    let sample_ratio = match raw.sample_ratio {
        Some(ratio) => ratio_in_range("tracing.sample_ratio", ratio)?,
        None => sampler_from_env(env(OTEL_TRACES_SAMPLER), env(OTEL_TRACES_SAMPLER_ARG))?,
    };
    Ok(TracingConfig {
        traces_url,
        service_name,
        sample_ratio,
        trust_client_context: raw.trust_client_context.unwrap_or(false),
        headers: headers(raw.headers)?,
    })
}

/// An `http(s)://host[:port][/path]` URL; with `append`, a base URL the traces path is added to.
fn url(key: &str, value: &str, append: bool) -> Result<Uri, ConfigError> {
    let shown: String = value.chars().take(200).collect();
    let uri: Uri = value.trim().parse().map_err(|e| {
        ConfigError::invalid(key, format!("\"{shown}\" is not a URL ({e}); write e.g. \"http://otel-collector:4318\""))
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(ConfigError::invalid(key, format!("\"{shown}\" must be an absolute http:// or https:// URL")));
    }
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err(ConfigError::invalid(key, format!("\"{shown}\" has no host")));
    };
    if authority.as_str().contains('@') {
        return Err(ConfigError::invalid(
            key,
            "must not carry credentials in the URL: put them in [tracing.headers] (e.g. Authorization)",
        ));
    }
    if uri.query().is_some() {
        return Err(ConfigError::invalid(key, format!("\"{shown}\" must have no query string")));
    }
    if !append {
        return Ok(uri);
    }
    let path = format!("{}{OTLP_TRACES_PATH}", uri.path().trim_end_matches('/'));
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(
        path.parse()
            .map_err(|e| ConfigError::invalid(key, format!("\"{shown}\" gives no usable traces path ({e})")))?,
    );
    Uri::from_parts(parts).map_err(|e| ConfigError::invalid(key, format!("\"{shown}\": {e}")))
}

fn service_name(key: &str, name: String) -> Result<String, ConfigError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(ConfigError::invalid(key, "must be non-empty, without control characters"));
    }
    Ok(name)
}

fn ratio_in_range(key: &str, ratio: f64) -> Result<f64, ConfigError> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(ConfigError::invalid(
            key,
            format!("{ratio} is not a ratio: give a number from 0 (no new trace recorded) to 1 (every one)"),
        ));
    }
    Ok(ratio)
}

/// `OTEL_TRACES_SAMPLER` and its argument, read as a ratio. Runway samples parent-based whatever the name says:
/// a trusted caller's sampled flag always decides for its own trace.
fn sampler_from_env(sampler: Option<String>, arg: Option<String>) -> Result<f64, ConfigError> {
    let Some(sampler) = sampler else { return Ok(DEFAULT_SAMPLE_RATIO) };
    match sampler.trim() {
        "always_on" | "parentbased_always_on" => Ok(1.0),
        "always_off" | "parentbased_always_off" => Ok(0.0),
        "traceidratio" | "parentbased_traceidratio" => match arg {
            None => Ok(DEFAULT_SAMPLE_RATIO),
            Some(arg) => {
                let ratio = arg.trim().parse::<f64>().map_err(|_| {
                    ConfigError::invalid(OTEL_TRACES_SAMPLER_ARG, format!("\"{arg}\" is not a number from 0 to 1"))
                })?;
                ratio_in_range(OTEL_TRACES_SAMPLER_ARG, ratio)
            }
        },
        other => Err(ConfigError::invalid(
            OTEL_TRACES_SAMPLER,
            format!(
                "\"{other}\" is not supported (always_on, always_off, traceidratio, or their parentbased_ forms; \
                 or set [tracing] sample_ratio)"
            ),
        )),
    }
}

/// `[tracing.headers]`: names checked, values never echoed (they are usually credentials).
fn headers(raw: std::collections::BTreeMap<String, String>) -> Result<ExportHeaders, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let key = format!("tracing.headers.\"{name}\"");
        let header =
            HeaderName::from_str(&name).map_err(|_| ConfigError::invalid(&key, "not a valid HTTP header name"))?;
        let managed = ["host", "content-type", "content-length", "content-encoding", "transfer-encoding", "connection"];
        if managed.contains(&header.as_str()) {
            return Err(ConfigError::invalid(&key, "a header the exporter sets itself: remove it"));
        }
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ConfigError::invalid(&key, "not a valid header value (visible ASCII and spaces only; value not shown)")
        })?;
        value.set_sensitive(true);
        out.push((header, value));
    }
    Ok(ExportHeaders(out))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with_env(raw: RawTracing, vars: &[(&str, &str)]) -> Result<TracingConfig, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tracing(raw, &|name| vars.get(name).cloned())
    }

    fn key_of(result: Result<TracingConfig, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn defaults_without_keys_or_variables() {
        let c = with_env(RawTracing::default(), &[]).expect("defaults");
        assert_eq!(c.traces_url, "http://localhost:4318/v1/traces");
        assert_eq!(c.service_name, "runway");
        assert_eq!(c.sample_ratio, 1.0);
        assert!(!c.trust_client_context);
        assert!(c.headers.0.is_empty());
    }

    #[test]
    fn keys_win_over_variables_and_variables_over_defaults() {
        let raw = RawTracing {
            otlp_endpoint: Some("https://collector.example:4318/otlp/".into()),
            service_name: Some("edge".into()),
            sample_ratio: Some(0.25),
            ..RawTracing::default()
        };
        let vars = [
            (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://other:4318/v1/traces"),
            (OTEL_SERVICE_NAME, "from-env"),
            (OTEL_TRACES_SAMPLER, "always_off"),
        ];
        let c = with_env(raw, &vars).expect("valid");
        assert_eq!(c.traces_url, "https://collector.example:4318/otlp/v1/traces");
        assert_eq!((c.service_name.as_str(), c.sample_ratio), ("edge", 0.25));

        let c = with_env(RawTracing::default(), &vars).expect("valid");
        assert_eq!(c.traces_url, "http://other:4318/v1/traces", "the signal's own URL is used as given");
        assert_eq!((c.service_name.as_str(), c.sample_ratio), ("from-env", 0.0));

        let base = [(OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4318"), (OTEL_TRACES_SAMPLER_ARG, "0.5")];
        let c = with_env(RawTracing::default(), &base).expect("valid");
        assert_eq!(c.traces_url, "http://collector:4318/v1/traces", "the base URL gets the traces path");
        assert_eq!(c.sample_ratio, 1.0, "the argument alone chooses no sampler");
        let ratio = [(OTEL_TRACES_SAMPLER, "parentbased_traceidratio"), (OTEL_TRACES_SAMPLER_ARG, "0.01")];
        assert_eq!(with_env(RawTracing::default(), &ratio).expect("valid").sample_ratio, 0.01);
    }

    #[test]
    fn bad_values_name_the_key_or_the_variable() {
        let ratio = |r: f64| RawTracing { sample_ratio: Some(r), ..RawTracing::default() };
        assert_eq!(key_of(with_env(ratio(1.5), &[])), "tracing.sample_ratio");
        assert_eq!(key_of(with_env(ratio(-0.1), &[])), "tracing.sample_ratio");
        assert_eq!(key_of(with_env(ratio(f64::NAN), &[])), "tracing.sample_ratio");
        let endpoint = |e: &str| RawTracing { otlp_endpoint: Some(e.into()), ..RawTracing::default() };
        for bad in ["collector:4318", "ftp://collector", "http://", "http://c:4318/?x=1", "http://u:p@c:4318", "a b"] {
            assert_eq!(key_of(with_env(endpoint(bad), &[])), "tracing.otlp_endpoint", "{bad}");
        }
        let sampler = [(OTEL_TRACES_SAMPLER, "jaeger_remote")];
        assert_eq!(key_of(with_env(RawTracing::default(), &sampler)), OTEL_TRACES_SAMPLER);
        let arg = [(OTEL_TRACES_SAMPLER, "traceidratio"), (OTEL_TRACES_SAMPLER_ARG, "2")];
        assert_eq!(key_of(with_env(RawTracing::default(), &arg)), OTEL_TRACES_SAMPLER_ARG);
        let grpc = [(OTEL_EXPORTER_OTLP_PROTOCOL, "grpc")];
        assert_eq!(key_of(with_env(RawTracing::default(), &grpc)), OTEL_EXPORTER_OTLP_PROTOCOL);
        let env_url = [(OTEL_EXPORTER_OTLP_ENDPOINT, "not a url")];
        assert_eq!(key_of(with_env(RawTracing::default(), &env_url)), OTEL_EXPORTER_OTLP_ENDPOINT);
        let name = RawTracing { service_name: Some(String::new()), ..RawTracing::default() };
        assert_eq!(key_of(with_env(name, &[])), "tracing.service_name");
    }

    #[test]
    fn headers_are_checked_and_never_shown() {
        let raw = |name: &str, value: &str| RawTracing {
            headers: [(name.to_string(), value.to_string())].into_iter().collect(),
            ..RawTracing::default()
        };
        let c = with_env(raw("X-Api-Key", "s3cret"), &[]).expect("valid");
        assert_eq!(c.headers.0.len(), 1);
        assert!(!format!("{c:?}").contains("s3cret"), "Debug shows no header value: {c:?}");
        assert_eq!(key_of(with_env(raw("bad name", "v"), &[])), "tracing.headers.\"bad name\"");
        assert_eq!(key_of(with_env(raw("content-type", "v"), &[])), "tracing.headers.\"content-type\"");
        let bad_value = with_env(raw("x-key", "line\nbreak"), &[]);
        assert!(matches!(&bad_value, Err(ConfigError::Invalid { message, .. }) if !message.contains("line")));
    }
}
