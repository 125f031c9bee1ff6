//! OSV advisories (https://ossf.github.io/osv-schema/): a folder of JSON
//! files, one advisory each (as osv.dev's exports and RustSec's OSV
//! branch ship them), matched with the range algorithm the schema gives.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

use super::lockfiles::{Ecosystem, Package, normalize_python_name};
use super::{DatabaseError, Match};

#[derive(Debug, Deserialize)]
struct Advisory {
    id: String,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    severity: Vec<SeverityEntry>,
    #[serde(default)]
    affected: Vec<Affected>,
    #[serde(default)]
    references: Vec<Reference>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct SeverityEntry {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

#[derive(Debug, Deserialize)]
struct Reference {
    #[serde(rename = "type", default)]
    kind: String,
    url: String,
}

#[derive(Debug, Deserialize)]
struct Affected {
    package: Option<PackageRef>,
    #[serde(default)]
    ranges: Vec<Range>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct PackageRef {
    ecosystem: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Range {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Event {
    introduced: Option<String>,
    fixed: Option<String>,
    last_affected: Option<String>,
}

pub struct OsvDatabase {
    advisories: Vec<Advisory>,
    /// (ecosystem, normalized name) → advisories.
    index: HashMap<(String, String), Vec<usize>>,
}

fn key_name(ecosystem: &str, name: &str) -> String {
    if ecosystem == "PyPI" {
        normalize_python_name(name)
    } else {
        name.to_owned()
    }
}

impl OsvDatabase {
    pub fn open(path: &Path) -> Result<OsvDatabase, DatabaseError> {
        let mut advisories = Vec::new();
        let files: Vec<std::path::PathBuf> = if path.is_file() {
            vec![path.to_owned()]
        } else {
            walkdir::WalkDir::new(path)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "json")
                })
                .map(|e| e.into_path())
                .collect()
        };
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| DatabaseError::Osv {
                path: f.clone(),
                message: e.to_string(),
            })?;
            // A file that is JSON but not an advisory (an index, a schema)
            // is passed over; one that claims to be an advisory and is
            // malformed is an error, so a broken database is not mistaken
            // for a clean bill of health.
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| DatabaseError::Osv {
                    path: f.clone(),
                    message: format!("not JSON: {e}"),
                })?;
            if v.get("id").is_none() || v.get("affected").is_none() {
                continue;
            }
            let a: Advisory = serde_json::from_value(v).map_err(|e| DatabaseError::Osv {
                path: f.clone(),
                message: format!("not an OSV advisory: {e}"),
            })?;
            if a.withdrawn.is_none() {
                advisories.push(a);
            }
        }
        let mut index: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, a) in advisories.iter().enumerate() {
            for aff in &a.affected {
                if let Some(p) = &aff.package {
                    let slot = index
                        .entry((p.ecosystem.clone(), key_name(&p.ecosystem, &p.name)))
                        .or_default();
                    if slot.last() != Some(&i) {
                        slot.push(i);
                    }
                }
            }
        }
        Ok(OsvDatabase { advisories, index })
    }

    pub fn len(&self) -> usize {
        self.advisories.len()
    }

    pub fn is_empty(&self) -> bool {
        self.advisories.is_empty()
    }

    pub fn matches(&self, p: &Package) -> Vec<Match> {
        let eco = p.ecosystem.osv_name();
        let Some(ids) = self.index.get(&(eco.to_owned(), key_name(eco, &p.name))) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for &i in ids {
            let a = &self.advisories[i];
            for aff in &a.affected {
                let Some(pr) = &aff.package else { continue };
                if pr.ecosystem != eco || key_name(eco, &pr.name) != key_name(eco, &p.name) {
                    continue;
                }
                if !affects(aff, p.ecosystem, &p.version) {
                    continue;
                }
                let informational = aff
                    .database_specific
                    .as_ref()
                    .or(a.database_specific.as_ref())
                    .and_then(|d| d.get("informational"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                let fixed: Vec<String> = aff
                    .ranges
                    .iter()
                    .flat_map(|r| r.events.iter())
                    .filter_map(|e| e.fixed.as_ref().map(|f| format!(">= {f}")))
                    .collect();
                out.push(Match {
                    package: p.name.clone(),
                    version: p.version.clone(),
                    id: a.id.clone(),
                    title: a
                        .summary
                        .clone()
                        .unwrap_or_else(|| first_line(a.details.as_deref().unwrap_or(&a.id))),
                    informational,
                    patched: fixed,
                    unaffected: Vec::new(),
                    aliases: a.aliases.clone(),
                    url: a
                        .references
                        .iter()
                        .find(|r| r.kind == "ADVISORY" || r.kind == "WEB")
                        .map(|r| r.url.clone()),
                    cvss: a
                        .severity
                        .iter()
                        .filter(|s| s.kind.starts_with("CVSS"))
                        .find_map(|s| cvss::Cvss::from_str(&s.score).ok())
                        .map(|c| c.score()),
                    description: a.details.clone().unwrap_or_default(),
                    line: p.line,
                });
                break;
            }
        }
        out
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}

/// A version in an ecosystem's own order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Version {
    Sem(semver::Version),
    Py(pep440_rs::Version),
}

impl Version {
    fn parse(eco: Ecosystem, s: &str) -> Option<Version> {
        match eco {
            Ecosystem::PyPI => pep440_rs::Version::from_str(s).ok().map(Version::Py),
            Ecosystem::Go => {
                let s = s.strip_prefix('v').unwrap_or(s);
                let mut v = semver::Version::parse(s).ok()?;
                // `+incompatible` and other build metadata do not order.
                v.build = semver::BuildMetadata::EMPTY;
                Some(Version::Sem(v))
            }
            Ecosystem::CratesIo | Ecosystem::Npm => {
                let mut v = semver::Version::parse(s.strip_prefix('v').unwrap_or(s)).ok()?;
                v.build = semver::BuildMetadata::EMPTY;
                Some(Version::Sem(v))
            }
        }
    }

    fn cmp(&self, other: &Version) -> Option<Ordering> {
        match (self, other) {
            (Version::Sem(a), Version::Sem(b)) => Some(a.cmp(b)),
            (Version::Py(a), Version::Py(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// The OSV schema's evaluation: walk the events in version order; an
/// `introduced` at or below the version turns it affected, a `fixed` at or
/// below (or a `last_affected` below) turns it back.
fn affects(aff: &Affected, eco: Ecosystem, version: &str) -> bool {
    if aff.versions.iter().any(|v| v == version) {
        return true;
    }
    let Some(v) = Version::parse(eco, version) else {
        return false;
    };
    for r in &aff.ranges {
        if r.kind != "SEMVER" && r.kind != "ECOSYSTEM" {
            continue;
        }
        // (version, order within ties: introduced first, then fixed/last)
        let mut events: Vec<(Option<Version>, u8, &Event)> = r
            .events
            .iter()
            .map(|e| {
                if let Some(i) = &e.introduced {
                    (
                        if i == "0" {
                            None
                        } else {
                            Version::parse(eco, i)
                        },
                        0,
                        e,
                    )
                } else if let Some(f) = &e.fixed {
                    (Version::parse(eco, f), 1, e)
                } else if let Some(l) = &e.last_affected {
                    (Version::parse(eco, l), 1, e)
                } else {
                    (None, 2, e)
                }
            })
            .filter(|(ver, kind, e)| {
                *kind < 2 && (ver.is_some() || e.introduced.as_deref() == Some("0"))
            })
            .collect();
        events.sort_by(|a, b| match (&a.0, &b.0) {
            (None, None) => a.1.cmp(&b.1),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(y).unwrap_or(Ordering::Equal).then(a.1.cmp(&b.1)),
        });
        let mut affected = false;
        for (ev, _, e) in &events {
            let order = ev.as_ref().map_or(Some(Ordering::Greater), |x| v.cmp(x));
            if e.introduced.is_some() {
                if matches!(order, Some(Ordering::Greater | Ordering::Equal)) {
                    affected = true;
                }
            } else if e.fixed.is_some() {
                if matches!(order, Some(Ordering::Greater | Ordering::Equal)) {
                    affected = false;
                }
            } else if e.last_affected.is_some() && order == Some(Ordering::Greater) {
                affected = false;
            }
        }
        if affected {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aff(json: &str) -> Affected {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn semver_ranges() {
        let a = aff(
            r#"{"package":{"ecosystem":"npm","name":"x"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"4.17.21"},{"introduced":"5.0.0"},{"last_affected":"5.1.0"}]}]}"#,
        );
        assert!(affects(&a, Ecosystem::Npm, "4.17.20"));
        assert!(!affects(&a, Ecosystem::Npm, "4.17.21"));
        assert!(affects(&a, Ecosystem::Npm, "5.1.0"));
        assert!(!affects(&a, Ecosystem::Npm, "5.1.1"));
        assert!(
            affects(&a, Ecosystem::Npm, "4.17.21-rc.1"),
            "a prerelease sorts before its release"
        );
    }

    #[test]
    fn pep440_ranges() {
        let a = aff(
            r#"{"package":{"ecosystem":"PyPI","name":"Django"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"3.2"},{"fixed":"3.2.14"}]}]}"#,
        );
        assert!(affects(&a, Ecosystem::PyPI, "3.2.13"));
        assert!(affects(&a, Ecosystem::PyPI, "3.2.14rc1"));
        assert!(!affects(&a, Ecosystem::PyPI, "3.2.14"));
        assert!(!affects(&a, Ecosystem::PyPI, "3.1.9"));
        assert!(affects(&a, Ecosystem::PyPI, "3.2.post1"));
    }

    #[test]
    fn go_versions_and_explicit_lists() {
        let a = aff(
            r#"{"package":{"ecosystem":"Go","name":"golang.org/x/text"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"0.3.8"}]}],"versions":["v9.9.9"]}"#,
        );
        assert!(affects(&a, Ecosystem::Go, "v0.3.7"));
        assert!(!affects(&a, Ecosystem::Go, "v0.3.8"));
        assert!(affects(&a, Ecosystem::Go, "v9.9.9"));
        assert!(affects(
            &a,
            Ecosystem::Go,
            "v0.0.0-20170915032832-14c0d48ead0c"
        ));
    }
}
