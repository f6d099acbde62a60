//! The endpoints: hello, the JSON filter, health and metrics, and JSON errors for the rest.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::AppState;

/// Says hello.
#[utoipa::path(
    get,
    path = "/",
    tag = "api",
    summary = "Say hello",
    responses((status = 200, description = "A greeting.", body = String,
        content_type = "text/plain; charset=utf-8", example = "Hello world\n")),
)]
pub async fn hello() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Hello world\n",
    )
}

/// Keeps the keys of a JSON object that start with `a` or `A`, in their order.
#[utoipa::path(
    post,
    path = "/",
    tag = "api",
    summary = "Keep the keys that start with a",
    request_body(content = Object, content_type = "application/json",
        example = json!({"abra": 123, "kadabra": 4})),
    responses(
        (status = 200, description = "The object, filtered.", body = Object,
            example = json!({"abra": 123})),
        (status = 400, description = "The body is not a JSON object.", body = ErrorBody),
        (status = 415, description = "The body is not application/json.", body = ErrorBody),
    ),
)]
pub async fn filter(headers: HeaderMap, body: Bytes) -> Result<Json<Map<String, Value>>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    // The media type without its parameters (`; charset=utf-8`), in any case.
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported media type {content_type:?}: expected application/json"),
        ));
    }
    let object: Map<String, Value> = serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected a JSON object: {err}"),
        )
    })?;
    Ok(Json(
        object
            .into_iter()
            .filter(|(key, _)| key.starts_with(['a', 'A']))
            .collect(),
    ))
}

/// The health document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `up` when the service answers at all.
    pub status: &'static str,
    /// `VERSION` from the environment, else the crate's version.
    pub version: String,
}

/// The platform's health check: the service is up, and its version.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Health check",
    responses((status = 200, description = "The service is up.", body = Health)),
)]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "up",
        version: state.version.clone(),
    })
}

/// Request counters in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "`http_requests_total{route,method,status}`.",
        body = String, content_type = "text/plain; version=0.0.4")),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Every error is JSON: `{"error": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
