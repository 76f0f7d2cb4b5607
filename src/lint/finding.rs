//! What a lint rule reports: a [`Finding`] with a stable id, a [`Severity`], the config key at fault, and
//! three sentences for people (what is wrong, what an attacker could do with it, how to fix it).

use serde::Serialize;

/// How much a finding matters. Ordered: `Info < Warning < Error`, so `--fail-on` is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; not a weakness by itself (a report-mode route).
    Info,
    /// Weaker than it should be, or likely not what was meant.
    Warning,
    /// Lets a pipeline or principal outside the intended set through.
    Error,
}

impl Severity {
    /// The name used in output and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lint rule: its id never changes (CI pipelines and GitLab's fingerprints depend on it), and neither
/// does its severity, so `--fail-on` means the same thing from one run to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Stable id, e.g. `gitlab-unpinned-project`.
    pub id: &'static str,
    /// Severity of every finding of this rule.
    pub severity: Severity,
    /// One line: what the rule looks for.
    pub summary: &'static str,
    /// The provider documentation (or standard) the rule is built on.
    pub source: &'static str,
}

impl Rule {
    /// A finding of this rule at `key`.
    pub fn at(&self, key: impl Into<String>, message: impl Into<String>) -> FindingBuilder {
        FindingBuilder { rule: *self, key: key.into(), message: message.into() }
    }
}

/// A finding missing its risk and fix (kept in two steps so each call site reads as three sentences).
#[derive(Debug)]
pub struct FindingBuilder {
    rule: Rule,
    key: String,
    message: String,
}

impl FindingBuilder {
    /// Completes the finding.
    pub fn explain(self, risk: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            id: self.rule.id,
            severity: self.rule.severity,
            key: self.key,
            message: self.message,
            risk: risk.into(),
            fix: fix.into(),
        }
    }
}

/// One weakness in a config (contract section 1: `id`, `severity`, `key`, `message`, `risk`, `fix`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's stable id.
    pub id: &'static str,
    /// The rule's severity.
    pub severity: Severity,
    /// The config key at fault, as config errors name it (`routes[2].allow[0]`).
    pub key: String,
    /// What is wrong, with the values involved.
    pub message: String,
    /// What an attacker (or an accident) could do because of it.
    pub risk: String,
    /// How to fix it.
    pub fix: String,
}

/// How many findings of each severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Errors.
    pub errors: usize,
    /// Warnings.
    pub warnings: usize,
    /// Infos.
    pub infos: usize,
}

impl Counts {
    /// Counts `findings` by severity.
    pub fn of(findings: &[Finding]) -> Counts {
        findings.iter().fold(Counts::default(), |mut c, f| {
            match f.severity {
                Severity::Error => c.errors += 1,
                Severity::Warning => c.warnings += 1,
                Severity::Info => c.infos += 1,
            }
            c
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_for_fail_on() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Error);
        assert_eq!(serde_json::to_string(&Severity::Warning).ok().as_deref(), Some("\"warning\""));
    }

    #[test]
    fn counts_by_severity() {
        let rule = |severity| Rule { id: "x", severity, summary: "", source: "" };
        let f = |severity| rule(severity).at("k", "m").explain("r", "f");
        let findings = [f(Severity::Error), f(Severity::Info), f(Severity::Error)];
        assert_eq!(Counts::of(&findings), Counts { errors: 2, warnings: 0, infos: 1 });
    }
}
