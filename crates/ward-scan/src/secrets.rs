//! Secrets in source: rules of the gitleaks class (provider token formats,
//! private keys, JWTs, connection strings with passwords) plus a generic
//! rule for credentials assigned to secret-sounding names, gated by
//! entropy and context (lock files, minified assets, test fixtures,
//! placeholders and documented examples are not reported by it).
//!
//! Values never leave this module: a finding carries the rule, the line,
//! the length and a hash of the value, so outputs can be shared.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::finding::{Finding, Kind, Rule, Severity};

const K: Kind = Kind::Secrets;

pub static RULES: [Rule; 22] = [
    Rule::fixed(
        "SEC001",
        K,
        Severity::Critical,
        "AWS access key ID",
        "An AWS access key ID (AKIA…, ASIA…) in source is half of a credential; the secret is usually nearby.",
        "Revoke the key in IAM, remove it from the code and its history, and use a role or the vault instead.",
        "gitleaks aws-access-token, detect-secrets AWSKeyDetector, checkov CKV_SECRET_2",
    ),
    Rule::fixed(
        "SEC002",
        K,
        Severity::Critical,
        "AWS secret access key",
        "A 40-character secret assigned to an AWS key name signs requests as that IAM user.",
        "Revoke it in IAM and remove it from the code and its history.",
        "detect-secrets AWSKeyDetector, checkov CKV_SECRET_2",
    ),
    Rule::fixed(
        "SEC003",
        K,
        Severity::Critical,
        "Private key",
        "A PEM private key (RSA, EC, OpenSSH, PKCS#8, PGP) in source lets anyone impersonate its owner or decrypt its traffic.",
        "Revoke or rotate the key, remove it from history; issue keys at run time (Ward issues SVIDs) instead of committing them.",
        "gitleaks private-key, detect-secrets PrivateKeyDetector, checkov CKV_SECRET_13",
    ),
    Rule::fixed(
        "SEC004",
        K,
        Severity::High,
        "GitHub token",
        "A GitHub personal access, OAuth, app or refresh token acts as its owner on GitHub.",
        "Revoke it at github.com/settings/tokens and remove it from history.",
        "gitleaks github-pat, github-oauth, github-app-token, github-fine-grained-pat",
    ),
    Rule::fixed(
        "SEC005",
        K,
        Severity::High,
        "GitLab token",
        "A GitLab personal, project or runner token acts on the GitLab instance.",
        "Revoke it in GitLab and remove it from history.",
        "gitleaks gitlab-pat, gitlab-rrt",
    ),
    Rule::fixed(
        "SEC006",
        K,
        Severity::High,
        "Slack token or webhook",
        "Slack bot, user and app tokens read and post as the workspace's app; a webhook URL posts to its channel.",
        "Revoke it in the Slack app settings and remove it from history.",
        "gitleaks slack-bot-token, slack-webhook-url, detect-secrets SlackDetector",
    ),
    Rule::fixed(
        "SEC007",
        K,
        Severity::High,
        "Stripe key",
        "A Stripe secret or restricted key moves money as the account (test keys are reported at low severity).",
        "Roll the key in the Stripe dashboard and remove it from history.",
        "gitleaks stripe-access-token, detect-secrets StripeDetector",
    ),
    Rule::fixed(
        "SEC008",
        K,
        Severity::High,
        "Google API key",
        "A Google API key (AIza…) is billed to its project and may reach any API the project enabled.",
        "Restrict or delete the key in the Cloud console and remove it from history.",
        "gitleaks gcp-api-key",
    ),
    Rule::fixed(
        "SEC009",
        K,
        Severity::Medium,
        "JSON Web Token",
        "A JWT is a bearer credential until it expires; a committed one is often long-lived.",
        "Revoke it at its issuer (or rotate the signing key) and remove it.",
        "gitleaks jwt, detect-secrets JwtTokenDetector",
    ),
    Rule::fixed(
        "SEC010",
        K,
        Severity::High,
        "Connection string with a password",
        "A database or broker URL with a password in it is a login to that service.",
        "Take the password out of the URL: read it from the vault (dynamic credentials) or the environment.",
        "gitleaks (generic), detect-secrets BasicAuthDetector",
    ),
    Rule::fixed(
        "SEC011",
        K,
        Severity::High,
        "npm token",
        "An npm access token publishes packages as its owner: a supply-chain risk.",
        "Revoke it with `npm token revoke` and remove it from history.",
        "gitleaks npm-access-token, detect-secrets NpmDetector",
    ),
    Rule::fixed(
        "SEC012",
        K,
        Severity::High,
        "PyPI token",
        "A PyPI API token uploads releases of its projects.",
        "Remove it at pypi.org/manage/account/token and from history.",
        "gitleaks pypi-upload-token, detect-secrets PypiTokenDetector",
    ),
    Rule::fixed(
        "SEC013",
        K,
        Severity::High,
        "OpenAI or Anthropic API key",
        "An LLM provider API key is billed to its organisation and can read its data.",
        "Revoke it in the provider's console and remove it from history.",
        "gitleaks openai-api-key, anthropic-api-key",
    ),
    Rule::fixed(
        "SEC014",
        K,
        Severity::High,
        "SendGrid or Twilio key",
        "Messaging API keys send mail or SMS as the account (phishing from a trusted sender).",
        "Revoke it in the provider's console and remove it from history.",
        "gitleaks sendgrid-api-token, twilio-api-key, detect-secrets SendGridDetector, TwilioKeyDetector",
    ),
    Rule::fixed(
        "SEC015",
        K,
        Severity::High,
        "Azure storage account key",
        "An `AccountKey=` in a connection string is full access to the storage account.",
        "Rotate the key in the portal and use managed identities or SAS with expiry.",
        "gitleaks azure-storage-account-key, detect-secrets AzureStorageKeyDetector",
    ),
    Rule::fixed(
        "SEC016",
        K,
        Severity::High,
        "HashiCorp Vault token",
        "A Vault service or batch token reads the secrets its policies allow.",
        "Revoke it with `vault token revoke` and remove it from history.",
        "gitleaks vault-service-token, vault-batch-token",
    ),
    Rule::fixed(
        "SEC017",
        K,
        Severity::Critical,
        "Ward token",
        "A Ward operator or client token (ward_…) authenticates to the control plane; an operator token administers it.",
        "Revoke it (`ward operator token revoke`) and remove it from history.",
        "",
    ),
    Rule::fixed(
        "SEC018",
        K,
        Severity::High,
        "DigitalOcean token",
        "A DigitalOcean personal access token manages its account's infrastructure.",
        "Revoke it in the control panel and remove it from history.",
        "gitleaks digitalocean-pat",
    ),
    Rule::fixed(
        "SEC019",
        K,
        Severity::Medium,
        "Hard-coded credential",
        "A value with the entropy of a secret, assigned to a name like password, token or api_key.",
        "Move it to the vault or the environment; if it is not a secret, suppress it with a reason (`ward:ignore SEC019 reason`).",
        "gitleaks generic-api-key, detect-secrets KeywordDetector + HighEntropyString, checkov CKV_SECRET_6",
    ),
    Rule::fixed(
        "SEC020",
        K,
        Severity::High,
        "Basic-auth credentials in a URL",
        "`https://user:password@host` carries a password wherever the URL is logged or copied.",
        "Remove the password from the URL; authenticate with a token from the vault or the environment.",
        "detect-secrets BasicAuthDetector",
    ),
    Rule::fixed(
        "SEC021",
        K,
        Severity::High,
        "Hugging Face or Databricks token",
        "Platform tokens read and write models, data and jobs of their workspace.",
        "Revoke it in the platform's settings and remove it from history.",
        "gitleaks huggingface-access-token, databricks-api-token",
    ),
    Rule::fixed(
        "SEC022",
        K,
        Severity::High,
        "Telegram bot or Discord token",
        "A bot token controls the bot: it reads its chats and posts as it.",
        "Revoke it with the platform's bot settings and remove it from history.",
        "gitleaks telegram-bot-api-token, discord-api-token",
    ),
];

fn rule(id: &str) -> &'static Rule {
    crate::finding::rule_by_id(&RULES, id)
}

/// A pattern with the keywords that must appear for it to be tried and
/// the capture group that holds the secret.
struct Pattern {
    id: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
    group: usize,
}

const PATTERNS: &[Pattern] = &[
    Pattern {
        id: "SEC001",
        keywords: &["akia", "asia", "abia", "acca"],
        regex: r"(?-u:\b)((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})(?-u:\b)",
        group: 1,
    },
    Pattern {
        id: "SEC002",
        keywords: &["aws"],
        regex: r#"(?i)aws[A-Za-z0-9_.\-]{0,20}?(?:secret|sk)[A-Za-z0-9_.\-]{0,20}?["']?[ \t\r\n]{0,3}(?:=|:=|:|=>)[ \t\r\n]{0,5}["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        group: 1,
    },
    Pattern {
        id: "SEC003",
        keywords: &["private key"],
        regex: r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----[ \t\r\n]*(?:[A-Za-z0-9-]+:[^\n]*\n[ \t\r\n]*)*([A-Za-z0-9+/= \t\r\n]{64,}?)-----END",
        group: 1,
    },
    Pattern {
        id: "SEC004",
        keywords: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        regex: r"(?-u:\b)((?:gh[pousr]_[A-Za-z0-9]{36,255})|(?:github_pat_[A-Za-z0-9_]{82}))(?-u:\b)",
        group: 1,
    },
    Pattern {
        id: "SEC005",
        keywords: &["glpat-", "glrt-", "glptt-"],
        regex: r"(?-u:\b)((?:glpat|glrt|glptt)-[A-Za-z0-9_\-]{20,})(?-u:\b)",
        group: 1,
    },
    Pattern {
        id: "SEC006",
        keywords: &["xox", "hooks.slack.com"],
        regex: r"((?:(?-u:\b)xox[baprse]-[A-Za-z0-9-]{10,})|(?:https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/]{30,}))",
        group: 1,
    },
    Pattern {
        id: "SEC007",
        keywords: &["sk_live_", "rk_live_", "sk_test_", "rk_test_"],
        regex: r"(?-u:\b)((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,99})(?-u:\b)",
        group: 1,
    },
    Pattern {
        id: "SEC008",
        keywords: &["aiza"],
        regex: r"(?-u:\b)(AIza[0-9A-Za-z_\-]{35})(?:[^0-9A-Za-z_\-]|$)",
        group: 1,
    },
    Pattern {
        id: "SEC009",
        keywords: &["eyj"],
        regex: r"(?-u:\b)(eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})",
        group: 1,
    },
    Pattern {
        id: "SEC010",
        keywords: &["://"],
        regex: r#"(?i)(?-u:\b)(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|ldaps?|sftp|ftps?|smtps?|nats|kafka)://[^:@/ \t\r\n"'<>]{1,64}:([^@/ \t\r\n"'<>]{3,128})@[^ \t\r\n"'<>]"#,
        group: 1,
    },
    Pattern {
        id: "SEC011",
        keywords: &["npm_"],
        regex: r"(?-u:\b)(npm_[A-Za-z0-9]{36})(?-u:\b)",
        group: 1,
    },
    Pattern {
        id: "SEC012",
        keywords: &["pypi-"],
        regex: r"(?-u:\b)(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,})",
        group: 1,
    },
    Pattern {
        id: "SEC013",
        keywords: &["sk-"],
        regex: r"(?-u:\b)((?:sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}T3BlbkFJ[A-Za-z0-9_\-]{20,})|(?:sk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_\-]{80,}))",
        group: 1,
    },
    Pattern {
        id: "SEC014",
        // Twilio keys (SK + 32 hex) are only looked for where the file names
        // Twilio: "sk" alone is in every other word.
        keywords: &["sg.", "twilio"],
        regex: r"(?-u:\b)((?:SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43})|(?:SK[0-9a-f]{32}))(?-u:\b)",
        group: 1,
    },
    Pattern {
        id: "SEC015",
        keywords: &["accountkey="],
        regex: r"(?i)AccountKey=([A-Za-z0-9+/]{86}==)",
        group: 1,
    },
    Pattern {
        id: "SEC016",
        keywords: &["hvs.", "hvb."],
        regex: r"(?-u:\b)((?:hvs|hvb)\.[A-Za-z0-9_\-]{90,})",
        group: 1,
    },
    Pattern {
        id: "SEC017",
        keywords: &["ward_"],
        regex: r"(?-u:\b)(ward_[A-Za-z0-9_\-]{43})(?:[^A-Za-z0-9_\-]|$)",
        group: 1,
    },
    Pattern {
        id: "SEC018",
        keywords: &["dop_v1_", "doo_v1_", "dor_v1_"],
        regex: r"(?-u:\b)((?:dop|doo|dor)_v1_[a-f0-9]{64})(?-u:\b)",
        group: 1,
    },
    Pattern {
        id: "SEC020",
        keywords: &["://"],
        regex: r#"(?i)(?-u:\b)https?://[^:@/ \t\r\n"'<>]{1,64}:([^@/ \t\r\n"'<>]{3,128})@[A-Za-z0-9.\-]+"#,
        group: 1,
    },
    Pattern {
        id: "SEC021",
        keywords: &["hf_", "dapi"],
        regex: r"(?-u:\b)((?:hf_[A-Za-z]{34})|(?:dapi[a-f0-9]{32}(?:-[0-9])?))(?-u:\b)",
        group: 1,
    },
    Pattern {
        id: "SEC022",
        keywords: &[":aa", "discord"],
        regex: r"(?i)((?:(?-u:\b)[0-9]{8,10}:AA[0-9A-Za-z_\-]{33}(?-u:\b))|(?:discord[A-Za-z0-9_.\-]{0,20}[ \t\r\n:=]{1,5}[\x22']?[MNO][A-Za-z0-9_\-]{23,25}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,38}))",
        group: 1,
    },
    // The generic rule last: it defers to any rule above on the same value.
    Pattern {
        id: "SEC019",
        keywords: &[
            "secret",
            "token",
            "passw",
            "pwd",
            "api_key",
            "apikey",
            "api-key",
            "access_key",
            "access-key",
            "auth_key",
            "credential",
            "private_key",
        ],
        // Anchored at the keyword (so the regex engine can skip ahead on
        // its literals); the name around it and the quotes are read by
        // `generic_parts`, not by capture groups, which cost a backtracking
        // pass per match.
        regex: r#"(?i)(?:secret|token|passw(?:or)?d|passwd|pwd|api[_\-]?key|apikey|access[_\-]?key|auth[_\-]?key|private[_\-]?key|credential)[A-Za-z0-9_.\-]{0,20}["']?[ \t]{0,3}(?:=|:=|:|=>|\|\|=)[ \t]{0,5}["'`]?[^ \t\r\n"'`;,)]{8,200}"#,
        group: 0,
    },
];

struct Compiled {
    rule: &'static Rule,
    source: &'static str,
    /// Compiled on first use: a scan that meets no AWS keyword never pays
    /// for the AWS pattern (a Kubernetes scan checks a few env values and
    /// should not compile all of them).
    compiled: std::sync::OnceLock<Regex>,
    group: usize,
}

impl Compiled {
    fn regex(&self) -> &Regex {
        self.compiled
            .get_or_init(|| Regex::new(self.source).expect("constant secret regexes (unit-tested)"))
    }
}

struct Engine {
    keywords: AhoCorasick,
    /// For each keyword, the patterns it unlocks.
    keyword_patterns: Vec<Vec<usize>>,
    patterns: Vec<Compiled>,
}

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let mut words: Vec<&str> = Vec::new();
    let mut keyword_patterns: Vec<Vec<usize>> = Vec::new();
    for (i, p) in PATTERNS.iter().enumerate() {
        for k in p.keywords {
            match words.iter().position(|w| w == k) {
                Some(j) => keyword_patterns[j].push(i),
                None => {
                    words.push(k);
                    keyword_patterns.push(vec![i]);
                }
            }
        }
    }
    let keywords = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(&words)
        .expect("constant keywords (unit-tested)");
    let patterns = PATTERNS
        .iter()
        .map(|p| Compiled {
            rule: rule(p.id),
            source: p.regex,
            compiled: std::sync::OnceLock::new(),
            group: p.group,
        })
        .collect();
    Engine {
        keywords,
        keyword_patterns,
        patterns,
    }
});

/// Files whose content is hashes and versions, never credentials worth the
/// generic rule (a URL with a password in them is still reported).
const LOCK_FILES: &[&str] = &[
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "cargo.lock",
    "poetry.lock",
    "pipfile.lock",
    "go.sum",
    "composer.lock",
    "gemfile.lock",
    "packages.lock.json",
    "flake.lock",
    "uv.lock",
    "bun.lock",
    "mix.lock",
    "pubspec.lock",
    "podfile.lock",
];

/// Where a file sits, as far as the generic rule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Normal,
    /// Lock files, minified assets and source maps: only exact token
    /// formats are reported.
    Generated,
    /// Tests and fixtures: exact token formats only, since fixtures are
    /// full of made-up credentials.
    Fixture,
}

/// Classifies a path (relative to the scanned root).
pub fn context_of(relative: &str) -> Context {
    let lower = relative.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    if LOCK_FILES.contains(&name)
        || name.ends_with(".min.js")
        || name.ends_with(".min.css")
        || name.ends_with(".map")
        || name.ends_with(".svg")
    {
        return Context::Generated;
    }
    let fixture_dir = lower.split('/').any(|c| {
        matches!(
            c,
            "test"
                | "tests"
                | "testdata"
                | "fixtures"
                | "fixture"
                | "__tests__"
                | "spec"
                | "__fixtures__"
                | "mocks"
                | "__mocks__"
        )
    });
    if fixture_dir
        || name.contains("_test.")
        || name.contains(".test.")
        || name.contains(".spec.")
        || name.starts_with("test_")
    {
        return Context::Fixture;
    }
    Context::Normal
}

/// Files whose values are literals even when unquoted.
fn unquoted_literals(relative: &str) -> bool {
    let lower = relative.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    name.starts_with(".env")
        || [
            ".env",
            ".properties",
            ".ini",
            ".cfg",
            ".conf",
            ".yaml",
            ".yml",
            ".toml",
            ".tfvars",
            ".md",
            ".txt",
            ".sh",
            ".npmrc",
            ".pypirc",
            ".netrc",
        ]
        .iter()
        .any(|e| name.ends_with(e))
        || crate::dockerfile::is_dockerfile_name(name)
}

/// Values that stand for a secret without being one.
pub fn is_placeholder(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    let l = l.trim_matches(|c| c == '"' || c == '\'' || c == '`');
    if l.len() < 4 {
        return true;
    }
    const WORDS: &[&str] = &[
        "example",
        "changeme",
        "change_me",
        "change-me",
        "placeholder",
        "your",
        "xxxx",
        "****",
        "redacted",
        "dummy",
        "sample",
        "replace",
        "insert",
        "todo",
        "fixme",
        "secret_here",
        "password",
        "passwd",
        "notasecret",
        "not-a-secret",
        "none",
        "null",
        "undefined",
        "12345678",
        "abcdefgh",
        "<",
        "${",
        "{{",
        "%(",
        "%s",
        "$(",
        "#{",
        "...",
    ];
    if WORDS.iter().any(|w| l.contains(w)) {
        return true;
    }
    l.starts_with('$') || l.chars().all(|c| c == l.chars().next().unwrap_or(' '))
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        .expect("constant")
});

/// Whether the generic rule believes `value` is a credential.
fn generic_accepts(value: &str, name: &str) -> bool {
    // The cheap test first: most candidates in code are words, not keys.
    if !looks_random(value) || is_placeholder(value) || UUID.is_match(value) {
        return false;
    }
    // Integrity hashes and digests (sha512-…, sha256:…) and hex checksums
    // named as such are hashes, not secrets.
    let lower = value.to_ascii_lowercase();
    if [
        "sha1-", "sha256-", "sha384-", "sha512-", "sha256:", "sha512:", "md5:",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
    {
        return false;
    }
    let lname = name.to_ascii_lowercase();
    const REFERENCE_SUFFIXES: &[&str] = &[
        "_file", "_path", "_url", "_name", "_env", "_ref", "_id", "_type", "_header", "_field",
    ];
    if REFERENCE_SUFFIXES.iter().any(|s| lname.ends_with(s))
        || lname.contains("length")
        || lname.contains("count")
    {
        return false;
    }
    // Code, not a literal: a call, a member path, an interpolation.
    if value.contains('(')
        || value.contains("::")
        || value.starts_with("os.")
        || value.starts_with("env.")
        || value.starts_with("process.")
        || value.starts_with("self.")
        || value.starts_with("this.")
        || value.starts_with("config.")
        || value.starts_with("settings.")
    {
        return false;
    }
    true
}

/// Whether a value has the character mix of a credential.
fn looks_random(value: &str) -> bool {
    let letters = value.bytes().filter(|c| c.is_ascii_alphabetic()).count();
    let digits = value.bytes().filter(|c| c.is_ascii_digit()).count();
    if letters == 0 {
        return false;
    }
    let e = entropy(value);
    if digits > 0 {
        // A mix of letters and digits with some spread.
        return e >= 3.0;
    }
    // No digit: words joined into an identifier (`service_payment_handler`,
    // `requestConfig`) are code, not credentials; a long, mixed-case,
    // high-entropy run of letters still is one.
    let upper = value.bytes().any(|c| c.is_ascii_uppercase());
    let lower = value.bytes().any(|c| c.is_ascii_lowercase());
    let separated_words = value
        .split(['_', '-', '.'])
        .filter(|w| !w.is_empty())
        .count()
        > 1;
    value.len() >= 24 && upper && lower && !separated_words && e >= 4.0
}

/// Runs the exact-format rules over a value (no generic rule): used by
/// other scanners on values they already know are literals.
pub fn looks_like_credential(value: &str) -> bool {
    let e = &*ENGINE;
    let mut wanted = vec![false; e.patterns.len()];
    for m in e.keywords.find_iter(value) {
        for &p in &e.keyword_patterns[m.pattern().as_usize()] {
            wanted[p] = true;
        }
    }
    e.patterns.iter().zip(wanted).any(|(p, wanted)| {
        wanted
            && p.rule.id != "SEC019"
            && p.regex()
                .captures(value)
                .and_then(|c| c.get(p.group))
                .is_some_and(|m| !is_documented_example(m.as_str()) && !is_placeholder(m.as_str()))
    })
}

/// Values published in vendors' documentation as examples (AWS's
/// `AKIAIOSFODNN7EXAMPLE` pair and the like). Reported by some tools and
/// not others; Ward does not report them, on purpose, and says so in its
/// tests: they grant nothing.
fn is_documented_example(v: &str) -> bool {
    v.contains("EXAMPLE") || v.contains("example")
}

/// Scans a text. `relative` is the path under the scanned root (for
/// context rules), `display` the name findings carry, `line_offset` is
/// added to every line (for git hunks).
pub fn scan_text(
    display: &str,
    relative: &str,
    text: &str,
    line_offset: usize,
    out: &mut Vec<Finding>,
) {
    let engine = &*ENGINE;
    let mut wanted = vec![false; engine.patterns.len()];
    let mut any = false;
    let generic_index = engine.patterns.iter().position(|p| p.rule.id == "SEC019");
    let mut generic_hits: Vec<(usize, usize)> = Vec::new();
    // One pass of non-overlapping keyword search (no keyword contains
    // another, a unit test checks it): it gates every rule, and its hits
    // are where the generic rule looks.
    for m in engine.keywords.find_iter(text) {
        for &p in &engine.keyword_patterns[m.pattern().as_usize()] {
            if Some(p) == generic_index {
                generic_hits.push((m.start(), m.end()));
            }
            if !wanted[p] {
                wanted[p] = true;
                any = true;
            }
        }
    }
    if !any {
        return;
    }
    let context = context_of(relative);
    let quotes_optional = unquoted_literals(relative);
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut lines = LineIndex::new(text);
    for (i, p) in engine.patterns.iter().enumerate() {
        if !wanted[i] {
            continue;
        }
        let generic = p.rule.id == "SEC019";
        if generic && context != Context::Normal {
            continue;
        }
        let matches: Box<dyn Iterator<Item = (usize, usize)>> = if generic {
            Box::new(generic_hits.iter().copied())
        } else {
            Box::new(
                p.regex()
                    .captures_iter(text)
                    .filter_map(|c| c.get(p.group).map(|m| (m.start(), m.end()))),
            )
        };
        for (start, end) in matches {
            let (vstart, vend) = if generic {
                match generic_at(text, start, end) {
                    Some(g) => {
                        let quoted = g.open.is_some() && g.open == g.close;
                        if !(quoted || quotes_optional)
                            || !generic_accepts(&text[g.value.0..g.value.1], g.name)
                        {
                            continue;
                        }
                        g.value
                    }
                    None => continue,
                }
            } else {
                (start, end)
            };
            let m = Span {
                start: vstart,
                end: vend,
            };
            let value = text[vstart..vend].trim();
            if value.is_empty() || is_documented_example(value) {
                continue;
            }
            if taken.iter().any(|&(s, e)| m.start < e && s < m.end) {
                continue;
            }
            if matches!(p.rule.id.as_ref(), "SEC010" | "SEC020") && is_placeholder(value) {
                continue;
            }
            taken.push((m.start, m.end));
            let line = lines.line_of(m.start) + line_offset;
            let hash = hex::encode(&Sha256::digest(value.as_bytes())[..8]);
            let mut f = Finding::new(
                p.rule,
                display,
                line,
                "",
                &hash,
                format!(
                    "{} on line {line} ({} characters, sha256 {hash}…; value not shown)",
                    p.rule.title,
                    value.chars().count()
                ),
            );
            if p.rule.id == "SEC007" && value.contains("_test_") {
                f = f.with_severity(Severity::Low);
            }
            out.push(f);
        }
    }
}

struct Span {
    start: usize,
    end: usize,
}

/// The pieces of a generic match: the whole name the keyword is part of,
/// the quote before and after the value, and the value's span.
struct GenericParts<'a> {
    name: &'a str,
    open: Option<u8>,
    close: Option<u8>,
    value: (usize, usize),
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// The generic rule at one keyword hit: the keyword inside a name (up to
/// 30 bytes before it, 20 after), an optional quote, an assignment
/// operator, an optional quote and a value of 8 to 200 bytes up to the next
/// delimiter. The same shape as the rule's regex (`PATTERNS`), read by hand
/// from the keyword hits the gate pass already found, so the text is not
/// searched a second time; a unit test checks the two agree.
fn generic_at(text: &str, kw_start: usize, kw_end: usize) -> Option<GenericParts<'_>> {
    let b = text.as_bytes();
    let mut name_start = kw_start;
    while name_start > 0 && kw_start - name_start < 30 && is_name_byte(b[name_start - 1]) {
        name_start -= 1;
    }
    let mut i = kw_end;
    while i < b.len() && i - kw_end < 21 && is_name_byte(b[i]) {
        i += 1;
    }
    let name = &text[name_start..i];
    if i < b.len() && matches!(b[i], b'"' | b'\'') {
        i += 1;
    }
    let mut n = 0;
    while i < b.len() && n < 3 && matches!(b[i], b' ' | b'\t') {
        i += 1;
        n += 1;
    }
    let rest = &text[i..];
    let op = [":=", "=>", "||=", "=", ":"]
        .into_iter()
        .find(|op| rest.starts_with(op))?;
    i += op.len();
    let mut n = 0;
    while i < b.len() && n < 5 && matches!(b[i], b' ' | b'\t') {
        i += 1;
        n += 1;
    }
    let open = (i < b.len() && matches!(b[i], b'"' | b'\'' | b'`')).then(|| b[i]);
    if open.is_some() {
        i += 1;
    }
    let start = i;
    while i < b.len()
        && !matches!(
            b[i],
            b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'\'' | b'`' | b';' | b',' | b')'
        )
    {
        i += 1;
    }
    let len = text[start..i].chars().count();
    if !(8..=200).contains(&len) {
        return None;
    }
    let close = b
        .get(i)
        .copied()
        .filter(|c| matches!(c, b'"' | b'\'' | b'`'));
    Some(GenericParts {
        name,
        open,
        close,
        value: (start, i),
    })
}

/// Byte offset to 1-based line, built once per file with findings.
struct LineIndex<'a> {
    text: &'a str,
    starts: Option<Vec<usize>>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        LineIndex { text, starts: None }
    }

    fn line_of(&mut self, offset: usize) -> usize {
        let text = self.text;
        let starts = self.starts.get_or_insert_with(|| {
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        match starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(relative: &str, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        scan_text(relative, relative, text, 0, &mut out);
        out.into_iter()
            .map(|f| format!("{}:{}", f.rule_id, f.line))
            .collect()
    }

    #[test]
    fn every_pattern_compiles_and_names_a_rule() {
        assert_eq!(ENGINE.patterns.len(), PATTERNS.len());
        for p in &ENGINE.patterns {
            let _ = p.regex();
        }
        for p in PATTERNS {
            assert!(RULES.iter().any(|r| r.id == p.id), "{}", p.id);
        }
    }

    #[test]
    fn documented_examples_are_not_reported() {
        assert!(ids("docs/aws.md", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n").is_empty());
    }

    #[test]
    fn generic_rule_needs_entropy_and_a_literal() {
        assert_eq!(
            ids("app.py", "api_key = \"Zx81kQv93LmPq2Ws\"\n"),
            ["SEC019:1"]
        );
        assert!(ids("app.py", "api_key = get_key()\n").is_empty());
        assert!(ids("app.py", "password = \"changeme\"\n").is_empty());
        assert!(ids("app.py", "token = request_token\n").is_empty());
        assert!(ids("tests/app.py", "api_key = \"Zx81kQv93LmPq2Ws\"\n").is_empty());
        assert_eq!(ids("app.env", "API_TOKEN=Zx81kQv93LmPq2Ws\n"), ["SEC019:1"]);
    }

    #[test]
    fn no_keyword_contains_another() {
        let words: Vec<&str> = PATTERNS
            .iter()
            .flat_map(|p| p.keywords.iter().copied())
            .collect();
        for a in &words {
            for b in &words {
                assert!(
                    a == b || !b.contains(a),
                    "{a:?} is inside {b:?}: the gate search would miss overlaps"
                );
            }
        }
    }

    #[test]
    fn the_generic_matcher_agrees_with_its_regex() {
        let re = &ENGINE
            .patterns
            .iter()
            .find(|p| p.rule.id == "SEC019")
            .unwrap()
            .regex();
        let samples = [
            "api_key = \"Zx81kQv93LmPq2Ws\"",
            "token: abcdefgh12",
            "password=>'a1b2c3d4e5'",
            "secret := `k9J2m4N6p8Q0`",
            "client_secret_key = \"abc\"",
            "token = x",
            "passwd ||= hunter22hunter",
            "my_token_value  =  \"q\"",
            "credential:\t\"ABCDEFGH1234\"",
            "token(value)",
            "TOKEN=\"a;b\"",
            "private_key: \"0123456789abcdef\"",
        ];
        for s in samples {
            let by_regex = re.find(s).map(|m| m.end());
            let kw = ENGINE.keywords.find(s);
            let by_hand = kw
                .and_then(|m| generic_at(s, m.start(), m.end()))
                .map(|g| g.value.1);
            assert_eq!(by_regex, by_hand, "{s}");
        }
    }

    #[test]
    fn identifiers_are_not_secrets() {
        assert!(ids("a.yaml", "password_handler: \"service_payment_handler\"\n").is_empty());
        assert!(ids("a.yaml", "cart_secret_ref: request_config_payment\n").is_empty());
        assert!(ids("a.js", "const token = \"requestTokenValueHolder\";\n").is_empty());
    }

    #[test]
    fn hashes_and_uuids_are_not_secrets() {
        assert!(ids("a.json", "\"integrity\": \"sha512-abcdEFGH1234abcdEFGH1234abcdEFGH1234abcdEFGH1234abcdEFGH1234ab==\"\n").is_empty());
        assert!(ids("a.yaml", "token: 123e4567-e89b-12d3-a456-426614174000\n").is_empty());
    }

    #[test]
    fn entropy_orders_strings() {
        assert!(entropy("aaaaaaaa") < 0.1);
        assert!(entropy("q8Vn3Lr0ZtY7bW2kHc5Ej9Ps1Mf4Ux6Ga0Do8Ri2") > 4.5);
    }
}
