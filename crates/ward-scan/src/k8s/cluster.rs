//! Checks on objects that are not pods (RBAC, Services, the namespace of
//! everything) and the ones that need the whole scan: which pods a
//! NetworkPolicy selects, and which namespaces have a default deny.

use std::collections::{BTreeMap, HashMap};

use super::Object;
use super::workload::pod_template;
use crate::finding::{Finding, Kind, Rule, Severity};
use crate::yaml::Node;

const K: Kind = Kind::K8s;

pub static RULES: [Rule; 8] = [
    Rule::fixed(
        "K8S040",
        K,
        Severity::High,
        "RBAC wildcard",
        "`*` in verbs, resources or API groups grants whatever exists now and whatever is added later, including secrets and new privileged resources.",
        "List the verbs, resources and API groups the subject needs.",
        "checkov CKV_K8S_49, kube-linter wildcard-in-rules",
    ),
    Rule::fixed(
        "K8S041",
        K,
        Severity::High,
        "RBAC escalate, bind or impersonate",
        "`escalate` and `bind` let the holder grant itself roles it does not have; `impersonate` lets it act as any user, group or service account.",
        "Remove these verbs; only cluster administrators' roles need them.",
        "checkov CKV_K8S_155, CKV_K8S_156, CKV_K8S_157",
    ),
    Rule::fixed(
        "K8S042",
        K,
        Severity::High,
        "Secrets readable cluster-wide",
        "A ClusterRole that can get, list or watch secrets reads every credential of every namespace once bound cluster-wide.",
        "Grant secret access in a Role, in the one namespace, naming the secrets (`resourceNames`).",
        "kube-linter access-to-secrets, checkov CKV2_K8S_5",
    ),
    Rule::fixed(
        "K8S043",
        K,
        Severity::Critical,
        "Binding to cluster-admin",
        "cluster-admin can do anything in the cluster; a binding hands that to its subjects.",
        "Bind a role that grants what the subject needs.",
        "kube-linter cluster-admin-role-binding, checkov CKV2_K8S_3",
    ),
    Rule::fixed(
        "K8S044",
        K,
        Severity::Medium,
        "Service exposed outside the cluster",
        "A NodePort or LoadBalancer Service accepts connections from outside the cluster, around the mesh's front door.",
        "Use ClusterIP behind an ingress or gateway that authenticates; if the exposure is deliberate, suppress with a reason.",
        "kube-linter exposed-services, checkov CKV_K8S_? (none for LoadBalancer)",
    ),
    Rule::fixed(
        "K8S045",
        K,
        Severity::Low,
        "Object in the default namespace",
        "Everything in `default` shares one set of RBAC grants, quotas and network policies; a namespace per application is the unit of isolation.",
        "Set `metadata.namespace` to the application's own namespace.",
        "checkov CKV_K8S_21, kube-linter use-namespace",
    ),
    Rule::fixed(
        "K8S050",
        K,
        Severity::Medium,
        "Pod not selected by any NetworkPolicy",
        "A pod no NetworkPolicy selects accepts connections from every pod in the cluster: one compromised pod can reach it.",
        "Add a NetworkPolicy that selects it (and a default deny in its namespace).",
        "checkov CKV2_K8S_6, kube-linter non-isolated-pod",
    ),
    Rule::fixed(
        "K8S051",
        K,
        Severity::Medium,
        "Namespace without a default-deny NetworkPolicy",
        "Without a policy that selects every pod and allows nothing, each new workload in the namespace starts open.",
        "Add a NetworkPolicy with `podSelector: {}` and `policyTypes: [Ingress, Egress]` and no rules.",
        "kube-linter (none), checkov (none)",
    ),
];

fn rule(id: &str) -> &'static Rule {
    crate::finding::rule_by_id(&RULES, id)
}

/// What rules look up across objects.
pub struct Index<'a> {
    service_accounts: HashMap<(&'a str, &'a str), Option<bool>>,
    network_policies: BTreeMap<&'a str, Vec<&'a Object>>,
}

impl<'a> Index<'a> {
    pub fn new(objects: &'a [Object]) -> Index<'a> {
        let mut service_accounts = HashMap::new();
        let mut network_policies: BTreeMap<&str, Vec<&Object>> = BTreeMap::new();
        for o in objects {
            match o.kind.as_str() {
                "ServiceAccount" => {
                    service_accounts.insert(
                        (o.effective_namespace(), o.name.as_str()),
                        o.doc.get("automountServiceAccountToken").as_bool(),
                    );
                }
                "NetworkPolicy" if o.api_version.starts_with("networking.k8s.io/") => {
                    network_policies
                        .entry(o.effective_namespace())
                        .or_default()
                        .push(o);
                }
                _ => {}
            }
        }
        Index {
            service_accounts,
            network_policies,
        }
    }

    /// The ServiceAccount's `automountServiceAccountToken`, when the
    /// account is in the scan and sets it.
    pub fn service_account_automount(&self, namespace: &str, name: &str) -> Option<bool> {
        self.service_accounts
            .get(&(namespace, name))
            .copied()
            .flatten()
    }
}

/// Kinds whose namespace is the application's choice (not NetworkPolicy,
/// whose namespace follows the pods', nor custom resources, whose owners
/// decide).
fn namespaced_app_kind(kind: &str) -> bool {
    matches!(
        kind,
        "Pod"
            | "Deployment"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicaSet"
            | "Job"
            | "CronJob"
            | "ReplicationController"
            | "Service"
            | "ServiceAccount"
            | "ConfigMap"
            | "Secret"
            | "Role"
            | "RoleBinding"
            | "Ingress"
            | "PersistentVolumeClaim"
            | "HorizontalPodAutoscaler"
            | "PodDisruptionBudget"
    )
}

pub(super) fn check_object(obj: &Object, out: &mut Vec<Finding>) {
    let f = obj.file.as_str();
    let label = obj.label();
    if namespaced_app_kind(&obj.kind) && obj.namespace.as_deref().is_none_or(|n| n == "default") {
        let line = obj.doc.at(&["metadata", "namespace"]).line_or(obj.line);
        out.push(Finding::new(
            rule("K8S045"),
            f,
            line,
            &label,
            "",
            format!("{label} is in the default namespace"),
        ));
    }
    match obj.kind.as_str() {
        "Role" | "ClusterRole" => check_role(obj, &label, out),
        "RoleBinding" | "ClusterRoleBinding" => {
            let r = obj.doc.get("roleRef");
            if r.get("name").as_str() == Some("cluster-admin")
                && r.get("kind").as_str() == Some("ClusterRole")
            {
                let subjects: Vec<String> = obj
                    .doc
                    .get("subjects")
                    .items()
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {}",
                            s.get("kind").as_str().unwrap_or("?"),
                            s.get("name").as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                out.push(Finding::new(
                    rule("K8S043"),
                    f,
                    r.line_or(obj.line),
                    &label,
                    "",
                    format!(
                        "{label} binds cluster-admin to {}",
                        if subjects.is_empty() {
                            "no subjects".into()
                        } else {
                            subjects.join(", ")
                        }
                    ),
                ));
            }
        }
        "Service" => {
            let t = obj.doc.at(&["spec", "type"]);
            if let Some(ty @ ("NodePort" | "LoadBalancer")) = t.as_str() {
                out.push(Finding::new(
                    rule("K8S044"),
                    f,
                    t.line_or(obj.line),
                    &label,
                    "",
                    format!("{label} is of type {ty}, reachable from outside the cluster"),
                ));
            }
        }
        _ => {}
    }
}

fn strings(n: &Node) -> Vec<&str> {
    n.items().iter().filter_map(Node::as_str).collect()
}

fn check_role(obj: &Object, label: &str, out: &mut Vec<Finding>) {
    let f = obj.file.as_str();
    for (i, r) in obj.doc.get("rules").items().iter().enumerate() {
        let verbs = strings(r.get("verbs"));
        let resources = strings(r.get("resources"));
        let groups = strings(r.get("apiGroups"));
        let line = r.line_or(obj.line);
        let key = i.to_string();
        let wild: Vec<&str> = [
            ("verbs", &verbs),
            ("resources", &resources),
            ("apiGroups", &groups),
        ]
        .into_iter()
        .filter(|(_, v)| v.contains(&"*"))
        .map(|(k, _)| k)
        .collect();
        if !wild.is_empty() {
            out.push(Finding::new(
                rule("K8S040"),
                f,
                line,
                label,
                &key,
                format!("{label} rule {} grants * in {}", i + 1, wild.join(", ")),
            ));
        }
        let dangerous: Vec<&str> = verbs
            .iter()
            .copied()
            .filter(|v| matches!(*v, "escalate" | "bind" | "impersonate"))
            .collect();
        if !dangerous.is_empty() {
            out.push(Finding::new(
                rule("K8S041"),
                f,
                line,
                label,
                &key,
                format!("{label} rule {} grants {}", i + 1, dangerous.join(", ")),
            ));
        }
        let reads = verbs
            .iter()
            .any(|v| matches!(*v, "get" | "list" | "watch" | "*"));
        let core = groups.is_empty() || groups.iter().any(|g| g.is_empty() || *g == "*");
        let secrets = resources.iter().any(|r| *r == "secrets" || *r == "*");
        let named = !r.get("resourceNames").items().is_empty();
        if obj.kind == "ClusterRole" && reads && core && secrets && !named {
            out.push(Finding::new(
                rule("K8S042"),
                f,
                line,
                label,
                &key,
                format!("{label} rule {} can read secrets in every namespace", i + 1),
            ));
        }
    }
}

/// Does a label selector (`matchLabels`, `matchExpressions`) select these
/// labels? An empty selector selects everything.
pub(crate) fn selects(selector: &Node, labels: &Node) -> bool {
    let value = |k: &str| labels.get(k).text();
    for (k, v) in selector.get("matchLabels").entries() {
        if value(k) != v.text() {
            return false;
        }
    }
    for e in selector.get("matchExpressions").items() {
        let key = e.get("key").as_str().unwrap_or("");
        let vals: Vec<String> = e
            .get("values")
            .items()
            .iter()
            .filter_map(Node::text)
            .collect();
        let have = value(key);
        let ok = match e.get("operator").as_str() {
            Some("In") => have.is_some_and(|h| vals.contains(&h)),
            Some("NotIn") => have.is_none_or(|h| !vals.contains(&h)),
            Some("Exists") => have.is_some(),
            Some("DoesNotExist") => have.is_none(),
            // An operator Kubernetes would refuse: select nothing rather
            // than guess.
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A policy with `podSelector: {}` that denies ingress: Ingress among its
/// types (or implied by having no egress section) and no ingress rule.
fn is_default_deny(np: &Object) -> bool {
    let spec = np.doc.get("spec");
    let sel = spec.get("podSelector");
    let empty_selector = sel.get("matchLabels").entries().is_empty()
        && sel.get("matchExpressions").items().is_empty();
    let types = strings(spec.get("policyTypes"));
    let covers_ingress = types.contains(&"Ingress") || types.is_empty();
    empty_selector && covers_ingress && spec.get("ingress").items().is_empty()
}

pub(super) fn check_network(objects: &[Object], index: &Index<'_>, out: &mut Vec<Finding>) {
    let mut first_workload: BTreeMap<&str, &Object> = BTreeMap::new();
    for obj in objects {
        let Some((_, meta)) = pod_template(obj) else {
            continue;
        };
        let ns = obj.effective_namespace();
        first_workload.entry(ns).or_insert(obj);
        let policies = index
            .network_policies
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let labels = meta.get("labels");
        if !policies
            .iter()
            .any(|np| selects(np.doc.at(&["spec", "podSelector"]), labels))
        {
            let label = obj.label();
            out.push(Finding::new(
                rule("K8S050"),
                &obj.file,
                obj.line,
                &label,
                "",
                format!("{label}: its pods are selected by no NetworkPolicy in namespace {ns}"),
            ));
        }
    }
    for (ns, obj) in first_workload {
        let policies = index
            .network_policies
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if !policies.iter().any(|np| is_default_deny(np)) {
            out.push(Finding::new(rule("K8S051"), &obj.file, obj.line, format!("namespace {ns}"), "", format!(
                "namespace {ns} has workloads ({} among them) and no default-deny NetworkPolicy", obj.label()
            )));
        }
    }
}
