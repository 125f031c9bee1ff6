//! One fixture that triggers each check and one near miss that does not,
//! each naming the case. A catalogue test makes sure no rule ships
//! without its pair.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use ward_scan::finding::Finding;

// ---------------------------------------------------------------- Kubernetes

/// A hardened Deployment with everything around it: its ServiceAccount,
/// a default deny and a policy selecting it, a ClusterIP Service, a
/// narrow Role and its binding. Scanned as is, it has no findings.
fn cluster() -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {
                "serviceAccountName": "web",
                "automountServiceAccountToken": false,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "app",
                    "image": "registry.example/shop/web:1.4.2@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                    "securityContext": {"privileged": false, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
                }]
            }}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "shop"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny-all", "namespace": "shop"},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"type": "ClusterIP", "selector": {"app": "web"}, "ports": [{"port": 80}]}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader", "namespace": "shop"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader", "namespace": "shop"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]}
    ]})
}

fn pod(c: &mut Value) -> &mut Value {
    &mut c["items"][0]["spec"]["template"]["spec"]
}

fn container(c: &mut Value) -> &mut Value {
    &mut pod(c)["containers"][0]
}

fn k8s_ids(doc: &Value) -> BTreeSet<String> {
    // JSON is YAML: the fixture goes through the real YAML loader.
    let objects = ward_scan::k8s::load("fixture.yaml", &doc.to_string()).expect("fixture parses");
    ward_scan::k8s::check(&objects)
        .into_iter()
        .map(|f| f.rule_id)
        .collect()
}

type Mutation = fn(&mut Value);

const K8S_CASES: &[(&str, &str, Mutation, Mutation)] = &[
    (
        "K8S001",
        "privileged: true / privileged: false",
        |c| container(c)["securityContext"]["privileged"] = json!(true),
        |c| container(c)["securityContext"]["privileged"] = json!(false),
    ),
    (
        "K8S002",
        "allowPrivilegeEscalation unset / false",
        |c| {
            container(c)["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("allowPrivilegeEscalation");
        },
        |c| container(c)["securityContext"]["allowPrivilegeEscalation"] = json!(false),
    ),
    (
        "K8S003",
        "no runAsNonRoot anywhere / set on the container only",
        |c| {
            pod(c)["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("runAsNonRoot");
            pod(c)["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("runAsUser");
        },
        |c| {
            pod(c)["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("runAsNonRoot");
            container(c)["securityContext"]["runAsNonRoot"] = json!(true);
        },
    ),
    (
        "K8S004",
        "readOnlyRootFilesystem false / true",
        |c| container(c)["securityContext"]["readOnlyRootFilesystem"] = json!(false),
        |c| container(c)["securityContext"]["readOnlyRootFilesystem"] = json!(true),
    ),
    (
        "K8S005",
        "adds SYS_ADMIN / adds only NET_BIND_SERVICE",
        |c| container(c)["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"]),
        |c| container(c)["securityContext"]["capabilities"]["add"] = json!(["NET_BIND_SERVICE"]),
    ),
    (
        "K8S006",
        "drops NET_RAW only / drops all (lower case)",
        |c| container(c)["securityContext"]["capabilities"]["drop"] = json!(["NET_RAW"]),
        |c| container(c)["securityContext"]["capabilities"]["drop"] = json!(["all"]),
    ),
    (
        "K8S007",
        "no seccomp profile / the legacy runtime/default annotation",
        |c| {
            pod(c)["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("seccompProfile");
        },
        |c| {
            pod(c)["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("seccompProfile");
            c["items"][0]["spec"]["template"]["metadata"]["annotations"] =
                json!({"seccomp.security.alpha.kubernetes.io/pod": "runtime/default"});
        },
    ),
    (
        "K8S008",
        "AppArmor Unconfined / RuntimeDefault",
        |c| container(c)["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"}),
        |c| container(c)["securityContext"]["appArmorProfile"] = json!({"type": "RuntimeDefault"}),
    ),
    (
        "K8S009",
        "no memory request / both requests",
        |c| {
            container(c)["resources"]["requests"]
                .as_object_mut()
                .unwrap()
                .remove("memory");
        },
        |c| container(c)["resources"]["requests"] = json!({"cpu": "1", "memory": "1Gi"}),
    ),
    (
        "K8S010",
        "no limits / both limits",
        |c| {
            container(c)["resources"]
                .as_object_mut()
                .unwrap()
                .remove("limits");
        },
        |c| container(c)["resources"]["limits"] = json!({"cpu": "1", "memory": "1Gi"}),
    ),
    (
        "K8S011",
        "image :latest / a version tag with a digest",
        |c| container(c)["image"] = json!("registry.example/shop/web:latest"),
        |c| {
            container(c)["image"] = json!(
                "registry.example/shop/web:2.0@sha256:1111111111111111111111111111111111111111111111111111111111111111"
            )
        },
    ),
    (
        "K8S012",
        "a tag without digest / a digest without tag",
        |c| container(c)["image"] = json!("registry.example/shop/web:1.4.2"),
        |c| {
            container(c)["image"] = json!(
                "registry.example/shop/web@sha256:1111111111111111111111111111111111111111111111111111111111111111"
            )
        },
    ),
    (
        "K8S013",
        "hostPath /data / an emptyDir",
        |c| pod(c)["volumes"] = json!([{"name": "d", "hostPath": {"path": "/data"}}]),
        |c| pod(c)["volumes"] = json!([{"name": "d", "emptyDir": {}}]),
    ),
    (
        "K8S014",
        "the Docker socket / an ordinary host directory",
        |c| {
            pod(c)["volumes"] = json!([{"name": "d", "hostPath": {"path": "/var/run/docker.sock"}}])
        },
        |c| pod(c)["volumes"] = json!([{"name": "d", "hostPath": {"path": "/srv/cache"}}]),
    ),
    (
        "K8S015",
        "pod and account silent / the ServiceAccount turns it off",
        |c| {
            pod(c)
                .as_object_mut()
                .unwrap()
                .remove("automountServiceAccountToken");
        },
        |c| {
            pod(c)
                .as_object_mut()
                .unwrap()
                .remove("automountServiceAccountToken");
            c["items"][1]["automountServiceAccountToken"] = json!(false);
        },
    ),
    (
        "K8S016",
        "a literal DB_PASSWORD / a password file path",
        |c| container(c)["env"] = json!([{"name": "DB_PASSWORD", "value": "s3cr3t-Pa55w0rd"}]),
        |c| container(c)["env"] = json!([{"name": "DB_PASSWORD_FILE", "value": "/run/secrets/db"}]),
    ),
    (
        "K8S017",
        "hostPID true / false",
        |c| pod(c)["hostPID"] = json!(true),
        |c| pod(c)["hostPID"] = json!(false),
    ),
    (
        "K8S018",
        "hostIPC true / false",
        |c| pod(c)["hostIPC"] = json!(true),
        |c| pod(c)["hostIPC"] = json!(false),
    ),
    (
        "K8S019",
        "hostNetwork true / false",
        |c| pod(c)["hostNetwork"] = json!(true),
        |c| pod(c)["hostNetwork"] = json!(false),
    ),
    (
        "K8S020",
        "a hostPort / a containerPort only",
        |c| container(c)["ports"] = json!([{"containerPort": 8080, "hostPort": 80}]),
        |c| container(c)["ports"] = json!([{"containerPort": 80}]),
    ),
    (
        "K8S021",
        "no livenessProbe in a Deployment / none in a Job (runs to completion)",
        |c| {
            container(c)
                .as_object_mut()
                .unwrap()
                .remove("livenessProbe");
        },
        |c| {
            container(c)
                .as_object_mut()
                .unwrap()
                .remove("livenessProbe");
            c["items"][0]["kind"] = json!("Job");
        },
    ),
    (
        "K8S022",
        "no readinessProbe / none on an init container",
        |c| {
            container(c)
                .as_object_mut()
                .unwrap()
                .remove("readinessProbe");
        },
        |c| {
            let mut init = container(c).clone();
            init.as_object_mut().unwrap().remove("readinessProbe");
            init["name"] = json!("init");
            pod(c)["initContainers"] = json!([init]);
        },
    ),
    (
        "K8S024",
        "command ward server --dev / ward server --config",
        |c| container(c)["command"] = json!(["ward", "server", "--dev"]),
        |c| {
            container(c)["command"] = json!(["ward", "server", "--config", "/etc/ward/server.toml"])
        },
    ),
    (
        "K8S025",
        "redis:7 from no registry / a registry host named",
        |c| container(c)["image"] = json!("redis:7.2"),
        |c| {
            container(c)["image"] = json!(
                "docker.io/library/redis:7.2@sha256:1111111111111111111111111111111111111111111111111111111111111111"
            )
        },
    ),
    (
        "K8S026",
        "runAsUser 0 on the container / 10001",
        |c| container(c)["securityContext"]["runAsUser"] = json!(0),
        |c| container(c)["securityContext"]["runAsUser"] = json!(10001),
    ),
    (
        "K8S040",
        "verbs [*] / verbs named",
        |c| c["items"][5]["rules"][0]["verbs"] = json!(["*"]),
        |c| c["items"][5]["rules"][0]["verbs"] = json!(["get", "watch"]),
    ),
    (
        "K8S041",
        "verb impersonate / verb patch",
        |c| c["items"][5]["rules"][0]["verbs"] = json!(["impersonate"]),
        |c| c["items"][5]["rules"][0]["verbs"] = json!(["patch"]),
    ),
    (
        "K8S042",
        "a ClusterRole reading secrets / the same in a namespaced Role",
        |c| {
            c["items"][5]["kind"] = json!("ClusterRole");
            c["items"][5]["rules"][0]["resources"] = json!(["secrets"]);
        },
        |c| c["items"][5]["rules"][0]["resources"] = json!(["secrets"]),
    ),
    (
        "K8S043",
        "a binding to cluster-admin / to a Role named cluster-admin",
        |c| c["items"][6]["roleRef"] = json!({"kind": "ClusterRole", "name": "cluster-admin", "apiGroup": "rbac.authorization.k8s.io"}),
        |c| c["items"][6]["roleRef"] = json!({"kind": "Role", "name": "cluster-admin", "apiGroup": "rbac.authorization.k8s.io"}),
    ),
    (
        "K8S044",
        "a LoadBalancer Service / ClusterIP",
        |c| c["items"][4]["spec"]["type"] = json!("LoadBalancer"),
        |c| c["items"][4]["spec"]["type"] = json!("ClusterIP"),
    ),
    (
        "K8S045",
        "no namespace on the Service / namespace shop",
        |c| {
            c["items"][4]["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("namespace");
        },
        |c| c["items"][4]["metadata"]["namespace"] = json!("shop"),
    ),
    (
        "K8S050",
        "both policies select another app / matchExpressions In selects it",
        |c| {
            c["items"][2]["spec"]["podSelector"] = json!({"matchLabels": {"app": "other"}});
            c["items"][3]["spec"]["podSelector"] = json!({"matchLabels": {"app": "other"}});
        },
        |c| {
            c["items"][3]["spec"]["podSelector"] = json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]})
        },
    ),
    (
        "K8S051",
        "the deny-all allows all ingress / it allows nothing",
        |c| c["items"][2]["spec"]["ingress"] = json!([{}]),
        |c| c["items"][2]["spec"]["ingress"] = json!([]),
    ),
];

#[test]
fn the_hardened_cluster_is_clean() {
    assert_eq!(k8s_ids(&cluster()), BTreeSet::new());
}

#[test]
fn each_kubernetes_check_fires_on_its_case_and_not_on_its_near_miss() {
    for (id, case, trigger, near_miss) in K8S_CASES {
        let mut c = cluster();
        trigger(&mut c);
        assert!(
            k8s_ids(&c).contains(*id),
            "{id} ({case}): not reported; got {:?}",
            k8s_ids(&c)
        );
        let mut c = cluster();
        near_miss(&mut c);
        assert!(
            !k8s_ids(&c).contains(*id),
            "{id} ({case}): reported on the near miss; got {:?}",
            k8s_ids(&c)
        );
    }
}

#[test]
fn a_privileged_pod_names_the_container_and_line() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: root-shell, namespace: shop}\nspec:\n  containers:\n  - name: c\n    image: busybox:latest\n    securityContext:\n      privileged: true\n";
    let objects = ward_scan::k8s::load("p.yaml", text).unwrap();
    let f: Vec<Finding> = ward_scan::k8s::check(&objects)
        .into_iter()
        .filter(|f| f.rule_id == "K8S001")
        .collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].line, 9);
    assert_eq!(f[0].object, "Pod shop/root-shell container c");
}

// ---------------------------------------------------------------- Dockerfiles

const HARDENED_DOCKERFILE: &str = "FROM golang:1.23@sha256:aaaa AS build\nRUN go build -o /app .\nFROM gcr.io/distroless/static:1.0\nCOPY --from=build /app /app\nUSER 10001\nHEALTHCHECK CMD [\"/app\", \"health\"]\nENTRYPOINT [\"/app\"]\n";

fn df_ids(text: &str) -> BTreeSet<String> {
    ward_scan::dockerfile::check("Dockerfile", text)
        .into_iter()
        .map(|f| f.rule_id)
        .collect()
}

fn with_run(run: &str) -> String {
    HARDENED_DOCKERFILE.replace("RUN go build -o /app .", run)
}

#[test]
fn the_hardened_dockerfile_is_clean() {
    assert_eq!(df_ids(HARDENED_DOCKERFILE), BTreeSet::new());
}

#[test]
fn each_dockerfile_check_fires_on_its_case_and_not_on_its_near_miss() {
    let cases: Vec<(&str, &str, String, String)> = vec![
        (
            "DF001",
            "no USER / USER 10001",
            HARDENED_DOCKERFILE.replace("USER 10001\n", ""),
            HARDENED_DOCKERFILE.to_owned(),
        ),
        (
            "DF001",
            "USER root last / root then a user",
            HARDENED_DOCKERFILE.replace("USER 10001", "USER root"),
            HARDENED_DOCKERFILE.replace("USER 10001", "USER root\nUSER app"),
        ),
        (
            "DF001",
            "no USER on a plain base / no USER on distroless :nonroot",
            HARDENED_DOCKERFILE.replace("USER 10001\n", ""),
            HARDENED_DOCKERFILE
                .replace("USER 10001\n", "")
                .replace("static:1.0", "static:nonroot"),
        ),
        (
            "DF002",
            "FROM ubuntu / FROM ubuntu:24.04",
            HARDENED_DOCKERFILE.replace("gcr.io/distroless/static:1.0", "ubuntu"),
            HARDENED_DOCKERFILE.replace("gcr.io/distroless/static:1.0", "ubuntu:24.04"),
        ),
        (
            "DF002",
            "FROM ${BASE} defaulting to latest / to a tag",
            format!(
                "ARG BASE=alpine:latest\n{}",
                HARDENED_DOCKERFILE.replace("gcr.io/distroless/static:1.0", "${BASE}")
            ),
            format!(
                "ARG BASE=alpine:3.20\n{}",
                HARDENED_DOCKERFILE.replace("gcr.io/distroless/static:1.0", "${BASE}")
            ),
        ),
        (
            "DF003",
            "ADD https:// / ADD --checksum https://",
            HARDENED_DOCKERFILE
                .replace("USER 10001", "ADD https://example.com/x.tgz /x\nUSER 10001"),
            HARDENED_DOCKERFILE.replace(
                "USER 10001",
                "ADD --checksum=sha256:abcd https://example.com/x.tgz /x\nUSER 10001",
            ),
        ),
        (
            "DF004",
            "ENV API_TOKEN=literal / ENV API_TOKEN_FILE=path",
            HARDENED_DOCKERFILE.replace("USER 10001", "ENV API_TOKEN=9f8e7d6c5b4a\nUSER 10001"),
            HARDENED_DOCKERFILE.replace(
                "USER 10001",
                "ENV API_TOKEN_FILE=/run/secrets/token\nUSER 10001",
            ),
        ),
        (
            "DF004",
            "ARG NPM_TOKEN (build-arg secret) / ARG VERSION",
            HARDENED_DOCKERFILE.replace("USER 10001", "ARG NPM_TOKEN\nUSER 10001"),
            HARDENED_DOCKERFILE.replace("USER 10001", "ARG VERSION\nUSER 10001"),
        ),
        (
            "DF005",
            "curl | sh / curl -o then verify",
            with_run("RUN curl -fsSL https://get.example.sh | sh"),
            with_run(
                "RUN curl -fsSLo i.sh https://get.example.sh && sha256sum -c i.sha && sh i.sh",
            ),
        ),
        (
            "DF006",
            "pip without --no-cache-dir / with",
            with_run("RUN pip install flask==3.0.0"),
            with_run("RUN pip install --no-cache-dir flask==3.0.0"),
        ),
        (
            "DF006",
            "apt lists left / removed",
            with_run(
                "RUN apt-get update && apt-get install -y --no-install-recommends curl=8.5.0-2",
            ),
            with_run(
                "RUN apt-get update && apt-get install -y --no-install-recommends curl=8.5.0-2 && rm -rf /var/lib/apt/lists/*",
            ),
        ),
        (
            "DF007",
            "apk add curl / apk add curl=8.5.0-r0",
            with_run("RUN apk add --no-cache curl"),
            with_run("RUN apk add --no-cache curl=8.5.0-r0"),
        ),
        (
            "DF007",
            "pip install flask / pip install -r requirements.txt",
            with_run("RUN pip install --no-cache-dir flask"),
            with_run("RUN pip install --no-cache-dir -r requirements.txt"),
        ),
        (
            "DF008",
            "no HEALTHCHECK / HEALTHCHECK CMD",
            HARDENED_DOCKERFILE.replace("HEALTHCHECK CMD [\"/app\", \"health\"]\n", ""),
            HARDENED_DOCKERFILE.to_owned(),
        ),
        (
            "DF008",
            "HEALTHCHECK NONE / a check in the final stage",
            HARDENED_DOCKERFILE
                .replace("HEALTHCHECK CMD [\"/app\", \"health\"]", "HEALTHCHECK NONE"),
            HARDENED_DOCKERFILE.to_owned(),
        ),
        (
            "DF009",
            "sudo make install / make install",
            with_run("RUN sudo make install"),
            with_run("RUN make install"),
        ),
        (
            "DF010",
            "CMD ward server --dev / ward server --config",
            HARDENED_DOCKERFILE.replace(
                "ENTRYPOINT [\"/app\"]",
                "CMD [\"ward\", \"server\", \"--dev\"]",
            ),
            HARDENED_DOCKERFILE.replace(
                "ENTRYPOINT [\"/app\"]",
                "CMD [\"ward\", \"server\", \"--config\", \"/etc/ward.toml\"]",
            ),
        ),
        (
            "DF011",
            "ADD a local file / ADD a local tarball",
            HARDENED_DOCKERFILE.replace("USER 10001", "ADD app.conf /etc/app.conf\nUSER 10001"),
            HARDENED_DOCKERFILE.replace("USER 10001", "ADD rootfs.tar.gz /\nUSER 10001"),
        ),
        (
            "DF012",
            "apt-get install without --no-install-recommends / with",
            with_run("RUN apt-get install -y curl=8.5.0-2 && rm -rf /var/lib/apt/lists/*"),
            with_run(
                "RUN apt-get install -y --no-install-recommends curl=8.5.0-2 && rm -rf /var/lib/apt/lists/*",
            ),
        ),
    ];
    for (id, case, trigger, near_miss) in &cases {
        assert!(
            df_ids(trigger).contains(*id),
            "{id} ({case}): not reported; got {:?}",
            df_ids(trigger)
        );
        assert!(
            !df_ids(near_miss).contains(*id),
            "{id} ({case}): reported on the near miss; got {:?}",
            df_ids(near_miss)
        );
    }
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.0).collect();
    for r in ward_scan::dockerfile::RULES.iter() {
        assert!(covered.contains(r.id.as_ref()), "{} has no fixture", r.id);
    }
}

// ---------------------------------------------------------------- Secrets

fn sec_ids(file: &str, text: &str) -> BTreeSet<String> {
    let mut out = Vec::new();
    ward_scan::secrets::scan_text(file, file, text, 0, &mut out);
    out.into_iter().map(|f| f.rule_id).collect()
}

/// Made-up credentials in each provider's format, assembled at run time
/// so this file holds no literal a scanner (or a push-protection hook)
/// would take for a real key.
fn fake(prefix: &str, alphabet: &str, n: usize) -> String {
    let a: Vec<char> = alphabet.chars().collect();
    let mut s = String::from(prefix);
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ prefix.len() as u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(a[(x % a.len() as u64) as usize]);
    }
    s
}

const B32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEXL: &str = "0123456789abcdef";

#[test]
fn each_secret_rule_fires_on_its_case_and_not_on_its_near_miss() {
    let b64 = |n| fake("", &format!("{ALNUM}+/"), n);
    let pem_body = b64(256);
    let cases: Vec<(&str, &str, String, String)> = vec![
        (
            "SEC001",
            "an AKIA key / the AWS docs example",
            format!("key = \"{}\"", fake("AKIA", B32, 16)),
            "key = \"AKIAIOSFODNN7EXAMPLE\"".into(),
        ),
        (
            "SEC002",
            "aws_secret_access_key = 40 chars / 39 chars",
            format!("aws_secret_access_key = \"{}\"", fake("", ALNUM, 40)),
            format!("aws_secret_access_key = \"{}\"", fake("", ALNUM, 39)),
        ),
        (
            "SEC003",
            "a PEM private key with a body / the header alone in code",
            format!("-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n-----END RSA PRIVATE KEY-----\n"),
            "if line.starts_with(\"-----BEGIN PRIVATE KEY-----\") {".into(),
        ),
        (
            "SEC004",
            "a ghp_ token / ghp_ too short",
            fake("ghp_", ALNUM, 36),
            fake("ghp_", ALNUM, 20),
        ),
        (
            "SEC005",
            "a glpat- token / too short",
            fake("glpat-", ALNUM, 20),
            fake("glpat-", ALNUM, 8),
        ),
        (
            "SEC006",
            "an xoxb- token / xox prefix alone",
            fake("xoxb-", ALNUM, 24),
            "the xoxb- prefix".into(),
        ),
        (
            "SEC007",
            "an sk_live_ key / a word",
            fake("sk_live_", ALNUM, 24),
            "sk_live_docs".into(),
        ),
        (
            "SEC008",
            "an AIza key / too short",
            fake("AIza", ALNUM, 35),
            fake("AIza", ALNUM, 20),
        ),
        (
            "SEC009",
            "a JWT / two segments",
            format!(
                "{}.{}.{}",
                fake("eyJ", ALNUM, 20),
                fake("eyJ", ALNUM, 30),
                fake("", ALNUM, 43)
            ),
            format!("{}.{}", fake("eyJ", ALNUM, 20), fake("eyJ", ALNUM, 30)),
        ),
        (
            "SEC010",
            "postgres://u:password@ / postgres://u@ (no password)",
            format!(
                "DSN = \"postgres://app:{}@db:5432/shop\"",
                fake("", ALNUM, 14)
            ),
            "DSN = \"postgres://app@db:5432/shop\"".into(),
        ),
        (
            "SEC010",
            "a real password / a ${VAR} placeholder",
            format!("url: mysql://root:{}@db/x", fake("", ALNUM, 12)),
            "url: mysql://root:${MYSQL_PASSWORD}@db/x".into(),
        ),
        (
            "SEC011",
            "an npm_ token / too short",
            fake("npm_", ALNUM, 36),
            fake("npm_", ALNUM, 10),
        ),
        (
            "SEC012",
            "a pypi- token / the prefix",
            fake("pypi-AgEIcHlwaS5vcmc", ALNUM, 60),
            "pypi-AgEIcHlwaS5vcmc".into(),
        ),
        (
            "SEC013",
            "an sk-…T3BlbkFJ key / sk- alone",
            format!(
                "{}T3BlbkFJ{}",
                fake("sk-proj-", ALNUM, 24),
                fake("", ALNUM, 24)
            ),
            fake("sk-", ALNUM, 48),
        ),
        (
            "SEC014",
            "a SendGrid key / wrong segment length",
            format!("SG.{}.{}", fake("", ALNUM, 22), fake("", ALNUM, 43)),
            format!("SG.{}.{}", fake("", ALNUM, 10), fake("", ALNUM, 43)),
        ),
        (
            "SEC015",
            "AccountKey= 88 chars / 20 chars",
            format!("AccountKey={}==", fake("", ALNUM, 86)),
            format!("AccountKey={}", fake("", ALNUM, 20)),
        ),
        (
            "SEC016",
            "an hvs. token / too short",
            fake("hvs.", ALNUM, 95),
            fake("hvs.", ALNUM, 20),
        ),
        (
            "SEC017",
            "a ward_ token / too short",
            fake("ward_", ALNUM, 43),
            fake("ward_", ALNUM, 12),
        ),
        (
            "SEC018",
            "a dop_v1_ token / too short",
            fake("dop_v1_", HEXL, 64),
            fake("dop_v1_", HEXL, 10),
        ),
        (
            "SEC019",
            "api_key = high entropy literal / a function call",
            format!("api_key = \"{}\"", fake("", ALNUM, 24)),
            "api_key = load_key(\"vault\")".into(),
        ),
        (
            "SEC019",
            "password = literal / password = placeholder",
            format!("password = \"{}\"", fake("Q", ALNUM, 14)),
            "password = \"changeme\"".into(),
        ),
        (
            "SEC020",
            "https://user:pass@host / https://user@host",
            format!(
                "https://deploy:{}@git.example.com/repo.git",
                fake("", ALNUM, 16)
            ),
            "https://deploy@git.example.com/repo.git".into(),
        ),
        (
            "SEC021",
            "an hf_ token / too short",
            fake(
                "hf_",
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                34,
            ),
            fake("hf_", "abcdefghijklmnopqrstuvwxyz", 10),
        ),
        (
            "SEC022",
            "a Telegram bot token / without the AA marker",
            format!("123456789:AA{}", fake("", ALNUM, 33)),
            format!("123456789:XY{}", fake("", ALNUM, 33)),
        ),
    ];
    for (id, case, trigger, near_miss) in &cases {
        assert!(
            sec_ids("app.py", trigger).contains(*id),
            "{id} ({case}): not reported; got {:?}",
            sec_ids("app.py", trigger)
        );
        assert!(
            !sec_ids("app.py", near_miss).contains(*id),
            "{id} ({case}): reported on the near miss; got {:?}",
            sec_ids("app.py", near_miss)
        );
    }
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.0).collect();
    for r in ward_scan::secrets::RULES.iter() {
        assert!(covered.contains(r.id.as_ref()), "{} has no fixture", r.id);
    }
}

#[test]
fn the_generic_rule_stays_out_of_lock_files_fixtures_and_minified_assets() {
    let line = format!("api_key = \"{}\"\n", fake("", ALNUM, 24));
    assert!(sec_ids("src/app.py", &line).contains("SEC019"));
    for quiet in [
        "web/package-lock.json",
        "Cargo.lock",
        "tests/app.py",
        "src/app_test.go",
        "static/app.min.js",
    ] {
        assert!(!sec_ids(quiet, &line).contains("SEC019"), "{quiet}");
    }
    // Exact formats are still reported in a fixture: a real key there is real.
    let key = format!("k = \"{}\"\n", fake("AKIA", B32, 16));
    assert!(sec_ids("tests/app.py", &key).contains("SEC001"));
}

// ---------------------------------------------------------------- Ward

/// (file name, contents)
type WardInput = (&'static str, String);

fn ward_ids(name: &str, text: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::write(dir.path().join("policy.cedar"), "").unwrap();
    let what = ward_scan::wardcfg::classify(&p, text)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} is a Ward file"));
    let mut out = Vec::new();
    ward_scan::wardcfg::check(&p, name, text, what, &mut out);
    out.into_iter().map(|f| f.rule_id).collect()
}

const SERVER: &str = "trust_domain = \"example.org\"\ndata_dir = \"/var/lib/ward\"\n[audit]\ncheckpoint_file = \"/mnt/other/ward.checkpoints\"\n";
const PROXY: &str = "[identity]\nworkload_api = \"unix:///run/ward/agent.sock\"\n[policy]\nserver = \"https://ward:8443\"\nserver_ca = \"/etc/ward/ca.pem\"\n[[inbound]]\nname = \"api\"\nlisten = \"0.0.0.0:8443\"\napp = \"127.0.0.1:8080\"\nprotocol = \"http\"\n[[outbound]]\nname = \"db\"\nlisten = \"127.0.0.1:15432\"\nupstream = \"10.0.0.5:8443\"\nspiffe_ids = [\"spiffe://example.org/ns/shop/sa/db\"]\nprotocol = \"tcp\"\n";

#[test]
fn the_hardened_ward_configs_are_clean() {
    assert_eq!(ward_ids("server.toml", SERVER), BTreeSet::new());
    assert_eq!(ward_ids("proxy.toml", PROXY), BTreeSet::new());
    assert_eq!(
        ward_ids(
            "p.cedar",
            "permit(principal in Ward::Namespace::\"spiffe://example.org/ns/shop\", action in Ward::Action::\"read\", resource);"
        ),
        BTreeSet::new()
    );
}

#[test]
fn each_ward_check_fires_on_its_case_and_not_on_its_near_miss() {
    let scoped = "permit(principal in Ward::Namespace::\"spiffe://example.org/ns/shop\", action in Ward::Action::\"read\", resource);\n";
    let cases: Vec<(&str, &str, WardInput, WardInput)> = vec![
        (
            "WARD001",
            "an attribute the schema lacks / a valid policy",
            (
                "p.cedar",
                "permit(principal, action, resource) when { context.nope == 1 };".into(),
            ),
            ("p.cedar", scoped.into()),
        ),
        (
            "WARD002",
            "permit(principal, action, resource) / scoped",
            ("p.cedar", "permit(principal, action, resource);".into()),
            ("p.cedar", scoped.into()),
        ),
        (
            "WARD003",
            "a condition that is always false / a real one",
            (
                "p.cedar",
                format!(
                    "{scoped}permit(principal, action in Ward::Action::\"read\", resource) when {{ false }};"
                ),
            ),
            (
                "p.cedar",
                format!(
                    "{scoped}permit(principal in Ward::Namespace::\"spiffe://example.org/ns/ops\", action in Ward::Action::\"read\", resource) when {{ context.protocol == \"h2\" }};"
                ),
            ),
        ),
        (
            "WARD004",
            "a forbid on DELETE beside read-only permits / beside write permits",
            (
                "p.cedar",
                format!("{scoped}forbid(principal, action == Ward::Action::\"DELETE\", resource);"),
            ),
            (
                "p.cedar",
                format!(
                    "{}forbid(principal, action == Ward::Action::\"DELETE\", resource);",
                    scoped.replace("read", "write")
                ),
            ),
        ),
        (
            "WARD005",
            "permit any caller GET / a namespace's callers",
            (
                "p.cedar",
                "permit(principal, action == Ward::Action::\"GET\", resource);".into(),
            ),
            ("p.cedar", scoped.into()),
        ),
        (
            "WARD010",
            "an unknown key / the hardened config",
            ("server.toml", format!("nonsense = 1\n{SERVER}")),
            ("server.toml", SERVER.into()),
        ),
        (
            "WARD011",
            "svid_max_ttl 30 days / 12 hours",
            (
                "server.toml",
                format!("{SERVER}[ca]\nsvid_max_ttl = \"30d\"\n"),
            ),
            (
                "server.toml",
                format!("{SERVER}[ca]\nsvid_max_ttl = \"12h\"\n"),
            ),
        ),
        (
            "WARD012",
            "jwt_max_ttl 1 day / 30 minutes",
            (
                "server.toml",
                format!("{SERVER}[ca]\njwt_max_ttl = \"24h\"\n"),
            ),
            (
                "server.toml",
                format!("{SERVER}[ca]\njwt_max_ttl = \"30m\"\n"),
            ),
        ),
        (
            "WARD013",
            "postgres://u:p@ / postgres://u@",
            (
                "server.toml",
                SERVER.replace(
                    "data_dir",
                    "storage = \"postgres://ward:hunter22@db/ward\"\ndata_dir",
                ),
            ),
            (
                "server.toml",
                SERVER.replace(
                    "data_dir",
                    "storage = \"postgres://ward@db/ward\"\ndata_dir",
                ),
            ),
        ),
        (
            "WARD014",
            "threshold 1 / threshold 2",
            (
                "server.toml",
                format!("{SERVER}[seal]\nshares = 3\nthreshold = 1\n"),
            ),
            (
                "server.toml",
                format!("{SERVER}[seal]\nshares = 3\nthreshold = 2\n"),
            ),
        ),
        (
            "WARD015",
            "no [audit] checkpoint_file / one",
            (
                "server.toml",
                "trust_domain = \"example.org\"\ndata_dir = \"/var/lib/ward\"\n".into(),
            ),
            ("server.toml", SERVER.into()),
        ),
        (
            "WARD016",
            "10000 failed auths a minute / 60",
            (
                "server.toml",
                format!("{SERVER}[api]\nmax_failed_auth_per_minute = 10000\n"),
            ),
            (
                "server.toml",
                format!("{SERVER}[api]\nmax_failed_auth_per_minute = 60\n"),
            ),
        ),
        (
            "WARD020",
            "policy with neither server nor file / the hardened config",
            (
                "proxy.toml",
                PROXY.replace(
                    "server = \"https://ward:8443\"\nserver_ca = \"/etc/ward/ca.pem\"\n",
                    "",
                ),
            ),
            ("proxy.toml", PROXY.into()),
        ),
        (
            "WARD021",
            "outbound on 0.0.0.0 / on 127.0.0.1",
            (
                "proxy.toml",
                PROXY.replace("127.0.0.1:15432", "0.0.0.0:15432"),
            ),
            ("proxy.toml", PROXY.into()),
        ),
        (
            "WARD022",
            "admin on 0.0.0.0 / on 127.0.0.1",
            (
                "proxy.toml",
                format!("{PROXY}[admin]\nlisten = \"0.0.0.0:9901\"\n"),
            ),
            (
                "proxy.toml",
                format!("{PROXY}[admin]\nlisten = \"127.0.0.1:9901\"\n"),
            ),
        ),
        (
            "WARD023",
            "app on 10.0.0.9 / on ::1",
            (
                "proxy.toml",
                PROXY.replace("app = \"127.0.0.1:8080\"", "app = \"10.0.0.9:8080\""),
            ),
            (
                "proxy.toml",
                PROXY.replace("app = \"127.0.0.1:8080\"", "app = \"[::1]:8080\""),
            ),
        ),
        (
            "WARD024",
            "svid/key/bundle files / the Workload API",
            (
                "proxy.toml",
                PROXY.replace(
                    "workload_api = \"unix:///run/ward/agent.sock\"",
                    "svid = \"s.pem\"\nkey = \"k.pem\"\nbundle = \"b.pem\"",
                ),
            ),
            ("proxy.toml", PROXY.into()),
        ),
        (
            "WARD025",
            "an opaque tcp inbound / http",
            (
                "proxy.toml",
                PROXY.replace("protocol = \"http\"", "protocol = \"tcp\""),
            ),
            ("proxy.toml", PROXY.into()),
        ),
        (
            "WARD026",
            "policy.file only / policy.server",
            (
                "proxy.toml",
                PROXY.replace(
                    "server = \"https://ward:8443\"\nserver_ca = \"/etc/ward/ca.pem\"\n",
                    "file = \"policy.cedar\"\n",
                ),
            ),
            ("proxy.toml", PROXY.into()),
        ),
    ];
    for (id, case, (tname, trigger), (nname, near_miss)) in &cases {
        let got = ward_ids(tname, trigger);
        assert!(
            got.contains(*id),
            "{id} ({case}): not reported; got {got:?}"
        );
        let got = ward_ids(nname, near_miss);
        assert!(
            !got.contains(*id),
            "{id} ({case}): reported on the near miss; got {got:?}"
        );
    }
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.0).collect();
    for r in ward_scan::wardcfg::RULES.iter() {
        assert!(covered.contains(r.id.as_ref()), "{} has no fixture", r.id);
    }
}

#[test]
fn every_kubernetes_rule_has_a_fixture() {
    let covered: BTreeSet<&str> = K8S_CASES.iter().map(|c| c.0).collect();
    for r in ward_scan::k8s::rules() {
        assert!(covered.contains(r.id.as_ref()), "{} has no fixture", r.id);
    }
}
