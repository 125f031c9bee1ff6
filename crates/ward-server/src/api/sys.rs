//! `/v1/sys/...`: health, seal status, unseal and seal (the endpoints an
//! operator uses while the server is sealed).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ward_api::*;
use ward_store::AuditEvent;

use super::{ApiResult, S, ok};
use crate::error::{ApiError, json_response, parse_json};
use crate::state::Server;

pub(super) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/sys/health", get(health))
        .route("/v1/sys/seal-status", get(seal_status))
        .route("/v1/sys/init", get(init_status))
        .route("/v1/sys/unseal", post(unseal).put(unseal))
        .route("/v1/sys/seal", post(seal).put(seal))
}

async fn health(State(s): S) -> Response {
    let st = s.seal_status();
    let code = if st.sealed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(code, &st)
}

/// Vault's `sys/init`: a running server's store is always initialized.
async fn init_status() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({"initialized": true}))
}

async fn seal_status(State(s): S) -> Response {
    json_response(StatusCode::OK, &s.seal_status())
}

async fn unseal(State(s): S, body: Bytes) -> ApiResult {
    let req: UnsealRequest = parse_json(&body)?;
    if req.migrate {
        return Err(ApiError::BadRequest(
            "seal migration is not supported: unseal with the shares of this server's seal".into(),
        ));
    }
    if req.key.is_none() && !req.reset {
        return Err(ApiError::BadRequest(
            "missing field `key`: pass one unseal share".into(),
        ));
    }
    let status = s.submit_share(req.key, req.reset).await?;
    ok(&status)
}

async fn seal(State(s): S, headers: HeaderMap) -> ApiResult {
    let caller = s.authenticate(&headers).await?;
    s.authority()?;
    s.store
        .append_audit(&[AuditEvent::new(
            caller.actor(),
            "server.seal",
            "-",
            serde_json::json!({}),
        )])
        .await?;
    s.seal();
    Ok(StatusCode::NO_CONTENT.into_response())
}
