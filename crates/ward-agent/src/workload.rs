//! The SPIFFE Workload API over a unix socket. Every call must carry the
//! `workload.spiffe.io: true` header (else InvalidArgument), and every caller
//! is attested from the kernel; a caller no entry matches gets
//! PermissionDenied, never an empty answer. Streams send a new message
//! whenever what the caller is entitled to changes.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::attest::{Workload, matches};
use crate::authority_fix::{FixedUnixStream, PeerInfo};
use crate::cache::State;
use crate::proto::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use crate::proto::*;
use crate::{Agent, now};

/// How long a first fetch waits for an SVID that is being issued.
const FIRST_SVID_WAIT: Duration = Duration::from_secs(10);

/// Refuses a socket whose directory another user could swap: the
/// directory and every parent must belong to root or to the agent's own
/// user, and none may be writable by group or others (a parent may be if
/// it is sticky, as `/tmp` is: others cannot rename what they do not own).
/// Otherwise a local user could replace the socket with their own and
/// serve workloads SVIDs and bundles of their choosing.
pub fn check_socket_dir(socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let Some(dir) = socket.parent() else {
        return Err(format!(
            "the socket path {} has no directory",
            socket.display()
        ));
    };
    // A symlink on the way is followed by every client: whoever owns it can
    // repoint it (in a sticky directory too), so it must be ours or root's.
    for d in dir.ancestors() {
        if let Ok(link) = std::fs::symlink_metadata(d)
            && link.file_type().is_symlink()
            && link.uid() != 0
            && link.uid() != me
        {
            return Err(format!(
                "{} on the way to the socket is a symbolic link owned by uid {}, another user, who could point it elsewhere: use a path without links owned by others, such as the default /run/ward/",
                d.display(),
                link.uid()
            ));
        }
    }
    // Then the directories the path resolves to, and their parents.
    let resolved = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for (i, d) in resolved.ancestors().enumerate() {
        let Ok(meta) = std::fs::metadata(d) else {
            // Not there yet: it will be made, 0755 and ours.
            continue;
        };
        let own = i == 0;
        let what = if own {
            "the socket directory"
        } else {
            "a parent of the socket directory"
        };
        if meta.uid() != 0 && meta.uid() != me {
            return Err(format!(
                "{what} {} belongs to uid {}, another user, who could replace the Workload API socket: use a directory owned by root or by the agent's user (uid {me}), such as the default /run/ward/",
                d.display(),
                meta.uid()
            ));
        }
        let writable = meta.mode() & 0o022 != 0;
        let sticky = meta.mode() & 0o1000 != 0;
        if writable && (own || !sticky) {
            return Err(format!(
                "{what} {} is writable by {} (mode {:04o}), so another user could replace the Workload API socket: make it writable by its owner only (chmod go-w), or use the default /run/ward/",
                d.display(),
                if meta.mode() & 0o002 != 0 {
                    "every user"
                } else {
                    "its group"
                },
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// Binds the socket, replacing a stale one, reachable by every local uid
/// (identity comes from attestation, not from file permissions), in a
/// directory no other user can write (see [`check_socket_dir`]).
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    check_socket_dir(path)?;
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot open up {}: {e}", dir.display()))?;
    }
    check_socket_dir(path)?;
    if path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| format!("cannot open up {}: {e}", path.display()))?;
    Ok(listener)
}

/// Serves the Workload API until `shutdown` resolves.
pub async fn serve(
    agent: Arc<Agent>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(WorkloadApi { agent }))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener).map(|conn| conn.map(FixedUnixStream::new)),
            shutdown,
        )
        .await
        .map_err(|e| e.to_string())
}

struct WorkloadApi {
    agent: Arc<Agent>,
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req
        .metadata()
        .get("workload.spiffe.io")
        .and_then(|v| v.to_str().ok())
    {
        Some("true") => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

/// PermissionDenied for a caller no entry matches. The message is short on
/// purpose: clients such as py-spiffe wrap it in long prefixes, and logs and
/// tools that truncate should still show the status code.
fn denied() -> Status {
    Status::permission_denied("no identity")
}

impl WorkloadApi {
    async fn attest<T>(&self, req: &Request<T>) -> Result<Workload, Status> {
        check_header(req)?;
        let info = req
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("caller credentials unavailable"))?;
        let cred = info
            .uds
            .peer_cred
            .ok_or_else(|| Status::internal("caller credentials unavailable"))?;
        let agent = self.agent.clone();
        let workload = tokio::task::spawn_blocking(move || {
            agent.attestor.attest(
                cred.pid(),
                cred.uid(),
                cred.gid(),
                info.exe_at_accept.as_ref(),
            )
        })
        .await
        .map_err(|_| Status::internal("attestation failed"))?
        .map_err(|e| {
            tracing::debug!(error = %e, "workload attestation failed");
            denied()
        })?;
        Ok(workload)
    }

    /// The entries (with their current, unexpired SVIDs) a workload matches.
    fn entitled(state: &State, w: &Workload) -> (usize, Vec<X509svid>) {
        let now = now();
        let bundle: Vec<u8> = state.bundle_der.concat();
        let mut matched = 0;
        let mut svids: Vec<X509svid> = Vec::new();
        let mut entries: Vec<_> = state
            .entries
            .values()
            .filter(|e| matches(&e.selectors, &w.selectors))
            .collect();
        entries.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id).then(a.id.cmp(&b.id)));
        for e in entries {
            matched += 1;
            if let Some(s) = state
                .svids
                .get(&e.id)
                .filter(|s| s.expires_at > now && s.spiffe_id == e.spiffe_id)
            {
                svids.push(X509svid {
                    spiffe_id: s.spiffe_id.clone(),
                    x509_svid: s.chain_der.concat(),
                    x509_svid_key: s.key_der.to_vec(),
                    bundle: bundle.clone(),
                    hint: String::new(),
                });
            }
        }
        (matched, svids)
    }

    fn td_key(state: &State) -> String {
        format!("spiffe://{}", state.trust_domain)
    }

    /// Streams `build(state)` now and after every change, until the client
    /// goes away or `build` fails (which ends the stream with that status).
    fn stream<T, F>(&self, build: F) -> Stream_<T>
    where
        T: Clone + PartialEq + Send + 'static,
        F: Fn(&State) -> Result<T, Status> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(4);
        let mut changes = self.agent.cache.subscribe();
        let agent = self.agent.clone();
        tokio::spawn(async move {
            let mut last: Option<T> = None;
            loop {
                changes.mark_unchanged();
                let next = agent.cache.read(&build);
                match next {
                    Ok(msg) => {
                        if last.as_ref() != Some(&msg) {
                            if tx.send(Ok(msg.clone())).await.is_err() {
                                return;
                            }
                            last = Some(msg);
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    /// Streams `build(state)` to a workload for as long as an entry matches
    /// it; PermissionDenied at once if none does, and when the last one goes.
    fn stream_while_entitled<T, F>(
        &self,
        w: Workload,
        build: F,
    ) -> Result<Response<Stream_<T>>, Status>
    where
        T: Clone + PartialEq + Send + 'static,
        F: Fn(&State) -> T + Send + 'static,
    {
        if self.agent.cache.read(|s| Self::entitled(s, &w).0) == 0 {
            return Err(denied());
        }
        Ok(Response::new(self.stream(move |state| {
            if Self::entitled(state, &w).0 == 0 {
                return Err(denied());
            }
            Ok(build(state))
        })))
    }

    /// Waits (bounded) until a matched workload's first SVID is issued.
    async fn wait_for_svids(&self, w: &Workload) -> Result<(), Status> {
        let mut changes = self.agent.cache.subscribe();
        let deadline = tokio::time::Instant::now() + FIRST_SVID_WAIT;
        loop {
            let (matched, svids) = self.agent.cache.read(|s| Self::entitled(s, w));
            if matched == 0 {
                return Err(denied());
            }
            if !svids.is_empty() {
                return Ok(());
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return Err(Status::unavailable("agent stopping")) },
                _ = tokio::time::sleep_until(deadline) => return Err(Status::unavailable("the SVID is not issued yet (is the server reachable?); retry")),
            }
        }
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream_<X509svidResponse>;
    type FetchX509BundlesStream = Stream_<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream_<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let w = self.attest(&req).await?;
        self.wait_for_svids(&w).await?;
        Ok(Response::new(self.stream(move |state| {
            let (matched, svids) = Self::entitled(state, &w);
            if matched == 0 || svids.is_empty() {
                return Err(denied());
            }
            Ok(X509svidResponse {
                svids,
                crl: Vec::new(),
                federated_bundles: HashMap::new(),
            })
        })))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let w = self.attest(&req).await?;
        self.stream_while_entitled(w, |state| X509BundlesResponse {
            crl: Vec::new(),
            bundles: HashMap::from([(Self::td_key(state), state.bundle_der.concat())]),
        })
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let w = self.attest(&req).await?;
        let body = req.into_inner();
        if body.audience.is_empty() || body.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if body.audience.len() > crate::MAX_AUDIENCES {
            return Err(Status::invalid_argument(format!(
                "at most {} audiences per JWT-SVID",
                crate::MAX_AUDIENCES
            )));
        }
        let entries: Vec<(String, String)> = self.agent.cache.read(|s| {
            let mut v: Vec<_> = s
                .entries
                .values()
                .filter(|e| matches(&e.selectors, &w.selectors))
                .filter(|e| body.spiffe_id.is_empty() || e.spiffe_id == body.spiffe_id)
                .map(|e| (e.id.clone(), e.spiffe_id.clone()))
                .collect();
            v.sort();
            v
        });
        if entries.is_empty() {
            return Err(denied());
        }
        let mut svids = Vec::new();
        for (entry_id, spiffe_id) in entries {
            let token = self
                .agent
                .jwt_svid(&entry_id, &body.audience)
                .await
                .map_err(|e| Status::unavailable(format!("cannot mint a JWT-SVID: {e}")))?;
            svids.push(Jwtsvid {
                spiffe_id,
                svid: token,
                hint: String::new(),
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let w = self.attest(&req).await?;
        self.stream_while_entitled(w, |state| JwtBundlesResponse {
            bundles: HashMap::from([(
                Self::td_key(state),
                serde_json::to_vec(&state.jwt_bundle).unwrap_or_default(),
            )]),
        })
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let w = self.attest(&req).await?;
        if self.agent.cache.read(|s| Self::entitled(s, &w).0) == 0 {
            return Err(denied());
        }
        let body = req.into_inner();
        if body.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if body.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let (jwks, td) = self
            .agent
            .cache
            .read(|s| (s.jwt_bundle.clone(), s.trust_domain.clone()));
        let (spiffe_id, claims) =
            crate::workload::validate_jwt(&body.svid, &body.audience, &jwks, &td)
                .map_err(|e| Status::invalid_argument(format!("invalid JWT-SVID: {e}")))?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(to_struct(&claims)),
        }))
    }
}

/// Validates a JWT-SVID against the agent's bundle (see
/// [`ward_identity::jwt::validate_jwt_svid`]).
pub fn validate_jwt(
    token: &str,
    audience: &str,
    jwks: &serde_json::Value,
    td: &str,
) -> Result<(String, serde_json::Value), String> {
    ward_identity::jwt::validate_jwt_svid(token, audience, jwks, td)
        .map(|(id, claims)| (id.to_string(), claims))
}

fn to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_struct(v: &serde_json::Value) -> prost_types::Struct {
    prost_types::Struct {
        fields: v
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
            .unwrap_or_default(),
    }
}
