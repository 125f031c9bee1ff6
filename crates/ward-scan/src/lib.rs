//! `ward scan`: the checks teams run in CI before anything ships —
//! misconfigured Kubernetes manifests, Dockerfiles, Ward's own configs and
//! Cedar policies, hard-coded secrets and vulnerable dependencies — in one
//! pass, with one output (table, JSON, SARIF 2.1.0), one baseline and one
//! suppression syntax (`ward:ignore ID reason`).
//!
//! The scan reads every input once, in parallel (`jobs` threads), runs the
//! per-file scanners as it goes, and then the Kubernetes rules over all
//! objects together, since several need the whole picture (NetworkPolicies,
//! ServiceAccounts, RoleBindings).

pub mod baseline;
pub mod deps;
pub mod dockerfile;
pub mod finding;
pub mod k8s;
pub mod output;
pub mod secrets;
pub mod wardcfg;
pub mod yaml;

mod files;
mod suppress;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use finding::{Finding, Kind, Rule, Severity, Skipped};

/// Which scanners run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Pick by what each file is (`ward scan PATH`).
    Auto,
    /// One scanner (`ward scan k8s PATH`): every file given is fed to it.
    Only(Kind),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub selection: Selection,
    /// Advisory database for `deps` (RustSec or OSV folder).
    pub advisories: Option<PathBuf>,
    /// Worker threads (at least 1).
    pub jobs: usize,
    /// Files above this size are skipped with a reason.
    pub max_file_bytes: u64,
    /// Secrets: also scan the git history of each input that is a work tree.
    pub git_history: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            selection: Selection::Auto,
            advisories: None,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_file_bytes: 10 << 20,
            git_history: false,
        }
    }
}

/// A finding an inline `ward:ignore` suppressed, with its reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Suppressed {
    pub finding: Finding,
    pub reason: String,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Report {
    /// Every rule a finding refers to, by ID.
    pub rules: BTreeMap<String, Rule>,
    /// Sorted by file, line, rule.
    pub findings: Vec<Finding>,
    pub suppressed: Vec<Suppressed>,
    /// Findings a baseline accepted (count only).
    pub baselined: usize,
    pub skipped: Vec<Skipped>,
    pub files_scanned: usize,
    pub bytes_scanned: u64,
    /// Which scanners ran on at least one file.
    pub scanners: BTreeSet<Kind>,
}

impl Report {
    /// Whether a file could not be scanned (the result is incomplete).
    pub fn has_errors(&self) -> bool {
        self.skipped.iter().any(|s| s.error)
    }

    /// Findings at or above `severity`.
    pub fn at_or_above(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity >= severity)
            .count()
    }
}

/// A scan that could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error(transparent)]
    Database(#[from] deps::DatabaseError),
}

/// Progress: files done of files found. Called from worker threads.
pub type ProgressFn<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// What one file produced.
#[derive(Default)]
struct FileResult {
    findings: Vec<Finding>,
    objects: Vec<k8s::Object>,
    skipped: Vec<Skipped>,
    suppressions: suppress::Suppressions,
    scanners: BTreeSet<Kind>,
    bytes: u64,
    scanned: bool,
    /// Advisory rules (built per match).
    rules: Vec<Rule>,
}

pub fn scan(
    inputs: &[PathBuf],
    opts: &Options,
    progress: Option<ProgressFn<'_>>,
) -> Result<Report, ScanError> {
    for i in inputs {
        if std::fs::symlink_metadata(i).is_err() {
            return Err(ScanError::Missing(i.clone()));
        }
    }
    let wants = |k: Kind| match &opts.selection {
        Selection::Auto => true,
        Selection::Only(only) => *only == k,
    };
    let db = match (&opts.advisories, wants(Kind::Deps)) {
        (Some(dir), true) => Some(deps::Database::open(dir)?),
        _ => None,
    };
    let (entries, mut skipped) = files::collect(inputs);
    let total = entries.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<FileResult>> = Mutex::new(Vec::with_capacity(total));
    let jobs = opts.jobs.clamp(1, 64);
    std::thread::scope(|s| {
        for _ in 0..jobs.min(total.max(1)) {
            s.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(entry) = entries.get(i) else { break };
                    mine.push(scan_file(entry, opts, db.as_ref()));
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(p) = progress {
                        p(n, total);
                    }
                }
                if let Ok(mut r) = results.lock() {
                    r.extend(mine);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();

    let mut report = Report::default();
    let mut findings = Vec::new();
    let mut objects = Vec::new();
    let mut suppressions: HashMap<String, suppress::Suppressions> = HashMap::new();
    for r in results {
        findings.extend(r.findings);
        objects.extend(r.objects);
        skipped.extend(r.skipped);
        report.scanners.extend(r.scanners);
        report.bytes_scanned += r.bytes;
        report.files_scanned += usize::from(r.scanned);
        for rule in r.rules {
            report.rules.entry(rule.id.to_string()).or_insert(rule);
        }
        if let Some((file, s)) = r.suppressions.by_file() {
            suppressions.insert(file, s);
        }
    }
    if !objects.is_empty() {
        objects.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        findings.extend(k8s::check(&objects));
    }
    if opts.git_history && wants(Kind::Secrets) {
        for input in inputs.iter().filter(|i| i.is_dir()) {
            match files::git_history(input) {
                Ok(history) => {
                    report.scanners.insert(Kind::Secrets);
                    let known: BTreeSet<String> =
                        findings.iter().map(|f| f.fingerprint.clone()).collect();
                    let mut seen = known;
                    for f in history {
                        if seen.insert(f.fingerprint.clone()) {
                            findings.push(f);
                        }
                    }
                }
                Err(reason) => skipped.push(Skipped {
                    file: input.display().to_string(),
                    reason,
                    error: true,
                }),
            }
        }
    }
    for rule in k8s::rules()
        .chain(dockerfile::RULES.iter())
        .chain(secrets::RULES.iter())
        .chain(wardcfg::RULES.iter())
        .chain(std::iter::once(&suppress::RULE))
    {
        report
            .rules
            .entry(rule.id.to_string())
            .or_insert_with(|| rule.clone());
    }
    let (kept, suppressed, problems) = suppress::apply(findings, &suppressions);
    let mut kept = kept;
    kept.extend(problems);
    kept.sort_by(|a, b| {
        (&a.file, a.line, &a.rule_id, &a.object).cmp(&(&b.file, b.line, &b.rule_id, &b.object))
    });
    kept.dedup_by(|a, b| a.fingerprint == b.fingerprint && a.line == b.line);
    report.findings = kept;
    report.suppressed = suppressed;
    skipped.sort_by(|a, b| a.file.cmp(&b.file));
    report.skipped = skipped;
    // Only rules something refers to go in reports.
    let used: BTreeSet<&str> = report
        .findings
        .iter()
        .map(|f| f.rule_id.as_str())
        .chain(report.suppressed.iter().map(|s| s.finding.rule_id.as_str()))
        .collect();
    report.rules.retain(|id, _| used.contains(id.as_str()));
    Ok(report)
}

fn scan_file(entry: &files::Entry, opts: &Options, db: Option<&deps::Database>) -> FileResult {
    let mut r = FileResult::default();
    let display = entry.display.as_str();
    let text = match files::read_text(&entry.path, opts.max_file_bytes) {
        Ok(t) => t,
        Err(reason) => {
            r.skipped.push(Skipped {
                file: display.to_owned(),
                reason: reason.message,
                error: reason.error,
            });
            return r;
        }
    };
    r.bytes = text.len() as u64;
    r.scanned = true;
    r.suppressions = suppress::Suppressions::parse(display, &text);
    let name = entry
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let explicit = entry.named_explicitly;
    let lower = name.to_ascii_lowercase();
    let is_yaml = lower.ends_with(".yaml") || lower.ends_with(".yml");
    let selection = &opts.selection;
    let only = |k: Kind| matches!(selection, Selection::Only(x) if *x == k);
    let auto = matches!(selection, Selection::Auto);

    // Kubernetes
    let k8s_candidate = (is_yaml || lower.ends_with(".json") || explicit)
        && text.contains("apiVersion")
        && text.contains("kind");
    if (only(Kind::K8s) && (is_yaml || explicit || k8s_candidate))
        || (auto && is_yaml && k8s_candidate)
    {
        if text.contains("{{")
            && (only(Kind::K8s) || auto)
            && text.contains("}}")
            && !lower.ends_with(".json")
        {
            r.skipped.push(Skipped {
                file: display.to_owned(),
                reason: "a template, not a manifest (render it first: `helm template` or `kustomize build`)".into(),
                error: false,
            });
        } else {
            match k8s::load(display, &text) {
                Ok(objs) if objs.is_empty() => {
                    if only(Kind::K8s) {
                        r.skipped.push(Skipped {
                            file: display.to_owned(),
                            reason: "no Kubernetes objects (no document with apiVersion and kind)"
                                .into(),
                            error: false,
                        });
                    }
                }
                Ok(objs) => {
                    r.scanners.insert(Kind::K8s);
                    r.objects = objs;
                }
                Err(e) => r.skipped.push(Skipped {
                    file: display.to_owned(),
                    reason: e.to_string(),
                    error: true,
                }),
            }
        }
    } else if only(Kind::K8s) && explicit {
        r.skipped.push(Skipped {
            file: display.to_owned(),
            reason: "no Kubernetes objects (no document with apiVersion and kind)".into(),
            error: false,
        });
    }

    // Dockerfiles
    if (only(Kind::Dockerfile) && (explicit || dockerfile::is_dockerfile_name(name)))
        || (auto && dockerfile::is_dockerfile_name(name))
    {
        r.scanners.insert(Kind::Dockerfile);
        r.findings.extend(dockerfile::check(display, &text));
    }

    // Ward's configs and policies
    if only(Kind::Ward) || auto {
        match wardcfg::classify(&entry.path, &text) {
            Ok(Some(what)) => {
                r.scanners.insert(Kind::Ward);
                wardcfg::check(&entry.path, display, &text, what, &mut r.findings);
            }
            Ok(None) if only(Kind::Ward) && explicit => r.skipped.push(Skipped {
                file: display.to_owned(),
                reason: "not a Ward file (a .cedar policy, or a server or proxy .toml config)"
                    .into(),
                error: false,
            }),
            Ok(None) => {}
            // A broken .toml is only the Ward scanner's business when it was
            // asked to read it.
            Err(reason) if only(Kind::Ward) => r.skipped.push(Skipped {
                file: display.to_owned(),
                reason,
                error: true,
            }),
            Err(_) => {}
        }
    }

    // Dependencies
    let lock = deps::is_lock_file_name(name);
    if (only(Kind::Deps) && (lock || explicit)) || (auto && lock) {
        match db {
            Some(db) => match deps::audit(name, &text, db) {
                Ok(a) => {
                    r.scanners.insert(Kind::Deps);
                    for m in a.vulnerabilities.iter().chain(a.warnings.iter()) {
                        let rule = m.rule();
                        r.findings.push(m.finding(display, &rule));
                        r.rules.push(rule);
                    }
                }
                Err(e) => r.skipped.push(Skipped {
                    file: display.to_owned(),
                    reason: e.to_string(),
                    error: !matches!(e, deps::LockError::Unknown) || explicit,
                }),
            },
            None => r.skipped.push(Skipped {
                file: display.to_owned(),
                reason: "a lock file: give --advisories DIR (a RustSec or OSV database) to check its dependencies".into(),
                error: only(Kind::Deps),
            }),
        }
    }

    // Secrets
    if only(Kind::Secrets) || auto {
        r.scanners.insert(Kind::Secrets);
        secrets::scan_text(display, &entry.relative, &text, 0, &mut r.findings);
    }
    r
}
