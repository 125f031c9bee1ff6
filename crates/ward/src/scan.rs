//! `ward scan`: the front of the `ward-scan` library — arguments, output
//! to stdout, progress on stderr, and the exit code CI acts on.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use ward_scan::{Kind, Options, Selection, Severity};

/// Find misconfigurations, secrets and vulnerable dependencies before they ship
#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Scanners:\n  k8s         Kubernetes manifests (YAML, multi-document, List kinds, rendered Helm/kustomize)\n  dockerfile  Dockerfiles (Dockerfile, *.Dockerfile, Containerfile)\n  ward        Ward's server and proxy configs and Cedar policies, through Ward's own parsers\n  secrets     hard-coded credentials in any text file (add --git for the history)\n  deps        Cargo.lock, package-lock.json, requirements*.txt, poetry.lock, go.sum against --advisories DIR\n\n`ward scan PATH…` picks the scanners by what it finds.\n\nSuppress one finding with a comment on its line or the line above:\n  # ward:ignore K8S044 the shop's public entry point\n(`ward:ignore-file ID reason` for a whole file; a suppression needs a reason).\n\nExit status: 0 nothing at or above --fail-on; 1 findings at or above it;\n2 the scan is incomplete (a file could not be parsed or read) or could not run.\n\nExamples:\n  ward scan .\n  ward scan k8s deploy/ --format sarif > ward.sarif\n  ward scan deps Cargo.lock --advisories advisory-db --fail-on high\n  ward scan . --baseline .ward-baseline.json --write-baseline"
)]
pub struct ScanArgs {
    #[command(subcommand)]
    scanner: Option<Scanner>,
    /// Files or directories to scan with every scanner that applies
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum Scanner {
    /// Kubernetes manifests: pod security, images, RBAC, exposure, NetworkPolicy coverage
    K8s(Paths),
    /// Dockerfiles: root user, unpinned bases and packages, ADD from URLs, secrets, curl | sh
    Dockerfile(Paths),
    /// Ward's own server/proxy configs (real parsers) and Cedar policies (real validator)
    Ward(Paths),
    /// Hard-coded secrets: provider tokens, private keys, JWTs, passwords in URLs, entropy
    Secrets(SecretPaths),
    /// Vulnerable dependencies in lock files against an offline advisory database
    Deps(Paths),
}

#[derive(Args)]
struct Paths {
    /// Files or directories
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct SecretPaths {
    /// Files or directories
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    /// Also scan every commit of each directory's git history (all branches)
    #[arg(long)]
    git: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Findings grouped by file, with fixes (colour on a terminal)
    Table,
    /// One JSON document: summary, findings, suppressed, skipped, rules
    Json,
    /// SARIF 2.1.0, for GitHub code scanning and other SARIF viewers
    Sarif,
}

#[derive(Args, Clone)]
struct Common {
    /// Output format (on stdout)
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Exit 1 when a finding is at or above this severity: info, low, medium, high, critical, or never
    #[arg(long, value_name = "SEVERITY", default_value = "low")]
    fail_on: String,
    /// Advisory database for lock files: a RustSec advisory-db checkout or a folder of OSV JSON files
    #[arg(long, value_name = "DIR", env = "WARD_ADVISORY_DB")]
    advisories: Option<PathBuf>,
    /// Leave out findings this baseline file holds (see --write-baseline)
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Write every current finding to the --baseline file instead of failing on them
    #[arg(long, requires = "baseline")]
    write_baseline: bool,
    /// Files scanned in parallel (default: one per core)
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Skip files larger than this many bytes (with a reason)
    #[arg(long, value_name = "BYTES", default_value_t = 10 << 20)]
    max_file_size: u64,
    /// No colour in the table, even on a terminal (NO_COLOR works too)
    #[arg(long)]
    no_color: bool,
}

pub fn run(args: ScanArgs) -> ExitCode {
    let (selection, paths, common, git) = match args.scanner {
        None => (Selection::Auto, args.paths, args.common, false),
        Some(Scanner::K8s(p)) => (Selection::Only(Kind::K8s), p.paths, p.common, false),
        Some(Scanner::Dockerfile(p)) => {
            (Selection::Only(Kind::Dockerfile), p.paths, p.common, false)
        }
        Some(Scanner::Ward(p)) => (Selection::Only(Kind::Ward), p.paths, p.common, false),
        Some(Scanner::Deps(p)) => (Selection::Only(Kind::Deps), p.paths, p.common, false),
        Some(Scanner::Secrets(p)) => (Selection::Only(Kind::Secrets), p.paths, p.common, p.git),
    };
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths
    };
    let fail_on: Option<Severity> = if common.fail_on.eq_ignore_ascii_case("never") {
        None
    } else {
        match common.fail_on.parse() {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: --fail-on: {e}, or never");
                return ExitCode::from(2);
            }
        }
    };
    if selection == Selection::Only(Kind::Deps) && common.advisories.is_none() {
        eprintln!(
            "error: `ward scan deps` needs --advisories DIR (a RustSec advisory-db folder or OSV JSON files; WARD_ADVISORY_DB works too)"
        );
        return ExitCode::from(2);
    }
    let mut opts = Options {
        selection,
        advisories: common.advisories.clone(),
        max_file_bytes: common.max_file_size,
        git_history: git,
        ..Options::default()
    };
    if let Some(j) = common.jobs {
        opts.jobs = j.max(1);
    }
    let baseline = match &common.baseline {
        Some(p) if !common.write_baseline => match ward_scan::baseline::load(p) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };

    // A progress bar only for people: on a terminal, never in CI logs.
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} scanning {pos}/{len} files {wide_bar} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let tick = |done: usize, total: usize| {
        if let Some(b) = &bar {
            if b.length() != Some(total as u64) {
                b.set_length(total as u64);
            }
            b.set_position(done as u64);
        }
    };
    let result = ward_scan::scan(&paths, &opts, Some(&tick));
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if common.write_baseline {
        let Some(path) = &common.baseline else {
            return ExitCode::from(2);
        };
        return match ward_scan::baseline::write(path, &report) {
            Ok(n) => {
                eprintln!("wrote {n} finding(s) to the baseline {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(b) = &baseline {
        ward_scan::baseline::apply(&mut report, b);
    }
    let color = std::io::stdout().is_terminal()
        && !common.no_color
        && std::env::var_os("NO_COLOR").is_none();
    let text = match common.format {
        Format::Table => ward_scan::output::table(&report, color),
        Format::Json => ward_scan::output::json(&report).to_string() + "\n",
        Format::Sarif => {
            serde_json::to_string_pretty(&ward_scan::output::sarif(&report)).unwrap_or_default()
                + "\n"
        }
    };
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::from(2);
    }
    if !matches!(common.format, Format::Table) {
        // The table already lists skipped files; other formats carry them
        // inside the document, so say it once on stderr too.
        for s in report.skipped.iter().filter(|s| s.error) {
            eprintln!("error: {}: {}", s.file, s.reason);
        }
    }
    if report.has_errors() {
        eprintln!(
            "the scan is incomplete: {} input(s) could not be scanned (listed above)",
            report.skipped.iter().filter(|s| s.error).count()
        );
        return ExitCode::from(2);
    }
    match fail_on {
        Some(s) if report.at_or_above(s) > 0 => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}
