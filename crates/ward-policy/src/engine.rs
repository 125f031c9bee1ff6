//! One decision per request, on the verified caller. The policy set is
//! split by principal scope once per caller and cached, so a decision
//! evaluates only the policies that can apply to that caller: with 1,000
//! policies written per service, a request looks at a handful. The
//! request's entities and context are cached too (by everything they are
//! built from), so a decision is mostly policy evaluation. Every input of a
//! decision is part of a cache key: a cached part is exactly what would
//! have been built.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use cedar_policy::{
    Authorizer, Context, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, PrincipalConstraint, Request, RestrictedExpression,
};

use crate::PolicyError;

/// Labels of a service (from its registration entries), by SPIFFE ID.
pub type Labels = BTreeMap<String, BTreeMap<String, String>>;

/// Headers the schema lets policies read (`Ward::Headers`).
const CONTEXT_HEADERS: [&str; 5] = [
    "host",
    "content-type",
    "user-agent",
    "accept",
    "x-request-id",
];

/// The actions the schema declares (HTTP methods and `connect`).
const ACTIONS: [&str; 11] = [
    "GET",
    "HEAD",
    "OPTIONS",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "TRACE",
    "CONNECT",
    "EXTENSION",
    "connect",
];

/// The most entity sets and contexts kept (each cache starts over when full).
const MAX_CACHED_CALLS: usize = 10_000;
/// The most whole decisions kept per second: a caller sending a new path
/// or request ID each time fills it (and it starts over), so it is
/// smaller than the others; a flood costs speed, never correctness.
const MAX_CACHED_DECISIONS: usize = 4_096;
/// Calls with longer keys (long paths or header values, which a caller
/// controls) are decided without caching, so the caches stay within
/// MAX_CACHED_CALLS × 2 KiB.
const MAX_CACHED_KEY: usize = 2048;

/// The most callers whose policy subsets are kept; beyond it the cache
/// starts over (callers are verified identities, so this is rarely hit).
const MAX_CACHED_CALLERS: usize = 10_000;

/// One request (or TCP connection) to decide.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The caller's SPIFFE ID, as verified from its certificate.
    pub caller: &'a str,
    /// The SPIFFE ID of the service being called (the proxy's own).
    pub destination: &'a str,
    /// The Cedar action: the HTTP method, `EXTENSION` for a configured
    /// extension method, or `connect` for opaque TCP.
    pub action: &'a str,
    /// The request method as sent (`context.method`).
    pub method: &'a str,
    /// The canonical request path, or `tcp:<listener>`.
    pub route: &'a str,
    pub source: IpAddr,
    pub time: SystemTime,
    /// "http/1.1", "h2" or "tcp".
    pub protocol: &'a str,
    /// Request headers; only those the schema declares are passed on.
    pub headers: &'a [(&'a str, &'a str)],
    /// The verified internal token's claims (`context.token`), if one came.
    pub token: Option<&'a TokenClaims>,
}

/// What `context.token` holds: the claims of a verified internal token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenClaims {
    pub sub: String,
    pub iss: String,
    /// The issuer that authenticated the user (`subject_issuer`, or `iss`
    /// when the token is the issuer's own).
    pub subject_issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub actors: Vec<String>,
    pub aud: Vec<String>,
    pub tenant: String,
    pub roles: Vec<String>,
}

impl TokenClaims {
    /// From verified claims (see [`crate::edge::Subject::from_claims`]).
    pub fn from_claims(claims: &serde_json::Value) -> Self {
        let s = crate::edge::Subject::from_claims(claims);
        let subject_issuer = claims["subject_issuer"]
            .as_str()
            .map_or_else(|| s.issuer.clone(), str::to_owned);
        Self {
            sub: s.sub,
            iss: s.issuer,
            subject_issuer,
            client_id: s.client_id,
            scopes: s.scopes,
            actors: s.actors,
            aud: s.audiences,
            tenant: s.tenant,
            roles: s.roles,
        }
    }

    fn key(&self, key: &mut String) {
        for f in [
            &self.sub,
            &self.iss,
            &self.subject_issuer,
            &self.client_id,
            &self.tenant,
        ] {
            key_field(key, f);
        }
        for list in [&self.scopes, &self.actors, &self.aud, &self.roles] {
            key_field(key, &list.len().to_string());
            for v in list {
                key_field(key, v);
            }
        }
    }

    fn record(&self) -> Result<RestrictedExpression, String> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let set = |v: &[String]| RestrictedExpression::new_set(v.iter().map(|x| s(x)));
        RestrictedExpression::new_record([
            ("sub".to_string(), s(&self.sub)),
            ("iss".to_string(), s(&self.iss)),
            ("subject_issuer".to_string(), s(&self.subject_issuer)),
            ("client_id".to_string(), s(&self.client_id)),
            ("scopes".to_string(), set(&self.scopes)),
            ("actors".to_string(), set(&self.actors)),
            ("aud".to_string(), set(&self.aud)),
            ("tenant".to_string(), s(&self.tenant)),
            ("roles".to_string(), set(&self.roles)),
        ])
        .map_err(|e| e.to_string())
    }
}

/// The outcome: allowed or not, and why (policy IDs), never policy text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that decided (permits when allowed, forbids when denied
    /// by one). Shared, so a cached decision is handed out without copying.
    pub policies: Arc<[String]>,
    /// Policies that could not be evaluated, with the error.
    pub errors: Vec<String>,
}

impl Decision {
    fn deny(error: impl Into<String>) -> Self {
        Self {
            allowed: false,
            policies: Arc::from([]),
            errors: vec![error.into()],
        }
    }
}

/// A validated policy set, ready to decide.
#[derive(Debug)]
pub struct Engine {
    policies: PolicySet,
    /// Policies whose principal scope is unconstrained or a type test.
    any_principal: Vec<Policy>,
    /// Policies whose principal scope is `== uid`, `in uid` or `is T in uid`, by that uid.
    by_principal: HashMap<EntityUid, Vec<Policy>>,
    labels: Labels,
    subsets: RwLock<HashMap<String, Arc<PolicySet>>>,
    entity_cache: Mutex<HashMap<String, Arc<Entities>>>,
    /// (the second the entries are for, contexts by key)
    context_cache: Mutex<(u64, HashMap<String, Context>)>,
    /// (the second the entries are for, whole decisions by every input of
    /// the call): a connection's requests mostly repeat one call, and a
    /// hit skips building the request and evaluating policies.
    decision_cache: Mutex<(u64, HashMap<String, Decision>)>,
    authorizer: Authorizer,
    types: Types,
}

#[derive(Debug)]
struct Types {
    service: EntityTypeName,
    namespace: EntityTypeName,
    trust_domain: EntityTypeName,
    route: EntityTypeName,
    /// Each action with its groups (`read`/`write`) as parents, from the schema.
    actions: HashMap<&'static str, Entity>,
}

impl Types {
    fn new() -> Self {
        let name = |n: &str| -> EntityTypeName {
            #[allow(clippy::expect_used)] // constant names, covered by tests
            n.parse().expect("valid entity type name")
        };
        let action = name("Ward::Action");
        let declared = crate::schema().action_entities().ok();
        Self {
            service: name("Ward::Service"),
            namespace: name("Ward::Namespace"),
            trust_domain: name("Ward::TrustDomain"),
            route: name("Ward::Route"),
            actions: ACTIONS
                .iter()
                .map(|a| {
                    let uid = EntityUid::from_type_name_and_id(action.clone(), EntityId::new(a));
                    let entity = declared
                        .as_ref()
                        .and_then(|d| d.get(&uid))
                        .cloned()
                        .unwrap_or_else(|| Entity::with_uid(uid));
                    (*a, entity)
                })
                .collect(),
        }
    }

    fn uid(&self, t: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
    }
}

impl Engine {
    /// Validates `text` against the schema and prepares it for decisions.
    pub fn new(text: &str, labels: Labels) -> Result<Self, PolicyError> {
        let policies = crate::validate(text)?;
        let mut any_principal = Vec::new();
        let mut by_principal: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
        for p in policies.policies() {
            match p.principal_constraint() {
                PrincipalConstraint::Any | PrincipalConstraint::Is(_) => {
                    any_principal.push(p.clone())
                }
                PrincipalConstraint::Eq(uid)
                | PrincipalConstraint::In(uid)
                | PrincipalConstraint::IsIn(_, uid) => {
                    by_principal.entry(uid).or_default().push(p.clone())
                }
            }
        }
        Ok(Self {
            policies,
            any_principal,
            by_principal,
            labels,
            subsets: RwLock::new(HashMap::new()),
            entity_cache: Mutex::new(HashMap::new()),
            context_cache: Mutex::new((0, HashMap::new())),
            decision_cache: Mutex::new((0, HashMap::new())),
            authorizer: Authorizer::new(),
            types: Types::new(),
        })
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.policies.num_of_policies()
    }

    /// Whether the set holds no policy (and so allows nothing).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides one call. Anything that cannot be evaluated denies: an
    /// unknown method, a malformed input, or an error in a `forbid` policy
    /// (Cedar skips policies that error; a skipped forbid must not allow).
    pub fn decide(&self, call: &Call<'_>) -> Decision {
        let second = unix_second(call.time);
        let key = decision_key(call);
        if key.len() > MAX_CACHED_KEY {
            return self.decide_in(call, false);
        }
        {
            let mut cache = self
                .decision_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if cache.0 != second {
                cache.0 = second;
                cache.1.clear();
            }
            if let Some(d) = cache.1.get(&key) {
                return d.clone();
            }
        }
        let decision = self.decide_in(call, false);
        let mut cache = self
            .decision_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.0 == second {
            if cache.1.len() >= MAX_CACHED_DECISIONS {
                cache.1.clear();
            }
            cache.1.insert(key, decision.clone());
        }
        decision
    }

    /// Decides with every policy, without the per-caller subset (for
    /// benchmarks and for checking that the subset changes nothing).
    #[doc(hidden)]
    pub fn decide_unindexed(&self, call: &Call<'_>) -> Decision {
        self.decide_in(call, true)
    }

    fn decide_in(&self, call: &Call<'_>, every_policy: bool) -> Decision {
        let Some(action) = self.types.actions.get(call.action) else {
            return Decision::deny(format!("no action {:?} in the schema", call.action));
        };
        let entities = match self.entities_for(call, action) {
            Ok(e) => e,
            Err(e) => return Decision::deny(e),
        };
        let context = match self.context_for(call) {
            Ok(c) => c,
            Err(e) => return Decision::deny(e),
        };
        let principal = self.types.uid(&self.types.service, call.caller);
        let route = self.types.uid(&self.types.route, call.route);
        let request = match Request::new(principal.clone(), action.uid(), route, context, None) {
            Ok(r) => r,
            Err(e) => return Decision::deny(e.to_string()),
        };
        let subset;
        let policies = if every_policy {
            &self.policies
        } else {
            subset = self.subset_for(call.caller, &principal);
            &*subset
        };
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        let mut errors = Vec::new();
        let mut forbid_failed = false;
        for e in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
            if policies
                .policy(e.policy_id())
                .is_some_and(|p| p.effect() == Effect::Forbid)
            {
                forbid_failed = true;
            }
            errors.push(format!("{}: {}", e.policy_id(), e.inner()));
        }
        // Sorted: the same decision names its policies in the same order
        // whatever set (whole, per caller, per service) it came from.
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(PolicyId::to_string)
            .collect();
        reasons.sort();
        let reasons: Arc<[String]> = reasons.into();
        let allowed = response.decision() == cedar_policy::Decision::Allow && !forbid_failed;
        Decision {
            allowed,
            policies: reasons,
            errors,
        }
    }

    /// The entities of a call (caller, destination, their namespaces, the
    /// route, the action), built once per (caller, action, route) and
    /// reused: building them costs more than most decisions.
    fn entities_for(&self, call: &Call<'_>, action: &Entity) -> Result<Arc<Entities>, String> {
        let mut key = String::with_capacity(128);
        for part in [call.caller, call.destination, call.action, call.route] {
            key_field(&mut key, part);
        }
        if let Some(e) = self
            .entity_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(e.clone());
        }
        let caller = self.service_entity(call.caller)?;
        let destination = self.service_entity(call.destination)?;
        let route = Entity::new_with_tags(
            self.types.uid(&self.types.route, call.route),
            [
                (
                    "path".to_string(),
                    RestrictedExpression::new_string(call.route.to_string()),
                ),
                (
                    "service".to_string(),
                    RestrictedExpression::new_entity_uid(destination.uid()),
                ),
            ],
            [destination.uid()],
            [],
        )
        .map_err(|e| e.to_string())?;
        // Namespaces and trust domains of both ends (once each), so that
        // `principal in Ward::Namespace::"spiffe://td/ns/demo"` and
        // `principal in Ward::TrustDomain::"td"` resolve.
        let mut groups: Vec<Entity> = Vec::new();
        for id in [call.caller, call.destination] {
            let (td, namespace) = self.groups_of(id);
            let td_entity = Entity::with_uid(td.clone());
            if let Some(ns) = namespace {
                let ns_entity = Entity::new_no_attrs(ns, [td].into());
                if !groups.iter().any(|g| g.uid() == ns_entity.uid()) {
                    groups.push(ns_entity);
                }
            }
            if !groups.iter().any(|g| g.uid() == td_entity.uid()) {
                groups.push(td_entity);
            }
        }
        let entities = Entities::from_entities(
            [caller, destination, route, action.clone()]
                .into_iter()
                .chain(groups),
            None,
        )
        .map_err(|e| e.to_string())?;
        let entities = Arc::new(entities);
        if key.len() > MAX_CACHED_KEY {
            return Ok(entities);
        }
        let mut cache = self.entity_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED_CALLS {
            cache.clear();
        }
        cache.insert(key, entities.clone());
        Ok(entities)
    }

    /// The context of a call, built once per distinct (source, second,
    /// protocol, selected headers): parsing the `ip` and `datetime` values
    /// costs about 10 µs each. Entries of past seconds are dropped.
    fn context_for(&self, call: &Call<'_>) -> Result<Context, String> {
        let second = unix_second(call.time);
        let mut key = format!("{};{second};", call.source);
        key_field(&mut key, call.protocol);
        key_field(&mut key, call.method);
        key_headers(&mut key, call.headers);
        match call.token {
            Some(t) => {
                key.push('T');
                t.key(&mut key);
            }
            None => key.push('-'),
        }
        {
            let mut cache = self.context_cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.0 != second {
                cache.0 = second;
                cache.1.clear();
            }
            if let Some(c) = cache.1.get(&key) {
                return Ok(c.clone());
            }
        }
        let context = self.context(call)?;
        if key.len() > MAX_CACHED_KEY {
            return Ok(context);
        }
        let mut cache = self.context_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 == second {
            if cache.1.len() >= MAX_CACHED_CALLS {
                cache.1.clear();
            }
            cache.1.insert(key, context.clone());
        }
        Ok(context)
    }

    fn context(&self, call: &Call<'_>) -> Result<Context, String> {
        // The first value of each declared header (the data plane passes
        // at most one; the cache keys take the first too).
        let headers = CONTEXT_HEADERS
            .iter()
            .filter_map(|name| {
                let (_, value) = call
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
                Some((
                    name.to_string(),
                    RestrictedExpression::new_string(value.to_string()),
                ))
            })
            .collect::<BTreeMap<_, _>>();
        let time = humantime::format_rfc3339_seconds(call.time).to_string();
        let token = match call.token {
            Some(t) => Some(("token".to_string(), t.record()?)),
            None => None,
        };
        Context::from_pairs(
            [
                (
                    "source".to_string(),
                    RestrictedExpression::new_ip(call.source.to_string()),
                ),
                ("time".to_string(), RestrictedExpression::new_datetime(time)),
                (
                    "protocol".to_string(),
                    RestrictedExpression::new_string(call.protocol.to_string()),
                ),
                (
                    "method".to_string(),
                    RestrictedExpression::new_string(call.method.to_string()),
                ),
                (
                    "headers".to_string(),
                    RestrictedExpression::new_record(headers).map_err(|e| e.to_string())?,
                ),
            ]
            .into_iter()
            .chain(token),
        )
        .map_err(|e| e.to_string())
    }

    /// A service's groups: its trust domain, and its namespace when its ID
    /// has one. Namespaces are named by their SPIFFE ID prefix
    /// (`spiffe://td/ns/demo`), so a policy on one domain's namespace can
    /// never match a workload of another domain with the same namespace.
    fn groups_of(&self, id: &str) -> (EntityUid, Option<EntityUid>) {
        let (trust_domain, path) = split_id(id);
        let td = self.types.uid(&self.types.trust_domain, trust_domain);
        let ns = namespace_segment(path).map(|ns| {
            self.types.uid(
                &self.types.namespace,
                &format!("spiffe://{trust_domain}/ns/{ns}"),
            )
        });
        (td, ns)
    }

    fn service_entity(&self, id: &str) -> Result<Entity, String> {
        let (trust_domain, path) = split_id(id);
        let namespace = namespace_segment(path).unwrap_or("");
        let name = path.rsplit('/').next().unwrap_or("");
        let uid = self.types.uid(&self.types.service, id);
        let (td, ns) = self.groups_of(id);
        let parents = [ns.unwrap_or(td)];
        let tags = self
            .labels
            .get(id)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        Entity::new_with_tags(
            uid,
            [
                ("spiffe_id".to_string(), s(id)),
                ("trust_domain".to_string(), s(trust_domain)),
                ("namespace".to_string(), s(namespace)),
                ("name".to_string(), s(name)),
            ],
            parents,
            tags,
        )
        .map_err(|e| e.to_string())
    }

    /// The policies whose principal scope can match this caller.
    fn subset_for(&self, caller: &str, principal: &EntityUid) -> Arc<PolicySet> {
        if let Some(s) = self
            .subsets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(caller)
        {
            return s.clone();
        }
        let (td, namespace) = self.groups_of(caller);
        let mut set = PolicySet::new();
        let scoped = [Some(principal), namespace.as_ref(), Some(&td)]
            .into_iter()
            .flatten()
            .filter_map(|uid| self.by_principal.get(uid))
            .flatten();
        for p in self.any_principal.iter().chain(scoped) {
            // IDs are unique within the validated set, so adding cannot clash.
            let _ = set.add(p.clone());
        }
        let set = Arc::new(set);
        let mut cache = self.subsets.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED_CALLERS {
            cache.clear();
        }
        cache.insert(caller.to_string(), set.clone());
        set
    }
}

fn unix_second(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every input of a decision but the second (which the decision cache is
/// for), in one string. Each field is length-prefixed, so no value can
/// make two different calls share a key; a header is the first value of
/// its name, as `context` takes it.
fn decision_key(call: &Call<'_>) -> String {
    use std::fmt::Write;
    // Destructured, so a field added to `Call` does not compile until it
    // is either keyed here or said not to decide.
    let Call {
        caller,
        destination,
        action,
        method,
        route,
        source,
        time: _, // the cache is per second
        protocol,
        headers,
        token,
    } = call;
    let mut key = String::with_capacity(256);
    for part in [caller, destination, action, route, protocol, method] {
        key_field(&mut key, part);
    }
    let _ = write!(key, "{source};");
    key_headers(&mut key, headers);
    match token {
        Some(t) => {
            key.push('T');
            t.key(&mut key);
        }
        None => key.push('-'),
    }
    key
}

/// Appends one length-prefixed field to a cache key.
fn key_field(key: &mut String, value: &str) {
    use std::fmt::Write;
    let _ = write!(key, "{}:", value.len());
    key.push_str(value);
}

/// Appends the first value of each context header (`-` when absent).
fn key_headers(key: &mut String, headers: &[(&str, &str)]) {
    for name in CONTEXT_HEADERS {
        match headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, v)) => key_field(key, v),
            None => key.push('-'),
        }
    }
}

/// The policies of `text` that can apply to requests to `service` (their
/// resource scope is unconstrained, a type test, a route, or the service,
/// its namespace or its trust domain), as policy text. A proxy is sent only
/// these: it learns nothing of the rules for other services. Each keeps
/// the ID it has in the whole set (an unnamed one gets its positional ID as
/// an `@id` annotation), so denial reasons name the same policy everywhere.
pub fn scoped_text(text: &str, service: &str) -> Result<String, PolicyError> {
    let set = crate::validate(text)?;
    let (trust_domain, path) = split_id(service);
    let mine = |uid: &EntityUid| -> bool {
        let kind = uid.type_name().to_string();
        let id = uid.id().unescaped();
        match kind.as_str() {
            "Ward::Route" => true,
            "Ward::Service" => id == service,
            "Ward::TrustDomain" => id == trust_domain,
            "Ward::Namespace" => namespace_segment(path)
                .is_some_and(|ns| id == format!("spiffe://{trust_domain}/ns/{ns}")),
            _ => true,
        }
    };
    let mut kept: Vec<(String, String)> = Vec::new();
    for p in set.policies() {
        let applies = match p.resource_constraint() {
            cedar_policy::ResourceConstraint::Any | cedar_policy::ResourceConstraint::Is(_) => true,
            cedar_policy::ResourceConstraint::Eq(uid)
            | cedar_policy::ResourceConstraint::In(uid)
            | cedar_policy::ResourceConstraint::IsIn(_, uid) => mine(&uid),
        };
        if applies {
            let body = p.to_string();
            let named = if p.annotation("id").is_some_and(|id| !id.is_empty()) {
                body
            } else {
                format!("@id({:?})\n{body}", p.id().to_string())
            };
            kept.push((p.id().to_string(), named));
        }
    }
    kept.sort();
    Ok(kept
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `spiffe://td/ns/<namespace>/...` → the namespace.
pub(crate) fn namespace_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/ns/")?;
    let ns = rest.split('/').next()?;
    (!ns.is_empty()).then_some(ns)
}

/// `spiffe://td/path` → ("td", "/path"). The proxy passes only IDs it has
/// verified; anything else yields an empty trust domain and path.
pub(crate) fn split_id(id: &str) -> (&str, &str) {
    let rest = id.strip_prefix("spiffe://").unwrap_or("");
    match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FE: &str = "spiffe://td/ns/demo/sa/frontend";
    const ORDERS: &str = "spiffe://td/ns/demo/sa/orders";
    const PAY: &str = "spiffe://td/ns/demo/sa/payments";

    fn call<'a>(caller: &'a str, dest: &'a str, method: &'a str, path: &'a str) -> Call<'a> {
        Call {
            caller,
            destination: dest,
            action: method,
            method,
            route: path,
            source: "127.0.0.1".parse().unwrap(),
            time: SystemTime::now(),
            protocol: "http/1.1",
            headers: &[("Content-Type", "application/json"), ("x-secret", "s")],
            token: None,
        }
    }

    #[test]
    fn the_internal_token_is_context_token_and_keys_the_caches() {
        let e = engine(&format!(
            r#"@id("users-read-orders")
            permit(principal == Ward::Service::"{FE}", action == Ward::Action::"GET", resource in Ward::Service::"{ORDERS}")
            when {{ context has token && context.token.scopes.contains("orders:read") && context.token.actors.contains("spiffe://td/ns/edge/sa/gateway") }};"#
        ));
        let alice = TokenClaims::from_claims(&serde_json::json!({
            "sub": "alice", "iss": "https://ward", "scope": "orders:read", "aud": ORDERS,
            "act": {"sub": "spiffe://td/ns/edge/sa/gateway"}
        }));
        let mut bob = alice.clone();
        bob.scopes = vec!["profile".into()];
        let base = call(FE, ORDERS, "GET", "/orders/1");
        assert!(!e.decide(&base).allowed, "no token: no user, denied");
        let with = Call {
            token: Some(&alice),
            ..base.clone()
        };
        assert!(e.decide(&with).allowed);
        // Cached per token: bob's call right after is decided on bob's claims.
        let other = Call {
            token: Some(&bob),
            ..base.clone()
        };
        assert!(!e.decide(&other).allowed);
        assert!(e.decide(&with).allowed);
    }

    fn engine(text: &str) -> Engine {
        let mut labels = Labels::new();
        labels.insert(
            ORDERS.into(),
            [("team".to_string(), "shop".to_string())].into(),
        );
        Engine::new(text, labels).unwrap()
    }

    #[test]
    fn scope_and_conditions_decide() {
        let e = engine(&format!(
            r#"@id("fe-orders")
            permit(principal == Ward::Service::"{FE}", action in Ward::Action::"read",
                   resource in Ward::Service::"{ORDERS}")
            when {{ resource.path like "/orders*" && context.headers has "content-type" }};
            permit(principal in Ward::Namespace::"spiffe://td/ns/demo", action == Ward::Action::"POST", resource)
            when {{ resource.service.hasTag("team") && resource.service.getTag("team") == "shop" }};"#
        ));
        let d = e.decide(&call(FE, ORDERS, "GET", "/orders/1"));
        assert!(d.allowed, "{d:?}");
        assert_eq!(&*d.policies, ["fe-orders".to_string()]);
        assert!(!e.decide(&call(FE, PAY, "GET", "/orders/1")).allowed);
        assert!(!e.decide(&call(FE, ORDERS, "DELETE", "/orders/1")).allowed);
        assert!(!e.decide(&call(FE, ORDERS, "GET", "/admin")).allowed);
        assert!(!e.decide(&call(PAY, ORDERS, "GET", "/orders/1")).allowed);
        // Namespace membership and labels (tags) of the destination.
        assert!(e.decide(&call(PAY, ORDERS, "POST", "/x")).allowed);
        assert!(!e.decide(&call(PAY, FE, "POST", "/x")).allowed);
        assert!(
            !e.decide(&call("spiffe://td/other/x", ORDERS, "POST", "/x"))
                .allowed
        );
    }

    #[test]
    fn a_service_gets_only_the_policies_that_can_apply_to_it() {
        let text = format!(
            r#"@id("to-orders")
            permit(principal, action, resource in Ward::Service::"{ORDERS}");
            @id("to-payments")
            permit(principal, action, resource in Ward::Service::"{PAY}");
            @id("demo-ns")
            forbid(principal, action, resource in Ward::Namespace::"spiffe://td/ns/demo")
            when {{ context.method == "TRACE" }};
            @id("other-ns")
            permit(principal, action, resource in Ward::Namespace::"spiffe://td/ns/other");
            @id("other-td")
            permit(principal, action, resource in Ward::TrustDomain::"elsewhere");
            @id("admin-route")
            forbid(principal, action, resource == Ward::Route::"/admin");
            permit(principal == Ward::Service::"{FE}", action, resource);"#
        );
        let scoped = scoped_text(&text, ORDERS).unwrap();
        let e = Engine::new(&scoped, Labels::new()).unwrap();
        let mut ids: Vec<String> = e.policies.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        assert_eq!(
            ids,
            ["admin-route", "demo-ns", "policy6", "to-orders"],
            "{scoped}"
        );
        assert!(!scoped.contains(PAY) && !scoped.contains("elsewhere"));
        // The subset decides as the whole set for this service.
        let whole = engine(&text);
        for c in [
            call(FE, ORDERS, "GET", "/x"),
            call(PAY, ORDERS, "TRACE", "/x"),
            call(PAY, ORDERS, "GET", "/admin"),
        ] {
            assert_eq!(e.decide(&c), whole.decide(&c), "{c:?}");
        }
    }

    #[test]
    fn cached_decisions_follow_every_input() {
        // Each call differs from the one before in one input a policy
        // reads; a decision cache keyed on less would answer with the
        // previous call's decision. Every call is decided twice (the second
        // a cache hit) and must agree with the uncached evaluation.
        let e = engine(&format!(
            r#"@id("fe-orders")
            permit(principal == Ward::Service::"{FE}", action in Ward::Action::"read",
                   resource in Ward::Service::"{ORDERS}");
            @id("no-evil-host")
            forbid(principal, action, resource)
            when {{ context.headers has "host" && context.headers.host == "evil" }};
            @id("no-h2-admin")
            forbid(principal, action, resource)
            when {{ context.protocol == "h2" && resource.path like "/admin*" }};
            @id("no-remote")
            forbid(principal, action, resource)
            when {{ !context.source.isLoopback() }};"#
        ));
        let ok = call(FE, ORDERS, "GET", "/x");
        let evil_host = Call {
            headers: &[("host", "evil")],
            ..ok.clone()
        };
        // The same header name twice: the first value is the one read.
        let evil_first = Call {
            headers: &[("host", "evil"), ("Host", "good")],
            ..ok.clone()
        };
        let evil_second = Call {
            headers: &[("host", "good"), ("Host", "evil")],
            ..ok.clone()
        };
        let h2_admin = Call {
            protocol: "h2",
            route: "/admin",
            ..ok.clone()
        };
        let h1_admin = Call {
            route: "/admin",
            ..ok.clone()
        };
        let remote = Call {
            source: "10.0.0.1".parse().unwrap(),
            ..ok.clone()
        };
        let cases = [
            (&ok, true),
            (&evil_host, false),
            (&ok, true),
            (&evil_first, false),
            (&evil_second, true),
            (&h2_admin, false),
            (&h1_admin, true),
            (&remote, false),
            (&ok, true),
            (&call(FE, ORDERS, "POST", "/x"), false),
            (&call(PAY, ORDERS, "GET", "/x"), false),
            (&call(FE, PAY, "GET", "/x"), false),
        ];
        for (i, (c, allowed)) in cases.iter().enumerate() {
            let uncached = e.decide_unindexed(c);
            assert_eq!(uncached.allowed, *allowed, "case {i}: {uncached:?}");
            assert_eq!(e.decide(c), uncached, "case {i}, first");
            assert_eq!(e.decide(c), uncached, "case {i}, cached");
        }
    }

    #[test]
    fn no_policy_and_unknown_methods_deny() {
        let e = engine("");
        assert!(!e.decide(&call(FE, ORDERS, "GET", "/")).allowed);
        let e = engine("permit(principal, action, resource);");
        assert!(e.decide(&call(FE, ORDERS, "GET", "/")).allowed);
        assert!(e.decide(&call(FE, ORDERS, "connect", "tcp:db")).allowed);
        let d = e.decide(&call(FE, ORDERS, "PROPFIND", "/"));
        assert!(!d.allowed && !d.errors.is_empty());
    }

    #[test]
    fn a_forbid_that_cannot_be_evaluated_denies() {
        // An overflow is an evaluation error that validation cannot see:
        // Cedar skips the forbid; Ward must deny anyway.
        let e = engine(
            r#"permit(principal, action, resource);
               forbid(principal, action, resource) when { 9223372036854775807 + 1 > 0 };"#,
        );
        let d = e.decide(&call(FE, ORDERS, "GET", "/"));
        assert!(!d.allowed, "{d:?}");
        assert_eq!(d.errors.len(), 1);
        // A failing permit next to a passing one still allows.
        let e = engine(
            r#"permit(principal, action, resource);
               permit(principal, action, resource) when { 9223372036854775807 + 1 > 0 };"#,
        );
        assert!(e.decide(&call(FE, ORDERS, "GET", "/")).allowed);
    }

    #[test]
    fn context_carries_source_time_and_headers() {
        let e = engine(
            r#"permit(principal, action, resource) when {
                 context.source.isInRange(ip("127.0.0.0/8")) &&
                 context.time > datetime("2020-01-01") &&
                 context.protocol == "http/1.1" &&
                 context.headers has "content-type" &&
                 context.headers["content-type"] == "application/json" };"#,
        );
        assert!(e.decide(&call(FE, ORDERS, "GET", "/")).allowed);
        let mut c = call(FE, ORDERS, "GET", "/");
        c.source = "10.0.0.1".parse().unwrap();
        assert!(!e.decide(&c).allowed);
        c = call(FE, ORDERS, "GET", "/");
        c.headers = &[];
        assert!(!e.decide(&c).allowed);
    }

    #[test]
    fn long_inputs_are_decided_but_not_cached() {
        let e = engine("permit(principal, action, resource) when { resource.path like \"/a*\" };");
        let long = format!("/a{}", "x".repeat(4096));
        let ua = "u".repeat(4096);
        let mut c = call(FE, ORDERS, "GET", &long);
        let headers = [("user-agent", ua.as_str())];
        c.headers = &headers;
        assert!(e.decide(&c).allowed);
        assert!(!e.decide(&call(FE, ORDERS, "GET", "/b")).allowed);
        assert_eq!(
            e.entity_cache.lock().unwrap().len(),
            1,
            "only the short call is cached"
        );
        assert!(e.context_cache.lock().unwrap().1.len() <= 1);
    }

    #[test]
    fn the_per_caller_subset_decides_as_the_whole_set() {
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!(
                "permit(principal == Ward::Service::\"spiffe://td/ns/n{i}/sa/s{i}\", action, resource) when {{ resource.path == \"/p{i}\" }};\n"
            ));
        }
        text.push_str("forbid(principal in Ward::Namespace::\"spiffe://td/ns/n7\", action == Ward::Action::\"DELETE\", resource);\n");
        text.push_str(
            "permit(principal is Ward::Service, action == Ward::Action::\"HEAD\", resource);\n",
        );
        let e = engine(&text);
        for i in [0, 7, 150] {
            let id = format!("spiffe://td/ns/n{i}/sa/s{i}");
            for (m, p) in [
                ("GET", format!("/p{i}")),
                ("GET", "/p1".into()),
                ("DELETE", format!("/p{i}")),
                ("HEAD", "/z".into()),
            ] {
                let c = call(&id, ORDERS, m, &p);
                assert_eq!(e.decide(&c), e.decide_unindexed(&c), "{id} {m} {p}");
            }
        }
        assert!(
            e.decide(&call("spiffe://td/ns/n7/sa/s7", ORDERS, "GET", "/p7"))
                .allowed
        );
        assert!(
            !e.decide(&call("spiffe://td/ns/n7/sa/s7", ORDERS, "DELETE", "/p7"))
                .allowed
        );
    }
}
