//! The service tier: the built binary as a real process on a free loopback port, over HTTP.
//! Run alone with `cargo test --test service`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_{{name}}");

/// A running service, killed when dropped so that a failed assertion leaves nothing behind.
struct Service {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    http: reqwest::blocking::Client,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts the binary as a platform would (PORT set) and waits for `/health`.
    fn start(version: &str) -> Service {
        // A port that was free a moment ago; the service is given it through PORT.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(BIN)
            .env_clear()
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("VERSION", version)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let service = Service {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while service.get("/health").is_err() {
            assert!(Instant::now() < deadline, "no answer on {}", service.url);
            std::thread::sleep(Duration::from_millis(50));
        }
        service
    }

    fn get(&self, path: &str) -> reqwest::Result<reqwest::blocking::Response> {
        self.http.get(format!("{}{path}", self.url)).send()
    }

    fn post(&self, content_type: &str, body: &str) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}/", self.url))
            .header("Content-Type", content_type)
            .body(body.to_string())
            .send()
            .unwrap()
    }

    /// Every stdout line, each a JSON object.
    fn log(&self) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect()
    }
}

#[test]
fn serves_the_api_over_http() {
    let service = Service::start("9.9.9");
    let hello = service.get("/").unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.text().unwrap(), "Hello world\n");

    let filtered = service.post("application/json", r#"{"abra": 123, "kadabra": 4}"#);
    assert_eq!(filtered.status(), 200);
    assert_eq!(filtered.text().unwrap(), r#"{"abra":123}"#);
    assert_eq!(service.post("text/plain", r#"{"abra": 123}"#).status(), 415);

    let health: Value = service.get("/health").unwrap().json().unwrap();
    assert_eq!(
        health,
        serde_json::json!({"status": "up", "version": "9.9.9"})
    );
    let metrics = service.get("/metrics").unwrap().text().unwrap();
    assert!(
        metrics.contains("http_requests_total{route=\"/\",method=\"POST\",status=\"415\"} 1\n"),
        "{metrics}"
    );
    let doc: Value = service.get("/openapi.json").unwrap().json().unwrap();
    assert_eq!(doc["info"]["version"], "9.9.9");
    assert_eq!(service.get("/docs").unwrap().status(), 200);
}

#[test]
fn logs_json_lines_and_stops_gracefully_on_sigterm() {
    let mut service = Service::start("1.0.0");
    service.get("/").unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = service.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    // The reader thread may lag the process's exit by a moment.
    std::thread::sleep(Duration::from_millis(100));
    let log = service.log();
    let messages: Vec<&str> = log
        .iter()
        .map(|line| line["msg"].as_str().unwrap())
        .collect();
    assert_eq!(messages.first(), Some(&"listening"), "{messages:?}");
    assert!(
        messages.ends_with(&["signal received", "stopped"]),
        "{messages:?}"
    );
    let request = log
        .iter()
        .find(|line| line["msg"] == "request" && line["path"] == "/")
        .expect("a line for the request to /");
    assert_eq!(request["method"], "GET");
    assert_eq!(request["status"], 200);
    assert!(
        !log.iter().any(|line| line["path"] == "/health"),
        "health checks are logged at debug only: {log:?}"
    );
}

#[test]
fn a_bad_setting_is_a_clear_error() {
    let output = Command::new(BIN)
        .env_clear()
        .env("PORT", "eighty")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid PORT=\"eighty\""), "{stderr}");
}
