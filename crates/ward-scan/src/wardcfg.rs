//! Ward's own configuration: server and proxy configs go through the same
//! parsers the roles use (a config that would not start is reported with
//! the role's own error), Cedar policies through the same validator and
//! schema `ward policy push` uses — plus the findings no validator gives.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use cedar_policy::{
    ActionConstraint, Effect, EntityUid, PolicySet, PrincipalConstraint, ResourceConstraint,
    ValidationMode, Validator,
};
use regex::Regex;

use crate::finding::{Finding, Kind, Rule, Severity, without_source_excerpt};

const K: Kind = Kind::Ward;

pub static RULES: [Rule; 19] = [
    Rule::fixed(
        "WARD001",
        K,
        Severity::High,
        "Cedar policy does not validate",
        "`ward policy push` and every proxy refuse this policy set: pushed, it fails; served from a file, the proxy does not start.",
        "Fix the error it names (`ward policy validate FILE` shows the same); `ward policy schema` prints the schema.",
        "",
    ),
    Rule::fixed(
        "WARD002",
        K,
        Severity::Critical,
        "Permit with unconstrained principal and action",
        "A `permit(principal, action, …)` lets every caller do everything its resource scope covers: one stolen identity anywhere in the trust domain reaches it.",
        "Name the callers (`principal in Ward::Namespace::\"spiffe://td/ns/shop\"`) and the actions (`action in Ward::Action::\"read\"`).",
        "OPA/Rego: allow := true",
    ),
    Rule::fixed(
        "WARD003",
        K,
        Severity::Medium,
        "Cedar policy can never apply",
        "The validator proves no request can satisfy it: it is dead weight, and usually a typo that leaves a rule unenforced.",
        "Fix the entity types or conditions so it can match, or delete it.",
        "",
    ),
    Rule::fixed(
        "WARD004",
        K,
        Severity::Low,
        "forbid overlaps no permit",
        "Default deny already refuses everything no permit allows; a forbid that overlaps no permit changes no decision, so it is probably aimed at the wrong principal, action or resource.",
        "Check its scope against the permits it was meant to carve out of.",
        "",
    ),
    Rule::fixed(
        "WARD005",
        K,
        Severity::Low,
        "Permit for any caller",
        "A permit with an unconstrained principal admits every workload in the trust domain (and federated ones) to the actions it names.",
        "Constrain the principal to the services or namespace that need access.",
        "",
    ),
    Rule::fixed(
        "WARD010",
        K,
        Severity::High,
        "Server configuration does not load",
        "`ward server --config` refuses this file; the server does not start.",
        "Fix the key it names.",
        "",
    ),
    Rule::fixed(
        "WARD011",
        K,
        Severity::Medium,
        "X.509-SVID lifetime over 24 hours",
        "Long-lived SVIDs stay valid long after a workload is compromised or removed; SPIFFE deployments use an hour.",
        "Keep `ca.svid_max_ttl` at or under 24h and `ca.svid_default_ttl` around 1h.",
        "SPIRE default_x509_svid_ttl (1h)",
    ),
    Rule::fixed(
        "WARD012",
        K,
        Severity::Low,
        "JWT-SVID lifetime over 1 hour",
        "A JWT-SVID is a bearer token: whoever holds it is the workload until it expires.",
        "Keep `ca.jwt_max_ttl` at or under 1h (default 5m for `ca.jwt_default_ttl`).",
        "SPIRE default_jwt_svid_ttl (5m)",
    ),
    Rule::fixed(
        "WARD013",
        K,
        Severity::High,
        "Password in the storage URL",
        "A password in `storage` is in the config file, its backups and every copy of it.",
        "Leave the password out of the URL and give it with PGPASSWORD or a password file (~/.pgpass).",
        "",
    ),
    Rule::fixed(
        "WARD014",
        K,
        Severity::Medium,
        "One key share unseals the server",
        "With `seal.threshold = 1` one person (or one stolen share) unseals the server alone.",
        "Use at least 3 shares with a threshold of 2 or more (default 5 and 3).",
        "Vault key-threshold",
    ),
    Rule::fixed(
        "WARD015",
        K,
        Severity::Low,
        "No audit checkpoint file",
        "Without `[audit] checkpoint_file`, a rewrite of the whole audit chain by someone with the database is not detectable from outside it.",
        "Set `audit.checkpoint_file` to a path on other storage (and check it with `ward audit verify --checkpoints`).",
        "",
    ),
    Rule::fixed(
        "WARD016",
        K,
        Severity::Low,
        "Authentication failure limits raised",
        "High `api.max_failed_auth_per_minute` or `api.max_unauthenticated_per_minute` makes token guessing and attestation floods cheap.",
        "Keep the defaults (30 and 120) unless a measured load needs more.",
        "",
    ),
    Rule::fixed(
        "WARD020",
        K,
        Severity::High,
        "Proxy configuration does not load",
        "`ward proxy --config` refuses this file; the sidecar does not start.",
        "Fix the key it names.",
        "",
    ),
    Rule::fixed(
        "WARD021",
        K,
        Severity::High,
        "Plaintext outbound listener reachable from the network",
        "An outbound listener takes plaintext and sends it on with this workload's SVID: bound beyond loopback, anyone who can reach it borrows the workload's identity.",
        "Bind outbound listeners to 127.0.0.1 (or ::1).",
        "Linkerd/Istio outbound on localhost only",
    ),
    Rule::fixed(
        "WARD022",
        K,
        Severity::Medium,
        "Plaintext admin listener reachable from the network",
        "The proxy's admin listener (metrics, health, policy revision) has no TLS or authentication.",
        "Bind `admin.listen` to loopback, or scrape it through a local agent.",
        "",
    ),
    Rule::fixed(
        "WARD023",
        K,
        Severity::Medium,
        "Proxy forwards to the application over the network",
        "The hop from the proxy to `app` is plaintext; when the app is not on loopback, that traffic crosses the network unprotected and the app can be reached around the proxy.",
        "Run the proxy beside the application and point `app` at 127.0.0.1.",
        "",
    ),
    Rule::fixed(
        "WARD024",
        K,
        Severity::Medium,
        "Static SVID files instead of the Workload API",
        "An SVID read from files is not rotated by the agent; it expires (an outage) or is made long-lived (a risk).",
        "Set `identity.workload_api` to the agent's socket.",
        "SPIFFE Workload API",
    ),
    Rule::fixed(
        "WARD025",
        K,
        Severity::Low,
        "Opaque TCP inbound listener",
        "On a `tcp` listener only `connect` can be authorized: no per-request method or path rules apply.",
        "Use `protocol = \"http\"` for HTTP services so Cedar sees each request.",
        "",
    ),
    Rule::fixed(
        "WARD026",
        K,
        Severity::Low,
        "Local policy file without a server",
        "A proxy with only `policy.file` never receives policy updates; a revoked permission stays in force until someone edits every copy.",
        "Point `policy.server` at the control plane (the file can stay as a fallback cache).",
        "",
    ),
];

fn rule(id: &str) -> &'static Rule {
    crate::finding::rule_by_id(&RULES, id)
}

/// What kind of Ward file a path is, by extension and, for TOML, by the
/// keys its top level has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WardFile {
    Cedar,
    Server,
    Proxy,
}

/// `Err` is a `.toml` file that is not TOML at all (its message without
/// the quoted source line).
pub fn classify(path: &Path, text: &str) -> Result<Option<WardFile>, String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("cedar") => Ok(Some(WardFile::Cedar)),
        Some("toml") => {
            let table: toml::Table = toml::from_str(text).map_err(|e| {
                format!("not valid TOML: {}", without_source_excerpt(&e.to_string()))
            })?;
            Ok(
                if table.contains_key("identity") && table.contains_key("policy") {
                    Some(WardFile::Proxy)
                } else if table.contains_key("trust_domain") && table.contains_key("data_dir") {
                    Some(WardFile::Server)
                } else {
                    None
                },
            )
        }
        _ => Ok(None),
    }
}

pub fn check(path: &Path, display: &str, text: &str, what: WardFile, out: &mut Vec<Finding>) {
    match what {
        WardFile::Cedar => check_cedar(display, text, 0, out),
        WardFile::Server => check_server(path, display, text, out),
        WardFile::Proxy => check_proxy(path, display, text, out),
    }
}

/// 1-based line of the first `key =` under the dotted TOML path's table.
fn toml_line(text: &str, table: Option<&str>, key: &str) -> usize {
    let mut in_table = table.is_none();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = Some(name) == table;
            continue;
        }
        if in_table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    return i + 1;
                }
            }
        }
    }
    0
}

fn check_server(path: &Path, display: &str, text: &str, out: &mut Vec<Finding>) {
    let cfg = match ward_server::config::ServerConfig::from_file(path) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::new(
                rule("WARD010"),
                display,
                0,
                "server config",
                "",
                format!(
                    "the server would refuse this config: {}",
                    without_source_excerpt(&e.to_string())
                ),
            ));
            return;
        }
    };
    let day = Duration::from_secs(86400);
    for (key, v) in [
        ("svid_max_ttl", cfg.ca.svid_max_ttl),
        ("svid_default_ttl", cfg.ca.svid_default_ttl),
    ] {
        if v > day {
            out.push(Finding::new(
                rule("WARD011"),
                display,
                toml_line(text, Some("ca"), key),
                format!("ca.{key}"),
                "",
                format!(
                    "ca.{key} is {}; X.509-SVIDs should live 24h at most",
                    humanize(v)
                ),
            ));
        }
    }
    if cfg.ca.jwt_max_ttl > Duration::from_secs(3600) {
        out.push(Finding::new(
            rule("WARD012"),
            display,
            toml_line(text, Some("ca"), "jwt_max_ttl"),
            "ca.jwt_max_ttl",
            "",
            format!("ca.jwt_max_ttl is {}", humanize(cfg.ca.jwt_max_ttl)),
        ));
    }
    if let Some(rest) = cfg.storage.split_once("://").map(|(_, r)| r) {
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                out.push(Finding::new(
                    rule("WARD013"),
                    display,
                    toml_line(text, None, "storage"),
                    "storage",
                    "",
                    "storage has a password in the URL (value not shown)",
                ));
            }
        }
    }
    if cfg.seal_threshold == 1 {
        out.push(Finding::new(
            rule("WARD014"),
            display,
            toml_line(text, Some("seal"), "threshold"),
            "seal",
            "",
            format!(
                "seal.threshold is 1 of {} shares: one share unseals the server",
                cfg.seal_shares
            ),
        ));
    }
    if cfg.audit.checkpoint_file.is_none() {
        out.push(Finding::new(
            rule("WARD015"),
            display,
            0,
            "audit",
            "",
            "no [audit] checkpoint_file: the audit chain has no anchor outside the store",
        ));
    }
    if cfg.api.max_failed_auth_per_minute > 300 || cfg.api.max_unauthenticated_per_minute > 3000 {
        out.push(Finding::new(rule("WARD016"), display, toml_line(text, Some("api"), "max_failed_auth_per_minute"), "api", "", format!(
            "api.max_failed_auth_per_minute is {} and api.max_unauthenticated_per_minute is {} (defaults 30 and 120)",
            cfg.api.max_failed_auth_per_minute, cfg.api.max_unauthenticated_per_minute
        )));
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s % 86400 == 0 {
        format!("{}d", s / 86400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

fn loopback(a: &SocketAddr) -> bool {
    a.ip().is_loopback()
}

/// The line of the `n`-th `key = …` in the file (0-based `n`), for arrays
/// of tables such as `[[outbound]]`.
fn nth_key_line(text: &str, section: &str, n: usize, key: &str) -> usize {
    let header = format!("[[{section}]]");
    let mut seen = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t == header {
            seen = Some(seen.map_or(0, |s: usize| s + 1));
            continue;
        }
        if t.starts_with('[') {
            if seen == Some(n) {
                break;
            }
            continue;
        }
        if seen == Some(n) && t.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
            return i + 1;
        }
    }
    0
}

fn check_proxy(path: &Path, display: &str, text: &str, out: &mut Vec<Finding>) {
    let cfg = match ward_proxy::config::ProxyConfig::parse(text, path) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::new(
                rule("WARD020"),
                display,
                0,
                "proxy config",
                "",
                format!(
                    "the proxy would refuse this config: {}",
                    without_source_excerpt(&e.to_string())
                ),
            ));
            return;
        }
    };
    for (i, o) in cfg.outbound.iter().enumerate() {
        if !loopback(&o.listen) {
            out.push(Finding::new(
                rule("WARD021"),
                display,
                nth_key_line(text, "outbound", i, "listen"),
                format!("outbound {}", o.name),
                "",
                format!(
                    "outbound {:?} listens on {} (plaintext, sent on as this workload)",
                    o.name, o.listen
                ),
            ));
        }
    }
    for (i, inb) in cfg.inbound.iter().enumerate() {
        if !loopback(&inb.app) {
            out.push(Finding::new(
                rule("WARD023"),
                display,
                nth_key_line(text, "inbound", i, "app"),
                format!("inbound {}", inb.name),
                "",
                format!(
                    "inbound {:?} forwards to {} in plaintext",
                    inb.name, inb.app
                ),
            ));
        }
        if inb.protocol == ward_proxy::config::Protocol::Tcp {
            out.push(Finding::new(
                rule("WARD025"),
                display,
                nth_key_line(text, "inbound", i, "protocol"),
                format!("inbound {}", inb.name),
                "",
                format!(
                    "inbound {:?} is opaque TCP: only `connect` is authorized",
                    inb.name
                ),
            ));
        }
    }
    if let Some(admin) = &cfg.admin {
        if !loopback(&admin.listen) {
            out.push(Finding::new(
                rule("WARD022"),
                display,
                toml_line(text, Some("admin"), "listen"),
                "admin",
                "",
                format!("admin listens on {} without TLS", admin.listen),
            ));
        }
    }
    if cfg.identity.workload_api.is_none() && cfg.identity.svid.is_some() {
        out.push(Finding::new(
            rule("WARD024"),
            display,
            toml_line(text, Some("identity"), "svid"),
            "identity",
            "",
            "the SVID is read from files, not from the agent's Workload API: it is not rotated",
        ));
    }
    if cfg.policy.server.is_none() {
        out.push(Finding::new(
            rule("WARD026"),
            display,
            toml_line(text, Some("policy"), "file"),
            "policy",
            "",
            "policy comes from a local file only; updates never reach this proxy",
        ));
        if let Some(file) = &cfg.policy.file {
            let p = if file.is_absolute() {
                file.clone()
            } else {
                path.parent().unwrap_or(Path::new(".")).join(file)
            };
            if let Ok(policy) = std::fs::read_to_string(&p) {
                check_cedar(&p.display().to_string(), &policy, 0, out);
            }
        }
    }
}

/// Where each policy statement starts (1-based lines), in text order, so
/// Cedar's positional ids (`policy0`, …) map to lines.
fn statement_lines(text: &str) -> Vec<usize> {
    static STMT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b(permit|forbid)\s*\(").expect("a constant regex (unit-tested)")
    });
    let mut lines = Vec::new();
    let mut line = 1;
    let mut in_str = false;
    let mut comment = false;
    let bytes = text.as_bytes();
    let mut code_start = vec![true; bytes.len()];
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if comment {
            if b == b'\n' {
                comment = false;
            }
            code_start[i] = false;
        } else if in_str {
            if b == b'\\' {
                code_start[i] = false;
                i += 1;
            } else if b == b'"' {
                in_str = false;
            }
            if i < bytes.len() {
                code_start[i] = false;
            }
        } else if b == b'"' {
            in_str = true;
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            comment = true;
            code_start[i] = false;
        }
        i += 1;
    }
    let mut last = 0;
    for m in STMT.find_iter(text) {
        if !code_start[m.start()] {
            continue;
        }
        line += text[last..m.start()]
            .bytes()
            .filter(|b| *b == b'\n')
            .count();
        last = m.start();
        lines.push(line);
    }
    lines
}

/// Expands an action scope into concrete action names (groups of Ward's
/// schema expanded), `None` for any action.
fn actions(c: &ActionConstraint) -> Option<Vec<String>> {
    let expand = |uid: &EntityUid| -> Vec<String> {
        let name = uid.id().unescaped().to_owned();
        match name.as_str() {
            "read" => vec!["GET".into(), "HEAD".into(), "OPTIONS".into()],
            "write" => vec![
                "POST".into(),
                "PUT".into(),
                "PATCH".into(),
                "DELETE".into(),
                "EXTENSION".into(),
            ],
            _ => vec![name],
        }
    };
    match c {
        ActionConstraint::Any => None,
        ActionConstraint::Eq(u) => Some(expand(u)),
        ActionConstraint::In(us) => Some(us.iter().flat_map(expand).collect()),
    }
}

fn principal_uid(c: &PrincipalConstraint) -> Option<(bool, &EntityUid)> {
    match c {
        PrincipalConstraint::Eq(u) => Some((true, u)),
        PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => Some((false, u)),
        _ => None,
    }
}

fn resource_uid(c: &ResourceConstraint) -> Option<(bool, &EntityUid)> {
    match c {
        ResourceConstraint::Eq(u) => Some((true, u)),
        ResourceConstraint::In(u) | ResourceConstraint::IsIn(_, u) => Some((false, u)),
        _ => None,
    }
}

/// Two entity scopes are disjoint only when both are `==` different
/// entities; hierarchy (`in`) could overlap, so it counts as overlapping.
fn may_overlap(a: Option<(bool, &EntityUid)>, b: Option<(bool, &EntityUid)>) -> bool {
    match (a, b) {
        (Some((true, x)), Some((true, y))) => x == y,
        _ => true,
    }
}

pub fn check_cedar(display: &str, text: &str, line_offset: usize, out: &mut Vec<Finding>) {
    if let Err(e) = ward_policy::validate(text) {
        out.push(Finding::new(
            rule("WARD001"),
            display,
            line_offset.max(1),
            "policy set",
            "",
            format!("{e}"),
        ));
        return;
    }
    // Parsed again with positional ids (policy0…) to map ids to lines.
    let Ok(set) = text.parse::<PolicySet>() else {
        return;
    };
    let lines = statement_lines(text);
    let line_of = |id: &str| -> usize {
        id.strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| lines.get(n).copied())
            .unwrap_or(1)
            + line_offset
    };
    let name_of = |p: &cedar_policy::Policy| -> String {
        p.annotation("id")
            .map(str::to_owned)
            .unwrap_or_else(|| p.id().to_string())
    };
    let policies: Vec<&cedar_policy::Policy> = set.policies().collect();
    for p in &policies {
        if p.effect() != Effect::Permit {
            continue;
        }
        let name = name_of(p);
        let line = line_of(p.id().as_ref());
        let any_principal = matches!(
            p.principal_constraint(),
            PrincipalConstraint::Any | PrincipalConstraint::Is(_)
        );
        let any_action = matches!(p.action_constraint(), ActionConstraint::Any);
        if any_principal && any_action {
            let narrowed = if p.has_non_scope_constraint() {
                " (only its conditions narrow it)"
            } else {
                ""
            };
            out.push(Finding::new(
                rule("WARD002"),
                display,
                line,
                format!("policy {name}"),
                "",
                format!("policy {name:?} permits every caller every action{narrowed}"),
            ));
        } else if any_principal {
            out.push(Finding::new(
                rule("WARD005"),
                display,
                line,
                format!("policy {name}"),
                "",
                format!("policy {name:?} permits any caller"),
            ));
        }
    }
    let result =
        Validator::new(ward_policy::schema().clone()).validate(&set, ValidationMode::Strict);
    for w in result.validation_warnings() {
        if let cedar_policy::ValidationWarning::ImpossiblePolicy(_) = w {
            let id = w.policy_id().to_string();
            let name = set
                .policy(&cedar_policy::PolicyId::new(&id))
                .map(name_of)
                .unwrap_or(id.clone());
            out.push(Finding::new(
                rule("WARD003"),
                display,
                line_of(&id),
                format!("policy {name}"),
                "",
                format!("policy {name:?} can never apply: {w}"),
            ));
        }
    }
    for f in policies.iter().filter(|p| p.effect() == Effect::Forbid) {
        let fa = actions(&f.action_constraint());
        let overlaps = policies
            .iter()
            .filter(|p| p.effect() == Effect::Permit)
            .any(|p| {
                let pa = actions(&p.action_constraint());
                let actions_meet = match (&fa, &pa) {
                    (Some(a), Some(b)) => a.iter().any(|x| b.contains(x)),
                    _ => true,
                };
                actions_meet
                    && may_overlap(
                        principal_uid(&f.principal_constraint()),
                        principal_uid(&p.principal_constraint()),
                    )
                    && may_overlap(
                        resource_uid(&f.resource_constraint()),
                        resource_uid(&p.resource_constraint()),
                    )
            });
        if !overlaps {
            let name = name_of(f);
            out.push(Finding::new(
                rule("WARD004"),
                display,
                line_of(f.id().as_ref()),
                format!("policy {name}"),
                "",
                format!("forbid {name:?} overlaps no permit: it changes no decision"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        check_cedar("p.cedar", text, 0, &mut out);
        out.into_iter()
            .map(|f| format!("{}:{}", f.rule_id, f.line))
            .collect()
    }

    #[test]
    fn allow_all_is_flagged_at_its_line() {
        assert_eq!(
            ids("// c\n\n@id(\"everyone\")\npermit(principal, action, resource);\n"),
            ["WARD002:4"]
        );
    }

    #[test]
    fn scoped_permit_is_clean() {
        let t = "permit(principal == Ward::Service::\"spiffe://td/ns/shop/sa/a\", action in Ward::Action::\"read\", resource);\n";
        assert!(ids(t).is_empty(), "{:?}", ids(t));
    }

    #[test]
    fn a_forbid_beside_no_permit_is_flagged() {
        let t = "permit(principal == Ward::Service::\"spiffe://td/ns/shop/sa/a\", action in Ward::Action::\"read\", resource);\nforbid(principal, action == Ward::Action::\"DELETE\", resource);\n";
        assert_eq!(ids(t), ["WARD004:2"]);
        let t2 = "permit(principal == Ward::Service::\"spiffe://td/ns/shop/sa/a\", action in Ward::Action::\"write\", resource);\nforbid(principal, action == Ward::Action::\"DELETE\", resource);\n";
        assert!(ids(t2).is_empty());
    }

    #[test]
    fn invalid_policy_is_reported_not_crashed() {
        assert_eq!(
            ids("permit(principal, action, resource) when { context.nope };")[0],
            "WARD001:1"
        );
    }

    #[test]
    fn statements_skip_comments_and_strings() {
        let t = "// permit(\npermit(principal, action, resource) when { context.method == \"forbid(\" };\nforbid(principal, action, resource);";
        assert_eq!(statement_lines(t), [2, 3]);
    }
}
