//! The `runway` command line: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

/// mimalloc instead of glibc malloc: measured with the load harness (see benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "runway", version = runway::VERSION, about = "Identity-aware reverse proxy in front of Kong")]
struct Cli {
    /// Log filter, RUST_LOG syntax (e.g. "info", "runway=debug"); default "info" ("warn" for `dev`).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log format on stderr; default json (text for `dev`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Config file (TOML or YAML).
        #[arg(short = 'c', long = "config", env = "RUNWAY_CONFIG")]
        config: PathBuf,
    },
    /// A complete local demo: CA, token issuer, Kong stand-in and Runway on 127.0.0.1.
    Dev {
        /// Where to write the config, certificates and audit log (default: a new temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run one request through routing, verification and policy without forwarding; print every step.
    /// Exit 0 allow, 1 deny (404/405 included), 2 usage or config error.
    Explain {
        /// Config file (TOML or YAML).
        #[arg(short = 'c', long = "config", env = "RUNWAY_CONFIG")]
        config: PathBuf,
        /// Request method.
        #[arg(long)]
        method: String,
        /// Request URL, e.g. https://deploy.example.com/deploy/production.
        #[arg(long)]
        url: String,
        /// Bearer token.
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// File holding the bearer token.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Validate a config and every file it names; contacts no network.
    Check {
        /// Config file (TOML or YAML).
        #[arg(short = 'c', long = "config", env = "RUNWAY_CONFIG")]
        config: PathBuf,
    },
    /// Review the trust policy offline: rules that trust too much, with the key, the risk and the fix.
    /// Exit 0 when no finding reaches --fail-on, 1 when one does, 2 on a config error.
    Lint {
        /// Config file (TOML or YAML).
        #[arg(short = 'c', long = "config", env = "RUNWAY_CONFIG")]
        config: PathBuf,
        /// Output: text for people, json, or gitlab (a GitLab Code Quality report).
        #[arg(long, value_enum, default_value = "text")]
        format: LintFormat,
        /// The least severity that makes the exit status 1.
        #[arg(long, value_enum, default_value = "error")]
        fail_on: FailOn,
    },
    /// The identity assertion keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Revoke every token whose verified identity matches the conditions, on every replica, at once.
    /// Prints the revocation (with its id). Exit 0 done, 1 refused (the error names the field), 2 usage.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// Issuer name, as in the config.
        #[arg(long)]
        issuer: String,
        /// A claim condition, NAME=PATTERN (`*` globs; repeat a NAME for "any of"; NAME may be a JSON Pointer).
        #[arg(long = "claim", value_name = "NAME=PATTERN", required = true)]
        claims: Vec<String>,
        /// Why (shown in the list and the logs).
        #[arg(long)]
        reason: Option<String>,
        /// Who revoked (default: $USER).
        #[arg(long = "by", env = "USER")]
        revoked_by: Option<String>,
        /// RFC 3339 time or duration ("30m"); default and maximum: the issuer's max_token_lifetime.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List or lift revocations.
    Revocations {
        #[command(subcommand)]
        command: RevocationsCommand,
    },
}

/// Where the admin API is and how to authenticate to it.
#[derive(clap::Args)]
struct AdminArgs {
    /// Admin listener base URL, e.g. http://127.0.0.1:9901.
    #[arg(long = "admin", env = "RUNWAY_ADMIN_URL")]
    url: String,
    /// File holding the admin token (admin.token_file); else RUNWAY_ADMIN_TOKEN; else none (loopback).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum RevocationsCommand {
    /// Print the revocations in force (JSON).
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Lift a revocation by id.
    Delete {
        #[command(flatten)]
        admin: AdminArgs,
        /// The revocation's id.
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LintFormat {
    Text,
    Json,
    Gitlab,
}

#[derive(Clone, Copy, ValueEnum)]
enum FailOn {
    Error,
    Warning,
    Info,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print the PEM public key(s) of the `[assertion]` key file, signing key first (for Kong's
    /// `jwt_secrets`). Exit 1 if the config has no `[assertion]`.
    Public {
        /// Config file (TOML or YAML).
        #[arg(short = 'c', long = "config", env = "RUNWAY_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_dev = matches!(cli.command, Command::Dev { .. });
    let level = cli.log_level.unwrap_or_else(|| if is_dev { "warn" } else { "info" }.to_string());
    let format = cli.log_format.unwrap_or(if is_dev { LogFormat::Text } else { LogFormat::Json });
    init_logging(&level, format);
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Keys { command: KeysCommand::Public { config } } => keys_public(&config),
        Command::Lint { config, format, fail_on } => return lint(&config, format, fail_on),
        Command::Serve { config } => serve(&config),
        Command::Dev { dir } => dev(dir.unwrap_or_else(runway::dev::default_dir)),
        Command::Revoke { admin, issuer, claims, reason, revoked_by, expires } => {
            let body = match revocation_body(issuer, &claims, reason, revoked_by, expires) {
                Ok(body) => body,
                Err(e) => return usage(e),
            };
            return admin_call(admin, http::Method::POST, "/revocations".to_string(), Some(body));
        }
        Command::Revocations { command: RevocationsCommand::List { admin } } => {
            return admin_call(admin, http::Method::GET, "/revocations".to_string(), None);
        }
        Command::Revocations { command: RevocationsCommand::Delete { admin, id } } => {
            let path = format!(
                "/revocations/{}",
                percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
            );
            return admin_call(admin, http::Method::DELETE, path, None);
        }
        Command::Explain { config, method, url, token, token_file } => {
            return match explain(&config, &method, &url, token, token_file) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("runway: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(e: anyhow::Error) -> ExitCode {
    eprintln!("runway: {e:#}");
    ExitCode::from(2)
}

/// The `POST /revocations` body: repeated `--claim NAME=...` become a list for NAME.
fn revocation_body(
    issuer: String,
    claims: &[String],
    reason: Option<String>,
    revoked_by: Option<String>,
    expires: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    let mut conditions: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for claim in claims {
        let (name, pattern) =
            claim.split_once('=').with_context(|| format!("--claim \"{claim}\": write NAME=PATTERN"))?;
        anyhow::ensure!(!name.is_empty(), "--claim \"{claim}\": the claim name is empty");
        conditions.entry(name.to_string()).or_default().push(pattern.to_string());
    }
    let claims: serde_json::Map<String, serde_json::Value> = conditions
        .into_iter()
        .map(|(name, mut patterns)| match patterns.len() {
            1 => (name, serde_json::Value::from(patterns.remove(0))),
            _ => (name, serde_json::Value::from(patterns)),
        })
        .collect();
    Ok(serde_json::json!({
        "issuer": issuer, "claims": claims, "reason": reason, "revoked_by": revoked_by, "expires": expires,
    }))
}

/// One admin API call: prints the JSON answer; exit 1 when refused or unreachable, 2 on bad arguments.
fn admin_call(admin: AdminArgs, method: http::Method, path: String, body: Option<serde_json::Value>) -> ExitCode {
    let token = match (&admin.token_file, std::env::var("RUNWAY_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty())) {
        (Some(file), _) => match std::fs::read_to_string(file) {
            Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
            Ok(_) => return usage(anyhow::anyhow!("--token-file {}: the file is empty", file.display())),
            Err(e) => return usage(anyhow::anyhow!("--token-file {}: {e}", file.display())),
        },
        (None, from_env) => from_env.map(|t| t.trim().to_string()),
    };
    let client = match runway::admin::client::AdminClient::new(&admin.url, token) {
        Ok(client) => client,
        Err(e) => return usage(e.into()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return usage(e.into()),
    };
    match runtime.block_on(client.call(method, &path, body.as_ref())) {
        Ok(answer) => {
            println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("runway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => builder.init(),
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = runway::config::load(path)?;
    let lint = runway::lint::Counts::of(&runway::lint::lint(&config));
    let telemetry = runway::proxy::Telemetry {
        metrics: Arc::new(runway::metrics::Metrics::new()?),
        audit: None,
        export_runtime: None,
    };
    let runtime = runway::proxy::Runtime::build(config, telemetry)?;
    let c = &runtime.config;
    // Where spans would go once the OTEL_* variables are applied: what an operator wants confirmed.
    let tracing = c
        .tracing
        .as_ref()
        .map_or_else(String::new, |t| format!("; tracing to {} at sample_ratio {}", t.traces_url, t.sample_ratio));
    println!(
        "ok: {} issuer(s), {} route(s); listen {}, admin {}, upstream {}{tracing}; lint: {} error(s), {} warning(s) \
         (details: runway lint -c {})",
        c.issuers.len(),
        c.routes.len(),
        c.server.listen,
        c.admin.listen,
        c.upstream.url,
        lint.errors,
        lint.warnings,
        path.display()
    );
    Ok(())
}

/// `runway lint`: loads the config as `check` does (offline, same loader), then prints the findings.
fn lint(path: &std::path::Path, format: LintFormat, fail_on: FailOn) -> ExitCode {
    let config = match runway::config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("runway: {e}");
            return ExitCode::from(2);
        }
    };
    let findings = runway::lint::lint(&config);
    // Only for line numbers in the gitlab format: an unreadable file (it was just loaded) means line 1.
    let text = std::fs::read_to_string(path).ok();
    let shown = path.display().to_string();
    let source = runway::lint::report::Source { path: &shown, text: text.as_deref() };
    let format = match format {
        LintFormat::Text => runway::lint::report::Format::Text,
        LintFormat::Json => runway::lint::report::Format::Json,
        LintFormat::Gitlab => runway::lint::report::Format::Gitlab,
    };
    match runway::lint::report::render(&findings, format, source) {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("runway: {e}");
            return ExitCode::from(2);
        }
    }
    let fail_on = match fail_on {
        FailOn::Error => runway::lint::Severity::Error,
        FailOn::Warning => runway::lint::Severity::Warning,
        FailOn::Info => runway::lint::Severity::Info,
    };
    if runway::lint::fails(&findings, fail_on) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn keys_public(path: &std::path::Path) -> anyhow::Result<()> {
    let config = runway::config::load(path)?;
    let Some(assertion) = &config.assertion else {
        anyhow::bail!("{}: no [assertion] section: there is no signing key", path.display());
    };
    let keys = runway::assertion::Assertions::load(assertion, &config.audit.claims).context("assertion.key")?;
    print!("{}", keys.public_pem());
    Ok(())
}

fn explain(
    path: &std::path::Path,
    method: &str,
    url: &str,
    token: Option<String>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| anyhow::anyhow!("--method: \"{method}\" is not an HTTP method"))?;
    let url: http::Uri = url.parse().map_err(|e| anyhow::anyhow!("--url: \"{url}\" is not a URL ({e})"))?;
    if url.path_and_query().is_none() || !url.path().starts_with('/') {
        anyhow::bail!("--url: give an absolute URL such as https://deploy.example.com/deploy/production");
    }
    let token = match (token, token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(&file)
                .with_context(|| format!("--token-file: {}", file.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let config = runway::config::load(path)?;
    let telemetry = runway::proxy::Telemetry {
        metrics: Arc::new(runway::metrics::Metrics::new()?),
        audit: None,
        export_runtime: None,
    };
    let runtime = runway::proxy::Runtime::build(config, telemetry)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let (verdict, report) = rt.block_on(runway::explain::explain(&runtime, &method, &url, token.as_deref()));
    print!("{report}");
    Ok(if verdict == runway::explain::Verdict::Allow { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn dev(dir: PathBuf) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let demo = runway::dev::start(&dir).await?;
        demo.run(|instructions| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{instructions}");
            let _ = out.flush();
        })
        .await?;
        Ok(())
    })
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = runway::config::load(path)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let server = runway::server::Server::start(config).await?;
        let handle = server.shutdown_handle();
        tokio::spawn(runway::server::signals(handle, server.reloader()));
        server.run().await;
        Ok(())
    })
}
