//! API errors and their HTTP form: a status code and `{"errors":[...]}`
//! with `Content-Type: application/json` exactly (hvac compares the whole
//! header). Internal failures are logged in full and answered with a generic
//! message, so a response never carries internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ward_api::ErrorBody;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or asks for something invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials that do not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such thing (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The request body is larger than the API accepts (413).
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// No such vault path (404 with an empty `errors` list, as Vault answers).
    #[error("")]
    VaultNotFound,
    /// A stored record failed its integrity check (500, saying so).
    #[error("{0}")]
    Integrity(String),
    /// A database the vault manages could not be reached or refused (502).
    #[error("{0}")]
    BadGateway(String),
    /// Too many of something for one caller (429).
    #[error("{0}")]
    TooMany(String),
    /// The server is sealed (503).
    #[error("the server is sealed; unseal it with `ward operator unseal SHARE`")]
    Sealed,
    /// Something failed inside the server (500); the detail is only logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::VaultNotFound => StatusCode::NOT_FOUND,
            Self::Integrity(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Sealed => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, Self::VaultNotFound) {
            return json_response(self.status(), &ErrorBody { errors: Vec::new() });
        }
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; the server log has the details".to_owned()
            }
            other => other.to_string(),
        };
        json_response(
            self.status(),
            &ErrorBody {
                errors: vec![message],
            },
        )
    }
}

/// A JSON response with `Content-Type: application/json` and nothing more.
pub fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl From<ward_store::StoreError> for ApiError {
    fn from(e: ward_store::StoreError) -> Self {
        use ward_store::StoreError as S;
        match e {
            S::NotFound { .. } => Self::NotFound(e.to_string()),
            S::Conflict(m) => Self::Conflict(m),
            S::Sealed => Self::Sealed,
            S::Integrity(_) => Self::Integrity(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// A failed JWT-SVID mint: the caller's audience, or an internal failure.
pub fn jwt_error(e: ward_identity::JwtError) -> ApiError {
    match e {
        ward_identity::JwtError::NoAudience | ward_identity::JwtError::EmptyAudience => {
            ApiError::BadRequest(format!("field `audience`: {e}"))
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// Parses a JSON body; a failure names the field and what was wrong with it.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::BadRequest(format!("invalid JSON body: {}", e.inner()))
        } else {
            ApiError::BadRequest(format!("invalid JSON body: field `{path}`: {}", e.inner()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        name: String,
        ttl: Option<u64>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<T>(br#"{"name": 5}"#).unwrap_err().to_string();
        assert!(e.contains("field `name`"), "{e}");
        let e = parse_json::<T>(br#"{"ttl": 5}"#).unwrap_err().to_string();
        assert!(e.contains("missing field `name`"), "{e}");
        let e = parse_json::<T>(br#"{"name": "a", "tll": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tll"), "{e}");
        let e = parse_json::<T>(b"{not json").unwrap_err().to_string();
        assert!(e.contains("invalid JSON body"), "{e}");
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_details() {
        let resp = ApiError::Internal("password=hunter2".into()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap();
        let body: ward_api::ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body.errors,
            ["internal error; the server log has the details"]
        );
        assert!(!body.errors.concat().contains("hunter2"));
    }
}
