//! The unit tier: requests sent to the router in process, no socket.

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::config::Config;
use crate::log::{Level, Logger};
use crate::{AppState, app};

fn state() -> AppState {
    let config =
        Config::from_lookup(|name| (name == "VERSION").then(|| "1.2.3".to_string())).unwrap();
    let (logger, _lines) = Logger::memory(Level::Info);
    AppState::new(&config, logger)
}

/// Sends one request and returns the status, the content type and the body.
async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, String, String) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::post("/");
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn get_says_hello() {
    let (status, content_type, body) = send(&state(), get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(body, "Hello world\n");
}

#[tokio::test]
async fn post_keeps_the_keys_that_start_with_a_in_their_order() {
    let state = state();
    let (status, content_type, body) = send(
        &state,
        post(Some("application/json"), r#"{"abra": 123, "kadabra": 4}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    assert_eq!(body, r#"{"abra":123}"#);
    let input = r#"{"zeta": 1, "Apple": [1, {"b": 2}], "b": 3, "avocado": null}"#;
    let (_, _, body) = send(&state, post(Some("Application/JSON; charset=utf-8"), input)).await;
    assert_eq!(body, r#"{"Apple":[1,{"b":2}],"avocado":null}"#);
}

#[tokio::test]
async fn other_media_types_get_415_and_bad_json_400() {
    let state = state();
    for content_type in [None, Some("text/plain"), Some("application/jsonx")] {
        let (status, _, body) = send(&state, post(content_type, r#"{"abra": 1}"#)).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("application/json")
        );
    }
    for body in ["{", "[1, 2]", ""] {
        let (status, _, _) = send(&state, post(Some("application/json"), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
    }
}

#[tokio::test]
async fn health_reports_the_version() {
    let (status, _, body) = send(&state(), get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health, json!({"status": "up", "version": "1.2.3"}));
}

#[tokio::test]
async fn metrics_count_requests_by_route_including_unknown_paths() {
    let state = state();
    send(&state, get("/")).await;
    send(&state, get("/nowhere")).await;
    let (status, _, body) = send(&state, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("http_requests_total{route=\"/\",method=\"GET\",status=\"200\"} 1\n"));
    assert!(
        body.contains("http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1\n")
    );
}

#[tokio::test]
async fn errors_are_json() {
    let state = state();
    let (status, content_type, body) = send(&state, get("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/json");
    assert!(body.contains("no route for /nowhere"));
    let request = Request::delete("/health").body(Body::empty()).unwrap();
    let (status, _, _) = send(&state, request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_docs_describe_every_route() {
    let state = state();
    let (status, _, body) = send(&state, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["info"]["version"], "1.2.3");
    for (path, method) in [
        ("/", "get"),
        ("/", "post"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let (status, content_type, html) = send(&state, get("/docs")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(html.contains("<code>POST /</code>"), "{html}");
}
