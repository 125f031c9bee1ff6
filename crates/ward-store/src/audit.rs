//! The audit log: an append-only hash chain. Every record carries the hash of
//! the record before it, so that deleting, editing or reordering any record
//! (or truncating the tail, which the stored head catches) is detected by
//! [`verify_chain`]. Records never hold secrets: actors are token IDs, never
//! tokens.

use serde::{Deserialize, Serialize};

pub use ward_api::{AuditRecord, Checkpoint};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event to append: who did what to which target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Who acted: `token:<id>`, `agent:<spiffe-id>`, `system`.
    pub actor: String,
    /// What was done, such as `entry.create` or `svid.x509`.
    pub action: String,
    /// What it was done to (an entry ID, a SPIFFE ID).
    pub target: String,
    /// More detail as JSON; never a secret.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// A new event.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail,
        }
    }
}

/// Computes a record's hash over the previous hash and every field,
/// length-prefixed so that no two different records hash the same input.
pub fn record_hash(
    seq: i64,
    ts_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"ward-audit-v1");
    for field in [
        prev_hash.as_bytes(),
        &seq.to_be_bytes(),
        &ts_ms.to_be_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        target.as_bytes(),
        detail.as_bytes(),
    ] {
        ctx.update(&(field.len() as u64).to_be_bytes());
        ctx.update(field);
    }
    hex::encode(ctx.finish().as_ref())
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {seq}: {reason}")]
pub struct ChainError {
    /// The first bad record's sequence number (or the expected one, for a gap).
    pub seq: i64,
    /// What is wrong with it.
    pub reason: String,
}

/// Incremental chain verification, so that a long log can be checked page
/// by page.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl ChainVerifier {
    /// Checks the next record.
    pub fn push(&mut self, r: &AuditRecord) -> Result<(), ChainError> {
        if r.seq != self.next_seq {
            return Err(ChainError {
                seq: self.next_seq,
                reason: format!("record {} is missing (found {} next)", self.next_seq, r.seq),
            });
        }
        if r.prev_hash != self.prev_hash {
            return Err(ChainError {
                seq: r.seq,
                reason: "its prev_hash does not match the previous record's hash (a record was removed, replaced or reordered)".into(),
            });
        }
        let want = record_hash(
            r.seq,
            r.ts_ms,
            &r.actor,
            &r.action,
            &r.target,
            &r.detail,
            &r.prev_hash,
        );
        if r.hash != want {
            return Err(ChainError {
                seq: r.seq,
                reason: "its contents do not match its hash (the record was edited)".into(),
            });
        }
        self.next_seq += 1;
        self.prev_hash = r.hash.clone();
        Ok(())
    }

    /// Checks that the chain ends where the stored head says it does (a
    /// truncated tail leaves a valid but shorter chain).
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<i64, ChainError> {
        let last = self.next_seq - 1;
        if last != head_seq || self.prev_hash != head_hash {
            return Err(ChainError {
                seq: last + 1,
                reason: format!(
                    "the log ends at record {last} but its head says {head_seq} (records were truncated)"
                ),
            });
        }
        Ok(last)
    }
}

/// Verifies a whole chain against its head; returns the number of records.
pub fn verify_chain(
    records: &[AuditRecord],
    head_seq: i64,
    head_hash: &str,
) -> Result<i64, ChainError> {
    let mut v = ChainVerifier::default();
    for r in records {
        v.push(r)?;
    }
    v.finish(head_seq, head_hash)
}

/// The `format` of checkpoints this version signs and reads.
pub const CHECKPOINT_FORMAT: &str = "ward-audit-checkpoint-v1";

/// The bytes a checkpoint's signature covers: every field but the
/// signature, length-prefixed.
pub fn checkpoint_message(
    trust_domain: &str,
    seq: i64,
    head: &str,
    time_ms: i64,
    public_key: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    for field in [
        CHECKPOINT_FORMAT.as_bytes(),
        trust_domain.as_bytes(),
        &seq.to_be_bytes(),
        head.as_bytes(),
        &time_ms.to_be_bytes(),
        public_key.as_bytes(),
    ] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// Why a checkpoint is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("line {line}: not a checkpoint: {reason}")]
    Malformed { line: usize, reason: String },
    #[error(
        "line {line}: the checkpoint for record {seq} was signed by another key than the one given"
    )]
    OtherKey { line: usize, seq: i64 },
    #[error(
        "line {line}: the signature of the checkpoint for record {seq} does not verify (the checkpoint was forged or edited)"
    )]
    BadSignature { line: usize, seq: i64 },
}

/// Reads a checkpoint file (one JSON object per line) and checks every
/// signature, with `public_key` (base64) when given, else each line's own
/// key, which must then be the same on every line.
pub fn read_checkpoints(
    text: &str,
    public_key: Option<&str>,
) -> Result<Vec<Checkpoint>, CheckpointError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out: Vec<Checkpoint> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cp: Checkpoint =
            serde_json::from_str(line).map_err(|e| CheckpointError::Malformed {
                line: line_no,
                reason: e.to_string(),
            })?;
        if cp.format != CHECKPOINT_FORMAT {
            return Err(CheckpointError::Malformed {
                line: line_no,
                reason: format!("unknown format {:?}", cp.format),
            });
        }
        let want_key = public_key.or(out.first().map(|c| c.public_key.as_str()));
        if want_key.is_some_and(|k| k != cp.public_key) {
            return Err(CheckpointError::OtherKey {
                line: line_no,
                seq: cp.seq,
            });
        }
        let bad = || CheckpointError::BadSignature {
            line: line_no,
            seq: cp.seq,
        };
        let key = b64.decode(&cp.public_key).map_err(|_| bad())?;
        let sig = b64.decode(&cp.signature).map_err(|_| bad())?;
        let msg = checkpoint_message(
            &cp.trust_domain,
            cp.seq,
            &cp.head,
            cp.time_ms,
            &cp.public_key,
        );
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &key)
            .verify(&msg, &sig)
            .map_err(|_| bad())?;
        out.push(cp);
    }
    Ok(out)
}

/// Checks a chain (already verified record by record, `hashes[i]` the hash
/// of record `i + 1`) against checkpoints: each must name a record that is
/// still there with the hash it signed.
pub fn check_against(hashes: &[String], checkpoints: &[Checkpoint]) -> Result<(), ChainError> {
    for cp in checkpoints {
        let have = hashes.len() as i64;
        if cp.seq > have {
            return Err(ChainError {
                seq: have + 1,
                reason: format!(
                    "the log ends at record {have}, but a checkpoint signed at {} covers records up to {}: records {}..{} were removed (truncation)",
                    cp.time_ms,
                    cp.seq,
                    have + 1,
                    cp.seq
                ),
            });
        }
        if cp.seq >= 1 && hashes[(cp.seq - 1) as usize] != cp.head {
            return Err(ChainError {
                seq: cp.seq,
                reason: format!(
                    "record {} is not the record the checkpoint signed: the log was rewritten at or before it",
                    cp.seq
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let detail = format!("{{\"n\":{seq}}}");
                let hash = record_hash(
                    seq,
                    1000 + seq,
                    "token:a",
                    "entry.create",
                    "e",
                    &detail,
                    &prev,
                );
                let r = AuditRecord {
                    seq,
                    ts_ms: 1000 + seq,
                    actor: "token:a".into(),
                    action: "entry.create".into(),
                    target: "e".into(),
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn head(c: &[AuditRecord]) -> (i64, String) {
        let last = c.last().unwrap();
        (last.seq, last.hash.clone())
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let (s, h) = head(&c);
        assert_eq!(verify_chain(&c, s, &h), Ok(5));
        assert_eq!(verify_chain(&[], 0, GENESIS_HASH), Ok(0));
    }

    #[test]
    fn an_edit_is_named() {
        let mut c = chain(5);
        let (s, h) = head(&c);
        c[2].target = "other".into();
        assert_eq!(verify_chain(&c, s, &h).unwrap_err().seq, 3);
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
        let mut c = chain(5);
        let (s, h) = head(&c);
        c[1].actor = "token:evil".into();
        c[1].hash = record_hash(
            2,
            c[1].ts_ms,
            &c[1].actor,
            &c[1].action,
            &c[1].target,
            &c[1].detail,
            &c[1].prev_hash,
        );
        assert_eq!(verify_chain(&c, s, &h).unwrap_err().seq, 3);
    }

    #[test]
    fn a_gap_a_reorder_and_a_truncation_are_named() {
        let c = chain(5);
        let (s, h) = head(&c);
        let mut gap = c.clone();
        gap.remove(1);
        assert_eq!(verify_chain(&gap, s, &h).unwrap_err().seq, 2);
        let mut swapped = c.clone();
        swapped.swap(1, 2);
        assert_eq!(verify_chain(&swapped, s, &h).unwrap_err().seq, 2);
        let truncated = &c[..4];
        let err = verify_chain(truncated, s, &h).unwrap_err();
        assert_eq!(err.seq, 5);
        assert!(err.reason.contains("truncated"));
    }
}
