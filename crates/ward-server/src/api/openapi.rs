//! The API described as an OpenAPI 3.1 document, served at
//! `/v1/openapi.json`. Request and response bodies are the `ward-api` wire
//! types, their JSON Schemas derived from the types themselves (schemars),
//! so a field cannot change without the document changing with it; the
//! operations are listed in [`OPERATIONS`], and a test holds that list to
//! the routes each module registers (both ways). CI runs schemathesis
//! against a dev server with this document.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::Response;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Value, json};
use ward_api::*;

use crate::error::json_response;

/// Where the document is served.
pub const PATH: &str = "/v1/openapi.json";

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Anyone (rate-limited per address where it matters).
    Anyone,
    /// An API token (`Authorization: Bearer`, or `X-Vault-Token`).
    Token,
    /// A node agent, by its X.509-SVID over mutual TLS.
    Agent,
    /// A workload (a proxy), by its X.509-SVID over mutual TLS.
    Workload,
}

/// A body: none, a JSON wire type, or text of a media type.
#[derive(Clone, Copy)]
pub enum Body {
    None,
    Json(fn(&mut SchemaGenerator) -> schemars::Schema),
    Text(&'static str, &'static str),
}

fn json<T: schemars::JsonSchema>() -> Body {
    Body::Json(|g| g.subschema_for::<T>())
}

/// A query or path parameter.
pub struct Param {
    pub name: &'static str,
    pub in_path: bool,
    pub schema: fn() -> Value,
    pub description: &'static str,
}

fn int() -> Value {
    json!({"type": "integer", "format": "int64"})
}
fn nonneg() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 0})
}
fn string() -> Value {
    json!({"type": "string"})
}

/// One operation.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub caller: Caller,
    pub params: &'static [Param],
    pub request: Body,
    /// The success status and its body.
    pub ok: (u16, Body),
}

const SINCE_WAIT: &[Param] = &[
    Param {
        name: "since",
        in_path: false,
        schema: int,
        description: "The store revision the caller already has; answered at once when the store is past it.",
    },
    Param {
        name: "wait",
        in_path: false,
        schema: || json!({"type": "integer", "minimum": 0, "maximum": 30}),
        description: "Seconds to wait for a change (at most 30).",
    },
];

const ENTRY_ID: &[Param] = &[Param {
    name: "id",
    in_path: true,
    schema: string,
    description: "The entry's ID.",
}];

/// Every operation of the API.
pub fn operations() -> Vec<Operation> {
    use Caller::*;
    let op = |method, path, id, tag, summary, caller, request, ok| Operation {
        method,
        path,
        id,
        tag,
        summary,
        caller,
        params: &[],
        request,
        ok,
    };
    vec![
        op(
            "get",
            "/v1/sys/health",
            "health",
            "sys",
            "Health: 200 when unsealed, 503 when sealed.",
            Anyone,
            Body::None,
            (200, json::<SealStatus>()),
        ),
        op(
            "get",
            "/v1/sys/seal-status",
            "sealStatus",
            "sys",
            "Seal status and unseal progress.",
            Anyone,
            Body::None,
            (200, json::<SealStatus>()),
        ),
        op(
            "post",
            "/v1/sys/unseal",
            "unseal",
            "sys",
            "Submit one unseal share (or reset the progress).",
            Anyone,
            json::<UnsealRequest>(),
            (200, json::<SealStatus>()),
        ),
        op(
            "put",
            "/v1/sys/unseal",
            "unsealPut",
            "sys",
            "As POST (Vault's clients use PUT).",
            Anyone,
            json::<UnsealRequest>(),
            (200, json::<SealStatus>()),
        ),
        op(
            "post",
            "/v1/sys/seal",
            "seal",
            "sys",
            "Seal the server: keys are dropped from memory.",
            Token,
            Body::None,
            (204, Body::None),
        ),
        op(
            "put",
            "/v1/sys/seal",
            "sealPut",
            "sys",
            "As POST (Vault's clients use PUT).",
            Token,
            Body::None,
            (204, Body::None),
        ),
        Operation {
            params: &[Param {
                name: "format",
                in_path: false,
                schema: || json!({"type": "string", "enum": ["pem", "spiffe", "jwks"]}),
                description: "pem (default) or a SPIFFE bundle as JSON (also with Accept: application/json).",
            }],
            ..op(
                "get",
                "/v1/bundle",
                "bundle",
                "ca",
                "The trust bundle: every CA generation still trusted.",
                Anyone,
                Body::None,
                (
                    200,
                    Body::Text("application/x-pem-file", "PEM certificates"),
                ),
            )
        },
        op(
            "get",
            "/v1/ca",
            "listCas",
            "ca",
            "The CA generations in the bundle.",
            Token,
            Body::None,
            (200, json::<CaList>()),
        ),
        op(
            "post",
            "/v1/ca/prepare",
            "prepareCa",
            "ca",
            "Make the next CA generation: in the bundle at once, signing after activation.",
            Token,
            Body::None,
            (200, json::<CaChange>()),
        ),
        op(
            "post",
            "/v1/ca/activate",
            "activateCa",
            "ca",
            "Let the prepared CA sign; the old one stays trusted until its SVIDs expire.",
            Token,
            Body::None,
            (200, json::<CaChange>()),
        ),
        op(
            "post",
            "/v1/svid/x509",
            "mintX509",
            "svid",
            "Sign an X.509-SVID for a CSR (administrators; workloads get theirs from the agent).",
            Token,
            json::<X509SvidRequest>(),
            (200, json::<X509SvidResponse>()),
        ),
        op(
            "post",
            "/v1/svid/jwt",
            "mintJwt",
            "svid",
            "Mint a JWT-SVID.",
            Token,
            json::<JwtSvidRequest>(),
            (200, json::<JwtSvidResponse>()),
        ),
        op(
            "post",
            "/v1/entries",
            "createEntry",
            "entries",
            "Create a registration entry.",
            Token,
            json::<EntryCreate>(),
            (200, json::<EntryRecord>()),
        ),
        Operation {
            params: &[
                Param {
                    name: "parent_id",
                    in_path: false,
                    schema: string,
                    description: "Only the entries of this node.",
                },
                Param {
                    name: "since",
                    in_path: false,
                    schema: int,
                    description: "Only entries changed after this revision.",
                },
            ],
            ..op(
                "get",
                "/v1/entries",
                "listEntries",
                "entries",
                "List registration entries.",
                Token,
                Body::None,
                (200, json::<EntryList>()),
            )
        },
        Operation {
            params: ENTRY_ID,
            ..op(
                "get",
                "/v1/entries/{id}",
                "showEntry",
                "entries",
                "Show one entry.",
                Token,
                Body::None,
                (200, json::<EntryRecord>()),
            )
        },
        Operation {
            params: ENTRY_ID,
            ..op(
                "patch",
                "/v1/entries/{id}",
                "updateEntry",
                "entries",
                "Change an entry (with the revision read, to refuse lost updates).",
                Token,
                json::<EntryUpdate>(),
                (200, json::<EntryRecord>()),
            )
        },
        Operation {
            params: ENTRY_ID,
            ..op(
                "delete",
                "/v1/entries/{id}",
                "deleteEntry",
                "entries",
                "Delete an entry.",
                Token,
                Body::None,
                (204, Body::None),
            )
        },
        op(
            "post",
            "/v1/join-tokens",
            "createJoinToken",
            "join_tokens",
            "Create a single-use join token (printed once).",
            Token,
            json::<JoinTokenRequest>(),
            (200, json::<JoinTokenResponse>()),
        ),
        Operation {
            params: &[
                Param {
                    name: "after",
                    in_path: false,
                    schema: nonneg,
                    description: "Records after this sequence number.",
                },
                Param {
                    name: "limit",
                    in_path: false,
                    schema: nonneg,
                    description: "At most this many (at most 1000).",
                },
            ],
            ..op(
                "get",
                "/v1/audit",
                "auditPage",
                "audit",
                "A page of the audit log.",
                Token,
                Body::None,
                (200, json::<AuditPage>()),
            )
        },
        op(
            "get",
            "/v1/audit/verify",
            "verifyAudit",
            "audit",
            "Verify the keyed audit chain up to its head.",
            Token,
            Body::None,
            (200, json::<AuditVerification>()),
        ),
        op(
            "post",
            "/v1/audit/checkpoint",
            "checkpoint",
            "audit",
            "Sign a checkpoint (sequence, head, time) of the verified chain.",
            Token,
            Body::None,
            (200, json::<Checkpoint>()),
        ),
        op(
            "get",
            "/v1/audit/checkpoint-key",
            "checkpointKey",
            "audit",
            "The public key checkpoints are signed with.",
            Anyone,
            Body::None,
            (200, json::<CheckpointKey>()),
        ),
        op(
            "post",
            "/v1/agent/attest",
            "attest",
            "agent",
            "A node attests with a join token and gets its node SVID.",
            Anyone,
            json::<AttestRequest>(),
            (200, json::<X509SvidResponse>()),
        ),
        op(
            "post",
            "/v1/agent/renew",
            "renew",
            "agent",
            "A node renews its SVID.",
            Agent,
            json::<RenewRequest>(),
            (200, json::<X509SvidResponse>()),
        ),
        Operation {
            params: SINCE_WAIT,
            ..op(
                "get",
                "/v1/agent/sync",
                "sync",
                "agent",
                "Long poll: the node's own entries and deletions, and the bundles.",
                Agent,
                Body::None,
                (200, json::<AgentSync>()),
            )
        },
        op(
            "post",
            "/v1/agent/svids",
            "agentSvids",
            "agent",
            "Sign the SVIDs of the node's own entries, in a batch.",
            Agent,
            json::<AgentSvidBatch>(),
            (200, json::<AgentSvidBatchResponse>()),
        ),
        op(
            "post",
            "/v1/agent/jwt",
            "agentJwt",
            "agent",
            "Mint a JWT-SVID for one of the node's entries.",
            Agent,
            json::<AgentJwtRequest>(),
            (200, json::<JwtSvidResponse>()),
        ),
        op(
            "get",
            "/v1/policy",
            "currentPolicy",
            "policy",
            "The Cedar policy in force.",
            Token,
            Body::None,
            (200, json::<PolicyCurrent>()),
        ),
        op(
            "put",
            "/v1/policy",
            "pushPolicy",
            "policy",
            "Push a new Cedar policy text (validated first).",
            Token,
            Body::Text("text/plain", "Cedar policy text"),
            (200, json::<PolicyVersion>()),
        ),
        op(
            "post",
            "/v1/policy",
            "pushPolicyPost",
            "policy",
            "As PUT.",
            Token,
            Body::Text("text/plain", "Cedar policy text"),
            (200, json::<PolicyVersion>()),
        ),
        Operation {
            params: SINCE_WAIT,
            ..op(
                "get",
                "/v1/proxy/policy",
                "proxyPolicy",
                "policy",
                "Long poll: the policies that can match the calling proxy's service.",
                Workload,
                Body::None,
                (200, json::<ProxyPolicy>()),
            )
        },
        op(
            "post",
            "/v1/proxy/telemetry",
            "telemetry",
            "telemetry",
            "A proxy reports call edges (folded per edge and minute).",
            Workload,
            json::<TelemetryBatch>(),
            (200, json::<TelemetryAccepted>()),
        ),
        Operation {
            params: &[Param {
                name: "since",
                in_path: false,
                schema: int,
                description: "Unix seconds; default an hour ago.",
            }],
            ..op(
                "get",
                "/v1/telemetry/edges",
                "edges",
                "telemetry",
                "Call edges since a time, totalled.",
                Token,
                Body::None,
                (200, json::<EdgeTotals>()),
            )
        },
        op(
            "get",
            PATH,
            "openapi",
            "sys",
            "This document.",
            Anyone,
            Body::None,
            (200, Body::Text("application/json", "OpenAPI 3.1 document")),
        ),
    ]
}

fn body(schemas: &mut SchemaGenerator, b: Body) -> Option<Value> {
    match b {
        Body::None => None,
        Body::Json(f) => Some(json!({"application/json": {"schema": f(schemas).to_value()}})),
        Body::Text(media, what) => {
            Some(json!({ media: {"schema": {"type": "string", "description": what}} }))
        }
    }
}

/// Builds the document.
pub fn document() -> Value {
    let mut schemas = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for op in operations() {
        let mut o = serde_json::Map::new();
        o.insert("operationId".into(), json!(op.id));
        o.insert("tags".into(), json!([op.tag]));
        o.insert("summary".into(), json!(op.summary));
        let security = match op.caller {
            Caller::Anyone => json!([]),
            Caller::Token => json!([{"bearer": []}, {"vaultToken": []}]),
            Caller::Agent | Caller::Workload => json!([{"svid": []}]),
        };
        o.insert("security".into(), security);
        if matches!(op.caller, Caller::Agent | Caller::Workload) {
            o.insert(
                "description".into(),
                json!(if op.caller == Caller::Agent {
                    "Only for a node agent presenting its node X.509-SVID (spiffe://TD/ward/agent/NAME) over mutual TLS."
                } else {
                    "Only for a workload presenting its X.509-SVID over mutual TLS."
                }),
            );
        }
        if !op.params.is_empty() {
            let params: Vec<Value> = op
                .params
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "in": if p.in_path { "path" } else { "query" },
                        "required": p.in_path,
                        "description": p.description,
                        "schema": (p.schema)(),
                    })
                })
                .collect();
            o.insert("parameters".into(), Value::Array(params));
        }
        if let Some(content) = body(&mut schemas, op.request) {
            o.insert(
                "requestBody".into(),
                json!({"required": true, "content": content}),
            );
        }
        let mut responses = serde_json::Map::new();
        let ok = match body(&mut schemas, op.ok.1) {
            Some(content) => json!({"description": "Success.", "content": content}),
            None => json!({"description": "Success, no body."}),
        };
        let mut ok = ok;
        if op.id == "createEntry" {
            // Lets a client (and schemathesis's stateful phase) follow a
            // created entry to the operations on it.
            let links: serde_json::Map<String, Value> = ["showEntry", "updateEntry", "deleteEntry"]
                .iter()
                .map(|id| {
                    (
                        (*id).to_owned(),
                        json!({"operationId": id, "parameters": {"id": "$response.body#/id"}}),
                    )
                })
                .collect();
            ok["links"] = Value::Object(links);
        }
        responses.insert(op.ok.0.to_string(), ok);
        if op.path == "/v1/sys/health" {
            responses.insert(
                "503".into(),
                json!({"description": "Sealed.", "content": {"application/json": {"schema": schemas.subschema_for::<SealStatus>().to_value()}}}),
            );
        }
        if op.path == "/v1/bundle" {
            // With ?format=spiffe (or Accept: application/json), the same
            // 200 carries the bundle as a JWKS-shaped JSON object.
            responses.insert(
                "200".into(),
                json!({"description": "The bundle.", "content": {
                    "application/x-pem-file": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}}},
                }}),
            );
        }
        responses.insert(
            "default".into(),
            json!({"description": "An error: 400 (bad input, naming the field), 401 or 403 (authentication), 404, 405, 409 (conflict), 413 (too large), 429 (too many attempts, with Retry-After), 503 (sealed).",
                   "content": {"application/json": {"schema": schemas.subschema_for::<ErrorBody>().to_value()}}}),
        );
        o.insert("responses".into(), Value::Object(responses));
        paths
            .entry(op.path)
            .or_default()
            .insert(op.method.into(), Value::Object(o));
    }
    let definitions = schemas.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Ward control-plane API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Workload identity (SPIFFE), entries, CA rotation, seal, keyed audit, Cedar policy and telemetry. Errors are {\"errors\": [...]} as in Vault's API.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": definitions,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token (`ward_...`)."},
                "vaultToken": {"type": "apiKey", "in": "header", "name": "X-Vault-Token"},
                "svid": {"type": "mutualTLS", "description": "An X.509-SVID from this trust domain."},
            },
        },
    })
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    json_response(StatusCode::OK, DOC.get_or_init(document))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every module that registers routes, as source.
    const SOURCES: [&str; 10] = [
        include_str!("mod.rs"),
        include_str!("sys.rs"),
        include_str!("ca.rs"),
        include_str!("svid.rs"),
        include_str!("entries.rs"),
        include_str!("join_tokens.rs"),
        include_str!("audit.rs"),
        include_str!("agent.rs"),
        include_str!("policy.rs"),
        include_str!("telemetry.rs"),
    ];

    /// (method, path) of every `.route(PATH, get(..).post(..))` in the sources.
    fn registered() -> BTreeSet<(String, String)> {
        let consts = [
            ("POLICY_PATH", super::super::policy::POLICY_PATH),
            ("TELEMETRY_PATH", super::super::telemetry::TELEMETRY_PATH),
            ("openapi::PATH", PATH),
        ];
        let mut found = BTreeSet::new();
        for src in SOURCES {
            let mut rest = src;
            while let Some(at) = rest.find(".route(") {
                rest = &rest[at + ".route(".len()..];
                // The call's arguments, up to its closing parenthesis.
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map(|(i, _)| i)
                    .expect("a closed .route( call");
                let args = &rest[..end];
                let (path, handlers) = args.split_once(',').expect("two arguments");
                let path = path.trim();
                let path = match path.strip_prefix('"') {
                    Some(p) => p.trim_end_matches('"').to_owned(),
                    None => consts
                        .iter()
                        .find(|(name, _)| *name == path)
                        .unwrap_or_else(|| panic!("unknown path constant {path}"))
                        .1
                        .to_owned(),
                };
                for method in ["get", "post", "put", "patch", "delete"] {
                    let call = format!("{method}(");
                    if handlers
                        .match_indices(&call)
                        .any(|(i, _)| i == 0 || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric())
                    {
                        found.insert((method.to_owned(), path.clone()));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_routed() {
        let routes = registered();
        assert!(routes.len() >= 30, "the scan found the routes: {routes:?}");
        let documented: BTreeSet<(String, String)> = operations()
            .iter()
            .map(|o| (o.method.to_owned(), o.path.to_owned()))
            .collect();
        let missing: Vec<_> = routes.difference(&documented).collect();
        assert!(missing.is_empty(), "routed but not documented: {missing:?}");
        let extra: Vec<_> = documented.difference(&routes).collect();
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
        let ids: BTreeSet<_> = operations().iter().map(|o| o.id).collect();
        assert_eq!(ids.len(), operations().len(), "operation IDs are unique");
    }

    /// Every `$ref` in `v`.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "bodies are referenced schemas");
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} points outside components"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} does not resolve"
            );
        }
        // A wire type's fields are in its schema, with its doc comments.
        let entry = &doc["components"]["schemas"]["EntryCreate"];
        assert!(entry["properties"]["spiffe_id"].is_object(), "{entry}");
        assert_eq!(
            entry["additionalProperties"], false,
            "unknown fields are refused"
        );
        let op = &doc["paths"]["/v1/entries/{id}"]["patch"];
        assert_eq!(op["parameters"][0]["in"], "path");
        assert_eq!(op["security"][0]["bearer"], json!([]));
    }
}
