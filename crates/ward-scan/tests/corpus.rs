//! The real inputs in `../shared/corpus/` (see its README): RustSec lock
//! files with their exact expected advisories, Online Boutique's manifests
//! and Dockerfiles against checkov's and hadolint's results, the secrets
//! fixture, and the SARIF schema.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use ward_scan::{Kind, Options, Report, Selection};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
}

fn scan(kind: Option<Kind>, paths: &[PathBuf], advisories: Option<PathBuf>) -> Report {
    let opts = Options {
        selection: kind.map_or(Selection::Auto, Selection::Only),
        advisories,
        jobs: 2,
        ..Options::default()
    };
    ward_scan::scan(paths, &opts, None).expect("scan runs")
}

fn count(r: &Report, id: &str) -> usize {
    r.findings.iter().filter(|f| f.rule_id == id).count()
}

type Triple = (String, String, String);

fn triples(v: &Value) -> BTreeSet<Triple> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["package"].as_str().unwrap().to_owned(),
                e["version"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_rustsec_lock_file_gives_exactly_the_expected_advisories() {
    let base = corpus().join("rustsec-lockfiles");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("expected.json")).unwrap())
            .unwrap();
    let db = ward_scan::deps::Database::open(&corpus().join("rustsec-advisory-db")).unwrap();
    let files = expected["files"].as_object().unwrap();
    assert_eq!(files.len(), 25, "the corpus names 25 lock files");
    let (mut vulns, mut warns) = (0, 0);
    for (rel, want) in files {
        let text = std::fs::read_to_string(base.join(rel)).unwrap();
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        // Lock files named like cargo-lock's examples (`Cargo.lock.v1`) are
        // Cargo lock files whatever their suffix.
        let audit = ward_scan::deps::audit(
            if name.contains("ock") {
                "Cargo.lock"
            } else {
                name
            },
            &text,
            &db,
        )
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
        let got_v: BTreeSet<Triple> = audit
            .vulnerabilities
            .iter()
            .map(|m| (m.package.clone(), m.version.clone(), m.id.clone()))
            .collect();
        let got_w: BTreeSet<Triple> = audit
            .warnings
            .iter()
            .map(|m| (m.package.clone(), m.version.clone(), m.id.clone()))
            .collect();
        assert_eq!(
            got_v,
            triples(&want["vulnerabilities"]),
            "{rel}: vulnerabilities"
        );
        assert_eq!(
            got_w,
            triples(&want["warnings"]),
            "{rel}: informational warnings"
        );
        vulns += got_v.len();
        warns += got_w.len();
    }
    assert_eq!(
        (vulns, warns),
        (95, 73),
        "the totals the corpus README gives"
    );
}

#[test]
fn a_path_dependency_with_a_vulnerable_name_never_matches() {
    let base = corpus().join("rustsec-lockfiles/rustsec/tests/support");
    let db = Some(corpus().join("rustsec-advisory-db"));
    let local = scan(
        Some(Kind::Deps),
        &[base.join("local_cargo.lock")],
        db.clone(),
    );
    assert!(local.findings.is_empty(), "{:?}", local.findings);
    let remote = scan(Some(Kind::Deps), &[base.join("cratesio_cargo.lock")], db);
    let ids: Vec<_> = remote.findings.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(ids, ["RUSTSEC-2017-0004"]);
}

#[test]
fn informational_advisories_are_info_and_do_not_fail_by_default() {
    let lock = corpus().join("rustsec-lockfiles/cargo-audit/tests/support/unmaintained/Cargo.lock");
    let r = scan(
        Some(Kind::Deps),
        &[lock],
        Some(corpus().join("rustsec-advisory-db")),
    );
    assert!(!r.findings.is_empty());
    assert!(
        r.findings
            .iter()
            .all(|f| f.severity == ward_scan::Severity::Info)
    );
    assert_eq!(r.at_or_above(ward_scan::Severity::Low), 0);
}

#[test]
fn online_boutique_matches_checkov_where_the_checks_agree() {
    let ob = corpus().join("online-boutique");
    let r = scan(Some(Kind::K8s), &[ob.join("kubernetes-manifests")], None);
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    // CKV_K8S_21: every one of the 35 objects is in the default namespace.
    assert_eq!(count(&r, "K8S045"), 35);
    // CKV_K8S_43: no Deployment pins its image by digest.
    assert_eq!(count(&r, "K8S012"), 12);
    // CKV_K8S_14: 11 images have no tag (redis-cart has `redis:alpine`).
    assert_eq!(count(&r, "K8S011"), 11);
    // CKV_K8S_38: every pod mounts its service account token.
    assert_eq!(count(&r, "K8S015"), 12);
    // CKV2_K8S_6: 12 pods, none selected by a NetworkPolicy.
    assert_eq!(count(&r, "K8S050"), 12);
    // CKV_K8S_8/9: only loadgenerator lacks probes.
    assert_eq!((count(&r, "K8S021"), count(&r, "K8S022")), (1, 1));
    // CKV_K8S_10..13: loadgenerator's init container has no requests or
    // limits. Ward reports each (one finding names both CPU and memory).
    assert_eq!((count(&r, "K8S009"), count(&r, "K8S010")), (1, 1));
    // CKV_K8S_31: checkov counts 12 resources; Ward counts containers, and
    // loadgenerator has two (an init container and main), so 13.
    assert_eq!(count(&r, "K8S007"), 13);
    // Deliberately not reported: CKV_K8S_40 (UID above 10000) — UID 1000
    // with runAsNonRoot is not root; CKV_K8S_15 (pull policy) — digests,
    // which K8S012 asks for, make it moot.
    for absent in ["K8S001", "K8S002", "K8S003", "K8S004", "K8S006", "K8S026"] {
        assert_eq!(
            count(&r, absent),
            0,
            "{absent}: Online Boutique's containers are hardened"
        );
    }
}

#[test]
fn online_boutique_with_its_network_policies_has_no_unselected_pod() {
    let ob = corpus().join("online-boutique");
    let r = scan(
        Some(Kind::K8s),
        &[
            ob.join("kubernetes-manifests"),
            ob.join("kustomize/components/network-policies"),
        ],
        None,
    );
    assert_eq!(count(&r, "K8S050"), 0);
    assert_eq!(count(&r, "K8S051"), 0, "deny-all is a default deny");
}

#[test]
fn the_whole_boutique_parses_without_errors_and_fails() {
    let r = scan(None, &[corpus().join("online-boutique")], None);
    assert!(!r.has_errors(), "{:?}", r.skipped);
    assert!(r.scanners.contains(&Kind::K8s) && r.scanners.contains(&Kind::Dockerfile));
    assert!(r.at_or_above(ward_scan::Severity::Low) > 0);
    // Istio and Gateway API objects are read and pass; no workload rule
    // fires on them.
    assert!(
        !r.findings
            .iter()
            .any(|f| f.object.starts_with("VirtualService") || f.object.starts_with("Gateway "))
    );
}

#[test]
fn online_boutique_dockerfiles_match_checkov_and_hadolint_where_they_agree() {
    let r = scan(
        Some(Kind::Dockerfile),
        &[corpus().join("online-boutique/src")],
        None,
    );
    assert_eq!(
        count(&r, "DF008"),
        13,
        "CKV_DOCKER_2: no HEALTHCHECK in any"
    );
    assert_eq!(
        count(&r, "DF001"),
        12,
        "CKV_DOCKER_3: 12 set no non-root USER"
    );
    assert_eq!(
        count(&r, "DF002"),
        4,
        "CKV_DOCKER_7 and DL3006: 4 untagged bases"
    );
    // DL3018 (10 apk) + DL3008 (2 apt) unpinned installs.
    assert_eq!(count(&r, "DF007"), 12);
    // DL3042 (4 pip) + DL3009 (1 apt lists) caches left behind.
    assert_eq!(count(&r, "DF006"), 5);
    assert_eq!(count(&r, "DF012"), 1, "DL3015");
    // Not implemented on purpose (style, not security): DL3045, DL3059, DL3025.
}

#[test]
fn the_secrets_fixture() {
    let tree = corpus().join("secrets-fixture/tree");
    let r = scan(Some(Kind::Secrets), &[tree], None);
    let lines: BTreeMap<String, BTreeSet<usize>> =
        r.findings.iter().fold(BTreeMap::new(), |mut m, f| {
            m.entry(f.file.rsplit('/').next().unwrap().to_owned())
                .or_default()
                .insert(f.line);
            m
        });
    assert_eq!(lines.get("config.py"), Some(&BTreeSet::from([6, 8])));
    assert!(
        !lines.contains_key("package-lock.json"),
        "integrity hashes are not secrets"
    );
    // A decision: AWS's documented example pair grants nothing, so Ward
    // does not report it (detect-secrets reports line 5, checkov both).
    assert!(!lines.contains_key("aws.md"));
    assert!(r.at_or_above(ward_scan::Severity::Low) > 0);
    let all = [
        ward_scan::output::table(&r, true),
        ward_scan::output::json(&r).to_string(),
        ward_scan::output::sarif(&r).to_string(),
    ];
    for out in all {
        assert!(!out.contains("q8Vn3Lr0ZtY7bW2kHc5Ej9Ps1Mf4Ux6Ga0Do8Ri2"));
        assert!(!out.contains("AKIAZ7QK3MR4WJ6PX2TB"));
        assert!(!out.contains("q8Vn3Lr0"), "not even a prefix");
    }
}

fn validate_sarif(v: &Value) -> Result<(), String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(corpus().join("sarif/sarif-schema-2.1.0.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft4::new(&schema).map_err(|e| e.to_string())?;
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

#[test]
fn sarif_validates_against_the_2_1_0_schema() {
    // The schema check itself can fail: the corpus's invalid sample is refused.
    let bad: Value = serde_json::from_str(
        &std::fs::read_to_string(corpus().join("sarif/invalid-version-and-level.sarif")).unwrap(),
    )
    .unwrap();
    assert!(validate_sarif(&bad).is_err());
    let good: Value = serde_json::from_str(
        &std::fs::read_to_string(corpus().join("sarif/valid-minimal.sarif")).unwrap(),
    )
    .unwrap();
    validate_sarif(&good).unwrap();

    let c = corpus();
    let r = scan(
        None,
        &[
            c.join("online-boutique"),
            c.join("secrets-fixture/tree"),
            c.join("rustsec-lockfiles/cargo-audit/tests/support/base64_vuln"),
        ],
        Some(c.join("rustsec-advisory-db")),
    );
    assert!(r.scanners.len() >= 4, "{:?}", r.scanners);
    let sarif = ward_scan::output::sarif(&r);
    validate_sarif(&sarif).unwrap();
    // What GitHub needs beyond the schema: rule metadata, a location with a
    // line, a fingerprint and a security-severity on every rule.
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    for rule in rules {
        assert!(rule["shortDescription"]["text"].is_string() && rule["help"]["text"].is_string());
        assert!(rule["properties"]["security-severity"].is_string());
    }
    for res in run["results"].as_array().unwrap() {
        let i = res["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], res["ruleId"]);
        assert!(res["partialFingerprints"]["wardFingerprint/v1"].is_string());
        assert!(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].is_string());
    }
}
