//! Dockerfiles: instructions are read with line continuations, comments,
//! parser directives (`# escape=`) and heredocs, split into build stages,
//! then checked. Only the final stage's user and health check matter for
//! what runs; every stage's RUN lines matter for what gets built.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::finding::{Finding, Kind, Rule, Severity};

const K: Kind = Kind::Dockerfile;

pub static RULES: [Rule; 12] = [
    Rule::fixed(
        "DF001",
        K,
        Severity::High,
        "Image runs as root",
        "Without a `USER` (or with `USER root`) the container's process is root: a break-out is root on the host unless user namespaces are on.",
        "Add `USER 10001` (any non-zero UID) at the end of the final stage, or build FROM a non-root base (distroless `:nonroot`).",
        "hadolint DL3002, checkov CKV_DOCKER_3",
    ),
    Rule::fixed(
        "DF002",
        K,
        Severity::Medium,
        "Base image tag is latest or missing",
        "`FROM image` or `:latest` builds on whatever the tag points to today: builds are not reproducible and a hijacked tag ships.",
        "Pin a version tag and a digest: `FROM image:1.2@sha256:…`.",
        "hadolint DL3006, DL3007, checkov CKV_DOCKER_7",
    ),
    Rule::fixed(
        "DF003",
        K,
        Severity::Medium,
        "ADD from a URL",
        "`ADD https://…` downloads at build time with no checksum: whoever controls the URL (or the network) controls the image.",
        "Download with `RUN curl -fsSLo file URL && echo 'SHA256  file' | sha256sum -c -`, or `ADD --checksum=sha256:…`.",
        "hadolint DL3020, checkov CKV_DOCKER_4",
    ),
    Rule::fixed(
        "DF004",
        K,
        Severity::High,
        "Secret in ENV or ARG",
        "ENV values are in the image for everyone who pulls it; ARG values are in its history (`docker history`).",
        "Use a build secret (`RUN --mount=type=secret,id=…`) and give the running container its secrets at run time.",
        "checkov CKV_SECRET_*, hadolint (none)",
    ),
    Rule::fixed(
        "DF005",
        K,
        Severity::High,
        "Script piped from the network into a shell",
        "`curl … | sh` runs whatever the server sends at that moment, unverified.",
        "Download to a file, verify its checksum or signature, then run it.",
        "hadolint DL4006 (pipefail), checkov CKV2_DOCKER_? (none)",
    ),
    Rule::fixed(
        "DF006",
        K,
        Severity::Low,
        "Package install leaves caches behind",
        "Package manager caches and lists left in a layer make the image larger and carry stale index data.",
        "apt: `&& rm -rf /var/lib/apt/lists/*` in the same RUN; apk: `--no-cache`; pip: `--no-cache-dir`; yum/dnf: `&& yum clean all`.",
        "hadolint DL3009, DL3019, DL3042, DL3032, DL3060",
    ),
    Rule::fixed(
        "DF007",
        K,
        Severity::Low,
        "Packages installed without a pinned version",
        "Unpinned packages make each build install whatever is newest: builds differ and a compromised release flows in unreviewed.",
        "Pin versions (`apt-get install pkg=1.2-3`, `apk add pkg=1.2-r0`, `pip install pkg==1.2`, `npm install -g pkg@1.2`).",
        "hadolint DL3008, DL3018, DL3013, DL3016, DL3028",
    ),
    Rule::fixed(
        "DF008",
        K,
        Severity::Low,
        "No HEALTHCHECK",
        "Without a health check the runtime cannot tell a hung container from a working one (Kubernetes uses probes instead, so this matters for plain Docker and Compose).",
        "Add `HEALTHCHECK CMD …` to the final stage.",
        "checkov CKV_DOCKER_2",
    ),
    Rule::fixed(
        "DF009",
        K,
        Severity::Medium,
        "sudo in a build step",
        "Build steps already run as root; sudo in an image means it is installed and usable at run time too.",
        "Remove sudo; switch users with `USER` between steps.",
        "hadolint DL3004",
    ),
    Rule::fixed(
        "DF010",
        K,
        Severity::Critical,
        "Ward runs in dev mode",
        "`ward server --dev` keeps its unseal key on local disk and self-unseals; `ward up` is a demo. Neither belongs in an image.",
        "Run `ward server --config FILE` with a sealed store and unseal it with key shares.",
        "",
    ),
    Rule::fixed(
        "DF011",
        K,
        Severity::Low,
        "ADD used for local files",
        "ADD silently unpacks archives; COPY does only what it says.",
        "Use COPY for local files.",
        "hadolint DL3020, checkov CKV_DOCKER_4",
    ),
    Rule::fixed(
        "DF012",
        K,
        Severity::Low,
        "apt-get install without --no-install-recommends",
        "Recommended packages add software (and attack surface) nobody asked for.",
        "Add `--no-install-recommends`.",
        "hadolint DL3015",
    ),
];

fn rule(id: &str) -> &'static Rule {
    crate::finding::rule_by_id(&RULES, id)
}

/// One instruction, continuation lines joined.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
    /// 1-based line of its first line.
    pub line: usize,
}

/// Whether a file name is a Dockerfile by the usual conventions.
pub fn is_dockerfile_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "dockerfile"
        || lower == "containerfile"
        || lower.starts_with("dockerfile.")
        || lower.ends_with(".dockerfile")
        || lower.ends_with(".containerfile")
}

/// Splits a Dockerfile into instructions.
pub fn parse(text: &str) -> Vec<Instruction> {
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut directives = true;
    while let Some((i, raw)) = lines.next() {
        let line = raw.trim_start();
        if let Some(comment) = line.strip_prefix('#') {
            if directives {
                let d = comment.trim();
                if let Some(v) = d
                    .strip_prefix("escape=")
                    .or_else(|| d.strip_prefix("escape ="))
                {
                    if let Some(c) = v.trim().chars().next() {
                        escape = c;
                    }
                }
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        directives = false;
        let (keyword, rest) = match line.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r),
            None => (line, ""),
        };
        let mut args = String::from(rest.trim_end());
        // Continuations: a line ending in the escape character goes on;
        // comment lines inside a continued instruction are dropped.
        while args.ends_with(escape) {
            args.pop();
            let mut next = None;
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with('#') {
                    continue;
                }
                next = Some(l);
                break;
            }
            match next {
                Some(l) => {
                    args.push(' ');
                    args.push_str(l.trim());
                }
                None => break,
            }
        }
        // Heredocs (`RUN <<EOF … EOF`): the body belongs to the instruction.
        if let Some(tag) = heredoc_tag(&args) {
            for (_, l) in lines.by_ref() {
                if l.trim() == tag {
                    break;
                }
                args.push('\n');
                args.push_str(l);
            }
        }
        out.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args,
            line: i + 1,
        });
    }
    out
}

fn heredoc_tag(args: &str) -> Option<String> {
    let i = args.find("<<")?;
    let rest = args[i + 2..].trim_start_matches('-');
    let tag: String = rest
        .trim_matches(|c| c == '"' || c == '\'')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!tag.is_empty()
        && tag
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
    .then_some(tag)
}

static CURL_PIPE_SH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(curl|wget)\b[^|;&]*\|\s*(sudo\s+)?(\S*/)?(ba|z|da|k)?sh\b")
        .expect("a constant regex (unit-tested)")
});
static WARD_DEV: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\bward\s+(server\b[^;&|]*\s--dev\b|up\b)").expect("a constant regex (unit-tested)")
});
static SECRET_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(passw(or)?d|passwd|secret|token|api[_-]?key|private[_-]?key|credential|access[_-]?key)")
        .expect("a constant regex (unit-tested)")
});

/// Whether a command line starts Ward in dev mode (`ward server --dev`,
/// `ward up`), in shell or JSON (exec) form.
pub fn runs_ward_in_dev_mode(command: &str) -> bool {
    let flat: String = command
        .chars()
        .map(|c| {
            if matches!(c, '[' | ']' | '"' | ',') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    WARD_DEV.is_match(&flat)
}

struct Stage {
    /// Index in the file (0-based), for names and fingerprints.
    index: usize,
    name: Option<String>,
    from_line: usize,
    user: Option<(String, usize)>,
    healthcheck: Option<String>,
    base_nonroot: bool,
}

pub fn check(file: &str, text: &str) -> Vec<Finding> {
    let instructions = parse(text);
    let mut out = Vec::new();
    let mut args: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in &instructions {
        let stage_label = stages
            .last()
            .map(|s| match &s.name {
                Some(n) => format!("stage {n}"),
                None => format!("stage {}", s.index + 1),
            })
            .unwrap_or_else(|| "before FROM".to_owned());
        let object = stage_label.clone();
        match ins.keyword.as_str() {
            "ARG" => {
                for (k, v) in key_values(&ins.args) {
                    if stages.is_empty() {
                        if let Some(v) = &v {
                            args.insert(k.clone(), v.clone());
                        }
                    }
                    secret_assignment("ARG", &k, v.as_deref(), file, ins.line, &object, &mut out);
                }
            }
            "ENV" => {
                for (k, v) in key_values(&ins.args) {
                    secret_assignment("ENV", &k, v.as_deref(), file, ins.line, &object, &mut out);
                }
            }
            "FROM" => {
                let words: Vec<&str> = ins
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let image = words.first().copied().unwrap_or("");
                let name = match words.as_slice() {
                    [_, as_, n, ..] if as_.eq_ignore_ascii_case("as") => Some(n.to_string()),
                    _ => None,
                };
                let resolved = substitute(image, &args);
                let known_stage = stages
                    .iter()
                    .any(|s| s.name.as_deref() == Some(resolved.as_str()));
                let r = crate::k8s::parse_image(&resolved);
                if !known_stage
                    && resolved != "scratch"
                    && !resolved.contains('$')
                    && r.digest.is_none()
                    && matches!(r.tag, None | Some("latest"))
                {
                    let idx = stages.len();
                    out.push(Finding::new(
                        rule("DF002"),
                        file,
                        ins.line,
                        format!("stage {}", idx + 1),
                        "",
                        format!(
                            "FROM {image}: the base image has {}",
                            if r.tag.is_none() {
                                "no tag"
                            } else {
                                "the latest tag"
                            }
                        ),
                    ));
                }
                // A base that sets a non-root user itself (distroless
                // `:nonroot`, Chainguard, Ubuntu chiselled images).
                let base_nonroot = r.tag.is_some_and(|t| t.contains("nonroot"))
                    || known_stage
                        && stages
                            .iter()
                            .find(|s| s.name.as_deref() == Some(resolved.as_str()))
                            .is_some_and(|s| {
                                s.base_nonroot || s.user.as_ref().is_some_and(|(u, _)| !is_root(u))
                            });
                stages.push(Stage {
                    index: stages.len(),
                    name,
                    from_line: ins.line,
                    user: None,
                    healthcheck: None,
                    base_nonroot,
                });
            }
            "USER" => {
                if let Some(s) = stages.last_mut() {
                    s.user = Some((ins.args.trim().to_owned(), ins.line));
                }
            }
            "HEALTHCHECK" => {
                if let Some(s) = stages.last_mut() {
                    s.healthcheck = Some(ins.args.trim().to_ascii_uppercase());
                }
            }
            "ADD" => {
                let srcs: Vec<&str> = ins
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let has_checksum = ins.args.contains("--checksum=");
                let sources = &srcs[..srcs.len().saturating_sub(1)];
                if sources.iter().any(|s| {
                    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")
                }) {
                    if !has_checksum {
                        out.push(Finding::new(
                            rule("DF003"),
                            file,
                            ins.line,
                            &object,
                            &ins.args,
                            format!("ADD downloads {} URL(s) without a checksum (not shown: a URL may carry credentials)", sources.len()),
                        ));
                    }
                } else if !sources.iter().any(|s| is_archive(s)) {
                    out.push(Finding::new(
                        rule("DF011"),
                        file,
                        ins.line,
                        &object,
                        &ins.args,
                        format!("ADD {} copies local files: use COPY", sources.join(" ")),
                    ));
                }
            }
            "RUN" => check_run(&ins.args, file, ins.line, &object, &mut out),
            "CMD" | "ENTRYPOINT" if runs_ward_in_dev_mode(&ins.args) => {
                out.push(Finding::new(
                    rule("DF010"),
                    file,
                    ins.line,
                    &object,
                    "",
                    format!("{} runs Ward in dev mode", ins.keyword),
                ));
            }
            _ => {}
        }
    }
    if let Some(last) = stages.last() {
        let object = "final stage".to_owned();
        match &last.user {
            Some((u, line)) if is_root(u) => {
                out.push(Finding::new(
                    rule("DF001"),
                    file,
                    *line,
                    &object,
                    "",
                    format!("the final stage switches to USER {u}: the container runs as root"),
                ));
            }
            None if !last.base_nonroot => {
                out.push(Finding::new(
                    rule("DF001"),
                    file,
                    last.from_line,
                    &object,
                    "",
                    "the final stage sets no USER: the container runs as root",
                ));
            }
            _ => {}
        }
        match last.healthcheck.as_deref() {
            None => out.push(Finding::new(
                rule("DF008"),
                file,
                last.from_line,
                &object,
                "",
                "the final stage has no HEALTHCHECK",
            )),
            Some("NONE") => out.push(Finding::new(
                rule("DF008"),
                file,
                last.from_line,
                &object,
                "",
                "the final stage turns its HEALTHCHECK off (HEALTHCHECK NONE)",
            )),
            _ => {}
        }
    }
    out
}

fn is_root(user: &str) -> bool {
    let u = user.split(':').next().unwrap_or("").trim();
    u == "root" || u == "0"
}

fn is_archive(s: &str) -> bool {
    [
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".txz", ".tbz2",
    ]
    .iter()
    .any(|e| s.to_ascii_lowercase().ends_with(e))
}

/// `$NAME` and `${NAME}` replaced by ARG defaults declared before FROM.
fn substitute(s: &str, args: &HashMap<String, String>) -> String {
    let mut out = s.to_owned();
    for (k, v) in args {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    out
}

/// `K=V K2="V 2"` or the legacy `K V` form; ARG may have no value.
fn key_values(args: &str) -> Vec<(String, Option<String>)> {
    let args = args.trim();
    if !args.contains('=') {
        let mut it = args.splitn(2, char::is_whitespace);
        let k = it.next().unwrap_or("").to_owned();
        let v = it
            .next()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        return if k.is_empty() { vec![] } else { vec![(k, v)] };
    }
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        match chars.peek() {
            Some(&q @ ('"' | '\'')) => {
                chars.next();
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        value.push(c);
                        escaped = false;
                    } else if c == '\\' && q == '"' {
                        escaped = true;
                    } else if c == q {
                        break;
                    } else {
                        value.push(c);
                    }
                }
            }
            _ => {
                while let Some(c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(*c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_owned(), Some(value)));
    }
    out
}

fn secret_assignment(
    what: &str,
    key: &str,
    value: Option<&str>,
    file: &str,
    line: usize,
    object: &str,
    out: &mut Vec<Finding>,
) {
    if !SECRET_KEY.is_match(key)
        || key.to_ascii_uppercase().ends_with("_FILE")
        || key.to_ascii_uppercase().ends_with("_PATH")
    {
        return;
    }
    match value {
        Some(v) if !v.is_empty() && !v.starts_with('$') && !crate::secrets::is_placeholder(v) => {
            out.push(Finding::new(
                rule("DF004"),
                file,
                line,
                object,
                key,
                format!("{what} {key} is set to a literal value in the image (value not shown)"),
            ));
        }
        None if what == "ARG" => {
            out.push(
                Finding::new(rule("DF004"), file, line, object, key, format!(
                    "ARG {key} passes a secret as a build argument: it is kept in the image history"
                ))
                .with_severity(Severity::Medium),
            );
        }
        _ => {}
    }
}

/// Shell commands of a RUN, split on `&&`, `||`, `;` and `|`.
fn commands(run: &str) -> Vec<Vec<&str>> {
    run.split(['&', ';', '|', '\n'])
        .map(|c| c.split_whitespace().collect::<Vec<_>>())
        .filter(|c| !c.is_empty())
        .collect()
}

fn check_run(run: &str, file: &str, line: usize, object: &str, out: &mut Vec<Finding>) {
    let key = |k: &str| format!("{k}:{run}");
    if CURL_PIPE_SH.is_match(run) {
        out.push(Finding::new(
            rule("DF005"),
            file,
            line,
            object,
            &key("pipe"),
            "RUN pipes a download into a shell",
        ));
    }
    if runs_ward_in_dev_mode(run) {
        out.push(Finding::new(
            rule("DF010"),
            file,
            line,
            object,
            &key("dev"),
            "RUN starts Ward in dev mode",
        ));
    }
    let cmds = commands(run);
    if cmds.iter().any(|c| c.first() == Some(&"sudo")) {
        out.push(Finding::new(
            rule("DF009"),
            file,
            line,
            object,
            &key("sudo"),
            "RUN uses sudo",
        ));
    }
    for c in &cmds {
        let words: Vec<&str> = c.iter().copied().skip_while(|w| *w == "sudo").collect();
        let (manager, rest) = match words.as_slice() {
            [m, sub, rest @ ..] if (*m == "apt-get" || *m == "apt") && *sub == "install" => {
                ("apt", rest)
            }
            [m, sub, rest @ ..] if *m == "apk" && *sub == "add" => ("apk", rest),
            [m, sub, rest @ ..]
                if (m.starts_with("pip") || m.ends_with("/pip") || m.ends_with("/pip3"))
                    && *sub == "install" =>
            {
                ("pip", rest)
            }
            [py, "-m", pip, sub, rest @ ..]
                if py.starts_with("python") && pip.starts_with("pip") && *sub == "install" =>
            {
                ("pip", rest)
            }
            [m, sub, rest @ ..]
                if *m == "npm"
                    && (*sub == "install" || *sub == "i")
                    && rest.iter().any(|w| *w == "-g" || *w == "--global") =>
            {
                ("npm", rest)
            }
            [m, sub, rest @ ..] if *m == "gem" && *sub == "install" => ("gem", rest),
            [m, sub, rest @ ..]
                if (*m == "yum" || *m == "dnf" || *m == "microdnf") && *sub == "install" =>
            {
                ("yum", rest)
            }
            _ => continue,
        };
        let packages: Vec<&str> = rest
            .iter()
            .copied()
            .filter(|w| !w.starts_with('-'))
            .collect();
        let unpinned: Vec<&str> = match manager {
            "apt" | "apk" => packages
                .iter()
                .copied()
                .filter(|p| !p.contains('='))
                .collect(),
            "pip" => {
                if rest
                    .iter()
                    .any(|w| *w == "-r" || w.starts_with("--requirement") || *w == "-e")
                {
                    vec![]
                } else {
                    packages
                        .iter()
                        .copied()
                        .filter(|p| {
                            !p.contains("==")
                                && !p.starts_with('.')
                                && !p.starts_with('/')
                                && !p.ends_with(".whl")
                                && !p.contains("://")
                        })
                        .collect()
                }
            }
            "npm" => packages
                .iter()
                .copied()
                .filter(|p| !p.trim_start_matches('@').contains('@'))
                .collect(),
            "gem" => {
                if rest
                    .iter()
                    .any(|w| *w == "-v" || w.starts_with("--version"))
                    || packages.iter().all(|p| p.contains(':'))
                {
                    vec![]
                } else {
                    packages
                        .iter()
                        .copied()
                        .filter(|p| !p.contains(':'))
                        .collect()
                }
            }
            _ => vec![],
        };
        if !unpinned.is_empty() {
            out.push(Finding::new(
                rule("DF007"),
                file,
                line,
                object,
                &key(manager),
                format!(
                    "{manager} installs {} without a pinned version",
                    unpinned.join(" ")
                ),
            ));
        }
        let cache_left = match manager {
            "apt" => !run.contains("/var/lib/apt/lists"),
            "apk" => !rest.contains(&"--no-cache"),
            "pip" => !rest.contains(&"--no-cache-dir") && !run.contains("PIP_NO_CACHE_DIR"),
            "yum" => {
                !run.contains("clean all")
                    && !run.contains("/var/cache/yum")
                    && !run.contains("/var/cache/dnf")
            }
            _ => false,
        };
        if cache_left {
            out.push(Finding::new(
                rule("DF006"),
                file,
                line,
                object,
                &key(manager),
                format!("{manager} install leaves its cache in the layer"),
            ));
        }
        if manager == "apt" && !rest.contains(&"--no-install-recommends") {
            out.push(Finding::new(
                rule("DF012"),
                file,
                line,
                object,
                &key("recommends"),
                "apt-get install without --no-install-recommends",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_heredoc_and_escape() {
        let t = "# escape=`\nFROM alpine:3.20\nRUN echo a `\n  # comment\n  b\nRUN <<EOF\napk add x\nEOF\nUSER 1000\n";
        let ins = parse(t);
        let kw: Vec<_> = ins.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(kw, ["FROM", "RUN", "RUN", "USER"]);
        assert_eq!(ins[1].args, "echo a  b");
        assert!(ins[2].args.contains("apk add x"));
        assert_eq!(ins[3].line, 9);
    }

    #[test]
    fn env_forms() {
        assert_eq!(key_values(r#"A=1 B="two words" C"#).len(), 3);
        assert_eq!(
            key_values("A one two"),
            vec![("A".into(), Some("one two".into()))]
        );
    }

    #[test]
    fn dev_mode_in_both_forms() {
        assert!(runs_ward_in_dev_mode(r#"["ward", "server", "--dev"]"#));
        assert!(runs_ward_in_dev_mode("/usr/bin/ward up"));
        assert!(!runs_ward_in_dev_mode(
            "ward server --config /etc/ward.toml"
        ));
        assert!(!runs_ward_in_dev_mode("steward update"));
    }

    #[test]
    fn regexes_compile() {
        assert!(CURL_PIPE_SH.is_match("curl -fsSL https://x | sh"));
        assert!(CURL_PIPE_SH.is_match("wget -qO- https://x | sudo bash -s"));
        assert!(!CURL_PIPE_SH.is_match("curl -o f https://x && sh f"));
        assert!(SECRET_KEY.is_match("DB_PASSWORD"));
    }
}
