//! The HTTP API, `/v1/...`. Each handler reads in the same order:
//! authenticate, require unsealed, parse and validate the body, act, audit,
//! answer. Nothing is changed before every check has passed.

//!
//! One module per domain; each names its routes beside its handlers, and
//! [`openapi`] describes every one of them (a test holds the two together).

mod agent;
mod audit;
mod ca;
mod entries;
mod join_tokens;
pub mod openapi;
pub(crate) mod policy;
mod svid;
mod sys;
mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, json_response};
use crate::state::Server;

pub(crate) use audit::checkpoint_task;

type S = State<Arc<Server>>;
type ApiResult = Result<Response, ApiError>;

/// The largest request body accepted; CSRs and entries are small.
const MAX_BODY: usize = 64 * 1024;
/// The largest policy text, plus room for nothing else: the body is the text.
const MAX_POLICY_BYTES: usize = ward_policy::MAX_POLICY_BYTES;
/// The largest vault request body (a secret's data, a transit batch).
const MAX_VAULT_BODY: usize = 1024 * 1024;
/// The paths whose bodies may be as large as a policy text.
const LARGE_BODY_PATHS: [&str; 2] = [policy::POLICY_PATH, telemetry::TELEMETRY_PATH];

/// The API router.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .merge(sys::routes())
        .merge(ca::routes())
        .merge(svid::routes())
        .merge(entries::routes())
        .merge(join_tokens::routes())
        .merge(audit::routes())
        .merge(agent::routes())
        .route(openapi::PATH, axum::routing::get(openapi::serve))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Secrets and transit inputs may be larger than an entry or a CSR.
        .merge(crate::vault::routes().layer(DefaultBodyLimit::max(MAX_VAULT_BODY)))
        .merge(crate::oauth::routes().layer(DefaultBodyLimit::max(MAX_BODY)))
        // Policy texts and telemetry batches are larger than any other body: they get their own limit.
        .merge(
            policy::routes()
                .merge(telemetry::routes())
                .layer(DefaultBodyLimit::max(MAX_POLICY_BYTES)),
        )
        .fallback(|| async { ApiError::NotFound("no such API path".into()) })
        .layer(axum::middleware::from_fn(reject_oversized))
        .layer(axum::middleware::from_fn_with_state(
            server.limits.clone(),
            crate::limits::limit,
        ))
        .with_state(server)
}

/// Refuses a body whose declared length is over the limit before anything
/// reads it (and before hyper answers `Expect: 100-continue`); bodies without
/// a length are cut off at the limit by `DefaultBodyLimit`.
async fn reject_oversized(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let path = req.uri().path();
    let limit = if LARGE_BODY_PATHS.contains(&path) {
        MAX_POLICY_BYTES
    } else if crate::vault::is_vault_path(path) {
        MAX_VAULT_BODY
    } else {
        MAX_BODY
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::TooLarge(limit).into_response();
    }
    next.run(req).await
}

pub(crate) fn ok<T: serde::Serialize>(body: &T) -> ApiResult {
    Ok(json_response(StatusCode::OK, body))
}

pub(crate) fn ttl_within(
    requested: Option<u64>,
    default: Duration,
    max: Duration,
    what: &str,
) -> Result<Duration, ApiError> {
    let ttl = requested.map(Duration::from_secs).unwrap_or(default);
    if ttl.is_zero() {
        return Err(ApiError::BadRequest(format!(
            "{what} must be at least 1 second"
        )));
    }
    if ttl > max {
        return Err(ApiError::BadRequest(format!(
            "{what} {}s is longer than the server's maximum {}s",
            ttl.as_secs(),
            max.as_secs()
        )));
    }
    Ok(ttl)
}
