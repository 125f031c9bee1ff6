//! Lock files into (ecosystem, name, version, line). Only packages from a
//! package registry are returned: a path, git or local-file dependency is
//! not the registry package of the same name, and must never match its
//! advisories.

use serde_json::Value;

/// Package ecosystems, named as OSV names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ecosystem {
    CratesIo,
    Npm,
    PyPI,
    Go,
}

impl Ecosystem {
    pub fn osv_name(self) -> &'static str {
        match self {
            Ecosystem::CratesIo => "crates.io",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Go => "Go",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub line: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "not a lock file Ward reads (Cargo.lock, package-lock.json, requirements*.txt, poetry.lock, go.sum)"
    )]
    Unknown,
    #[error("the lock file does not parse: {0}")]
    Parse(String),
}

/// The ecosystem a lock file's name says it belongs to.
pub fn ecosystem_of(name: &str) -> Option<Ecosystem> {
    let base = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(name)
        .to_ascii_lowercase();
    if base.starts_with("cargo.lock") || base.ends_with(".lock") && base.contains("cargo") {
        Some(Ecosystem::CratesIo)
    } else if base == "package-lock.json" || base == "npm-shrinkwrap.json" {
        Some(Ecosystem::Npm)
    } else if base == "poetry.lock" || (base.starts_with("requirements") && base.ends_with(".txt"))
    {
        Some(Ecosystem::PyPI)
    } else if base == "go.sum" {
        Some(Ecosystem::Go)
    } else {
        None
    }
}

pub fn is_lock_file_name(name: &str) -> bool {
    ecosystem_of(name).is_some()
}

pub fn parse_lock_file(name: &str, text: &str) -> Result<Vec<Package>, LockError> {
    let base = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(name)
        .to_ascii_lowercase();
    match ecosystem_of(name).ok_or(LockError::Unknown)? {
        Ecosystem::CratesIo => cargo(text),
        Ecosystem::Npm => npm(text),
        Ecosystem::PyPI if base == "poetry.lock" => poetry(text),
        Ecosystem::PyPI => Ok(requirements(text)),
        Ecosystem::Go => Ok(go_sum(text)),
    }
}

/// Finds the line of `name = "…"` followed by `version = "…"` in a TOML
/// lock file (Cargo.lock, poetry.lock).
pub struct CargoLines {
    entries: Vec<(String, String, usize)>,
}

impl CargoLines {
    pub fn new(text: &str) -> CargoLines {
        let mut entries = Vec::new();
        let mut name: Option<(String, usize)> = None;
        for (i, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.starts_with("[[") {
                name = None;
            } else if let Some(v) = l.strip_prefix("name = ") {
                name = Some((v.trim_matches('"').to_owned(), i + 1));
            } else if let Some(v) = l.strip_prefix("version = ") {
                if let Some((n, line)) = name.take() {
                    entries.push((n, v.trim_matches('"').to_owned(), line));
                }
            }
        }
        CargoLines { entries }
    }

    pub fn line_of(&self, name: &str, version: &str) -> usize {
        self.entries
            .iter()
            .find(|(n, v, _)| n == name && v == version)
            .map_or(0, |e| e.2)
    }
}

fn cargo(text: &str) -> Result<Vec<Package>, LockError> {
    let lock: rustsec::Lockfile = text.parse().map_err(|e: rustsec::cargo_lock::Error| {
        LockError::Parse(crate::finding::without_source_excerpt(&e.to_string()))
    })?;
    let lines = CargoLines::new(text);
    Ok(lock
        .packages
        .iter()
        .filter(|p| p.source.as_ref().is_some_and(|s| s.is_default_registry()))
        .map(|p| Package {
            ecosystem: Ecosystem::CratesIo,
            name: p.name.to_string(),
            version: p.version.to_string(),
            line: lines.line_of(p.name.as_str(), &p.version.to_string()),
        })
        .collect())
}

/// Where `"key"` first appears, as a 1-based line.
fn line_of_key(text: &str, key: &str) -> usize {
    let needle = format!("\"{key}\"");
    text.find(&needle)
        .map_or(0, |i| text[..i].bytes().filter(|b| *b == b'\n').count() + 1)
}

fn npm(text: &str) -> Result<Vec<Package>, LockError> {
    let v: Value = serde_json::from_str(text).map_err(|e| LockError::Parse(e.to_string()))?;
    let mut out = Vec::new();
    let from_registry = |p: &Value| {
        let resolved = p.get("resolved").and_then(Value::as_str).unwrap_or("");
        let version = p.get("version").and_then(Value::as_str).unwrap_or("");
        p.get("link").and_then(Value::as_bool) != Some(true)
            && !resolved.starts_with("file:")
            && !resolved.starts_with("git")
            && !version.starts_with("file:")
            && !version.contains("://")
            && !version.starts_with("github:")
    };
    if let Some(packages) = v.get("packages").and_then(Value::as_object) {
        // Lock file v2 and v3: keys are install paths.
        for (path, p) in packages {
            let Some(i) = path.rfind("node_modules/") else {
                continue;
            };
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&path[i + "node_modules/".len()..]);
            let Some(version) = p.get("version").and_then(Value::as_str) else {
                continue;
            };
            if from_registry(p) {
                out.push(Package {
                    ecosystem: Ecosystem::Npm,
                    name: name.to_owned(),
                    version: version.to_owned(),
                    line: line_of_key(text, path),
                });
            }
        }
    } else if let Some(deps) = v.get("dependencies").and_then(Value::as_object) {
        // Lock file v1: nested `dependencies`.
        let mut stack: Vec<&serde_json::Map<String, Value>> = vec![deps];
        while let Some(map) = stack.pop() {
            for (name, p) in map {
                if let Some(version) = p.get("version").and_then(Value::as_str) {
                    if from_registry(p) {
                        out.push(Package {
                            ecosystem: Ecosystem::Npm,
                            name: name.clone(),
                            version: version.to_owned(),
                            line: line_of_key(text, name),
                        });
                    }
                }
                if let Some(inner) = p.get("dependencies").and_then(Value::as_object) {
                    stack.push(inner);
                }
            }
        }
    } else {
        return Err(LockError::Parse(
            "neither `packages` (lock file v2/v3) nor `dependencies` (v1) is present".into(),
        ));
    }
    Ok(out)
}

/// PEP 503 name normalisation (`Foo_Bar.baz` → `foo-bar-baz`).
pub fn normalize_python_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !dash {
                out.push('-');
            }
            dash = true;
        } else {
            out.push(c.to_ascii_lowercase());
            dash = false;
        }
    }
    out
}

fn requirements(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('-') || line.contains("://")
        {
            continue;
        }
        let spec = line.split(';').next().unwrap_or("").trim();
        // Only exact pins name a version; `>=` ranges say what may be
        // installed, not what is.
        let Some((name, version)) = spec.split_once("==") else {
            continue;
        };
        let name = name.split('[').next().unwrap_or("").trim();
        let version = version.trim().trim_start_matches('=');
        if name.is_empty() || version.is_empty() || version.contains('*') {
            continue;
        }
        out.push(Package {
            ecosystem: Ecosystem::PyPI,
            name: normalize_python_name(name),
            version: version
                .split_whitespace()
                .next()
                .unwrap_or(version)
                .to_owned(),
            line: i + 1,
        });
    }
    out
}

fn poetry(text: &str) -> Result<Vec<Package>, LockError> {
    #[derive(serde::Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<Pkg>,
    }
    #[derive(serde::Deserialize)]
    struct Pkg {
        name: String,
        version: String,
        #[serde(default)]
        source: Option<Source>,
    }
    #[derive(serde::Deserialize)]
    struct Source {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let lock: Lock = toml::from_str(text).map_err(|e| LockError::Parse(e.message().to_owned()))?;
    let lines = CargoLines::new(text);
    Ok(lock
        .package
        .into_iter()
        .filter(|p| {
            p.source
                .as_ref()
                .and_then(|s| s.kind.as_deref())
                .is_none_or(|k| k == "legacy")
        })
        .map(|p| Package {
            ecosystem: Ecosystem::PyPI,
            line: lines.line_of(&p.name, &p.version),
            name: normalize_python_name(&p.name),
            version: p.version,
        })
        .collect())
}

fn go_sum(text: &str) -> Vec<Package> {
    let mut out: Vec<Package> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let mut it = l.split_whitespace();
        let (Some(module), Some(version)) = (it.next(), it.next()) else {
            continue;
        };
        let version = version.trim_end_matches("/go.mod");
        if out.iter().any(|p| p.name == module && p.version == version) {
            continue;
        }
        out.push(Package {
            ecosystem: Ecosystem::Go,
            name: module.to_owned(),
            version: version.to_owned(),
            line: i + 1,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_take_exact_pins_only() {
        let p = requirements(
            "# c\nDjango==3.2.1 ; python_version > '3'\nrequests>=2\nPyYAML[extra]==5.3\n-r other.txt\n",
        );
        let got: Vec<_> = p
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.line))
            .collect();
        assert_eq!(got, [("django", "3.2.1", 2), ("pyyaml", "5.3", 4)]);
    }

    #[test]
    fn npm_v3_and_v1() {
        let v3 = r#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/lodash":{"version":"4.17.20"},"node_modules/@s/x":{"version":"1.0.0"},"node_modules/local":{"version":"1.0.0","resolved":"file:../local"}}}"#;
        let p = npm(v3).unwrap();
        let got: Vec<_> = p
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(got, [("lodash", "4.17.20"), ("@s/x", "1.0.0")]);
        let v1 = r#"{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"2.0.0"}}}}}"#;
        assert_eq!(npm(v1).unwrap().len(), 2);
    }

    #[test]
    fn go_sum_dedupes_go_mod_lines() {
        let p =
            go_sum("golang.org/x/text v0.3.7 h1:abc=\ngolang.org/x/text v0.3.7/go.mod h1:def=\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].version, "v0.3.7");
    }

    #[test]
    fn python_names_normalize() {
        assert_eq!(normalize_python_name("Foo_Bar..baz"), "foo-bar-baz");
    }
}
