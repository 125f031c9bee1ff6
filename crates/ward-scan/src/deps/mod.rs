//! Vulnerable dependencies: lock files (`Cargo.lock`, `package-lock.json`,
//! `requirements.txt`, `poetry.lock`, `go.sum`) against an offline advisory
//! database, either RustSec's (`crates/<name>/RUSTSEC-….md`, TOML front
//! matter) or OSV JSON (one advisory per file, any ecosystem).
//!
//! RustSec databases are read and matched by the `rustsec` crate — the
//! library cargo-audit is built on — so Ward and cargo-audit agree on every
//! lock file by construction; OSV ranges are evaluated here, per ecosystem
//! (SemVer for crates.io, npm and Go; PEP 440 for PyPI).

mod lockfiles;
mod osv;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::finding::{Finding, Kind, Rule, Severity};
pub use lockfiles::{Ecosystem, LockError, Package, is_lock_file_name, parse_lock_file};

/// An advisory database, loaded once per scan.
pub enum Database {
    RustSec(Box<rustsec::Database>),
    Osv(osv::OsvDatabase),
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot read the RustSec advisory database at {path}: {message}")]
    RustSec { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Osv { path: PathBuf, message: String },
    #[error(
        "{0} is neither a RustSec advisory database (a crates/ folder of RUSTSEC-*.md files) nor a folder of OSV JSON advisories"
    )]
    Unknown(PathBuf),
}

impl Database {
    /// Opens a database folder, telling the format by its layout.
    pub fn open(path: &Path) -> Result<Database, DatabaseError> {
        if path.join("crates").is_dir() {
            return rustsec::Database::open(path)
                .map(|d| Database::RustSec(Box::new(d)))
                .map_err(|e| DatabaseError::RustSec {
                    path: path.to_owned(),
                    message: e.to_string(),
                });
        }
        if path.is_dir() || path.extension().is_some_and(|e| e == "json") {
            let db = osv::OsvDatabase::open(path)?;
            if db.is_empty() {
                return Err(DatabaseError::Unknown(path.to_owned()));
            }
            return Ok(Database::Osv(db));
        }
        Err(DatabaseError::Unknown(path.to_owned()))
    }

    pub fn len(&self) -> usize {
        match self {
            Database::RustSec(d) => d.iter().count(),
            Database::Osv(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One advisory that applies to one package of a lock file.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub package: String,
    pub version: String,
    pub id: String,
    pub title: String,
    /// `None` for a vulnerability; `unmaintained`, `unsound`, `notice`
    /// for an informational advisory (a warning, as cargo-audit has it).
    pub informational: Option<String>,
    pub patched: Vec<String>,
    pub unaffected: Vec<String>,
    pub aliases: Vec<String>,
    pub url: Option<String>,
    pub cvss: Option<f64>,
    pub description: String,
    /// Line of the package in the lock file (0 when not found).
    pub line: usize,
}

impl Match {
    fn severity(&self) -> Severity {
        if self.informational.is_some() {
            return Severity::Info;
        }
        match self.cvss {
            Some(s) if s >= 9.0 => Severity::Critical,
            Some(s) if s >= 7.0 => Severity::High,
            Some(s) if s >= 4.0 => Severity::Medium,
            Some(s) if s > 0.0 => Severity::Low,
            // No score: treat a vulnerability as high until someone grades it.
            _ => Severity::High,
        }
    }

    /// The rule this advisory becomes in reports.
    pub fn rule(&self) -> Rule {
        let fix = if self.patched.is_empty() {
            "No patched version: replace the dependency or accept the risk with a suppression and a reason.".to_owned()
        } else {
            format!(
                "Upgrade to a version matching {}.",
                self.patched.join(" or ")
            )
        };
        let kind = match &self.informational {
            Some(i) => format!(" ({i})"),
            None => String::new(),
        };
        Rule {
            id: Cow::Owned(self.id.clone()),
            kind: Kind::Deps,
            severity: self.severity(),
            title: Cow::Owned(format!("{}{kind}", self.title)),
            rationale: Cow::Owned(first_paragraph(&self.description)),
            fix: Cow::Owned(fix),
            see_also: Cow::Owned(self.aliases.join(", ")),
            url: self.url.clone().or_else(|| {
                self.id
                    .starts_with("RUSTSEC-")
                    .then(|| format!("https://rustsec.org/advisories/{}.html", self.id))
            }),
        }
    }

    pub fn finding(&self, file: &str, rule: &Rule) -> Finding {
        let what = match &self.informational {
            Some(i) => format!("has an informational advisory ({i})"),
            None => "is vulnerable".to_owned(),
        };
        let patched = if self.patched.is_empty() {
            "no patched version".to_owned()
        } else {
            format!("patched in {}", self.patched.join(", "))
        };
        Finding::new(
            rule,
            file,
            self.line,
            format!("{} {}", self.package, self.version),
            &self.id,
            format!(
                "{} {} {what}: {} {} ({patched})",
                self.package, self.version, self.id, self.title
            ),
        )
    }
}

fn first_paragraph(s: &str) -> String {
    let p = s
        .trim()
        .split("\n\n")
        .next()
        .unwrap_or("")
        .replace('\n', " ");
    if p.chars().count() > 600 {
        let cut: String = p.chars().take(600).collect();
        format!("{cut}…")
    } else {
        p
    }
}

/// What one lock file produced.
#[derive(Debug, Default)]
pub struct Audit {
    pub packages: usize,
    pub vulnerabilities: Vec<Match>,
    pub warnings: Vec<Match>,
}

/// Audits one lock file's text.
pub fn audit(name: &str, text: &str, db: &Database) -> Result<Audit, LockError> {
    let mut audit = Audit::default();
    match db {
        Database::RustSec(db) => {
            if lockfiles::ecosystem_of(name) != Some(Ecosystem::CratesIo) {
                return Ok(audit);
            }
            let lockfile: rustsec::Lockfile =
                text.parse().map_err(|e: rustsec::cargo_lock::Error| {
                    LockError::Parse(crate::finding::without_source_excerpt(&e.to_string()))
                })?;
            audit.packages = lockfile.packages.len();
            let settings = rustsec::report::Settings {
                informational_warnings: vec![
                    rustsec::advisory::Informational::Unmaintained,
                    rustsec::advisory::Informational::Unsound,
                    rustsec::advisory::Informational::Notice,
                ],
                ..Default::default()
            };
            let report = rustsec::Report::generate(db, &lockfile, &settings);
            let lines = lockfiles::CargoLines::new(text);
            for v in report.vulnerabilities.list {
                audit.vulnerabilities.push(from_rustsec(
                    &v.advisory,
                    &v.package,
                    Some(&v.versions),
                    &lines,
                ));
            }
            for w in report.warnings.into_values().flatten() {
                if let Some(a) = &w.advisory {
                    audit
                        .warnings
                        .push(from_rustsec(a, &w.package, w.versions.as_ref(), &lines));
                }
            }
        }
        Database::Osv(db) => {
            let packages = parse_lock_file(name, text)?;
            audit.packages = packages.len();
            for p in &packages {
                for m in db.matches(p) {
                    if m.informational.is_some() {
                        audit.warnings.push(m);
                    } else {
                        audit.vulnerabilities.push(m);
                    }
                }
            }
        }
    }
    let key = |m: &Match| (m.package.clone(), m.version.clone(), m.id.clone());
    audit.vulnerabilities.sort_by_key(key);
    audit.vulnerabilities.dedup_by_key(|m| key(m));
    audit.warnings.sort_by_key(key);
    audit.warnings.dedup_by_key(|m| key(m));
    Ok(audit)
}

fn from_rustsec(
    a: &rustsec::advisory::Metadata,
    p: &rustsec::package::Package,
    versions: Option<&rustsec::advisory::Versions>,
    lines: &lockfiles::CargoLines,
) -> Match {
    let (patched, unaffected) = versions
        .map(|v| {
            (
                v.patched().iter().map(ToString::to_string).collect(),
                v.unaffected().iter().map(ToString::to_string).collect(),
            )
        })
        .unwrap_or_default();
    Match {
        package: p.name.to_string(),
        version: p.version.to_string(),
        id: a.id.to_string(),
        title: a.title.clone(),
        informational: a.informational.as_ref().map(|i| i.as_str().to_owned()),
        patched,
        unaffected,
        aliases: a.aliases.iter().map(ToString::to_string).collect(),
        url: a.url.as_ref().map(ToString::to_string),
        cvss: a.cvss.as_ref().map(|c| c.score()),
        description: a.description.clone(),
        line: lines.line_of(p.name.as_str(), &p.version.to_string()),
    }
}
