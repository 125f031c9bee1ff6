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

/// A body: none, a JSON wire type, text of a media type, or a JSON object
/// in Vault's shapes (described, not typed: Vault's envelopes carry
/// engine-specific `data`).
#[derive(Clone, Copy)]
pub enum Body {
    None,
    Json(fn(&mut SchemaGenerator) -> schemars::Schema),
    Text(&'static str, &'static str),
    Object(&'static str),
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
        op(
            "post",
            "/v1/gateway/denials",
            "gatewayDenials",
            "telemetry",
            "A gateway reports the requests it refused (into the audit chain, one record per batch).",
            Workload,
            json::<DenialBatch>(),
            (200, json::<DenialsRecorded>()),
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
    .into_iter()
    .chain(vault_operations())
    .collect()
}

/// The path parameters of a vault path template (`{name}`, `{path}`).
fn vault_params(path: &str) -> &'static [Param] {
    const PATH: &[Param] = &[Param {
        name: "path",
        in_path: true,
        schema: string,
        description: "The secret's path below the mount (segments separated by `/`, sent unencoded; dot segments, empty segments and encodings are refused).",
    }];
    const NAME: &[Param] = &[Param {
        name: "name",
        in_path: true,
        schema: string,
        description: "A name: letters, digits, `-`, `_` and `.`.",
    }];
    const KIND_NAME: &[Param] = &[
        Param {
            name: "kind",
            in_path: true,
            schema: || json!({"type": "string", "enum": ["plaintext", "wrapped"]}),
            description: "Whether the plaintext key is returned too.",
        },
        Param {
            name: "name",
            in_path: true,
            schema: string,
            description: "The transit key.",
        },
    ];
    const NAME_HASH: &[Param] = &[
        Param {
            name: "name",
            in_path: true,
            schema: string,
            description: "The transit key.",
        },
        Param {
            name: "hash",
            in_path: true,
            schema: || json!({"type": "string", "enum": ["sha2-256", "sha2-384", "sha2-512"]}),
            description: "The hash algorithm.",
        },
    ];
    const PREFIX: &[Param] = &[Param {
        name: "prefix",
        in_path: true,
        schema: string,
        description: "A lease ID prefix, such as database/creds/ROLE.",
    }];
    const ID: &[Param] = &[Param {
        name: "id",
        in_path: true,
        schema: string,
        description: "A lease ID.",
    }];
    if path.contains("{kind}") {
        KIND_NAME
    } else if path.contains("{hash}") {
        NAME_HASH
    } else if path.contains("{path}") {
        PATH
    } else if path.contains("{prefix}") {
        PREFIX
    } else if path.contains("{id}") {
        ID
    } else if path.contains("{name}") {
        NAME
    } else {
        &[]
    }
}

/// One row of the vault's operations: (methods, path, operation ID, tag,
/// summary, request body, success status, its body).
type VaultRow = (
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Body,
    u16,
    Body,
);

/// The vault's operations (Vault's HTTP API, as hvac uses it).
fn vault_operations() -> Vec<Operation> {
    use Caller::Token;
    const OBJ: Body = Body::Object(
        "A Vault response envelope: `data` (and `auth` for logins, `lease_id` for credentials).",
    );
    const REQ: Body = Body::Object("The request's fields, as Vault's API names them.");
    let table: &[VaultRow] = &[
        (
            &["get"],
            "/v1/sys/mounts",
            "vaultMounts",
            "vault",
            "The vault's engines (Vault's sys/mounts).",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/sys/init",
            "vaultInit",
            "sys",
            "Vault's sys/init: always initialized.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/sys/metrics",
            "metrics",
            "sys",
            "Prometheus text (admin token).",
            Body::None,
            200,
            Body::Text("text/plain", "Prometheus text exposition"),
        ),
        (
            &["get"],
            "/v1/secret/data/{path}",
            "kvRead",
            "kv",
            "Read a secret (?version=N); a deleted version is 404 with its metadata.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/secret/data/{path}",
            "kvWrite",
            "kv",
            "Write a new version (options.cas for check-and-set).",
            REQ,
            200,
            OBJ,
        ),
        (
            &["patch"],
            "/v1/secret/data/{path}",
            "kvPatch",
            "kv",
            "Merge into the current version, as a new version.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["delete"],
            "/v1/secret/data/{path}",
            "kvDeleteLatest",
            "kv",
            "Soft-delete the latest version.",
            Body::None,
            204,
            Body::None,
        ),
        (
            &["get"],
            "/v1/secret/metadata",
            "kvListRoot",
            "kv",
            "List the mount's root (?list=true, or the LIST method).",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/secret/metadata/",
            "kvListRootSlash",
            "kv",
            "As kvListRoot.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/secret/metadata/{path}",
            "kvMetadata",
            "kv",
            "A secret's metadata, or with ?list=true (or LIST) a folder's keys.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/secret/metadata/{path}",
            "kvMetadataWrite",
            "kv",
            "Set max_versions, cas_required, delete_version_after, custom_metadata.",
            REQ,
            204,
            Body::None,
        ),
        (
            &["patch"],
            "/v1/secret/metadata/{path}",
            "kvMetadataPatch",
            "kv",
            "Merge metadata.",
            REQ,
            204,
            Body::None,
        ),
        (
            &["delete"],
            "/v1/secret/metadata/{path}",
            "kvMetadataDelete",
            "kv",
            "Delete the metadata and every version.",
            Body::None,
            204,
            Body::None,
        ),
        (
            &["post", "put"],
            "/v1/secret/delete/{path}",
            "kvDeleteVersions",
            "kv",
            "Soft-delete versions.",
            REQ,
            204,
            Body::None,
        ),
        (
            &["post", "put"],
            "/v1/secret/undelete/{path}",
            "kvUndelete",
            "kv",
            "Restore soft-deleted versions.",
            REQ,
            204,
            Body::None,
        ),
        (
            &["post", "put"],
            "/v1/secret/destroy/{path}",
            "kvDestroy",
            "kv",
            "Destroy versions for good.",
            REQ,
            204,
            Body::None,
        ),
        (
            &["get"],
            "/v1/secret/config",
            "kvConfig",
            "kv",
            "The mount's settings.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/secret/config",
            "kvConfigWrite",
            "kv",
            "Change the mount's settings.",
            REQ,
            204,
            Body::None,
        ),
        (
            &["post", "put"],
            "/v1/auth/jwt/login",
            "jwtLogin",
            "vault-auth",
            "Log in with a JWT-SVID for the vault's audience: a token bound to the SPIFFE ID.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/auth/cert/login",
            "certLogin",
            "vault-auth",
            "Log in with the X.509-SVID presented over mutual TLS.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["get", "post"],
            "/v1/auth/token/lookup-self",
            "tokenLookupSelf",
            "vault-auth",
            "The calling token.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/auth/token/renew-self",
            "tokenRenewSelf",
            "vault-auth",
            "Renew the calling workload token (up to its maximum lifetime).",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/auth/token/revoke-self",
            "tokenRevokeSelf",
            "vault-auth",
            "Revoke the calling workload token.",
            Body::None,
            204,
            Body::None,
        ),
        (
            &["get"],
            "/v1/sys/policies/cedar",
            "vaultPolicyList",
            "vault-policy",
            "The vault policies' names.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/sys/policies/cedar/{name}",
            "vaultPolicyRead",
            "vault-policy",
            "One vault policy.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["put", "post"],
            "/v1/sys/policies/cedar/{name}",
            "vaultPolicyWrite",
            "vault-policy",
            "Store a Cedar vault policy (validated with all others).",
            REQ,
            204,
            Body::None,
        ),
        (
            &["delete"],
            "/v1/sys/policies/cedar/{name}",
            "vaultPolicyDelete",
            "vault-policy",
            "Delete a vault policy.",
            Body::None,
            204,
            Body::None,
        ),
        (
            &["get"],
            "/v1/transit/keys",
            "transitList",
            "transit",
            "Transit keys' names.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/transit/keys/{name}",
            "transitRead",
            "transit",
            "A key's versions and settings (never its material).",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/keys/{name}",
            "transitCreate",
            "transit",
            "Create a key (aes256-gcm96, ecdsa-p256, ed25519).",
            REQ,
            204,
            Body::None,
        ),
        (
            &["delete"],
            "/v1/transit/keys/{name}",
            "transitDelete",
            "transit",
            "Delete a key (only with deletion_allowed).",
            Body::None,
            204,
            Body::None,
        ),
        (
            &["post", "put"],
            "/v1/transit/keys/{name}/config",
            "transitConfig",
            "transit",
            "Minimum versions, deletion_allowed.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/keys/{name}/rotate",
            "transitRotate",
            "transit",
            "Add a key version.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/keys/{name}/trim",
            "transitTrim",
            "transit",
            "Drop versions below min_available_version.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/encrypt/{name}",
            "transitEncrypt",
            "transit",
            "Encrypt (base64 plaintext, or batch_input).",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/decrypt/{name}",
            "transitDecrypt",
            "transit",
            "Decrypt a vault:vN: ciphertext.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/rewrap/{name}",
            "transitRewrap",
            "transit",
            "Re-encrypt under the latest version.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/datakey/{kind}/{name}",
            "transitDatakey",
            "transit",
            "A fresh data key, wrapped (and in plaintext).",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/sign/{name}",
            "transitSign",
            "transit",
            "Sign base64 input.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/sign/{name}/{hash}",
            "transitSignHash",
            "transit",
            "Sign, naming the hash in the path.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/verify/{name}",
            "transitVerify",
            "transit",
            "Verify a signature.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/transit/verify/{name}/{hash}",
            "transitVerifyHash",
            "transit",
            "Verify, naming the hash in the path.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/database/config",
            "dbConfigList",
            "database",
            "Database connections' names.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/database/config/{name}",
            "dbConfigRead",
            "database",
            "A connection (its URL without credentials).",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/database/config/{name}",
            "dbConfigWrite",
            "database",
            "Configure a PostgreSQL or MySQL/MariaDB connection (the credential is stored sealed).",
            REQ,
            204,
            Body::None,
        ),
        (
            &["delete"],
            "/v1/database/config/{name}",
            "dbConfigDelete",
            "database",
            "Delete a connection.",
            Body::None,
            204,
            Body::None,
        ),
        (
            &["post", "put"],
            "/v1/database/rotate-root/{name}",
            "dbRotateRoot",
            "database",
            "Change the connection's admin password to one only Ward knows.",
            Body::None,
            204,
            Body::None,
        ),
        (
            &["get"],
            "/v1/database/roles",
            "dbRoleList",
            "database",
            "Roles' names.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/database/roles/{name}",
            "dbRoleRead",
            "database",
            "A role's statements and TTLs.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/database/roles/{name}",
            "dbRoleWrite",
            "database",
            "Define a role: creation and revocation statements, TTL, max TTL.",
            REQ,
            204,
            Body::None,
        ),
        (
            &["delete"],
            "/v1/database/roles/{name}",
            "dbRoleDelete",
            "database",
            "Delete a role.",
            Body::None,
            204,
            Body::None,
        ),
        (
            &["get"],
            "/v1/database/creds/{name}",
            "dbCreds",
            "database",
            "A new database user, with its lease.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/sys/leases",
            "leaseList",
            "leases",
            "Every lease with its state (?prefix=, ?stuck=true): Ward's own listing.",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/sys/leases/lookup",
            "leaseLookup",
            "leases",
            "One lease.",
            REQ,
            200,
            OBJ,
        ),
        (
            &["get"],
            "/v1/sys/leases/lookup/{prefix}",
            "leaseLookupList",
            "leases",
            "Lease IDs under a prefix (?list=true, or LIST).",
            Body::None,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/sys/leases/renew",
            "leaseRenew",
            "leases",
            "Renew a lease (up to its max TTL).",
            REQ,
            200,
            OBJ,
        ),
        (
            &["post", "put"],
            "/v1/sys/leases/revoke",
            "leaseRevoke",
            "leases",
            "Revoke a lease now (retried until it succeeds).",
            REQ,
            204,
            Body::None,
        ),
        (
            &["post", "put"],
            "/v1/sys/leases/revoke/{id}",
            "leaseRevokePath",
            "leases",
            "As leaseRevoke, the ID in the path.",
            Body::None,
            204,
            Body::None,
        ),
        (
            &["post", "put"],
            "/v1/sys/leases/revoke-prefix/{prefix}",
            "leaseRevokePrefix",
            "leases",
            "Revoke every lease under a prefix.",
            Body::None,
            204,
            Body::None,
        ),
    ];
    let mut out = Vec::new();
    for (methods, path, id, tag, summary, request, status, ok) in table {
        for (i, method) in methods.iter().enumerate() {
            // The first method keeps the ID; others get it suffixed.
            let id: &'static str = if i == 0 {
                id
            } else {
                Box::leak(
                    format!("{id}{}", method[..1].to_uppercase() + &method[1..]).into_boxed_str(),
                )
            };
            out.push(Operation {
                method,
                path,
                id,
                tag,
                summary,
                caller: if *path == "/v1/sys/init"
                    || path.starts_with("/v1/auth/jwt")
                    || path.starts_with("/v1/auth/cert")
                {
                    Caller::Anyone
                } else {
                    Token
                },
                params: vault_params(path),
                request: *request,
                ok: (*status, *ok),
            });
        }
    }
    out
}

fn body(schemas: &mut SchemaGenerator, b: Body) -> Option<Value> {
    match b {
        Body::None => None,
        Body::Json(f) => Some(json!({"application/json": {"schema": f(schemas).to_value()}})),
        Body::Text(media, what) => {
            Some(json!({ media: {"schema": {"type": "string", "description": what}} }))
        }
        Body::Object(what) => {
            Some(json!({"application/json": {"schema": {"type": "object", "description": what}}}))
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
        if op.id == "kvRead" {
            responses.insert(
                "404".into(),
                json!({"description": "No such secret (errors: []), or a deleted version (its metadata, data null).", "content": {"application/json": {"schema": {"type": "object"}}}}),
            );
        }
        if op.id.starts_with("leaseRevoke") {
            responses.insert(
                "200".into(),
                json!({"description": "Accepted, not done yet (the database is unreachable; Ward keeps retrying): warnings say so.", "content": {"application/json": {"schema": {"type": "object"}}}}),
            );
        }
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
    const SOURCES: [&str; 16] = [
        include_str!("../vault/mod.rs"),
        include_str!("../vault/kv.rs"),
        include_str!("../vault/auth.rs"),
        include_str!("../vault/policies.rs"),
        include_str!("../vault/transit.rs"),
        include_str!("../vault/database.rs"),
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
            ("DENIALS_PATH", super::super::telemetry::DENIALS_PATH),
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
                    // axum's catch-all `{*path}` is OpenAPI's `{path}`.
                    Some(p) => p.trim_end_matches('"').replace("{*", "{"),
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
