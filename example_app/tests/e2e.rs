//! End-to-end tier: the crucial user journeys against a deployed app at `APP_URL`, over plain HTTP.
//!
//! Ignored by default, so a plain `cargo test` lists them as ignored rather
//! than passing them without a target. Run them with
//! `APP_URL=http://127.0.0.1:8080 cargo test -p example_app --test e2e -- --ignored`;
//! without `APP_URL` they fail, never pass.

use std::time::Duration;

use serde_json::Value;

/// The app's base URL, without a trailing slash. Panics (fails the test)
/// when it is missing or not plain http, the only scheme this client speaks.
fn app_url() -> String {
    let url = std::env::var("APP_URL").unwrap_or_default();
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        panic!(
            "APP_URL is not set: the e2e tier needs a running app, e.g. \
             APP_URL=http://127.0.0.1:8080 cargo test -p example_app --test e2e -- --ignored"
        );
    }
    assert!(
        url.starts_with("http://"),
        "APP_URL={url:?}: the e2e client speaks plain http only (no tls)"
    );
    url.to_owned()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an http client")
}

#[test]
#[ignore = "e2e: set APP_URL and run with --ignored"]
fn hello_world() {
    let r = client().get(format!("{}/", app_url())).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.text().unwrap(), "Hello world\n");
}

#[test]
#[ignore = "e2e: set APP_URL and run with --ignored"]
fn filter_keeps_the_keys_that_start_with_a() {
    let r = client()
        .post(format!("{}/", app_url()))
        .header("Content-Type", "application/json")
        .body(r#"{"abra": 123, "kadabra": 4}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"abra": 123}));
}

#[test]
#[ignore = "e2e: set APP_URL and run with --ignored"]
fn non_json_is_refused_with_415() {
    let r = client()
        .post(format!("{}/", app_url()))
        .header("Content-Type", "text/plain")
        .body(r#"{"abra": 123}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    let body: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    let message = body["error"].as_str().expect("a JSON error message");
    assert!(message.contains("application/json"), "{message}");
}

#[test]
#[ignore = "e2e: set APP_URL and run with --ignored"]
fn health_is_up() {
    let r = client()
        .get(format!("{}/health", app_url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(body["status"], "up");
    let version = body["version"].as_str().expect("a version string");
    assert!(!version.is_empty());
}
