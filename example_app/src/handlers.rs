//! The small endpoints (hello, health, metrics) and the JSON 404 and 405 fallbacks.

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, APPLICATION_JSON};
use crate::AppState;

/// Says hello.
#[utoipa::path(
    get,
    path = "/",
    tag = "filter",
    summary = "Say hello",
    responses(
        (status = 200, description = "A greeting.", body = String,
            content_type = "text/plain; charset=utf-8", example = "Hello world\n"),
    )
)]
pub async fn hello() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Hello world\n",
    )
}

/// The health document.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "up", "version": "0.1.0"}))]
pub struct Health {
    /// Always `up` when the service answers at all.
    pub status: &'static str,
    /// `VERSION` from the environment, else the crate version.
    pub version: String,
}

/// Reports that the service is up, and its version; the platform's health check.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Health check",
    responses(
        (status = 200, description = "The service is up.", body = Health,
            content_type = "application/json"),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let body = Health {
        status: "up",
        version: state.version.clone(),
    };
    match serde_json::to_vec(&body) {
        Ok(json) => ([(header::CONTENT_TYPE, APPLICATION_JSON)], json).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Request counts and latencies in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "`http_requests_total{route,method,status}`, \
        `http_request_duration_seconds{route,method}` (a histogram) and \
        `http_requests_in_flight`. `route` is the matched route, or `unmatched`.",
    responses(
        (status = 200, description = "The Prometheus text exposition format, version 0.0.4.",
            body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Any path the router does not know.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("not found: no route for {}", uri.path()),
    )
}

/// A known path with a method it does not serve. axum adds the `Allow` header
/// after this returns, from the methods that path's router really has.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}; the allow header lists those that are",
            uri.path()
        ),
    )
}
