//! Unit tier: every behaviour of the HTTP API, sent in process with tower's `oneshot` (no sockets), plus `serve`'s shutdown on a loopback socket.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value as Json;
use tower::ServiceExt;

use super::*;
use crate::config::CRATE_VERSION;

struct TestApp {
    router: Router,
    log: Arc<Mutex<Vec<u8>>>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).expect("json body")
    }
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    /// Every error is JSON with a human-readable `error` string.
    fn assert_error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.content_type(), "application/json");
        let body = self.json();
        let message = body["error"].as_str().expect("an error message");
        assert!(!message.is_empty());
        message.to_owned()
    }
}

fn test_app(config: Config) -> TestApp {
    let (logger, log) = Logger::memory(Level::Info);
    let state = AppState::new(&config, logger);
    TestApp {
        router: app(state),
        log,
    }
}

fn default_app() -> TestApp {
    test_app(Config::default())
}

impl TestApp {
    async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes().to_vec();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(request(Method::GET, path, None, "")).await
    }

    async fn post_json(&self, body: &str) -> Reply {
        self.send(request(Method::POST, "/", Some("application/json"), body))
            .await
    }

    fn log_lines(&self) -> Vec<Json> {
        let text = String::from_utf8(self.log.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn request(method: Method, path: &str, content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body.to_owned()))
        .unwrap()
}

// GET /

#[tokio::test]
async fn get_root_says_hello() {
    let r = default_app().get("/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "text/plain; charset=utf-8");
    assert_eq!(r.text(), "Hello world\n");
}

#[tokio::test]
async fn head_root_has_no_body() {
    let r = default_app()
        .send(request(Method::HEAD, "/", None, ""))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
}

// POST /

#[tokio::test]
async fn post_the_talks_case() {
    let r = default_app()
        .post_json(r#"{"abra": 123, "kadabra": 4}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/json");
    assert_eq!(r.text(), r#"{"abra":123}"#);
}

#[tokio::test]
async fn post_keeps_order_nesting_and_upper_case() {
    let r = default_app()
        .post_json(r#"{"b":0,"apple":{"z":1,"a":[1,{"k":null}]},"":5,"Avocado":true,"über":1,"añejo":"ñ","a":2.50}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.text(),
        r#"{"apple":{"z":1,"a":[1,{"k":null}]},"Avocado":true,"añejo":"ñ","a":2.50}"#
    );
    // The body is valid JSON and the keys come back in request order.
    let keys: Vec<String> = r.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["apple", "Avocado", "añejo", "a"]);
}

#[tokio::test]
async fn post_empty_object_and_no_matches() {
    let app = default_app();
    assert_eq!(app.post_json("{}").await.text(), "{}");
    assert_eq!(app.post_json(r#"{"":1,"b":2}"#).await.text(), "{}");
}

#[tokio::test]
async fn content_type_parameters_and_case_are_accepted() {
    let app = default_app();
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        "APPLICATION/JSON ; charset=utf-8",
    ] {
        let r = app
            .send(request(Method::POST, "/", Some(ct), r#"{"a":1,"b":2}"#))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{ct}");
        assert_eq!(r.text(), r#"{"a":1}"#, "{ct}");
    }
}

#[tokio::test]
async fn missing_content_type_is_415() {
    let r = default_app()
        .send(request(Method::POST, "/", None, r#"{"a":1}"#))
        .await;
    let message = r.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(message.contains("application/json"), "{message}");
}

#[tokio::test]
async fn other_media_types_are_415() {
    let app = default_app();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonp",
        "application/vnd.api+json",
        "json",
        "",
    ] {
        let r = app
            .send(request(Method::POST, "/", Some(ct), r#"{"a":1}"#))
            .await;
        let message = r.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(message.contains("application/json"), "{ct}: {message}");
    }
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = default_app();
    for body in ["", "{", r#"{"a":1,}"#, "{'a':1}", r#"{"a":1} {}"#] {
        let r = app.post_json(body).await;
        let message = r.assert_error(StatusCode::BAD_REQUEST);
        assert!(message.starts_with("malformed json"), "{body:?}: {message}");
    }
}

#[tokio::test]
async fn json_that_is_not_an_object_is_422() {
    let app = default_app();
    for (body, kind) in [
        ("[1,2]", "an array"),
        ("42", "a number"),
        ("\"abra\"", "a string"),
        ("true", "a boolean"),
        ("null", "null"),
    ] {
        let r = app.post_json(body).await;
        let message = r.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.contains(kind), "{body}: {message}");
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = test_app(Config {
        max_body_bytes: 16,
        ..Config::default()
    });
    let small = r#"{"a":1}"#;
    let large = r#"{"a":"0123456789abcdef"}"#;
    assert_eq!(app.post_json(small).await.status, StatusCode::OK);

    // Refused from its Content-Length, before reading.
    let r = app.post_json(large).await;
    let message = r.assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("16 bytes"), "{message}");

    // No Content-Length (as with chunked encoding): cut off while reading.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(large))
        .unwrap();
    app.send(req)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn default_limit_is_one_mebibyte() {
    let app = default_app();
    let pad = |n: usize| format!(r#"{{"a":"{}"}}"#, "x".repeat(n - 8));
    assert_eq!(app.post_json(&pad(1 << 20)).await.status, StatusCode::OK);
    app.post_json(&pad((1 << 20) + 1))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
}

// Routing errors

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let app = default_app();
    for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
        let r = app.send(request(method.clone(), "/", None, "")).await;
        r.assert_error(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers[header::ALLOW], "GET,HEAD,POST", "{method}");
    }
    let r = app
        .send(request(
            Method::POST,
            "/health",
            Some("application/json"),
            "{}",
        ))
        .await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::ALLOW], "GET,HEAD");
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let app = default_app();
    for path in ["/nope", "/health/", "/a/b?c=d", "//"] {
        let message = app.get(path).await.assert_error(StatusCode::NOT_FOUND);
        assert!(message.contains("not found"), "{message}");
    }
    // The method does not matter for an unknown path.
    app.send(request(Method::DELETE, "/nope", None, ""))
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

// Operations

#[tokio::test]
async fn health_reports_the_crate_version_by_default() {
    let r = default_app().get("/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/json");
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "up", "version": CRATE_VERSION})
    );
}

#[tokio::test]
async fn health_reports_the_configured_version() {
    let app = test_app(Config {
        version: "7.8.9".into(),
        ..Config::default()
    });
    let r = app.get("/health").await;
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "up", "version": "7.8.9"})
    );
}

#[tokio::test]
async fn metrics_count_by_matched_route_method_and_status() {
    let app = default_app();
    for _ in 0..3 {
        app.post_json(r#"{"abra":1}"#).await;
    }
    app.get("/").await;
    app.send(request(Method::POST, "/", None, "{}")).await;
    app.send(request(Method::PUT, "/", None, "")).await;
    app.get("/unknown-1").await;
    app.get("/unknown-2").await;

    let r = app.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    let text = r.text();
    for line in [
        r#"http_requests_total{route="/",method="POST",status="200"} 3"#,
        r#"http_requests_total{route="/",method="GET",status="200"} 1"#,
        r#"http_requests_total{route="/",method="POST",status="415"} 1"#,
        r#"http_requests_total{route="/",method="PUT",status="405"} 1"#,
        // Unknown paths share one label, whatever the path.
        r#"http_requests_total{route="unmatched",method="GET",status="404"} 2"#,
        r#"http_request_duration_seconds_bucket{route="/",method="POST",le="+Inf"} 4"#,
        r#"http_request_duration_seconds_count{route="/",method="POST"} 4"#,
        // Only the scrape itself is in flight.
        "http_requests_in_flight 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(text.contains(r#"http_request_duration_seconds_sum{route="/",method="POST"} "#));
    assert!(!text.contains("unknown-1"));
    // The scrape is counted once it has been answered.
    let again = app.get("/metrics").await.text();
    assert!(again.contains(r#"http_requests_total{route="/metrics",method="GET",status="200"} 1"#));
}

#[tokio::test]
async fn every_request_is_logged_as_one_json_line() {
    let app = default_app();
    app.get("/").await;
    app.post_json("[]").await;
    app.get("/x\"y").await;
    let lines = app.log_lines();
    assert_eq!(lines.len(), 3);
    let summary: Vec<(String, String, u64)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["level"], "info");
            assert_eq!(l["msg"], "request");
            assert!(l["ts"].is_string());
            assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
            (
                l["method"].as_str().unwrap().to_owned(),
                l["path"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET".to_owned(), "/".to_owned(), 200),
            ("POST".to_owned(), "/".to_owned(), 422),
            ("GET".to_owned(), "/x\"y".to_owned(), 404),
        ]
    );
}

#[tokio::test]
async fn passing_health_checks_are_logged_only_at_debug() {
    let at_info = default_app();
    at_info.get("/health").await;
    at_info.get("/").await;
    let paths: Vec<String> = at_info
        .log_lines()
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        ["/"],
        "the platform's health checks stay out of the log"
    );

    let (logger, log) = Logger::memory(Level::Debug);
    let router = app(AppState::new(&Config::default(), logger));
    let _ = router
        .oneshot(request(Method::GET, "/health", None, ""))
        .await
        .unwrap();
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(text.contains(r#""path":"/health""#), "{text}");
}

#[tokio::test]
async fn requests_are_not_logged_below_info() {
    let (logger, log) = Logger::memory(Level::Warn);
    let router = app(AppState::new(&Config::default(), logger));
    let _ = router
        .oneshot(request(Method::GET, "/", None, ""))
        .await
        .unwrap();
    assert!(log.lock().unwrap().is_empty());
}

// Docs

#[tokio::test]
async fn openapi_documents_every_route_the_router_serves() {
    let app = default_app();
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/json");
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["version"], CRATE_VERSION);
    let paths = doc["paths"].as_object().unwrap();

    let mut served = Vec::new();
    for (path, _) in routes() {
        // The router's own answer to an unknown method lists what it serves.
        let probe = Method::from_bytes(b"PROPFIND").unwrap();
        let r = app.send(request(probe, path, None, "")).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let allow = r.headers[header::ALLOW].to_str().unwrap().to_owned();
        for method in allow.split(',').map(str::trim) {
            // HEAD is answered by every GET handler; OpenAPI implies it.
            if method == "HEAD" {
                continue;
            }
            let op = &paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} is not in the document"))
                [method.to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {path} is not in the document");
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            served.push(format!("{method} {path}"));
        }
    }
    // And the document promises nothing the router does not serve.
    let documented: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, served.len(), "served: {served:?}");
    assert!(served.contains(&"POST /".to_owned()));
}

#[tokio::test]
async fn openapi_reports_the_running_version() {
    let app = test_app(Config {
        version: "2.0.0".into(),
        ..Config::default()
    });
    assert_eq!(
        app.get("/openapi.json").await.json()["info"]["version"],
        "2.0.0"
    );
}

#[tokio::test]
async fn docs_page_is_html_for_people_that_works_offline() {
    let app = default_app();
    let r = app.get("/docs").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "text/html; charset=utf-8");
    assert!(r.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    let html = r.text();
    assert!(!html.contains("<script"));
    for (path, _) in routes() {
        assert!(html.contains(&format!("<code>{path}</code>")), "{path}");
    }
    // The talk's example is there to copy.
    assert!(html.contains("&quot;kadabra&quot;: 4"));
    assert!(html.contains("<a href=\"/openapi.json\">"));
}

// Serving on a socket

#[tokio::test]
async fn serve_logs_startup_and_drains_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (logger, log) = Logger::memory(Level::Info);
    let state = AppState::new(
        &Config {
            version: "3.3.3".into(),
            ..Config::default()
        },
        logger,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, Duration::from_secs(5), async {
        let _ = stop_rx.await;
    }));

    // A request in flight: headers and half the body.
    let body = r#"{"abra": 123, "kadabra": 4}"#;
    let (first, rest) = body.split_at(10);
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    stop_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.is_finished(), "must wait for the request in flight");
    conn.write_all(rest.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with(r#"{"abra":123}"#), "{response}");

    let stopped = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Stopped::Drained);

    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let lines: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["msg"], "listening");
    assert_eq!(lines[0]["addr"], addr.to_string());
    assert_eq!(lines[0]["version"], "3.3.3");
    let msgs: Vec<&str> = lines.iter().map(|l| l["msg"].as_str().unwrap()).collect();
    assert_eq!(msgs, ["listening", "shutting down", "request", "stopped"]);
}

#[tokio::test]
async fn serve_gives_up_after_the_grace_period() {
    use tokio::io::AsyncWriteExt;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (logger, _log) = Logger::memory(Level::Info);
    let state = AppState::new(&Config::default(), logger);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, Duration::from_millis(200), async {
        let _ = stop_rx.await;
    }));

    // A client that never finishes its body.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_tx.send(()).unwrap();

    let stopped = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after the grace period")
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Stopped::GraceExpired);
}

#[tokio::test]
async fn documented_examples_are_what_the_service_answers() {
    let app = default_app();
    let doc = app.get("/openapi.json").await.json();
    let post = &doc["paths"]["/"]["post"];
    let example =
        |status: &str| post["responses"][status]["content"]["application/json"]["example"].clone();

    let talk = post["requestBody"]["content"]["application/json"]["example"].to_string();
    assert_eq!(app.post_json(&talk).await.json(), example("200"));

    let too_large = format!(r#"{{"a":"{}"}}"#, "x".repeat(1 << 20));
    let cases = [
        ("400", Some("application/json"), r#"{"abra":"#.to_owned()),
        ("413", Some("application/json"), too_large),
        ("415", Some("text/plain"), "{}".to_owned()),
        ("422", Some("application/json"), "[1]".to_owned()),
    ];
    for (status, content_type, body) in cases {
        let r = app
            .send(request(Method::POST, "/", content_type, &body))
            .await;
        assert_eq!(r.status.as_str(), status);
        assert_eq!(r.json(), example(status), "{status}");
    }

    let not_found = app.get("/nope").await.json();
    assert_eq!(
        not_found,
        doc["components"]["schemas"]["ErrorBody"]["example"]
    );
}
