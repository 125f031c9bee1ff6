//! SARIF 2.1.0 (OASIS), as GitHub code scanning reads it: one run, the
//! rules with help and `security-severity`, results with a location and
//! a line-independent fingerprint, in-source suppressions with their
//! justification, and skipped inputs as tool notifications.

use serde_json::{Value, json};

use crate::Report;
use crate::finding::{Finding, Rule, Severity};

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// A path as a URI reference: relative paths stay relative (to the
/// directory the scan ran in), absolute ones become `file://` URIs.
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=@".contains(&b);
        if keep {
            out.push(b as char);
        } else if b == b':' {
            out.push_str("%3A");
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('/') {
        format!("file://{out}")
    } else {
        out
    }
}

fn location(file: &str, line: usize) -> Value {
    let mut phys = json!({ "artifactLocation": { "uri": uri(file) } });
    if line > 0 {
        phys["region"] = json!({ "startLine": line });
    }
    json!({ "physicalLocation": phys })
}

fn rule_json(r: &Rule) -> Value {
    let mut help = format!("{}\n\nFix: {}", r.rationale, r.fix);
    if !r.see_also.is_empty() {
        help.push_str(&format!("\n\nSee also: {}", r.see_also));
    }
    let mut v = json!({
        "id": r.id,
        "name": r.title.split_whitespace().map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
        }).collect::<String>().chars().filter(|c| c.is_alphanumeric()).collect::<String>(),
        "shortDescription": { "text": r.title },
        "fullDescription": { "text": r.rationale },
        "help": { "text": help, "markdown": help },
        "defaultConfiguration": { "level": level(r.severity) },
        "properties": {
            "tags": ["security", r.kind.as_str()],
            "precision": "high",
            "problem.severity": match level(r.severity) { "error" => "error", "warning" => "warning", _ => "recommendation" },
            "security-severity": r.severity.score(),
        },
    });
    if let Some(u) = &r.url {
        v["helpUri"] = json!(u);
    }
    v
}

fn result(f: &Finding, rule_index: Option<usize>) -> Value {
    let mut v = json!({
        "ruleId": f.rule_id,
        "level": level(f.severity),
        "message": { "text": f.message },
        "locations": [location(&f.file, f.line)],
        "partialFingerprints": { "wardFingerprint/v1": f.fingerprint },
        "properties": { "severity": f.severity.as_str(), "object": f.object },
    });
    if let Some(i) = rule_index {
        v["ruleIndex"] = json!(i);
    }
    v
}

pub fn sarif(report: &Report) -> Value {
    let rules: Vec<&Rule> = report.rules.values().collect();
    let index = |id: &str| rules.iter().position(|r| r.id == id);
    let mut results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| result(f, index(&f.rule_id)))
        .collect();
    for s in &report.suppressed {
        let mut v = result(&s.finding, index(&s.finding.rule_id));
        v["suppressions"] = json!([{ "kind": "inSource", "justification": s.reason }]);
        results.push(v);
    }
    let notifications: Vec<Value> = report
        .skipped
        .iter()
        .map(|s| {
            json!({
                "level": if s.error { "error" } else { "note" },
                "message": { "text": format!("{}: {}", s.file, s.reason) },
                "locations": [location(&s.file, 0)],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "ward-scan",
                "fullName": "Ward scan (Kubernetes, Dockerfile, Ward config, secrets, dependencies)",
                "version": env!("CARGO_PKG_VERSION"),
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/ward-security/ward",
                "rules": rules.iter().map(|r| rule_json(r)).collect::<Vec<_>>(),
            }},
            "invocations": [{
                "executionSuccessful": !report.has_errors(),
                "toolExecutionNotifications": notifications,
            }],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::uri;

    #[test]
    fn uris() {
        assert_eq!(uri("../a b/c.yaml"), "../a%20b/c.yaml");
        assert_eq!(uri("/abs/x"), "file:///abs/x");
        assert_eq!(uri("c:x"), "c%3Ax");
    }
}
