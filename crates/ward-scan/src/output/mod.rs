//! Report formats: a table for people, JSON for scripts, SARIF 2.1.0 for
//! code-scanning services (GitHub reads rule metadata, locations,
//! `security-severity` and fingerprints from it).

mod sarif;
mod table;

pub use sarif::sarif;
pub use table::table;

use serde_json::{Value, json};

use crate::Report;
use crate::finding::Severity;

/// The JSON format: everything the table shows, plus rule metadata.
pub fn json(report: &Report) -> Value {
    let by_severity: serde_json::Map<String, Value> = Severity::ALL
        .iter()
        .rev()
        .map(|s| {
            (
                s.as_str().to_owned(),
                json!(report.findings.iter().filter(|f| f.severity == *s).count()),
            )
        })
        .collect();
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let rule = report.rules.get(&f.rule_id);
            json!({
                "rule_id": f.rule_id,
                "severity": f.severity,
                "kind": rule.map(|r| r.kind.as_str()),
                "title": rule.map(|r| r.title.as_ref()),
                "message": f.message,
                "file": f.file,
                "line": f.line,
                "object": f.object,
                "fix": rule.map(|r| r.fix.as_ref()),
                "fingerprint": f.fingerprint,
            })
        })
        .collect();
    json!({
        "tool": "ward scan",
        "version": env!("CARGO_PKG_VERSION"),
        "summary": {
            "files_scanned": report.files_scanned,
            "bytes_scanned": report.bytes_scanned,
            "scanners": report.scanners.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "findings": report.findings.len(),
            "by_severity": by_severity,
            "suppressed": report.suppressed.len(),
            "baselined": report.baselined,
            "skipped": report.skipped.len(),
            "errors": report.skipped.iter().filter(|s| s.error).count(),
        },
        "findings": findings,
        "suppressed": report.suppressed,
        "skipped": report.skipped,
        "rules": report.rules.values().collect::<Vec<_>>(),
    })
}
