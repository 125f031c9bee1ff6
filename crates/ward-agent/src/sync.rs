//! Keeping the entries and the bundle current: a long poll on
//! `/v1/agent/sync`, which answers as soon as anything for this node changes
//! on the server (or after 25 s with nothing). Cost follows change, not the
//! number of entries.

use std::sync::Arc;
use std::time::Duration;

use crate::{Agent, apply_sync, backoff};

const WAIT: Duration = Duration::from_secs(25);

pub(crate) async fn run(agent: Arc<Agent>) {
    let mut backoff = backoff();
    let mut first = true;
    loop {
        let Some(client) = agent.client() else {
            backoff.wait().await;
            continue;
        };
        // The first sync after a start is a full snapshot, so that entries
        // deleted while the agent was away are dropped too.
        let since = if first {
            0
        } else {
            agent.cache.read(|s| s.revision)
        };
        let wait = if first { Duration::ZERO } else { WAIT };
        match client.agent_sync(since, wait).await {
            Ok(sync) => {
                backoff.reset();
                if let Err(e) = apply_sync(&agent, sync, first) {
                    tracing::error!(error = %e, "cannot save the agent state");
                }
                first = false;
            }
            Err(e) => {
                agent.on_server_error(&e);
                tracing::warn!(error = %e, "sync with the server failed; serving the cached state");
                backoff.wait().await;
            }
        }
    }
}
