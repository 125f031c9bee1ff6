//! Finding the files to scan and reading them safely: symlink loops,
//! binaries, oversized files and unreadable paths are skipped with a
//! reason instead of stopping the scan.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::finding::{Finding, Skipped};

/// One file to scan.
pub struct Entry {
    pub path: PathBuf,
    /// As findings name it: the path as given, or under the directory given.
    pub display: String,
    /// Relative to the input it was found under (for context rules).
    pub relative: String,
    /// Named on the command line rather than found in a directory.
    pub named_explicitly: bool,
}

/// Directories never descended into.
const SKIP_DIRS: &[&str] = &[".git", ".hg", ".svn"];

pub fn collect(inputs: &[PathBuf]) -> (Vec<Entry>, Vec<Skipped>) {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for input in inputs {
        if input.is_file() {
            entries.push(Entry {
                path: input.clone(),
                display: slash(&input.display().to_string()),
                relative: input
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                named_explicitly: true,
            });
            continue;
        }
        let walker = walkdir::WalkDir::new(input)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                !(e.file_type().is_dir()
                    && e.depth() > 0
                    && SKIP_DIRS.iter().any(|d| e.file_name() == *d))
            });
        for item in walker {
            match item {
                Ok(e) if e.file_type().is_file() => {
                    let rel = e
                        .path()
                        .strip_prefix(input)
                        .unwrap_or(e.path())
                        .display()
                        .to_string();
                    entries.push(Entry {
                        path: e.path().to_owned(),
                        display: slash(&e.path().display().to_string()),
                        relative: slash(&rel),
                        named_explicitly: false,
                    });
                }
                Ok(_) => {}
                Err(err) => {
                    let file = err
                        .path()
                        .map(|p| slash(&p.display().to_string()))
                        .unwrap_or_else(|| input.display().to_string());
                    let reason = if let Some(ancestor) = err.loop_ancestor() {
                        format!(
                            "symlink loop (points back to {}): not followed",
                            ancestor.display()
                        )
                    } else {
                        match err.io_error() {
                            Some(io) => format!("cannot read: {io}"),
                            None => err.to_string(),
                        }
                    };
                    // A loop is a property of the tree, not a failure to
                    // scan something that exists once.
                    let error = err.loop_ancestor().is_none();
                    skipped.push(Skipped {
                        file,
                        reason,
                        error,
                    });
                }
            }
        }
    }
    (entries, skipped)
}

fn slash(s: &str) -> String {
    if std::path::MAIN_SEPARATOR == '/' {
        s.to_owned()
    } else {
        s.replace(std::path::MAIN_SEPARATOR, "/")
    }
}

pub struct ReadRefusal {
    pub message: String,
    pub error: bool,
}

/// Reads a text file, or says why not: larger than the limit, binary (a
/// NUL byte in the first 8 KiB), not UTF-8, unreadable.
pub fn read_text(path: &Path, max: u64) -> Result<String, ReadRefusal> {
    let refuse = |message: String, error: bool| ReadRefusal { message, error };
    let meta = std::fs::metadata(path).map_err(|e| refuse(format!("cannot read: {e}"), true))?;
    if meta.len() > max {
        return Err(refuse(
            format!(
                "{} bytes, over the {max}-byte limit (--max-file-size): not scanned",
                meta.len()
            ),
            false,
        ));
    }
    let mut f = std::fs::File::open(path).map_err(|e| refuse(format!("cannot open: {e}"), true))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while being read.
    f.by_ref()
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("cannot read: {e}"), true))?;
    if bytes.len() as u64 > max {
        return Err(refuse(
            format!("grew over the {max}-byte limit while read: not scanned"),
            false,
        ));
    }
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err(refuse("binary file (NUL bytes): not scanned".into(), false));
    }
    String::from_utf8(bytes).map_err(|e| {
        refuse(
            format!(
                "not UTF-8 text (invalid byte at offset {}): not scanned",
                e.utf8_error().valid_up_to()
            ),
            false,
        )
    })
}

/// Secrets added anywhere in the git history of `dir` (every branch),
/// from `git log -p`: each hunk's added lines are scanned with their line
/// numbers in that commit.
pub fn git_history(dir: &Path) -> Result<Vec<Finding>, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "log",
            "-p",
            "-U0",
            "--all",
            "--full-history",
            "--no-color",
            "--no-ext-diff",
            "--no-renames",
            "--format=%x00commit %H",
        ])
        .output()
        .map_err(|e| format!("--git: cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "--git: not a git work tree or git failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let log = String::from_utf8_lossy(&out.stdout);
    let mut findings = Vec::new();
    let mut commit = String::new();
    let mut file: Option<String> = None;
    let mut hunk = String::new();
    let mut hunk_start = 0usize;
    let flush = |file: &Option<String>,
                 commit: &str,
                 hunk: &mut String,
                 start: usize,
                 findings: &mut Vec<Finding>| {
        if let Some(f) = file {
            if !hunk.is_empty() {
                let display = format!("{}/{f}", slash(&dir.display().to_string()));
                let before = findings.len();
                crate::secrets::scan_text(&display, f, hunk, start.saturating_sub(1), findings);
                for finding in &mut findings[before..] {
                    finding.message = format!(
                        "{} (in commit {})",
                        finding.message,
                        &commit[..commit.len().min(12)]
                    );
                }
            }
        }
        hunk.clear();
    };
    for line in log.lines() {
        if let Some(c) = line.strip_prefix("\u{0}commit ") {
            flush(&file, &commit, &mut hunk, hunk_start, &mut findings);
            commit = c.to_owned();
            file = None;
        } else if let Some(path) = line.strip_prefix("+++ ") {
            flush(&file, &commit, &mut hunk, hunk_start, &mut findings);
            file = path.strip_prefix("b/").map(str::to_owned);
        } else if let Some(h) = line.strip_prefix("@@ ") {
            flush(&file, &commit, &mut hunk, hunk_start, &mut findings);
            // @@ -a,b +c,d @@
            hunk_start = h
                .split_whitespace()
                .find_map(|p| p.strip_prefix('+'))
                .and_then(|p| p.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
        } else if let Some(added) = line.strip_prefix('+') {
            hunk.push_str(added);
            hunk.push('\n');
        }
    }
    flush(&file, &commit, &mut hunk, hunk_start, &mut findings);
    Ok(findings)
}
