//! `/v1/join-tokens`: single-use tokens a node attests with.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use ward_api::*;
use ward_identity::SpiffeId;
use ward_store::{AuditEvent, now_secs};

use super::{ApiResult, S, ok};
use crate::error::{ApiError, parse_json};
use crate::state::Server;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new().route("/v1/join-tokens", post(create_join_token))
}

/// The longest join token lifetime: join tokens are bootstrap secrets.
const MAX_JOIN_TOKEN_TTL: u64 = 24 * 3600;

async fn create_join_token(State(s): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    s.authority()?;
    let req: JoinTokenRequest = parse_json(&body)?;
    if req.ttl == 0 || req.ttl > MAX_JOIN_TOKEN_TTL {
        return Err(ApiError::BadRequest(format!(
            "field `ttl`: {} is not between 1 and {MAX_JOIN_TOKEN_TTL} seconds",
            req.ttl
        )));
    }
    let node_id = match &req.node_name {
        None => None,
        Some(name) => Some(
            SpiffeId::from_parts(&s.config.trust_domain, &format!("/ward/agent/{name}"))
                .ok()
                .filter(|id| id.path().matches('/').count() == 3)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "field `node_name`: {name:?} is not a valid node name"
                    ))
                })?
                .to_string(),
        ),
    };
    let token = crate::init::new_token();
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let expires_at = now_secs() + req.ttl as i64;
    let audit = AuditEvent::new(
        caller.actor(),
        "jointoken.create",
        id.clone(),
        serde_json::json!({"expires_at": expires_at, "node_id": node_id}),
    );
    s.store
        .create_join_token(
            &id,
            &crate::auth::token_hash(&token),
            expires_at,
            node_id.as_deref(),
            audit,
        )
        .await?;
    ok(&JoinTokenResponse {
        token: token.to_string(),
        id,
        expires_at,
    })
}
