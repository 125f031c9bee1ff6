//! What the barrier authenticates of each table: the primary key and the
//! fields, in a fixed order. Writes, reads and the upgrade all take the
//! layout from here, so they cannot drift apart. Records with JSON columns are authenticated
//! over their canonical serialization (what the store writes), so a row
//! passes only if it means exactly what was written.

use crate::barrier::{Field, RowKey};
use crate::{CaRecord, EntryRecord, PolicyRecord};

pub(crate) fn entry<R>(e: &EntryRecord, f: impl FnOnce(&[Field<'_>]) -> R) -> R {
    let selectors = serde_json::to_string(&e.selectors).unwrap_or_default();
    let labels = serde_json::to_string(&e.labels).unwrap_or_default();
    f(&[
        Field::Text(&e.spiffe_id),
        Field::Text(&e.parent_id),
        Field::Text(&selectors),
        Field::Int(e.x509_ttl),
        Field::Int(e.jwt_ttl),
        Field::Int(e.created_at),
        Field::Int(e.updated_at),
        Field::Int(e.revision),
        Field::Text(&labels),
    ])
}

pub(crate) fn entry_mac(key: &RowKey, e: &EntryRecord) -> String {
    entry(e, |f| key.mac("entries", &e.id, f))
}

pub(crate) fn entry_ok(key: &RowKey, e: &EntryRecord, mac: Option<&str>) -> bool {
    entry(e, |f| key.verify("entries", &e.id, f, mac))
}

pub(crate) fn ca<R>(c: &CaRecord, f: impl FnOnce(&[Field<'_>]) -> R) -> R {
    let chain = serde_json::to_string(&c.chain_pem).unwrap_or_default();
    let bundle = serde_json::to_string(&c.bundle_pem).unwrap_or_default();
    f(&[
        Field::Int(c.generation),
        Field::Text(&c.state),
        Field::Text(&c.cert_pem),
        Field::Text(&chain),
        Field::Text(&bundle),
        Field::Bytes(&c.key_sealed),
        Field::Text(&c.jwt_kid),
        Field::Bytes(&c.jwt_key_sealed),
        Field::Int(c.not_after),
        Field::Int(c.created_at),
        Field::OptInt(c.activated_at),
        Field::OptInt(c.drop_after),
        Field::Int(c.revision),
    ])
}

pub(crate) fn ca_mac(key: &RowKey, c: &CaRecord) -> String {
    ca(c, |f| key.mac("cas", &c.id, f))
}

pub(crate) fn ca_ok(key: &RowKey, c: &CaRecord, mac: Option<&str>) -> bool {
    ca(c, |f| key.verify("cas", &c.id, f, mac))
}

fn policy_fields(p: &PolicyRecord) -> [Field<'_>; 5] {
    [
        Field::Int(p.revision),
        Field::Text(&p.text),
        Field::Text(&p.sha256),
        Field::Int(p.created_at),
        Field::Text(&p.actor),
    ]
}

pub(crate) fn policy_mac(key: &RowKey, p: &PolicyRecord) -> String {
    key.mac("policies", &p.version.to_string(), &policy_fields(p))
}

pub(crate) fn policy_ok(key: &RowKey, p: &PolicyRecord, mac: Option<&str>) -> bool {
    key.verify("policies", &p.version.to_string(), &policy_fields(p), mac)
}

/// `tokens` (under the token ID).
pub(crate) fn token<'a>(
    hash: &'a str,
    role: &'a str,
    created_at: i64,
    expires_at: Option<i64>,
) -> [Field<'a>; 4] {
    [
        Field::Text(hash),
        Field::Text(role),
        Field::Int(created_at),
        Field::OptInt(expires_at),
    ]
}

/// `join_tokens` (under the token ID).
pub(crate) fn join_token<'a>(
    hash: &'a str,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    node_id: Option<&'a str>,
) -> [Field<'a>; 5] {
    [
        Field::Text(hash),
        Field::Int(created_at),
        Field::Int(expires_at),
        Field::OptInt(used_at),
        Field::OptText(node_id),
    ]
}

/// `nodes` (under the node's SPIFFE ID).
pub(crate) fn node(join_token_id: &str, attested_at: i64) -> [Field<'_>; 2] {
    [Field::Text(join_token_id), Field::Int(attested_at)]
}

/// `sealed_blobs` (under the blob's name).
pub(crate) fn blob(blob: &[u8]) -> [Field<'_>; 1] {
    [Field::Bytes(blob)]
}

/// `meta` (under the setting's key).
pub(crate) fn setting(value: &str) -> [Field<'_>; 1] {
    [Field::Text(value)]
}
