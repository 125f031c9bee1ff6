//! Checks on what runs: pods and the templates of controllers that make
//! them (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
//! ReplicationController), per pod and per container.

use std::sync::LazyLock;

use regex::Regex;

use super::Object;
use super::cluster::Index;
use crate::finding::{Finding, Kind, Rule, Severity};
use crate::yaml::Node;

const K: Kind = Kind::K8s;

pub static RULES: [Rule; 25] = [
    Rule::fixed(
        "K8S001",
        K,
        Severity::Critical,
        "Privileged container",
        "A privileged container has every capability and the host's devices: a compromise of the process is a compromise of the node.",
        "Remove `securityContext.privileged: true`; grant the one capability the workload needs instead.",
        "checkov CKV_K8S_16, kube-linter privileged-container, kubesec Privileged",
    ),
    Rule::fixed(
        "K8S002",
        K,
        Severity::Medium,
        "Privilege escalation allowed",
        "Unless `allowPrivilegeEscalation` is false, a setuid binary in the image can give the process more privileges than it started with.",
        "Set `securityContext.allowPrivilegeEscalation: false` on the container.",
        "checkov CKV_K8S_20, kube-linter privilege-escalation-container",
    ),
    Rule::fixed(
        "K8S003",
        K,
        Severity::Medium,
        "Container may run as root",
        "A container running as UID 0 is root on the node if it breaks out; the image's default user is often root.",
        "Set `runAsNonRoot: true` and a non-zero `runAsUser` in the pod or container securityContext.",
        "checkov CKV_K8S_23, kube-linter run-as-non-root, kubesec RunAsNonRoot",
    ),
    Rule::fixed(
        "K8S004",
        K,
        Severity::Low,
        "Root filesystem is writable",
        "A writable root filesystem lets an attacker drop tools and persist changes inside the container.",
        "Set `securityContext.readOnlyRootFilesystem: true`; mount an emptyDir where the program must write.",
        "checkov CKV_K8S_22, kube-linter no-read-only-root-fs, kubesec ReadOnlyRootFilesystem",
    ),
    Rule::fixed(
        "K8S005",
        K,
        Severity::High,
        "Capabilities added",
        "Added Linux capabilities widen what a compromised process can do; SYS_ADMIN, NET_ADMIN and ALL are near root.",
        "Remove `capabilities.add`, or keep only what the program needs (NET_BIND_SERVICE is not reported).",
        "checkov CKV_K8S_25, CKV_K8S_39, kubesec CapSysAdmin",
    ),
    Rule::fixed(
        "K8S006",
        K,
        Severity::Medium,
        "Capabilities not dropped",
        "The runtime's default capability set includes NET_RAW and others most services never use.",
        "Set `securityContext.capabilities.drop: [ALL]`, then add back only what is needed.",
        "checkov CKV_K8S_37, CKV_K8S_28, kube-linter drop-net-raw-capability, kubesec CapDropAll",
    ),
    Rule::fixed(
        "K8S007",
        K,
        Severity::Medium,
        "No seccomp profile",
        "Without a seccomp profile the container can make every system call the kernel has, including those used in container escapes.",
        "Set `securityContext.seccompProfile.type: RuntimeDefault` on the pod (or Localhost with a profile).",
        "checkov CKV_K8S_31, kubesec SeccompAny",
    ),
    Rule::fixed(
        "K8S008",
        K,
        Severity::High,
        "AppArmor disabled",
        "An `Unconfined` AppArmor profile removes the mandatory access control the node would apply.",
        "Remove the Unconfined profile, or use `appArmorProfile.type: RuntimeDefault`.",
        "checkov CKV_K8S_29, kubesec AppArmorAny",
    ),
    Rule::fixed(
        "K8S009",
        K,
        Severity::Low,
        "No CPU or memory requests",
        "Without requests the scheduler cannot place the pod sensibly and it is first to be evicted under pressure.",
        "Set `resources.requests.cpu` and `resources.requests.memory`.",
        "checkov CKV_K8S_10, CKV_K8S_12, kube-linter unset-cpu-requirements, unset-memory-requirements",
    ),
    Rule::fixed(
        "K8S010",
        K,
        Severity::Medium,
        "No CPU or memory limits",
        "A container without limits can starve its neighbours: one compromised or runaway pod becomes a node-wide denial of service.",
        "Set `resources.limits.memory` (and `resources.limits.cpu` where throttling is acceptable).",
        "checkov CKV_K8S_11, CKV_K8S_13, kubesec LimitsCPU, LimitsMemory",
    ),
    Rule::fixed(
        "K8S011",
        K,
        Severity::Medium,
        "Image tag is latest or missing",
        "`latest` or no tag means what runs changes without a change to the manifest: no review, no rollback.",
        "Name a version tag, and better a digest (`image@sha256:…`).",
        "checkov CKV_K8S_14, kube-linter latest-tag",
    ),
    Rule::fixed(
        "K8S012",
        K,
        Severity::Low,
        "Image not pinned by digest",
        "A tag can be moved to another image by whoever can push to the registry; a digest cannot.",
        "Reference the image by digest (`registry/app:1.2@sha256:…`), updated by a bot.",
        "checkov CKV_K8S_43",
    ),
    Rule::fixed(
        "K8S013",
        K,
        Severity::High,
        "hostPath volume",
        "A hostPath volume exposes the node's filesystem to the pod; writable, it is a path to the node.",
        "Use emptyDir, a ConfigMap, a Secret or a PersistentVolumeClaim instead.",
        "kube-linter host-mounts, kubesec hostPath",
    ),
    Rule::fixed(
        "K8S014",
        K,
        Severity::Critical,
        "Sensitive host path mounted",
        "The container runtime's socket, `/`, `/etc`, `/proc`, `/var/lib/kubelet` and the like give control of the node (the Docker socket is root on the host).",
        "Do not mount it; a workload that must talk to the runtime belongs in a separate, audited system namespace.",
        "checkov CKV_K8S_27, kube-linter docker-sock, sensitive-host-mounts",
    ),
    Rule::fixed(
        "K8S015",
        K,
        Severity::Medium,
        "Service account token mounted",
        "A mounted token lets anyone who compromises the pod call the Kubernetes API as its service account.",
        "Set `automountServiceAccountToken: false` on the pod or its ServiceAccount unless it calls the API.",
        "checkov CKV_K8S_38",
    ),
    Rule::fixed(
        "K8S016",
        K,
        Severity::High,
        "Secret in an environment value",
        "A credential written into the manifest is in version control, in `kubectl describe` and in every copy of the YAML.",
        "Store it in a Secret (or Ward's vault) and use `valueFrom.secretKeyRef`, or mount it as a file.",
        "checkov CKV_K8S_35 (secrets as files), kube-linter env-var-secret",
    ),
    Rule::fixed(
        "K8S017",
        K,
        Severity::High,
        "Host PID namespace",
        "`hostPID` shows the pod every process of the node and lets it signal or trace them.",
        "Remove `hostPID: true`.",
        "checkov CKV_K8S_17, kube-linter host-pid, kubesec hostPID",
    ),
    Rule::fixed(
        "K8S018",
        K,
        Severity::High,
        "Host IPC namespace",
        "`hostIPC` shares the node's shared memory and semaphores with the pod.",
        "Remove `hostIPC: true`.",
        "checkov CKV_K8S_18, kube-linter host-ipc, kubesec hostIPC",
    ),
    Rule::fixed(
        "K8S019",
        K,
        Severity::High,
        "Host network namespace",
        "`hostNetwork` puts the pod on the node's interfaces: it can reach node-local services and bypasses pod network isolation.",
        "Remove `hostNetwork: true`; expose the pod with a Service.",
        "checkov CKV_K8S_19, kube-linter host-network, kubesec hostNetwork",
    ),
    Rule::fixed(
        "K8S020",
        K,
        Severity::Medium,
        "hostPort used",
        "A hostPort binds the node's address directly, around Services and network policy.",
        "Remove `hostPort` and expose the container with a Service.",
        "checkov CKV_K8S_26, kube-linter host-port",
    ),
    Rule::fixed(
        "K8S021",
        K,
        Severity::Low,
        "No liveness probe",
        "Without a liveness probe a hung process keeps receiving traffic until someone notices.",
        "Add a `livenessProbe` to each long-running container.",
        "checkov CKV_K8S_8, kube-linter no-liveness-probe",
    ),
    Rule::fixed(
        "K8S022",
        K,
        Severity::Low,
        "No readiness probe",
        "Without a readiness probe traffic reaches the container before it can serve.",
        "Add a `readinessProbe` to each long-running container.",
        "checkov CKV_K8S_9, kube-linter no-readiness-probe",
    ),
    Rule::fixed(
        "K8S024",
        K,
        Severity::Critical,
        "Ward runs in dev mode",
        "`ward server --dev` keeps its unseal key on local disk and self-unseals; `ward up` is a demo. Neither belongs in a deployment.",
        "Run `ward server --config FILE` with a sealed store and unseal it with key shares.",
        "",
    ),
    Rule::fixed(
        "K8S025",
        K,
        Severity::Medium,
        "Container image from no registry host",
        "An image name without a registry host is resolved by the node's runtime defaults (usually Docker Hub): what is pulled depends on the node, not the manifest.",
        "Name the registry explicitly (`registry.example.com/team/app:1.2@sha256:…`).",
        "kube-linter (none), checkov (none)",
    ),
    Rule::fixed(
        "K8S026",
        K,
        Severity::High,
        "Container running as UID 0",
        "`runAsUser: 0` asks for root explicitly, overriding a non-root image.",
        "Set a non-zero `runAsUser` and `runAsNonRoot: true`.",
        "checkov CKV_K8S_40 (high UID), kubesec RunAsNonRoot",
    ),
];

fn rule(id: &str) -> &'static Rule {
    crate::finding::rule_by_id(&RULES, id)
}

/// The pod spec and pod metadata an object makes, if it makes pods.
pub(crate) fn pod_template(obj: &Object) -> Option<(&Node, &Node)> {
    let d = &obj.doc;
    let t = match obj.kind.as_str() {
        "Pod" => return Some((d.get("spec"), d.get("metadata"))),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => d.at(&["spec", "template"]),
        "CronJob" => d.at(&["spec", "jobTemplate", "spec", "template"]),
        _ => return None,
    };
    (!t.get("spec").is_null()).then(|| (t.get("spec"), t.get("metadata")))
}

/// Names of keys that hold credentials when given a literal value.
static SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(passw(or)?d|passwd|secret|token|api[_-]?key|private[_-]?key|credential|access[_-]?key|auth[_-]?key)")
        .expect("a constant regex (unit-tested)")
});

/// A name that refers to where a secret is, not to the secret itself.
fn names_a_reference(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "_FILE",
        "_PATH",
        "_URL",
        "_URI",
        "_NAME",
        "_ENDPOINT",
        "_HOST",
        "_ID",
        "_DIR",
        "_TTL",
        "_TYPE",
    ]
    .iter()
    .any(|s| n.ends_with(s))
}

const SENSITIVE_HOST_PATHS: &[&str] = &[
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/root",
    "/home",
    "/boot",
    "/dev",
    "/var/run",
    "/run",
    "/var/lib/kubelet",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/log",
    "/etc/kubernetes",
];

fn is_sensitive_host_path(p: &str) -> bool {
    let p = p.trim_end_matches('/');
    let p = if p.is_empty() { "/" } else { p };
    p.ends_with(".sock")
        || SENSITIVE_HOST_PATHS.contains(&p)
        || p.starts_with("/etc/kubernetes")
        || p.starts_with("/var/lib/kubelet")
}

/// Effective security setting: the container's, else the pod's.
fn effective<'a>(container: &'a Node, pod: &'a Node, key: &str) -> &'a Node {
    let c = container.at(&["securityContext", key]);
    if c.is_null() {
        pod.at(&["securityContext", key])
    } else {
        c
    }
}

pub(super) fn check(obj: &Object, index: &Index, out: &mut Vec<Finding>) {
    let Some((pod, meta)) = pod_template(obj) else {
        return;
    };
    let f = obj.file.as_str();
    let label = obj.label();
    let at = |n: &Node| n.line_or(obj.line);

    for (key, id) in [
        ("hostPID", "K8S017"),
        ("hostIPC", "K8S018"),
        ("hostNetwork", "K8S019"),
    ] {
        let n = pod.get(key);
        if n.as_bool() == Some(true) {
            out.push(Finding::new(
                rule(id),
                f,
                at(n),
                &label,
                key,
                format!("{label} sets {key}: true"),
            ));
        }
    }

    // The service account token: the pod's setting wins, else its
    // ServiceAccount's (when that is in the scan), else mounted.
    let sa = pod
        .get("serviceAccountName")
        .as_str()
        .or_else(|| pod.get("serviceAccount").as_str())
        .unwrap_or("default");
    let automount = pod
        .get("automountServiceAccountToken")
        .as_bool()
        .or_else(|| index.service_account_automount(obj.effective_namespace(), sa));
    if automount != Some(false) {
        let n = pod.get("automountServiceAccountToken");
        out.push(Finding::new(rule("K8S015"), f, at(n), &label, "", format!(
            "{label} mounts the token of service account {sa:?}: set automountServiceAccountToken: false on the pod or the ServiceAccount"
        )));
    }

    for v in pod.get("volumes").items() {
        let hp = v.at(&["hostPath", "path"]);
        if let Some(path) = hp.as_str() {
            let name = v.get("name").as_str().unwrap_or("?");
            let (id, what) = if is_sensitive_host_path(path) {
                ("K8S014", "a sensitive host path")
            } else {
                ("K8S013", "a hostPath volume")
            };
            out.push(Finding::new(
                rule(id),
                f,
                at(hp),
                &label,
                name,
                format!("{label} mounts {what}: volume {name:?} is {path:?} on the node"),
            ));
        }
    }

    let annotations = meta.get("annotations");
    let seccomp_annotation = annotations
        .get("seccomp.security.alpha.kubernetes.io/pod")
        .as_str()
        .map(|v| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/"));
    let long_running = match obj.kind.as_str() {
        "Job" | "CronJob" => false,
        "Pod" => !matches!(
            pod.get("restartPolicy").as_str(),
            Some("Never" | "OnFailure")
        ),
        _ => true,
    };

    let groups = [
        ("containers", false),
        ("initContainers", true),
        ("ephemeralContainers", true),
    ];
    for (group, is_init) in groups {
        for c in pod.get(group).items() {
            let cname = c.get("name").as_str().unwrap_or("?");
            let object = format!("{label} container {cname}");
            let cline = c.line_or(obj.line);
            let sc = c.get("securityContext");
            let here = |n: &Node| n.line_or(sc.line_or(cline));

            let privileged = sc.get("privileged");
            if privileged.as_bool() == Some(true) {
                out.push(Finding::new(
                    rule("K8S001"),
                    f,
                    here(privileged),
                    &object,
                    "",
                    format!("{object} is privileged (securityContext.privileged: true)"),
                ));
            }
            let ape = sc.get("allowPrivilegeEscalation");
            if ape.as_bool() != Some(false) {
                out.push(Finding::new(
                    rule("K8S002"),
                    f,
                    here(ape),
                    &object,
                    "",
                    format!("{object} does not set allowPrivilegeEscalation: false"),
                ));
            }
            let user = effective(c, pod, "runAsUser");
            let non_root = effective(c, pod, "runAsNonRoot");
            if user.as_int() == Some(0) {
                out.push(Finding::new(
                    rule("K8S026"),
                    f,
                    here(user),
                    &object,
                    "",
                    format!("{object} runs as UID 0 (runAsUser: 0)"),
                ));
            } else if non_root.as_bool() != Some(true) && user.as_int().is_none_or(|u| u <= 0) {
                out.push(Finding::new(rule("K8S003"), f, here(non_root), &object, "", format!(
                    "{object} may run as root: neither runAsNonRoot: true nor a non-zero runAsUser is set"
                )));
            }
            let ro = sc.get("readOnlyRootFilesystem");
            if ro.as_bool() != Some(true) {
                out.push(Finding::new(rule("K8S004"), f, here(ro), &object, "", format!(
                    "{object} has a writable root filesystem (readOnlyRootFilesystem is not true)"
                )));
            }
            let caps = sc.get("capabilities");
            let added: Vec<String> = caps
                .get("add")
                .items()
                .iter()
                .filter_map(|n| n.as_str())
                .map(|s| s.trim_start_matches("CAP_").to_ascii_uppercase())
                .filter(|s| s != "NET_BIND_SERVICE")
                .collect();
            if !added.is_empty() {
                out.push(Finding::new(
                    rule("K8S005"),
                    f,
                    here(caps.get("add")),
                    &object,
                    "",
                    format!("{object} adds capabilities {}", added.join(", ")),
                ));
            }
            let drops_all = caps
                .get("drop")
                .items()
                .iter()
                .any(|n| n.as_str().is_some_and(|s| s.eq_ignore_ascii_case("ALL")));
            if !drops_all {
                out.push(Finding::new(
                    rule("K8S006"),
                    f,
                    here(caps),
                    &object,
                    "",
                    format!("{object} does not drop ALL capabilities"),
                ));
            }
            let seccomp = effective(c, pod, "seccompProfile");
            match seccomp.get("type").as_str() {
                Some("RuntimeDefault" | "Localhost") => {}
                Some("Unconfined") => out.push(
                    Finding::new(rule("K8S007"), f, here(seccomp), &object, "", format!(
                        "{object} runs with seccomp Unconfined"
                    ))
                    .with_severity(Severity::High),
                ),
                _ if seccomp_annotation == Some(true) => {}
                _ => out.push(Finding::new(rule("K8S007"), f, here(seccomp), &object, "", format!(
                    "{object} has no seccomp profile (seccompProfile.type RuntimeDefault or Localhost)"
                ))),
            }
            let apparmor = effective(c, pod, "appArmorProfile");
            let apparmor_annotation = annotations
                .get(&format!(
                    "container.apparmor.security.beta.kubernetes.io/{cname}"
                ))
                .as_str();
            if apparmor.get("type").as_str() == Some("Unconfined")
                || apparmor_annotation == Some("unconfined")
            {
                out.push(Finding::new(
                    rule("K8S008"),
                    f,
                    here(apparmor),
                    &object,
                    "",
                    format!("{object} runs with AppArmor unconfined"),
                ));
            }

            let res = c.get("resources");
            let missing = |part: &str| -> Vec<&'static str> {
                ["cpu", "memory"]
                    .into_iter()
                    .filter(|k| res.at(&[part, k]).is_null())
                    .collect()
            };
            let req = missing("requests");
            if !req.is_empty() {
                out.push(Finding::new(
                    rule("K8S009"),
                    f,
                    res.line_or(cline),
                    &object,
                    "",
                    format!("{object} sets no {} request", req.join(" or ")),
                ));
            }
            let lim = missing("limits");
            if !lim.is_empty() {
                out.push(Finding::new(
                    rule("K8S010"),
                    f,
                    res.line_or(cline),
                    &object,
                    "",
                    format!("{object} sets no {} limit", lim.join(" or ")),
                ));
            }

            let img = c.get("image");
            if let Some(image) = img.as_str() {
                check_image(image, &object, f, img.line_or(cline), out);
            }

            for p in c.get("ports").items() {
                let hp = p.get("hostPort");
                if hp.as_int().is_some_and(|n| n > 0) {
                    out.push(Finding::new(
                        rule("K8S020"),
                        f,
                        at(hp),
                        &object,
                        &hp.as_int().unwrap_or(0).to_string(),
                        format!("{object} binds hostPort {}", hp.as_int().unwrap_or(0)),
                    ));
                }
            }

            for e in c.get("env").items() {
                let name = e.get("name").as_str().unwrap_or("");
                let value = e.get("value");
                let Some(v) = value.text() else { continue };
                let literal = !v.trim().is_empty() && !v.starts_with("$(");
                let named = SECRET_NAME.is_match(name) && !names_a_reference(name);
                if literal && (named || crate::secrets::looks_like_credential(&v)) {
                    out.push(Finding::new(rule("K8S016"), f, at(value), &object, name, format!(
                        "{object} sets environment variable {name:?} to a literal credential (value not shown)"
                    )));
                }
            }

            let mut argv: Vec<String> = Vec::new();
            for key in ["command", "args"] {
                argv.extend(c.get(key).items().iter().filter_map(Node::text));
            }
            if crate::dockerfile::runs_ward_in_dev_mode(&argv.join(" ")) {
                out.push(Finding::new(
                    rule("K8S024"),
                    f,
                    c.get("command").line_or(cline),
                    &object,
                    "",
                    format!("{object} runs Ward in dev mode"),
                ));
            }

            if !is_init && long_running {
                for (key, id) in [("livenessProbe", "K8S021"), ("readinessProbe", "K8S022")] {
                    if c.get(key).is_null() {
                        out.push(Finding::new(
                            rule(id),
                            f,
                            cline,
                            &object,
                            "",
                            format!("{object} has no {key}"),
                        ));
                    }
                }
            }
        }
    }
}

/// An image reference split into what rules need.
pub(crate) struct ImageRef<'a> {
    pub registry: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

pub(crate) fn parse_image(image: &str) -> ImageRef<'_> {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    // A tag is after the last ':' that follows the last '/' (a registry
    // port comes before a '/').
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let tag = rest[last_slash..]
        .rfind(':')
        .map(|i| &rest[last_slash + i + 1..]);
    let first = rest.split('/').next().unwrap_or("");
    let registry = (rest.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost"))
        .then_some(first);
    ImageRef {
        registry,
        tag,
        digest,
    }
}

fn check_image(image: &str, object: &str, f: &str, line: usize, out: &mut Vec<Finding>) {
    let r = parse_image(image);
    if r.digest.is_none() {
        match r.tag {
            None | Some("latest") => out.push(Finding::new(
                rule("K8S011"),
                f,
                line,
                object,
                "",
                format!(
                    "{object} uses image {image:?} with {}",
                    if r.tag.is_none() {
                        "no tag"
                    } else {
                        "the latest tag"
                    }
                ),
            )),
            Some(_) => {}
        }
        out.push(Finding::new(
            rule("K8S012"),
            f,
            line,
            object,
            "",
            format!("{object} uses image {image:?}, not pinned by digest"),
        ));
    }
    if r.registry.is_none() && !image.contains('/') && r.digest.is_none() {
        // Online Boutique-style bare names that a build tool fills in are
        // also caught by K8S011; a bare name with a tag pulls from the
        // runtime's default registry.
        if r.tag.is_some() {
            out.push(Finding::new(
                rule("K8S025"),
                f,
                line,
                object,
                "",
                format!("{object} uses image {image:?} without a registry host"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let r = parse_image("localhost:5000/app:1.2@sha256:ab");
        assert_eq!(
            (r.registry, r.tag, r.digest),
            (Some("localhost:5000"), Some("1.2"), Some("sha256:ab"))
        );
        let r = parse_image("busybox");
        assert_eq!((r.registry, r.tag, r.digest), (None, None, None));
        let r = parse_image("gcr.io/x/y:latest");
        assert_eq!((r.registry, r.tag), (Some("gcr.io"), Some("latest")));
        let r = parse_image("registry:5000/y");
        assert_eq!((r.registry, r.tag), (Some("registry:5000"), None));
    }

    #[test]
    fn sensitive_paths() {
        for p in [
            "/var/run/docker.sock",
            "/",
            "/etc/",
            "/var/lib/kubelet/pods",
            "/run/containerd/containerd.sock",
        ] {
            assert!(is_sensitive_host_path(p), "{p}");
        }
        for p in ["/data", "/var/cache/app", "/mnt/disk"] {
            assert!(!is_sensitive_host_path(p), "{p}");
        }
    }

    #[test]
    fn rule_ids_are_unique() {
        let mut ids: Vec<_> = RULES.iter().map(|r| r.id.as_ref()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
    }
}
