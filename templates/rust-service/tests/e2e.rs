//! The e2e tier: against a deployed instance at APP_URL. cdflow runs it after each push to
//! staging (`cargo test --test e2e -- --ignored`, APP_URL set to the environment's route).
//! By hand: `APP_URL=http://127.0.0.1:8081 cargo test --test e2e -- --ignored`.

use std::time::Duration;

use serde_json::Value;

fn app_url() -> String {
    let url = std::env::var("APP_URL")
        .expect("APP_URL is not set: the e2e tier needs the address of a deployed instance");
    url.trim_end_matches('/').to_string()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
#[ignore = "e2e: set APP_URL and run with --ignored"]
fn says_hello() {
    let response = client().get(format!("{}/", app_url())).send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "Hello world\n");
}

#[test]
#[ignore = "e2e: set APP_URL and run with --ignored"]
fn filters_the_talks_example() {
    let response = client()
        .post(format!("{}/", app_url()))
        .header("Content-Type", "application/json")
        .body(r#"{"abra": 123, "kadabra": 4}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(body, serde_json::json!({"abra": 123}));
}

#[test]
#[ignore = "e2e: set APP_URL and run with --ignored"]
fn refuses_other_media_types() {
    let response = client()
        .post(format!("{}/", app_url()))
        .header("Content-Type", "text/plain")
        .body("abra")
        .send()
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[test]
#[ignore = "e2e: set APP_URL and run with --ignored"]
fn is_healthy() {
    let response = client()
        .get(format!("{}/health", app_url()))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let health: Value = response.json().unwrap();
    assert_eq!(health["status"], "up");
}
