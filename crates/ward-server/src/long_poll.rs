//! "Changes since revision R" long polls (agents' entry sync, proxies'
//! policy watch): answered at once when the store is past R, else when a
//! change is signalled on this replica, a poll sees one made by another
//! replica, or the wait ends.

use std::time::Duration;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::Deserialize;
use tokio::sync::futures::Notified;
use tokio::time::Instant;

use crate::error::ApiError;

/// The longest a long poll waits for a change.
const MAX_WAIT: u64 = 30;
/// How often a waiting poll looks for changes made by other replicas.
const POLL: Duration = Duration::from_millis(500);

/// `?since=R&wait=S`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LongPollQuery {
    since: Option<i64>,
    wait: Option<u64>,
}

/// One long poll: the revision the caller has and when to answer anyway.
pub(crate) struct LongPoll {
    pub since: i64,
    deadline: Instant,
}

impl LongPoll {
    pub fn from_query(q: Result<Query<LongPollQuery>, QueryRejection>) -> Result<Self, ApiError> {
        let Query(q) =
            q.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
        Ok(Self {
            since: q.since.unwrap_or(0).max(0),
            deadline: Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT)),
        })
    }

    /// Whether it is time to answer, changed or not.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Waits for `wake`, the next poll, or the deadline, whichever is first.
    pub async fn wait(&self, wake: Notified<'_>) {
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::time::sleep_until(self.deadline) => {}
        }
    }
}
