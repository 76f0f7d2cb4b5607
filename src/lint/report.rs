//! The three ways `runway lint` prints its findings: text for people, JSON for scripts
//! (`{"findings":[...]}`, contract section 1), and GitLab's Code Quality report (the subset of the
//! CodeClimate issue format GitLab reads: `description`, `check_name`, `fingerprint`, `severity`,
//! `location.path`, `location.lines.begin`; docs.gitlab.com/ci/testing/code_quality, "Code Quality report
//! format"), so a config repository's merge requests show the findings inline.

use std::fmt::Write as _;

use aws_lc_rs::digest;
use serde::Serialize;
use serde_json::json;

use super::finding::{Counts, Finding, Severity};
use super::locate::Locator;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Text,
    /// `{"findings":[...]}`.
    Json,
    /// GitLab Code Quality (CodeClimate JSON array).
    Gitlab,
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Serializing the findings failed.
    #[error("encoding the report as JSON")]
    Json(#[from] serde_json::Error),
}

/// The config file the findings are about: its path as the user gave it, and its text when it could be read
/// (for line numbers).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Path as given on the command line (GitLab matches it against the repository's files).
    pub path: &'a str,
    /// The file's text, if readable.
    pub text: Option<&'a str>,
}

/// Renders `findings` in `format`; the output ends with a newline.
pub fn render(findings: &[Finding], format: Format, source: Source<'_>) -> Result<String, ReportError> {
    match format {
        Format::Text => Ok(text(findings, source.path)),
        Format::Json => Ok(serde_json::to_string_pretty(&json!({ "findings": findings }))? + "\n"),
        Format::Gitlab => Ok(serde_json::to_string_pretty(&gitlab(findings, source))? + "\n"),
    }
}

fn text(findings: &[Finding], path: &str) -> String {
    let mut out = String::new();
    for f in findings {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}[{}] {}: {}", f.severity, f.id, f.key, f.message);
        let _ = writeln!(out, "  risk: {}", f.risk);
        let _ = writeln!(out, "  fix:  {}\n", f.fix);
    }
    let c = Counts::of(findings);
    if findings.is_empty() {
        let _ = writeln!(out, "{path}: no findings");
    } else {
        let _ = writeln!(out, "{path}: {} error(s), {} warning(s), {} info", c.errors, c.warnings, c.infos);
    }
    out
}

/// One issue of GitLab's Code Quality report. `type`, `categories` and `content` are CodeClimate fields
/// GitLab ignores; they keep the report a valid CodeClimate one for other tools.
#[derive(Debug, Serialize)]
struct Issue<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    check_name: &'static str,
    description: String,
    content: Content,
    categories: [&'static str; 1],
    fingerprint: String,
    severity: &'static str,
    location: Location<'a>,
}

#[derive(Debug, Serialize)]
struct Content {
    body: String,
}

#[derive(Debug, Serialize)]
struct Location<'a> {
    path: &'a str,
    lines: Lines,
}

#[derive(Debug, Serialize)]
struct Lines {
    begin: usize,
}

fn gitlab<'a>(findings: &[Finding], source: Source<'a>) -> Vec<Issue<'a>> {
    let locator = Locator::new(source.text.unwrap_or_default());
    findings
        .iter()
        .map(|f| Issue {
            kind: "issue",
            check_name: f.id,
            description: format!("{}: {}", f.key, f.message),
            content: Content { body: format!("**Risk:** {}\n\n**Fix:** {}", f.risk, f.fix) },
            categories: ["Security"],
            fingerprint: fingerprint(f),
            severity: gitlab_severity(f.severity),
            location: Location { path: source.path, lines: Lines { begin: locator.line(&f.key) } },
        })
        .collect()
}

/// GitLab's scale is info, minor, major, critical, blocker.
fn gitlab_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "critical",
        Severity::Warning => "major",
        Severity::Info => "info",
    }
}

/// SHA-256 (hex) of the rule id and the key: the same finding keeps its fingerprint from one pipeline to
/// the next, so GitLab shows it as existing rather than new, whatever else in the file moved.
pub fn fingerprint(finding: &Finding) -> String {
    let input = format!("{}\0{}", finding.id, finding.key);
    digest::digest(&digest::SHA256, input.as_bytes()).as_ref().iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}
