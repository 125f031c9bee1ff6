//! What a scan reports: rules (static metadata, or built from an advisory),
//! findings that point at a file and line, and the inputs it could not read.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// How bad a finding is. Ordered, so `--fail-on high` is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The score GitHub code scanning reads (`security-severity`) to sort
    /// alerts into its own critical/high/medium/low bands.
    pub fn score(self) -> &'static str {
        match self {
            Severity::Info => "0.0",
            Severity::Low => "3.0",
            Severity::Medium => "5.5",
            Severity::High => "8.0",
            Severity::Critical => "9.5",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("{s:?} is not a severity: use info, low, medium, high or critical")
            })
    }
}

/// Which scanner a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    K8s,
    Dockerfile,
    Ward,
    Secrets,
    Deps,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::K8s => "k8s",
            Kind::Dockerfile => "dockerfile",
            Kind::Ward => "ward",
            Kind::Secrets => "secrets",
            Kind::Deps => "deps",
        }
    }
}

/// A check's metadata: what it finds, why that matters and how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: Cow<'static, str>,
    pub kind: Kind,
    pub severity: Severity,
    /// One line: what the rule finds.
    pub title: Cow<'static, str>,
    /// Why it matters.
    pub rationale: Cow<'static, str>,
    /// What to change.
    pub fix: Cow<'static, str>,
    /// The equivalent checks of other tools (checkov, kube-linter, hadolint,
    /// gitleaks), so a team moving over can map its suppressions.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub see_also: Cow<'static, str>,
    /// A page about the issue (advisories carry one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Rule {
    /// A rule written into the scanner (all but dependency advisories).
    pub const fn fixed(
        id: &'static str,
        kind: Kind,
        severity: Severity,
        title: &'static str,
        rationale: &'static str,
        fix: &'static str,
        see_also: &'static str,
    ) -> Rule {
        Rule {
            id: Cow::Borrowed(id),
            kind,
            severity,
            title: Cow::Borrowed(title),
            rationale: Cow::Borrowed(rationale),
            fix: Cow::Borrowed(fix),
            see_also: Cow::Borrowed(see_also),
            url: None,
        }
    }
}

/// A scanner's rule by ID. IDs are constants of the scanner that asks;
/// a mistyped one is caught in debug builds (every rule's fixture test
/// runs there) rather than silently reported under the table's first rule.
pub(crate) fn rule_by_id(rules: &'static [Rule], id: &str) -> &'static Rule {
    let found = rules.iter().find(|r| r.id == id);
    debug_assert!(found.is_some(), "no rule {id}");
    found.unwrap_or(&rules[0])
}

/// One problem found at one place.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule_id: String,
    pub severity: Severity,
    /// What is wrong here, in words that name the object (never a secret's value).
    pub message: String,
    /// The file, as the user named it (or relative to the directory they named).
    pub file: String,
    /// 1-based line, 0 when the whole file is meant.
    pub line: usize,
    /// The object the finding is about (`Deployment default/frontend`,
    /// `container server`, `stage 2`, a package), part of the fingerprint.
    pub object: String,
    /// Stable across edits that move the finding: rule, file, object and a
    /// key the scanner chose, hashed. Baselines and SARIF use it.
    pub fingerprint: String,
}

impl Finding {
    /// Builds a finding; `key` distinguishes two findings of one rule on one
    /// object (the container name, the secret's hash) without line numbers,
    /// so a baseline survives lines being added above.
    pub fn new(
        rule: &Rule,
        file: &str,
        line: usize,
        object: impl Into<String>,
        key: &str,
        message: impl Into<String>,
    ) -> Finding {
        let object = object.into();
        let mut h = Sha256::new();
        for part in [rule.id.as_ref(), file, object.as_str(), key] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        Finding {
            rule_id: rule.id.to_string(),
            severity: rule.severity,
            message: message.into(),
            file: file.to_owned(),
            line,
            object,
            fingerprint: hex::encode(&h.finalize()[..16]),
        }
    }

    pub fn with_severity(mut self, severity: Severity) -> Finding {
        self.severity = severity;
        self
    }
}

/// An input that was not scanned, and why (a parse error, a binary file,
/// a file over the size limit, a symlink loop).
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
    /// An error means the scan is incomplete (the exit code says so); a
    /// plain skip (binary, too large, not a manifest) does not.
    pub error: bool,
}

/// A parser's error without the source excerpt some parsers quote (TOML
/// errors print the offending line, which may hold a password): the
/// position line and the message line only.
pub fn without_source_excerpt(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('|')
                && !l.contains(" | ")
                && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [first, .., last] => format!("{first}: {last}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_excerpts_are_dropped() {
        let e = toml::from_str::<toml::Table>("a = 1\npassword = \"hunter2-secret\nb = 2\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hunter2"),
            "the excerpt this guards against: {e}"
        );
        let clean = without_source_excerpt(&e);
        assert!(!clean.contains("hunter2"), "{clean}");
        assert!(clean.contains("line 2"), "{clean}");
    }
}
