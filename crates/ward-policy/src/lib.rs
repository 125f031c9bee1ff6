//! Ward's authorization: the Cedar schema every policy is checked against,
//! validation of a pushed policy set, and the per-request decision the
//! proxy takes on the verified caller.
//!
//! Model: principal = the caller's `Ward::Service` (from its SPIFFE ID, with
//! its namespace as parent and its labels as tags), action = the HTTP
//! method (`Ward::Action::"GET"`, grouped in `read`/`write`) or `connect`
//! for opaque TCP, resource = a `Ward::Route` (the canonical path) whose
//! parent is the service being called, context = source address, time,
//! protocol and selected headers. See `ward.cedarschema`.

pub mod edge;
mod engine;
pub mod exchange;
pub mod vault;

use std::sync::OnceLock;

pub use engine::{Call, Decision, Engine, Labels, TokenClaims, scoped_text};

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

/// The schema text, as shipped in the binary.
pub const SCHEMA_TEXT: &str = include_str!("ward.cedarschema");

/// The parsed built-in schema.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // The text is a constant of this crate; a unit test parses it.
        #[allow(clippy::expect_used)]
        Schema::from_cedarschema_str(SCHEMA_TEXT)
            .map(|(s, _warnings)| s)
            .expect("Ward's built-in Cedar schema parses")
    })
}

/// Why a policy set was refused. Messages name the policy and the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the policy text does not parse:\n{0}")]
    Parse(String),
    #[error(
        "policy templates are not supported (policy {0}): write static policies with the entities spelled out"
    )]
    Template(String),
    #[error(
        "the policies do not validate against Ward's schema (`ward policy schema` prints it):\n{0}"
    )]
    Invalid(String),
    #[error("the policy text is {0} bytes; the limit is {MAX_POLICY_BYTES}")]
    TooLarge(usize),
}

/// The largest policy text accepted (about 10,000 short policies).
pub const MAX_POLICY_BYTES: usize = 2 << 20;

/// Parses and validates `text` (strict mode) against the built-in schema.
/// An empty text is a valid policy set that allows nothing.
pub fn validate(text: &str) -> Result<PolicySet, PolicyError> {
    validate_against(text, schema())
}

/// What a Cedar answer means for Ward: allowed only when Cedar allows and
/// no `forbid` failed to evaluate (Cedar skips a policy that errors; a
/// skipped forbid must not allow); the deciding policy IDs, sorted; the
/// evaluation errors, for the log.
pub(crate) fn outcome(
    response: &cedar_policy::Response,
    policies: &PolicySet,
) -> (bool, Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut forbid_failed = false;
    for e in response.diagnostics().errors() {
        let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
        if policies
            .policy(e.policy_id())
            .is_some_and(|p| p.effect() == cedar_policy::Effect::Forbid)
        {
            forbid_failed = true;
        }
        errors.push(format!("{}: {}", e.policy_id(), e.inner()));
    }
    let mut ids: Vec<String> = response
        .diagnostics()
        .reason()
        .map(PolicyId::to_string)
        .collect();
    ids.sort();
    (
        response.decision() == cedar_policy::Decision::Allow && !forbid_failed,
        ids,
        errors,
    )
}

/// As [`validate`], against another of Ward's schemas (the vault's).
pub(crate) fn validate_against(text: &str, schema: &Schema) -> Result<PolicySet, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge(text.len()));
    }
    let set: PolicySet = text
        .parse()
        .map_err(|e: cedar_policy::ParseErrors| PolicyError::Parse(describe_all(e.iter(), text)))?;
    if let Some(t) = set.templates().next() {
        return Err(PolicyError::Template(t.id().to_string()));
    }
    let set = name_by_annotation(set)?;
    check_group_names(&set)?;
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if !result.validation_passed() {
        return Err(PolicyError::Invalid(describe_all(
            result.validation_errors().map(|e| e as &dyn Diagnostic),
            text,
        )));
    }
    Ok(set)
}

/// Namespaces and trust domains are named by what the engine builds for a
/// caller (`Ward::Namespace::"spiffe://td/ns/demo"`, `Ward::TrustDomain::"td"`):
/// any other spelling (the old unqualified `Ward::Namespace::"demo"`, an
/// upper-case domain) would validate, match no caller, and so silently turn
/// a `forbid` off. Refused instead.
fn check_group_names(set: &PolicySet) -> Result<(), PolicyError> {
    for p in set.policies() {
        for uid in p.entity_literals() {
            let ty = uid.type_name().to_string();
            let name = uid.id().unescaped();
            let ok = match ty.as_str() {
                "Ward::Namespace" => name
                    .strip_prefix("spiffe://")
                    .and_then(|rest| rest.split_once("/ns/"))
                    .is_some_and(|(td, ns)| {
                        is_trust_domain(td)
                            && !ns.is_empty()
                            && !ns.contains('/')
                            && ns
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                    }),
                "Ward::TrustDomain" => is_trust_domain(name),
                _ => true,
            };
            if !ok {
                return Err(PolicyError::Invalid(format!(
                    "  policy {}: {ty}::{name:?} can never match a caller: name namespaces \
                     Ward::Namespace::\"spiffe://<trust domain>/ns/<namespace>\" and trust \
                     domains Ward::TrustDomain::\"<trust domain>\" (lower case)",
                    p.id()
                )));
            }
        }
    }
    Ok(())
}

fn is_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

/// Policies annotated `@id("name")` take that name (in decisions,
/// errors and reports) instead of Cedar's positional `policyN`.
fn name_by_annotation(set: PolicySet) -> Result<PolicySet, PolicyError> {
    let mut named = PolicySet::new();
    for p in set.policies() {
        let p = match p.annotation("id") {
            Some(id) if !id.is_empty() => p.new_id(PolicyId::new(id)),
            _ => p.clone(),
        };
        let id = p.id().to_string();
        named
            .add(p)
            .map_err(|_| PolicyError::Parse(format!("  two policies are named {id:?}")))?;
    }
    Ok(named)
}

/// One line per diagnostic: "line L, column C: message (help)".
fn describe_all<'a, D: Diagnostic + ?Sized + 'a>(
    diagnostics: impl Iterator<Item = &'a D>,
    text: &str,
) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for d in diagnostics {
        // The validator repeats one mistake once per action it applies to.
        let key = (
            d.labels().and_then(|mut l| l.next()).map(|l| l.offset()),
            d.to_string()
                .split(" for Ward::Action")
                .next()
                .map(str::to_string),
        );
        if !seen.insert(key) {
            continue;
        }
        let place = d
            .labels()
            .and_then(|mut l| l.next())
            .map(|label| {
                let mut offset = label.offset().min(text.len());
                while !text.is_char_boundary(offset) {
                    offset -= 1;
                }
                let before = &text[..offset];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            })
            .unwrap_or_default();
        let help = d.help().map(|h| format!(" ({h})")).unwrap_or_default();
        out.push(format!("  {place}{d}{help}"));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_schema_parses() {
        let _ = schema();
    }

    #[test]
    fn a_valid_policy_set_passes() {
        let text = r#"
            permit(principal == Ward::Service::"spiffe://td/ns/demo/sa/frontend",
                   action in Ward::Action::"read",
                   resource in Ward::Service::"spiffe://td/ns/demo/sa/orders")
            when { resource.path like "/orders/*" && context.source.isLoopback() };
            forbid(principal, action, resource) unless { principal.hasTag("team") };
        "#;
        validate(text).unwrap();
        validate("").unwrap();
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let err =
            validate("permit(principal, action, resource);\npermit(principal action, resource);")
                .unwrap_err();
        let PolicyError::Parse(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn a_type_error_is_refused_with_the_policy_named() {
        // `path` is a String: comparing it with a number cannot type-check.
        let err = validate("permit(principal, action, resource) when { resource.path == 3 };")
            .unwrap_err();
        let PolicyError::Invalid(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("policy0"), "{msg}");
        // An unknown entity type or attribute is refused too.
        assert!(matches!(
            validate("permit(principal == User::\"alice\", action, resource);"),
            Err(PolicyError::Invalid(_))
        ));
        assert!(matches!(
            validate("permit(principal, action, resource) when { principal.owner == \"x\" };"),
            Err(PolicyError::Invalid(_))
        ));
    }

    #[test]
    fn policies_take_their_id_annotation() {
        let set = validate("@id(\"fe\") permit(principal, action, resource);").unwrap();
        assert!(set.policy(&PolicyId::new("fe")).is_some());
        assert!(matches!(
            validate("@id(\"a\") permit(principal, action, resource); @id(\"a\") forbid(principal, action, resource);"),
            Err(PolicyError::Parse(m)) if m.contains("\"a\"")
        ));
    }

    #[test]
    fn group_names_that_can_never_match_are_refused() {
        for bad in [
            r#"forbid(principal in Ward::Namespace::"demo", action, resource);"#,
            r#"forbid(principal in Ward::TrustDomain::"Partner.Example", action, resource);"#,
            r#"permit(principal, action, resource) when { principal in Ward::Namespace::"spiffe://td/ns/" };"#,
        ] {
            assert!(
                matches!(validate(bad), Err(PolicyError::Invalid(m)) if m.contains("can never match")),
                "{bad}"
            );
        }
        validate(
            r#"forbid(principal in Ward::Namespace::"spiffe://td/ns/demo", action, resource);
                    permit(principal in Ward::TrustDomain::"partner.example", action, resource);"#,
        )
        .unwrap();
    }

    #[test]
    fn templates_are_refused() {
        assert!(matches!(
            validate("permit(principal == ?principal, action, resource);"),
            Err(PolicyError::Template(_))
        ));
    }

    #[test]
    fn oversized_text_is_refused() {
        let text = " ".repeat(MAX_POLICY_BYTES + 1);
        assert_eq!(
            validate(&text),
            Err(PolicyError::TooLarge(MAX_POLICY_BYTES + 1))
        );
    }
}
