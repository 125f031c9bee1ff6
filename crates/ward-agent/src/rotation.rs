//! Issuing and rotating SVIDs: every entry gets an SVID as soon as it
//! appears, and a new one at half its lifetime; the node SVID likewise. New
//! keys are made here and only CSRs are sent, in batches of 64 per request
//! (about 32 KiB, well inside the API's 64 KiB body limit).

use std::sync::Arc;
use std::time::Duration;

use ward_api::AgentSvidRequest;
use ward_identity::SpiffeId;
use zeroize::Zeroizing;

use crate::{Agent, backoff, key_and_csr, now, svid_from_response};

const TICK: Duration = Duration::from_secs(1);
const BATCH: usize = 64;

pub(crate) async fn run(agent: Arc<Agent>) {
    let mut changes = agent.cache.subscribe();
    let mut backoff = backoff();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            r = changes.changed() => if r.is_err() { return },
        }
        let node_ok = renew_node_if_due(&agent).await;
        let work_ok = rotate_due(&agent).await;
        if node_ok && work_ok {
            backoff.reset();
        } else {
            backoff.wait().await;
        }
    }
}

async fn renew_node_if_due(agent: &Agent) -> bool {
    let due = agent.cache.read(|s| {
        s.node
            .as_ref()
            .map(|n| (n.needs_rotation(now()), n.spiffe_id.clone()))
    });
    let Some((true, id)) = due else { return true };
    let Some(client) = agent.client() else {
        return false;
    };
    let Ok(id) = SpiffeId::parse(&id) else {
        return false;
    };
    let result = async {
        let (key, csr) = key_and_csr(&id)?;
        let resp = client.renew(csr).await.map_err(|e| {
            agent.on_server_error(&e);
            e.to_string()
        })?;
        agent
            .cache
            .update(|s| {
                s.node = Some(svid_from_response(
                    resp.cert_chain_pem,
                    key,
                    resp.spiffe_id,
                    resp.expires_at,
                ))
            })
            .map_err(|e| e.to_string())?;
        agent.refresh_client().map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!(node = %id, "node SVID renewed");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "node SVID renewal failed; will retry");
            false
        }
    }
}

/// Entries without a current SVID, or past half its lifetime.
fn due(agent: &Agent) -> Vec<(String, String)> {
    let now = now();
    agent.cache.read(|s| {
        s.entries
            .values()
            .filter(|e| match s.svids.get(&e.id) {
                None => true,
                Some(v) => v.spiffe_id != e.spiffe_id || v.needs_rotation(now),
            })
            .map(|e| (e.id.clone(), e.spiffe_id.clone()))
            .collect()
    })
}

async fn rotate_due(agent: &Arc<Agent>) -> bool {
    let todo = due(agent);
    if todo.is_empty() {
        return true;
    }
    let Some(client) = agent.client() else {
        return false;
    };
    let mut ok = true;
    for chunk in todo.chunks(BATCH) {
        let chunk = chunk.to_vec();
        // Key generation is CPU work: keep it off the async threads.
        let prepared = tokio::task::spawn_blocking(move || {
            chunk
                .into_iter()
                .filter_map(|(entry_id, spiffe_id)| {
                    let id = SpiffeId::parse(&spiffe_id).ok()?;
                    let (key, csr) = key_and_csr(&id).ok()?;
                    Some((entry_id, spiffe_id, key, csr))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let requests = prepared
            .iter()
            .map(|(entry_id, _, _, csr)| AgentSvidRequest {
                entry_id: entry_id.clone(),
                csr: csr.clone(),
            })
            .collect();
        let resp = match client.agent_svids(requests).await {
            Ok(r) => r,
            Err(e) => {
                agent.on_server_error(&e);
                tracing::warn!(error = %e, count = prepared.len(), "SVID rotation failed; serving the current SVIDs");
                return false;
            }
        };
        let mut keys: std::collections::HashMap<String, (String, Zeroizing<Vec<u8>>)> = prepared
            .into_iter()
            .map(|(id, sid, key, _)| (id, (sid, key)))
            .collect();
        let mut issued = Vec::new();
        for r in resp.svids {
            match (r.cert_chain_pem, r.expires_at, keys.remove(&r.entry_id)) {
                (Some(chain), Some(exp), Some((sid, key))) => {
                    issued.push((r.entry_id, svid_from_response(chain, key, sid, exp)))
                }
                (_, _, _) => {
                    ok = false;
                    tracing::warn!(entry = %r.entry_id, error = r.error.as_deref().unwrap_or("no SVID"), "the server refused an SVID");
                }
            }
        }
        let count = issued.len();
        if let Err(e) = agent.cache.update(|s| {
            for (id, svid) in issued {
                // The entry may have been deleted while we asked.
                if s.entries.contains_key(&id) {
                    s.svids.insert(id, svid);
                }
            }
        }) {
            tracing::error!(error = %e, "cannot save the agent state");
            ok = false;
        }
        tracing::debug!(count, "SVIDs issued");
    }
    ok
}
