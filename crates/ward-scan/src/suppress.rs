//! Inline suppressions: `ward:ignore ID[,ID…] reason` in a comment on the
//! finding's line or the line above it, or `ward:ignore-file ID reason`
//! anywhere in the file. A suppression without a reason is not applied —
//! it is itself reported, so "ignore" never means "nobody knows why".

use std::collections::HashMap;

use crate::Suppressed;
use crate::finding::{Finding, Kind, Rule, Severity};

pub static RULE: Rule = Rule::fixed(
    "SCAN001",
    Kind::Ward,
    Severity::Low,
    "Suppression without a reason",
    "A `ward:ignore` with no reason is not applied: the next reader could not tell a deliberate exception from a silenced alarm.",
    "Write why after the rule ID: `# ward:ignore K8S044 the shop's public entry point`.",
    "checkov skip comments, gitleaks:allow",
);

#[derive(Debug, Clone)]
struct Entry {
    ids: Vec<String>,
    reason: String,
    line: usize,
    whole_file: bool,
}

/// The suppressions of one file (or of several, after merging).
#[derive(Debug, Default)]
pub struct Suppressions {
    file: String,
    entries: Vec<Entry>,
}

impl Suppressions {
    pub fn parse(file: &str, text: &str) -> Suppressions {
        let mut entries = Vec::new();
        if text.contains("ward:ignore") {
            for (i, l) in text.lines().enumerate() {
                let Some(pos) = l.find("ward:ignore") else {
                    continue;
                };
                let rest = &l[pos + "ward:ignore".len()..];
                let (whole_file, rest) = match rest.strip_prefix("-file") {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                let rest = rest.trim_start_matches([' ', '=', ':']);
                let mut parts = rest.splitn(2, char::is_whitespace);
                let ids: Vec<String> = parts
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                let reason = parts
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_end_matches("-->")
                    .trim_end_matches("*/")
                    .trim()
                    .to_owned();
                if !ids.is_empty() {
                    entries.push(Entry {
                        ids,
                        reason,
                        line: i + 1,
                        whole_file,
                    });
                }
            }
        }
        Suppressions {
            file: file.to_owned(),
            entries,
        }
    }

    pub fn by_file(self) -> Option<(String, Suppressions)> {
        (!self.entries.is_empty()).then(|| (self.file.clone(), self))
    }
}

/// Splits findings into kept and suppressed; suppressions without a
/// reason become findings of their own.
pub fn apply(
    findings: Vec<Finding>,
    all: &HashMap<String, Suppressions>,
) -> (Vec<Finding>, Vec<Suppressed>, Vec<Finding>) {
    let mut kept = Vec::new();
    let mut suppressed = Vec::new();
    for f in findings {
        let hit = all.get(&f.file).and_then(|s| {
            s.entries.iter().find(|e| {
                e.ids.contains(&f.rule_id)
                    && (e.whole_file || e.line == f.line || e.line + 1 == f.line)
            })
        });
        match hit {
            Some(e) if !e.reason.is_empty() => suppressed.push(Suppressed {
                finding: f,
                reason: e.reason.clone(),
            }),
            _ => kept.push(f),
        }
    }
    let mut problems = Vec::new();
    for (file, s) in all {
        for e in s.entries.iter().filter(|e| e.reason.is_empty()) {
            problems.push(Finding::new(
                &RULE,
                file,
                e.line,
                "",
                &e.ids.join(","),
                format!(
                    "ward:ignore {} has no reason, so it is not applied",
                    e.ids.join(",")
                ),
            ));
        }
    }
    (kept, suppressed, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(line: usize, id: &str) -> Finding {
        let r = Rule::fixed("X", Kind::K8s, Severity::Low, "", "", "", "");
        let mut f = Finding::new(&r, "f.yaml", line, "o", "", "m");
        f.rule_id = id.to_owned();
        f
    }

    #[test]
    fn same_line_line_above_and_file_wide() {
        let text = "a\n# ward:ignore K8S001 demo only\nb\nc # ward:ignore K8S002,K8S003 reviewed\n# ward:ignore-file K8S009 sized by the operator\n# ward:ignore K8S004\n";
        let mut all = HashMap::new();
        all.insert("f.yaml".to_owned(), Suppressions::parse("f.yaml", text));
        let fs = vec![
            finding(3, "K8S001"),
            finding(4, "K8S003"),
            finding(1, "K8S009"),
            finding(1, "K8S001"),
            finding(7, "K8S004"),
        ];
        let (kept, sup, problems) = apply(fs, &all);
        assert_eq!(sup.len(), 3);
        assert_eq!(sup[0].reason, "demo only");
        let kept: Vec<_> = kept.iter().map(|f| (f.rule_id.as_str(), f.line)).collect();
        assert_eq!(
            kept,
            [("K8S001", 1), ("K8S004", 7)],
            "no reason, no suppression"
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].rule_id, "SCAN001");
    }
}
