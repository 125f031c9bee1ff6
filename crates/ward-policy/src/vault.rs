//! Who may do what in the vault, in Cedar, with the mesh's conventions: the
//! principal is the caller's `Ward::Service` (its SPIFFE ID, inside its
//! namespace and trust domain, its labels as tags), the action one of
//! Vault's capabilities (`Vault::Action::"read"`), the resource the API
//! path after `/v1/` as Vault's policies name it (`secret/data/orders/db`,
//! `transit/encrypt/orders`, `database/creds/orders`), already
//! canonicalized by the server. No permit means no access; a `forbid` is
//! Vault's `deny` and wins over every grant; a policy that cannot be
//! evaluated denies.
//!
//! Policies are kept under names (`ward secret policy write NAME FILE`);
//! every named policy is in force at once.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema,
};

use crate::PolicyError;
use crate::engine::{namespace_segment, split_id};

/// The vault's schema text.
pub const SCHEMA_TEXT: &str = include_str!("vault.cedarschema");

/// Vault's capabilities, as actions (`deny` is a `forbid` policy).
pub const CAPABILITIES: [&str; 6] = ["create", "read", "update", "patch", "delete", "list"];

/// The parsed vault schema.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // A constant of this crate; a unit test parses it.
        #[allow(clippy::expect_used)]
        Schema::from_cedarschema_str(SCHEMA_TEXT)
            .map(|(s, _)| s)
            .expect("the vault's Cedar schema parses")
    })
}

/// A policy name: what `ward secret policy write NAME` accepts.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Parses and validates one named policy text against the vault schema.
pub fn validate(text: &str) -> Result<PolicySet, PolicyError> {
    crate::validate_against(text, schema())
}

/// The outcome of one vault decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultDecision {
    /// Allowed or not.
    pub allowed: bool,
    /// The deciding policies, `NAME/ID` (never their text).
    pub policies: Vec<String>,
    /// Policies that could not be evaluated.
    pub errors: Vec<String>,
}

/// Every named vault policy, ready to decide.
#[derive(Debug)]
pub struct VaultAccess {
    policies: PolicySet,
    authorizer: Authorizer,
}

impl VaultAccess {
    /// Combines the named policy texts; each policy is renamed `NAME/ID`
    /// so that decisions say which named policy decided.
    pub fn new<'a>(
        named: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, PolicyError> {
        let mut policies = PolicySet::new();
        for (name, text) in named {
            let set = validate(text).map_err(|e| match e {
                PolicyError::Parse(m) => PolicyError::Parse(format!("policy {name}:\n{m}")),
                PolicyError::Invalid(m) => PolicyError::Invalid(format!("policy {name}:\n{m}")),
                other => other,
            })?;
            for p in set.policies() {
                let id = format!("{name}/{}", p.id());
                policies
                    .add(p.new_id(PolicyId::new(&id)))
                    .map_err(|_| PolicyError::Parse(format!("  two policies are named {id:?}")))?;
            }
        }
        Ok(Self {
            policies,
            authorizer: Authorizer::new(),
        })
    }

    /// How many policies are in force.
    pub fn len(&self) -> usize {
        self.policies.num_of_policies()
    }

    /// Whether no policy is in force (and so nothing is allowed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// May `caller` (a verified SPIFFE ID, with its labels) use
    /// `capability` on `path`?
    pub fn decide(
        &self,
        caller: &str,
        labels: &BTreeMap<String, String>,
        capability: &str,
        path: &str,
    ) -> VaultDecision {
        match self.try_decide(caller, labels, capability, path) {
            Ok(d) => d,
            Err(e) => VaultDecision {
                allowed: false,
                policies: Vec::new(),
                errors: vec![e],
            },
        }
    }

    fn try_decide(
        &self,
        caller: &str,
        labels: &BTreeMap<String, String>,
        capability: &str,
        path: &str,
    ) -> Result<VaultDecision, String> {
        if !CAPABILITIES.contains(&capability) {
            return Err(format!("no capability {capability:?}"));
        }
        let ty =
            |n: &str| -> Result<EntityTypeName, String> { n.parse().map_err(|e| format!("{e}")) };
        let uid = |t: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
        };
        let service_t = ty("Ward::Service")?;
        let ns_t = ty("Ward::Namespace")?;
        let td_t = ty("Ward::TrustDomain")?;
        let path_t = ty("Vault::Path")?;
        let action_t = ty("Vault::Action")?;

        let (trust_domain, id_path) = split_id(caller);
        let namespace = namespace_segment(id_path);
        let td = uid(&td_t, trust_domain);
        let ns = namespace.map(|n| uid(&ns_t, &format!("spiffe://{trust_domain}/ns/{n}")));
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let principal = Entity::new_with_tags(
            uid(&service_t, caller),
            [
                ("spiffe_id".to_string(), s(caller)),
                ("trust_domain".to_string(), s(trust_domain)),
                ("namespace".to_string(), s(namespace.unwrap_or(""))),
                (
                    "name".to_string(),
                    s(id_path.rsplit('/').next().unwrap_or("")),
                ),
            ],
            [ns.clone().unwrap_or_else(|| td.clone())],
            labels.iter().map(|(k, v)| (k.clone(), s(v))),
        )
        .map_err(|e| e.to_string())?;
        let mount = path.split('/').next().unwrap_or("");
        let resource = Entity::new(
            uid(&path_t, path),
            [
                ("path".to_string(), s(path)),
                ("mount".to_string(), s(mount)),
            ]
            .into(),
            Default::default(),
        )
        .map_err(|e| e.to_string())?;
        let mut entities = vec![
            principal.clone(),
            resource.clone(),
            Entity::with_uid(td.clone()),
        ];
        if let Some(ns) = ns {
            entities.push(Entity::new_no_attrs(ns, [td].into()));
        }
        let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        let request = Request::new(
            principal.uid(),
            uid(&action_t, capability),
            resource.uid(),
            Context::empty(),
            None,
        )
        .map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let (allowed, policies, errors) = crate::outcome(&response, &self.policies);
        Ok(VaultDecision {
            allowed,
            policies,
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = "spiffe://td/ns/demo/sa/orders";

    fn access(texts: &[(&str, &str)]) -> VaultAccess {
        VaultAccess::new(texts.iter().copied()).unwrap()
    }

    #[test]
    fn the_schema_parses_and_nothing_is_allowed_without_a_grant() {
        let _ = schema();
        let a = access(&[]);
        assert!(
            !a.decide(ORDERS, &BTreeMap::new(), "read", "secret/data/orders/db")
                .allowed
        );
    }

    #[test]
    fn a_grant_allows_its_paths_only_and_a_forbid_wins() {
        let a = access(&[
            (
                "orders",
                r#"@id("read-own")
                permit(principal == Ward::Service::"spiffe://td/ns/demo/sa/orders",
                       action in [Vault::Action::"read", Vault::Action::"list"], resource)
                when { resource.path like "secret/data/orders/*" || resource.path like "secret/metadata/orders/*" };"#,
            ),
            (
                "guard",
                r#"forbid(principal, action, resource) when { resource.path like "secret/data/orders/root*" };"#,
            ),
        ]);
        let no = BTreeMap::new();
        let d = a.decide(ORDERS, &no, "read", "secret/data/orders/db");
        assert!(d.allowed);
        assert_eq!(d.policies, ["orders/read-own"]);
        assert!(
            !a.decide(ORDERS, &no, "update", "secret/data/orders/db")
                .allowed,
            "read is not write"
        );
        assert!(
            !a.decide(ORDERS, &no, "read", "secret/data/payments/db")
                .allowed
        );
        assert!(
            !a.decide(
                "spiffe://td/ns/demo/sa/payments",
                &no,
                "read",
                "secret/data/orders/db"
            )
            .allowed
        );
        let d = a.decide(ORDERS, &no, "read", "secret/data/orders/root-password");
        assert!(!d.allowed, "deny wins");
        assert_eq!(d.policies, ["guard/policy0"]);
        assert!(
            !a.decide(ORDERS, &no, "sudo", "secret/data/orders/db")
                .allowed
        );
    }

    #[test]
    fn namespaces_and_labels_work_as_in_the_mesh() {
        let a = access(&[(
            "ns",
            r#"permit(principal in Ward::Namespace::"spiffe://td/ns/demo", action == Vault::Action::"read", resource)
               when { principal.hasTag("team") && principal.getTag("team") == "shop" && resource.mount == "secret" };"#,
        )]);
        let shop: BTreeMap<String, String> = [("team".to_string(), "shop".to_string())].into();
        assert!(a.decide(ORDERS, &shop, "read", "secret/data/x").allowed);
        assert!(
            !a.decide(ORDERS, &BTreeMap::new(), "read", "secret/data/x")
                .allowed
        );
        assert!(
            !a.decide(
                "spiffe://td/ns/other/sa/orders",
                &shop,
                "read",
                "secret/data/x"
            )
            .allowed
        );
        assert!(!a.decide(ORDERS, &shop, "read", "transit/encrypt/x").allowed);
    }

    #[test]
    fn bad_policies_are_refused_with_their_name() {
        let e = VaultAccess::new([("broken", "permit(principal, action, resource")]).unwrap_err();
        assert!(e.to_string().contains("policy broken"), "{e}");
        let e = VaultAccess::new([(
            "typo",
            r#"permit(principal, action == Vault::Action::"reed", resource);"#,
        )])
        .unwrap_err();
        assert!(matches!(e, PolicyError::Invalid(_)), "{e}");
        assert!(valid_name("orders-db.read_1"));
        assert!(!valid_name("../x") && !valid_name("") && !valid_name("a b"));
    }
}
