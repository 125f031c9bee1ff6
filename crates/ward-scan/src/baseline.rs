//! Baselines: the findings a team has accepted, by fingerprint, so CI fails
//! only on new ones. Fingerprints leave line numbers out, so edits above a
//! finding do not resurrect it.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Report;

#[derive(Debug, Serialize, Deserialize)]
pub struct Baseline {
    pub version: u32,
    pub findings: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub fingerprint: String,
    pub rule_id: String,
    pub file: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read the baseline {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the baseline {path} is not a Ward baseline: {message} (write one with --write-baseline)"
    )]
    Parse { path: String, message: String },
    #[error("the baseline {path} is version {version}; this Ward reads version 1")]
    Version { path: String, version: u32 },
    #[error("cannot write the baseline {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
        path: p.clone(),
        source,
    })?;
    let b: Baseline = serde_json::from_str(&text).map_err(|e| BaselineError::Parse {
        path: p.clone(),
        message: e.to_string(),
    })?;
    if b.version != 1 {
        return Err(BaselineError::Version {
            path: p,
            version: b.version,
        });
    }
    Ok(b)
}

/// Drops the findings the baseline holds; returns how many.
pub fn apply(report: &mut Report, baseline: &Baseline) -> usize {
    let known: BTreeSet<&str> = baseline
        .findings
        .iter()
        .map(|e| e.fingerprint.as_str())
        .collect();
    let before = report.findings.len();
    report
        .findings
        .retain(|f| !known.contains(f.fingerprint.as_str()));
    let n = before - report.findings.len();
    report.baselined += n;
    n
}

/// Writes every current finding as the new baseline (atomically: a
/// temporary file renamed over the old one).
pub fn write(path: &Path, report: &Report) -> Result<usize, BaselineError> {
    let b = Baseline {
        version: 1,
        findings: report
            .findings
            .iter()
            .map(|f| Entry {
                fingerprint: f.fingerprint.clone(),
                rule_id: f.rule_id.clone(),
                file: f.file.clone(),
                message: f.message.clone(),
            })
            .collect(),
    };
    let p = path.display().to_string();
    let text = serde_json::to_string_pretty(&b).unwrap_or_default() + "\n";
    let tmp = path.with_extension("tmp-ward");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| BaselineError::Write { path: p, source })?;
    Ok(b.findings.len())
}
