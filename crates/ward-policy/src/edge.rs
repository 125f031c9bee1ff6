//! Who may call which gateway route, in Cedar, with the mesh's conventions:
//! the principal is an `Edge::Subject` built from the credential the route
//! accepted (a token's claims, an API key, a client certificate), the
//! action the HTTP method, the resource the `Edge::Route` with the
//! canonical path. ABAC at the edge: scopes, roles, tenant and the `act`
//! chain are attributes, every other string claim a tag. See
//! `edge.cedarschema`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema,
};

use crate::PolicyError;

/// The edge schema's text.
pub const SCHEMA_TEXT: &str = include_str!("edge.cedarschema");

/// The methods a route policy can name (the schema's actions).
pub const METHODS: [&str; 7] = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"];

/// The parsed edge schema.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // A constant of this crate; a unit test parses it.
        #[allow(clippy::expect_used)]
        Schema::from_cedarschema_str(SCHEMA_TEXT)
            .map(|(s, _)| s)
            .expect("the edge's Cedar schema parses")
    })
}

/// Parses and validates a route policy against the edge schema.
pub fn validate(text: &str) -> Result<PolicySet, PolicyError> {
    crate::validate_against(text, schema())
}

/// The caller as the gateway authenticated it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub sub: String,
    /// `jwt`, `api_key`, `mtls` or `none`.
    pub credential: &'static str,
    pub issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub tenant: String,
    pub actors: Vec<String>,
    pub audiences: Vec<String>,
    /// Other string claims.
    pub tags: BTreeMap<String, String>,
}

/// Claims that are attributes (or carry no meaning as a tag).
const NOT_TAGS: [&str; 13] = [
    "sub",
    "iss",
    "client_id",
    "scope",
    "scp",
    "roles",
    "tenant",
    "act",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
];

fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl Subject {
    /// The subject of verified token claims.
    pub fn from_claims(claims: &serde_json::Value) -> Self {
        let s = |k: &str| claims[k].as_str().unwrap_or("").to_owned();
        let scopes = if claims.get("scope").is_some() {
            strings(&claims["scope"])
        } else {
            strings(&claims["scp"])
        };
        let mut actors = Vec::new();
        let mut act = &claims["act"];
        // Bounded: a token is at most 16 KiB, and the chain is read once.
        while let Some(a) = act.as_object() {
            if let Some(sub) = a.get("sub").and_then(|v| v.as_str()) {
                actors.push(sub.to_owned());
            }
            act = a.get("act").unwrap_or(&serde_json::Value::Null);
            if actors.len() >= 16 {
                break;
            }
        }
        let tags = claims
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !NOT_TAGS.contains(&k.as_str()))
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            sub: s("sub"),
            credential: "jwt",
            issuer: s("iss"),
            client_id: s("client_id"),
            scopes,
            roles: strings(&claims["roles"]),
            tenant: s("tenant"),
            actors,
            audiences: strings(&claims["aud"]),
            tags,
        }
    }
}

/// What a route's request is.
#[derive(Debug, Clone)]
pub struct RouteCall<'a> {
    pub route: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub method: &'a str,
    pub protocol: &'a str,
    pub source: IpAddr,
}

/// The outcome of one route decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeDecision {
    pub allowed: bool,
    /// The deciding policies' IDs (never their text).
    pub policies: Vec<String>,
    /// Policies that could not be evaluated.
    pub errors: Vec<String>,
}

/// The schema's names, parsed once (the Cedar parser is not for every
/// request), and its action entities with their groups.
struct Names {
    subject: EntityTypeName,
    route: EntityTypeName,
    actions: std::collections::HashMap<String, Entity>,
}

fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| {
        // Constants of this crate's schema; a unit test decides with them.
        #[allow(clippy::expect_used)]
        let ty = |n: &str| {
            n.parse::<EntityTypeName>()
                .expect("a type of the edge schema")
        };
        let actions = schema()
            .action_entities()
            .map(|all| {
                all.iter()
                    .map(|e| (e.uid().id().unescaped().to_owned(), e.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Names {
            subject: ty("Edge::Subject"),
            route: ty("Edge::Route"),
            actions,
        }
    })
}

/// One route's policy, ready to decide.
#[derive(Debug)]
pub struct RoutePolicy {
    policies: PolicySet,
    authorizer: Authorizer,
}

impl RoutePolicy {
    pub fn new(text: &str) -> Result<Self, PolicyError> {
        Ok(Self {
            policies: validate(text)?,
            authorizer: Authorizer::new(),
        })
    }

    /// May `subject` make `call`?
    pub fn decide(&self, subject: &Subject, call: &RouteCall<'_>) -> EdgeDecision {
        match self.try_decide(subject, call) {
            Ok(d) => d,
            Err(e) => EdgeDecision {
                allowed: false,
                policies: Vec::new(),
                errors: vec![e],
            },
        }
    }

    fn try_decide(&self, subject: &Subject, call: &RouteCall<'_>) -> Result<EdgeDecision, String> {
        if !METHODS.contains(&call.method) {
            return Err(format!("no action for method {:?}", call.method));
        }
        let n = names();
        let Some(action) = n.actions.get(call.method) else {
            return Err(format!("no action {:?} in the edge schema", call.method));
        };
        let uid = |t: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
        };
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let set = |v: &[String]| RestrictedExpression::new_set(v.iter().map(|x| s(x)));
        let (subject_t, route_t) = (&n.subject, &n.route);
        let principal = Entity::new_with_tags(
            uid(subject_t, &subject.sub),
            [
                ("sub".to_string(), s(&subject.sub)),
                ("credential".to_string(), s(subject.credential)),
                ("issuer".to_string(), s(&subject.issuer)),
                ("client_id".to_string(), s(&subject.client_id)),
                ("scopes".to_string(), set(&subject.scopes)),
                ("roles".to_string(), set(&subject.roles)),
                ("tenant".to_string(), s(&subject.tenant)),
                ("actors".to_string(), set(&subject.actors)),
                ("audiences".to_string(), set(&subject.audiences)),
            ],
            [],
            subject.tags.iter().map(|(k, v)| (k.clone(), s(v))),
        )
        .map_err(|e| e.to_string())?;
        let resource = Entity::new(
            uid(route_t, call.route),
            [
                ("name".to_string(), s(call.route)),
                ("path".to_string(), s(call.path)),
                ("host".to_string(), s(call.host)),
            ]
            .into(),
            Default::default(),
        )
        .map_err(|e| e.to_string())?;
        let context = Context::from_pairs([
            (
                "source".to_string(),
                RestrictedExpression::new_ip(call.source.to_string()),
            ),
            ("protocol".to_string(), s(call.protocol)),
            ("method".to_string(), s(call.method)),
        ])
        .map_err(|e| e.to_string())?;
        // The action with its groups (`read`, `write`), from the schema;
        // the entities are built to the schema's shape here, so they are
        // not checked against it again on every request.
        let entities =
            Entities::from_entities([principal.clone(), resource.clone(), action.clone()], None)
                .map_err(|e| e.to_string())?;
        let request = Request::new(principal.uid(), action.uid(), resource.uid(), context, None)
            .map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let (allowed, policies, errors) = crate::outcome(&response, &self.policies);
        Ok(EdgeDecision {
            allowed,
            policies,
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str) -> RouteCall<'static> {
        RouteCall {
            route: "orders",
            path: "/orders/1",
            host: "api.example",
            method: Box::leak(method.to_owned().into_boxed_str()),
            protocol: "h2",
            source: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn scopes_roles_tags_and_the_act_chain_decide() {
        let p = RoutePolicy::new(
            r#"
@id("readers")
permit(principal, action in Edge::Action::"read", resource == Edge::Route::"orders")
when { principal.scopes.contains("orders:read") && principal.tenant == "acme" };
@id("admins-write")
permit(principal, action in Edge::Action::"write", resource)
when { principal.roles.contains("admin") && principal.hasTag("team") && principal.getTag("team") == "ops" };
@id("no-delegated-deletes")
forbid(principal, action == Edge::Action::"DELETE", resource)
when { !principal.actors.isEmpty() };
"#,
        )
        .unwrap();
        let claims = serde_json::json!({
            "sub": "alice", "iss": "https://idp", "scope": "orders:read profile",
            "tenant": "acme", "roles": ["admin"], "team": "ops", "aud": "api",
            "act": {"sub": "svc-a", "act": {"sub": "svc-b"}}
        });
        let s = Subject::from_claims(&claims);
        assert_eq!(s.actors, ["svc-a", "svc-b"]);
        assert_eq!(s.tags.get("team").map(String::as_str), Some("ops"));
        let d = p.decide(&s, &call("GET"));
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.policies, ["readers"]);
        assert!(p.decide(&s, &call("POST")).allowed);
        let d = p.decide(&s, &call("DELETE"));
        assert!(
            !d.allowed && d.policies == ["no-delegated-deletes"],
            "{d:?}"
        );

        let mut other = s.clone();
        other.tenant = "evil".into();
        assert!(!p.decide(&other, &call("GET")).allowed);
        let mut no_scope = s.clone();
        no_scope.scopes.clear();
        assert!(!p.decide(&no_scope, &call("GET")).allowed);
        assert!(!p.decide(&s, &call("TRACE")).allowed, "no action: denied");
    }

    #[test]
    fn an_empty_policy_allows_nothing_and_a_bad_one_is_refused() {
        let p = RoutePolicy::new("").unwrap();
        assert!(!p.decide(&Subject::default(), &call("GET")).allowed);
        let e = RoutePolicy::new("permit(principal, action, resource) when { principal.nope };")
            .unwrap_err();
        assert!(matches!(e, PolicyError::Invalid(_)), "{e}");
        let scopes = Subject::from_claims(&serde_json::json!({"scp": ["a", "b"], "sub": "x"}));
        assert_eq!(scopes.scopes, ["a", "b"]);
    }
}
