//! The wire types of Ward's control-plane API (`/v1/...`), shared by
//! `ward server` and every client so that the two cannot drift apart.
//! Request types refuse unknown fields: a misspelt option is an error, not
//! a silently ignored default.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

/// The body of every error response, as in Vault's API (hvac reads it).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Human-readable reasons.
    pub errors: Vec<String>,
}

/// `GET /v1/sys/seal-status` (Vault-compatible fields).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SealStatus {
    /// Always `shamir`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether `ward server init` has run.
    pub initialized: bool,
    /// Whether the server is sealed.
    pub sealed: bool,
    /// Shares needed to unseal.
    pub t: u32,
    /// Shares made.
    pub n: u32,
    /// Shares received so far.
    pub progress: u32,
    /// Server version.
    pub version: String,
    /// The trust domain.
    pub trust_domain: String,
}

/// `POST /v1/sys/unseal`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsealRequest {
    /// One unseal share.
    #[serde(default)]
    pub key: Option<String>,
    /// Forget the shares received so far.
    #[serde(default)]
    pub reset: bool,
    /// Vault's seal migration (hvac always sends it); only `false` is accepted.
    #[serde(default)]
    pub migrate: bool,
}

/// `POST /v1/entries`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryCreate {
    /// The SPIFFE ID to issue.
    pub spiffe_id: String,
    /// The agent's SPIFFE ID.
    pub parent_id: String,
    /// `type:value` selectors; all must match.
    pub selectors: Vec<String>,
    /// X.509-SVID lifetime in seconds (default: the server's).
    #[serde(default)]
    pub x509_ttl: Option<u64>,
    /// JWT-SVID lifetime in seconds (default: the server's).
    #[serde(default)]
    pub jwt_ttl: Option<u64>,
    /// Labels, `{"team": "payments"}`: tags of the workload in policies.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `PATCH /v1/entries/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryUpdate {
    /// New SPIFFE ID.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// New parent.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// New selectors (replace the old ones).
    #[serde(default)]
    pub selectors: Option<Vec<String>>,
    /// New X.509-SVID lifetime, seconds.
    #[serde(default)]
    pub x509_ttl: Option<u64>,
    /// New JWT-SVID lifetime, seconds.
    #[serde(default)]
    pub jwt_ttl: Option<u64>,
    /// New labels (replace the old ones).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `GET /v1/entries[?parent_id=&since=]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EntryList {
    /// Entries changed after `since` (all of them when `since` is 0).
    pub entries: Vec<Entry>,
    /// Entries deleted after `since`.
    pub deleted: Vec<String>,
    /// The revision to pass as `since` next time.
    pub revision: i64,
}

/// `POST /v1/svid/x509`: sign a CSR.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct X509SvidRequest {
    /// PKCS#10 CSR, PEM. Its single URI SAN is the SPIFFE ID requested.
    pub csr: String,
    /// If given, the CSR's SPIFFE ID must be this entry's, and the entry's
    /// TTL applies.
    #[serde(default)]
    pub entry_id: Option<String>,
    /// Lifetime in seconds (default: the entry's or the server's).
    #[serde(default)]
    pub ttl: Option<u64>,
}

/// A signed X.509-SVID.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct X509SvidResponse {
    /// The SPIFFE ID certified.
    pub spiffe_id: String,
    /// Leaf certificate then intermediates, PEM.
    pub cert_chain_pem: String,
    /// The trust bundle (CA certificates), PEM.
    pub bundle_pem: String,
    /// Serial number, hex.
    pub serial: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// `POST /v1/svid/jwt`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidRequest {
    /// The SPIFFE ID to put in `sub`.
    pub spiffe_id: String,
    /// Audiences; at least one.
    pub audience: Vec<String>,
    /// Lifetime in seconds (default: the server's, 5 minutes).
    #[serde(default)]
    pub ttl: Option<u64>,
}

/// A signed JWT-SVID.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JwtSvidResponse {
    /// The token.
    pub token: String,
    /// Its `sub`.
    pub spiffe_id: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// `POST /v1/join-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRequest {
    /// Lifetime in seconds.
    pub ttl: u64,
    /// Bind the token to this node name: only `spiffe://<td>/ward/agent/<name>`
    /// may spend it, and it may re-attest that node after its SVID lapsed.
    #[serde(default)]
    pub node_name: Option<String>,
}

/// A new single-use join token (shown once).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JoinTokenResponse {
    /// The token to give to `ward agent --join-token`.
    pub token: String,
    /// Its public ID, as it appears in the audit log.
    pub id: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// One CA generation, without key material.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CaInfo {
    /// ID.
    pub id: String,
    /// 1, 2, …
    pub generation: i64,
    /// `prepared`, `active` or `retired`.
    pub state: String,
    /// The CA certificate's subject.
    pub subject: String,
    /// The CA certificate's notAfter, Unix seconds.
    pub not_after: i64,
    /// When it started signing.
    pub activated_at: Option<i64>,
    /// When a retired CA leaves the bundle.
    pub drop_after: Option<i64>,
    /// The JWT key ID.
    pub jwt_kid: String,
}

/// `GET /v1/ca`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CaList {
    /// Generations still in the bundle, oldest first.
    pub cas: Vec<CaInfo>,
}

/// `GET /v1/audit?after=&limit=`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditPage {
    /// Records, oldest first.
    pub records: Vec<AuditRecord>,
    /// The chain's last sequence number.
    pub head_seq: i64,
    /// The chain's last hash.
    pub head_hash: String,
}

/// `POST /v1/agent/attest`: a new node spends a join token for its node
/// SVID. The CSR's URI SAN must be `spiffe://<td>/ward/agent/<node-name>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The single-use join token.
    pub join_token: String,
    /// CSR for the node SVID, PEM.
    pub csr: String,
}

/// `POST /v1/agent/renew` (mutual TLS with the current node SVID).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// CSR for the same node SPIFFE ID, PEM.
    pub csr: String,
}

/// `GET /v1/agent/sync?since=R&wait=S` (mutual TLS): what changed for this
/// node after revision R; waits up to S seconds for a change.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentSync {
    /// Entries whose parent is this node, changed after `since` (all of them
    /// when `since` is 0).
    pub entries: Vec<Entry>,
    /// Entries this node must stop serving: deleted, or moved to another parent.
    pub deleted: Vec<String>,
    /// The revision to pass as `since` next time.
    pub revision: i64,
    /// The trust bundle's CA certificates, PEM.
    pub bundle_pem: String,
    /// The JWT-SVID keys, as the SPIFFE bundle (JWKS) JSON.
    pub jwt_bundle: serde_json::Value,
}

/// One CSR in `POST /v1/agent/svids`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSvidRequest {
    /// The entry the SVID is for; its parent must be the calling node.
    pub entry_id: String,
    /// CSR, PEM; its URI SAN must be the entry's SPIFFE ID.
    pub csr: String,
}

/// `POST /v1/agent/svids`: several SVIDs in one round trip (rotation).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSvidBatch {
    /// The CSRs; at most 1000.
    pub requests: Vec<AgentSvidRequest>,
}

/// One result of a batch: an SVID, or why not.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentSvidResult {
    /// The entry.
    pub entry_id: String,
    /// Leaf then intermediates, PEM (absent on error).
    #[serde(default)]
    pub cert_chain_pem: Option<String>,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Why this one was refused.
    #[serde(default)]
    pub error: Option<String>,
}

/// Answer to `POST /v1/agent/svids`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentSvidBatchResponse {
    /// One result per request, in order.
    pub svids: Vec<AgentSvidResult>,
}

/// `POST /v1/agent/jwt` (mutual TLS).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentJwtRequest {
    /// The entry; its parent must be the calling node.
    pub entry_id: String,
    /// Audiences; at least one.
    pub audience: Vec<String>,
}

/// `PUT /v1/policy` answers with the stored version (the text is not echoed).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PolicyVersion {
    pub version: i64,
    pub revision: i64,
    pub sha256: String,
    /// How many policies the set holds.
    pub policies: usize,
    pub created_at: i64,
}

/// `GET /v1/policy`: the current policy set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PolicyCurrent {
    /// 0 when no policy was ever pushed (every proxy then denies everything).
    pub version: i64,
    pub sha256: String,
    pub text: String,
}

/// `GET /v1/proxy/policy?since=R&wait=S`: what a proxy needs to decide.
/// Answered at once when the store revision is past `since`, else when it
/// moves or the wait ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProxyPolicy {
    /// The store revision this answer reflects (pass it as `since`).
    pub revision: i64,
    /// The policy version (0: none pushed yet).
    pub version: i64,
    pub sha256: String,
    /// The Cedar text.
    pub text: String,
    /// Labels by SPIFFE ID, from the registration entries.
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The SPIFFE ID the policies were chosen for (only those that can
    /// apply to it are in `text`): valid for that identity only.
    #[serde(default)]
    pub scoped_for: String,
}

/// `POST /v1/proxy/telemetry`: one batch of edge counts from a proxy.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryBatch {
    pub edges: Vec<EdgeReport>,
}

/// `GET /v1/telemetry/edges?since=T`: totals per edge.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EdgeTotals {
    pub edges: Vec<EdgeTotal>,
}

// ---- records shared with the store (it stores exactly these) ----------

/// A registration entry: which workload (selectors, under a parent agent)
/// gets which SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EntryRecord {
    /// Entry ID.
    pub id: String,
    /// The SPIFFE ID issued to matching workloads.
    pub spiffe_id: String,
    /// The SPIFFE ID of the agent (node) that may serve this entry.
    pub parent_id: String,
    /// `type:value` selectors, all of which must match.
    pub selectors: Vec<String>,
    /// X.509-SVID lifetime, seconds.
    pub x509_ttl: i64,
    /// JWT-SVID lifetime, seconds.
    pub jwt_ttl: i64,
    /// Labels (`team=payments`): tags of the workload's Cedar entity.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
    /// The store revision of the last change.
    pub revision: i64,
}

/// An entry as the API carries it.
pub type Entry = EntryRecord;

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When it was appended, Unix milliseconds.
    pub ts_ms: i64,
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// Detail, as the JSON text that was hashed.
    pub detail: String,
    /// The previous record's hash (hex SHA-256).
    pub prev_hash: String,
    /// This record's hash (hex SHA-256).
    pub hash: String,
}

/// Calls on one edge during one reporting window, as a proxy counted them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EdgeReport {
    pub source: String,
    pub destination: String,
    pub method: String,
    pub route: String,
    /// "2xx".."5xx", or "none" when no response was produced (denied, failed upstream).
    pub status_class: String,
    /// "allow" or "deny".
    pub decision: String,
    pub requests: i64,
    pub latency_us_sum: i64,
    pub window_start: i64,
    pub window_end: i64,
}

/// Totals per edge over the reports received since a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EdgeTotal {
    pub source: String,
    pub destination: String,
    pub method: String,
    pub route: String,
    pub status_class: String,
    pub decision: String,
    pub requests: i64,
    pub latency_us_sum: i64,
    pub last_seen: i64,
}

/// A signed checkpoint of the audit chain (`POST /v1/audit/checkpoint`),
/// like a transparency log's signed tree head: whoever holds one can later
/// prove that the first `seq` records still end in `head`, with nothing
/// but the public key. One JSON object per line in a checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Always `ward-audit-checkpoint-v1`.
    pub format: String,
    /// The trust domain whose log this is.
    pub trust_domain: String,
    /// The last record covered.
    pub seq: i64,
    /// That record's hash (hex).
    pub head: String,
    /// When it was signed, Unix milliseconds.
    pub time_ms: i64,
    /// The Ed25519 public key that signed it (base64).
    pub public_key: String,
    /// The signature over the fields above (base64).
    pub signature: String,
}

/// `GET /v1/audit/checkpoint-key`: the key checkpoints are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckpointKey {
    /// Ed25519 public key, base64.
    pub public_key: String,
}

/// `GET /v1/audit/verify`: the server's check of the keyed chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditVerification {
    /// Whether every record and the head pass.
    pub intact: bool,
    /// Records checked.
    pub records: i64,
    /// The head's sequence number.
    pub head_seq: i64,
    /// The first bad record's sequence number, when not intact.
    pub first_bad_seq: Option<i64>,
    /// What is wrong, when not intact.
    pub reason: Option<String>,
}

/// `POST /v1/ca/prepare` and `POST /v1/ca/activate`: the CA generation changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CaChange {
    /// The CA's ID.
    pub id: String,
    /// Its generation.
    pub generation: i64,
    /// Its state now: `prepared` or `active`.
    pub state: String,
}

/// `POST /v1/gateway/denials`: requests a gateway refused, counted per
/// route, reason and client address over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenialReport {
    /// The route's name (`none` before routing).
    pub route: String,
    /// Why (`token_expired`, `policy`, `rate_limited`, …).
    pub reason: String,
    /// The client's address (`other` past the gateway's limit of distinct ones).
    pub client: String,
    pub count: u64,
    pub window_start: i64,
    pub window_end: i64,
}

/// `POST /v1/gateway/denials`: one batch from a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenialBatch {
    pub denials: Vec<DenialReport>,
}

/// `POST /v1/gateway/denials`: the audit record the batch became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DenialsRecorded {
    /// Denial counts in the batch.
    pub recorded: usize,
    /// The audit record's sequence number.
    pub seq: i64,
}

/// `POST /v1/proxy/telemetry`: how a batch was taken in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TelemetryAccepted {
    /// Edges in the batch.
    pub accepted: usize,
    /// Of those, edges counted under `(other)` because the reporter was over
    /// its limit of distinct edges this minute.
    pub folded: usize,
}
