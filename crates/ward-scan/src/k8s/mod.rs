//! Kubernetes manifests: objects are read from every document of every
//! file (multi-document streams, `List` kinds, rendered Helm or kustomize
//! output), then checked together, so a rule can see a Deployment with its
//! ServiceAccount, the RoleBindings and the NetworkPolicies of the scan.

mod cluster;
mod workload;

use crate::finding::{Finding, Rule};
use crate::yaml::{self, Node};

pub use cluster::RULES as CLUSTER_RULES;
pub use workload::RULES as WORKLOAD_RULES;
pub(crate) use workload::parse_image;

/// All Kubernetes rules.
pub fn rules() -> impl Iterator<Item = &'static Rule> {
    WORKLOAD_RULES.iter().chain(CLUSTER_RULES.iter())
}

/// One object of a manifest.
#[derive(Debug)]
pub struct Object {
    /// Index of the file in the scan (for its display name).
    pub file: String,
    pub kind: String,
    pub api_version: String,
    pub name: String,
    /// As written; `None` means the namespace of the kubectl context
    /// (usually `default`).
    pub namespace: Option<String>,
    /// The line of the object's `kind` key (where the object starts).
    pub line: usize,
    pub doc: Node,
}

impl Object {
    /// The namespace the object lands in when applied without `-n`.
    pub fn effective_namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// `Kind namespace/name`, as findings name it.
    pub fn label(&self) -> String {
        if is_cluster_scoped(&self.kind) {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.effective_namespace(), self.name)
        }
    }
}

/// Kinds that have no namespace.
pub fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "PersistentVolume"
            | "StorageClass"
            | "CustomResourceDefinition"
            | "Node"
            | "PriorityClass"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "APIService"
            | "RuntimeClass"
            | "IngressClass"
            | "CSIDriver"
    )
}

/// Why a file's objects could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    #[error("line {line}: {what}")]
    Shape { line: usize, what: String },
}

/// Reads the Kubernetes objects of one YAML text. Documents that are not
/// Kubernetes objects (no `apiVersion` and `kind`) are left out; an object
/// whose `metadata` is not a mapping is an error, not a silent skip.
pub fn load(file: &str, text: &str) -> Result<Vec<Object>, ManifestError> {
    let mut out = Vec::new();
    for doc in yaml::parse_documents(text)? {
        collect(file, doc, &mut out)?;
    }
    Ok(out)
}

fn collect(file: &str, doc: Node, out: &mut Vec<Object>) -> Result<(), ManifestError> {
    let (Some(kind), Some(api_version)) =
        (doc.get("kind").as_str(), doc.get("apiVersion").as_str())
    else {
        return Ok(());
    };
    if kind == "List" || (kind.ends_with("List") && !doc.get("items").items().is_empty()) {
        let Node { value, .. } = doc;
        if let yaml::Value::Map(entries) = value {
            for (k, v) in entries {
                if k == "items" {
                    if let yaml::Value::Seq(items) = v.value {
                        for item in items {
                            collect(file, item, out)?;
                        }
                    }
                }
            }
        }
        return Ok(());
    }
    let meta = doc.get("metadata");
    if !meta.is_null() && meta.entries().is_empty() && !matches!(meta.value, yaml::Value::Map(_)) {
        return Err(ManifestError::Shape {
            line: meta.line,
            what: format!("{kind}: metadata is not a mapping"),
        });
    }
    let name = meta
        .get("name")
        .text()
        .or_else(|| meta.get("generateName").text().map(|g| format!("{g}*")))
        .unwrap_or_else(|| "(unnamed)".to_owned());
    let namespace = meta.get("namespace").text();
    out.push(Object {
        file: file.to_owned(),
        kind: kind.to_owned(),
        api_version: api_version.to_owned(),
        name,
        namespace,
        line: doc.get("kind").line_or(doc.line),
        doc,
    });
    Ok(())
}

/// Runs every Kubernetes rule over all objects of a scan.
pub fn check(objects: &[Object]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let index = cluster::Index::new(objects);
    for obj in objects {
        workload::check(obj, &index, &mut findings);
        cluster::check_object(obj, &mut findings);
    }
    cluster::check_network(objects, &index, &mut findings);
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_and_multi_documents() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n---\nfoo: bar\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\n";
        let objs = load("f.yaml", text).unwrap();
        let names: Vec<_> = objs.iter().map(Object::label).collect();
        assert_eq!(names, ["Pod default/a", "Service x/s"]);
        assert_eq!(objs[0].line, 5);
    }

    #[test]
    fn metadata_must_be_a_mapping() {
        let e = load("f", "apiVersion: v1\nkind: Pod\nmetadata: [1]\n").unwrap_err();
        assert!(e.to_string().contains("metadata"), "{e}");
    }
}
