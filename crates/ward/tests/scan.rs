//! `ward scan` end to end: the real binary on real files, as CI runs it —
//! exit codes, formats, baselines, suppressions, git history, and bad
//! input that must be reported, never crash.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn ward(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(args)
        .current_dir(dir)
        .env_remove("WARD_ADVISORY_DB")
        .env("NO_COLOR", "1")
        .output()
        .expect("ward runs")
}

fn corpus() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn rule_ids(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

fn no_panic(o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        o.status.code().is_some_and(|c| c < 100),
        "killed or crashed: {:?}",
        o.status
    );
}

const PRIVILEGED: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: root-shell, namespace: shop}\nspec:\n  containers:\n  - name: c\n    image: busybox:latest\n    securityContext: {privileged: true}\n";

#[test]
fn exit_codes_follow_fail_on() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("pod.yaml"), PRIVILEGED).unwrap();
    let o = ward(&["scan", "k8s", "pod.yaml"], d.path());
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("K8S001") && table.contains("How to fix:"),
        "{table}"
    );
    // Only a critical finding fails at --fail-on critical; never never fails.
    assert_eq!(
        ward(
            &["scan", "k8s", "pod.yaml", "--fail-on", "critical"],
            d.path()
        )
        .status
        .code(),
        Some(1)
    );
    std::fs::write(
        d.path().join("pod.yaml"),
        PRIVILEGED.replace("privileged: true", "privileged: false"),
    )
    .unwrap();
    assert_eq!(
        ward(
            &["scan", "k8s", "pod.yaml", "--fail-on", "critical"],
            d.path()
        )
        .status
        .code(),
        Some(0)
    );
    assert_eq!(
        ward(&["scan", "k8s", "pod.yaml", "--fail-on", "never"], d.path())
            .status
            .code(),
        Some(0)
    );
    let bad = ward(
        &["scan", "k8s", "pod.yaml", "--fail-on", "severe"],
        d.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a severity"));
}

#[test]
fn bad_input_is_reported_not_crashed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("broken.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x\nspec: [\n",
    )
    .unwrap();
    let o = ward(&["scan", "k8s", "broken.yaml", "--format", "json"], p);
    no_panic(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unparsable manifest makes the scan incomplete"
    );
    let v = json_of(&o);
    let reason = v["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("invalid YAML at line"), "{reason}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("broken.yaml"));

    // Binary, oversized (sparse 100 MB), a symlink loop and a template: skips with a reason.
    std::fs::create_dir(p.join("tree")).unwrap();
    let mut blob = vec![0u8; 4096];
    blob[..10].copy_from_slice(b"kind: Pod\n");
    std::fs::write(p.join("tree/blob.yaml"), blob).unwrap();
    let big = std::fs::File::create(p.join("tree/big.yaml")).unwrap();
    big.set_len(100 << 20).unwrap();
    std::os::unix::fs::symlink("..", p.join("tree/loop")).unwrap();
    std::fs::write(
        p.join("tree/chart.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}\n",
    )
    .unwrap();
    std::fs::write(p.join("tree/pod.yaml"), PRIVILEGED).unwrap();
    let o = ward(&["scan", "k8s", "tree", "--format", "json"], p);
    no_panic(&o);
    let v = json_of(&o);
    let reasons: Vec<String> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["file"], s["reason"]))
        .collect();
    let all = reasons.join("\n");
    assert!(all.contains("binary file"), "{all}");
    assert!(all.contains("over the 10485760-byte limit"), "{all}");
    assert!(all.contains("symlink loop"), "{all}");
    assert!(all.contains("a template, not a manifest"), "{all}");
    // The rest of the tree is still scanned, and these skips are not errors.
    assert!(rule_ids(&v).contains(&"K8S001".to_owned()));
    assert_eq!(o.status.code(), Some(1));

    let o = ward(&["scan", "k8s", "missing.yaml"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.yaml: no such file"));
}

#[test]
fn baselines_accept_known_findings_and_fail_on_new_ones() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("pod.yaml"), PRIVILEGED).unwrap();
    let w = ward(
        &[
            "scan",
            "k8s",
            "pod.yaml",
            "--baseline",
            "base.json",
            "--write-baseline",
        ],
        p,
    );
    assert_eq!(
        w.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&w.stderr)
    );
    assert_eq!(
        ward(&["scan", "k8s", "pod.yaml", "--baseline", "base.json"], p)
            .status
            .code(),
        Some(0)
    );
    // Lines added above do not resurrect a baselined finding.
    std::fs::write(p.join("pod.yaml"), format!("# a comment\n\n{PRIVILEGED}")).unwrap();
    assert_eq!(
        ward(&["scan", "k8s", "pod.yaml", "--baseline", "base.json"], p)
            .status
            .code(),
        Some(0)
    );
    // A new problem does fail.
    std::fs::write(p.join("pod.yaml"), format!("{PRIVILEGED}  hostPID: true\n")).unwrap();
    let o = ward(
        &[
            "scan",
            "k8s",
            "pod.yaml",
            "--baseline",
            "base.json",
            "--format",
            "json",
        ],
        p,
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(rule_ids(&json_of(&o)), ["K8S017"]);
    std::fs::write(p.join("junk.json"), "{}").unwrap();
    let o = ward(&["scan", "k8s", "pod.yaml", "--baseline", "junk.json"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a Ward baseline"));
}

#[test]
fn suppressions_need_a_reason() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let text = PRIVILEGED.replace(
        "    securityContext: {privileged: true}\n",
        "    # ward:ignore K8S001 the node-debug pod, reviewed in SEC-42\n    securityContext: {privileged: true}\n",
    );
    std::fs::write(p.join("pod.yaml"), &text).unwrap();
    let v = json_of(&ward(&["scan", "k8s", "pod.yaml", "--format", "json"], p));
    assert!(!rule_ids(&v).contains(&"K8S001".to_owned()));
    assert_eq!(
        v["suppressed"][0]["reason"],
        "the node-debug pod, reviewed in SEC-42"
    );
    let sarif: Value =
        serde_json::from_slice(&ward(&["scan", "k8s", "pod.yaml", "--format", "sarif"], p).stdout)
            .unwrap();
    let sup = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == "K8S001")
        .unwrap();
    assert_eq!(sup["suppressions"][0]["kind"], "inSource");

    std::fs::write(
        p.join("pod.yaml"),
        text.replace(" the node-debug pod, reviewed in SEC-42", ""),
    )
    .unwrap();
    let v = json_of(&ward(&["scan", "k8s", "pod.yaml", "--format", "json"], p));
    let ids = rule_ids(&v);
    assert!(
        ids.contains(&"K8S001".to_owned()) && ids.contains(&"SCAN001".to_owned()),
        "{ids:?}"
    );
}

#[test]
fn auto_mode_picks_scanners_and_deps_need_a_database() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("pod.yaml"), PRIVILEGED).unwrap();
    std::fs::write(
        p.join("Dockerfile"),
        "FROM ubuntu\nRUN curl https://x.example/i.sh | sh\n",
    )
    .unwrap();
    std::fs::write(
        p.join("open.cedar"),
        "permit(principal, action, resource);\n",
    )
    .unwrap();
    std::fs::copy(
        corpus().join("rustsec-lockfiles/rustsec/tests/support/cratesio_cargo.lock"),
        p.join("Cargo.lock"),
    )
    .unwrap();
    let v = json_of(&ward(
        &[
            "scan",
            ".",
            "--format",
            "json",
            "--advisories",
            corpus().join("rustsec-advisory-db").to_str().unwrap(),
        ],
        p,
    ));
    let ids = rule_ids(&v);
    for want in ["K8S001", "DF002", "DF005", "WARD002", "RUSTSEC-2017-0004"] {
        assert!(
            ids.contains(&want.to_owned()),
            "{want} missing from {ids:?}"
        );
    }
    // Without a database a lock file is a reported skip, not silence.
    let v = json_of(&ward(&["scan", ".", "--format", "json"], p));
    assert!(v["skipped"].to_string().contains("give --advisories DIR"));
    let o = ward(&["scan", "deps", "Cargo.lock"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --advisories"));
    let o = ward(&["scan", "deps", "Cargo.lock", "--advisories", "."], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("neither a RustSec advisory database"));
}

#[test]
fn jobs_do_not_change_the_result() {
    let ob = corpus().join("online-boutique");
    let one = ward(
        &[
            "scan",
            ob.to_str().unwrap(),
            "--format",
            "json",
            "--jobs",
            "1",
        ],
        Path::new("."),
    );
    let four = ward(
        &[
            "scan",
            ob.to_str().unwrap(),
            "--format",
            "json",
            "--jobs",
            "4",
        ],
        Path::new("."),
    );
    assert_eq!(json_of(&one)["findings"], json_of(&four)["findings"]);
    assert_eq!(one.status.code(), Some(1));
}

#[test]
fn secrets_in_git_history_are_found_only_with_git() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(args)
            .current_dir(p)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["config", "user.email", "t@example.org"]);
    git(&["config", "user.name", "t"]);
    // Assembled at run time: the test file holds no key-shaped literal.
    let key: String = ["AKIA", "Q7K3MR4WJ6PX2TBZ"].concat();
    std::fs::write(
        p.join("settings.py"),
        format!("DEBUG = False\nAWS_KEY = \"{key}\"\n"),
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "add settings"]);
    std::fs::write(
        p.join("settings.py"),
        "DEBUG = False\nAWS_KEY = os.environ[\"AWS_KEY\"]\n",
    )
    .unwrap();
    git(&["commit", "-qam", "read the key from the environment"]);
    let now = json_of(&ward(&["scan", "secrets", ".", "--format", "json"], p));
    assert!(rule_ids(&now).is_empty(), "{now}");
    let o = ward(&["scan", "secrets", ".", "--git", "--format", "json"], p);
    let v = json_of(&o);
    assert_eq!(rule_ids(&v), ["SEC001"]);
    assert_eq!(v["findings"][0]["line"], 2);
    assert!(
        v["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("in commit")
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&key));
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn help_is_complete() {
    let o = ward(&["scan", "--help"], Path::new("."));
    let h = String::from_utf8_lossy(&o.stdout);
    for word in [
        "k8s",
        "dockerfile",
        "ward",
        "secrets",
        "deps",
        "--format",
        "--fail-on",
        "--baseline",
        "--jobs",
        "ward:ignore",
        "Exit status",
    ] {
        assert!(h.contains(word), "{word} missing from:\n{h}");
    }
    for sub in ["k8s", "dockerfile", "ward", "secrets", "deps"] {
        let o = ward(&["scan", sub, "--help"], Path::new("."));
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).contains("--format"));
    }
    assert!(
        String::from_utf8_lossy(&ward(&["scan", "secrets", "--help"], Path::new(".")).stdout)
            .contains("--git")
    );
}

#[test]
fn config_errors_never_quote_a_secret() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // An unknown key holding a password, and a file that is not TOML at all:
    // TOML errors quote the offending line; Ward's output must not.
    std::fs::write(p.join("server.toml"), "trust_domain = \"example.org\"\ndata_dir = \"/d\"\nstorage_password = \"Hunter2-Very-Secret\"\n").unwrap();
    std::fs::write(p.join("proxy.toml"), "[identity]\nworkload_api = \"unix:///s\"\n[policy]\nserver = \"https://w:8443\"\nserver_ca = \"/ca.pem\"\ntoken = \"Hunter2-Very-Secret\n").unwrap();
    for format in ["json", "sarif", "table"] {
        let o = ward(
            &[
                "scan",
                "ward",
                "server.toml",
                "proxy.toml",
                "--format",
                format,
            ],
            p,
        );
        no_panic(&o);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!all.contains("Hunter2"), "{format}: {all}");
        assert!(
            all.contains("server.toml") && all.contains("proxy.toml"),
            "{all}"
        );
        assert_eq!(
            o.status.code(),
            Some(2),
            "{format}: a broken config makes the scan incomplete"
        );
    }
}
