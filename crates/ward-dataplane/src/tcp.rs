//! Opaque TCP: one decision per connection (action `connect`, route
//! `tcp:<listener>`), re-taken whenever the policy changes — a connection
//! a new policy denies is closed — and the connection is closed when its
//! caller stops being trusted, as HTTP connections are.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::authz::{Authorizer, OwnId};
use crate::listener::{TrustWatch, Verified, caller_lapses, stopped};
use crate::telemetry::{CallRecord, Telemetry};

/// One inbound TCP listener.
pub struct InboundTcp {
    pub route: Arc<str>,
    pub app: SocketAddr,
    pub own_id: Arc<OwnId>,
    pub authorizer: Authorizer,
    pub trust: TrustWatch,
    pub telemetry: Arc<Telemetry>,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
}

impl InboundTcp {
    /// Serves one verified connection until either side closes, the policy
    /// or trust stops allowing it, or shutdown (after the drain).
    pub async fn serve(&self, conn: Verified, shutdown: watch::Receiver<bool>) {
        let Verified {
            mut tls,
            caller,
            chain,
        } = conn;
        let own = self.own_id.get();
        let mut record = CallRecord::start(
            self.telemetry.clone(),
            caller.id_text.clone(),
            own.clone(),
            "connect",
        );
        record.edge.route = self.route.clone();
        let mut policy_changes = self.authorizer.policy.watch();
        policy_changes.borrow_and_update();
        let decide = || {
            let trust = self.trust.borrow().clone();
            self.authorizer.authorize_tcp(
                &caller,
                &own,
                trust.as_ref().map(|t| &*t.peers),
                &self.route,
            )
        };
        if let Err(denial) = decide() {
            tracing::info!(caller = %caller.id_text, route = %self.route, reason = denial.reason.label(), policies = ?denial.policies(), "denied");
            self.telemetry
                .record_denial(denial.reason.label(), denial.policies());
            record.outcome("none", "deny");
            return;
        }
        let app = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.app)).await;
        let Ok(Ok(mut app)) = app else {
            tracing::warn!(app = %self.app, "the app is unreachable");
            record.outcome("error", "allow");
            return;
        };
        record.outcome("ok", "allow");
        // The record is of the decision; the connection may live for hours.
        drop(record);
        let copy = tokio::io::copy_bidirectional(&mut tls, &mut app);
        tokio::pin!(copy);
        let lapse = caller_lapses(&caller, &chain, self.trust.clone());
        tokio::pin!(lapse);
        let mut shutdown = shutdown;
        // The slot outlives every listener; should it ever go, only the
        // other exits remain.
        let mut policy_open = true;
        loop {
            tokio::select! {
                _ = copy.as_mut() => return,
                why = lapse.as_mut() => {
                    tracing::info!(caller = %caller.id_text, route = %self.route, reason = why, "closing a TCP connection");
                    return;
                }
                changed = policy_changes.changed(), if policy_open => {
                    if changed.is_err() {
                        policy_open = false;
                        continue;
                    }
                    if let Err(denial) = decide() {
                        tracing::info!(caller = %caller.id_text, route = %self.route, reason = denial.reason.label(), policies = ?denial.policies(), "denied by the new policy: closing the TCP connection");
                        self.telemetry.record_denial(denial.reason.label(), denial.policies());
                        return;
                    }
                }
                _ = stopped(&mut shutdown) => {
                    tokio::select! {
                        _ = tokio::time::timeout(self.drain_timeout, copy) => {}
                        why = lapse => {
                            tracing::info!(caller = %caller.id_text, route = %self.route, reason = why, "closing a draining TCP connection");
                        }
                    }
                    return;
                }
            }
        }
    }
}

/// Copies both ways until either side closes (or the drain ends on shutdown).
pub async fn pipe<A, B>(a: &mut A, b: &mut B, mut shutdown: watch::Receiver<bool>, drain: Duration)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional(a, b);
    tokio::pin!(copy);
    tokio::select! {
        _ = copy.as_mut() => {}
        _ = stopped(&mut shutdown) => {
            let _ = tokio::time::timeout(drain, copy).await;
        }
    }
}
