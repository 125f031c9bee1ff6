//! The token service's exchange policy (RFC 8693), in Cedar: the principal
//! is the `Token::Client` that asks (the actor), the resource the
//! `Token::Audience` of the new token, the context the subject token's
//! claims, the scopes asked for, the lifetime and the kind (`access`, or
//! `event` for queued work). See `exchange.cedarschema`.

use std::sync::OnceLock;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema,
};

use crate::PolicyError;
use crate::edge::Subject;

pub const SCHEMA_TEXT: &str = include_str!("exchange.cedarschema");

pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // A constant of this crate; a unit test parses it.
        #[allow(clippy::expect_used)]
        Schema::from_cedarschema_str(SCHEMA_TEXT)
            .map(|(s, _)| s)
            .expect("the exchange Cedar schema parses")
    })
}

pub fn validate(text: &str) -> Result<PolicySet, PolicyError> {
    crate::validate_against(text, schema())
}

/// One exchange asked for.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    pub client_id: &'a str,
    pub client_spiffe_id: &'a str,
    pub audience: &'a str,
    pub subject: &'a Subject,
    pub scopes: &'a [String],
    pub lifetime: i64,
    /// `access` or `event`.
    pub kind: &'a str,
}

/// The decision, with the deciding policies' IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeDecision {
    pub allowed: bool,
    pub policies: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Debug)]
pub struct ExchangePolicy {
    policies: PolicySet,
    authorizer: Authorizer,
}

impl ExchangePolicy {
    pub fn new(text: &str) -> Result<Self, PolicyError> {
        Ok(Self {
            policies: validate(text)?,
            authorizer: Authorizer::new(),
        })
    }

    pub fn decide(&self, x: &Exchange<'_>) -> ExchangeDecision {
        match self.try_decide(x) {
            Ok(d) => d,
            Err(e) => ExchangeDecision {
                allowed: false,
                policies: Vec::new(),
                errors: vec![e],
            },
        }
    }

    fn try_decide(&self, x: &Exchange<'_>) -> Result<ExchangeDecision, String> {
        let ty =
            |n: &str| -> Result<EntityTypeName, String> { n.parse().map_err(|e| format!("{e}")) };
        let uid = |t: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
        };
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let set = |v: &[String]| RestrictedExpression::new_set(v.iter().map(|x| s(x)));
        let client = Entity::new(
            uid(&ty("Token::Client")?, x.client_id),
            [
                ("client_id".to_string(), s(x.client_id)),
                ("spiffe_id".to_string(), s(x.client_spiffe_id)),
            ]
            .into(),
            Default::default(),
        )
        .map_err(|e| e.to_string())?;
        let audience = Entity::with_uid(uid(&ty("Token::Audience")?, x.audience));
        let subject = RestrictedExpression::new_record([
            ("sub".to_string(), s(&x.subject.sub)),
            ("issuer".to_string(), s(&x.subject.issuer)),
            ("client_id".to_string(), s(&x.subject.client_id)),
            ("scopes".to_string(), set(&x.subject.scopes)),
            ("actors".to_string(), set(&x.subject.actors)),
            ("tenant".to_string(), s(&x.subject.tenant)),
        ])
        .map_err(|e| e.to_string())?;
        let context = Context::from_pairs([
            ("subject".to_string(), subject),
            ("scopes".to_string(), set(x.scopes)),
            (
                "lifetime".to_string(),
                RestrictedExpression::new_long(x.lifetime),
            ),
            ("kind".to_string(), s(x.kind)),
        ])
        .map_err(|e| e.to_string())?;
        let entities = Entities::from_entities([client.clone(), audience.clone()], Some(schema()))
            .map_err(|e| e.to_string())?;
        let request = Request::new(
            client.uid(),
            uid(&ty("Token::Action")?, "exchange"),
            audience.uid(),
            context,
            Some(schema()),
        )
        .map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let (allowed, policies, errors) = crate::outcome(&response, &self.policies);
        Ok(ExchangeDecision {
            allowed,
            policies,
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_exchange_what_for_which_audience() {
        let p = ExchangePolicy::new(
            r#"
@id("gateway-to-orders")
permit(principal == Token::Client::"gateway", action, resource == Token::Audience::"spiffe://td/ns/shop/sa/orders")
when { context.kind == "access" && context.subject.issuer == "https://idp.example" };
@id("producer-events")
permit(principal == Token::Client::"producer", action, resource == Token::Audience::"billing")
when { context.kind == "event" && context.lifetime <= 3600 && !context.scopes.contains("admin") };
"#,
        )
        .unwrap();
        let subject = Subject {
            sub: "alice".into(),
            issuer: "https://idp.example".into(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        };
        let ask = |client: &str, aud: &str, kind: &str, lifetime: i64| {
            p.decide(&Exchange {
                client_id: client,
                client_spiffe_id: "",
                audience: aud,
                subject: &subject,
                scopes: &subject.scopes,
                lifetime,
                kind,
            })
            .allowed
        };
        assert!(ask(
            "gateway",
            "spiffe://td/ns/shop/sa/orders",
            "access",
            600
        ));
        assert!(!ask(
            "gateway",
            "spiffe://td/ns/shop/sa/payments",
            "access",
            600
        ));
        assert!(!ask(
            "other",
            "spiffe://td/ns/shop/sa/orders",
            "access",
            600
        ));
        assert!(ask("producer", "billing", "event", 3600));
        assert!(
            !ask("producer", "billing", "event", 7200),
            "lifetime bounded by policy"
        );
        assert!(!ask("producer", "billing", "access", 600));
        assert!(
            ExchangePolicy::new("permit(principal, action, resource) when { context.nope };")
                .is_err()
        );
    }
}
