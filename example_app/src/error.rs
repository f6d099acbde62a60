//! The JSON error response every failure path uses: a status and `{"error": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "not found: no route for /nope"}))]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
}

/// An error status with a message; responds with [`ErrorBody`] as JSON.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// `application/json`, shared by every JSON response.
pub const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        // Serialising a struct of one String cannot fail; the fallback keeps
        // this path free of panics all the same.
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"error\"}".to_vec());
        (
            self.status,
            [(header::CONTENT_TYPE, APPLICATION_JSON)],
            json,
        )
            .into_response()
    }
}
