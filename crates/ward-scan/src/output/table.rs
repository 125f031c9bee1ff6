//! The human format: findings grouped by file, worst first within each,
//! then what to do per rule, then a one-line summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::Report;
use crate::finding::Severity;

fn paint(s: &str, sev: Severity, color: bool) -> String {
    if !color {
        return s.to_owned();
    }
    let code = match sev {
        Severity::Critical => "1;31",
        Severity::High => "31",
        Severity::Medium => "33",
        Severity::Low => "36",
        Severity::Info => "2",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

pub fn table(report: &Report, color: bool) -> String {
    let mut out = String::new();
    let mut by_file: BTreeMap<&str, Vec<&crate::Finding>> = BTreeMap::new();
    for f in &report.findings {
        by_file.entry(f.file.as_str()).or_default().push(f);
    }
    for (file, mut fs) in by_file {
        fs.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.line.cmp(&b.line)));
        let _ = writeln!(
            out,
            "{}",
            if color {
                format!("\x1b[1m{file}\x1b[0m")
            } else {
                file.to_owned()
            }
        );
        for f in fs {
            let sev = format!("{:<8}", f.severity.as_str());
            let at = if f.line > 0 {
                format!("{:>5}", f.line)
            } else {
                "    -".into()
            };
            let _ = writeln!(
                out,
                "  {at}  {}  {:<16} {}",
                paint(&sev, f.severity, color),
                f.rule_id,
                f.message
            );
        }
        out.push('\n');
    }
    let mut rules: Vec<&str> = report.findings.iter().map(|f| f.rule_id.as_str()).collect();
    rules.sort_unstable();
    rules.dedup();
    if !rules.is_empty() {
        let _ = writeln!(out, "How to fix:");
        for id in rules {
            if let Some(r) = report.rules.get(id) {
                let _ = writeln!(out, "  {id:<16} {}: {}", r.title, r.fix);
            }
        }
        out.push('\n');
    }
    for s in &report.skipped {
        let tag = if s.error { "error" } else { "skipped" };
        let _ = writeln!(out, "{tag}: {}: {}", s.file, s.reason);
    }
    let counts: Vec<String> = Severity::ALL
        .iter()
        .rev()
        .filter_map(|s| {
            let n = report.findings.iter().filter(|f| f.severity == *s).count();
            (n > 0).then(|| format!("{n} {s}"))
        })
        .collect();
    let _ = writeln!(
        out,
        "{} finding{}{} in {} file{} scanned ({}){}{}{}",
        report.findings.len(),
        if report.findings.len() == 1 { "" } else { "s" },
        if counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts.join(", "))
        },
        report.files_scanned,
        if report.files_scanned == 1 { "" } else { "s" },
        report
            .scanners
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if report.suppressed.is_empty() {
            String::new()
        } else {
            format!("; {} suppressed", report.suppressed.len())
        },
        if report.baselined == 0 {
            String::new()
        } else {
            format!("; {} in the baseline", report.baselined)
        },
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!("; {} skipped", report.skipped.len())
        },
    );
    out
}
